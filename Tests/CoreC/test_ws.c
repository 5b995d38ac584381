/*
 * test_ws.c — unit test of RFC 6455 framing (CSources/AegisIO/src/ws.c).
 *
 * Build and run (from the repository root):
 *   cc -std=gnu17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
 *      -I CSources/AegisCore/include -I CSources/AegisIO/src -I Tests/CoreC \
 *      CSources/AegisIO/src/ws.c Tests/CoreC/test_ws.c -o /tmp/test_ws && /tmp/test_ws
 *
 * Covers the RFC 6455 §5.7 examples as golden vectors, every frame length
 * form both ways (client writer → server reader and back), fragmentation
 * with control frames in between, each violation ws.h lists with its close
 * code, NEED_BUFFER, and a long generated stream fed whole, byte by byte and
 * in random chunks, which must give the same events every time. Each chunk
 * handed to the reader is malloc'd to its exact size, so that the sanitizer
 * catches a read past the input.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ws.h"


/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t rng_state;

static uint64_t rnd(void) { /* splitmix64, seeded per test: reproducible */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return q;
}

static void *dup_exact(const void *p, size_t n) {
    void *q = xrealloc(NULL, n);
    if (n) memcpy(q, p, n);
    return q;
}

/* A growable byte string: the streams under test. */
typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_hex(bytes *b, const char *hex) {
    uint8_t tmp[256];
    put(b, tmp, hex_decode(hex, tmp, sizeof tmp));
}

/* A frame as ws.h's writer helpers make it; mask NULL: unmasked. */
static void put_frame(bytes *b, uint8_t op, bool fin, const void *payload, size_t n,
                      const uint8_t *mask) {
    uint8_t h[14];
    size_t k = ws_frame_header(h, op, fin, n, mask);
    put(b, h, k);
    size_t at = b->n;
    put(b, payload, n);
    if (mask) ws_mask(b->p + at, n, mask, 0);
}

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Independent UTF-8 check: decode each code point and test its range. */
static bool ref_utf8(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC0 && c < 0xE0) { k = 1; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c < 0xF0) { k = 2; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c < 0xF8) { k = 3; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i <= k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += k + 1;
    }
    return true;
}

