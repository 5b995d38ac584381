/*
 * http.c — the HTTP/1.1 heads around the WebSocket upgrade (see http.h).
 *
 * Parsing. One left-to-right pass over the bytes buffered so far, in the
 * manner of picohttpparser, with no state kept between calls: the caller
 * simply calls again with more bytes. Every decision is taken on bytes that
 * are present, and running out of bytes anywhere gives HTTP_NEED_MORE, so a
 * prefix of a valid head is never mistaken for a different head and an
 * error, once seen, is the same error however many bytes follow. The pass
 * never looks beyond HTTP_MAX_HEAD bytes: a head that has not ended there
 * is HTTP_ERR_TOO_LARGE as soon as more than that is buffered.
 *
 * The grammar is RFC 9112's, strictly:
 *   request-line = token SP origin-form SP HTTP-version EOL
 *   status-line  = HTTP-version SP 3DIGIT [ SP reason ] EOL
 *   field-line   = token ":" OWS value OWS EOL
 *   EOL          = CRLF / LF        (a bare LF is tolerated, RFC 9112 §2.2;
 *                                    a CR not followed by LF is an error)
 * with one empty line tolerated before a request line (RFC 9112 §2.2), no
 * whitespace between a field name and its colon (§5.1), no obsolete line
 * folding and no whitespace before the first field (§5.2, §2.2), and in
 * values and reasons only HTAB, SP, VCHAR and obs-text (no CTL, no DEL).
 * Only origin-form targets are accepted: the gateway serves one path.
 *
 * Writing. The writers fill the caller's buffer through a small bounded
 * appender and answer 0 when it is too short; they also answer 0 for
 * arguments that would break the message (a CR or LF smuggled into an
 * extra header, host or path), so that a caller's bug cannot split a
 * response.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* ------------------------------------------------------------------------ */
/* Character classes                                                         */

enum {
    C_TCHAR = 1,    /* token: method, field names */
    C_FIELD = 2,    /* field values and reasons: HTAB, SP, VCHAR, obs-text */
    C_TARGET = 4,   /* request-target: VCHAR (no SP, no CTL, ASCII only) */
};

/* One table for the three classes; a lookup beats a chain of comparisons
 * in the loops that touch every byte. */
static const uint8_t char_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,  /* 00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  /* 10 */
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,  /* 20 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6,  /* 30 */
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  /* 40 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,  /* 50 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  /* 60 */
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,  /* 70 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* 80 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* 90 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* a0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* b0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* c0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* d0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* e0 */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,  /* f0 */
};

static inline bool is(char c, int cls) { return (char_class[(unsigned char)c] & cls) != 0; }
static inline bool is_ows(char c) { return c == ' ' || c == '\t'; }
static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Skips bytes of a class; returns the first byte outside it (or end). */
static inline const char *skip(const char *p, const char *end, int cls) {
    while (p < end && is(*p, cls)) p++;
    return p;
}

/* ------------------------------------------------------------------------ */
/* Parsing                                                                   */

/* Consumes one line end at *pp. Returns 1 when it did, 0 when *pp is not
 * at a line end, HTTP_NEED_MORE, or HTTP_ERR_SYNTAX for a bare CR (which a
 * recipient must not read as a line end, RFC 9112 §2.2). */
static int eol(const char **pp, const char *end) {
    const char *p = *pp;
    if (p == end) return HTTP_NEED_MORE;
    if (*p == '\n') {
        *pp = p + 1;
        return 1;
    }
    if (*p != '\r') return 0;
    if (++p == end) return HTTP_NEED_MORE;
    if (*p != '\n') return HTTP_ERR_SYNTAX;
    *pp = p + 1;
    return 1;
}

/* A line end must come next. */
static int expect_eol(const char **pp, const char *end) {
    int r = eol(pp, end);
    return r == 1 ? 0 : r == 0 ? HTTP_ERR_SYNTAX : r;
}

/* Consumes `c`, which must come next. */
static int expect(const char **pp, const char *end, char c) {
    if (*pp == end) return HTTP_NEED_MORE;
    if (**pp != c) return HTTP_ERR_SYNTAX;
    (*pp)++;
    return 0;
}

/*
 * HTTP-version: "HTTP/" DIGIT "." DIGIT, judged as soon as its 8 bytes are
 * here. A well-formed version other than 1.1 or a later 1.x is
 * HTTP_ERR_VERSION (505): HTTP/1.0 has no upgrade, and HTTP/2 is not spoken
 * in this form. Anything else is a syntax error, checked byte by byte so
 * that garbage is refused without waiting for 8 bytes.
 */
