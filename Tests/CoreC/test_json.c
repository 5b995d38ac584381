/*
 * test_json.c — unit tests of the strict JSON reader (src/json.c).
 *
 * Standalone: links json.c alone, so statuses are named by a local table
 * (check.h's CHECK_STATUS would pull in status.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json.h"

static const char *st_name(aegis_status s) {
    switch (s) {
    case AEGIS_OK: return "OK";
    case AEGIS_E_BUFFER_TOO_SMALL: return "BUFFER_TOO_SMALL";
    case AEGIS_E_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case AEGIS_E_JSON_SYNTAX: return "JSON_SYNTAX";
    case AEGIS_E_JSON_NOT_OBJECT: return "JSON_NOT_OBJECT";
    case AEGIS_E_JSON_DUPLICATE_KEY: return "JSON_DUPLICATE_KEY";
    case AEGIS_E_JSON_LIMIT: return "JSON_LIMIT";
    case AEGIS_E_FIELD_TYPE: return "FIELD_TYPE";
    case AEGIS_E_INTEGER_RANGE: return "INTEGER_RANGE";
    default: return "other";
    }
}

/* A case's text for a failure line: non-printable bytes as \xNN, cut short. */
static const char *show(const char *t, size_t n) {
    static char buf[200];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof buf - 8; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c >= 0x20 && c < 0x7f) buf[o++] = (char)c;
        else o += (size_t)snprintf(buf + o, sizeof buf - o, "\\x%02x", c);
    }
    if (o >= sizeof buf - 8) memcpy(buf + o, "...", 4);
    else buf[o] = 0;
    return buf;
}

/* Checks a status, with one line on failure naming the case (t, n). */
static void check_st_(aegis_status got, aegis_status want, const char *t, size_t n,
                      const char *file, int line) {
    char what[400];
    if (got == want) { check_result_(1, file, line, ""); return; }
    snprintf(what, sizeof what, "case \"%s\": got %s, want %s", show(t, n), st_name(got),
             st_name(want));
    check_result_(0, file, line, what);
}
#define CHECK_ST(expr, want, text) check_st_((expr), (want), (text), strlen(text), __FILE__, __LINE__)
#define CHECK_STN(expr, want, text, n) check_st_((expr), (want), (text), (n), __FILE__, __LINE__)

/* Equal sizes, on one line. */
static void check_size_(size_t got, size_t want, const char *expr, const char *file, int line) {
    char what[200];
    snprintf(what, sizeof what, "%s: got %zu, want %zu", expr, got, want);
    check_result_(got == want, file, line, what);
}
#define CHECK_SIZE(a, b) check_size_((size_t)(a), (size_t)(b), #a " == " #b, __FILE__, __LINE__)

/* A literal with its exact length (embedded NULs included). */
#define L(s) (s), (sizeof(s) - 1)

/* Structure only: no requested fields. */
static aegis_status plain(const char *t, size_t n) { return json_read_object(t, n, NULL, 0, NULL); }

/* ------------------------------------------------------------------------ */
/* The envelope's fields                                                     */

enum { F_ID, F_TYPE, F_CHANNEL, F_REF, F_PAYLOAD, F_TIMESTAMP, F_NONCE, F_SIGNATURE, F_N };
static const json_field_spec msg_spec[F_N] = {
    [F_ID] = { "id", JSON_FIELD_STRING },
    [F_TYPE] = { "type", JSON_FIELD_STRING },
    [F_CHANNEL] = { "channel", JSON_FIELD_STRING },
    [F_REF] = { "ref", JSON_FIELD_STRING },
    [F_PAYLOAD] = { "payload", JSON_FIELD_STRING },
    [F_TIMESTAMP] = { "timestamp", JSON_FIELD_UINT },
    [F_NONCE] = { "nonce", JSON_FIELD_STRING },
    [F_SIGNATURE] = { "signature", JSON_FIELD_STRING },
};

static aegis_status msg(const char *t, json_field *f) {
    return json_read_object(t, strlen(t), msg_spec, F_N, f);
}

static int field_is(const json_field *f, const char *s) {
    return f->present && f->raw_len == strlen(s) && memcmp(f->raw, s, f->raw_len) == 0;
}

/* vectors.json messages[0] (up_request) and messages[1] (its ack). */
static const char up_request[] =
    "{\"id\":\"req-0001\",\"type\":\"request\",\"channel\":\"jobs.run\",\"payload\":"
    "\"dckVw95KNOUaDUbvh1DrAo0JrhTgydLNFEOOru8teSc=\",\"timestamp\":1764211260,\"nonce\":"
    "\"o1eFOmp+1gq435li\",\"signature\":\"65e5obxwJ7Ot85ex8vSaPGv0+wqnEeN4v+uRMfh35GyGkTzFM9jyu4"
    "lxazoppN0Cqy9RENDQ0qKm94F1y0P4BA==\"}";
static const char down_ack[] =
    "{\"id\":\"3f0a9b8c-1d2e-4f3a-8b4c-5d6e7f8a9b0c\",\"type\":\"ack\",\"channel\":\"aegis.ack\","
    "\"ref\":\"req-0001\",\"payload\":\"ljdVY/MDiLVrt91P3FDdE1WxaSzinwkHNT6eA4ODdkE+KieL\","
    "\"timestamp\":1764211261,\"nonce\":\"njX6l5b5zU2FXJKw\",\"signature\":\"2BQtn4V8ZILS4pmdYA7hW"
    "jQImCio4btHbK7pS1DEnpss4dilS8yNs1xGlgo5nrQbDMuYrDwhNgX+hb3Duz4OAg==\"}";

