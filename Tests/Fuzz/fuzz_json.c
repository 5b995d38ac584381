/*
 * fuzz_json.c — libFuzzer target for the strict JSON reader (src/json.c).
 *
 * Each input is read three ways: structure only, with the secure message's
 * fields, and as an ack plaintext ({"ids":[…]}, walked with the iterator).
 * The results are compared with a small recursive reference reader written
 * here independently (its own UTF-8 decoding, escapes, number grammar and a
 * quadratic duplicate check), which follows json.h's contract: errors in text
 * order, NOT_OBJECT only for valid JSON, field errors after the structure.
 * Then the invariants: spans inside the input, strings unescape into raw_len
 * bytes as valid UTF-8, integers within 0 … 2^63−1. Any difference aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define FAIL(...) do { fprintf(stderr, "fuzz_json: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

/* ------------------------------------------------------------------------ */
/* Reference reader                                                          */

#define REF_MAX_ROOT 4096
#define REF_MAX_ELEMS 4096

typedef struct ref_member {          /* a member of the root object */
    const uint8_t *name;             /* raw, between the quotes */
    size_t name_len;
    const uint8_t *v, *v_end;        /* value text */
} ref_member;

typedef struct ref {
    const uint8_t *p, *end, *start;
    int depth;
    size_t members;
    aegis_status err;
    /* root members, and the elements of the root "ids" array */
    ref_member root[REF_MAX_ROOT];
    size_t nroot;
    char elem_kind[REF_MAX_ELEMS];   /* '"' for strings, else the first byte */
    const uint8_t *elem_raw[REF_MAX_ELEMS];
    size_t elem_len[REF_MAX_ELEMS];
    size_t nelems;
} ref;

static int ref_fail(ref *r, aegis_status st) {
    if (r->err == AEGIS_OK) r->err = st;
    return 0;
}

static void ref_ws(ref *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

/* Decodes one UTF-8 code point; -1 if invalid. */
static long ref_utf8(const uint8_t **pp, const uint8_t *end) {
    const uint8_t *p = *pp;
    unsigned c = *p;
    int n;
    long cp, min;
    if (c < 0x80) { *pp = p + 1; return c; }
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; min = 0x10000; }
    else return -1;
    if (end - p <= n) return -1;
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xC0) != 0x80) return -1;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
    *pp = p + n + 1;
    return cp;
}

static int ref_hex(const uint8_t *p, const uint8_t *end, long *v) {
    if (end - p < 4) return 0;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        *v = *v * 16 + d;
    }
    return 1;
}

/* Decodes the string at *pp (the opening quote) into out (code points as
 * UTF-8) if out is not NULL, and moves *pp past it. Returns 1, or 0 when the
 * string is invalid (always a syntax error). */
static int ref_str(const uint8_t **pp, const uint8_t *end, uint8_t *out, size_t *out_len,
                   const uint8_t **raw, size_t *raw_len) {
    const uint8_t *p = *pp + 1;
    size_t o = 0;
    *raw = p;
    for (;;) {
        long cp;
        if (p >= end) return 0;
        if (*p == '"') break;
        if (*p < 0x20) return 0;
        if (*p == '\\') {
            if (p + 1 >= end) return 0;
            const char *simple = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
            const char *k = p[1] ? strchr(simple, p[1]) : NULL;
            if (k) { cp = (unsigned char)to[k - simple]; p += 2; }
            else if (p[1] == 'u') {
                if (!ref_hex(p + 2, end, &cp)) return 0;
                p += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return 0;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    long lo;
                    if (end - p < 2 || p[0] != '\\' || p[1] != 'u' || !ref_hex(p + 2, end, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return 0;
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10 | (lo - 0xDC00));
                }
            } else return 0;
        } else if ((cp = ref_utf8(&p, end)) < 0) {
            return 0;
        }
        if (out) {
            if (cp < 0x80) out[o++] = (uint8_t)cp;
            else if (cp < 0x800) { out[o++] = (uint8_t)(0xC0 | cp >> 6); out[o++] = (uint8_t)(0x80 | (cp & 63)); }
            else if (cp < 0x10000) {
                out[o++] = (uint8_t)(0xE0 | cp >> 12); out[o++] = (uint8_t)(0x80 | (cp >> 6 & 63));
                out[o++] = (uint8_t)(0x80 | (cp & 63));
            } else {
                out[o++] = (uint8_t)(0xF0 | cp >> 18); out[o++] = (uint8_t)(0x80 | (cp >> 12 & 63));
                out[o++] = (uint8_t)(0x80 | (cp >> 6 & 63)); out[o++] = (uint8_t)(0x80 | (cp & 63));
            }
        }
    }
    *raw_len = (size_t)(p - *raw);
    if (out_len) *out_len = o;
    *pp = p + 1;
    return 1;
}