/* Appends one random character of `bytes_len` UTF-8 bytes (1–4). */
static void put_char(bytes *b, int bytes_len) {
    uint8_t c[4];
    uint32_t cp;
    switch (bytes_len) {
    case 1: c[0] = (uint8_t)(0x20 + rnd_below(0x5F)); put(b, c, 1); return;
    case 2: cp = 0x80 + (uint32_t)rnd_below(0x800 - 0x80);
        c[0] = (uint8_t)(0xC0 | cp >> 6); c[1] = (uint8_t)(0x80 | (cp & 0x3F));
        put(b, c, 2); return;
    case 3: do cp = 0x800 + (uint32_t)rnd_below(0x10000 - 0x800); while (cp >= 0xD800 && cp <= 0xDFFF);
        c[0] = (uint8_t)(0xE0 | cp >> 12); c[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        c[2] = (uint8_t)(0x80 | (cp & 0x3F));
        put(b, c, 3); return;
    default: cp = 0x10000 + (uint32_t)rnd_below(0x110000 - 0x10000);
        c[0] = (uint8_t)(0xF0 | cp >> 18); c[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
        c[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)); c[3] = (uint8_t)(0x80 | (cp & 0x3F));
        put(b, c, 4); return;
    }
}

/* Random valid UTF-8 of about n bytes; mostly ASCII when ascii_heavy. */
static void put_text(bytes *b, size_t n, bool ascii_heavy) {
    size_t end = b->n + n;
    while (b->n < end) {
        int k = ascii_heavy && rnd_below(8) ? 1 : 1 + (int)rnd_below(4);
        if (b->n + (size_t)k > end) k = 1;
        put_char(b, k);
    }
}

/* ------------------------------------------------------------------------ */
/* Driving the reader                                                        */

typedef struct rec_ev {
    ws_event_kind kind;
    uint8_t opcode;
    uint8_t *data;           /* a copy: MESSAGE payload, PING/PONG/CLOSE payload */
    size_t len;
    uint16_t close_code, error_code;
    size_t reason_len;
    size_t needed;
} rec_ev;

typedef struct rec {
    rec_ev *ev;
    size_t n, cap;
} rec;

static void rec_add(rec *r, rec_ev e) {
    if (r->n == r->cap) {
        r->cap = r->cap * 2 + 16;
        r->ev = xrealloc(r->ev, r->cap * sizeof *r->ev);
    }
    r->ev[r->n++] = e;
}

static void rec_free(rec *r) {
    for (size_t i = 0; i < r->n; i++) free(r->ev[i].data);
    free(r->ev);
    *r = (rec){0};
}

static void expect_ev(rec *r, ws_event_kind kind, uint8_t opcode, const void *data, size_t len) {
    rec_add(r, (rec_ev){.kind = kind, .opcode = opcode, .data = dup_exact(data, len), .len = len});
}

/* How the input is cut into calls. */
enum { FEED_WHOLE = 0, FEED_BYTES = 1, FEED_RANDOM = 2 };

typedef struct feed_opts {
    bool server;
    uint64_t max_message;
    int how;                 /* FEED_* */
    uint64_t seed;           /* FEED_RANDOM */
    size_t initial_cap;      /* msg_buf's size at the start; grown on NEED_BUFFER */
    bool record_need;        /* NEED_BUFFER events go into the record */
} feed_opts;

static size_t next_chunk(const feed_opts *o, size_t left) {
    size_t k;
    if (o->how == FEED_WHOLE) k = left;
    else if (o->how == FEED_BYTES) k = 1;
    else k = rnd_below(4) ? 1 + rnd_below(24) : 1 + rnd_below(9000);
    return k < left ? k : left;
}

/* Feeds `in` to a new reader as `o` says; records the events up to the
 * first error. Checks ws_read's contract on every call, and counts that as
 * one check: the first broken promise is reported. */
#define EXPECT(cond) do { \
    if (!(cond) && bad == NULL) { bad = #cond; bad_line = __LINE__; } \
} while (0)

static void feed(const feed_opts *o, const uint8_t *in, size_t len, rec *out) {
    ws_reader r;
    ws_reader_init(&r, o->server, o->max_message);
    size_t cap = o->initial_cap;
    uint8_t *buf = cap ? xrealloc(NULL, cap) : NULL;
    size_t pos = 0;
    rng_state = o->seed;
    bool done = false;
    const char *bad = NULL;
    int bad_line = 0;
    while (pos < len && !done) {
        size_t k = next_chunk(o, len - pos), off = 0;
        uint8_t *chunk = dup_exact(in + pos, k);
        while (!done) {
            ws_event ev;
            size_t c = ws_read(&r, chunk + off, k - off, buf, cap, &ev);
            EXPECT(c <= k - off);
            off += c;
            if (ev.kind == WS_EV_NONE) {
                EXPECT(off == k);
                break;
            }
            rec_ev e = {.kind = ev.kind, .opcode = ev.opcode, .len = ev.len,
                        .close_code = ev.close_code, .error_code = ev.error_code,
                        .reason_len = ev.reason_len, .needed = ev.needed};
            switch (ev.kind) {
            case WS_EV_MESSAGE:
                EXPECT(ev.data == buf);
                EXPECT(ev.len <= o->max_message);
                EXPECT(ev.opcode == WS_OP_TEXT || ev.opcode == WS_OP_BINARY);
                if (ev.opcode == WS_OP_TEXT) EXPECT(ref_utf8(ev.data, ev.len));
                e.data = dup_exact(ev.data, ev.len);
                break;
            case WS_EV_PING: case WS_EV_PONG: case WS_EV_CLOSE:
                /* inside the reader, as ws.h says */
                EXPECT(ev.len <= 125);
                EXPECT(ev.len == 0 || ((const uint8_t *)ev.data >= (const uint8_t *)&r &&
                                       ev.data + ev.len <= (const uint8_t *)(&r + 1)));
                if (ev.kind == WS_EV_CLOSE && ev.len >= 2)
                    EXPECT(ev.reason == ev.data + 2 && ev.reason_len == ev.len - 2);
                e.data = dup_exact(ev.data, ev.len);
                break;
            case WS_EV_NEED_BUFFER:
                EXPECT(ev.needed > cap);
                EXPECT(ev.needed <= o->max_message);
                if (ev.needed <= cap || ev.needed > o->max_message) done = true;   /* no loop */
                buf = xrealloc(buf, ev.needed);
                cap = ev.needed;
                break;
            case WS_EV_ERROR: {
                /* and the same error again, consuming nothing */
                ws_event again;
                uint8_t one = 0;
                EXPECT(ws_read(&r, &one, 1, buf, cap, &again) == 0);
                EXPECT(again.kind == WS_EV_ERROR && again.error_code == ev.error_code);
                done = true;
                break;
            }
            default:
                EXPECT(!"an unknown event kind");
            }
            if (ev.kind != WS_EV_NEED_BUFFER || o->record_need) rec_add(out, e);
            else free(e.data);
            if (off == k) break;
        }
        free(chunk);
        pos += k;
    }
    free(buf);
    checkf_(bad == NULL, __FILE__, bad_line, "feed (how %d): %s", o->how, bad);
}
#undef EXPECT

static bool rec_equal(const rec *a, const rec *b, const char *what) {
    if (a->n != b->n) {
        CHECKF(false, "%s: %zu events, want %zu", what, a->n, b->n);
        return false;
    }
    for (size_t i = 0; i < a->n; i++) {
        const rec_ev *x = &a->ev[i], *y = &b->ev[i];
        bool eq = x->kind == y->kind && x->opcode == y->opcode && x->len == y->len &&
                  x->close_code == y->close_code && x->error_code == y->error_code &&
                  x->reason_len == y->reason_len && x->needed == y->needed &&
                  (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
        if (!eq) {
            CHECKF(false, "%s: event %zu differs (kind %d/%d, len %zu/%zu, code %d/%d, err %d/%d)",
                   what, i, x->kind, y->kind, x->len, y->len, x->close_code, y->close_code,
                   x->error_code, y->error_code);
            return false;
        }
    }
    check_result_(1, __FILE__, __LINE__, what);
    return true;
}

/* Feeds whole with a large buffer; returns the error code, 0 if none. */
static uint16_t error_of(bool server, uint64_t max_message, const bytes *b) {
    rec out = {0};
    feed_opts o = {.server = server, .max_message = max_message, .initial_cap = 0};
    feed(&o, b->p, b->n, &out);
    uint16_t code = out.n && out.ev[out.n - 1].kind == WS_EV_ERROR ? out.ev[out.n - 1].error_code : 0;
    rec_free(&out);
    return code;
}

/* Feeds b (whole, byte by byte, random) and checks the events equal want. */
static void expect_events(bool server, uint64_t max_message, const bytes *b, const rec *want,
                          const char *what) {
    static const int hows[] = {FEED_WHOLE, FEED_BYTES, FEED_RANDOM};
    for (size_t i = 0; i < 3; i++) {
        rec got = {0};
        feed_opts o = {.server = server, .max_message = max_message, .how = hows[i],
                       .seed = 99, .initial_cap = 1 << 17};
        feed(&o, b->p, b->n, &got);
        char label[160];
        snprintf(label, sizeof label, "%s (feed %d)", what, hows[i]);
        rec_equal(&got, want, label);
        rec_free(&got);
    }
}

/* ------------------------------------------------------------------------ */
/* RFC 6455 §5.7 examples                                                    */

static void test_rfc_examples(void) {
    uint8_t h[14];
    bytes b = {0};
    rec want = {0};

    /* A single-frame unmasked text message: server → client. */
    put_hex(&b, "810548656c6c6f");
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_TEXT, "Hello", 5);
    expect_events(false, 1 << 20, &b, &want, "rfc unmasked Hello");
    CHECK_EQ_INT(ws_frame_header(h, WS_OP_TEXT, true, 5, NULL), 2);
    CHECK_EQ_MEM(h, b.p, 2);
    CHECK_EQ_INT(error_of(true, 1 << 20, &b), WS_CLOSE_PROTOCOL);   /* unmasked to a server */
    b.n = 0;

    /* A single-frame masked text message: client → server. */
    put_hex(&b, "818537fa213d7f9f4d5158");
    expect_events(true, 1 << 20, &b, &want, "rfc masked Hello");
    bytes w = {0};
    put_frame(&w, WS_OP_TEXT, true, "Hello", 5, MASK);
    CHECK_EQ_INT(w.n, b.n);
    CHECK_EQ_MEM(w.p, b.p, b.n);
    CHECK_EQ_INT(error_of(false, 1 << 20, &b), WS_CLOSE_PROTOCOL);  /* masked to a client */
    b.n = 0;
    w.n = 0;
    rec_free(&want);

    /* A fragmented unmasked text message: "Hel" + "lo". */
    put_hex(&b, "010348656c");
    put_hex(&b, "80026c6f");
    put_frame(&w, WS_OP_TEXT, false, "Hel", 3, NULL);
    put_frame(&w, WS_OP_CONTINUATION, true, "lo", 2, NULL);
    CHECK_EQ_INT(w.n, b.n);
    CHECK_EQ_MEM(w.p, b.p, b.n);
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_TEXT, "Hello", 5);
    expect_events(false, 1 << 20, &b, &want, "rfc fragmented Hel+lo");
    rec_free(&want);
    b.n = 0;
    w.n = 0;

    /* Unmasked ping, then the masked pong answering it. */
    put_hex(&b, "890548656c6c6f");
    expect_ev(&want, WS_EV_PING, 0, "Hello", 5);
    expect_events(false, 1 << 20, &b, &want, "rfc unmasked ping");
    rec_free(&want);
    b.n = 0;
    put_hex(&b, "8a8537fa213d7f9f4d5158");
    put_frame(&w, WS_OP_PONG, true, "Hello", 5, MASK);
    CHECK_EQ_MEM(w.p, b.p, b.n);
    expect_ev(&want, WS_EV_PONG, 0, "Hello", 5);
    expect_events(true, 1 << 20, &b, &want, "rfc masked pong");
    rec_free(&want);
    b.n = 0;
    w.n = 0;

    /* 256 bytes binary in a single unmasked frame: 0x82 0x7E 0x0100. */
    uint8_t *big = xrealloc(NULL, 65536);
    for (size_t i = 0; i < 65536; i++) big[i] = (uint8_t)(i * 7 + 3);
    put_hex(&b, "827e0100");
    put(&b, big, 256);
    put_frame(&w, WS_OP_BINARY, true, big, 256, NULL);
    CHECK_EQ_INT(w.n, 4 + 256);
    CHECK_EQ_MEM(w.p, b.p, b.n);
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_BINARY, big, 256);
    expect_events(false, 1 << 20, &b, &want, "rfc 256-byte binary");
    rec_free(&want);
    b.n = 0;
    w.n = 0;

    /* 64 KiB binary: 0x82 0x7F 0x0000000000010000. */
    put_hex(&b, "827f0000000000010000");
    put(&b, big, 65536);
    put_frame(&w, WS_OP_BINARY, true, big, 65536, NULL);
    CHECK_EQ_INT(w.n, 10 + 65536);
    CHECK_EQ_MEM(w.p, b.p, 10);
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_BINARY, big, 65536);
    expect_events(false, 1 << 20, &b, &want, "rfc 64 KiB binary");
    rec_free(&want);
    free(big);
    free(b.p);
    free(w.p);
}

