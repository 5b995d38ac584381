/*
 * b64.c — strict base64 (PROTOCOL.md §1) at memory speed.
 *
 * b64 is RFC 4648 with the standard alphabet and padding; b64u is the URL
 * alphabet without padding. The decoders accept exactly one text per byte
 * string: no whitespace, no '=' except as the final padding of b64 (and
 * never in b64u), no character of the other alphabet, no non-zero trailing
 * bits, and no impossible length (b64: len % 4 != 0; b64u: len % 4 == 1).
 *
 * Layout. Both alphabets share the code and differ only in a constant
 * b64_alphabet record. A text is split into whole 4-character quanta and
 * a final partial quantum (b64: the padded one, 2 or 3 data characters;
 * b64u: the 2 or 3 left-over characters). Whole quanta go through a block
 * kernel (32 characters <-> 24 bytes per block), chosen once per process:
 * AVX2 when the CPU has it, else a table-driven scalar loop. Whatever the
 * blocks leave, and the final quantum with its padding and trailing-bit
 * checks, is done by the scalar code. The data is public (ciphertexts,
 * signatures, keys), so table lookups indexed by it are fine; secrets are
 * decoded elsewhere in constant time.
 *
 * Errors. The length and padding shape are checked first (AEGIS_E_B64),
 * then out_cap against the exact decoded length (AEGIS_E_BUFFER_TOO_SMALL,
 * with *out_len set to the length needed), then the characters
 * (AEGIS_E_B64, *out_len = 0). On error `out` may have been written to.
 */
#include "b64_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define B64_HAVE_AVX2 1
#include <immintrin.h>
#include <stdatomic.h>
#else
#define B64_HAVE_AVX2 0
#endif

/* ------------------------------------------------------------------------ */
/* Alphabets                                                                 */

#define B64_INVALID 0xFF

/* The 6-bit value of byte c in the alphabet ending in c62, c63, or
 * B64_INVALID; expanded 256 times below so the tables are computed by the
 * compiler rather than typed in. '=' is invalid here: padding is handled
 * explicitly at the end of a b64 text. */
#define B64_VAL(c, c62, c63)                                                  \
    ((c) >= 'A' && (c) <= 'Z'   ? (c) - 'A'                                   \
     : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26                              \
     : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52                              \
     : (c) == (c62)             ? 62                                          \
     : (c) == (c63)             ? 63                                          \
                                : B64_INVALID)
#define B64_STD_VAL(c) ((uint8_t)B64_VAL(c, '+', '/'))
#define B64_URL_VAL(c) ((uint8_t)B64_VAL(c, '-', '_'))
#define B64_R4(F, b) F((b)), F((b) + 1), F((b) + 2), F((b) + 3)
#define B64_R16(F, b)                                                         \
    B64_R4(F, b), B64_R4(F, (b) + 4), B64_R4(F, (b) + 8), B64_R4(F, (b) + 12)
#define B64_R64(F, b)                                                         \
    B64_R16(F, b), B64_R16(F, (b) + 16), B64_R16(F, (b) + 32),                \
        B64_R16(F, (b) + 48)
#define B64_R256(F)                                                           \
    B64_R64(F, 0), B64_R64(F, 64), B64_R64(F, 128), B64_R64(F, 192)

typedef struct b64_alphabet {
    char enc[65];          /* 6-bit value -> character (NUL-terminated) */
    bool padded;           /* b64: '=' padding; b64u: none */
    uint8_t dec[256];      /* character -> 6-bit value or B64_INVALID */
    /* AVX2 constants, see the SIMD comment below. */
    uint8_t simd_special;  /* the one character the roll LUT needs told apart */
    int8_t simd_lo[16];    /* low nibble -> classes in which it is invalid */
    int8_t simd_hi[16];    /* high nibble -> its class bit */
    int8_t simd_roll[16];  /* decode: (high nibble | special*8) -> value - char */
    int8_t simd_enc[16];   /* encode: reduced 6-bit value -> char - value */
} b64_alphabet;

