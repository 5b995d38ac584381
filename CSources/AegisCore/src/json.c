/*
 * json.c — the strict, non-allocating JSON reader (see json.h).
 *
 * One left-to-right pass with an explicit container stack (no recursion, no
 * heap). Plain string content is skipped 16–64 bytes at a time (SSE2, or 8 at
 * a time with SWAR elsewhere); only escapes and non-ASCII bytes take the
 * byte-wise path, so a megabyte of base64 costs a few tens of microseconds.
 *
 * Duplicate names. The names of the objects still open are kept on a stack
 * of (offset, length) records; a closed object's names are popped, so the
 * names of each open object are contiguous. When an object closes, its names
 * are checked: pairwise for small objects of plain names (the envelopes),
 * otherwise by sorting them on (SipHash of the decoded name, decoded name)
 * and comparing neighbours. That bounds the work at O(n log n) comparisons
 * whatever the names (a hash table probed with a fixed hash function can be
 * driven into long probe chains by chosen names). So that errors still come
 * out in text order, a syntax or limit error first checks the names of the
 * objects still open: a duplicate seen before the error wins.
 *
 * Order of errors, as json.h promises, is the order in which they are found
 * scanning left to right:
 *  - AEGIS_E_JSON_SYNTAX at the offending byte (bad token, bad string, bad
 *    UTF-8, trailing bytes, unexpected end);
 *  - AEGIS_E_JSON_DUPLICATE_KEY at the second occurrence of a name;
 *  - AEGIS_E_JSON_LIMIT at the container that opens level
 *    AEGIS_JSON_MAX_DEPTH + 1 (the root is level 1; arrays count), or at the
 *    name of member AEGIS_JSON_MAX_MEMBERS + 1 of the whole text;
 *  - AEGIS_E_JSON_NOT_OBJECT only once the whole text is known to be valid
 *    JSON ("[1," is a syntax error, "[1]" is not an object);
 *  - requested-field errors only after the whole text validated, for the
 *    first wrong member in text order. So any invalid text gives a structural
 *    code, deterministically, whatever fields were asked for.
 * Requested-field codes: AEGIS_E_FIELD_TYPE when the value is not of the
 * kind asked for; for JSON_FIELD_UINT that includes any number with a
 * fraction or exponent, negative or not ("1.0", "1e3", "-1.5"). A number
 * that is an integer but written with '-' ("-1", and "-0" too) or is
 * ≥ 2^63 gives AEGIS_E_INTEGER_RANGE.
 *
 * Implementation limits beyond json.h: texts longer than JSON_MAX_TEXT
 * (2 GiB − 1) are refused with AEGIS_E_JSON_LIMIT, so that a name fits a
 * 32-bit record; n > JSON_MAX_SPECS, a NULL text with len > 0 or an unknown
 * kind give AEGIS_E_INVALID_ARGUMENT. A byte order mark is not whitespace.
 * On any error the contents of fields[] are unspecified.
 *
 * Stack use: about 64 KiB (the name records and their hashes), never
 * cleared: an entry is written before it is read.
 */
#include "json.h"

#include <string.h>

#if defined(__SSE2__) && !defined(AEGIS_JSON_NO_SIMD)
#include <emmintrin.h>
#define JSON_SSE2 1
#endif

#define JSON_MAX_SPECS 32
#define JSON_MAX_TEXT 0x7fffffffu
#define NAME_ESC 0x80000000u       /* in name_ref.len: the raw name has a backslash */
#define SMALL_OBJECT 8             /* up to this many plain names: pairwise check */

typedef struct name_ref {
    uint32_t off;                  /* raw name (between the quotes), from the text start */
    uint32_t len;                  /* raw length | NAME_ESC */
} name_ref;

typedef struct frame {
    uint32_t first;                /* objects: index of the first name in names[] */
    bool is_object;
} frame;

typedef struct parser {
    const uint8_t *base;
    size_t top;                    /* names[] in use: those of the open objects */
    size_t members;                /* members so far in the whole text */
    size_t depth;
    frame frames[AEGIS_JSON_MAX_DEPTH];
    name_ref names[AEGIS_JSON_MAX_MEMBERS];
    uint64_t hashes[AEGIS_JSON_MAX_MEMBERS]; /* filled only to sort a large object */
} parser;