/* ------------------------------------------------------------------------ */
/* Writer helpers                                                            */

static void test_frame_header(void) {
    struct { uint64_t n; const char *hex; } cases[] = {
        {0, "8200"}, {1, "8201"}, {125, "827d"}, {126, "827e007e"}, {127, "827e007f"},
        {65535, "827effff"}, {65536, "827f0000000000010000"},
        {0x100000000u, "827f0000000100000000"}, {0x7fffffffffffffffu, "827f7fffffffffffffff"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t h[14], want[14];
        size_t wn = hex_decode(cases[i].hex, want, sizeof want);
        size_t k = ws_frame_header(h, WS_OP_BINARY, true, cases[i].n, NULL);
        CHECK_EQ_INT(k, wn);
        CHECK_EQ_MEM(h, want, wn);
        /* masked: the mask bit, and the key after the length */
        k = ws_frame_header(h, WS_OP_BINARY, true, cases[i].n, MASK);
        CHECK_EQ_INT(k, wn + 4);
        CHECK_EQ_INT(h[1], want[1] | 0x80);
        CHECK_EQ_MEM(h + 2, want + 2, wn - 2);
        CHECK_EQ_MEM(h + wn, MASK, 4);
    }
    uint8_t h[14];
    ws_frame_header(h, WS_OP_CONTINUATION, false, 3, NULL);
    CHECK_EQ_INT(h[0], 0x00);
    ws_frame_header(h, WS_OP_CLOSE, true, 2, NULL);
    CHECK_EQ_INT(h[0], 0x88);
    ws_frame_header(h, WS_OP_TEXT, false, 3, NULL);
    CHECK_EQ_INT(h[0], 0x01);
}

static void test_mask(void) {
    /* Masking in pieces at any offset equals masking at once, for every
     * length around the 8/16/64-byte steps, and it is an involution. */
    rng_state = 7;
    uint8_t src[300], once[300], pieces[300];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)rnd();
    bool all_ok = true;
    for (size_t n = 0; n <= 200; n++) {
        for (size_t off = 0; off < 8; off++) {
            memcpy(once, src, n);
            ws_mask(once, n, MASK, off);
            for (size_t i = 0; i < n; i++)
                if (once[i] != (src[i] ^ MASK[(off + i) % 4])) all_ok = false;
            memcpy(pieces, src, n);
            size_t at = 0;
            while (at < n) {
                size_t k = 1 + rnd_below(70);
                if (k > n - at) k = n - at;
                ws_mask(pieces + at, k, MASK, off + at);
                at += k;
            }
            if (memcmp(once, pieces, n) != 0) all_ok = false;
            ws_mask(pieces, n, MASK, off);
            if (memcmp(pieces, src, n) != 0) all_ok = false;
        }
    }
    CHECKF(all_ok, "ws_mask: pieces, offsets and involution");
    /* unaligned pointers */
    uint8_t *p = xrealloc(NULL, 1000);
    for (size_t a = 0; a < 16; a++) {
        for (size_t i = 0; i < 1000; i++) p[i] = (uint8_t)i;
        ws_mask(p + a, 1000 - a, MASK, 0);
        bool ok = true;
        for (size_t i = a; i < 1000; i++) ok &= p[i] == ((uint8_t)i ^ MASK[(i - a) % 4]);
        CHECKF(ok, "ws_mask at alignment %zu", a);
    }
    free(p);
}

static void test_close_payload(void) {
    uint8_t out[125];
    CHECK_EQ_INT(ws_close_payload(out, 1000, NULL, 0), 2);
    CHECK_EQ_MEM(out, "\x03\xe8", 2);
    CHECK_EQ_INT(ws_close_payload(out, 4999, "bye", 3), 5);
    CHECK_EQ_MEM(out, "\x13\x87" "bye", 5);

    char reason[400];
    memset(reason, 'a', sizeof reason);
    CHECK_EQ_INT(ws_close_payload(out, 1001, reason, 123), 125);
    CHECK_EQ_INT(ws_close_payload(out, 1001, reason, 124), 125);
    CHECK_EQ_INT(ws_close_payload(out, 1001, reason, 400), 125);

    /* k ASCII bytes, then characters of width w: the cut never splits one,
     * keeps as much as fits, and the result reads back as a close frame. */
    bool all_ok = true;
    for (int wdt = 2; wdt <= 4; wdt++) {
        for (size_t k = 0; k <= 8; k++) {
            bytes s = {0};
            for (size_t i = 0; i < k; i++) put(&s, "x", 1);
            while (s.n < 200) put_char(&s, wdt);
            size_t n = ws_close_payload(out, 1000, (const char *)s.p, s.n);
            size_t rl = n - 2;
            bool ok = n <= 125 && rl + (size_t)wdt > 123 && memcmp(out + 2, s.p, rl) == 0 &&
                      ref_utf8(out + 2, rl) && ws_utf8_valid(out + 2, rl);
            if (!ok) {
                all_ok = false;
                fprintf(stderr, "    close_payload width %d prefix %zu: %zu bytes\n", wdt, k, n);
            }
            bytes f = {0};
            put_frame(&f, WS_OP_CLOSE, true, out, n, MASK);
            rec want = {0};
            rec_add(&want, (rec_ev){.kind = WS_EV_CLOSE, .data = dup_exact(out, n), .len = n,
                                    .close_code = 1000, .reason_len = rl});
            rec got = {0};
            feed_opts o = {.server = true, .max_message = 100, .how = FEED_BYTES};
            feed(&o, f.p, f.n, &got);
            if (!rec_equal(&got, &want, "close payload reads back")) all_ok = false;
            rec_free(&want);
            rec_free(&got);
            free(f.p);
            free(s.p);
        }
    }
    CHECK(all_ok);
}