/*
 * Classes of high nibbles for the SIMD validity check. A high nibble's class
 * is the set of low nibbles that are invalid with it; nibbles sharing a set
 * share a bit:
 *   bit 0  0x0_, 0x1_, 0x8_..0xF_  everything invalid (controls, non-ASCII)
 *   bit 1  0x2_  all but '+' '/' (b64) or '-' (b64u)
 *   bit 2  0x3_  ':' .. '?' ('=' included)
 *   bit 3  0x4_, 0x6_  '@' and '`'
 *   bit 4  0x5_ (and 0x7_ in b64)  '[' .. '_' (b64u: '[' .. '^')
 *   bit 5  0x7_ in b64u  '{' .. 0x7F
 * simd_lo[l] has the bits of the classes in which low nibble l is invalid,
 * so (simd_lo[lo] & simd_hi[hi]) != 0 exactly for the characters outside the
 * alphabet (checked exhaustively by the unit test).
 */
static const b64_alphabet B64_STD = {
    .enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    .padded = true,
    .dec = {B64_R256(B64_STD_VAL)},
    .simd_special = '/',
    .simd_lo = {0x0b, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,
                0x03, 0x03, 0x07, 0x15, 0x17, 0x17, 0x17, 0x15},
    .simd_hi = {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x08, 0x10,
                0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01},
    /* 2: '+' -> 62; 3: digits; 4,5: 'A'..'Z'; 6,7: 'a'..'z'; 2+8: '/' */
    .simd_roll = {0, 0, 19, 4, -65, -65, -71, -71, 0, 0, 16, 0, 0, 0, 0, 0},
    /* 0: 'a'..'z'; 1..10: digits; 11: '+'; 12: '/'; 13: 'A'..'Z' */
    .simd_enc = {71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16, 65, 0, 0},
};

static const b64_alphabet B64_URL = {
    .enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    .padded = false,
    .dec = {B64_R256(B64_URL_VAL)},
    .simd_special = '_',
    .simd_lo = {0x0b, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03, 0x03,
                0x03, 0x03, 0x07, 0x37, 0x37, 0x35, 0x37, 0x27},
    .simd_hi = {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x08, 0x20,
                0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01},
    /* 2: '-' -> 62; 3: digits; 4,5: 'A'..'Z'; 6,7: 'a'..'z'; 5+8: '_' */
    .simd_roll = {0, 0, 17, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, -32, 0, 0},
    .simd_enc = {71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -17, 32, 65, 0, 0},
};

/* ------------------------------------------------------------------------ */
/* Block kernels: 24 bytes <-> 32 characters                                 */

#define B64_BLOCK_BIN 24
#define B64_BLOCK_TXT 32

/* Encodes n blocks: reads exactly 24 * n bytes, writes 32 * n characters. */
typedef void (*b64_enc_blocks_fn)(const uint8_t *in, size_t n, char *out,
                                  const b64_alphabet *a);
/* Decodes n blocks of whole quanta: reads 32 * n characters and writes
 * 24 * n bytes, but may store up to 8 bytes past them (the caller leaves
 * that room). Returns false when a character is outside the alphabet. */
typedef bool (*b64_dec_blocks_fn)(const uint8_t *in, size_t n, uint8_t *out,
                                  const b64_alphabet *a);

typedef struct b64_kernels {
    b64_enc_blocks_fn enc;
    b64_dec_blocks_fn dec;
    const char *name;
} b64_kernels;

static inline void enc_quanta(const uint8_t *in, size_t nq, char *out,
                              const char *e)
{
    for (size_t i = 0; i < nq; i++, in += 3, out += 4) {
        uint32_t v = (uint32_t)in[0] << 16 | (uint32_t)in[1] << 8 | in[2];
        out[0] = e[v >> 18];
        out[1] = e[(v >> 12) & 63];
        out[2] = e[(v >> 6) & 63];
        out[3] = e[v & 63];
    }
}

/* Returns non-zero if a character was invalid. The check is deferred to the
 * end so the loop has no data-dependent branch; on error the bytes written
 * are garbage, which the contract allows. */