/* ------------------------------------------------------------------------ */
/* Bytes                                                                     */

static inline bool is_ws(unsigned c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
static inline bool is_digit(unsigned c) { return c - '0' < 10u; }

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end) {
    while (p < end && is_ws(*p)) p++;
    return p;
}

static inline unsigned ctz32(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctz(x);
#else
    unsigned n = 0;
    while (!(x & 1)) { x >>= 1; n++; }
    return n;
#endif
}

static inline bool is_plain(unsigned c) { return c >= 0x20 && c < 0x80 && c != '"' && c != '\\'; }

/* The first byte at or after p that a string scan must look at: '"', '\\',
 * a control character or a non-ASCII byte; end if there is none. */
static inline const uint8_t *skip_plain(const uint8_t *p, const uint8_t *end) {
#ifdef JSON_SSE2
    /* Signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them
     * together with the control characters. */
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
#define JSON_SPECIAL(v) _mm_or_si128(_mm_cmplt_epi8((v), space), \
        _mm_or_si128(_mm_cmpeq_epi8((v), quote), _mm_cmpeq_epi8((v), bslash)))
    while (end - p >= 64) {
        __m128i a = JSON_SPECIAL(_mm_loadu_si128((const __m128i *)(const void *)p));
        __m128i b = JSON_SPECIAL(_mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
        __m128i c = JSON_SPECIAL(_mm_loadu_si128((const __m128i *)(const void *)(p + 32)));
        __m128i d = JSON_SPECIAL(_mm_loadu_si128((const __m128i *)(const void *)(p + 48)));
        if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))) != 0) {
            uint32_t m = (uint32_t)_mm_movemask_epi8(a);
            if (m) return p + ctz32(m);
            if ((m = (uint32_t)_mm_movemask_epi8(b)) != 0) return p + 16 + ctz32(m);
            if ((m = (uint32_t)_mm_movemask_epi8(c)) != 0) return p + 32 + ctz32(m);
            return p + 48 + ctz32((uint32_t)_mm_movemask_epi8(d));
        }
        p += 64;
    }
    while (end - p >= 16) {
        uint32_t m = (uint32_t)_mm_movemask_epi8(
            JSON_SPECIAL(_mm_loadu_si128((const __m128i *)(const void *)p)));
        if (m) return p + ctz32(m);
        p += 16;
    }
#undef JSON_SPECIAL
#else
    /* SWAR: a word is skipped only when none of its bytes is special; the
     * has-zero / has-less tests are exact about whether such a byte exists. */
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    while (end - p >= 8) {
        uint64_t w, q, b;
        memcpy(&w, p, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        if (((w | ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & high) != 0)
            break;
        p += 8;
    }
#endif
    while (p < end && is_plain(*p)) p++;
    return p;
}

/* Checks one UTF-8 sequence (RFC 3629: no overlongs, no surrogates,
 * ≤ U+10FFFF) starting at the non-ASCII byte p; returns what follows it. */
static const uint8_t *utf8_check(const uint8_t *p, const uint8_t *end) {
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    size_t n;
    if (c < 0xC2) return NULL;            /* a continuation byte, or C0/C1 (overlong) */
    if (c < 0xE0) n = 1;
    else if (c < 0xF0) {
        n = 2;
        if (c == 0xE0) lo = 0xA0;         /* overlong */
        else if (c == 0xED) hi = 0x9F;    /* U+D800…U+DFFF */
    } else if (c < 0xF5) {
        n = 3;
        if (c == 0xF0) lo = 0x90;         /* overlong */
        else if (c == 0xF4) hi = 0x8F;    /* > U+10FFFF */
    } else return NULL;
    if ((size_t)(end - p) <= n) return NULL;
    if (p[1] < lo || p[1] > hi) return NULL;
    for (size_t i = 2; i <= n; i++)
        if ((p[i] & 0xC0) != 0x80) return NULL;
    return p + n + 1;
}

static int hex4(const uint8_t *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c - '0' < 10u) d = c - '0';
        else if ((c | 0x20) - 'a' < 6u) d = (c | 0x20) - 'a' + 10;
        else return -1;
        v = v << 4 | (int)d;
    }
    return v;
}