static void test_vectors(void) {
    json_field f[F_N];
    CHECK_ST(msg(up_request, f), AEGIS_OK, "up_request");
    CHECK(field_is(&f[F_ID], "req-0001"));
    CHECK(field_is(&f[F_TYPE], "request"));
    CHECK(field_is(&f[F_CHANNEL], "jobs.run"));
    CHECK(!f[F_REF].present);
    CHECK(field_is(&f[F_PAYLOAD], "dckVw95KNOUaDUbvh1DrAo0JrhTgydLNFEOOru8teSc="));
    CHECK(f[F_TIMESTAMP].present);
    CHECK(f[F_TIMESTAMP].uint_value == 1764211260u);
    CHECK(field_is(&f[F_TIMESTAMP], "1764211260"));
    CHECK(field_is(&f[F_NONCE], "o1eFOmp+1gq435li"));
    CHECK(f[F_SIGNATURE].present && f[F_SIGNATURE].raw_len == 88);
    for (int i = 0; i < F_N; i++) CHECK(!f[i].has_escapes);
    /* The spans point into the text. */
    CHECK(f[F_ID].raw == up_request + 7);

    CHECK_ST(msg(down_ack, f), AEGIS_OK, "down_ack");
    CHECK(field_is(&f[F_REF], "req-0001"));
    CHECK(field_is(&f[F_TYPE], "ack"));
    CHECK(f[F_TIMESTAMP].uint_value == 1764211261u);

    /* negative.messages / negative.auth JSON cases (all "malformed"). */
    static const struct { const char *json; aegis_status want; } neg[] = {
        { "{\"id\":\"req-0001\",\"timestamp\":1764211260.0}", AEGIS_E_FIELD_TYPE },
        { "{\"id\":\"req-0001\",\"timestamp\":1.76421126e9}", AEGIS_E_FIELD_TYPE },
        { "{\"id\":\"req-0001\",\"timestamp\":9223372036854775808}", AEGIS_E_INTEGER_RANGE },
        { "{\"id\":\"req-0001\",\"timestamp\":true}", AEGIS_E_FIELD_TYPE },
        { "{\"id\":\"req-0001\",\"timestamp\":\"1764211200\"}", AEGIS_E_FIELD_TYPE },
        { "{\"id\":\"req-0001\",\"timestamp\":-1}", AEGIS_E_INTEGER_RANGE },
        { "{\"id\":\"hb-0001\",\"ref\":null}", AEGIS_E_FIELD_TYPE },
        { "{\"id\":\"req-0001\",\"channel\":\"jobs.run\",\"timestamp\":1,\"channel\":\"jobs.run\"}",
          AEGIS_E_JSON_DUPLICATE_KEY },
    };
    for (size_t i = 0; i < sizeof neg / sizeof neg[0]; i++)
        CHECK_ST(msg(neg[i].json, f), neg[i].want, neg[i].json);
}

/* ------------------------------------------------------------------------ */
/* Grammar                                                                   */

typedef struct { const char *t; size_t n; aegis_status want; } tcase;
#define T(s, w) { (s), sizeof(s) - 1, (w) }

static void run_cases(const tcase *c, size_t n) {
    for (size_t i = 0; i < n; i++) CHECK_STN(plain(c[i].t, c[i].n), c[i].want, c[i].t, c[i].n);
}