static int ref_string(ref *r, uint8_t *out, size_t *out_len, const uint8_t **raw, size_t *raw_len) {
    return ref_str(&r->p, r->end, out, out_len, raw, raw_len) ? 1 : ref_fail(r, AEGIS_E_JSON_SYNTAX);
}

static int ref_value(ref *r, int ids);

static int ref_object(ref *r) {
    /* Decoded names of this object, for the quadratic duplicate check. */
    size_t cap = 16, n = 0;
    uint8_t **names = malloc(cap * sizeof *names);
    size_t *lens = malloc(cap * sizeof *lens);
    int ok = 0;
    int is_root = r->depth == 1;
    r->p++;
    ref_ws(r);
    if (r->p < r->end && *r->p == '}') { r->p++; ok = 1; goto out; }
    for (;;) {
        const uint8_t *raw;
        size_t raw_len, dlen;
        if (r->p >= r->end || *r->p != '"') { ref_fail(r, AEGIS_E_JSON_SYNTAX); goto out; }
        const uint8_t *q = r->p;
        if (!ref_str(&q, r->end, NULL, NULL, &raw, &raw_len)) { ref_fail(r, AEGIS_E_JSON_SYNTAX); goto out; }
        uint8_t *dec = malloc(raw_len + 1);     /* decoding never lengthens */
        if (!ref_string(r, dec, &dlen, &raw, &raw_len)) FAIL("reference: name decodes once only");
        if (r->members == AEGIS_JSON_MAX_MEMBERS) { free(dec); ref_fail(r, AEGIS_E_JSON_LIMIT); goto out; }
        r->members++;
        for (size_t i = 0; i < n; i++)
            if (lens[i] == dlen && memcmp(names[i], dec, dlen) == 0) {
                free(dec);
                ref_fail(r, AEGIS_E_JSON_DUPLICATE_KEY);
                goto out;
            }
        if (n == cap) {
            cap *= 2;
            names = realloc(names, cap * sizeof *names);
            lens = realloc(lens, cap * sizeof *lens);
        }
        names[n] = dec;
        lens[n++] = dlen;
        ref_ws(r);
        if (r->p >= r->end || *r->p != ':') { ref_fail(r, AEGIS_E_JSON_SYNTAX); goto out; }
        r->p++;
        ref_ws(r);
        int ids = is_root && dlen == 3 && memcmp(dec, "ids", 3) == 0;
        const uint8_t *v = r->p;
        if (ids) r->nelems = 0;
        if (!ref_value(r, ids)) goto out;
        if (is_root && r->nroot < REF_MAX_ROOT)
            r->root[r->nroot++] = (ref_member){ raw, raw_len, v, r->p };
        ref_ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; ref_ws(r); continue; }
        if (r->p < r->end && *r->p == '}') { r->p++; ok = 1; goto out; }
        ref_fail(r, AEGIS_E_JSON_SYNTAX);
        goto out;
    }
out:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(lens);
    return ok;
}