/* Decodes the escape at *pp (a backslash) into out as UTF-8 and moves *pp
 * past it. Returns the bytes written (1–4), or 0 for an invalid escape: an
 * unknown letter, bad hex, or a \u surrogate that does not pair up. */
static unsigned decode_escape(const uint8_t **pp, const uint8_t *end, uint8_t out[4]) {
    const uint8_t *p = *pp + 1;
    uint32_t cp;
    if (p >= end) return 0;
    switch (*p++) {
    case '"': cp = '"'; break;
    case '\\': cp = '\\'; break;
    case '/': cp = '/'; break;
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u': {
        int h, l;
        if (end - p < 4 || (h = hex4(p)) < 0) return 0;
        p += 4;
        cp = (uint32_t)h;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return 0;   /* lone low surrogate */
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return 0;
            l = hex4(p + 2);
            if (l < 0xDC00 || l > 0xDFFF) return 0;
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)l - 0xDC00);
        }
        break;
    }
    default: return 0;
    }
    *pp = p;
    if (cp < 0x80) { out[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Validates the string whose content starts at p (after the opening quote).
 * Returns its closing quote, or NULL; *esc tells whether it has escapes. */
static const uint8_t *scan_string(const uint8_t *p, const uint8_t *end, bool *esc) {
    uint8_t tmp[4];
    *esc = false;
    for (;;) {
        p = skip_plain(p, end);
        if (p == end) return NULL;
        if (*p == '"') return p;
        if (*p == '\\') {
            *esc = true;
            if (decode_escape(&p, end, tmp) == 0) return NULL;
        } else if (*p < 0x20) {
            return NULL;
        } else if ((p = utf8_check(p, end)) == NULL) {
            return NULL;
        }
    }
}

/* Validates the number at p ('-' or a digit); returns what follows it. */
static const uint8_t *scan_number(const uint8_t *p, const uint8_t *end) {
    if (*p == '-' && ++p == end) return NULL;
    if (!is_digit(*p)) return NULL;
    if (*p++ != '0')                      /* no leading zeros: "01" ends after "0" */
        while (p < end && is_digit(*p)) p++;
    if (p < end && *p == '.') {
        if (++p == end || !is_digit(*p)) return NULL;
        while (++p < end && is_digit(*p)) {}
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-')) p++;
        if (p == end || !is_digit(*p)) return NULL;
        while (++p < end && is_digit(*p)) {}
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* Decoded names                                                             */

/* Reads a validated raw string as its decoded bytes, one at a time. */
typedef struct name_reader {
    const uint8_t *p, *end;
    uint8_t buf[4];
    unsigned i, n;
} name_reader;

static inline void reader_init(name_reader *r, const uint8_t *p, size_t len) {
    r->p = p;
    r->end = p + len;
    r->i = r->n = 0;
}

/* The next decoded byte, or -1 at the end. */
static inline int reader_next(name_reader *r) {
    if (r->i < r->n) return r->buf[r->i++];
    if (r->p >= r->end) return -1;
    if (*r->p != '\\') return *r->p++;
    if ((r->n = decode_escape(&r->p, r->end, r->buf)) == 0) { /* not validated: stop */
        r->p = r->end;
        return -1;
    }
    r->i = 1;
    return r->buf[0];
}

static inline const uint8_t *name_ptr(const parser *ps, name_ref r) { return ps->base + r.off; }
static inline size_t name_len(name_ref r) { return r.len & ~NAME_ESC; }

/* Orders two names by their decoded bytes (any total order would do). */
static int name_cmp(const parser *ps, name_ref a, name_ref b) {
    const uint8_t *pa = name_ptr(ps, a), *pb = name_ptr(ps, b);
    size_t la = name_len(a), lb = name_len(b);
    if (!((a.len | b.len) & NAME_ESC)) {
        int c = memcmp(pa, pb, la < lb ? la : lb);
        return c ? c : (la > lb) - (la < lb);
    }
    name_reader ra, rb;
    reader_init(&ra, pa, la);
    reader_init(&rb, pb, lb);
    for (;;) {
        int x = reader_next(&ra), y = reader_next(&rb);
        if (x != y) return x - y;
        if (x < 0) return 0;
    }
}

/* Is the raw name equal, once decoded, to the NUL-free spec name s? */
static bool name_is(const uint8_t *p, uint32_t len, const char *s, size_t slen) {
    size_t l = len & ~NAME_ESC;
    if (!(len & NAME_ESC)) return l == slen && memcmp(p, s, slen) == 0;
    if (l < slen) return false;           /* decoding never lengthens */
    name_reader r;
    reader_init(&r, p, l);
    for (size_t i = 0; i < slen; i++)
        if (reader_next(&r) != (unsigned char)s[i]) return false;
    return reader_next(&r) < 0;
}

/* SipHash-1-3 of the decoded name under a fixed key. It only orders names
 * before the full comparison; what matters is that chosen names cannot
 * collide in bulk, so that sorting stays O(n log n) cheap comparisons. */
typedef struct sip {
    uint64_t v0, v1, v2, v3, m;
    uint64_t n;
} sip;

#define ROTL64(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline void sip_round(sip *s) {
    s->v0 += s->v1; s->v1 = ROTL64(s->v1, 13); s->v1 ^= s->v0; s->v0 = ROTL64(s->v0, 32);
    s->v2 += s->v3; s->v3 = ROTL64(s->v3, 16); s->v3 ^= s->v2;
    s->v0 += s->v3; s->v3 = ROTL64(s->v3, 21); s->v3 ^= s->v0;
    s->v2 += s->v1; s->v1 = ROTL64(s->v1, 17); s->v1 ^= s->v2; s->v2 = ROTL64(s->v2, 32);
}

static inline void sip_word(sip *s, uint64_t m) {
    s->v3 ^= m;
    sip_round(s);
    s->v0 ^= m;
}

static void sip_init(sip *s) {
    const uint64_t k0 = 0x6165676973206a73u, k1 = 0x6f6e206e616d6573u;
    s->v0 = k0 ^ 0x736f6d6570736575u;
    s->v1 = k1 ^ 0x646f72616e646f6du;
    s->v2 = k0 ^ 0x6c7967656e657261u;
    s->v3 = k1 ^ 0x7465646279746573u;
    s->m = 0;
    s->n = 0;
}

static inline void sip_byte(sip *s, unsigned b) {
    s->m |= (uint64_t)b << (8 * (s->n & 7));
    if ((++s->n & 7) == 0) {
        sip_word(s, s->m);
        s->m = 0;
    }
}

static uint64_t sip_final(sip *s) {
    sip_word(s, s->m | s->n << 56);
    s->v2 ^= 0xff;
    sip_round(s);
    sip_round(s);
    sip_round(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

static uint64_t name_hash(const parser *ps, name_ref r) {
    const uint8_t *p = name_ptr(ps, r);
    size_t len = name_len(r);
    sip s;
    sip_init(&s);
    if (!(r.len & NAME_ESC)) {
        /* Whole little-endian words, the same as feeding the bytes one by one. */
        for (; len >= 8; p += 8, len -= 8) {
            uint64_t w = 0;
            for (int i = 7; i >= 0; i--) w = w << 8 | p[i];
            sip_word(&s, w);
            s.n += 8;
        }
        while (len--) sip_byte(&s, *p++);
    } else {
        name_reader rd;
        int c;
        reader_init(&rd, p, len);
        while ((c = reader_next(&rd)) >= 0) sip_byte(&s, (unsigned)c);
    }
    return sip_final(&s);
}

static inline int key_cmp(const parser *ps, size_t i, size_t j) {
    const uint64_t *h = ps->hashes;
    if (h[i] != h[j]) return h[i] < h[j] ? -1 : 1;
    return name_cmp(ps, ps->names[i], ps->names[j]);
}

static inline void key_swap(parser *ps, size_t i, size_t j) {
    name_ref r = ps->names[i];
    uint64_t h = ps->hashes[i];
    ps->names[i] = ps->names[j];
    ps->hashes[i] = ps->hashes[j];
    ps->names[j] = r;
    ps->hashes[j] = h;
}

/* Heap sift-down within names[lo … lo+n). */
static void sift(parser *ps, size_t lo, size_t i, size_t n) {
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && key_cmp(ps, lo + c, lo + c + 1) < 0) c++;
        if (key_cmp(ps, lo + i, lo + c) >= 0) return;
        key_swap(ps, lo + i, lo + c);
        i = c;
    }
}

/* Does a name repeat within names[lo … hi)? Reorders that range. */
static bool has_duplicate(parser *ps, size_t lo, size_t hi) {
    size_t n = hi - lo, i, j;
    if (n < 2) return false;
    if (n <= SMALL_OBJECT) {
        bool plain = true;
        for (i = lo; i < hi; i++) plain = plain && !(ps->names[i].len & NAME_ESC);
        if (plain) {
            for (i = lo; i < hi; i++)
                for (j = i + 1; j < hi; j++)
                    if (ps->names[i].len == ps->names[j].len &&
                        memcmp(name_ptr(ps, ps->names[i]), name_ptr(ps, ps->names[j]),
                               name_len(ps->names[i])) == 0)
                        return true;
            return false;
        }
    }
    /* Heapsort: no recursion, O(n log n) comparisons in the worst case. */
    for (i = lo; i < hi; i++) ps->hashes[i] = name_hash(ps, ps->names[i]);
    for (i = n / 2; i-- > 0;) sift(ps, lo, i, n);
    for (i = n - 1; i > 0; i--) {
        key_swap(ps, lo, lo + i);
        sift(ps, lo, 0, i);
    }
    for (i = lo + 1; i < hi; i++)
        if (key_cmp(ps, i - 1, i) == 0) return true;
    return false;
}

/* On an error: was a duplicate seen before it, in an object still open?
 * (Closed objects were checked when they closed.) */
static bool open_objects_have_duplicate(parser *ps) {
    size_t hi = ps->top;
    for (size_t d = ps->depth; d-- > 0;) {
        if (!ps->frames[d].is_object) continue;
        if (has_duplicate(ps, ps->frames[d].first, hi)) return true;
        hi = ps->frames[d].first;
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Requested fields                                                          */

/* See the header comment for the FIELD_TYPE / INTEGER_RANGE split. */
static aegis_status take_uint(json_field *f, const uint8_t *v, const uint8_t *e) {
    const uint8_t *p = v;
    bool neg = false;
    uint64_t x = 0;
    if (*p == '-') { neg = true; p++; }
    if (!is_digit(*p)) return AEGIS_E_FIELD_TYPE;     /* string, literal, container */
    const uint8_t *digits = p;
    while (p < e && is_digit(*p)) p++;
    if (p != e) return AEGIS_E_FIELD_TYPE;            /* fraction or exponent */
    if (neg || p - digits > 19) return AEGIS_E_INTEGER_RANGE;
    for (p = digits; p < e; p++) x = x * 10 + (uint64_t)(*p - '0'); /* < 10^19 < 2^64 */
    if (x > (uint64_t)INT64_MAX) return AEGIS_E_INTEGER_RANGE;
    f->uint_value = x;
    return AEGIS_OK;
}

/* Fills f with the value text v … e of a requested member. */
static aegis_status take_field(json_field *f, json_kind kind, const uint8_t *v,
                               const uint8_t *e, bool esc) {
    f->present = true;
    f->raw = (const char *)v;
    f->raw_len = (size_t)(e - v);
    f->has_escapes = *v == '"' && esc;
    f->uint_value = 0;
    switch (kind) {
    case JSON_FIELD_STRING:
        if (*v != '"') return AEGIS_E_FIELD_TYPE;
        f->raw = (const char *)v + 1;
        f->raw_len = (size_t)(e - v) - 2;
        return AEGIS_OK;
    case JSON_FIELD_UINT:
        return take_uint(f, v, e);
    case JSON_FIELD_ARRAY:
        return *v == '[' ? AEGIS_OK : AEGIS_E_FIELD_TYPE;
    case JSON_FIELD_ANY:
        return AEGIS_OK;
    }
    return AEGIS_E_INVALID_ARGUMENT;
}

/* ------------------------------------------------------------------------ */
/* The reader                                                                */

aegis_status json_read_object(const char *text, size_t len, const json_field_spec *specs,
                              size_t n, json_field *fields) {
    parser ps;
    size_t spec_len[JSON_MAX_SPECS];
    const uint8_t *p, *end, *q, *vstart = NULL;
    bool esc = false, root_object = false;
    size_t cur = n;                   /* the requested field of this root member, or n */
    aegis_status field_err = AEGIS_OK, st;

    if ((text == NULL && len) || n > JSON_MAX_SPECS || (n && (specs == NULL || fields == NULL)))
        return AEGIS_E_INVALID_ARGUMENT;
    for (size_t i = 0; i < n; i++) {
        if (specs[i].name == NULL || (unsigned)specs[i].kind > JSON_FIELD_ANY)
            return AEGIS_E_INVALID_ARGUMENT;
        spec_len[i] = strlen(specs[i].name);
        memset(&fields[i], 0, sizeof fields[i]);
    }
    if (len > JSON_MAX_TEXT) return AEGIS_E_JSON_LIMIT;
    if (len == 0) return AEGIS_E_JSON_SYNTAX;

    ps.base = p = (const uint8_t *)text;
    end = p + len;
    ps.top = ps.members = ps.depth = 0;
    p = skip_ws(p, end);

value: /* p: the first byte of a value */
    if (p == end) goto syntax;
    if (ps.depth == 1) vstart = p;
    switch (*p) {
    case '{':
    case '[':
        if (ps.depth == AEGIS_JSON_MAX_DEPTH) goto limit;
        ps.frames[ps.depth].is_object = *p == '{';
        ps.frames[ps.depth].first = (uint32_t)ps.top;
        if (ps.depth++ == 0) root_object = *p == '{';
        p = skip_ws(p + 1, end);
        if (p < end && *p == (ps.frames[ps.depth - 1].is_object ? '}' : ']')) {
            p++;
            ps.depth--;
            goto after_value;
        }
        if (ps.frames[ps.depth - 1].is_object) goto name;
        goto value;
    case '"':
        if ((q = scan_string(p + 1, end, &esc)) == NULL) goto syntax;
        p = q + 1;
        goto after_value;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0) goto syntax;
        p += 4;
        goto after_value;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0) goto syntax;
        p += 5;
        goto after_value;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0) goto syntax;
        p += 4;
        goto after_value;
    default:
        if (*p != '-' && !is_digit(*p)) goto syntax;
        if ((p = scan_number(p, end)) == NULL) goto syntax;
        goto after_value;
    }

after_value: /* p: just after a complete value */
    if (ps.depth == 1 && cur < n) {
        /* A root member's value is complete: vstart … p. */
        st = take_field(&fields[cur], specs[cur].kind, vstart, p, esc);
        if (st != AEGIS_OK && field_err == AEGIS_OK) field_err = st;
        cur = n;
    }
    if (ps.depth == 0) goto done;
    p = skip_ws(p, end);
    if (p == end) goto syntax;
    if (ps.frames[ps.depth - 1].is_object) {
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            goto name;
        }
        if (*p != '}') goto syntax;
        size_t first = ps.frames[ps.depth - 1].first;
        if (has_duplicate(&ps, first, ps.top)) return AEGIS_E_JSON_DUPLICATE_KEY;
        ps.top = first;
    } else {
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            goto value;
        }
        if (*p != ']') goto syntax;
    }
    p++;
    ps.depth--;
    goto after_value;

name: /* p: where a member name must start */
    if (p == end || *p != '"') goto syntax;
    if ((q = scan_string(p + 1, end, &esc)) == NULL) goto syntax;
    if (ps.members == AEGIS_JSON_MAX_MEMBERS) goto limit;
    ps.members++;
    ps.names[ps.top].off = (uint32_t)(p + 1 - ps.base);
    ps.names[ps.top].len = (uint32_t)(q - (p + 1)) | (esc ? NAME_ESC : 0);
    if (ps.depth == 1) {
        for (cur = 0; cur < n; cur++)
            if (name_is(p + 1, ps.names[ps.top].len, specs[cur].name, spec_len[cur])) break;
    }
    ps.top++;
    p = skip_ws(q + 1, end);
    if (p == end || *p != ':') goto syntax;
    p = skip_ws(p + 1, end);
    goto value;

done:
    if (skip_ws(p, end) != end) return AEGIS_E_JSON_SYNTAX; /* trailing bytes */
    if (!root_object) return AEGIS_E_JSON_NOT_OBJECT;
    return field_err;

syntax:
    st = AEGIS_E_JSON_SYNTAX;
    goto fail;
limit:
    st = AEGIS_E_JSON_LIMIT;
fail:
    return open_objects_have_duplicate(&ps) ? AEGIS_E_JSON_DUPLICATE_KEY : st;
}

