/*
 * test_http.c — unit test of the upgrade's HTTP heads (CSources/AegisIO/src/http.c).
 *
 * Build and run (from the repository root):
 *   cc -std=gnu17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
 *      -I CSources/AegisCore/include -I CSources/AegisIO/src -I Tests/CoreC \
 *      CSources/AegisIO/src/http.c CSources/AegisCore/src/b64.c Tests/CoreC/test_http.c \
 *      -lcrypto -o /tmp/test_http && /tmp/test_http
 *
 * Every input is copied into a malloc'd buffer of its exact length before it
 * is parsed, so that the sanitizer catches a read one byte past the end —
 * the classic bug of incremental parsers, and the one the need-more paths
 * are most likely to have.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "http.h"

/* CHECK with a formatted message, for loops that must say which case failed. */

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static char *dup_exact(const char *s, size_t n) {
    char *p = malloc(n ? n : 1);
    if (!p) abort();
    memcpy(p, s, n);
    return p;
}

/* Parses the first n bytes of s as a request, from an exact-size copy. */
static int req_n(const char *s, size_t n, http_request *r, size_t max) {
    char *b = dup_exact(s, n);
    int rc = http_parse_request(b, n, r, max);
    /* Spans point into b: re-point them at s so that callers may read them. */
    if (rc > 0) {
        r->method = s + (r->method - b);
        r->path = s + (r->path - b);
        for (size_t i = 0; i < r->num_headers; i++) {
            r->headers[i].name = s + (r->headers[i].name - b);
            r->headers[i].value = s + (r->headers[i].value - b);
        }
    }
    free(b);
    return rc;
}

static int req(const char *s, http_request *r) { return req_n(s, strlen(s), r, HTTP_MAX_HEADERS); }

static int req_rc(const char *s) {
    http_request r;
    return req(s, &r);
}

static int res_n(const char *s, size_t n, http_response_head *r) {
    char *b = dup_exact(s, n);
    int rc = http_parse_response(b, n, r, HTTP_MAX_HEADERS);
    if (rc > 0)
        for (size_t i = 0; i < r->num_headers; i++) {
            r->headers[i].name = s + (r->headers[i].name - b);
            r->headers[i].value = s + (r->headers[i].value - b);
        }
    free(b);
    return rc;
}

static int res(const char *s, http_response_head *r) { return res_n(s, strlen(s), r); }

static bool span_is(const char *p, size_t n, const char *want) {
    return n == strlen(want) && memcmp(p, want, n) == 0;
}

#define CHECK_SPAN(p, n, want) CHECKF(span_is((p), (n), (want)), "%s = \"%.*s\", want \"%s\"", #p, (int)(n), (p), (want))

/* A head with `n` headers "H<i>: v". */
static size_t head_with_headers(char *out, size_t cap, size_t n) {
    size_t len = (size_t)snprintf(out, cap, "GET /ws/agent HTTP/1.1\r\n");
    for (size_t i = 0; i < n; i++) len += (size_t)snprintf(out + len, cap - len, "H%zu: v\r\n", i);
    len += (size_t)snprintf(out + len, cap - len, "\r\n");
    return len;
}

/* A head of exactly `total` bytes: one long header padded to fit. */
static size_t head_of_size(char *out, size_t total) {
    const char *start = "GET /ws/agent HTTP/1.1\r\nX-Pad: ";
    const char *tail = "\r\n\r\n";
    size_t a = strlen(start), b = strlen(tail);
    memcpy(out, start, a);
    memset(out + a, 'p', total - a - b);
    memcpy(out + total - b, tail, b);
    return total;
}

static const char agent_head[] =
    "GET /ws/agent HTTP/1.1\r\n"
    "Host: gateway.example.com:8443\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "X-Agent-ID: agent-7f3a.prod@site-1\r\n"
    "X-Agent-Public-Key: aIjOH4nFJXPii4I0525i2qs2DsEjZXZ2dqtwmd5YhGs=\r\n"
    "User-Agent: Aegis-Agent/1.0 (linux; x86_64)\r\n"
    "X-Enrollment-Token: 3q2-7wAAAAC_ZW5yb2xsbWVudC10b2tlbi1leGFtcGxl\r\n"
    "Accept-Encoding: identity\r\n"
    "\r\n";