static inline uint32_t dec_quanta(const uint8_t *in, size_t nq, uint8_t *out,
                                  const uint8_t *d)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < nq; i++, in += 4, out += 3) {
        uint32_t a = d[in[0]], b = d[in[1]], c = d[in[2]], e = d[in[3]];
        bad |= a | b | c | e;
        uint32_t v = a << 18 | b << 12 | c << 6 | e;
        out[0] = (uint8_t)(v >> 16);
        out[1] = (uint8_t)(v >> 8);
        out[2] = (uint8_t)v;
    }
    return bad & 0x80; /* B64_INVALID is the only value with bit 7 set */
}

static void enc_blocks_scalar(const uint8_t *in, size_t n, char *out,
                              const b64_alphabet *a)
{
    enc_quanta(in, n * (B64_BLOCK_BIN / 3), out, a->enc);
}

static bool dec_blocks_scalar(const uint8_t *in, size_t n, uint8_t *out,
                              const b64_alphabet *a)
{
    return dec_quanta(in, n * (B64_BLOCK_TXT / 4), out, a->dec) == 0;
}

static const b64_kernels B64_SCALAR = {enc_blocks_scalar, dec_blocks_scalar,
                                       "scalar"};

#if B64_HAVE_AVX2
/*
 * AVX2 kernels (after W. Muła and D. Lemire, "Faster Base64 Encoding and
 * Decoding Using AVX2 Instructions", 2018), 32 characters per step.
 *
 * Decode:
 *  1. Validate: split each byte into high and low nibble; one vpshufb maps
 *     the low nibble to the classes it is invalid in, one maps the high
 *     nibble to its class; a non-zero AND marks a character outside the
 *     alphabet ('=' and the other alphabet's two characters included, and
 *     bytes >= 0x80, whose high nibble is 8..15). The ANDs are ORed into an
 *     accumulator tested once at the end.
 *  2. Translate: within the alphabet, value - character depends only on the
 *     high nibble, except for one character sharing its nibble with another
 *     range ('/' next to '+', '_' next to 'P'..'Z'); that one gets index
 *     nibble + 8. A vpshufb of the index gives the offset to add.
 *  3. Pack: each 32-bit lane holds 00aaaaaa 00bbbbbb 00cccccc 00dddddd.
 *     vpmaddubsw by (64, 1) makes two 12-bit words aaaaaabbbbbb and
 *     ccccccdddddd, vpmaddwd by (4096, 1) joins them into 24 bits; a vpshufb
 *     puts those 3 bytes in big-endian order at the bottom of each 128-bit
 *     half (12 + 12 bytes) and vpermd closes the gap: 24 bytes, stored with
 *     a 32-byte store whose last 8 bytes the next step overwrites.
 *
 * Encode (the reverse):
 *  1. Load 24 bytes as two overlapping 16-byte halves (bytes 0..15, 8..23)
 *     and vpshufb each 3-byte group b0 b1 b2 into the lane b1 b0 b2 b1.
 *  2. Unpack: in each lane the 16-bit words are b0:b1 and b1:b2. Masking
 *     the first and third 6-bit fields and vpmulhuw by (2^6, 2^10) moves
 *     them to bytes 0 and 2; masking the second and fourth and vpmullw by
 *     (2^4, 2^8) moves them to bytes 1 and 3.
 *  3. Translate: reduce each value to a LUT index (0 for 26..51, 1..12 for
 *     52..63 by saturating subtract of 51, 13 for 0..25 by compare), and
 *     add the vpshufb-looked-up character - value offset.
 */
__attribute__((target("avx2"))) static inline __m256i
b64_lut(const int8_t t[16])
{
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)t));
}

