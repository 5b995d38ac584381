/*
 * fuzz_http.c — libFuzzer target for the upgrade's HTTP heads
 * (CSources/AegisIO/src/http.c).
 *
 * Build and run (from the repository root):
 *   /opt/swift/usr/bin/clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *      -I CSources/AegisCore/include -I CSources/AegisCore/src -I CSources/AegisIO/src \
 *      CSources/AegisIO/src/http.c CSources/AegisCore/src/\*.c Tests/Fuzz/fuzz_http.c \
 *      -lsodium -lcrypto -o /tmp/fuzz_http
 *   mkdir -p /tmp/hc && cp Tests/Fuzz/corpus/http/\* /tmp/hc/
 *   /tmp/fuzz_http -max_total_time=60 -max_len=10000 /tmp/hc
 *
 * Each input is parsed as a request head and as a response head, and the
 * result compared with a reference written here independently: it splits
 * the bytes into lines first and judges each complete line as a whole,
 * where the parser walks byte by byte. Then the invariants of http.h:
 * length ≤ input, spans inside the input, ≤ max headers, values trimmed,
 * and prefix consistency — a prefix of a complete head is need-more, an
 * error once found stays the same error, and a head longer than
 * HTTP_MAX_HEAD is refused once more than that is buffered. Requests that
 * parse go through aegis_upgrade_check. Finally the writers: the input
 * as an error message must come back out of the JSON body unchanged (but
 * for ill-formed UTF-8, replaced by U+FFFD), and as host and path of an
 * upgrade request it must either be refused or parse back.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aegis_core.h"
#include "http.h"
#include "json.h"

#define FAIL(...) do { fprintf(stderr, "fuzz_http: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

/* ------------------------------------------------------------------------ */
/* Reference                                                                 */

static bool ref_tchar(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}
static bool ref_field(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7F); }
static bool ref_vchar(unsigned char c) { return c > 0x20 && c < 0x7F; }
static bool ref_ows(unsigned char c) { return c == ' ' || c == '\t'; }

typedef struct ref_head {
    enum { REF_COMPLETE, REF_ERROR, REF_INCOMPLETE } kind;
    int code;                   /* REF_ERROR: the error */
    size_t len;                 /* REF_COMPLETE: the head's length */
    const char *method, *path;
    size_t method_len, path_len;
    int minor, status;
    aegis_http_header hs[HTTP_MAX_HEADERS];
    size_t nh;
} ref_head;

/* The next complete line of b[*pos..w): its content without "\n" and
 * without one "\r" before it. false when no LF is left. */
static bool ref_line(const char *b, size_t w, size_t *pos, const char **s, size_t *n) {
    const char *nl = memchr(b + *pos, '\n', w - *pos);
    if (!nl) return false;
    *s = b + *pos;
    *n = (size_t)(nl - *s);
    if (*n > 0 && (*s)[*n - 1] == '\r') (*n)--;
    *pos = (size_t)(nl - b) + 1;
    return true;
}

/* "HTTP/" DIGIT "." DIGIT at s (n ≥ 8): 0, HTTP_ERR_SYNTAX or HTTP_ERR_VERSION. */
static int ref_version(const char *s, size_t n, int *minor) {
    if (n < 8 || memcmp(s, "HTTP/", 5) != 0 || s[6] != '.' || s[5] < '0' || s[5] > '9' ||
        s[7] < '0' || s[7] > '9')
        return HTTP_ERR_SYNTAX;
    if (!(s[5] == '1' && s[7] >= '1')) return HTTP_ERR_VERSION;
    *minor = s[7] - '0';
    return 0;
}

