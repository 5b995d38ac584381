/*
 * fuzz_ws.c — libFuzzer target for the RFC 6455 frame reader (src/ws.c).
 *
 * Input layout: byte 0 = flags, then the chunk sizes, then the stream.
 *   flags bit 7:    a client-side reader (frames must be unmasked) instead
 *                   of the server side the seeds are written for;
 *   flags bits 3–5: max_message, from MAX_MESSAGE[] (mostly 4096);
 *   flags bits 0–2: k, how many chunk-size bytes follow (0: feed whole).
 * The stream is fed in chunks of (size byte + 1) bytes, cycling through the
 * k sizes, each chunk in a buffer of its exact size (ASan sees over-reads).
 * msg_buf starts empty and is grown to exactly `needed` on NEED_BUFFER.
 *
 * Checks: ws_read's contract on every call (consumed ≤ len, NONE only with
 * the input used up, MESSAGE data == msg_buf and ≤ max_message, text valid
 * UTF-8 by the validator here, NEED_BUFFER asks for more than the buffer
 * and at most max_message, an error repeats with nothing consumed, a bound
 * on calls); then the events, fed whole and chunked, against a reference
 * reader written here independently: a loop over the whole input that
 * applies RFC 6455's rules in the order ws.h gives them. Any difference
 * aborts.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define FAIL(...) do { fprintf(stderr, "fuzz_ws: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static const uint64_t MAX_MESSAGE[8] = {4096, 4096, 4096, 4096, 0, 1, 126, 65536};

/* Every frame is at least 2 bytes, so an input of -max_len 70000 has at most
 * 35,000 events (an input of 17 KiB of empty pings has 8,500: a cap of 4096
 * once failed on exactly that). */
#define MAX_EVENTS (70000 / 2 + 16)

typedef struct event {
    int kind;
    uint8_t opcode;
    size_t len;
    uint16_t code;           /* CLOSE: close code; ERROR: error code */
    uint64_t hash;           /* of the payload */
} event;

typedef struct log {
    event ev[MAX_EVENTS];
    size_t n;
} log_t;

static uint64_t fnv(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3u;
    return h;
}

static void log_add(log_t *l, int kind, uint8_t opcode, const uint8_t *p, size_t len, uint16_t code) {
    if (l->n == MAX_EVENTS) FAIL("more than %d events", MAX_EVENTS);
    l->ev[l->n++] = (event){kind, opcode, len, code, fnv(p, len)};
}

/* ------------------------------------------------------------------------ */
/* Independent UTF-8: 0 valid, 1 a valid prefix cut inside a character,
 * 2 invalid whatever follows.                                               */

