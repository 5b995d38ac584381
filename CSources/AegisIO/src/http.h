/*
 * http.h — the HTTP/1.1 request head of the WebSocket upgrade, and the
 * responses around it (internal to AegisIO). In the manner of
 * picohttpparser: the caller owns the buffer, the parser points into it and
 * never allocates, and it returns bytes consumed, an error, or need-more.
 */
#ifndef AEGIS_HTTP_H
#define AEGIS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aegis_core.h"   /* aegis_http_header */

#define HTTP_MAX_HEAD 8192      /* bytes, request line to the blank line */
#define HTTP_MAX_HEADERS 64

enum {
    HTTP_NEED_MORE = -2,        /* the head is not complete yet */
    HTTP_ERR_SYNTAX = -1,       /* answer 400 */
    HTTP_ERR_TOO_LARGE = -3,    /* head over HTTP_MAX_HEAD: answer 431 */
    HTTP_ERR_TOO_MANY = -4,     /* over max_headers headers: answer 431 */
    HTTP_ERR_VERSION = -5,      /* not HTTP/1.1 (or 1.x ≥ 1): answer 505 */
};

typedef struct http_request {
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    int minor_version;
    aegis_http_header headers[HTTP_MAX_HEADERS];
    size_t num_headers;
} http_request;

/*
 * Parses a request head from buf[0..len). Returns the head's length (up to
 * and including the blank line) when complete, or one of the negative codes
 * above. Strict: CRLF line ends (a bare LF is tolerated as RFC 9112 allows),
 * token characters in the method and names, no obsolete line folding, no
 * control characters in values; values are trimmed of spaces and tabs.
 * A head longer than HTTP_MAX_HEAD is refused as soon as that is certain,
 * even before it completes.
 */
int http_parse_request(const char *buf, size_t len, http_request *req, size_t max_headers);

typedef struct http_response_head {
    int status;
    int minor_version;
    aegis_http_header headers[HTTP_MAX_HEADERS];
    size_t num_headers;
} http_response_head;

/* Client side: the server's answer to our upgrade. Same return convention. */
int http_parse_response(const char *buf, size_t len, http_response_head *res, size_t max_headers);

/*
 * Collects a head arriving in pieces into *buf (allocated on first use,
 * HTTP_MAX_HEAD + 1 bytes, so that an over-long head is seen as such).
 * Appends what fits of p[0..n) and returns how many bytes it took, or
 * SIZE_MAX when the buffer cannot be allocated. The caller frees *buf.
 * Shared by the server (requests) and the client (responses).
 */
size_t http_head_append(char **buf, uint32_t *len, const void *p, size_t n);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: b64(SHA1(key ‖ GUID)), 28 chars. */
void http_websocket_accept(const char *key, size_t key_len, char out[28]);

/* The 101 response (with Sec-WebSocket-Accept). Returns its length or 0 if cap is short. */
size_t http_write_switching(char *out, size_t cap, const char *accept28);

/*
 * A refusal: `HTTP/1.1 <status> <reason>`, Content-Type: application/json,
 * Content-Length, Connection: close, any extra header lines (each "Name:
 * value", may be NULL), and the body {"error":{"code":"…","message":"…"}}.
 * Returns its length or 0 if cap is short.
 */
size_t http_write_error(char *out, size_t cap, int status, const char *code, const char *message,
                        const char *const *extra_headers, size_t n_extra);

/* Client side: the upgrade request for `path` on `host` with our key (24
 * chars) and any extra header lines. Returns its length or 0. */
size_t http_write_upgrade_request(char *out, size_t cap, const char *host, const char *path,
                                  const char key24[24], const char *const *extra_headers,
                                  size_t n_extra);

#endif /* AEGIS_HTTP_H */