static int version(const char **pp, const char *end, int *minor) {
    static const char shape[] = "HTTP/0.0";     /* '0' stands for a digit */
    const char *p = *pp;
    for (size_t i = 0; i < 8; i++) {
        if (p + i == end) return HTTP_NEED_MORE;
        bool ok = shape[i] == '0' ? is_digit(p[i]) : p[i] == shape[i];
        if (!ok) return HTTP_ERR_SYNTAX;
    }
    if (p[5] != '1' || p[7] == '0') return HTTP_ERR_VERSION;
    *minor = p[7] - '0';
    *pp = p + 8;
    return 0;
}

/* A token followed by `delim`; the token must not be empty. */
static int token(const char **pp, const char *end, char delim, const char **tok, size_t *len) {
    const char *s = *pp, *p = skip(s, end, C_TCHAR);
    if (p == end) return HTTP_NEED_MORE;
    if (p == s || *p != delim) return HTTP_ERR_SYNTAX;
    *tok = s;
    *len = (size_t)(p - s);
    *pp = p + 1;
    return 0;
}

/*
 * Field lines up to and including the empty line that ends the head.
 * A line starting with SP or HTAB is obsolete folding (or whitespace before
 * the first field): refused, as it would otherwise let a value hide a
 * header from one reader and not another. The (max+1)th field is refused
 * as soon as it starts.
 */
static int fields(const char **pp, const char *end, aegis_http_header *hs, size_t *n, size_t max) {
    const char *p = *pp;
    for (;;) {
        int r = eol(&p, end);
        if (r == 1) break;
        if (r < 0) return r;
        if (is_ows(*p)) return HTTP_ERR_SYNTAX;
        if (*n == max) return HTTP_ERR_TOO_MANY;

        const char *name, *value, *vend;
        size_t name_len;
        if ((r = token(&p, end, ':', &name, &name_len)) != 0) return r;
        while (p < end && is_ows(*p)) p++;
        value = p;
        p = skip(p, end, C_FIELD);
        vend = p;
        if ((r = expect_eol(&p, end)) != 0) return r;   /* a CTL in the value, too */
        while (vend > value && is_ows(vend[-1])) vend--;
        hs[(*n)++] = (aegis_http_header){ name, name_len, value, (size_t)(vend - value) };
    }
    *pp = p;
    return 0;
}

static size_t clamp_max(size_t max_headers) {
    return max_headers < HTTP_MAX_HEADERS ? max_headers : HTTP_MAX_HEADERS;
}

/* The limit on the head's size, applied around a parse of at most
 * HTTP_MAX_HEAD bytes: need-more with more than that buffered is final. */
static size_t window(size_t len) { return len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD; }

static int finish(int r, size_t len, const char *buf, const char *p) {
    if (r == HTTP_NEED_MORE && len > HTTP_MAX_HEAD) return HTTP_ERR_TOO_LARGE;
    if (r != 0) return r;
    return (int)(p - buf);      /* ≤ HTTP_MAX_HEAD */
}

static int request(const char **pp, const char *end, http_request *req, size_t max) {
    const char *p = *pp;
    int r;
    /* One empty line before the request line is tolerated (RFC 9112 §2.2):
     * a client may send a stray CRLF after a previous body. */
    if (p < end && (*p == '\r' || *p == '\n') && (r = expect_eol(&p, end)) != 0) return r;
    if ((r = token(&p, end, ' ', &req->method, &req->method_len)) != 0) return r;
    /* origin-form only: "*", absolute-form and authority-form are not ours. */
    req->path = p;
    if ((r = expect(&p, end, '/')) != 0) return r;
    p = skip(p, end, C_TARGET);
    req->path_len = (size_t)(p - req->path);
    if ((r = expect(&p, end, ' ')) != 0) return r;
    if ((r = version(&p, end, &req->minor_version)) != 0) return r;
    if ((r = expect_eol(&p, end)) != 0) return r;
    if ((r = fields(&p, end, req->headers, &req->num_headers, max)) != 0) return r;
    *pp = p;
    return 0;
}

int http_parse_request(const char *buf, size_t len, http_request *req, size_t max_headers) {
    const char *p = buf;
    req->num_headers = 0;
    int r = request(&p, buf + window(len), req, clamp_max(max_headers));
    return finish(r, len, buf, p);
}