static int seq_ok(const uint8_t *s, size_t k) {   /* a whole sequence of k+1 bytes */
    unsigned c = s[0];
    uint32_t cp = c & (k == 1 ? 0x1F : k == 2 ? 0x0F : 0x07);
    for (size_t j = 1; j <= k; j++) {
        if ((s[j] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[j] & 0x3F);
    }
    uint32_t min = k == 1 ? 0x80 : k == 2 ? 0x800 : 0x10000;
    return cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

static int utf8_check(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t k;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC0 && c < 0xE0) k = 1;
        else if (c >= 0xE0 && c < 0xF0) k = 2;
        else if (c >= 0xF0 && c < 0xF8) k = 3;
        else return 2;
        if (n - i > k) {
            if (!seq_ok(p + i, k)) return 2;
            i += k + 1;
            continue;
        }
        /* Cut off: a prefix if some completion is valid. Trying the
         * boundary values of each continuation range covers them all. */
        static const uint8_t probe[] = {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF};
        uint8_t s[4];
        size_t have = n - i;
        memcpy(s, p + i, have);
        for (size_t a = 0; a < 6; a++)
            for (size_t b = 0; b < 6; b++)
                for (size_t d = 0; d < 6; d++) {
                    uint8_t fill[3] = {probe[a], probe[b], probe[d]};
                    for (size_t j = have; j <= k; j++) s[j] = fill[j - have];
                    if (seq_ok(s, k)) return 1;
                }
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reference reader: whole input, events until an error or the input ends   */

static bool close_code_ok(unsigned c) {
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

static void ref_read(const uint8_t *p, size_t n, bool server, uint64_t maxm, uint8_t *msg,
                     log_t *out) {
    size_t pos = 0, msg_len = 0;
    bool in_msg = false;
    uint8_t msg_op = 0;
    for (;;) {
        if (n - pos < 2) return;
        unsigned b0 = p[pos], b1 = p[pos + 1];
        bool fin = b0 >> 7, masked = b1 >> 7;
        unsigned op = b0 & 15, len7 = b1 & 127;
        bool control = op >= 8;
        int err = 0;
        if (b0 & 0x70) err = 1002;
        else if (op != 0 && op != 1 && op != 2 && op != 8 && op != 9 && op != 10) err = 1002;
        else if (control && (!fin || len7 > 125)) err = 1002;
        else if (!control && op == 0 && !in_msg) err = 1002;
        else if (!control && op != 0 && in_msg) err = 1002;
        else if (masked != server) err = 1002;
        if (err) { log_add(out, WS_EV_ERROR, 0, NULL, 0, (uint16_t)err); return; }
        size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked ? 4 : 0);
        if (n - pos < hl) return;
        uint64_t plen = len7;
        const uint8_t *h = p + pos + 2;
        if (len7 == 126) {
            plen = (uint64_t)h[0] * 256 + h[1];
            if (plen < 126) err = 1002;
            h += 2;
        } else if (len7 == 127) {
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen * 256 + h[i];
            if (plen >= (1ull << 63) || plen < 65536) err = 1002;
            h += 8;
        }
        if (err) { log_add(out, WS_EV_ERROR, 0, NULL, 0, (uint16_t)err); return; }
        const uint8_t *key = h;
        if (!control) {
            if (op != 0) { in_msg = true; msg_op = (uint8_t)op; msg_len = 0; }
            if ((uint64_t)msg_len + plen > maxm) {
                log_add(out, WS_EV_ERROR, 0, NULL, 0, 1009);
                return;
            }
        }
        pos += hl;
        size_t avail = n - pos < plen ? n - pos : (size_t)plen;
        uint8_t ctrl[125];
        uint8_t *dst = control ? ctrl : msg + msg_len;
        for (size_t i = 0; i < avail; i++) dst[i] = p[pos + i] ^ (masked ? key[i % 4] : 0);
        pos += avail;
        if (!control) {
            msg_len += avail;
            if (msg_op == 1 && utf8_check(msg, msg_len) == 2) {
                log_add(out, WS_EV_ERROR, 0, NULL, 0, 1007);
                return;
            }
        }
        if (avail < plen) return;
        if (control) {
            if (op == 9 || op == 10) {
                log_add(out, op == 9 ? WS_EV_PING : WS_EV_PONG, 0, ctrl, avail, 0);
                continue;
            }
            if (avail == 0) { log_add(out, WS_EV_CLOSE, 0, ctrl, 0, 1005); continue; }
            unsigned code = avail >= 2 ? ctrl[0] * 256u + ctrl[1] : 0;
            if (avail == 1 || !close_code_ok(code)) err = 1002;
            else if (utf8_check(ctrl + 2, avail - 2) != 0) err = 1007;
            if (err) { log_add(out, WS_EV_ERROR, 0, NULL, 0, (uint16_t)err); return; }
            log_add(out, WS_EV_CLOSE, 0, ctrl, avail, (uint16_t)code);
            continue;
        }
        if (!fin) continue;
        if (msg_op == 1 && utf8_check(msg, msg_len) != 0) {
            log_add(out, WS_EV_ERROR, 0, NULL, 0, 1007);
            return;
        }
        log_add(out, WS_EV_MESSAGE, msg_op, msg, msg_len, 0);
        in_msg = false;
        msg_len = 0;
    }
}

/* ------------------------------------------------------------------------ */
/* The reader under test                                                     */

static void run(const uint8_t *in, size_t n, bool server, uint64_t maxm, const uint8_t *sizes,
                size_t k, log_t *out) {
    ws_reader r;
    ws_reader_init(&r, server, maxm);
    uint8_t *buf = NULL;
    size_t cap = 0, pos = 0, si = 0, calls = 0;
    bool done = false;
    while (pos < n && !done) {
        size_t c = k ? (size_t)sizes[si++ % k] + 1 : n;
        if (c > n - pos) c = n - pos;
        uint8_t *chunk = malloc(c);
        if (chunk == NULL) abort();
        memcpy(chunk, in + pos, c);
        size_t off = 0;
        for (;;) {
            if (++calls > 3 * n + 16) FAIL("no progress: %zu calls for %zu bytes", calls, n);
            ws_event ev;
            size_t used = ws_read(&r, chunk + off, c - off, buf, cap, &ev);
            if (used > c - off) FAIL("consumed %zu of %zu", used, c - off);
            off += used;
            switch (ev.kind) {
            case WS_EV_NONE:
                if (off != c) FAIL("NONE with %zu bytes left", c - off);
                break;
            case WS_EV_MESSAGE:
                if (ev.data != buf) FAIL("message not in msg_buf");
                if (ev.len > maxm || (ev.len > 0 && ev.len > cap)) FAIL("message of %zu bytes", ev.len);
                if (ev.opcode != WS_OP_TEXT && ev.opcode != WS_OP_BINARY) FAIL("opcode %u", ev.opcode);
                if (ev.opcode == WS_OP_TEXT && utf8_check(ev.data, ev.len) != 0) FAIL("text not UTF-8");
                log_add(out, WS_EV_MESSAGE, ev.opcode, ev.data, ev.len, 0);
                break;
            case WS_EV_PING:
            case WS_EV_PONG:
                if (ev.len > 125) FAIL("control payload of %zu", ev.len);
                log_add(out, ev.kind, 0, ev.data, ev.len, 0);
                break;
            case WS_EV_CLOSE:
                if (ev.len > 125 || ev.len == 1) FAIL("close payload of %zu", ev.len);
                if (ev.len == 0 ? ev.close_code != WS_CLOSE_NO_STATUS || ev.reason_len != 0
                                : !ws_close_code_valid(ev.close_code) || ev.reason_len != ev.len - 2 ||
                                  utf8_check(ev.reason, ev.reason_len) != 0)
                    FAIL("bad close event");
                log_add(out, WS_EV_CLOSE, 0, ev.data, ev.len, ev.close_code);
                break;
            case WS_EV_NEED_BUFFER:
                if (ev.needed <= cap || ev.needed > maxm) FAIL("needed %zu, cap %zu", ev.needed, cap);
                buf = realloc(buf, ev.needed);
                if (buf == NULL) abort();
                cap = ev.needed;
                break;
            case WS_EV_ERROR: {
                uint16_t e = ev.error_code;
                if (e != WS_CLOSE_PROTOCOL && e != WS_CLOSE_INVALID_DATA && e != WS_CLOSE_TOO_BIG)
                    FAIL("error code %u", e);
                ws_event again;
                if (ws_read(&r, chunk, c, buf, cap, &again) != 0 || again.kind != WS_EV_ERROR ||
                    again.error_code != e)
                    FAIL("error does not stick");
                log_add(out, WS_EV_ERROR, 0, NULL, 0, e);
                done = true;
                break;
            }
            default:
                FAIL("event kind %d", ev.kind);
            }
            if (ev.kind == WS_EV_NONE || done || off == c) break;
        }
        free(chunk);
        pos += c;
    }
    free(buf);
}

static void compare(const log_t *a, const log_t *b, const char *what) {
    size_t n = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++) {
        const event *x = &a->ev[i], *y = &b->ev[i];
        if (x->kind != y->kind || x->opcode != y->opcode || x->len != y->len || x->code != y->code ||
            x->hash != y->hash)
            FAIL("%s: event %zu: kind %d/%d opcode %u/%u len %zu/%zu code %u/%u", what, i, x->kind,
                 y->kind, x->opcode, y->opcode, x->len, y->len, x->code, y->code);
    }
    if (a->n != b->n) FAIL("%s: %zu events vs %zu", what, a->n, b->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    unsigned flags = data[0];
    bool server = !(flags & 0x80);
    uint64_t maxm = MAX_MESSAGE[(flags >> 3) & 7];
    size_t k = flags & 7;
    if (size < 1 + k) return 0;
    const uint8_t *sizes = data + 1, *in = data + 1 + k;
    size_t n = size - 1 - k;

    static log_t want, whole, chunked;   /* large: off the stack */
    want.n = whole.n = chunked.n = 0;
    uint8_t *scratch = malloc(maxm ? (size_t)maxm : 1);
    if (scratch == NULL) abort();
    ref_read(in, n, server, maxm, scratch, &want);
    free(scratch);
    run(in, n, server, maxm, sizes, 0, &whole);
    run(in, n, server, maxm, sizes, k, &chunked);
    compare(&whole, &want, "whole vs reference");
    compare(&chunked, &want, "chunked vs reference");
    return 0;
}