static void test_grammar(void) {
    static const tcase c[] = {
        /* valid */
        T("{}", AEGIS_OK),
        T(" \t\r\n{ \t\r\n} \t\r\n", AEGIS_OK),
        T("{\"a\":1}", AEGIS_OK),
        T("{ \"a\" : 1 , \"b\" : [ 1 , 2 ] }", AEGIS_OK),
        T("{\"a\":[1,2,{\"b\":null}],\"c\":{\"d\":true,\"e\":false},\"f\":[],\"g\":{}}", AEGIS_OK),
        T("{\"a\":[[[]],[{}]]}", AEGIS_OK),
        T("{\"\":\"\"}", AEGIS_OK),
        T("{\"a\":0}", AEGIS_OK), T("{\"a\":-0}", AEGIS_OK), T("{\"a\":0.5}", AEGIS_OK),
        T("{\"a\":-0.0}", AEGIS_OK), T("{\"a\":1e10}", AEGIS_OK), T("{\"a\":1E+2}", AEGIS_OK),
        T("{\"a\":1e-2}", AEGIS_OK), T("{\"a\":-1.5e-3}", AEGIS_OK), T("{\"a\":0e0}", AEGIS_OK),
        T("{\"a\":10}", AEGIS_OK), T("{\"a\":1.000}", AEGIS_OK), T("{\"a\":1e007}", AEGIS_OK),
        T("{\"a\":123456789012345678901234567890}", AEGIS_OK), /* only requested ints are ranged */
        T("{\"a\":\"\x7f\"}", AEGIS_OK),                        /* DEL is not a control char here */
        T("{\"a\":[1,\"x\",true,false,null,{\"b\":[]}]}", AEGIS_OK),
        T("{\"a\":1}\n", AEGIS_OK),
        /* structure */
        T("", AEGIS_E_JSON_SYNTAX), T(" ", AEGIS_E_JSON_SYNTAX), T("{", AEGIS_E_JSON_SYNTAX),
        T("}", AEGIS_E_JSON_SYNTAX), T("{\"a\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":}", AEGIS_E_JSON_SYNTAX), T("{\"a\":1,}", AEGIS_E_JSON_SYNTAX),
        T("{,}", AEGIS_E_JSON_SYNTAX), T("{,\"a\":1}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1 \"b\":2}", AEGIS_E_JSON_SYNTAX), T("{\"a\":1,,\"b\":2}", AEGIS_E_JSON_SYNTAX),
        T("{a:1}", AEGIS_E_JSON_SYNTAX), T("{'a':1}", AEGIS_E_JSON_SYNTAX),
        T("{1:1}", AEGIS_E_JSON_SYNTAX), T("{\"a\" 1}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\"::1}", AEGIS_E_JSON_SYNTAX), T("{\"a\":1", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1,", AEGIS_E_JSON_SYNTAX), T("{\"a\"", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":[1,]}", AEGIS_E_JSON_SYNTAX), T("{\"a\":[,1]}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":[1 2]}", AEGIS_E_JSON_SYNTAX), T("{\"a\":[}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":{]}", AEGIS_E_JSON_SYNTAX), T("{\"a\":1]", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":[1}", AEGIS_E_JSON_SYNTAX), T("{\"a\":[1,2", AEGIS_E_JSON_SYNTAX),
        T("{} {}", AEGIS_E_JSON_SYNTAX), T("{}x", AEGIS_E_JSON_SYNTAX),
        T("{}\0", AEGIS_E_JSON_SYNTAX), T("\0{}", AEGIS_E_JSON_SYNTAX),
        T("{}}", AEGIS_E_JSON_SYNTAX), T("{},", AEGIS_E_JSON_SYNTAX),
        T("\xEF\xBB\xBF{}", AEGIS_E_JSON_SYNTAX),           /* a BOM is not whitespace */
        T("\v{}", AEGIS_E_JSON_SYNTAX), T("{}\f", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\xC2\xA0" "1}", AEGIS_E_JSON_SYNTAX),      /* NBSP is not whitespace */
        T("{\xC3\xA9:1}", AEGIS_E_JSON_SYNTAX),              /* non-ASCII outside strings */
        T("[1,", AEGIS_E_JSON_SYNTAX), T("[", AEGIS_E_JSON_SYNTAX), T("]", AEGIS_E_JSON_SYNTAX),
        /* literals */
        T("{\"a\":tru}", AEGIS_E_JSON_SYNTAX), T("{\"a\":True}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":nul}", AEGIS_E_JSON_SYNTAX), T("{\"a\":nulll}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":falsey}", AEGIS_E_JSON_SYNTAX), T("{\"a\":NaN}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":Infinity}", AEGIS_E_JSON_SYNTAX), T("{\"a\":undefined}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":t", AEGIS_E_JSON_SYNTAX), T("{\"a\":nu", AEGIS_E_JSON_SYNTAX),
        /* numbers */
        T("{\"a\":01}", AEGIS_E_JSON_SYNTAX), T("{\"a\":00}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":-01}", AEGIS_E_JSON_SYNTAX), T("{\"a\":-}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1.}", AEGIS_E_JSON_SYNTAX), T("{\"a\":.5}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1e}", AEGIS_E_JSON_SYNTAX), T("{\"a\":1e+}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1.e5}", AEGIS_E_JSON_SYNTAX), T("{\"a\":+1}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":0x10}", AEGIS_E_JSON_SYNTAX), T("{\"a\":1.5.5}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1e5e5}", AEGIS_E_JSON_SYNTAX), T("{\"a\":--1}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":- 1}", AEGIS_E_JSON_SYNTAX), T("{\"a\":1 000}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1", AEGIS_E_JSON_SYNTAX), T("{\"a\":-", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1.", AEGIS_E_JSON_SYNTAX), T("{\"a\":1e", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1e-", AEGIS_E_JSON_SYNTAX), T("{\"a\":0.", AEGIS_E_JSON_SYNTAX),
        /* strings */
        T("{\"a\":\"x}", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\x01\"}", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"\t\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\n\"}", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"\x1f\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\0\"}", AEGIS_E_JSON_SYNTAX), T("{\"\x01\":1}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":'x'}", AEGIS_E_JSON_SYNTAX),
        /* not an object (but valid JSON) */
        T("[]", AEGIS_E_JSON_NOT_OBJECT), T("[1,2]", AEGIS_E_JSON_NOT_OBJECT),
        T(" [ {} ] ", AEGIS_E_JSON_NOT_OBJECT), T("1", AEGIS_E_JSON_NOT_OBJECT),
        T("0", AEGIS_E_JSON_NOT_OBJECT), T("-1.5e3", AEGIS_E_JSON_NOT_OBJECT),
        T("\"a\"", AEGIS_E_JSON_NOT_OBJECT), T("true", AEGIS_E_JSON_NOT_OBJECT),
        T("false", AEGIS_E_JSON_NOT_OBJECT), T("null", AEGIS_E_JSON_NOT_OBJECT),
        T("[1]x", AEGIS_E_JSON_SYNTAX), T("01", AEGIS_E_JSON_SYNTAX),
        T("[{\"a\":1,\"a\":2}]", AEGIS_E_JSON_DUPLICATE_KEY),
    };
    run_cases(c, sizeof c / sizeof c[0]);
    CHECK_ST(json_read_object(NULL, 0, NULL, 0, NULL), AEGIS_E_JSON_SYNTAX, "NULL, 0");
}

static void test_escapes(void) {
    static const tcase c[] = {
        T("{\"a\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"}", AEGIS_OK),
        T("{\"a\":\"\\u0000\\u001f\\u00e9\\u00E9\\u20ac\\uFFFF\\uffff\"}", AEGIS_OK),
        T("{\"a\":\"\\uD83D\\uDE00\"}", AEGIS_OK),        /* U+1F600 */
        T("{\"a\":\"\\ud800\\udc00\"}", AEGIS_OK),        /* U+10000 */
        T("{\"a\":\"\\uDBFF\\uDFFF\"}", AEGIS_OK),        /* U+10FFFF */
        T("{\"a\":\"\\uD7FF\\uE000\"}", AEGIS_OK),        /* around the surrogates */
        T("{\"\\u0061\\n\":1}", AEGIS_OK),                /* escapes in names */
        T("{\"a\":\"\\x41\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\'\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\a\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\0\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\U0041\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\u12\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\u12G4\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\u-123\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\u 123\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\"}", AEGIS_E_JSON_SYNTAX),    /* unpaired high */
        T("{\"a\":\"\\uDBFF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uDC00\"}", AEGIS_E_JSON_SYNTAX),    /* lone low */
        T("{\"a\":\"\\uDFFF\\uD800\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\\u0041\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\\uD800\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\\uE000\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800x\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\\n\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\\\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\\uDC0\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\uD800\\u", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xed\xa0\x80\"}", AEGIS_E_JSON_SYNTAX), /* surrogate in UTF-8, not as an escape */
        T("{\"a\":\"\\\"}", AEGIS_E_JSON_SYNTAX),           /* escaped quote: unterminated */
        T("{\"a\":\"\\", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\u00", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\\\xc3\xa9\"}", AEGIS_E_JSON_SYNTAX),
    };
    run_cases(c, sizeof c / sizeof c[0]);
}

static void test_utf8(void) {
    static const tcase c[] = {
        T("{\"a\":\"\xC3\xA9\"}", AEGIS_OK),                 /* é */
        T("{\"a\":\"\xE2\x82\xAC\"}", AEGIS_OK),             /* € */
        T("{\"a\":\"\xF0\x9F\x98\x80\"}", AEGIS_OK),         /* U+1F600 */
        T("{\"a\":\"\xC2\x80\xDF\xBF\"}", AEGIS_OK),         /* U+0080, U+07FF */
        T("{\"a\":\"\xE0\xA0\x80\xEF\xBF\xBF\"}", AEGIS_OK), /* U+0800, U+FFFF */
        T("{\"a\":\"\xED\x9F\xBF\xEE\x80\x80\"}", AEGIS_OK), /* U+D7FF, U+E000 */
        T("{\"a\":\"\xEF\xBB\xBF\"}", AEGIS_OK),             /* U+FEFF inside a string */
        T("{\"a\":\"\xF0\x90\x80\x80\xF4\x8F\xBF\xBF\"}", AEGIS_OK), /* U+10000, U+10FFFF */
        T("{\"\xC3\xA9\xE2\x82\xAC\":\"\xF3\xA0\x80\x81\"}", AEGIS_OK),
        /* overlongs */
        T("{\"a\":\"\xC0\xAF\"}", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"\xC0\x80\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xC1\xBF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xE0\x80\xAF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xE0\x9F\xBF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xF0\x80\x80\xAF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xF0\x8F\xBF\xBF\"}", AEGIS_E_JSON_SYNTAX),
        /* surrogates */
        T("{\"a\":\"\xED\xA0\x80\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xED\xBF\xBF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xED\xA0\xBD\xED\xB8\x80\"}", AEGIS_E_JSON_SYNTAX), /* CESU-8 pair */
        /* beyond U+10FFFF and never-valid bytes */
        T("{\"a\":\"\xF4\x90\x80\x80\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xF5\x80\x80\x80\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xF7\xBF\xBF\xBF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xF8\x88\x80\x80\x80\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xFC\x84\x80\x80\x80\x80\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xFE\"}", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"\xFF\"}", AEGIS_E_JSON_SYNTAX),
        /* lone continuations */
        T("{\"a\":\"\x80\"}", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"\xBF\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xC3\xA9\xA9\"}", AEGIS_E_JSON_SYNTAX),
        /* truncated: by the quote, by the next byte, by the end of the text */
        T("{\"a\":\"\xC3\"}", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"\xE2\x82\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xF0\x9F\x98\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xE2x\xAC\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xF0\x9F\x98" "A\"}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":\"\xC3", AEGIS_E_JSON_SYNTAX), T("{\"a\":\"\xF0\x9F\x98", AEGIS_E_JSON_SYNTAX),
        /* in names too */
        T("{\"\xC0\xAF\":1}", AEGIS_E_JSON_SYNTAX), T("{\"\xED\xA0\x80\":1}", AEGIS_E_JSON_SYNTAX),
    };
    run_cases(c, sizeof c / sizeof c[0]);
}

/* Every special byte at every offset across the 16- and 64-byte strides. */
static void test_strides(void) {
    static const struct { const char *ins; aegis_status want; } ins[] = {
        { "\xC3\xA9", AEGIS_OK }, { "\xE2\x82\xAC", AEGIS_OK }, { "\xF0\x9F\x98\x80", AEGIS_OK },
        { "\\n", AEGIS_OK }, { "\\u00e9", AEGIS_OK }, { "\\\"", AEGIS_OK }, { "\x7f", AEGIS_OK },
        { "\x1f", AEGIS_E_JSON_SYNTAX }, { "\x01", AEGIS_E_JSON_SYNTAX }, { "\x80", AEGIS_E_JSON_SYNTAX },
        { "\xC3", AEGIS_E_JSON_SYNTAX }, { "\xFF", AEGIS_E_JSON_SYNTAX },
        { "\xED\xA0\x80", AEGIS_E_JSON_SYNTAX }, { "\\x", AEGIS_E_JSON_SYNTAX },
        { "\"", AEGIS_E_JSON_SYNTAX }, /* ends the string early: the rest is garbage */
    };
    char buf[512];
    for (size_t k = 0; k < sizeof ins / sizeof ins[0]; k++) {
        for (size_t pre = 0; pre < 150; pre += 1) {
            for (size_t post = 0; post < 70; post += 23) {
                size_t n = 0, il = strlen(ins[k].ins);
                memcpy(buf, "{\"a\":\"", 6), n = 6;
                memset(buf + n, 'A', pre), n += pre;
                memcpy(buf + n, ins[k].ins, il), n += il;
                memset(buf + n, 'B', post), n += post;
                memcpy(buf + n, "\"}", 2), n += 2;
                json_field f;
                static const json_field_spec spec = { "a", JSON_FIELD_STRING };
                aegis_status st = json_read_object(buf, n, &spec, 1, &f);
                CHECK_STN(st, ins[k].want, buf, n);
                if (st == AEGIS_OK)
                    CHECK(f.raw == buf + 6 && f.raw_len == pre + il + post &&
                          f.has_escapes == (ins[k].ins[0] == '\\'));
            }
        }
    }
    /* The text may end right after any special byte (no reads past the end:
     * ASan sees the heap copy). */
    for (size_t pre = 0; pre < 80; pre++) {
        char *h = malloc(pre + 7);
        memcpy(h, "{\"a\":\"", 6);
        memset(h + 6, 'A', pre);
        h[6 + pre] = (char)0xC3;
        CHECK_STN(plain(h, pre + 7), AEGIS_E_JSON_SYNTAX, h, pre + 7);
        CHECK_STN(plain(h, pre + 6), AEGIS_E_JSON_SYNTAX, h, pre + 6);
        free(h);
    }
}

/* ------------------------------------------------------------------------ */
/* Duplicates, limits, order of errors                                       */

static void test_duplicates(void) {
    static const tcase c[] = {
        T("{\"a\":1,\"a\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"a\":1,\"a\":1}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"a\":1,\"b\":2,\"a\":3}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\":1,\"\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"a\":1,\"\\u0061\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\\u0061\":1,\"a\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\\u0061\":1,\"\\u0061\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\\u0061\":1,\"\\u0041\":2}", AEGIS_OK),
        T("{\"\xC3\xA9\":1,\"\\u00e9\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\\u00E9\":1,\"\\u00e9\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\xF0\x9F\x98\x80\":1,\"\\uD83D\\uDE00\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"a/b\":1,\"a\\/b\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\\n\":1,\"\\u000a\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\\u0000\":1,\"\\u0000\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"\\u0000\":1,\"\":2}", AEGIS_OK),
        T("{\"a\":1,\"A\":2,\"a \":3,\"ab\":4,\"b\":5}", AEGIS_OK),
        T("{\"ab\":1,\"a\":2,\"\\u0061b\\u0063\":3}", AEGIS_OK),
        T("{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2},\"c\":[{\"a\":1},{\"a\":2}]}", AEGIS_OK),
        T("{\"x\":{\"a\":1,\"a\":2}}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"x\":[{\"a\":1},{\"b\":1,\"b\":2}]}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"x\":{\"y\":{}},\"x\":1}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"a\":{\"b\":1},\"b\":{\"a\":1}}", AEGIS_OK),
        /* Order: a duplicate before another error wins, and the reverse. */
        T("{\"a\":1,\"a\":2,\"b\":01}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"b\":01,\"a\":1,\"a\":2}", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1,\"a\":2", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"o\":{\"b\":1,\"b\":2,", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"a\":1,\"o\":{\"a\":1,\"x\":[1,", AEGIS_E_JSON_SYNTAX),
        T("{\"a\":1,\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
          AEGIS_E_JSON_DUPLICATE_KEY),
        T("[{\"a\":1,\"a\":2},", AEGIS_E_JSON_DUPLICATE_KEY),
        T("[{\"a\":1,\"a\":2}", AEGIS_E_JSON_DUPLICATE_KEY),
        T("{\"a\":1,\"a\":2}x", AEGIS_E_JSON_DUPLICATE_KEY),
    };
    run_cases(c, sizeof c / sizeof c[0]);

    /* Larger objects take the sorting path: a duplicate anywhere, plain or
     * escaped, and none at all. */
    char buf[8192];
    for (int nnames = 9; nnames <= 200; nnames += 191) {
        for (int dup = -1; dup < nnames; dup += (dup < 0 ? 1 : 7)) {
            for (int escaped = 0; escaped < 2; escaped++) {
                size_t n = 0;
                buf[n++] = '{';
                for (int i = 0; i < nnames; i++) {
                    n += (size_t)sprintf(buf + n, "%s\"k%03d\":%d", i ? "," : "", i, i);
                }
                if (dup >= 0) {
                    if (escaped) n += (size_t)sprintf(buf + n, ",\"\\u006b%03d\":0", dup);
                    else n += (size_t)sprintf(buf + n, ",\"k%03d\":0", dup);
                }
                buf[n++] = '}';
                aegis_status want = dup >= 0 ? AEGIS_E_JSON_DUPLICATE_KEY : AEGIS_OK;
                CHECK_ST(plain(buf, n), want, "generated object");
            }
        }
    }
    /* Names that share long prefixes, and a pair that differs only at the end. */
    {
        size_t n = 0;
        buf[n++] = '{';
        for (int i = 0; i < 20; i++)
            n += (size_t)sprintf(buf + n, "%s\"%0100d\":1", i ? "," : "", i);
        n += (size_t)sprintf(buf + n, ",\"%0100d\":1}", 19);
        CHECK_ST(plain(buf, n), AEGIS_E_JSON_DUPLICATE_KEY, "long names");
        buf[n - 5] = '9';
        buf[n - 6] = '9';
        CHECK_ST(plain(buf, n), AEGIS_OK, "long names, no duplicate");
    }
}

/* n nested containers of kind open/close around inner. */
static size_t nest(char *buf, int depth, const char *open, const char *inner, const char *close) {
    size_t n = 0, lo = strlen(open), lc = strlen(close), li = strlen(inner);
    for (int i = 0; i < depth; i++) memcpy(buf + n, open, lo), n += lo;
    memcpy(buf + n, inner, li), n += li;
    for (int i = 0; i < depth; i++) memcpy(buf + n, close, lc), n += lc;
    return n;
}

static void test_depth(void) {
    char buf[2048];
    size_t n;
    n = nest(buf, AEGIS_JSON_MAX_DEPTH, "[", "", "]");
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_NOT_OBJECT, "64 arrays");
    n = nest(buf, AEGIS_JSON_MAX_DEPTH + 1, "[", "", "]");
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_LIMIT, "65 arrays");
    n = nest(buf, AEGIS_JSON_MAX_DEPTH, "{\"a\":", "1", "}");
    CHECK_ST(plain(buf, n), AEGIS_OK, "64 objects");
    n = nest(buf, AEGIS_JSON_MAX_DEPTH, "{\"a\":", "{}", "}");
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_LIMIT, "65 objects");
    n = nest(buf, AEGIS_JSON_MAX_DEPTH - 1, "{\"a\":", "[]", "}");
    CHECK_ST(plain(buf, n), AEGIS_OK, "63 objects + array");
    n = nest(buf, AEGIS_JSON_MAX_DEPTH, "{\"a\":", "[]", "}");
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_LIMIT, "64 objects + array");
    /* The limit is found at the 65th opening, before a later syntax error. */
    n = nest(buf, AEGIS_JSON_MAX_DEPTH + 1, "[", "", "");
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_LIMIT, "65 unclosed arrays");
    n = nest(buf, 500, "[", "", "");
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_LIMIT, "500 unclosed arrays");
    /* … and a syntax error before it wins. */
    n = nest(buf, 10, "[", "01,", "");
    memset(buf + n, '[', 100), n += 100;
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_SYNTAX, "syntax before depth");
    /* Depth counts open containers, not containers seen. */
    n = 0;
    buf[n++] = '{';
    for (int i = 0; i < 10; i++) n += (size_t)sprintf(buf + n, "%s\"k%d\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]", i ? "," : "", i);
    buf[n++] = '}';
    CHECK_ST(plain(buf, n), AEGIS_OK, "many shallow containers");
}