/* ------------------------------------------------------------------------ */
/* Strings and arrays                                                        */

aegis_status json_unescape(const char *raw, size_t raw_len, char *out, size_t cap,
                           size_t *out_len) {
    const uint8_t *p = (const uint8_t *)raw, *end = p + raw_len;
    size_t o = 0;
    uint8_t tmp[4];
    while (p < end) {
        const uint8_t *bs = (const uint8_t *)memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs ? bs : end) - p);
        if (run > cap - o) return AEGIS_E_BUFFER_TOO_SMALL;
        if (run) memcpy(out + o, p, run);
        o += run;
        if (!bs) break;
        p = bs;
        unsigned k = decode_escape(&p, end, tmp);
        if (k == 0) return AEGIS_E_JSON_SYNTAX; /* raw was not validated */
        if (k > cap - o) return AEGIS_E_BUFFER_TOO_SMALL;
        memcpy(out + o, tmp, k);
        o += k;
    }
    *out_len = o;
    return AEGIS_OK;
}

void json_array_begin(json_array_iter *it, const char *raw, size_t raw_len) {
    const uint8_t *p = (const uint8_t *)raw;
    it->index = 0;
    if (raw == NULL || raw_len < 2 || p[0] != '[' || p[raw_len - 1] != ']') {
        it->p = it->end = NULL;       /* not an array: every call gives FIELD_TYPE */
        return;
    }
    it->p = raw + 1;
    it->end = raw + raw_len - 1;
}

