/*
 * ws.c — RFC 6455 framing, sans-IO (see ws.h).
 *
 * The reader is a two-phase state machine per frame: header bytes are
 * gathered in r->hdr (at most 14, so a header split anywhere costs two small
 * copies), then the payload is unmasked straight from the input into the
 * caller's msg_buf (data frames) or r->ctrl (control frames). Every decision
 * depends only on the bytes seen, never on how they were split into calls,
 * so any split of a stream gives the same events.
 *
 * Speed. Unmasking XORs 64 bytes per step with the mask rotated to the
 * frame offset and widened to 16 bytes (SSE2; 8 bytes at a time elsewhere),
 * while copying. Text is validated right after, in blocks that are still in
 * L1: ASCII runs are skipped 32 bytes at a time by their high bits, and only
 * the rest goes through a shift-based DFA (one table load and one shift per
 * byte, after Per Vognsen's and Dougall Johnson's designs), split into four
 * interleaved chains over long non-ASCII runs. The DFA's state survives
 * between fragments and calls, so a sequence may be split anywhere.
 *
 * When does NEED_BUFFER come? As soon as a data frame's header is complete
 * (and on every call after, until the buffer is large enough), asking for
 * the whole frame: msg_len + its payload length. The 1009 check before it
 * bounds that by max_message, so a peer cannot make us grow past it.
 *
 * After a CLOSE the reader goes on parsing whatever follows; the connection
 * decides what to do with bytes after a close (RFC 6455 says to discard them).
 */
#include "ws.h"

#include <string.h>

#if defined(__SSE2__) && !defined(AEGIS_WS_NO_SIMD)
#include <emmintrin.h>
#define WS_SSE2 1
#endif

/* Text is unmasked and then validated this many bytes at a time, so that
 * the validator reads what the unmasking just wrote from L1. */
#define WS_TEXT_BLOCK 16384

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                     */

/*
 * A DFA for RFC 3629 UTF-8 (no overlongs, no surrogates, nothing above
 * U+10FFFF). A state is a bit offset; the row of a byte holds, at offset s,
 * the 6-bit next state from s. ERR is offset 0 and every row has zeros
 * there, so an error is absorbing and can be checked once per block.
 */
enum {
    U8_ERR = 0,
    U8_ACC = 6,    /* between characters */
    U8_T1 = 12,    /* one continuation byte to go */
    U8_T2 = 18,    /* two */
    U8_T3 = 24,    /* three */
    U8_E0 = 30,    /* after E0: A0..BF (no overlong 3-byte forms) */
    U8_ED = 36,    /* after ED: 80..9F (no surrogates) */
    U8_F0 = 42,    /* after F0: 90..BF (no overlong 4-byte forms) */
    U8_F4 = 48,    /* after F4: 80..8F (nothing above U+10FFFF) */
};

#define TR(from, to) ((uint64_t)(to) << (from))
#define XX 0                                     /* C0, C1, F5..FF: never valid */
#define AS TR(U8_ACC, U8_ACC)                    /* 00..7F */
#define CONT TR(U8_T1, U8_ACC) | TR(U8_T2, U8_T1) | TR(U8_T3, U8_T2)
#define C8 (CONT | TR(U8_ED, U8_T1) | TR(U8_F4, U8_T2))   /* 80..8F */
#define C9 (CONT | TR(U8_ED, U8_T1) | TR(U8_F0, U8_T2))   /* 90..9F */
#define CA (CONT | TR(U8_E0, U8_T1) | TR(U8_F0, U8_T2))   /* A0..BF */
#define L2 TR(U8_ACC, U8_T1)                     /* C2..DF */
#define L3 TR(U8_ACC, U8_T2)                     /* E1..EC, EE..EF */
#define LE0 TR(U8_ACC, U8_E0)
#define LED TR(U8_ACC, U8_ED)
#define L4 TR(U8_ACC, U8_T3)                     /* F1..F3 */
#define LF0 TR(U8_ACC, U8_F0)
#define LF4 TR(U8_ACC, U8_F4)
#define AS16 AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS

static const uint64_t utf8_dfa[256] = {
    AS16, AS16, AS16, AS16, AS16, AS16, AS16, AS16,                        /* 00..7F */
    C8, C8, C8, C8, C8, C8, C8, C8, C8, C8, C8, C8, C8, C8, C8, C8,        /* 80..8F */
    C9, C9, C9, C9, C9, C9, C9, C9, C9, C9, C9, C9, C9, C9, C9, C9,        /* 90..9F */
    CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA,        /* A0..AF */
    CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA, CA,        /* B0..BF */
    XX, XX, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2,        /* C0..CF */
    L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2, L2,        /* D0..DF */
    LE0, L3, L3, L3, L3, L3, L3, L3, L3, L3, L3, L3, L3, LED, L3, L3,      /* E0..EF */
    LF0, L4, L4, L4, LF4, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX,      /* F0..FF */
};

#undef TR
#undef XX
#undef AS
#undef CONT
#undef C8
#undef C9
#undef CA
#undef L2
#undef L3
#undef LE0
#undef LED
#undef L4
#undef LF0
#undef LF4
#undef AS16

/* The first byte in [p, end) with its high bit set, or end. */
static inline const uint8_t *skip_ascii(const uint8_t *p, const uint8_t *end) {
#ifdef WS_SSE2
    while (end - p >= 32) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
        if (_mm_movemask_epi8(_mm_or_si128(a, b)) != 0) {
            unsigned m = (unsigned)_mm_movemask_epi8(a) | (unsigned)_mm_movemask_epi8(b) << 16;
            return p + __builtin_ctz(m);
        }
        p += 32;
    }
#endif
    /* 8 at a time: a word with a high bit set is finished bytewise. */
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (w & 0x8080808080808080u) break;
        p += 8;
    }
    while (p < end && *p < 0x80) p++;
    return p;
}

static inline uint64_t dfa_step(uint64_t s, uint8_t b) { return utf8_dfa[b] >> (s & 63); }

static uint64_t dfa_run(uint64_t s, const uint8_t *p, const uint8_t *end) {
    while (p < end) s = dfa_step(s, *p++);
    return s & 63;
}

/* The DFA over p[0..n), n ≥ 64, as four interleaved chains: one chain is
 * bound by the latency of its shift, four keep the core busy. Chains 2–4
 * start from U8_ACC at a character boundary (a byte that is not 10xxxxxx)
 * found near each quarter; the chain before must then end there in U8_ACC,
 * since a lead or ASCII byte in the middle of a character is an error
 * anyway. Four continuation bytes in a row are an error too: the plain DFA
 * finds it. */
static uint64_t dfa_run4(uint64_t s, const uint8_t *p, size_t n) {
    const uint8_t *cut[5] = {p, p + n / 4, p + n / 2, p + 3 * n / 4, p + n};
    for (int i = 1; i <= 3; i++) {
        for (int k = 0; k < 3 && (*cut[i] & 0xC0) == 0x80; k++) cut[i]++;
        if ((*cut[i] & 0xC0) == 0x80) return dfa_run(s, p, p + n);
    }
    size_t len = (size_t)(cut[1] - cut[0]);
    for (int i = 1; i < 4; i++) {
        size_t l = (size_t)(cut[i + 1] - cut[i]);
        if (l < len) len = l;
    }
    uint64_t s0 = s, s1 = U8_ACC, s2 = U8_ACC, s3 = U8_ACC;
    const uint8_t *p0 = cut[0], *p1 = cut[1], *p2 = cut[2], *p3 = cut[3];
    for (size_t i = 0; i < len; i++) {
        s0 = dfa_step(s0, p0[i]);
        s1 = dfa_step(s1, p1[i]);
        s2 = dfa_step(s2, p2[i]);
        s3 = dfa_step(s3, p3[i]);
    }
    s0 = dfa_run(s0, p0 + len, cut[1]);
    s1 = dfa_run(s1, p1 + len, cut[2]);
    s2 = dfa_run(s2, p2 + len, cut[3]);
    s3 = dfa_run(s3, p3 + len, cut[4]);
    return s0 == U8_ACC && s1 == U8_ACC && s2 == U8_ACC ? s3 : U8_ERR;
}