static void test_members(void) {
    size_t cap = 24 * (AEGIS_JSON_MAX_MEMBERS + 10);
    char *buf = malloc(cap);
    size_t n;
    int i;

    /* Exactly the limit in the root: accepted; one more: refused. */
    for (int extra = 0; extra < 2; extra++) {
        n = 0;
        buf[n++] = '{';
        for (i = 0; i < AEGIS_JSON_MAX_MEMBERS + extra; i++)
            n += (size_t)sprintf(buf + n, "%s\"%d\":%d", i ? "," : "", i, i);
        buf[n++] = '}';
        CHECK_ST(plain(buf, n), extra ? AEGIS_E_JSON_LIMIT : AEGIS_OK, "root members");
    }
    /* The limit: a duplicate as member 4096 is a duplicate; a new name as
     * member 4097 is the limit. */
    n = 0;
    buf[n++] = '{';
    for (i = 0; i < AEGIS_JSON_MAX_MEMBERS - 1; i++)
        n += (size_t)sprintf(buf + n, "%s\"%d\":%d", i ? "," : "", i, i);
    n += (size_t)sprintf(buf + n, ",\"17\":0}");
    CHECK_ST(plain(buf, n), AEGIS_E_JSON_DUPLICATE_KEY, "duplicate as last member");
    /* Across the whole text: members of nested objects count. */
    for (int extra = 0; extra < 2; extra++) {
        n = 0;
        n += (size_t)sprintf(buf + n, "{\"o\":[");
        for (i = 0; i < AEGIS_JSON_MAX_MEMBERS - 1 + extra; i++)
            n += (size_t)sprintf(buf + n, "%s{\"a\":%d}", i ? "," : "", i);
        n += (size_t)sprintf(buf + n, "]}");
        CHECK_ST(plain(buf, n), extra ? AEGIS_E_JSON_LIMIT : AEGIS_OK, "nested members");
    }
    /* Array elements and empty objects are not members. */
    n = 0;
    n += (size_t)sprintf(buf + n, "{\"a\":[");
    for (i = 0; i < 2 * AEGIS_JSON_MAX_MEMBERS; i++) n += (size_t)sprintf(buf + n, "%s{}", i ? "," : "");
    n += (size_t)sprintf(buf + n, "]}");
    CHECK_ST(plain(buf, n), AEGIS_OK, "many empty objects");
    /* 4096 escaped names, the sorting path at its largest, and one duplicate. */
    for (int dup = 0; dup < 2; dup++) {
        n = 0;
        buf[n++] = '{';
        for (i = 0; i < AEGIS_JSON_MAX_MEMBERS - dup; i++)
            n += (size_t)sprintf(buf + n, "%s\"\\u0078%d\":0", i ? "," : "", i);
        if (dup) n += (size_t)sprintf(buf + n, ",\"x%d\":0", AEGIS_JSON_MAX_MEMBERS / 2);
        buf[n++] = '}';
        CHECK_ST(plain(buf, n), dup ? AEGIS_E_JSON_DUPLICATE_KEY : AEGIS_OK, "escaped names");
    }
    free(buf);
}