__attribute__((target("avx2"))) static void
enc_blocks_avx2(const uint8_t *in, size_t n, char *out, const b64_alphabet *a)
{
    const __m256i spread = _mm256_setr_epi8(
        1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,
        5, 4, 6, 5, 8, 7, 9, 8, 11, 10, 12, 11, 14, 13, 15, 14);
    const __m256i mask_ac = _mm256_set1_epi32(0x0fc0fc00);
    const __m256i mul_ac = _mm256_set1_epi32(0x04000040);
    const __m256i mask_bd = _mm256_set1_epi32(0x003f03f0);
    const __m256i mul_bd = _mm256_set1_epi32(0x01000010);
    const __m256i n51 = _mm256_set1_epi8(51);
    const __m256i n26 = _mm256_set1_epi8(26);
    const __m256i n13 = _mm256_set1_epi8(13);
    const __m256i lut = b64_lut(a->simd_enc);

    for (size_t i = 0; i < n; i++, in += B64_BLOCK_BIN, out += B64_BLOCK_TXT) {
        __m256i v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)in)),
            _mm_loadu_si128((const __m128i *)(in + 8)), 1);
        v = _mm256_shuffle_epi8(v, spread);
        __m256i ac = _mm256_mulhi_epu16(_mm256_and_si256(v, mask_ac), mul_ac);
        __m256i bd = _mm256_mullo_epi16(_mm256_and_si256(v, mask_bd), mul_bd);
        __m256i idx = _mm256_or_si256(ac, bd);
        __m256i r = _mm256_subs_epu8(idx, n51);
        r = _mm256_or_si256(r, _mm256_and_si256(_mm256_cmpgt_epi8(n26, idx), n13));
        __m256i chars = _mm256_add_epi8(idx, _mm256_shuffle_epi8(lut, r));
        _mm256_storeu_si256((__m256i *)out, chars);
    }
}

__attribute__((target("avx2"))) static inline __m256i
dec_step_avx2(__m256i v, __m256i *bad, __m256i lut_lo, __m256i lut_hi,
              __m256i lut_roll, __m256i special)
{
    const __m256i nib = _mm256_set1_epi8(0x0f);
    const __m256i eight = _mm256_set1_epi8(8);
    const __m256i mul_ab = _mm256_set1_epi32(0x01400140);
    const __m256i mul_abcd = _mm256_set1_epi32(0x00011000);
    const __m256i gather = _mm256_setr_epi8(
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
        2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    const __m256i close = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);

    __m256i hi = _mm256_and_si256(_mm256_srli_epi32(v, 4), nib);
    __m256i lo = _mm256_and_si256(v, nib);
    *bad = _mm256_or_si256(*bad, _mm256_and_si256(_mm256_shuffle_epi8(lut_lo, lo),
                                                  _mm256_shuffle_epi8(lut_hi, hi)));
    __m256i idx = _mm256_add_epi8(
        hi, _mm256_and_si256(_mm256_cmpeq_epi8(v, special), eight));
    __m256i vals = _mm256_add_epi8(v, _mm256_shuffle_epi8(lut_roll, idx));
    __m256i w = _mm256_maddubs_epi16(vals, mul_ab);
    __m256i d = _mm256_madd_epi16(w, mul_abcd);
    d = _mm256_shuffle_epi8(d, gather);
    return _mm256_permutevar8x32_epi32(d, close);
}

__attribute__((target("avx2"))) static bool
dec_blocks_avx2(const uint8_t *in, size_t n, uint8_t *out, const b64_alphabet *a)
{
    const __m256i lut_lo = b64_lut(a->simd_lo);
    const __m256i lut_hi = b64_lut(a->simd_hi);
    const __m256i lut_roll = b64_lut(a->simd_roll);
    const __m256i special = _mm256_set1_epi8((char)a->simd_special);
    __m256i bad = _mm256_setzero_si256();
    size_t i = 0;

    /* Two blocks per iteration: the second load does not wait on the first
     * block's store, and the loop overhead is halved. */
    for (; i + 2 <= n; i += 2, in += 2 * B64_BLOCK_TXT, out += 2 * B64_BLOCK_BIN) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)in);
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(in + B64_BLOCK_TXT));
        __m256i d0 = dec_step_avx2(v0, &bad, lut_lo, lut_hi, lut_roll, special);
        __m256i d1 = dec_step_avx2(v1, &bad, lut_lo, lut_hi, lut_roll, special);
        _mm256_storeu_si256((__m256i *)out, d0);
        _mm256_storeu_si256((__m256i *)(out + B64_BLOCK_BIN), d1);
    }
    if (i < n) {
        __m256i v = _mm256_loadu_si256((const __m256i *)in);
        _mm256_storeu_si256((__m256i *)out,
                            dec_step_avx2(v, &bad, lut_lo, lut_hi, lut_roll, special));
    }
    return _mm256_testz_si256(bad, bad);
}

static const b64_kernels B64_AVX2 = {enc_blocks_avx2, dec_blocks_avx2, "avx2"};