aegis_status json_array_next_string(json_array_iter *it, const char **raw, size_t *raw_len,
                                    bool *has_escapes, bool *done) {
    const uint8_t *p = (const uint8_t *)it->p, *end = (const uint8_t *)it->end;
    *raw = NULL;
    *raw_len = 0;
    *has_escapes = false;
    *done = false;
    if (p == NULL) return AEGIS_E_FIELD_TYPE;
    p = skip_ws(p, end);
    if (p == end) {
        *done = true;
        return AEGIS_OK;
    }
    if (it->index > 0) {
        if (*p != ',') return AEGIS_E_JSON_SYNTAX; /* not a validated span */
        p = skip_ws(p + 1, end);
    }
    /* A non-string leaves the iterator where it was: the error repeats. */
    if (p == end || *p != '"') return AEGIS_E_FIELD_TYPE;
    const uint8_t *s = ++p;
    bool esc = false;
    while (p < end && *p != '"') {
        if (*p == '\\') {
            if (end - p < 2) return AEGIS_E_JSON_SYNTAX;
            esc = true;
            p += 2;
        } else {
            p++;
        }
    }
    if (p == end) return AEGIS_E_JSON_SYNTAX;
    *raw = (const char *)s;
    *raw_len = (size_t)(p - s);
    *has_escapes = esc;
    it->p = (const char *)p + 1;
    it->index++;
    return AEGIS_OK;
}