/* ------------------------------------------------------------------------ */
/* Requested fields                                                          */

static void test_fields(void) {
    json_field f[F_N];

    /* Whitespace, order, unknown members with any value, escaped names. */
    CHECK_ST(msg(" {\n \"signature\" : \"s\" ,\"x\":{\"id\":\"inner\",\"y\":[1,{\"z\":null}]},"
                 "\t\"\\u0069d\":\"a\\u0062c\",\"timestamp\": 0 ,\"extra\":-1.5e9,\"type\":\"\"} ", f),
             AEGIS_OK, "whitespace");
    CHECK(field_is(&f[F_ID], "a\\u0062c"));
    CHECK(f[F_ID].has_escapes);
    CHECK(field_is(&f[F_TYPE], ""));
    CHECK(f[F_TIMESTAMP].present && f[F_TIMESTAMP].uint_value == 0);
    CHECK(field_is(&f[F_SIGNATURE], "s"));
    CHECK(!f[F_SIGNATURE].has_escapes);
    CHECK(!f[F_CHANNEL].present && !f[F_REF].present && !f[F_PAYLOAD].present && !f[F_NONCE].present);

    /* Only members of the root are reported. */
    CHECK_ST(msg("{\"x\":{\"id\":\"inner\",\"timestamp\":\"no\"},\"y\":[{\"id\":1}]}", f), AEGIS_OK,
             "nested id");
    CHECK(!f[F_ID].present && !f[F_TIMESTAMP].present);

    /* Names that only resemble requested ones. */
    CHECK_ST(msg("{\"ID\":1,\"id \":1,\"i\":1,\"idd\":1,\"\\u0069d\\u0000\":1}", f), AEGIS_OK, "near");
    CHECK(!f[F_ID].present);

    /* Integers */
    static const struct { const char *v; aegis_status want; uint64_t value; } ints[] = {
        { "0", AEGIS_OK, 0 },
        { "1", AEGIS_OK, 1 },
        { "1764211260", AEGIS_OK, 1764211260u },
        { "9223372036854775807", AEGIS_OK, 9223372036854775807u },
        { "9223372036854775808", AEGIS_E_INTEGER_RANGE, 0 },
        { "9999999999999999999", AEGIS_E_INTEGER_RANGE, 0 },
        { "18446744073709551615", AEGIS_E_INTEGER_RANGE, 0 },
        { "18446744073709551616", AEGIS_E_INTEGER_RANGE, 0 },
        { "100000000000000000000000000000", AEGIS_E_INTEGER_RANGE, 0 },
        { "-1", AEGIS_E_INTEGER_RANGE, 0 },
        { "-0", AEGIS_E_INTEGER_RANGE, 0 },
        { "-9223372036854775808", AEGIS_E_INTEGER_RANGE, 0 },
        { "1.0", AEGIS_E_FIELD_TYPE, 0 },
        { "0.0", AEGIS_E_FIELD_TYPE, 0 },
        { "1e3", AEGIS_E_FIELD_TYPE, 0 },
        { "1E3", AEGIS_E_FIELD_TYPE, 0 },
        { "1e+3", AEGIS_E_FIELD_TYPE, 0 },
        { "0e0", AEGIS_E_FIELD_TYPE, 0 },
        { "1.5e9", AEGIS_E_FIELD_TYPE, 0 },
        { "-1.5", AEGIS_E_FIELD_TYPE, 0 },
        { "-1e3", AEGIS_E_FIELD_TYPE, 0 },
        { "\"1\"", AEGIS_E_FIELD_TYPE, 0 },
        { "true", AEGIS_E_FIELD_TYPE, 0 },
        { "false", AEGIS_E_FIELD_TYPE, 0 },
        { "null", AEGIS_E_FIELD_TYPE, 0 },
        { "[1]", AEGIS_E_FIELD_TYPE, 0 },
        { "{}", AEGIS_E_FIELD_TYPE, 0 },
        { "01", AEGIS_E_JSON_SYNTAX, 0 },
        { "00", AEGIS_E_JSON_SYNTAX, 0 },
        { "+1", AEGIS_E_JSON_SYNTAX, 0 },
        { "1.", AEGIS_E_JSON_SYNTAX, 0 },
        { "0x1", AEGIS_E_JSON_SYNTAX, 0 },
    };
    char buf[256];
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(buf, sizeof buf, "{\"id\":\"x\",\"timestamp\":%s}", ints[i].v);
        CHECK_ST(msg(buf, f), ints[i].want, buf);
        if (ints[i].want == AEGIS_OK) {
            CHECK(f[F_TIMESTAMP].present && f[F_TIMESTAMP].uint_value == ints[i].value);
            CHECK(field_is(&f[F_TIMESTAMP], ints[i].v));
        }
        /* Unrequested, the same value is just a number (or a syntax error). */
        snprintf(buf, sizeof buf, "{\"id\":\"x\",\"time\":%s}", ints[i].v);
        CHECK_ST(msg(buf, f), ints[i].want == AEGIS_E_JSON_SYNTAX ? AEGIS_E_JSON_SYNTAX : AEGIS_OK, buf);
    }

    /* Strings of the wrong type */
    static const char *not_strings[] = { "1", "null", "true", "false", "[]", "[\"a\"]", "{}", "-0" };
    for (size_t i = 0; i < sizeof not_strings / sizeof not_strings[0]; i++) {
        snprintf(buf, sizeof buf, "{\"ref\":%s}", not_strings[i]);
        CHECK_ST(msg(buf, f), AEGIS_E_FIELD_TYPE, buf);
    }

    /* Order: the first wrong field in text order; structure first of all. */
    CHECK_ST(msg("{\"timestamp\":\"x\",\"id\":1}", f), AEGIS_E_FIELD_TYPE, "type first");
    CHECK_ST(msg("{\"timestamp\":-1,\"id\":1}", f), AEGIS_E_INTEGER_RANGE, "range first");
    CHECK_ST(msg("{\"id\":1,\"timestamp\":-1}", f), AEGIS_E_FIELD_TYPE, "type then range");
    CHECK_ST(msg("{\"timestamp\":\"x\",\"z\":01}", f), AEGIS_E_JSON_SYNTAX, "syntax after type");
    CHECK_ST(msg("{\"timestamp\":\"x\",\"z\":1,\"z\":2}", f), AEGIS_E_JSON_DUPLICATE_KEY, "dup after");
    CHECK_ST(msg("{\"timestamp\":1,\"timestamp\":2}", f), AEGIS_E_JSON_DUPLICATE_KEY, "dup field");
    CHECK_ST(msg("{\"timestamp\":1,\"\\u0074imestamp\":2}", f), AEGIS_E_JSON_DUPLICATE_KEY, "dup esc");
    CHECK_ST(msg("{\"timestamp\":\"x\"} x", f), AEGIS_E_JSON_SYNTAX, "trailing after type");
    CHECK_ST(msg("[{\"timestamp\":\"x\"}]", f), AEGIS_E_JSON_NOT_OBJECT, "not object");
    CHECK(!f[F_TIMESTAMP].present);

    /* ARRAY and ANY */
    static const json_field_spec other[] = {
        { "ids", JSON_FIELD_ARRAY }, { "code", JSON_FIELD_ANY }, { "message", JSON_FIELD_ANY },
    };
    json_field g[3];
    const char *t = "{\"ids\" : [ \"a\" , 1 ] ,\"code\":null,\"message\":\"m\\n\"}";
    CHECK_ST(json_read_object(t, strlen(t), other, 3, g), AEGIS_OK, t);
    CHECK(field_is(&g[0], "[ \"a\" , 1 ]"));
    CHECK(field_is(&g[1], "null"));
    CHECK(field_is(&g[2], "\"m\\n\""));
    CHECK(g[2].has_escapes);
    t = "{\"ids\":{\"a\":1}}";
    CHECK_ST(json_read_object(t, strlen(t), other, 3, g), AEGIS_E_FIELD_TYPE, t);
    t = "{\"ids\":\"[]\"}";
    CHECK_ST(json_read_object(t, strlen(t), other, 3, g), AEGIS_E_FIELD_TYPE, t);
    t = "{\"code\":{\"a\":[1,2]},\"message\":-1.5}";
    CHECK_ST(json_read_object(t, strlen(t), other, 3, g), AEGIS_OK, t);
    CHECK(field_is(&g[1], "{\"a\":[1,2]}"));
    CHECK(field_is(&g[2], "-1.5"));
    CHECK(!g[0].present);

    /* Caller errors */
    json_field many[33];
    json_field_spec specs33[33];
    for (int i = 0; i < 33; i++) specs33[i] = (json_field_spec){ "a", JSON_FIELD_ANY };
    CHECK_ST(json_read_object("{}", 2, specs33, 33, many), AEGIS_E_INVALID_ARGUMENT, "33 specs");
    CHECK_ST(json_read_object("{\"a\":1}", 7, specs33, 32, many), AEGIS_OK, "32 specs");
    CHECK(many[0].present && !many[1].present);     /* the first spec of a name gets it */
    CHECK_ST(json_read_object(NULL, 1, NULL, 0, NULL), AEGIS_E_INVALID_ARGUMENT, "NULL text");
    json_field_spec badkind = { "a", (json_kind)7 };
    CHECK_ST(json_read_object("{}", 2, &badkind, 1, many), AEGIS_E_INVALID_ARGUMENT, "bad kind");
}