static int ref_request_line(const char *s, size_t n, ref_head *h) {
    const char *sp1 = memchr(s, ' ', n);
    if (!sp1 || sp1 == s) return HTTP_ERR_SYNTAX;
    for (const char *p = s; p < sp1; p++)
        if (!ref_tchar((unsigned char)*p)) return HTTP_ERR_SYNTAX;
    const char *t = sp1 + 1, *e = s + n;
    const char *sp2 = memchr(t, ' ', (size_t)(e - t));
    if (!sp2 || sp2 == t || *t != '/') return HTTP_ERR_SYNTAX;
    for (const char *p = t; p < sp2; p++)
        if (!ref_vchar((unsigned char)*p)) return HTTP_ERR_SYNTAX;
    const char *v = sp2 + 1;
    int r = ref_version(v, (size_t)(e - v), &h->minor);
    if (r != 0) return r;
    if (e - v != 8) return HTTP_ERR_SYNTAX;
    h->method = s;
    h->method_len = (size_t)(sp1 - s);
    h->path = t;
    h->path_len = (size_t)(sp2 - t);
    return 0;
}

static int ref_status_line(const char *s, size_t n, ref_head *h) {
    int r = ref_version(s, n, &h->minor);
    if (r != 0) return r;
    if (n < 12 || s[8] != ' ') return HTTP_ERR_SYNTAX;
    int v = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9') return HTTP_ERR_SYNTAX;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 100 || v > 599) return HTTP_ERR_SYNTAX;
    h->status = v;
    if (n == 12) return 0;
    if (s[12] != ' ') return HTTP_ERR_SYNTAX;
    for (size_t i = 13; i < n; i++)
        if (!ref_field((unsigned char)s[i])) return HTTP_ERR_SYNTAX;
    return 0;
}

/* One field line (not empty): 0, or the error. */
static int ref_field_line(const char *s, size_t n, ref_head *h, size_t max) {
    if (s[0] == '\r' || ref_ows((unsigned char)s[0])) return HTTP_ERR_SYNTAX;  /* bare CR, fold */
    if (h->nh == max) return HTTP_ERR_TOO_MANY;
    const char *colon = memchr(s, ':', n);
    if (!colon || colon == s) return HTTP_ERR_SYNTAX;
    for (const char *p = s; p < colon; p++)
        if (!ref_tchar((unsigned char)*p)) return HTTP_ERR_SYNTAX;
    const char *v = colon + 1, *e = s + n;
    for (const char *p = v; p < e; p++)
        if (!ref_field((unsigned char)*p)) return HTTP_ERR_SYNTAX;
    while (v < e && ref_ows((unsigned char)*v)) v++;
    while (e > v && ref_ows((unsigned char)e[-1])) e--;
    h->hs[h->nh++] = (aegis_http_header){ s, (size_t)(colon - s), v, (size_t)(e - v) };
    return 0;
}

/* Judges b[0..min(len, limit)); limit is HTTP_MAX_HEAD but for the
 * completed partial lines of check_one. */
static void ref_parse(const char *b, size_t len, size_t limit, size_t max, bool response,
                      ref_head *h) {
    size_t w = len < limit ? len : limit, pos = 0, n;
    const char *s;
    int r;
    memset(h, 0, sizeof *h);
    if (max > HTTP_MAX_HEADERS) max = HTTP_MAX_HEADERS;
    h->kind = REF_INCOMPLETE;
    if (!ref_line(b, w, &pos, &s, &n)) goto incomplete;
    if (!response && (b[0] == '\r' || b[0] == '\n')) {     /* one empty line before */
        if (n != 0) { r = HTTP_ERR_SYNTAX; goto error; }
        if (!ref_line(b, w, &pos, &s, &n)) goto incomplete;
    }
    if ((r = response ? ref_status_line(s, n, h) : ref_request_line(s, n, h)) != 0) goto error;
    for (;;) {
        if (!ref_line(b, w, &pos, &s, &n)) goto incomplete;
        if (n == 0) break;
        if ((r = ref_field_line(s, n, h, max)) != 0) goto error;
    }
    h->kind = REF_COMPLETE;
    h->len = pos;
    return;
error:
    h->kind = REF_ERROR;
    h->code = r;
    return;
incomplete:
    if (len > limit) h->code = HTTP_ERR_TOO_LARGE;
}