static void test_close_code_valid(void) {
    int bad = 0;
    for (uint32_t c = 0; c <= 0xFFFF; c++) {
        bool want = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
                    (c >= 3000 && c <= 4999);
        if (ws_close_code_valid((uint16_t)c) != want) {
            if (bad++ < 5) fprintf(stderr, "    close code %u\n", c);
        }
    }
    CHECK_EQ_INT(bad, 0);
    static const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                     1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const uint16_t invalid[] = {0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000,
                                       2999, 5000, 0xFFFF};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
        CHECKF(ws_close_code_valid(valid[i]), "%u valid", valid[i]);
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
        CHECKF(!ws_close_code_valid(invalid[i]), "%u invalid", invalid[i]);
}

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */

static void test_utf8(void) {
    static const struct { const char *s; bool ok; } v[] = {
        {"", true}, {"hello", true}, {"\xc2\x80", true}, {"\xdf\xbf", true},
        {"\xe0\xa0\x80", true}, {"\xed\x9f\xbf", true}, {"\xee\x80\x80", true},
        {"\xef\xbf\xbf", true}, {"\xf0\x90\x80\x80", true}, {"\xf4\x8f\xbf\xbf", true},
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true},   /* κόσμε */
        {"\x80", false}, {"\xbf", false}, {"\xc0\x80", false}, {"\xc1\xbf", false},
        {"\xc2", false}, {"\xc2\x41", false}, {"\xe0\x80\x80", false}, {"\xe0\x9f\xbf", false},
        {"\xed\xa0\x80", false}, {"\xed\xbf\xbf", false}, {"\xe1\x80", false},
        {"\xf0\x80\x80\x80", false}, {"\xf0\x8f\xbf\xbf", false}, {"\xf4\x90\x80\x80", false},
        {"\xf5\x80\x80\x80", false}, {"\xf8\x88\x80\x80\x80", false}, {"\xfe", false},
        {"\xff", false}, {"\xf0\x90\x80", false},
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80" "edited", false},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = strlen(v[i].s);
        CHECKF(ws_utf8_valid((const uint8_t *)v[i].s, n) == v[i].ok, "utf8 vector %zu", i);
        CHECKF(ref_utf8((const uint8_t *)v[i].s, n) == v[i].ok, "ref utf8 vector %zu", i);
    }

    /* Every 1–3 byte string exhaustively against the reference. */
    int diffs = 0;
    for (uint32_t x = 0; x < (1u << 24); x += (x < 65536 ? 1 : 97)) {
        uint8_t s[3] = {(uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16)};
        for (size_t n = 1; n <= 3; n++)
            if (ws_utf8_valid(s, n) != ref_utf8(s, n)) diffs++;
    }
    CHECK_EQ_INT(diffs, 0);

    /* Every 4-byte string starting with a lead byte E0..F7, with the other
     * bytes from a set that crosses every boundary. */
    static const uint8_t edge[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff};
    diffs = 0;
    for (unsigned lead = 0xE0; lead <= 0xF7; lead++)
        for (size_t a = 0; a < sizeof edge; a++)
            for (size_t b = 0; b < sizeof edge; b++)
                for (size_t c = 0; c < sizeof edge; c++) {
                    uint8_t s[4] = {(uint8_t)lead, edge[a], edge[b], edge[c]};
                    if (ws_utf8_valid(s, 4) != ref_utf8(s, 4)) diffs++;
                }
    CHECK_EQ_INT(diffs, 0);

    /* Long strings: the fast path's 32/8-byte steps with a bad or good
     * byte at every position; random mixes with one corruption. */
    rng_state = 11;
    diffs = 0;
    for (size_t n = 1; n < 100; n++) {
        uint8_t s[100];
        for (size_t bad = 0; bad < n; bad++) {
            memset(s, 'a', n);
            s[bad] = 0x80;
            if (ws_utf8_valid(s, n) != ref_utf8(s, n)) diffs++;
            s[bad] = 0xc3;
            if (ws_utf8_valid(s, n) != ref_utf8(s, n)) diffs++;
            if (bad + 1 < n) {
                s[bad + 1] = 0xa9;    /* é */
                if (!ws_utf8_valid(s, n)) diffs++;
            }
        }
    }
    for (int round = 0; round < 2000; round++) {
        bytes t = {0};
        put_text(&t, rnd_below(300), round & 1);
        if (!ws_utf8_valid(t.p, t.n)) diffs++;
        if (t.n) {
            t.p[rnd_below(t.n)] = (uint8_t)rnd();
            if (ws_utf8_valid(t.p, t.n) != ref_utf8(t.p, t.n)) diffs++;
        }
        free(t.p);
    }
    CHECK_EQ_INT(diffs, 0);

    /* Dense non-ASCII text, long enough for the validator's interleaved
     * chains (windows of 64 bytes and more, cut near each quarter): one
     * corruption at every position, and runs of continuation bytes. */
    diffs = 0;
    int checked = 0;
    static const size_t dense_lens[] = {64, 65, 67, 100, 255, 256, 257, 1000, 3000};
    for (size_t li = 0; li < sizeof dense_lens / sizeof dense_lens[0]; li++) {
        bytes t = {0};
        put_text(&t, dense_lens[li], false);
        uint8_t *u = xrealloc(NULL, t.n);
        if (!ws_utf8_valid(t.p, t.n)) diffs++;
        for (size_t at = 0; at < t.n; at++) {
            static const uint8_t subst[] = {0x41, 0x80, 0xbf, 0xc0, 0xc3, 0xe0, 0xed, 0xf0, 0xf4, 0xff};
            for (size_t j = 0; j < sizeof subst; j++) {
                memcpy(u, t.p, t.n);
                u[at] = subst[j];
                if (ws_utf8_valid(u, t.n) != ref_utf8(u, t.n)) diffs++;
                checked++;
            }
            memcpy(u, t.p, t.n);
            for (size_t r = at; r < at + 5 && r < t.n; r++) u[r] = 0x80 | (uint8_t)(r & 0x3f);
            if (ws_utf8_valid(u, t.n) != ref_utf8(u, t.n)) diffs++;
            /* a prefix too: the cut may fall inside a character */
            if (ws_utf8_valid(t.p, at) != ref_utf8(t.p, at)) diffs++;
        }
        free(u);
        free(t.p);
    }
    CHECKF(diffs == 0, "dense non-ASCII: %d of %d differ", diffs, checked);
}