/* status-code: 3DIGIT, 100–599 (RFC 9110 §15). */
static int status_code(const char **pp, const char *end, int *status) {
    const char *p = *pp;
    int v = 0;
    for (size_t i = 0; i < 3; i++) {
        if (p + i == end) return HTTP_NEED_MORE;
        if (!is_digit(p[i])) return HTTP_ERR_SYNTAX;
        v = v * 10 + (p[i] - '0');
    }
    if (v < 100 || v > 599) return HTTP_ERR_SYNTAX;
    *status = v;
    *pp = p + 3;
    return 0;
}

static int response(const char **pp, const char *end, http_response_head *res, size_t max) {
    const char *p = *pp;
    int r;
    if ((r = version(&p, end, &res->minor_version)) != 0) return r;
    if ((r = expect(&p, end, ' ')) != 0) return r;
    if ((r = status_code(&p, end, &res->status)) != 0) return r;
    /* The reason may be absent altogether ("HTTP/1.1 101\r\n"): some
     * servers drop the SP with it, and a client ignores the reason anyway. */
    if (p < end && *p == ' ') p = skip(p + 1, end, C_FIELD);
    if ((r = expect_eol(&p, end)) != 0) return r;
    if ((r = fields(&p, end, res->headers, &res->num_headers, max)) != 0) return r;
    *pp = p;
    return 0;
}

int http_parse_response(const char *buf, size_t len, http_response_head *res, size_t max_headers) {
    const char *p = buf;
    res->num_headers = 0;
    int r = response(&p, buf + window(len), res, clamp_max(max_headers));
    return finish(r, len, buf, p);
}

/* ------------------------------------------------------------------------ */
/* Sec-WebSocket-Accept (RFC 6455 §4.2.2)                                    */

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void http_websocket_accept(const char *key, size_t key_len, char out[28]) {
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    /* Streamed rather than concatenated, so that no key length needs a
     * bound here; once per connection, the context allocation is noise. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) &&
              EVP_DigestUpdate(ctx, key, key_len) &&
              EVP_DigestUpdate(ctx, ws_guid, sizeof ws_guid - 1) &&
              EVP_DigestFinal_ex(ctx, md, &md_len) && md_len == 20;
    EVP_MD_CTX_free(ctx);
    if (ok) {
        aegis_b64_encode(md, 20, out);
    } else {
        /* Out of memory in OpenSSL. No base64 of 20 bytes is all padding,
         * so the client refuses this value and the handshake fails closed. */
        memset(out, '=', 28);
    }
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

/* A bounded appender: once something does not fit, everything after is
 * dropped and the result is 0. A counting writer only adds up lengths,
 * which is how the body's Content-Length is known before it is written. */
typedef struct writer {
    char *out;
    size_t cap, len;
    bool failed;
    bool count_only;
} writer;

static void put(writer *w, const char *s, size_t n) {
    if (w->failed || n == 0) return;
    if (!w->count_only) {
        if (n > w->cap - w->len) {
            w->failed = true;
            return;
        }
        memcpy(w->out + w->len, s, n);
    }
    w->len += n;
}

static void put_str(writer *w, const char *s) { put(w, s, strlen(s)); }

static void put_uint(writer *w, size_t v) {
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(w, tmp + i, sizeof tmp - i);
}

static size_t done(const writer *w) { return w->failed ? 0 : w->len; }

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no
 * overlongs, no surrogates, ≤ U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;      /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

/*
 * A JSON string's contents (RFC 8259 §7): quote, backslash and the control
 * characters escaped, DEL too for the logs' sake, and any byte that is not
 * part of well-formed UTF-8 replaced by U+FFFD, so that the body is valid
 * JSON whatever the message holds.
 */
static void put_json_chars(writer *w, const char *s) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t run = i;         /* copy plain ASCII in runs */
        while (run < n && u[run] >= 0x20 && u[run] < 0x7F && u[run] != '"' && u[run] != '\\') run++;
        put(w, s + i, run - i);
        if ((i = run) == n) break;
        unsigned c = u[i];
        size_t seq;
        if (c >= 0x80) {
            if ((seq = utf8_seq(u + i, n - i)) != 0) put(w, s + i, seq);
            else put_str(w, "\\ufffd");
            i += seq ? seq : 1;
            continue;
        }
        switch (c) {
        case '"': put_str(w, "\\\""); break;
        case '\\': put_str(w, "\\\\"); break;
        case '\b': put_str(w, "\\b"); break;
        case '\f': put_str(w, "\\f"); break;
        case '\n': put_str(w, "\\n"); break;
        case '\r': put_str(w, "\\r"); break;
        case '\t': put_str(w, "\\t"); break;
        default: {
            char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            put(w, esc, sizeof esc);
        }
        }
        i++;
    }
}