/* ------------------------------------------------------------------------ */
/* Comparison with the parser                                                */

typedef struct parsed {
    int rc;
    const char *method, *path;
    size_t method_len, path_len;
    int minor, status;
    const aegis_http_header *hs;
    size_t nh;
} parsed;

static parsed parse(const char *b, size_t len, size_t max, bool response, http_request *rq,
                    http_response_head *rs) {
    parsed p = { 0 };
    if (response) {
        p.rc = http_parse_response(b, len, rs, max);
        p.status = rs->status;
        p.minor = rs->minor_version;
        p.hs = rs->headers;
        p.nh = rs->num_headers;
    } else {
        p.rc = http_parse_request(b, len, rq, max);
        p.method = rq->method;
        p.method_len = rq->method_len;
        p.path = rq->path;
        p.path_len = rq->path_len;
        p.minor = rq->minor_version;
        p.hs = rq->headers;
        p.nh = rq->num_headers;
    }
    return p;
}

static bool inside(const char *b, size_t len, const char *p, size_t n) {
    return p >= b && n <= len && (size_t)(p - b) <= len - n;
}

static bool same_span(const char *a, size_t an, const char *b, size_t bn) {
    return a == b && an == bn;
}

static bool is_error(int rc) {
    return rc == HTTP_ERR_SYNTAX || rc == HTTP_ERR_TOO_LARGE || rc == HTTP_ERR_TOO_MANY ||
           rc == HTTP_ERR_VERSION;
}

/* The parser against the reference, and http.h's invariants. */
static void check_one(const char *b, size_t len, size_t max, bool response, const parsed *p) {
    const char *what = response ? "response" : "request";
    size_t lim = max < HTTP_MAX_HEADERS ? max : HTTP_MAX_HEADERS;
    ref_head h;
    ref_parse(b, len, HTTP_MAX_HEAD, max, response, &h);
    if (p->rc >= 0) {
        if ((size_t)p->rc > len || p->rc > HTTP_MAX_HEAD || p->rc == 0) FAIL("%s: length %d of %zu", what, p->rc, len);
        if (h.kind != REF_COMPLETE || h.len != (size_t)p->rc)
            FAIL("%s: parser says %d, reference kind %d code %d len %zu", what, p->rc, h.kind, h.code, h.len);
        if (p->nh > lim || p->nh != h.nh) FAIL("%s: %zu headers, reference %zu", what, p->nh, h.nh);
        if (p->minor != h.minor || p->minor < 1) FAIL("%s: minor version", what);
        if (response && p->status != h.status) FAIL("status %d, reference %d", p->status, h.status);
        if (!response && (!same_span(p->method, p->method_len, h.method, h.method_len) ||
                          !same_span(p->path, p->path_len, h.path, h.path_len)))
            FAIL("request line spans differ");
        for (size_t i = 0; i < p->nh; i++) {
            const aegis_http_header *g = &p->hs[i], *r = &h.hs[i];
            if (!inside(b, (size_t)p->rc, g->name, g->name_len) ||
                !inside(b, (size_t)p->rc, g->value, g->value_len))
                FAIL("%s: header %zu outside the head", what, i);
            if (!same_span(g->name, g->name_len, r->name, r->name_len) ||
                !same_span(g->value, g->value_len, r->value, r->value_len))
                FAIL("%s: header %zu differs from the reference", what, i);
            if (g->name_len == 0) FAIL("empty name");
            if (g->value_len > 0 && (ref_ows((unsigned char)g->value[0]) ||
                                     ref_ows((unsigned char)g->value[g->value_len - 1])))
                FAIL("%s: header %zu not trimmed", what, i);
        }
        return;
    }
    if (!is_error(p->rc) && p->rc != HTTP_NEED_MORE) FAIL("%s: unknown code %d", what, p->rc);
    switch (h.kind) {
    case REF_COMPLETE:
        FAIL("%s: parser says %d, reference a head of %zu", what, p->rc, h.len);
    case REF_ERROR:
        if (p->rc != h.code) FAIL("%s: parser says %d, reference %d", what, p->rc, h.code);
        break;
    case REF_INCOMPLETE:
        /* The partial line may hold an error the reference cannot judge;
         * otherwise need-more, or too-large once past the limit. */
        if (p->rc == HTTP_NEED_MORE && len > HTTP_MAX_HEAD) FAIL("%s: need-more past the limit", what);
        if (p->rc == HTTP_ERR_TOO_LARGE && len <= HTTP_MAX_HEAD) FAIL("%s: too large within the limit", what);
        if (p->rc != HTTP_NEED_MORE && p->rc != HTTP_ERR_TOO_LARGE) {
            /* An error in the partial line is an error of the line whatever
             * ends it: the reference must find it once the line and head end. */
            size_t w = len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD;
            char *c = malloc(w + 4);
            memcpy(c, b, w);
            memcpy(c + w, "\r\n\r\n", 4);
            ref_head h2;
            ref_parse(c, w + 4, SIZE_MAX, max, response, &h2);
            free(c);
            if (h2.kind != REF_ERROR || h2.code != p->rc)
                FAIL("%s: parser says %d on a partial line, completed reference kind %d code %d",
                     what, p->rc, h2.kind, h2.code);
        }
        break;
    }
}