static bool cpu_has_avx2(void)
{
    /* __builtin_cpu_init is only needed before constructors have run, but
     * it is cheap and idempotent. The check covers OS support (XCR0). */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
}

/* The one mutable global: the kernels for this CPU, chosen on first use.
 * Racing first calls compute and store the same value, so an atomic
 * pointer without a lock is enough; what it points to is constant. */
static _Atomic(const b64_kernels *) b64_selected;

static const b64_kernels *b64_kernels_auto(void)
{
    const b64_kernels *k = atomic_load_explicit(&b64_selected, memory_order_acquire);
    if (k == NULL) {
        k = cpu_has_avx2() ? &B64_AVX2 : &B64_SCALAR;
        atomic_store_explicit(&b64_selected, k, memory_order_release);
    }
    return k;
}
#else
static const b64_kernels *b64_kernels_auto(void) { return &B64_SCALAR; }
#endif /* B64_HAVE_AVX2 */

static const b64_kernels *b64_kernels_for(aegis_b64_impl impl)
{
    switch (impl) {
    case AEGIS_B64_IMPL_SCALAR:
        return &B64_SCALAR;
    case AEGIS_B64_IMPL_AVX2:
#if B64_HAVE_AVX2
        if (b64_kernels_auto() == &B64_AVX2)
            return &B64_AVX2;
#endif
        return &B64_SCALAR;
    case AEGIS_B64_IMPL_AUTO:
        break;
    }
    return b64_kernels_auto();
}

/* ------------------------------------------------------------------------ */
/* Drivers                                                                   */

size_t aegis_b64_encoded_len(size_t bin_len)
{
    if (bin_len > SIZE_MAX / 4 * 3)
        return SIZE_MAX; /* cannot be allocated anyway; avoid wrapping */
    return bin_len / 3 * 4 + (bin_len % 3 ? 4 : 0);
}

size_t aegis_b64u_encoded_len(size_t bin_len)
{
    if (bin_len > SIZE_MAX / 4 * 3)
        return SIZE_MAX;
    return bin_len / 3 * 4 + (bin_len % 3 ? bin_len % 3 + 1 : 0);
}

/* floor(3 * len / 4): exact for unpadded b64u, an upper bound for b64
 * (reached without padding), without overflow. */
size_t aegis_b64_decoded_max(size_t text_len)
{
    return text_len / 4 * 3 + text_len % 4 * 3 / 4;
}

static void encode_with(const b64_kernels *k, const b64_alphabet *a,
                        const uint8_t *bin, size_t len, char *out)
{
    size_t blocks = len / B64_BLOCK_BIN;
    if (blocks > 0) {
        k->enc(bin, blocks, out, a);
        bin += blocks * B64_BLOCK_BIN;
        out += blocks * B64_BLOCK_TXT;
        len -= blocks * B64_BLOCK_BIN;
    }
    size_t nq = len / 3;
    enc_quanta(bin, nq, out, a->enc);
    bin += nq * 3;
    out += nq * 4;
    switch (len % 3) {
    case 1:
        out[0] = a->enc[bin[0] >> 2];
        out[1] = a->enc[(bin[0] & 0x03) << 4];
        if (a->padded) {
            out[2] = '=';
            out[3] = '=';
        }
        break;
    case 2:
        out[0] = a->enc[bin[0] >> 2];
        out[1] = a->enc[(bin[0] & 0x03) << 4 | bin[1] >> 4];
        out[2] = a->enc[(bin[1] & 0x0f) << 2];
        if (a->padded)
            out[3] = '=';
        break;
    default:
        break;
    }
}