/* ------------------------------------------------------------------------ */
/* Frames                                                                    */

static void test_frame_lengths(void) {
    /* Every length form, both directions, text and binary. */
    static const size_t lens[] = {0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65,
                                  125, 126, 127, 128, 1000, 65535, 65536, 65537, 100003};
    rng_state = 3;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        for (int text = 0; text <= 1; text++) {
            bytes pl = {0};
            if (text) put_text(&pl, n, n & 1);
            else for (size_t j = 0; j < n; j++) { uint8_t c = (uint8_t)rnd(); put(&pl, &c, 1); }
            n = pl.n;
            uint8_t mask[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd()};
            for (int server = 0; server <= 1; server++) {
                bytes f = {0};
                uint8_t op = text ? WS_OP_TEXT : WS_OP_BINARY;
                put_frame(&f, op, true, pl.p, n, server ? mask : NULL);
                size_t hlen = (n < 126 ? 2 : n < 65536 ? 4 : 10) + (server ? 4 : 0);
                CHECKF(f.n == hlen + n, "frame size for %zu", n);
                rec want = {0};
                expect_ev(&want, WS_EV_MESSAGE, op, pl.p, n);
                char what[80];
                snprintf(what, sizeof what, "len %zu text %d server %d", n, text, server);
                if (n <= 128 || n == 65536) {
                    expect_events(server, 1 << 20, &f, &want, what);
                } else {   /* byte by byte is slow for the big ones under ASan */
                    rec got = {0};
                    feed_opts o = {.server = server, .max_message = 1 << 20, .how = FEED_RANDOM,
                                   .seed = n, .initial_cap = 0};
                    feed(&o, f.p, f.n, &got);
                    rec_equal(&got, &want, what);
                    rec_free(&got);
                }
                rec_free(&want);
                free(f.p);
            }
            free(pl.p);
        }
    }
}

static void test_fragmentation(void) {
    bytes b = {0};
    rec want = {0};
    uint8_t m2[4] = {1, 2, 3, 4};
    put_frame(&b, WS_OP_TEXT, false, "Hel", 3, MASK);
    put_frame(&b, WS_OP_PING, true, "p1", 2, m2);
    put_frame(&b, WS_OP_CONTINUATION, false, "", 0, MASK);     /* an empty fragment */
    put_frame(&b, WS_OP_CONTINUATION, false, "l", 1, m2);
    put_frame(&b, WS_OP_PONG, true, "", 0, MASK);
    put_frame(&b, WS_OP_PING, true, "", 0, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, "o", 1, MASK);
    put_frame(&b, WS_OP_BINARY, false, "\x00\xff", 2, MASK);
    uint8_t p125[125];
    memset(p125, 'P', sizeof p125);
    put_frame(&b, WS_OP_PING, true, p125, 125, m2);
    put_frame(&b, WS_OP_CONTINUATION, true, "\x01", 1, MASK);
    put_frame(&b, WS_OP_TEXT, true, "", 0, MASK);              /* an empty message */
    put_frame(&b, WS_OP_TEXT, false, "a", 1, MASK);
    put_frame(&b, WS_OP_CLOSE, true, "\x03\xe8ok", 4, MASK);   /* close amid a message */
    expect_ev(&want, WS_EV_PING, 0, "p1", 2);
    expect_ev(&want, WS_EV_PONG, 0, "", 0);
    expect_ev(&want, WS_EV_PING, 0, "", 0);
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_TEXT, "Hello", 5);
    expect_ev(&want, WS_EV_PING, 0, p125, 125);
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_BINARY, "\x00\xff\x01", 3);
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_TEXT, "", 0);
    expect_ev(&want, WS_EV_CLOSE, 0, "\x03\xe8ok", 4);
    want.ev[want.n - 1].close_code = 1000;
    want.ev[want.n - 1].reason_len = 2;
    expect_events(true, 1 << 20, &b, &want, "fragments with control frames between");
    rec_free(&want);
    free(b.p);

    /* Empty close: 1005, no reason. */
    b = (bytes){0};
    put_frame(&b, WS_OP_CLOSE, true, "", 0, MASK);
    expect_ev(&want, WS_EV_CLOSE, 0, "", 0);
    want.ev[0].close_code = WS_CLOSE_NO_STATUS;
    expect_events(true, 1 << 20, &b, &want, "empty close");
    rec_free(&want);
    free(b.p);

    /* A valid character split across fragments, at every split point. */
    const char *euro = "x\xe2\x82\xac\xf0\x9f\x98\x80y";
    for (size_t cut = 0; cut <= 9; cut++) {
        b = (bytes){0};
        put_frame(&b, WS_OP_TEXT, false, euro, cut, MASK);
        put_frame(&b, WS_OP_CONTINUATION, true, euro + cut, 9 - cut, MASK);
        expect_ev(&want, WS_EV_MESSAGE, WS_OP_TEXT, euro, 9);
        char what[64];
        snprintf(what, sizeof what, "utf-8 split at %zu", cut);
        expect_events(true, 1 << 20, &b, &want, what);
        rec_free(&want);
        free(b.p);
    }
}

/* ------------------------------------------------------------------------ */
/* Violations                                                                */

static void expect_error(bool server, const char *hex, uint16_t code, const char *what) {
    bytes b = {0};
    put_hex(&b, hex);
    uint16_t got = error_of(server, 1000, &b);
    CHECKF(got == code, "%s: got %u, want %u", what, got, code);
    /* and the same when the bytes arrive one by one */
    rec out = {0};
    feed_opts o = {.server = server, .max_message = 1000, .how = FEED_BYTES};
    feed(&o, b.p, b.n, &out);
    bool failed = out.n > 0 && out.ev[out.n - 1].kind == WS_EV_ERROR;
    CHECKF(code ? failed && out.ev[out.n - 1].error_code == code : !failed, "%s (bytewise)", what);
    rec_free(&out);
    free(b.p);
}