/* Parses b[0..k) from an exact-size copy, so that ASan sees a read past k. */
static int parse_prefix(const uint8_t *data, size_t k, size_t max, bool response) {
    char *c = malloc(k ? k : 1);
    memcpy(c, data, k);
    http_request rq;
    http_response_head rs;
    parsed p = parse(c, k, max, response, &rq, &rs);
    check_one(c, k, max, response, &p);
    free(c);
    return p.rc;
}

/* Prefix consistency against the whole input's answer `full`. */
static void check_prefixes(const uint8_t *data, size_t size, size_t max, bool response, int full) {
    size_t ks[260], nk = 0;
    if (size <= 256) {
        for (size_t k = 0; k < size; k++) ks[nk++] = k;
    } else {
        for (size_t i = 0; i < 48; i++) ks[nk++] = size * i / 48;
        if (full > 0) { ks[nk++] = (size_t)full - 1; ks[nk++] = (size_t)full; }
        if (size > HTTP_MAX_HEAD) { ks[nk++] = HTTP_MAX_HEAD; ks[nk++] = HTTP_MAX_HEAD + 1; }
    }
    for (size_t i = 1; i < nk; i++)        /* ascending, for the error's persistence */
        for (size_t j = i; j > 0 && ks[j - 1] > ks[j]; j--) {
            size_t t = ks[j];
            ks[j] = ks[j - 1];
            ks[j - 1] = t;
        }
    int seen_error = 0;
    size_t seen_at = 0;
    for (size_t i = 0; i < nk; i++) {
        size_t k = ks[i];
        if (k > size) continue;
        int rc = parse_prefix(data, k, max, response);
        if (full >= 0) {
            int want = k < (size_t)full ? HTTP_NEED_MORE : full;
            if (rc != want) FAIL("prefix %zu of a head of %d: got %d", k, full, rc);
        } else if (full == HTTP_ERR_TOO_LARGE) {
            int want = k <= HTTP_MAX_HEAD ? HTTP_NEED_MORE : HTTP_ERR_TOO_LARGE;
            if (rc != want) FAIL("prefix %zu of a too-large head: got %d", k, rc);
        } else if (full == HTTP_NEED_MORE) {
            if (rc != HTTP_NEED_MORE) FAIL("prefix %zu of an incomplete head: got %d", k, rc);
        } else {
            if (rc != HTTP_NEED_MORE && rc != full) FAIL("prefix %zu: got %d, whole input %d", k, rc, full);
            if (seen_error && k >= seen_at && rc != full) FAIL("error at %zu gone at %zu", seen_at, k);
            if (rc == full && !seen_error) { seen_error = 1; seen_at = k; }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The core's upgrade checks on parsed requests                              */

static bool b64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
}

static void check_upgrade(const char *b, size_t head_len, const http_request *rq) {
    aegis_upgrade up;
    int st = aegis_upgrade_check(rq->method, rq->method_len, rq->path, rq->path_len, rq->headers,
                                 rq->num_headers, false, &up);
    if (st != up.http_status) FAIL("upgrade: return value differs from http_status");
    if (st != 0 && st != 400 && st != 404 && st != 405 && st != 426) FAIL("upgrade: status %d", st);
    if ((st == 0) != (up.error_code == NULL)) FAIL("upgrade: error_code vs status");
    if (st == 0) {
        if (!inside(b, head_len, up.agent_id, up.agent_id_len) ||
            !inside(b, head_len, up.websocket_key, up.websocket_key_len))
            FAIL("upgrade: spans outside the input");
        char accept[28];
        http_websocket_accept(up.websocket_key, up.websocket_key_len, accept);
        for (int i = 0; i < 27; i++)
            if (!b64_char(accept[i]) || accept[i] == '=') FAIL("accept: not base64");
        if (accept[27] != '=') FAIL("accept: no padding");
        char out[256];
        size_t n = http_write_switching(out, sizeof out, accept);
        http_response_head rs;
        if (n == 0 || http_parse_response(out, n, &rs, HTTP_MAX_HEADERS) != (int)n || rs.status != 101)
            FAIL("101 does not parse back");
    } else {
        /* The refusal the gateway would send parses back with its status. */
        static const char *const allow[] = { "Allow: GET" };
        char out[512];
        size_t n = http_write_error(out, sizeof out, st, up.error_code, "refused", allow, 1);
        http_response_head rs;
        int hl = http_parse_response(out, n, &rs, HTTP_MAX_HEADERS);
        if (n == 0 || hl <= 0 || rs.status != st) FAIL("refusal does not parse back");
    }
    aegis_upgrade_check(rq->method, rq->method_len, rq->path, rq->path_len, rq->headers,
                        rq->num_headers, true, &up);
    if (up.http_status != 503) FAIL("draining: %d", up.http_status);
}

/* ------------------------------------------------------------------------ */
/* Writers                                                                   */

/* The message as the body must carry it: ill-formed UTF-8 replaced, byte by
 * byte, by U+FFFD. Decoded here by value, not by table. */
static size_t ref_sanitize(const unsigned char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        unsigned long cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
        bool ok = len != 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) {
            ok = (s[i + k] & 0xC0) == 0x80;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const unsigned long min[] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (ok && (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
        if (ok) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    return o;
}

static void check_write_error(const uint8_t *data, size_t size) {
    size_t n = size > 2000 ? 2000 : size;
    char *msg = malloc(n + 1);
    memcpy(msg, data, n);
    msg[n] = 0;
    n = strlen(msg);
    size_t cap = 6 * n + 512;
    char *out = malloc(cap);
    static const char *const extra[] = { "Retry-After: 30", "Sec-WebSocket-Version: 13" };
    size_t len = http_write_error(out, cap, 429, "rate_limited", msg, extra, 2);
    if (len == 0 || len > cap) FAIL("write_error: %zu of %zu", len, cap);
    /* One byte short is refused. */
    if (http_write_error(out, len - 1, 429, "rate_limited", msg, extra, 2) != 0) FAIL("short cap accepted");
    len = http_write_error(out, cap, 429, "rate_limited", msg, extra, 2);

    http_response_head rs;
    int hl = http_parse_response(out, len, &rs, HTTP_MAX_HEADERS);
    if (hl <= 0 || rs.status != 429 || rs.num_headers != 5) FAIL("write_error: head does not parse (%d)", hl);
    const char *body = out + hl;
    size_t body_len = len - (size_t)hl;
    char cl[24];
    int cln = snprintf(cl, sizeof cl, "%zu", body_len);
    if (rs.headers[1].value_len != (size_t)cln || memcmp(rs.headers[1].value, cl, (size_t)cln) != 0)
        FAIL("Content-Length differs from the body");

    json_field_spec outer[] = { { "error", JSON_FIELD_ANY } };
    json_field_spec inner[] = { { "code", JSON_FIELD_STRING }, { "message", JSON_FIELD_STRING } };
    json_field fo, fi[2];
    if (json_read_object(body, body_len, outer, 1, &fo) != AEGIS_OK || !fo.present)
        FAIL("body is not JSON: %.*s", (int)body_len, body);
    if (json_read_object(fo.raw, fo.raw_len, inner, 2, fi) != AEGIS_OK || !fi[0].present || !fi[1].present)
        FAIL("error object");
    char *got = malloc(fi[1].raw_len + 1), *want = malloc(3 * n + 1);
    size_t got_len = 0;
    if (json_unescape(fi[1].raw, fi[1].raw_len, got, fi[1].raw_len + 1, &got_len) != AEGIS_OK)
        FAIL("unescape");
    size_t want_len = ref_sanitize((const unsigned char *)msg, n, want);
    if (got_len != want_len || memcmp(got, want, got_len) != 0) FAIL("message does not round-trip");
    free(got);
    free(want);
    free(out);
    free(msg);
}

static bool ref_target_ok(const char *s, bool path) {
    if (!*s || (path && *s != '/')) return false;
    for (; *s; s++)
        if (!ref_vchar((unsigned char)*s)) return false;
    return true;
}

/* The input split at its first '\n' into host and path. */
static void check_write_upgrade(const uint8_t *data, size_t size) {
    size_t n = size > 2000 ? 2000 : size;
    char *host = malloc(n + 1);
    memcpy(host, data, n);
    host[n] = 0;
    char *path = strchr(host, '\n');
    if (path) *path++ = 0;
    else path = "/ws/agent";
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    size_t cap = 2 * n + 512;
    char *out = malloc(cap);
    size_t len = http_write_upgrade_request(out, cap, host, path, key, NULL, 0);
    bool ok = ref_target_ok(host, false) && ref_target_ok(path, true);
    if ((len != 0) != ok) FAIL("write_upgrade: %zu for host/path validity %d", len, ok);
    if (len) {
        http_request rq;
        if (http_parse_request(out, len, &rq, HTTP_MAX_HEADERS) != (int)len && len <= HTTP_MAX_HEAD)
            FAIL("upgrade request does not parse back");
        if (len <= HTTP_MAX_HEAD &&
            (rq.path_len != strlen(path) || memcmp(rq.path, path, rq.path_len) != 0 ||
             rq.headers[0].value_len != strlen(host) || memcmp(rq.headers[0].value, host, strlen(host)) != 0))
            FAIL("upgrade request: path or host differ");
    }
    free(out);
    free(host);
}

/* ------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (aegis_core_init() != AEGIS_OK) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *b = (const char *)data;
    /* A limit from the input too, so that small and over-large ones are tried. */
    size_t maxes[2] = { HTTP_MAX_HEADERS, size ? data[size - 1] % 70 : 0 };
    for (int resp = 0; resp < 2; resp++)
        for (int m = 0; m < 2; m++) {
            http_request rq;
            http_response_head rs;
            parsed p = parse(b, size, maxes[m], resp, &rq, &rs);
            check_one(b, size, maxes[m], resp, &p);
            if (m == 0) check_prefixes(data, size, maxes[m], resp, p.rc);
            if (!resp && p.rc > 0) check_upgrade(b, (size_t)p.rc, &rq);
            if (parse(b, size, maxes[m], resp, &rq, &rs).rc != p.rc) FAIL("not deterministic");
        }
    check_write_error(data, size);
    check_write_upgrade(data, size);
    return 0;
}