static int ref_array(ref *r, int ids) {
    r->p++;
    ref_ws(r);
    if (r->p < r->end && *r->p == ']') { r->p++; return 1; }
    for (;;) {
        size_t i = SIZE_MAX;
        if (ids && r->p < r->end && r->nelems < REF_MAX_ELEMS) {
            i = r->nelems++;
            r->elem_kind[i] = (char)*r->p;
            r->elem_raw[i] = r->p + 1;
        }
        const uint8_t *v = r->p;
        if (!ref_value(r, 0)) return 0;
        if (i != SIZE_MAX && r->elem_kind[i] == '"') r->elem_len[i] = (size_t)(r->p - v) - 2;
        ref_ws(r);
        if (r->p < r->end && *r->p == ',') { r->p++; ref_ws(r); continue; }
        if (r->p < r->end && *r->p == ']') { r->p++; return 1; }
        return ref_fail(r, AEGIS_E_JSON_SYNTAX);
    }
}

static int ref_number(ref *r) {
    const uint8_t *p = r->p, *e = r->end;
    if (p < e && *p == '-') p++;
    if (p >= e) return ref_fail(r, AEGIS_E_JSON_SYNTAX);
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') { while (p < e && *p >= '0' && *p <= '9') p++; }
    else return ref_fail(r, AEGIS_E_JSON_SYNTAX);
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return ref_fail(r, AEGIS_E_JSON_SYNTAX);
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return ref_fail(r, AEGIS_E_JSON_SYNTAX);
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    r->p = p;
    return 1;
}

static int ref_lit(ref *r, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0) return ref_fail(r, AEGIS_E_JSON_SYNTAX);
    r->p += n;
    return 1;
}

static int ref_value(ref *r, int ids) {
    int ok;
    if (r->p >= r->end) return ref_fail(r, AEGIS_E_JSON_SYNTAX);
    switch (*r->p) {
    case '{':
    case '[':
        if (r->depth == AEGIS_JSON_MAX_DEPTH) return ref_fail(r, AEGIS_E_JSON_LIMIT);
        r->depth++;
        ok = *r->p == '{' ? ref_object(r) : ref_array(r, ids);
        r->depth--;
        return ok;
    case '"': {
        const uint8_t *raw;
        size_t raw_len;
        return ref_string(r, NULL, NULL, &raw, &raw_len);
    }
    case 't': return ref_lit(r, "true");
    case 'f': return ref_lit(r, "false");
    case 'n': return ref_lit(r, "null");
    default: return ref_number(r);
    }
}

/* Structure only, as json_read_object(…, 0, NULL) should answer. */
static aegis_status ref_read(ref *r, const uint8_t *data, size_t size) {
    memset(r, 0, offsetof(ref, root));
    r->nroot = r->nelems = 0;
    r->p = r->start = data;
    r->end = data + size;
    ref_ws(r);
    int is_object = r->p < r->end && *r->p == '{';
    if (!ref_value(r, 0)) return r->err;
    ref_ws(r);
    if (r->p != r->end) return AEGIS_E_JSON_SYNTAX;
    return is_object ? AEGIS_OK : AEGIS_E_JSON_NOT_OBJECT;
}

/* Does the raw root name decode to s? */
static int ref_name_is(const ref_member *m, const char *s) {
    uint8_t buf[256];
    size_t n;
    const uint8_t *raw, *p = m->name - 1;
    size_t raw_len;
    if (m->name_len > 6 * strlen(s) + 6) return 0;       /* cannot decode that short */
    if (!ref_str(&p, m->name + m->name_len + 1, buf, &n, &raw, &raw_len)) FAIL("root name does not decode");
    return n == strlen(s) && memcmp(buf, s, n) == 0;
}