/* ------------------------------------------------------------------------ */
/* json_unescape                                                             */

static void test_unescape(void) {
    char out[64];
    size_t n = 99;

#define UNESC(raw, want) do { \
    CHECK_STN(json_unescape(L(raw), out, sizeof out, &n), AEGIS_OK, raw, sizeof(raw) - 1); \
    CHECK_SIZE(n, sizeof(want) - 1); \
    CHECK(n == sizeof(want) - 1 && memcmp(out, want, n) == 0); \
} while (0)

    UNESC("", "");
    UNESC("plain text", "plain text");
    UNESC("\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t");
    UNESC("a\\u0062c", "abc");
    UNESC("\\u0000", "\0");
    UNESC("\\u00e9\\u00E9", "\xC3\xA9\xC3\xA9");
    UNESC("\\u07ff\\u0800", "\xDF\xBF\xE0\xA0\x80");
    UNESC("\\u20ac", "\xE2\x82\xAC");
    UNESC("\\uffff", "\xEF\xBF\xBF");
    UNESC("\\uD83D\\uDE00", "\xF0\x9F\x98\x80");
    UNESC("\\ud800\\udc00", "\xF0\x90\x80\x80");
    UNESC("\\uDBFF\\uDFFF", "\xF4\x8F\xBF\xBF");
    UNESC("x\xC3\xA9y\\n", "x\xC3\xA9y\n");
    UNESC("\\\\u0041", "\\u0041");

    /* Buffer sizes: exact fits, one short. */
    CHECK_ST(json_unescape(L("abc"), out, 3, &n), AEGIS_OK, "fit");
    CHECK_ST(json_unescape(L("abc"), out, 2, &n), AEGIS_E_BUFFER_TOO_SMALL, "short");
    CHECK_ST(json_unescape(L("ab\\n"), out, 3, &n), AEGIS_OK, "fit esc");
    CHECK_ST(json_unescape(L("ab\\n"), out, 2, &n), AEGIS_E_BUFFER_TOO_SMALL, "short esc");
    CHECK_ST(json_unescape(L("\\uD83D\\uDE00"), out, 4, &n), AEGIS_OK, "fit pair");
    CHECK_ST(json_unescape(L("\\uD83D\\uDE00"), out, 3, &n), AEGIS_E_BUFFER_TOO_SMALL, "short pair");
    CHECK_ST(json_unescape(L("\\u20ac"), out, 2, &n), AEGIS_E_BUFFER_TOO_SMALL, "short 3");
    CHECK_ST(json_unescape("", 0, NULL, 0, &n), AEGIS_OK, "empty into nothing");
    CHECK_SIZE(n, 0);
    CHECK_ST(json_unescape(L("a"), NULL, 0, &n), AEGIS_E_BUFFER_TOO_SMALL, "into nothing");

    /* Not validated input is refused rather than misread. */
    CHECK_ST(json_unescape(L("a\\"), out, sizeof out, &n), AEGIS_E_JSON_SYNTAX, "trailing \\");
    CHECK_ST(json_unescape(L("\\x"), out, sizeof out, &n), AEGIS_E_JSON_SYNTAX, "\\x");
    CHECK_ST(json_unescape(L("\\uD800"), out, sizeof out, &n), AEGIS_E_JSON_SYNTAX, "lone");
    CHECK_ST(json_unescape(L("\\u12"), out, sizeof out, &n), AEGIS_E_JSON_SYNTAX, "short hex");

    /* A reported field unescapes into raw_len bytes. */
    json_field f[F_N];
    const char *t = "{\"id\":\"a\\\"b\\u00e9\\uD83D\\uDE00\\\\\"}";
    CHECK_ST(msg(t, f), AEGIS_OK, t);
    CHECK(f[F_ID].has_escapes);
    CHECK_ST(json_unescape(f[F_ID].raw, f[F_ID].raw_len, out, f[F_ID].raw_len, &n), AEGIS_OK, t);
    CHECK_SIZE(n, 10);
    CHECK(memcmp(out, "a\"b\xC3\xA9\xF0\x9F\x98\x80\\", 10) == 0);