/* Runs the validator over p[0..n) from `state`; returns the state after. */
static uint32_t utf8_feed(uint32_t state, const uint8_t *p, size_t n) {
    const uint8_t *end = p + n;
    uint64_t s = state;
    size_t window = 16;
    while (p < end) {
        if (s == U8_ACC) {
            const uint8_t *q = skip_ascii(p, end);
            /* Text that keeps coming back here after a short ASCII run is
             * mostly non-ASCII: give the DFA larger windows. */
            window = q - p < 32 ? (window < 1024 ? window * 2 : window) : 16;
            p = q;
            if (p == end) break;
        }
        size_t left = (size_t)(end - p), k = left < window ? left : window;
        if (k >= 64) s = dfa_run4(s, p, k);
        else s = dfa_run(s, p, p + k);
        p += k;
        if (s == U8_ERR) break;
    }
    return (uint32_t)s;
}

bool ws_utf8_valid(const uint8_t *p, size_t n) {
    return n == 0 || utf8_feed(U8_ACC, p, n) == U8_ACC;
}

/* ------------------------------------------------------------------------ */
/* Masking                                                                   */

/* dst[i] = src[i] ^ mask[(off + i) % 4]; dst may be src (in place). */
static void xor_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                     unsigned off) {
    /* The mask rotated to `off`, twice: a 64-bit word whose bytes line up
     * with every 8-byte step (and, widened, every 16-byte step). Built from
     * bytes, so it is right whatever the byte order. */
    uint8_t rot[8];
    for (unsigned i = 0; i < 8; i++) rot[i] = mask[(off + i) & 3];
    uint64_t w;
    memcpy(&w, rot, 8);
    size_t i = 0;
#ifdef WS_SSE2
    const __m128i m = _mm_set1_epi64x((long long)w);
    for (; n - i >= 64; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 48));
        _mm_storeu_si128((__m128i *)(void *)(dst + i), _mm_xor_si128(a, m));
        _mm_storeu_si128((__m128i *)(void *)(dst + i + 16), _mm_xor_si128(b, m));
        _mm_storeu_si128((__m128i *)(void *)(dst + i + 32), _mm_xor_si128(c, m));
        _mm_storeu_si128((__m128i *)(void *)(dst + i + 48), _mm_xor_si128(d, m));
    }
    for (; n - i >= 16; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm_storeu_si128((__m128i *)(void *)(dst + i), _mm_xor_si128(a, m));
    }
#endif
    for (; n - i >= 8; i += 8) {
        uint64_t x;
        memcpy(&x, src + i, 8);
        x ^= w;
        memcpy(dst + i, &x, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ rot[i & 7];
}

void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t offset) {
    if (n > 0) xor_copy(p, p, n, mask, (unsigned)(offset & 3));
}

/* ------------------------------------------------------------------------ */
/* Writer helpers                                                            */

size_t ws_frame_header(uint8_t out[14], uint8_t opcode, bool fin, uint64_t payload_len,
                       const uint8_t mask[4]) {
    uint8_t m = mask ? 0x80 : 0;
    size_t k;
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    /* The shortest form: the reader on the other side refuses any other. */
    if (payload_len < 126) {
        out[1] = (uint8_t)(m | payload_len);
        k = 2;
    } else if (payload_len <= 0xFFFF) {
        out[1] = m | 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        k = 4;
    } else {
        out[1] = m | 127;
        for (unsigned i = 0; i < 8; i++) out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        k = 10;
    }
    if (mask) {
        memcpy(out + k, mask, 4);
        k += 4;
    }
    return k;
}

size_t ws_close_payload(uint8_t out[125], uint16_t code, const char *reason, size_t reason_len) {
    size_t n = reason_len;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (n > 123) {
        /* Cut before the sequence that would straddle byte 123: the first
         * byte left out must start a character, not continue one. */
        const uint8_t *s = (const uint8_t *)reason;
        n = 123;
        while (n > 0 && (s[n] & 0xC0) == 0x80) n--;
    }
    if (n > 0) memcpy(out + 2, reason, n);
    return 2 + n;
}

