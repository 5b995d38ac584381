/*
 * test_b64.c — unit test of strict base64 (CSources/AegisCore/src/b64.c).
 *
 * Build and run (from the repository root):
 *   cc -std=c11 -O1 -g -fsanitize=address,undefined \
 *      -I CSources/AegisCore/include \
 *      CSources/AegisCore/src/b64.c Tests/CoreC/test_b64.c -o /tmp/test_b64
 *   /tmp/test_b64
 *
 * Covers the golden vectors of /work/shared/protocol/vectors.json "base64",
 * then properties against a naive reference codec written here, for every
 * kernel (the public dispatch, scalar and AVX2 when the CPU has it). Every
 * buffer handed to the codec is malloc'd to its exact size, so that the
 * sanitizer catches a kernel reading or writing past its end.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../../CSources/AegisCore/src/b64_internal.h"

/* check.h's CHECK with a formatted message: the loops below need to say
 * which length, position and kernel failed. */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t g_rng = 0x5eed0b64c0ffee01u; /* fixed seed: reproducible */

static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* A copy in a buffer of exactly n bytes. */
static void *dup_exact(const void *p, size_t n)
{
    void *q = xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static const char STD_ALPHA[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char URL_ALPHA[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static const char *alpha(bool url) { return url ? URL_ALPHA : STD_ALPHA; }
static const char *codec_name(bool url) { return url ? "b64u" : "b64"; }

static int alpha_index(bool url, uint8_t c)
{
    if (c == 0)
        return -1;
    const char *p = strchr(alpha(url), c);
    return p ? (int)(p - alpha(url)) : -1;
}

/* Naive reference encoder: a bit accumulator, nothing shared with b64.c. */
static size_t ref_encode(bool url, const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = alpha(url)[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = alpha(url)[(acc << (6 - bits)) & 63];
    if (!url)
        while (o % 4)
            out[o++] = '=';
    return o;
}

/* Naive reference strict decoder (PROTOCOL.md §1). */
static bool ref_decode(bool url, const uint8_t *t, size_t n, uint8_t *out,
                       size_t *out_len)
{
    size_t data = n;
    if (!url) {
        if (n % 4)
            return false;
        while (data > 0 && n - data < 2 && t[data - 1] == '=')
            data--;
    } else if (n % 4 == 1) {
        return false;
    }
    if (data % 4 == 1)
        return false; /* "A===" */
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < data; i++) {
        int v = alpha_index(url, t[i]);
        if (v < 0)
            return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return false; /* non-zero trailing bits */
    *out_len = o;
    return true;
}

/* ------------------------------------------------------------------------ */
/* Kernels under test                                                        */

static const aegis_b64_impl IMPLS[] = {AEGIS_B64_IMPL_AUTO, AEGIS_B64_IMPL_SCALAR,
                                       AEGIS_B64_IMPL_AVX2};
static const char *const IMPL_NAMES[] = {"auto", "scalar", "avx2"};
static size_t g_nimpl; /* 3 with AVX2, else 2 */

/* Decodes text[0..n) (copied to an exact-size buffer) into an exact-size
 * buffer of cap bytes; the result is copied to out (which must hold
 * aegis_b64_decoded_max(n) bytes). */
static aegis_status dec(aegis_b64_impl impl, bool url, const char *text,
                        size_t n, size_t cap, uint8_t *out, size_t *out_len)
{
    char *t = dup_exact(text, n);
    uint8_t *o = xmalloc(cap);
    *out_len = (size_t)-1;
    aegis_status s = aegis_b64_decode_impl(impl, url, t, n, o, cap, out_len);
    if (s == AEGIS_OK && *out_len <= cap)
        memcpy(out, o, *out_len);
    free(t);
    free(o);
    return s;
}

/* Every kernel must give the reference's verdict and bytes. */
static void check_against_ref(bool url, const char *text, size_t n,
                              const char *what)
{
    uint8_t *want = xmalloc(aegis_b64_decoded_max(n));
    uint8_t *got = xmalloc(aegis_b64_decoded_max(n));
    size_t want_len = 0;
    bool valid = ref_decode(url, (const uint8_t *)text, n, want, &want_len);
    for (size_t k = 0; k < g_nimpl; k++) {
        size_t got_len;
        aegis_status s = dec(IMPLS[k], url, text, n, aegis_b64_decoded_max(n),
                             got, &got_len);
        if (valid)
            CHECKF(s == AEGIS_OK && got_len == want_len &&
                      memcmp(got, want, want_len) == 0,
                  "%s %s %s: valid text (len %zu) not decoded right (status %d)",
                  codec_name(url), IMPL_NAMES[k], what, n, (int)s);
        else
            CHECKF(s == AEGIS_E_B64 && got_len == 0,
                  "%s %s %s: invalid text (len %zu) gave status %d",
                  codec_name(url), IMPL_NAMES[k], what, n, (int)s);
    }
    free(want);
    free(got);
}

/* ------------------------------------------------------------------------ */
/* Golden vectors (vectors.json "base64")                                    */

typedef struct vec {
    const char *text;
    const char *hex_or_why;
} vec;

static const vec B64_VALID[] = {
    {"", ""},
    {"AA==", "00"},
    {"AAA=", "0000"},
    {"AAAA", "000000"},
    {"+/8=", "fbff"},
    {"aGVsbG8=", "68656c6c6f"},
};
static const vec B64_INVALID[] = {
    {"AB==", "non-zero trailing bits"},
    {"AAB=", "non-zero trailing bits"},
    {"AA", "missing padding"},
    {"AA=", "missing padding"},
    {"AA===", "extra padding"},
    {"A===", "impossible length"},
    {"AA==AA==", "padding in the middle"},
    {" AA==", "leading whitespace"},
    {"AA==\n", "trailing newline"},
    {"AA\n==", "embedded newline"},
    {"-_8=", "base64url alphabet in a b64 field"},
};
static const vec B64U_VALID[] = {
    {"", ""},
    {"AA", "00"},
    {"AAA", "0000"},
    {"-_8", "fbff"},
    {"ZEP2E37MG1ejehKzEb1gCJWDKwMJWtfx7PlmG9Yhcf0",
     "6443f6137ecc1b57a37a12b311bd600895832b03095ad7f1ecf9661bd62171fd"},
};
static const vec B64U_INVALID[] = {
    {"AA==", "padding present"},
    {"AB", "non-zero trailing bits"},
    {"A", "impossible length"},
    {"+/8", "standard alphabet in a b64u field"},
    {"AA AA", "whitespace"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_golden_valid(bool url, const vec *v, size_t nv)
{
    for (size_t i = 0; i < nv; i++) {
        uint8_t bin[64], got[64];
        size_t n = unhex(v[i].hex_or_why, bin), tl = strlen(v[i].text);
        size_t elen = url ? aegis_b64u_encoded_len(n) : aegis_b64_encoded_len(n);
        CHECKF(elen == tl, "%s golden \"%s\": encoded_len %zu", codec_name(url),
              v[i].text, elen);
        for (size_t k = 0; k < g_nimpl; k++) {
            char *enc = xmalloc(elen);
            aegis_b64_encode_impl(IMPLS[k], url, bin, n, enc);
            CHECKF(elen == tl && memcmp(enc, v[i].text, tl) == 0,
                  "%s %s golden \"%s\": encode differs", codec_name(url),
                  IMPL_NAMES[k], v[i].text);
            free(enc);
            size_t got_len;
            aegis_status s = dec(IMPLS[k], url, v[i].text, tl, n, got, &got_len);
            CHECKF(s == AEGIS_OK && got_len == n && memcmp(got, bin, n) == 0,
                  "%s %s golden \"%s\": decode status %d", codec_name(url),
                  IMPL_NAMES[k], v[i].text, (int)s);
        }
        /* The public functions. */
        char enc[128];
        size_t got_len;
        if (url)
            aegis_b64u_encode(bin, n, enc);
        else
            aegis_b64_encode(bin, n, enc);
        CHECKF(memcmp(enc, v[i].text, tl) == 0, "%s public golden \"%s\": encode",
              codec_name(url), v[i].text);
        aegis_status s = url ? aegis_b64u_decode(v[i].text, tl, got, sizeof got, &got_len)
                             : aegis_b64_decode(v[i].text, tl, got, sizeof got, &got_len);
        CHECKF(s == AEGIS_OK && got_len == n && memcmp(got, bin, n) == 0,
              "%s public golden \"%s\": decode status %d", codec_name(url),
              v[i].text, (int)s);
        check_against_ref(url, v[i].text, tl, "golden (reference)");
    }
}

static void test_golden_invalid(bool url, const vec *v, size_t nv)
{
    for (size_t i = 0; i < nv; i++) {
        size_t tl = strlen(v[i].text);
        for (size_t k = 0; k < g_nimpl; k++) {
            uint8_t got[64];
            size_t got_len;
            aegis_status s = dec(IMPLS[k], url, v[i].text, tl,
                                 aegis_b64_decoded_max(tl), got, &got_len);
            CHECKF(s == AEGIS_E_B64 && got_len == 0, "%s %s golden invalid (%s): status %d",
                  codec_name(url), IMPL_NAMES[k], v[i].hex_or_why, (int)s);
        }
        uint8_t got[64];
        size_t got_len;
        aegis_status s = url ? aegis_b64u_decode(v[i].text, tl, got, sizeof got, &got_len)
                             : aegis_b64_decode(v[i].text, tl, got, sizeof got, &got_len);
        CHECKF(s == AEGIS_E_B64, "%s public golden invalid (%s): status %d",
              codec_name(url), v[i].hex_or_why, (int)s);
        check_against_ref(url, v[i].text, tl, "golden invalid (reference)");
    }
    /* Each b64 vector must also be refused by b64u and vice versa where the
     * alphabets or padding differ; spot-check the cross cases. */
    uint8_t got[8];
    size_t got_len;
    CHECKF(aegis_b64u_decode("+/8=", 4, got, sizeof got, &got_len) == AEGIS_E_B64,
          "b64u accepted a padded standard-alphabet text");
    CHECKF(aegis_b64_decode("-_8", 3, got, sizeof got, &got_len) == AEGIS_E_B64,
          "b64 accepted an unpadded url-alphabet text");
}

/* ------------------------------------------------------------------------ */
/* Sizes                                                                     */

static void test_sizes(void)
{
    for (size_t n = 0; n < 200; n++) {
        char buf[400];
        uint8_t zeros[200] = {0};
        size_t e = ref_encode(false, zeros, n, buf);
        size_t eu = ref_encode(true, zeros, n, buf);
        CHECKF(aegis_b64_encoded_len(n) == e, "b64_encoded_len(%zu)", n);
        CHECKF(aegis_b64u_encoded_len(n) == eu, "b64u_encoded_len(%zu)", n);
        CHECKF(aegis_b64_decoded_max(e) >= n && aegis_b64_decoded_max(eu) == n,
              "decoded_max for %zu bytes", n);
    }
    CHECKF(aegis_b64_encoded_len(SIZE_MAX) == SIZE_MAX &&
              aegis_b64u_encoded_len(SIZE_MAX) == SIZE_MAX,
          "encoded_len does not saturate");
    CHECKF(aegis_b64_decoded_max(SIZE_MAX) == SIZE_MAX / 4 * 3 + 2,
          "decoded_max(SIZE_MAX) overflowed");
}

/* ------------------------------------------------------------------------ */
/* Round trips and kernel agreement                                          */

static void round_trip(bool url, const uint8_t *bin, size_t n)
{
    size_t elen = url ? aegis_b64u_encoded_len(n) : aegis_b64_encoded_len(n);
    char *want = xmalloc(elen + 4);
    size_t wl = ref_encode(url, bin, n, want);
    CHECKF(wl == elen, "%s encoded_len(%zu) = %zu, reference %zu", codec_name(url),
          n, elen, wl);
    uint8_t *in = dup_exact(bin, n);
    uint8_t *back = xmalloc(n);
    for (size_t k = 0; k < g_nimpl; k++) {
        char *enc = xmalloc(elen);
        aegis_b64_encode_impl(IMPLS[k], url, in, n, enc);
        CHECKF(memcmp(enc, want, elen) == 0, "%s %s encode of %zu bytes differs",
              codec_name(url), IMPL_NAMES[k], n);
        size_t got_len;
        aegis_status s = dec(IMPLS[k], url, enc, elen, n, back, &got_len);
        CHECKF(s == AEGIS_OK && got_len == n && memcmp(back, bin, n) == 0,
              "%s %s round trip of %zu bytes (status %d)", codec_name(url),
              IMPL_NAMES[k], n, (int)s);
        if (n > 0) {
            s = dec(IMPLS[k], url, enc, elen, n - 1, back, &got_len);
            CHECKF(s == AEGIS_E_BUFFER_TOO_SMALL && got_len == n,
                  "%s %s: cap %zu for %zu bytes gave status %d, len %zu",
                  codec_name(url), IMPL_NAMES[k], n - 1, n, (int)s, got_len);
        }
        free(enc);
    }
    free(want);
    free(in);
    free(back);
}

static void test_round_trips(void)
{
    uint8_t *buf = xmalloc(5000);
    /* Every length up to a few blocks (block and tail boundaries). */
    for (size_t n = 0; n <= 300; n++) {
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rnd();
        round_trip(false, buf, n);
        round_trip(true, buf, n);
    }
    /* Random lengths up to 5000, random bytes; then all-zero and all-0xff
     * inputs (the extreme 6-bit values 0 and 63). */
    for (int iter = 0; iter < 400; iter++) {
        size_t n = rnd_below(5001);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rnd();
        round_trip(iter & 1, buf, n);
    }
    for (int fill = 0; fill < 2; fill++) {
        memset(buf, fill ? 0xff : 0x00, 5000);
        for (size_t n = 4990; n <= 5000; n++) {
            round_trip(false, buf, n);
            round_trip(true, buf, n);
        }
    }
    free(buf);
}

/* ------------------------------------------------------------------------ */
/* Refusals                                                                  */

/* A random valid text of about n bytes' encoding, in a malloc'd buffer. */
static char *random_text(bool url, size_t n, size_t *tl)
{
    uint8_t *bin = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        bin[i] = (uint8_t)rnd();
    *tl = url ? aegis_b64u_encoded_len(n) : aegis_b64_encoded_len(n);
    char *t = xmalloc(*tl + 8);
    ref_encode(url, bin, n, t);
    free(bin);
    return t;
}

static bool in_alphabet(bool url, uint8_t c) { return alpha_index(url, c) >= 0; }

/* Every byte value at every position of a text long enough for the SIMD
 * blocks and the scalar tail: each kernel must agree with the reference,
 * and a byte outside the alphabet (other than '=') must be refused. This
 * pins the AVX2 classification tables down completely. */
static void test_exhaustive_bytes(bool url)
{
    size_t tl;
    char *t = random_text(url, 151, &tl); /* b64: 204 chars, "=="-padded */
    uint8_t out[256];
    for (size_t k = 0; k < g_nimpl; k++) {
        unsigned bad = 0;
        for (size_t pos = 0; pos < tl; pos++) {
            char saved = t[pos];
            for (int c = 0; c < 256; c++) {
                t[pos] = (char)c;
                size_t want_len = 0, got_len;
                bool valid = ref_decode(url, (const uint8_t *)t, tl, out, &want_len);
                uint8_t want[256];
                memcpy(want, out, want_len);
                aegis_status s = dec(IMPLS[k], url, t, tl, sizeof out, out, &got_len);
                bool ok = valid ? s == AEGIS_OK && got_len == want_len &&
                                      memcmp(out, want, want_len) == 0
                                : s == AEGIS_E_B64;
                if (!in_alphabet(url, (uint8_t)c) && c != '=')
                    ok = ok && s == AEGIS_E_B64;
                if (!ok && bad++ < 5)
                    fprintf(stderr, "    %s %s: byte 0x%02x at %zu/%zu: status %d, reference %s\n",
                           codec_name(url), IMPL_NAMES[k], c, pos, tl, (int)s,
                           valid ? "valid" : "invalid");
            }
            t[pos] = saved;
        }
        CHECKF(bad == 0, "%s %s: %u wrong verdicts over all bytes at all positions",
              codec_name(url), IMPL_NAMES[k], bad);
    }
    free(t);
}

/* Random texts, random positions: a byte outside the alphabet (the other
 * alphabet's two characters most of the time, any other byte otherwise),
 * or '=' before the final quantum, must be refused by every kernel. */
static void test_corruptions(bool url)
{
    const char *other = url ? "+/" : "-_";
    for (int iter = 0; iter < 300; iter++) {
        size_t n = rnd_below(3001), tl;
        char *t = random_text(url, n, &tl);
        if (tl == 0) {
            free(t);
            continue;
        }
        for (int j = 0; j < 8; j++) {
            size_t pos = rnd_below(tl);
            uint8_t c;
            if (j == 0 && tl > 4) {
                c = '=';
                pos = rnd_below(tl - 4); /* never in the final quantum */
            } else if (j < 4) {
                c = (uint8_t)other[rnd() & 1];
            } else {
                do
                    c = (uint8_t)rnd();
                while (in_alphabet(url, c) || c == '=');
            }
            char saved = t[pos];
            t[pos] = (char)c;
            for (size_t k = 0; k < g_nimpl; k++) {
                uint8_t *out = xmalloc(aegis_b64_decoded_max(tl));
                size_t got_len;
                aegis_status s = dec(IMPLS[k], url, t, tl, aegis_b64_decoded_max(tl),
                                     out, &got_len);
                CHECKF(s == AEGIS_E_B64, "%s %s: byte 0x%02x at %zu of %zu accepted",
                      codec_name(url), IMPL_NAMES[k], c, pos, tl);
                free(out);
            }
            t[pos] = saved;
        }
        free(t);
    }
}

/* Whitespace anywhere: inserted (1 character, or 4 so that b64 keeps a
 * multiple-of-4 length) or replacing a character. */
static void test_whitespace(bool url)
{
    static const char ws[] = " \t\n\r\v\f";
    for (int iter = 0; iter < 300; iter++) {
        size_t n = rnd_below(2001), tl;
        char *t = random_text(url, n, &tl);
        for (int mode = 0; mode < 3; mode++) {
            if (mode == 2 && tl == 0)
                break;
            size_t ins = mode == 0 ? 1 : mode == 1 ? 4 : 0;
            size_t pos = rnd_below(tl + (ins ? 1 : 0));
            if (iter % 10 == 0)
                pos = iter % 20 ? 0 : tl - (ins ? 0 : 1); /* the two ends */
            size_t ml = tl + ins;
            char *m = xmalloc(ml);
            memcpy(m, t, pos);
            for (size_t i = 0; i < (ins ? ins : 1); i++)
                m[pos + i] = ws[rnd_below(sizeof ws - 1)];
            memcpy(m + pos + (ins ? ins : 1), t + pos + (ins ? 0 : 1),
                   tl - pos - (ins ? 0 : 1));
            for (size_t k = 0; k < g_nimpl; k++) {
                uint8_t *out = xmalloc(aegis_b64_decoded_max(ml));
                size_t got_len;
                aegis_status s = dec(IMPLS[k], url, m, ml, aegis_b64_decoded_max(ml),
                                     out, &got_len);
                CHECKF(s == AEGIS_E_B64, "%s %s: whitespace (mode %d) at %zu of %zu accepted",
                      codec_name(url), IMPL_NAMES[k], mode, pos, ml);
                free(out);
            }
            free(m);
        }
        free(t);
    }
}

/* Non-zero trailing bits in the last data character, after short and long
 * bodies (so the final quantum follows both the scalar and the SIMD code). */
static void test_trailing_bits(bool url)
{
    for (int iter = 0; iter < 200; iter++) {
        size_t n = iter < 100 ? (size_t)iter : rnd_below(4000);
        if (n % 3 == 0)
            n++;
        size_t tl;
        char *t = random_text(url, n, &tl);
        size_t last = url ? tl - 1 : tl - 1 - (n % 3 == 1 ? 2 : 1);
        unsigned mask = n % 3 == 1 ? 0x0f : 0x03; /* bits that must be zero */
        int v = alpha_index(url, (uint8_t)t[last]);
        CHECKF(v >= 0 && (v & (int)mask) == 0, "%s: reference text has trailing bits",
              codec_name(url));
        for (unsigned b = 1; b <= mask; b++) {
            t[last] = alpha(url)[((unsigned)v & ~mask) | b];
            for (size_t k = 0; k < g_nimpl; k++) {
                uint8_t *out = xmalloc(n);
                size_t got_len;
                aegis_status s = dec(IMPLS[k], url, t, tl, n, out, &got_len);
                CHECKF(s == AEGIS_E_B64, "%s %s: trailing bits %#x after %zu bytes accepted",
                      codec_name(url), IMPL_NAMES[k], b, n - 1);
                free(out);
            }
        }
        free(t);
    }
}

/* Padding shapes around a long body: missing, extra, in the wrong place. */
static void test_padding_shapes(void)
{
    for (int iter = 0; iter < 100; iter++) {
        size_t n = rnd_below(3000), tl;
        char *t = random_text(false, n, &tl);
        char *m = xmalloc(tl + 8);
        size_t pads = n % 3 == 1 ? 2 : n % 3 == 2 ? 1 : 0;
        /* Strip the padding (b64 must refuse; b64u must accept iff tl > 0). */
        memcpy(m, t, tl);
        check_against_ref(false, m, tl - pads, "padding stripped");
        check_against_ref(true, m, tl - pads, "b64u of stripped text");
        if (pads)
            check_against_ref(true, m, tl, "b64u of padded text");
        /* Extra '=' quantum or "====" appended. */
        memcpy(m + tl, "====", 4);
        check_against_ref(false, m, tl + 4, "extra padding quantum");
        /* One '=' more in the final quantum, in place of a data character
         * ("a===" and, trailing bits permitting, a valid "ab=="). */
        if (pads > 0) {
            memcpy(m, t, tl);
            m[tl - pads - 1] = '=';
            check_against_ref(false, m, tl, "one more pad");
        }
        free(m);
        free(t);
    }
}

int main(void)
{
    g_nimpl = aegis_b64_impl_supported(AEGIS_B64_IMPL_AVX2) ? 3 : 2;
    printf("b64: dispatch picks %s%s\n", aegis_b64_impl_name(),
           g_nimpl == 3 ? "" : " (AVX2 kernel not available: not tested)");

    test_golden_valid(false, B64_VALID, COUNT(B64_VALID));
    test_golden_valid(true, B64U_VALID, COUNT(B64U_VALID));
    test_golden_invalid(false, B64_INVALID, COUNT(B64_INVALID));
    test_golden_invalid(true, B64U_INVALID, COUNT(B64U_INVALID));
    test_sizes();
    test_round_trips();
    for (int url = 0; url < 2; url++) {
        test_exhaustive_bytes(url);
        test_corruptions(url);
        test_whitespace(url);
        test_trailing_bits(url);
    }
    test_padding_shapes();

    return check_summary(); /* prints "N passed, N failed" */
}