#undef UNESC
}

/* ------------------------------------------------------------------------ */
/* Arrays                                                                    */

static void test_arrays(void) {
    static const json_field_spec ids_spec = { "ids", JSON_FIELD_ARRAY };
    json_field f;
    json_array_iter it;
    const char *raw;
    size_t raw_len;
    bool esc, done;
    const char *t;

    t = "{\"ids\":[\"evt-0002\",\"evt-0003\",\"evt-0004\"]}";
    CHECK_ST(json_read_object(t, strlen(t), &ids_spec, 1, &f), AEGIS_OK, t);
    json_array_begin(&it, f.raw, f.raw_len);
    static const char *want[] = { "evt-0002", "evt-0003", "evt-0004" };
    for (int i = 0; i < 3; i++) {
        CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_OK, want[i]);
        CHECK(!done && !esc && raw_len == 8 && memcmp(raw, want[i], 8) == 0);
    }
    CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_OK, "end");
    CHECK(done);
    CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_OK, "end again");
    CHECK(done);

    /* Whitespace, escapes, quotes, commas and brackets inside strings. */
    t = "{\"ids\" : [ \"a\" ,\n\"b\\\"c\" , \"d\\\\\",\"],[,\" , \"\" ,\"\\u0065\"\t] }";
    CHECK_ST(json_read_object(t, strlen(t), &ids_spec, 1, &f), AEGIS_OK, t);
    json_array_begin(&it, f.raw, f.raw_len);
    static const struct { const char *raw; bool esc; } w2[] = {
        { "a", false }, { "b\\\"c", true }, { "d\\\\", true }, { "],[,", false }, { "", false },
        { "\\u0065", true },
    };
    for (size_t i = 0; i < sizeof w2 / sizeof w2[0]; i++) {
        CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_OK, w2[i].raw);
        CHECK(!done && esc == w2[i].esc && raw_len == strlen(w2[i].raw) &&
              memcmp(raw, w2[i].raw, raw_len) == 0);
        CHECK_SIZE(it.index, i + 1);
    }
    CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_OK, "end");
    CHECK(done);

    /* Empty arrays. */
    static const char *empties[] = { "{\"ids\":[]}", "{\"ids\":[ \n ]}" };
    for (int i = 0; i < 2; i++) {
        CHECK_ST(json_read_object(empties[i], strlen(empties[i]), &ids_spec, 1, &f), AEGIS_OK, empties[i]);
        json_array_begin(&it, f.raw, f.raw_len);
        CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_OK, empties[i]);
        CHECK(done);
    }

    /* Elements that are not strings: first or later; the error repeats. */
    static const char *bad[] = {
        "{\"ids\":[1]}", "{\"ids\":[null]}", "{\"ids\":[[\"a\"]]}", "{\"ids\":[{\"a\":\"b\"}]}",
        "{\"ids\":[\"a\",true]}", "{\"ids\":[\"a\", \"b\" , -1]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_ST(json_read_object(bad[i], strlen(bad[i]), &ids_spec, 1, &f), AEGIS_OK, bad[i]);
        json_array_begin(&it, f.raw, f.raw_len);
        aegis_status st;
        int strings = 0;
        while ((st = json_array_next_string(&it, &raw, &raw_len, &esc, &done)) == AEGIS_OK && !done)
            strings++;
        CHECK_ST(st, AEGIS_E_FIELD_TYPE, bad[i]);
        CHECK(!done);
        CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_E_FIELD_TYPE, bad[i]);
        CHECK_SIZE(strings, (int)i < 4 ? 0 : (int)i - 3);
    }

    /* A span that is not an array. */
    json_array_begin(&it, "\"a\"", 3);
    CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_E_FIELD_TYPE, "string");
    json_array_begin(&it, NULL, 0);
    CHECK_ST(json_array_next_string(&it, &raw, &raw_len, &esc, &done), AEGIS_E_FIELD_TYPE, "NULL");
}