bool ws_close_code_valid(uint16_t code) {
    /* 1004–1006 and 1015 are reserved, never on the wire; 1016–2999 are
     * for future protocol use; 3000–4999 are registered or private. */
    if (code >= 1000 && code <= 1003) return true;
    if (code >= 1007 && code <= 1014) return true;
    return code >= 3000 && code <= 4999;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

void ws_reader_init(ws_reader *r, bool server, uint64_t max_message) {
    memset(r, 0, sizeof *r);
    r->server = server;
    r->max_message = max_message;
    r->hdr_need = 2;
    r->utf8_state = U8_ACC;
}

static size_t fail(ws_reader *r, ws_event *ev, uint16_t code, size_t consumed) {
    r->failed = true;
    r->error = code;
    ev->kind = WS_EV_ERROR;
    ev->error_code = code;
    return consumed;
}

static inline bool is_control(uint8_t op) { return op >= 0x8; }

/* Header bytes 0 and 1 are in: checks all they decide alone and sets the
 * header's full size. Returns 0 or the close code of the violation. */
static uint16_t header_start(ws_reader *r) {
    uint8_t b0 = r->hdr[0], b1 = r->hdr[1];
    uint8_t op = b0 & 0x0F, len7 = b1 & 0x7F;
    bool fin = (b0 & 0x80) != 0, masked = (b1 & 0x80) != 0;
    if (b0 & 0x70) return WS_CLOSE_PROTOCOL;           /* RSV1–3: no extension */
    if (is_control(op)) {
        if (op > WS_OP_PONG) return WS_CLOSE_PROTOCOL;
        if (!fin || len7 > 125) return WS_CLOSE_PROTOCOL;
    } else {
        if (op > WS_OP_BINARY) return WS_CLOSE_PROTOCOL;
        if ((op == WS_OP_CONTINUATION) != r->in_message) return WS_CLOSE_PROTOCOL;
    }
    /* §5.1: clients always mask, servers never do. */
    if (masked != r->server) return WS_CLOSE_PROTOCOL;
    r->hdr_need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked ? 4 : 0));
    return 0;
}

/* The whole header is in: the length checks, then the frame starts.
 * Returns 0 or the close code of the violation. */
static uint16_t header_finish(ws_reader *r) {
    const uint8_t *h = r->hdr + 2;
    uint64_t n = r->hdr[1] & 0x7F;
    if (n == 126) {
        n = (uint64_t)h[0] << 8 | h[1];
        h += 2;
        if (n < 126) return WS_CLOSE_PROTOCOL;         /* §5.2: minimal length */
    } else if (n == 127) {
        n = 0;
        for (unsigned i = 0; i < 8; i++) n = n << 8 | h[i];
        h += 8;
        if (n >> 63) return WS_CLOSE_PROTOCOL;         /* the top bit must be 0 */
        if (n <= 0xFFFF) return WS_CLOSE_PROTOCOL;
    }
    r->opcode = r->hdr[0] & 0x0F;
    r->fin = (r->hdr[0] & 0x80) != 0;
    r->masked = (r->hdr[1] & 0x80) != 0;
    if (r->masked) memcpy(r->mask, h, 4);
    r->mask_off = 0;
    r->remaining = n;
    r->hdr_len = 0;
    r->hdr_need = 2;
    r->in_payload = true;
    if (is_control(r->opcode)) {
        r->ctrl_len = 0;
        return 0;
    }
    if (r->opcode != WS_OP_CONTINUATION) {
        r->in_message = true;
        r->msg_opcode = r->opcode;
        r->msg_len = 0;
        r->utf8_state = U8_ACC;
    }
    /* 1009 as soon as the sum is known, before any byte is buffered. */
    uint64_t limit = r->max_message;
    if (limit > SIZE_MAX) limit = SIZE_MAX;
    if (r->msg_len > limit || n > limit - r->msg_len) return WS_CLOSE_TOO_BIG;
    return 0;
}

/* Unmasks (or copies) n payload bytes to dst, advancing the mask. */
static void payload_copy(ws_reader *r, uint8_t *dst, const uint8_t *src, size_t n) {
    if (r->masked) {
        xor_copy(dst, src, n, r->mask, r->mask_off);
        r->mask_off = (uint8_t)((r->mask_off + n) & 3);
    } else {
        memcpy(dst, src, n);
    }
}

/* Payload bytes of a data frame into msg_buf. Returns false on bad UTF-8. */
static bool data_copy(ws_reader *r, uint8_t *dst, const uint8_t *src, size_t n) {
    if (r->msg_opcode != WS_OP_TEXT) {
        payload_copy(r, dst, src, n);
        return true;
    }
    uint32_t s = r->utf8_state;
    while (n > 0) {
        size_t k = n < WS_TEXT_BLOCK ? n : WS_TEXT_BLOCK;
        payload_copy(r, dst, src, k);
        s = utf8_feed(s, dst, k);
        if (s == U8_ERR) break;                        /* fail fast (§8.1) */
        dst += k;
        src += k;
        n -= k;
    }
    r->utf8_state = s;
    return s != U8_ERR;
}