static void test_protocol_errors(void) {
    /* masked frames to a server: mask key 37fa213d */
    const char *K = "37fa213d";
    char hex[200];
#define HX(...) (snprintf(hex, sizeof hex, __VA_ARGS__), hex)
    /* RSV1, RSV2, RSV3 */
    expect_error(true, HX("c180%s", K), WS_CLOSE_PROTOCOL, "RSV1");
    expect_error(true, HX("a180%s", K), WS_CLOSE_PROTOCOL, "RSV2");
    expect_error(true, HX("9180%s", K), WS_CLOSE_PROTOCOL, "RSV3");
    expect_error(true, HX("c980%s", K), WS_CLOSE_PROTOCOL, "RSV1 on a ping");
    /* unknown opcodes */
    for (unsigned op = 3; op <= 0xF; op++) {
        if (op >= 8 && op <= 0xA) continue;
        char what[32];
        snprintf(what, sizeof what, "opcode %x", op);
        expect_error(true, HX("%02x80%s", 0x80 | op, K), WS_CLOSE_PROTOCOL, what);
    }
    /* masking the wrong way */
    expect_error(true, "8100", WS_CLOSE_PROTOCOL, "unmasked client frame");
    expect_error(true, "8900", WS_CLOSE_PROTOCOL, "unmasked client ping");
    expect_error(false, HX("8180%s", K), WS_CLOSE_PROTOCOL, "masked server frame");
    /* control frames: fragmented, too long */
    expect_error(true, HX("0980%s", K), WS_CLOSE_PROTOCOL, "fragmented ping");
    expect_error(true, HX("0880%s", K), WS_CLOSE_PROTOCOL, "fragmented close");
    expect_error(true, HX("0a80%s", K), WS_CLOSE_PROTOCOL, "fragmented pong");
    expect_error(true, HX("89fe007e%s", K), WS_CLOSE_PROTOCOL, "ping of 126 bytes");
    expect_error(true, HX("8afe007d%s", K), WS_CLOSE_PROTOCOL, "pong with a 16-bit length");
    expect_error(true, HX("88ff000000000000007d%s", K), WS_CLOSE_PROTOCOL, "close with a 64-bit length");
    /* continuation with no message; a new message inside one */
    expect_error(true, HX("8080%s", K), WS_CLOSE_PROTOCOL, "continuation first");
    expect_error(true, HX("0080%s", K), WS_CLOSE_PROTOCOL, "non-final continuation first");
    expect_error(true, HX("8180%s8080%s8080%s", K, K, K), WS_CLOSE_PROTOCOL, "continuation after a message");
    expect_error(true, HX("0180%s8180%s", K, K), WS_CLOSE_PROTOCOL, "text inside a text message");
    expect_error(true, HX("0180%s8280%s", K, K), WS_CLOSE_PROTOCOL, "binary inside a text message");
    expect_error(true, HX("0280%s8980%s0280%s", K, K, K), WS_CLOSE_PROTOCOL, "binary inside binary after a ping");
    /* non-minimal and overflowing lengths */
    expect_error(true, HX("82fe0000%s", K), WS_CLOSE_PROTOCOL, "16-bit length 0");
    expect_error(true, HX("82fe007d%s", K), WS_CLOSE_PROTOCOL, "16-bit length 125");
    expect_error(true, HX("82ff0000000000000000%s", K), WS_CLOSE_PROTOCOL, "64-bit length 0");
    expect_error(true, HX("82ff000000000000ffff%s", K), WS_CLOSE_PROTOCOL, "64-bit length 65535");
    expect_error(true, HX("82ff8000000000000000%s", K), WS_CLOSE_PROTOCOL, "64-bit length 2^63");
    expect_error(true, HX("82ffffffffffffffffff%s", K), WS_CLOSE_PROTOCOL, "64-bit length 2^64-1");
    expect_error(false, "827e0000", WS_CLOSE_PROTOCOL, "16-bit length 0 (client)");
    expect_error(false, "827f8000000000000001", WS_CLOSE_PROTOCOL, "63-bit overflow (client)");
    /* close payloads */
    expect_error(true, HX("8881%s%02x", K, 0x03 ^ 0x37), WS_CLOSE_PROTOCOL, "close of 1 byte");
    /* after a ping "\x03\xe8": no stale second byte makes it code 1000 */
    expect_error(true, HX("8982%s3412" "8881%s34", K, K), WS_CLOSE_PROTOCOL, "close of 1 byte after a ping");
    static const uint16_t bad_codes[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof bad_codes / sizeof bad_codes[0]; i++) {
        char what[32];
        snprintf(what, sizeof what, "close code %u", bad_codes[i]);
        expect_error(false, HX("8802%04x", bad_codes[i]), WS_CLOSE_PROTOCOL, what);
    }
    expect_error(false, "880403e8c3a9", 0, "close with a UTF-8 reason");
    expect_error(false, "880403e8c328", WS_CLOSE_INVALID_DATA, "close reason not UTF-8");
    expect_error(false, "880303e8c3", WS_CLOSE_INVALID_DATA, "close reason cut in a character");
    expect_error(false, "880503e8eda080", WS_CLOSE_INVALID_DATA, "close reason with a surrogate");
#undef HX

    /* A violation ends the reader: it consumes nothing after. Checked by
     * feed() on every error; here the consumed count of the failing call
     * stays within the input, and a good frame later is not read. */
    ws_reader r;
    ws_reader_init(&r, true, 100);
    ws_event ev;
    uint8_t in[] = {0xc1, 0x80, 1, 2, 3, 4, 0x81, 0x80, 1, 2, 3, 4};
    size_t c = ws_read(&r, in, sizeof in, NULL, 0, &ev);
    CHECK(c <= sizeof in);
    CHECK(ev.kind == WS_EV_ERROR && ev.error_code == WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(ws_read(&r, in + 6, 6, NULL, 0, &ev), 0);
    CHECK(ev.kind == WS_EV_ERROR && ev.error_code == WS_CLOSE_PROTOCOL);
}

static void test_invalid_utf8(void) {
    bytes b = {0};
    /* E0 in one fragment, 80 (overlong) in the next */
    put_frame(&b, WS_OP_TEXT, false, "ab\xe0", 3, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, "\x80\x80", 2, MASK);
    CHECK_EQ_INT(error_of(true, 1000, &b), WS_CLOSE_INVALID_DATA);
    b.n = 0;
    /* ED A0 80 (a surrogate) cut 1|2, with a ping between */
    put_frame(&b, WS_OP_TEXT, false, "\xed", 1, MASK);
    put_frame(&b, WS_OP_PING, true, "", 0, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, "\xa0\x80", 2, MASK);
    CHECK_EQ_INT(error_of(true, 1000, &b), WS_CLOSE_INVALID_DATA);
    b.n = 0;
    /* a character cut off by the final fragment */
    put_frame(&b, WS_OP_TEXT, false, "ok\xf0\x9f", 4, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, "\x98", 1, MASK);
    CHECK_EQ_INT(error_of(true, 1000, &b), WS_CLOSE_INVALID_DATA);
    b.n = 0;
    /* fail fast: an invalid first fragment fails before the message ends */
    put_frame(&b, WS_OP_TEXT, false, "\xc0\xaf", 2, MASK);
    rec out = {0};
    feed_opts o = {.server = true, .max_message = 1000, .how = FEED_WHOLE};
    feed(&o, b.p, b.n, &out);
    CHECK(out.n == 1 && out.ev[0].kind == WS_EV_ERROR && out.ev[0].error_code == WS_CLOSE_INVALID_DATA);
    rec_free(&out);
    b.n = 0;
    /* the same bytes as binary are fine */
    put_frame(&b, WS_OP_BINARY, false, "ab\xe0", 3, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, "\x80\x80", 2, MASK);
    CHECK_EQ_INT(error_of(true, 1000, &b), 0);
    b.n = 0;
    /* a long ASCII text with one bad byte deep in it, at every 8-offset */
    for (size_t at = 4000; at < 4040; at++) {
        uint8_t *t = xrealloc(NULL, 5000);
        memset(t, 'z', 5000);
        t[at] = 0xff;
        b.n = 0;
        put_frame(&b, WS_OP_TEXT, false, t, 4500, MASK);
        put_frame(&b, WS_OP_CONTINUATION, true, t + 4500, 500, MASK);
        CHECKF(error_of(true, 10000, &b) == WS_CLOSE_INVALID_DATA, "bad byte at %zu", at);
        free(t);
    }
    free(b.p);
}

static void test_too_big(void) {
    uint8_t *p = xrealloc(NULL, 2000);
    memset(p, 'q', 2000);
    bytes b = {0};
    /* exactly max_message: accepted, in one frame and in fragments */
    put_frame(&b, WS_OP_TEXT, true, p, 1000, MASK);
    CHECK_EQ_INT(error_of(true, 1000, &b), 0);
    b.n = 0;
    put_frame(&b, WS_OP_BINARY, false, p, 600, MASK);
    put_frame(&b, WS_OP_PING, true, p, 100, MASK);      /* control bytes do not count */
    put_frame(&b, WS_OP_CONTINUATION, false, p, 0, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, p, 400, MASK);
    rec want = {0};
    expect_ev(&want, WS_EV_PING, 0, p, 100);
    expect_ev(&want, WS_EV_MESSAGE, WS_OP_BINARY, p, 1000);
    expect_events(true, 1000, &b, &want, "exactly max_message in fragments");
    rec_free(&want);
    b.n = 0;
    /* max_message + 1: 1009, before a payload byte is taken */
    put_frame(&b, WS_OP_TEXT, true, p, 1001, MASK);
    CHECK_EQ_INT(error_of(true, 1000, &b), WS_CLOSE_TOO_BIG);
    ws_reader r;
    ws_event ev;
    ws_reader_init(&r, true, 1000);
    CHECK_EQ_INT(ws_read(&r, b.p, b.n, NULL, 0, &ev), 8);
    CHECK(ev.kind == WS_EV_ERROR && ev.error_code == WS_CLOSE_TOO_BIG);
    b.n = 0;
    put_frame(&b, WS_OP_TEXT, false, p, 600, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, p, 401, MASK);
    CHECK_EQ_INT(error_of(true, 1000, &b), WS_CLOSE_TOO_BIG);
    b.n = 0;
    /* a 64-bit length far beyond it */
    put_hex(&b, "82ff7fffffffffffffff37fa213d");
    CHECK_EQ_INT(error_of(true, 1000, &b), WS_CLOSE_TOO_BIG);
    b.n = 0;
    /* max_message changed between messages */
    put_frame(&b, WS_OP_TEXT, true, p, 500, MASK);
    put_frame(&b, WS_OP_TEXT, true, p, 500, MASK);
    ws_reader_init(&r, true, 1000);
    uint8_t buf[1000];
    size_t c = ws_read(&r, b.p, b.n, buf, sizeof buf, &ev);
    CHECK(ev.kind == WS_EV_MESSAGE && ev.len == 500);
    r.max_message = 499;
    ws_read(&r, b.p + c, b.n - c, buf, sizeof buf, &ev);
    CHECK(ev.kind == WS_EV_ERROR && ev.error_code == WS_CLOSE_TOO_BIG);
    free(b.p);
    free(p);
}

static void test_need_buffer(void) {
    uint8_t p[300];
    for (size_t i = 0; i < sizeof p; i++) p[i] = (uint8_t)('a' + i % 26);
    bytes b = {0};
    put_frame(&b, WS_OP_TEXT, false, p, 200, MASK);
    put_frame(&b, WS_OP_PING, true, "x", 1, MASK);
    put_frame(&b, WS_OP_CONTINUATION, true, p + 200, 100, MASK);

    ws_reader r;
    ws_event ev;
    ws_reader_init(&r, true, 1000);
    uint8_t *buf = NULL;
    size_t cap = 0, pos = 0;
    /* first frame: the header is taken, then the whole frame is asked for */
    pos += ws_read(&r, b.p, b.n, buf, cap, &ev);
    CHECK_EQ_INT(ev.kind, WS_EV_NEED_BUFFER);
    CHECK_EQ_INT(ev.needed, 200);
    CHECK_EQ_INT(pos, 8);
    /* not grown: asked again, nothing consumed */
    CHECK_EQ_INT(ws_read(&r, b.p + pos, b.n - pos, buf, cap, &ev), 0);
    CHECK_EQ_INT(ev.kind, WS_EV_NEED_BUFFER);
    CHECK_EQ_INT(ev.needed, 200);
    /* grown by too little: still asked */
    cap = 199;
    buf = xrealloc(buf, cap);
    CHECK_EQ_INT(ws_read(&r, b.p + pos, b.n - pos, buf, cap, &ev), 0);
    CHECK_EQ_INT(ev.kind, WS_EV_NEED_BUFFER);
    cap = 200;
    buf = xrealloc(buf, cap);
    pos += ws_read(&r, b.p + pos, b.n - pos, buf, cap, &ev);
    CHECK_EQ_INT(ev.kind, WS_EV_PING);
    CHECK_EQ_INT(ev.len, 1);
    pos += ws_read(&r, b.p + pos, b.n - pos, buf, cap, &ev);
    CHECK_EQ_INT(ev.kind, WS_EV_NEED_BUFFER);
    CHECK_EQ_INT(ev.needed, 300);
    /* a moved buffer with the contents kept */
    uint8_t *moved = xrealloc(NULL, 300);
    memcpy(moved, buf, 200);
    memset(buf, 0, 200);
    free(buf);
    buf = moved;
    cap = 300;
    pos += ws_read(&r, b.p + pos, b.n - pos, buf, cap, &ev);
    CHECK_EQ_INT(ev.kind, WS_EV_MESSAGE);
    CHECK(ev.data == buf);
    CHECK_EQ_INT(ev.len, 300);
    CHECK_EQ_MEM(ev.data, p, 300);
    CHECK_EQ_INT(pos, b.n);
    CHECK_EQ_INT(ws_read(&r, NULL, 0, buf, cap, &ev), 0);
    CHECK_EQ_INT(ev.kind, WS_EV_NONE);

    /* an empty message needs no buffer at all */
    b.n = 0;
    put_frame(&b, WS_OP_BINARY, true, "", 0, MASK);
    ws_reader_init(&r, true, 1000);
    CHECK_EQ_INT(ws_read(&r, b.p, b.n, NULL, 0, &ev), b.n);
    CHECK(ev.kind == WS_EV_MESSAGE && ev.len == 0 && ev.opcode == WS_OP_BINARY);

    /* NEED_BUFFER even when the header ends exactly at the end of input */
    b.n = 0;
    put_frame(&b, WS_OP_BINARY, true, p, 10, MASK);
    ws_reader_init(&r, true, 1000);
    CHECK_EQ_INT(ws_read(&r, b.p, 6, NULL, 0, &ev), 6);
    CHECK_EQ_INT(ev.kind, WS_EV_NEED_BUFFER);
    CHECK_EQ_INT(ev.needed, 10);
    free(buf);
    free(b.p);
}

/* ------------------------------------------------------------------------ */
/* A long stream, however it is cut                                          */

/* Random messages (text mostly non-ASCII or mostly ASCII, binary; all the
 * length forms), fragmented at random with control frames between, ending
 * with a close. Appends the events a reader must give to want; returns
 * where the close frame starts. */
static size_t make_stream(bytes *b, rec *want, bool server, uint64_t seed, int messages) {
    rng_state = seed;
    for (int m = 0; m < messages; m++) {
        bool text = rnd_below(3) != 0;
        size_t n;
        switch (rnd_below(6)) {
        case 0: n = 0; break;
        case 1: n = 120 + rnd_below(15); break;
        case 2: n = 65530 + rnd_below(12); break;
        case 3: n = rnd_below(5000); break;
        default: n = rnd_below(100); break;
        }
        bytes pl = {0};
        if (text) put_text(&pl, n, rnd_below(2));
        else for (size_t i = 0; i < n; i++) { uint8_t c = (uint8_t)rnd(); put(&pl, &c, 1); }
        size_t frags = 1 + rnd_below(4), at = 0;
        for (size_t f = 0; f < frags; f++) {
            bool last = f + 1 == frags;
            size_t k = last ? pl.n - at : rnd_below(pl.n - at + 1);
            uint8_t mask[4] = {(uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd(), (uint8_t)rnd()};
            put_frame(b, f == 0 ? (text ? WS_OP_TEXT : WS_OP_BINARY) : WS_OP_CONTINUATION, last,
                      pl.p + at, k, server ? mask : NULL);
            at += k;
            if (!last && rnd_below(2)) {
                uint8_t cp[125];
                size_t cn = rnd_below(126);
                for (size_t i = 0; i < cn; i++) cp[i] = (uint8_t)rnd();
                bool ping = rnd_below(2);
                put_frame(b, ping ? WS_OP_PING : WS_OP_PONG, true, cp, cn, server ? mask : NULL);
                expect_ev(want, ping ? WS_EV_PING : WS_EV_PONG, 0, cp, cn);
            }
        }
        expect_ev(want, WS_EV_MESSAGE, text ? WS_OP_TEXT : WS_OP_BINARY, pl.p, pl.n);
        free(pl.p);
    }
    uint8_t cl[125];
    size_t cn = ws_close_payload(cl, 1001, "going \xe2\x9c\x93", 9), close_at = b->n;
    put_frame(b, WS_OP_CLOSE, true, cl, cn, server ? MASK : NULL);
    expect_ev(want, WS_EV_CLOSE, 0, cl, cn);
    want->ev[want->n - 1].close_code = 1001;
    want->ev[want->n - 1].reason_len = cn - 2;
    return close_at;
}

static void test_stream_splits(void) {
    for (int server = 0; server <= 1; server++) {
        bytes b = {0};
        rec want = {0};
        size_t close_at = make_stream(&b, &want, server, 1234 + (uint64_t)server, 60);

        /* whole, with a large buffer: exactly the generated events */
        rec whole = {0};
        feed_opts o = {.server = server, .max_message = 1 << 20, .how = FEED_WHOLE,
                       .initial_cap = 1 << 20};
        feed(&o, b.p, b.n, &whole);
        rec_equal(&whole, &want, server ? "stream whole (server)" : "stream whole (client)");
        rec_free(&whole);

        /* with a buffer grown on NEED_BUFFER, the NEED_BUFFER events too
         * must be the same whatever the cut */
        o.initial_cap = 0;
        o.record_need = true;
        rec ref = {0};
        feed(&o, b.p, b.n, &ref);
        o.how = FEED_BYTES;
        rec bytewise = {0};
        feed(&o, b.p, b.n, &bytewise);
        rec_equal(&bytewise, &ref, "stream byte by byte, growing buffer");
        rec_free(&bytewise);
        for (uint64_t seed = 1; seed <= 6; seed++) {
            o.how = FEED_RANDOM;
            o.seed = seed;
            rec rnd_rec = {0};
            feed(&o, b.p, b.n, &rnd_rec);
            char what[64];
            snprintf(what, sizeof what, "stream random chunks seed %llu", (unsigned long long)seed);
            rec_equal(&rnd_rec, &ref, what);
            rec_free(&rnd_rec);
        }
        rec_free(&ref);

        /* a stream ending in a violation: the same events, error included */
        b.n = close_at;             /* drop the close frame */
        uint8_t bad[] = {'o', 'k', 0xf4, 0x90};
        put_frame(&b, WS_OP_TEXT, false, "\xe2\x82", 2, server ? MASK : NULL);
        put_frame(&b, WS_OP_CONTINUATION, true, bad, sizeof bad, server ? MASK : NULL);
        free(want.ev[want.n - 1].data);
        want.ev[want.n - 1] = (rec_ev){.kind = WS_EV_ERROR, .error_code = WS_CLOSE_INVALID_DATA};
        expect_events(server, 1 << 20, &b, &want, "stream ending in bad UTF-8");
        rec_free(&want);
        free(b.p);
    }
}

int main(void) {
    test_rfc_examples();
    test_frame_header();
    test_mask();
    test_close_payload();
    test_close_code_valid();
    test_utf8();
    test_frame_lengths();
    test_fragmentation();
    test_protocol_errors();
    test_invalid_utf8();
    test_too_big();
    test_need_buffer();
    test_stream_splits();
    return check_summary();
}