/* ------------------------------------------------------------------------ */
/* Large strings                                                             */

static void test_large(void) {
    size_t plen = 1400 * 1024;
    char *buf = malloc(plen + 64);
    size_t n = (size_t)sprintf(buf, "{\"id\":\"x\",\"payload\":\"");
    for (size_t i = 0; i < plen; i++) buf[n + i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64];
    n += plen;
    n += (size_t)sprintf(buf + n, "\",\"timestamp\":1}");
    json_field f[F_N];
    CHECK_ST(json_read_object(buf, n, msg_spec, F_N, f), AEGIS_OK, "1.4 MB payload");
    CHECK(f[F_PAYLOAD].present && f[F_PAYLOAD].raw_len == plen && !f[F_PAYLOAD].has_escapes);
    /* A bad byte near the end of the big string is still found. */
    buf[n - 20] = (char)0x80;
    CHECK_ST(json_read_object(buf, n, msg_spec, F_N, f), AEGIS_E_JSON_SYNTAX, "bad byte at end");
    buf[n - 20] = 'A';
    buf[21 + plen / 2] = '\x1f';
    CHECK_ST(json_read_object(buf, n, msg_spec, F_N, f), AEGIS_E_JSON_SYNTAX, "control in middle");
    free(buf);
}

int main(void) {
    test_vectors();
    test_grammar();
    test_escapes();
    test_utf8();
    test_strides();
    test_duplicates();
    test_depth();
    test_members();
    test_fields();
    test_unescape();
    test_arrays();
    test_large();
    return check_summary();
}