/* The requested-field outcome json.h promises, from the root members. */
static aegis_status ref_fields(const ref *r, const json_field_spec *specs, size_t n,
                               json_field *want) {
    aegis_status first = AEGIS_OK;
    memset(want, 0, n * sizeof *want);
    for (size_t i = 0; i < r->nroot; i++) {
        const ref_member *m = &r->root[i];
        size_t k;
        for (k = 0; k < n; k++)
            if (ref_name_is(m, specs[k].name)) break;
        if (k == n) continue;
        aegis_status st = AEGIS_OK;
        json_field *f = &want[k];
        const uint8_t *v = m->v;
        size_t vl = (size_t)(m->v_end - v);
        f->present = 1;
        f->raw = (const char *)v;
        f->raw_len = vl;
        switch (specs[k].kind) {
        case JSON_FIELD_STRING:
            if (*v != '"') st = AEGIS_E_FIELD_TYPE;
            else { f->raw++; f->raw_len -= 2; f->has_escapes = memchr(f->raw, '\\', f->raw_len) != NULL; }
            break;
        case JSON_FIELD_ARRAY:
            if (*v != '[') st = AEGIS_E_FIELD_TYPE;
            break;
        case JSON_FIELD_ANY:
            break;
        case JSON_FIELD_UINT: {
            int is_num = *v == '-' || (*v >= '0' && *v <= '9');
            int frac = memchr(v, '.', vl) || memchr(v, 'e', vl) || memchr(v, 'E', vl);
            if (!is_num || frac) st = AEGIS_E_FIELD_TYPE;
            else if (*v == '-' || vl > 19) st = AEGIS_E_INTEGER_RANGE;
            else {
                char tmp[24];
                memcpy(tmp, v, vl);
                tmp[vl] = 0;
                unsigned long long x = strtoull(tmp, NULL, 10);
                if (x > (unsigned long long)INT64_MAX) st = AEGIS_E_INTEGER_RANGE;
                else f->uint_value = x;
            }
            break;
        }
        }
        if (st != AEGIS_OK && first == AEGIS_OK) first = st;
    }
    return first;
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                    */

static int utf8_valid(const uint8_t *p, size_t n) {
    const uint8_t *e = p + n;
    while (p < e)
        if (ref_utf8(&p, e) < 0) return 0;
    return 1;
}

static void check_string(const uint8_t *data, size_t size, const char *raw, size_t raw_len, bool esc) {
    const uint8_t *r = (const uint8_t *)raw;
    if (r < data || r + raw_len > data + size) FAIL("string span outside the input");
    if (esc != (memchr(raw, '\\', raw_len) != NULL)) FAIL("has_escapes wrong");
    char *out = malloc(raw_len ? raw_len : 1);
    size_t n = 12345;
    if (json_unescape(raw, raw_len, out, raw_len, &n) != AEGIS_OK) FAIL("unescape into raw_len failed");
    if (n > raw_len) FAIL("unescape grew");
    if (!esc && (n != raw_len || memcmp(out, raw, n) != 0)) FAIL("unescape of a plain string differs");
    if (!utf8_valid((const uint8_t *)out, n)) FAIL("unescaped string is not UTF-8");
    if (n > 0 && json_unescape(raw, raw_len, out, n - 1, &n) != AEGIS_E_BUFFER_TOO_SMALL)
        FAIL("unescape into a short buffer did not refuse");
    free(out);
}

static void compare_fields(const uint8_t *data, size_t size, const json_field_spec *specs, size_t n,
                           const json_field *got, const json_field *want) {
    for (size_t i = 0; i < n; i++) {
        const json_field *g = &got[i], *w = &want[i];
        if (g->present != w->present) FAIL("field %s: present %d, want %d", specs[i].name, g->present, w->present);
        if (!g->present) continue;
        if (g->raw != w->raw || g->raw_len != w->raw_len) FAIL("field %s: span differs", specs[i].name);
        if ((const uint8_t *)g->raw < data || (const uint8_t *)g->raw + g->raw_len > data + size)
            FAIL("field span outside the input");
        if (specs[i].kind == JSON_FIELD_STRING) {
            if (g->has_escapes != w->has_escapes) FAIL("field %s: has_escapes", specs[i].name);
            check_string(data, size, g->raw, g->raw_len, g->has_escapes);
        }
        if (specs[i].kind == JSON_FIELD_UINT) {
            if (g->uint_value != w->uint_value) FAIL("field %s: value", specs[i].name);
            if (g->uint_value > (uint64_t)INT64_MAX) FAIL("integer out of range");
        }
    }
}

static const json_field_spec msg_spec[] = {
    { "id", JSON_FIELD_STRING },       { "type", JSON_FIELD_STRING },
    { "channel", JSON_FIELD_STRING },  { "ref", JSON_FIELD_STRING },
    { "payload", JSON_FIELD_STRING },  { "timestamp", JSON_FIELD_UINT },
    { "nonce", JSON_FIELD_STRING },    { "signature", JSON_FIELD_STRING },
    { "code", JSON_FIELD_ANY },        { "expires_at", JSON_FIELD_UINT },
};
#define MSG_N (sizeof msg_spec / sizeof msg_spec[0])

static const json_field_spec ids_spec[] = { { "ids", JSON_FIELD_ARRAY } };

static ref R;   /* large; kept out of the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    json_field f[MSG_N], want[MSG_N];

    /* 1. Structure: the reference and json.c agree. */
    aegis_status st0 = json_read_object(text, size, NULL, 0, NULL);
    aegis_status ref0 = ref_read(&R, data, size);
    if (st0 != ref0) FAIL("structure: got %d, reference %d", st0, ref0);

    /* 2. The message's fields: same structure verdict, then the fields. */
    aegis_status st1 = json_read_object(text, size, msg_spec, MSG_N, f);
    if (st0 != AEGIS_OK) {
        if (st1 != st0) FAIL("with fields: got %d, structure said %d", st1, st0);
    } else {
        aegis_status ref1 = ref_fields(&R, msg_spec, MSG_N, want);
        if (st1 != ref1) FAIL("fields: got %d, reference %d", st1, ref1);
        if (st1 == AEGIS_OK) compare_fields(data, size, msg_spec, MSG_N, f, want);
        if (json_read_object(text, size, msg_spec, MSG_N, f) != st1) FAIL("not deterministic");
    }

    /* 3. As an ack plaintext: walk "ids" and compare with the reference. */
    json_field ids;
    aegis_status st2 = json_read_object(text, size, ids_spec, 1, &ids);
    if (st0 != AEGIS_OK) {
        if (st2 != st0) FAIL("ids: got %d, structure said %d", st2, st0);
        return 0;
    }
    json_field ids_want;
    if (st2 != ref_fields(&R, ids_spec, 1, &ids_want)) FAIL("ids: field status");
    if (st2 != AEGIS_OK || !ids.present) return 0;
    if (ids.raw != ids_want.raw || ids.raw_len != ids_want.raw_len) FAIL("ids: span");

    json_array_iter it;
    json_array_begin(&it, ids.raw, ids.raw_len);
    size_t i;
    for (i = 0;; i++) {
        const char *raw = NULL;
        size_t raw_len = 0;
        bool esc = false, done = false;
        aegis_status st = json_array_next_string(&it, &raw, &raw_len, &esc, &done);
        if (i > ids.raw_len) FAIL("ids: iterator does not end");
        if (i >= REF_MAX_ELEMS) break;
        if (done) {
            if (st != AEGIS_OK || i != R.nelems) FAIL("ids: ended after %zu of %zu", i, R.nelems);
            break;
        }
        if (i >= R.nelems) FAIL("ids: more elements than the reference");
        if (R.elem_kind[i] != '"') {
            if (st != AEGIS_E_FIELD_TYPE) FAIL("ids: element %zu is not a string, got %d", i, st);
            if (json_array_next_string(&it, &raw, &raw_len, &esc, &done) != AEGIS_E_FIELD_TYPE || done)
                FAIL("ids: error does not repeat");
            break;
        }
        if (st != AEGIS_OK) FAIL("ids: element %zu: %d", i, st);
        if ((const uint8_t *)raw != R.elem_raw[i] || raw_len != R.elem_len[i]) FAIL("ids: element span");
        if ((const uint8_t *)raw < (const uint8_t *)ids.raw ||
            raw + raw_len > ids.raw + ids.raw_len)
            FAIL("ids: element outside the array");
        check_string(data, size, raw, raw_len, esc);
    }
    return 0;
}