/* A whole control frame is in r->ctrl: its event, or a violation. */
static size_t control_event(ws_reader *r, ws_event *ev, size_t consumed) {
    ev->data = r->ctrl;
    ev->len = r->ctrl_len;
    if (r->opcode == WS_OP_PING) {
        ev->kind = WS_EV_PING;
        return consumed;
    }
    if (r->opcode == WS_OP_PONG) {
        ev->kind = WS_EV_PONG;
        return consumed;
    }
    /* Close (§5.5.1, §7.4). */
    if (r->ctrl_len == 0) {
        ev->kind = WS_EV_CLOSE;
        ev->close_code = WS_CLOSE_NO_STATUS;
        return consumed;
    }
    if (r->ctrl_len == 1) return fail(r, ev, WS_CLOSE_PROTOCOL, consumed);
    uint16_t code = (uint16_t)(r->ctrl[0] << 8 | r->ctrl[1]);
    if (!ws_close_code_valid(code)) return fail(r, ev, WS_CLOSE_PROTOCOL, consumed);
    if (!ws_utf8_valid(r->ctrl + 2, r->ctrl_len - 2u))
        return fail(r, ev, WS_CLOSE_INVALID_DATA, consumed);
    ev->kind = WS_EV_CLOSE;
    ev->close_code = code;
    ev->reason = r->ctrl + 2;
    ev->reason_len = r->ctrl_len - 2u;
    return consumed;
}

size_t ws_read(ws_reader *r, const uint8_t *in, size_t len, uint8_t *msg_buf, size_t msg_cap,
               ws_event *ev) {
    size_t pos = 0;
    *ev = (ws_event){.kind = WS_EV_NONE};
    if (r->failed) return fail(r, ev, r->error, 0);
    for (;;) {
        if (!r->in_payload) {
            /* Header: at most two copies, before and after the size is known. */
            while (r->hdr_len < r->hdr_need) {
                if (pos == len) return pos;
                size_t want = (size_t)(r->hdr_need - r->hdr_len), have = len - pos;
                size_t k = want < have ? want : have;
                memcpy(r->hdr + r->hdr_len, in + pos, k);
                r->hdr_len = (uint8_t)(r->hdr_len + k);
                pos += k;
                if (r->hdr_len == 2) {
                    uint16_t err = header_start(r);
                    if (err) return fail(r, ev, err, pos);
                }
            }
            uint16_t err = header_finish(r);
            if (err) return fail(r, ev, err, pos);
        }
        size_t have = len - pos;
        size_t k = r->remaining < have ? (size_t)r->remaining : have;
        if (is_control(r->opcode)) {
            if (k > 0) {
                payload_copy(r, r->ctrl + r->ctrl_len, in + pos, k);
                r->ctrl_len = (uint8_t)(r->ctrl_len + k);
                pos += k;
                r->remaining -= k;
            }
            if (r->remaining > 0) return pos;
            r->in_payload = false;
            return control_event(r, ev, pos);
        }
        if (r->remaining > 0) {
            /* The whole frame must fit; the 1009 check made this ≤ max_message. */
            if (msg_cap < r->msg_len || r->remaining > msg_cap - r->msg_len) {
                ev->kind = WS_EV_NEED_BUFFER;
                ev->needed = r->msg_len + (size_t)r->remaining;
                return pos;
            }
            if (k > 0) {
                bool ok = data_copy(r, msg_buf + r->msg_len, in + pos, k);
                r->msg_len += k;
                pos += k;
                r->remaining -= k;
                if (!ok) return fail(r, ev, WS_CLOSE_INVALID_DATA, pos);
            }
            if (r->remaining > 0) return pos;
        }
        r->in_payload = false;
        if (!r->fin) continue;                         /* more fragments to come */
        if (r->msg_opcode == WS_OP_TEXT && r->utf8_state != U8_ACC)
            return fail(r, ev, WS_CLOSE_INVALID_DATA, pos);  /* a character cut off */
        r->in_message = false;
        ev->kind = WS_EV_MESSAGE;
        ev->opcode = r->msg_opcode;
        ev->data = msg_buf;
        ev->len = r->msg_len;
        r->msg_len = 0;
        return pos;
    }
}