/* {"error":{"code":"…","message":"…"}} (PROTOCOL.md §2). */
static void put_error_body(writer *w, const char *code, const char *message) {
    put_str(w, "{\"error\":{\"code\":\"");
    put_json_chars(w, code ? code : "");
    put_str(w, "\",\"message\":\"");
    put_json_chars(w, message ? message : "");
    put_str(w, "\"}}");
}

/* Would s pass as a field value / a target without breaking the head? */
static bool all_of(const char *s, int cls) {
    for (; *s; s++)
        if (!is(*s, cls)) return false;
    return true;
}

/* "Name: value": a token, a colon, then value bytes only (no CR, LF, CTL). */
static bool header_line_ok(const char *line) {
    const char *p = line;
    while (*p && is(*p, C_TCHAR)) p++;
    return p != line && *p == ':' && all_of(p + 1, C_FIELD);
}

static bool put_extra_headers(writer *w, const char *const *extra, size_t n) {
    for (size_t i = 0; extra && i < n; i++) {
        if (!extra[i]) continue;
        if (!header_line_ok(extra[i])) return false;
        put_str(w, extra[i]);
        put_str(w, "\r\n");
    }
    return true;
}

static const char *reason(int status) {
    switch (status) {
    case 101: return "Switching Protocols";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "";         /* an empty reason is valid (RFC 9112 §4) */
    }
}

size_t http_write_switching(char *out, size_t cap, const char *accept28) {
    writer w = { out, cap, 0, false, false };
    put_str(&w, "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: ");
    put(&w, accept28, 28);
    put_str(&w, "\r\n\r\n");
    return done(&w);
}

size_t http_write_error(char *out, size_t cap, int status, const char *code, const char *message,
                        const char *const *extra_headers, size_t n_extra) {
    if (status < 100 || status > 599) return 0;
    writer count = { NULL, 0, 0, false, true };
    put_error_body(&count, code, message);

    writer w = { out, cap, 0, false, false };
    char code3[3] = { (char)('0' + status / 100), (char)('0' + status / 10 % 10),
                      (char)('0' + status % 10) };
    put_str(&w, "HTTP/1.1 ");
    put(&w, code3, 3);
    put_str(&w, " ");
    put_str(&w, reason(status));
    put_str(&w, "\r\nContent-Type: application/json\r\nContent-Length: ");
    put_uint(&w, count.len);
    put_str(&w, "\r\nConnection: close\r\n");
    if (!put_extra_headers(&w, extra_headers, n_extra)) return 0;
    put_str(&w, "\r\n");
    put_error_body(&w, code, message);
    return done(&w);
}

size_t http_write_upgrade_request(char *out, size_t cap, const char *host, const char *path,
                                  const char key24[24], const char *const *extra_headers,
                                  size_t n_extra) {
    if (!host || !*host || !all_of(host, C_TARGET) || !path || path[0] != '/' ||
        !all_of(path, C_TARGET))
        return 0;
    for (size_t i = 0; i < 24; i++)
        if (!is(key24[i], C_TARGET)) return 0;
    writer w = { out, cap, 0, false, false };
    put_str(&w, "GET ");
    put_str(&w, path);
    put_str(&w, " HTTP/1.1\r\nHost: ");
    put_str(&w, host);
    put_str(&w, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    put(&w, key24, 24);
    put_str(&w, "\r\nSec-WebSocket-Version: 13\r\n");
    if (!put_extra_headers(&w, extra_headers, n_extra)) return 0;
    put_str(&w, "\r\n");
    return done(&w);
}

size_t http_head_append(char **buf, uint32_t *len, const void *p, size_t n) {
    if (*buf == NULL && (*buf = malloc(HTTP_MAX_HEAD + 1)) == NULL) return SIZE_MAX;
    size_t room = HTTP_MAX_HEAD + 1 - *len;
    size_t take = n < room ? n : room;
    memcpy(*buf + *len, p, take);
    *len += (uint32_t)take;
    return take;
}