static const char switching[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    "\r\n";

/* ------------------------------------------------------------------------ */
/* Sec-WebSocket-Accept                                                      */

static void test_accept(void) {
    char out[29] = { 0 };
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    http_websocket_accept(key, strlen(key), out);
    CHECK_EQ_MEM(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 28);
    CHECK(out[28] == 0);   /* exactly 28 bytes written */

    /* A second, independently computed value (printf … | sha1sum | base64). */
    key = "x3JJHMbDL1EzLkh9GBhXDw==";
    http_websocket_accept(key, strlen(key), out);
    CHECK_EQ_MEM(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=", 28);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

static void test_complete_head(void) {
    http_request r;
    size_t n = strlen(agent_head);
    CHECK_EQ_INT(req(agent_head, &r), n);
    CHECK_SPAN(r.method, r.method_len, "GET");
    CHECK_SPAN(r.path, r.path_len, "/ws/agent");
    CHECK_EQ_INT(r.minor_version, 1);
    CHECK_EQ_INT(r.num_headers, 10);
    CHECK_SPAN(r.headers[0].name, r.headers[0].name_len, "Host");
    CHECK_SPAN(r.headers[0].value, r.headers[0].value_len, "gateway.example.com:8443");
    CHECK_SPAN(r.headers[3].name, r.headers[3].name_len, "Sec-WebSocket-Key");
    CHECK_SPAN(r.headers[3].value, r.headers[3].value_len, "dGhlIHNhbXBsZSBub25jZQ==");
    CHECK_SPAN(r.headers[6].value, r.headers[6].value_len,
               "aIjOH4nFJXPii4I0525i2qs2DsEjZXZ2dqtwmd5YhGs=");
    CHECK_SPAN(r.headers[7].value, r.headers[7].value_len, "Aegis-Agent/1.0 (linux; x86_64)");
    CHECK_SPAN(r.headers[9].name, r.headers[9].name_len, "Accept-Encoding");

    /* Bytes after the head (a pipelined frame) are not part of it. */
    char buf[1024];
    snprintf(buf, sizeof buf, "%s\x81\x85garbage", agent_head);
    CHECK_EQ_INT(req(buf, &r), n);

    /* A query string is part of the path; the core ignores it. */
    CHECK_EQ_INT(req("GET /ws/agent?v=1&x=%20 HTTP/1.1\r\nHost: a\r\n\r\n", &r), 45);
    CHECK_SPAN(r.path, r.path_len, "/ws/agent?v=1&x=%20");

    /* No headers at all, and other token methods. */
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\n\r\n", &r), 18);
    CHECK_EQ_INT(r.num_headers, 0);
    CHECK_EQ_INT(req("M-SEARCH! /x HTTP/1.1\r\n\r\n", &r), 25);
    CHECK_SPAN(r.method, r.method_len, "M-SEARCH!");

    /* One empty line before the request line is tolerated (RFC 9112 §2.2),
     * two are not. */
    CHECK_EQ_INT(req("\r\nGET / HTTP/1.1\r\n\r\n", &r), 20);
    CHECK_EQ_INT(req("\nGET / HTTP/1.1\r\n\r\n", &r), 19);
    CHECK_EQ_INT(req_rc("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);

    /* Nothing at all yet. */
    CHECK_EQ_INT(http_parse_request("", 0, &r, HTTP_MAX_HEADERS), HTTP_NEED_MORE);
}

/* Every proper prefix is need-more; the whole, and anything longer, is the head. */
static void check_prefixes(const char *head, bool response) {
    size_t n = strlen(head);
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        http_request r;
        http_response_head s;
        int rc = response ? res_n(head, k, &s) : req_n(head, k, &r, HTTP_MAX_HEADERS);
        if (rc != HTTP_NEED_MORE && bad++ < 3)
            CHECKF(false, "prefix %zu of %zu bytes: got %d, want need-more", k, n, rc);
    }
    CHECKF(bad == 0, "%d prefixes were not need-more", bad);
    http_request r;
    http_response_head s;
    CHECK_EQ_INT(response ? res_n(head, n, &s) : req_n(head, n, &r, HTTP_MAX_HEADERS), n);
}

static void test_prefixes(void) {
    check_prefixes(agent_head, false);
    check_prefixes("\r\nGET / HTTP/1.1\nA:\nB: \t\n\n", false);
    check_prefixes("GET /x?y HTTP/1.2\r\nA:b\r\nC:   d  e  \r\n\r\n", false);
    check_prefixes(switching, true);
    check_prefixes("HTTP/1.1 429\nRetry-After: 3\n\n", true);
    check_prefixes("HTTP/1.1 503 \r\n\r\n", true);
}

static void test_trimming(void) {
    http_request r;
    CHECK(req("GET / HTTP/1.1\r\n"
              "A:  \t v a l \t \r\n"
              "B:\r\n"
              "C: \t \r\n"
              "D:x\r\n"
              "E: \xc3\xa9t\xe9\xff \r\n"
              "F:\tin\tside\t\r\n"
              "\r\n", &r) > 0);
    CHECK_EQ_INT(r.num_headers, 6);
    CHECK_SPAN(r.headers[0].value, r.headers[0].value_len, "v a l");
    CHECK_EQ_INT(r.headers[1].value_len, 0);
    CHECK_EQ_INT(r.headers[2].value_len, 0);
    CHECK_SPAN(r.headers[3].value, r.headers[3].value_len, "x");
    /* obs-text (bytes ≥ 0x80) is allowed in values, as RFC 9110 §5.5 keeps it. */
    CHECK_SPAN(r.headers[4].value, r.headers[4].value_len, "\xc3\xa9t\xe9\xff");
    CHECK_SPAN(r.headers[5].value, r.headers[5].value_len, "in\tside");
    for (size_t i = 0; i < r.num_headers; i++) {
        const aegis_http_header *h = &r.headers[i];
        if (h->value_len == 0) continue;
        CHECK(h->value[0] != ' ' && h->value[0] != '\t');
        CHECK(h->value[h->value_len - 1] != ' ' && h->value[h->value_len - 1] != '\t');
    }
    /* Names are as received. */
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nsEC-webSOCKET-key: k\r\n\r\n", &r), 40);
    CHECK_SPAN(r.headers[0].name, r.headers[0].name_len, "sEC-webSOCKET-key");
}

static void test_line_ends(void) {
    http_request r;
    /* Bare LF everywhere, and mixed with CRLF. */
    CHECK_EQ_INT(req("GET / HTTP/1.1\nHost: a\nX: b \n\n", &r), 30);
    CHECK_EQ_INT(r.num_headers, 2);
    CHECK_SPAN(r.headers[1].value, r.headers[1].value_len, "b");
    CHECK_EQ_INT(req("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\n", &r), 31);
    CHECK_EQ_INT(req("GET / HTTP/1.1\nHost: a\r\n\r\n", &r), 26);

    /* A CR that is not followed by LF is no line end. */
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\rHost: a\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\n\r\r"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET /\r HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    /* A CR at the very end may still become CRLF. */
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost: a\r\n\r"), HTTP_NEED_MORE);
}

static void test_obs_fold(void) {
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\nX: a\n b\n\n"), HTTP_ERR_SYNTAX);
    /* Whitespace before the first field (RFC 9112 §2.2). */
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), HTTP_ERR_SYNTAX);
    /* A line of only whitespace is not the empty line. */
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n"), HTTP_ERR_SYNTAX);
    /* Known as soon as the SP arrives. */
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nX: a\r\n "), HTTP_ERR_SYNTAX);
    http_response_head s;
    CHECK_EQ_INT(res("HTTP/1.1 101 OK\r\nX: a\r\n b\r\n\r\n", &s), HTTP_ERR_SYNTAX);
}

static void test_control_chars(void) {
    char buf[64];
    int bad = 0;
    /* Every CTL but HTAB (and the CR, LF that end lines), and DEL, refused in
     * a value, in a name, in the path and in the method. */
    for (int c = 0; c < 0x80; c++) {
        if (!(c < 0x20 || c == 0x7F) || c == '\t' || c == '\r' || c == '\n') continue;
        const char *forms[] = { "GET / HTTP/1.1\r\nX: a%cb\r\n\r\n", "GET / HTTP/1.1\r\nX%c: ab\r\n\r\n",
                                "GET /%c HTTP/1.1\r\n\r\n", "G%cT / HTTP/1.1\r\n\r\n",
                                "GET / HTTP/1.1\r\nX: ab%c\r\n\r\n" };
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            const char *pct = strstr(forms[f], "%c");
            size_t a = (size_t)(pct - forms[f]), n = strlen(forms[f]) - 1;
            memcpy(buf, forms[f], a);
            buf[a] = (char)c;
            memcpy(buf + a + 1, pct + 2, n - a - 1);
            http_request r;
            int rc = req_n(buf, n, &r, HTTP_MAX_HEADERS);
            if (rc != HTTP_ERR_SYNTAX && bad++ < 5)
                CHECKF(false, "0x%02x in form %zu: got %d, want syntax error", c, f, rc);
        }
    }
    CHECKF(bad == 0, "%d control characters were accepted", bad);

    /* Embedded NUL, given with an explicit length. */
    static const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    http_request r;
    CHECK_EQ_INT(req_n(nul, sizeof nul - 1, &r, HTTP_MAX_HEADERS), HTTP_ERR_SYNTAX);
    /* HTAB is allowed inside a value, and bytes ≥ 0x80 (obs-text). */
    CHECK(req_rc("GET / HTTP/1.1\r\nX: a\tb\x80\xfe\r\n\r\n") > 0);
    /* …but not in the path, which must be ASCII (RFC 3986). */
    CHECK_EQ_INT(req_rc("GET /\xc3\xa9 HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
}

static void test_names_and_request_line(void) {
    /* Field names: token, then the colon at once (RFC 9112 §5.1). */
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\n: a\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nHost a\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1\r\nH\xc3\xa9: a\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK(req_rc("GET / HTTP/1.1\r\nX-!#$%&'*+.^_`|~0: a\r\n\r\n") > 0);

    /* Request line: single SPs, token method. */
    CHECK_EQ_INT(req_rc(" / HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET  / HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET /  HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET\t/ HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1 \r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("G{T / HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET /\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET\r\n\r\n"), HTTP_ERR_SYNTAX);

    /* Only origin-form targets. */
    CHECK_EQ_INT(req_rc("GET http://gw.example.com/ws/agent HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET https://gw/ws/agent HTTP/1.1\r\nHost: gw\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("OPTIONS * HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("CONNECT gw.example.com:443 HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET ws/agent HTTP/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    /* Refused as soon as the first byte of the target is seen. */
    CHECK_EQ_INT(req_rc("GET h"), HTTP_ERR_SYNTAX);
}

static void test_versions(void) {
    http_request r;
    CHECK(req("GET / HTTP/1.1\r\n\r\n", &r) > 0);
    CHECK_EQ_INT(r.minor_version, 1);
    /* A later 1.x is answered as 1.1 (RFC 9110 §2.5). */
    CHECK(req("GET / HTTP/1.9\r\n\r\n", &r) > 0);
    CHECK_EQ_INT(r.minor_version, 9);

    CHECK_EQ_INT(req_rc("GET / HTTP/1.0\r\n\r\n"), HTTP_ERR_VERSION);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.0\r\nHost: a\r\n"), HTTP_ERR_VERSION);  /* before the end */
    CHECK_EQ_INT(req_rc("GET / HTTP/2.0\r\n\r\n"), HTTP_ERR_VERSION);
    CHECK_EQ_INT(req_rc("GET / HTTP/0.9\r\n\r\n"), HTTP_ERR_VERSION);
    CHECK_EQ_INT(req_rc("GET / HTTP/3.0\r\n\r\n"), HTTP_ERR_VERSION);

    CHECK_EQ_INT(req_rc("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/2\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.10\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/11.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / http/1.1\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1x\r\n\r\n"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTQ"), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(req_rc("GET / HTTP/1.1"), HTTP_NEED_MORE);
}

static void test_header_count(void) {
    static char buf[4096];
    http_request r;
    size_t n = head_with_headers(buf, sizeof buf, 64);
    CHECK_EQ_INT(req_n(buf, n, &r, HTTP_MAX_HEADERS), n);
    CHECK_EQ_INT(r.num_headers, 64);
    CHECK_SPAN(r.headers[63].name, r.headers[63].name_len, "H63");

    n = head_with_headers(buf, sizeof buf, 65);
    CHECK_EQ_INT(req_n(buf, n, &r, HTTP_MAX_HEADERS), HTTP_ERR_TOO_MANY);
    /* A max above the array's size is the array's size. */
    CHECK_EQ_INT(req_n(buf, n, &r, 1000), HTTP_ERR_TOO_MANY);
    /* Refused as soon as the 65th starts, before the head ends. */
    const char *h64 = strstr(buf, "H64:");
    CHECK_EQ_INT(req_n(buf, (size_t)(h64 - buf) + 1, &r, HTTP_MAX_HEADERS), HTTP_ERR_TOO_MANY);
    CHECK_EQ_INT(req_n(buf, (size_t)(h64 - buf), &r, HTTP_MAX_HEADERS), HTTP_NEED_MORE);

    /* A smaller caller limit. */
    n = head_with_headers(buf, sizeof buf, 3);
    CHECK_EQ_INT(req_n(buf, n, &r, 3), n);
    CHECK_EQ_INT(req_n(buf, n, &r, 2), HTTP_ERR_TOO_MANY);
    CHECK_EQ_INT(req_n(buf, n, &r, 0), HTTP_ERR_TOO_MANY);
    n = head_with_headers(buf, sizeof buf, 0);
    CHECK_EQ_INT(req_n(buf, n, &r, 0), n);
}

static void test_head_size(void) {
    static char buf[HTTP_MAX_HEAD + 1024];
    http_request r;
    size_t n = head_of_size(buf, HTTP_MAX_HEAD);
    CHECK_EQ_INT(req_n(buf, n, &r, HTTP_MAX_HEADERS), HTTP_MAX_HEAD);
    CHECK_EQ_INT(r.headers[0].value_len, HTTP_MAX_HEAD - 35);
    /* With more bytes behind it, still complete. */
    memset(buf + n, 'z', 500);
    CHECK_EQ_INT(req_n(buf, n + 500, &r, HTTP_MAX_HEADERS), HTTP_MAX_HEAD);

    n = head_of_size(buf, HTTP_MAX_HEAD + 1);
    CHECK_EQ_INT(req_n(buf, n, &r, HTTP_MAX_HEADERS), HTTP_ERR_TOO_LARGE);
    /* Its first 8192 bytes may still become a head: need-more… */
    CHECK_EQ_INT(req_n(buf, HTTP_MAX_HEAD, &r, HTTP_MAX_HEADERS), HTTP_NEED_MORE);
    /* …one byte more, and they cannot. */
    CHECK_EQ_INT(req_n(buf, HTTP_MAX_HEAD + 1, &r, HTTP_MAX_HEADERS), HTTP_ERR_TOO_LARGE);

    /* An endless header: refused as soon as 8193 bytes are buffered. */
    n = head_of_size(buf, sizeof buf);
    CHECK_EQ_INT(req_n(buf, HTTP_MAX_HEAD + 1, &r, HTTP_MAX_HEADERS), HTTP_ERR_TOO_LARGE);
    CHECK_EQ_INT(req_n(buf, sizeof buf - 10, &r, HTTP_MAX_HEADERS), HTTP_ERR_TOO_LARGE);
    /* A syntax error within the limit is reported as such. */
    buf[40] = '\x01';
    CHECK_EQ_INT(req_n(buf, sizeof buf - 10, &r, HTTP_MAX_HEADERS), HTTP_ERR_SYNTAX);

    /* The same limit for responses. */
    http_response_head s;
    memcpy(buf, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(buf + 20, 'p', HTTP_MAX_HEAD);
    CHECK_EQ_INT(res_n(buf, HTTP_MAX_HEAD, &s), HTTP_NEED_MORE);
    CHECK_EQ_INT(res_n(buf, HTTP_MAX_HEAD + 1, &s), HTTP_ERR_TOO_LARGE);
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */

static void test_responses(void) {
    http_response_head s;
    CHECK_EQ_INT(res(switching, &s), strlen(switching));
    CHECK_EQ_INT(s.status, 101);
    CHECK_EQ_INT(s.minor_version, 1);
    CHECK_EQ_INT(s.num_headers, 3);
    CHECK_SPAN(s.headers[0].name, s.headers[0].name_len, "Upgrade");
    CHECK_SPAN(s.headers[0].value, s.headers[0].value_len, "websocket");
    CHECK_SPAN(s.headers[2].name, s.headers[2].name_len, "Sec-WebSocket-Accept");
    CHECK_SPAN(s.headers[2].value, s.headers[2].value_len, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    /* A refusal with its body: the head ends at the blank line. */
    const char *refusal = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}";
    CHECK_EQ_INT(res(refusal, &s), strlen(refusal) - 2);
    CHECK_EQ_INT(s.status, 429);

    /* The reason may be empty or absent. */
    CHECK_EQ_INT(res("HTTP/1.1 101 \r\n\r\n", &s), 17);
    CHECK_EQ_INT(res("HTTP/1.1 101\r\n\r\n", &s), 16);
    CHECK_EQ_INT(res("HTTP/1.1 503 Service\tUnavailable \xe9\n\n", &s), 36);
    CHECK_EQ_INT(s.status, 503);

    CHECK_EQ_INT(res("HTTP/1.0 101 Switching Protocols\r\n\r\n", &s), HTTP_ERR_VERSION);
    CHECK_EQ_INT(res("HTTP/2.0 101 X\r\n\r\n", &s), HTTP_ERR_VERSION);
    CHECK_EQ_INT(res("HTTP/1.1 1011 X\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1 10 X\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1 099 X\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1 600 X\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1 1a1 X\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1  101 X\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1 101 X\x01\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1 101 X\rY\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("\r\nHTTP/1.1 101 X\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("GET / HTTP/1.1\r\n\r\n", &s), HTTP_ERR_SYNTAX);
    CHECK_EQ_INT(res("HTTP/1.1 101 X\r\nA : b\r\n\r\n", &s), HTTP_ERR_SYNTAX);

    /* Header limits as for requests. */
    static char buf[4096];
    size_t n = (size_t)snprintf(buf, sizeof buf, "HTTP/1.1 101 X\r\n");
    for (int i = 0; i < 65; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "H%d: v\r\n", i);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\r\n");
    CHECK_EQ_INT(res_n(buf, n, &s), HTTP_ERR_TOO_MANY);
    CHECK_EQ_INT(http_parse_response(switching, strlen(switching), &s, 2), HTTP_ERR_TOO_MANY);
}

/* ------------------------------------------------------------------------ */
/* Writers                                                                   */

/* Every cap below the length gives 0, the exact cap the text. */
static void check_short_caps(size_t (*write)(char *, size_t, const void *), const void *arg,
                             const char *want) {
    size_t n = strlen(want);
    int bad = 0;
    for (size_t cap = 0; cap < n; cap++) {
        char *b = malloc(cap ? cap : 1);
        size_t got = write(cap ? b : NULL, cap, arg);
        if (got != 0 && bad++ < 3) CHECKF(false, "cap %zu of %zu: wrote %zu", cap, n, got);
        free(b);
    }
    CHECKF(bad == 0, "%d short caps were not refused", bad);
    char *b = malloc(n);
    CHECK_EQ_INT(write(b, n, arg), n);
    CHECK_EQ_MEM(b, want, n);
    free(b);
}

static size_t write_101(char *out, size_t cap, const void *arg) {
    return http_write_switching(out, cap, arg);
}

static const char *const retry_after[] = { "Retry-After: 30" };

static size_t write_429(char *out, size_t cap, const void *arg) {
    return http_write_error(out, cap, 429, "rate_limited", arg, retry_after, 1);
}

static const char want_429[] =
    "HTTP/1.1 429 Too Many Requests\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 71\r\n"
    "Connection: close\r\n"
    "Retry-After: 30\r\n"
    "\r\n"
    "{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many upgrade requests\"}}";

static void test_write_switching(void) {
    char accept[28];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    http_websocket_accept(key, strlen(key), accept);
    check_short_caps(write_101, accept, switching);
    /* What we write, we read. */
    char buf[256];
    size_t n = http_write_switching(buf, sizeof buf, accept);
    http_response_head s;
    CHECK_EQ_INT(res_n(buf, n, &s), n);
    CHECK_EQ_INT(s.status, 101);
}

static void test_write_error(void) {
    check_short_caps(write_429, "too many upgrade requests", want_429);
    CHECK_EQ_INT(strlen("{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many upgrade requests\"}}"), 71);

    char buf[1024];
    http_response_head s;
    size_t n = http_write_error(buf, sizeof buf, 429, "rate_limited", "too many upgrade requests",
                                retry_after, 1);
    CHECK_EQ_INT(res_n(buf, n, &s), n - 71);
    CHECK_EQ_INT(s.status, 429);
    CHECK_EQ_INT(s.num_headers, 4);
    CHECK_SPAN(s.headers[1].value, s.headers[1].value_len, "71");
    CHECK_SPAN(s.headers[3].name, s.headers[3].name_len, "Retry-After");

    /* Every status the gateway answers has its reason. */
    static const struct { int status; const char *line; } lines[] = {
        { 400, "HTTP/1.1 400 Bad Request\r\n" },
        { 403, "HTTP/1.1 403 Forbidden\r\n" },
        { 404, "HTTP/1.1 404 Not Found\r\n" },
        { 405, "HTTP/1.1 405 Method Not Allowed\r\n" },
        { 426, "HTTP/1.1 426 Upgrade Required\r\n" },
        { 429, "HTTP/1.1 429 Too Many Requests\r\n" },
        { 431, "HTTP/1.1 431 Request Header Fields Too Large\r\n" },
        { 500, "HTTP/1.1 500 Internal Server Error\r\n" },
        { 503, "HTTP/1.1 503 Service Unavailable\r\n" },
        { 505, "HTTP/1.1 505 HTTP Version Not Supported\r\n" },
        { 418, "HTTP/1.1 418 \r\n" },     /* unknown: empty reason, still valid */
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        n = http_write_error(buf, sizeof buf, lines[i].status, "c", "m", NULL, 0);
        CHECKF(n > strlen(lines[i].line) && memcmp(buf, lines[i].line, strlen(lines[i].line)) == 0,
               "status %d: %.40s", lines[i].status, buf);
        CHECK(res_n(buf, n, &s) > 0 && s.status == lines[i].status);
    }
    /* 405 with Allow, 426 with Sec-WebSocket-Version, NULL entries skipped. */
    const char *const extra[] = { "Allow: GET", NULL, "X-Empty:" };
    n = http_write_error(buf, sizeof buf, 405, "method_not_allowed", "use GET", extra, 3);
    const char want_405[] =
        "HTTP/1.1 405 Method Not Allowed\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 59\r\n"
        "Connection: close\r\n"
        "Allow: GET\r\n"
        "X-Empty:\r\n"
        "\r\n"
        "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"use GET\"}}";
    CHECK_EQ_INT(n, strlen(want_405));
    CHECK_EQ_MEM(buf, want_405, strlen(want_405));

    /* Escaping: quote, backslash, the short escapes, other controls and
     * DEL as \u00XX, UTF-8 kept, bytes outside UTF-8 replaced by U+FFFD. */
    const char *msg = "a\"b\\c/\b\f\n\r\t\x01\x1f\x7f \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                      "|\xff|\xc3|\xed\xa0\x80|\xc0\xaf|\xf4\x90\x80\x80|";
    const char *want_body =
        "{\"error\":{\"code\":\"x\\\"y\",\"message\":\"a\\\"b\\\\c/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f "
        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\\ufffd|\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd|"
        "\\ufffd\\ufffd\\ufffd\\ufffd|\"}}";
    n = http_write_error(buf, sizeof buf, 400, "x\"y", msg, NULL, 0);
    CHECK(n > 0);
    int head = res_n(buf, n, &s);
    CHECK(head > 0);
    size_t body_len = n - (size_t)head;
    CHECK_EQ_INT(body_len, strlen(want_body));
    CHECK_EQ_MEM(buf + head, want_body, strlen(want_body));
    char cl[16];
    snprintf(cl, sizeof cl, "%zu", body_len);
    CHECK_SPAN(s.headers[1].value, s.headers[1].value_len, cl);

    /* NULL code / message are empty strings. */
    n = http_write_error(buf, sizeof buf, 500, NULL, NULL, NULL, 0);
    CHECK(n > 0 && memcmp(buf + n - 34, "{\"error\":{\"code\":\"\",\"message\":\"\"}}", 34) == 0);

    /* Arguments that would break the response. */
    const char *const split[] = { "X-A: 1\r\nX-B: 2" };
    const char *const bad_name[] = { "Bad Name: 1" };
    const char *const no_colon[] = { "Allow GET" };
    const char *const ctl[] = { "X: a\x01" };
    CHECK_EQ_INT(http_write_error(buf, sizeof buf, 429, "c", "m", split, 1), 0);
    CHECK_EQ_INT(http_write_error(buf, sizeof buf, 429, "c", "m", bad_name, 1), 0);
    CHECK_EQ_INT(http_write_error(buf, sizeof buf, 429, "c", "m", no_colon, 1), 0);
    CHECK_EQ_INT(http_write_error(buf, sizeof buf, 429, "c", "m", ctl, 1), 0);
    CHECK_EQ_INT(http_write_error(buf, sizeof buf, 99, "c", "m", NULL, 0), 0);
    CHECK_EQ_INT(http_write_error(buf, sizeof buf, 600, "c", "m", NULL, 0), 0);
}

static const char *const upgrade_extra[] = {
    "X-Agent-ID: agent-1",
    "X-Agent-Public-Key: aIjOH4nFJXPii4I0525i2qs2DsEjZXZ2dqtwmd5YhGs=",
    "User-Agent: Aegis-Agent/1.0",
};

static size_t write_upgrade(char *out, size_t cap, const void *arg) {
    (void)arg;
    return http_write_upgrade_request(out, cap, "gw.example.com:8443", "/ws/agent",
                                      "dGhlIHNhbXBsZSBub25jZQ==", upgrade_extra, 3);
}

static void test_write_upgrade(void) {
    const char want[] =
        "GET /ws/agent HTTP/1.1\r\n"
        "Host: gw.example.com:8443\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "X-Agent-ID: agent-1\r\n"
        "X-Agent-Public-Key: aIjOH4nFJXPii4I0525i2qs2DsEjZXZ2dqtwmd5YhGs=\r\n"
        "User-Agent: Aegis-Agent/1.0\r\n"
        "\r\n";
    check_short_caps(write_upgrade, NULL, want);

    char buf[512];
    size_t n = write_upgrade(buf, sizeof buf, NULL);
    http_request r;
    CHECK_EQ_INT(req_n(buf, n, &r, HTTP_MAX_HEADERS), n);
    CHECK_SPAN(r.path, r.path_len, "/ws/agent");
    CHECK_EQ_INT(r.num_headers, 8);

    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK_EQ_INT(http_write_upgrade_request(buf, sizeof buf, "gw", "ws/agent", key, NULL, 0), 0);
    CHECK_EQ_INT(http_write_upgrade_request(buf, sizeof buf, "gw", "/a b", key, NULL, 0), 0);
    CHECK_EQ_INT(http_write_upgrade_request(buf, sizeof buf, "gw", "/a\r\nX: y", key, NULL, 0), 0);
    CHECK_EQ_INT(http_write_upgrade_request(buf, sizeof buf, "", "/", key, NULL, 0), 0);
    CHECK_EQ_INT(http_write_upgrade_request(buf, sizeof buf, "g w", "/", key, NULL, 0), 0);
    CHECK_EQ_INT(http_write_upgrade_request(buf, sizeof buf, "gw", "/", "dGhlIHNhbXBsZSBub25j\r\n==",
                                            NULL, 0), 0);
    const char *const split[] = { "X: 1\nY: 2" };
    CHECK_EQ_INT(http_write_upgrade_request(buf, sizeof buf, "gw", "/", key, split, 1), 0);
    CHECK(http_write_upgrade_request(buf, sizeof buf, "gw", "/", key, NULL, 0) > 0);
}

int main(void) {
    test_accept();
    test_complete_head();
    test_prefixes();
    test_trimming();
    test_line_ends();
    test_obs_fold();
    test_control_chars();
    test_names_and_request_line();
    test_versions();
    test_header_count();
    test_head_size();
    test_responses();
    test_write_switching();
    test_write_error();
    test_write_upgrade();
    return check_summary();
}