static aegis_status decode_with(const b64_kernels *k, const b64_alphabet *a,
                                const char *text, size_t len, uint8_t *out,
                                size_t out_cap, size_t *out_len)
{
    const uint8_t *t = (const uint8_t *)text;
    size_t tail; /* data characters of the final partial quantum: 0, 2 or 3 */
    size_t full; /* characters in whole quanta */

    *out_len = 0;
    if (a->padded) {
        if (len % 4 != 0)
            return AEGIS_E_B64;
        tail = 0;
        if (len > 0 && t[len - 1] == '=')
            tail = t[len - 2] == '=' ? 2 : 3;
        full = tail ? len - 4 : len;
    } else {
        tail = len % 4;
        if (tail == 1)
            return AEGIS_E_B64;
        full = len - tail;
    }

    size_t need = full / 4 * 3 + (tail ? tail - 1 : 0);
    if (out_cap < need) {
        *out_len = need;
        return AEGIS_E_BUFFER_TOO_SMALL;
    }

    /* Blocks may store 8 bytes past their output: stop them 12 characters
     * (9 bytes) before the end of the whole quanta. */
    size_t blocks = full >= 12 + B64_BLOCK_TXT ? (full - 12) / B64_BLOCK_TXT : 0;
    if (blocks > 0) {
        if (!k->dec(t, blocks, out, a))
            return AEGIS_E_B64;
        t += blocks * B64_BLOCK_TXT;
        out += blocks * B64_BLOCK_BIN;
        full -= blocks * B64_BLOCK_TXT;
    }
    if (dec_quanta(t, full / 4, out, a->dec) != 0)
        return AEGIS_E_B64;
    t += full;
    out += full / 4 * 3;

    if (tail) {
        uint32_t v0 = a->dec[t[0]], v1 = a->dec[t[1]];
        uint32_t v2 = tail == 3 ? a->dec[t[2]] : 0;
        if ((v0 | v1 | v2) & 0x80)
            return AEGIS_E_B64;
        /* The bits below the last whole byte must be zero (RFC 4648 §3.5
         * allows decoders to refuse them; §1 requires it). */
        if (tail == 2 ? (v1 & 0x0f) != 0 : (v2 & 0x03) != 0)
            return AEGIS_E_B64;
        out[0] = (uint8_t)(v0 << 2 | v1 >> 4);
        if (tail == 3)
            out[1] = (uint8_t)(v1 << 4 | v2 >> 2);
    }
    *out_len = need;
    return AEGIS_OK;
}

/* ------------------------------------------------------------------------ */
/* Public and internal entry points                                          */

/* Short inputs (keys, signatures, nonces) would run at most one block:
 * they go straight to the scalar code without loading the pointer. */
static const b64_kernels *kernels_for_len(size_t len)
{
    return len < 2 * B64_BLOCK_TXT ? &B64_SCALAR : b64_kernels_auto();
}

void aegis_b64_encode(const uint8_t *bin, size_t bin_len, char *out)
{
    encode_with(kernels_for_len(bin_len), &B64_STD, bin, bin_len, out);
}

void aegis_b64u_encode(const uint8_t *bin, size_t bin_len, char *out)
{
    encode_with(kernels_for_len(bin_len), &B64_URL, bin, bin_len, out);
}

aegis_status aegis_b64_decode(const char *text, size_t text_len, uint8_t *out,
                              size_t out_cap, size_t *out_len)
{
    return decode_with(kernels_for_len(text_len), &B64_STD, text, text_len,
                       out, out_cap, out_len);
}

aegis_status aegis_b64u_decode(const char *text, size_t text_len, uint8_t *out,
                               size_t out_cap, size_t *out_len)
{
    return decode_with(kernels_for_len(text_len), &B64_URL, text, text_len,
                       out, out_cap, out_len);
}

bool aegis_b64_impl_supported(aegis_b64_impl impl)
{
    return impl != AEGIS_B64_IMPL_AVX2 ||
           b64_kernels_for(AEGIS_B64_IMPL_AVX2) != &B64_SCALAR;
}

const char *aegis_b64_impl_name(void)
{
    return b64_kernels_auto()->name;
}

void aegis_b64_encode_impl(aegis_b64_impl impl, bool url, const uint8_t *bin,
                           size_t bin_len, char *out)
{
    encode_with(b64_kernels_for(impl), url ? &B64_URL : &B64_STD, bin,
                bin_len, out);
}

aegis_status aegis_b64_decode_impl(aegis_b64_impl impl, bool url,
                                   const char *text, size_t text_len,
                                   uint8_t *out, size_t out_cap,
                                   size_t *out_len)
{
    return decode_with(b64_kernels_for(impl), url ? &B64_URL : &B64_STD, text,
                       text_len, out, out_cap, out_len);
}
