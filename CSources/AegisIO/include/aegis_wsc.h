/*
 * aegis_wsc.h — the client side of the transport: WebSocket connections
 * (TLS or plain, masked frames) driven by the same loop as the server, for
 * the agent SDK and the load generator.
 *
 * A client endpoint is single-threaded and has no thread of its own: the
 * caller drives it with aegis_wsc_run(), which submits pending work, waits
 * up to a timeout and returns events. One endpoint holds any number of
 * connections (the bench opens thousands on one; the SDK opens one).
 * Connection ids carry a generation, so an id of a closed connection never
 * reaches its successor.
 *
 * Messages are whole WebSocket messages (text or binary); protocol crypto
 * (seal / open) is the caller's business, with aegis_core.h.
 */
#ifndef AEGIS_WSC_H
#define AEGIS_WSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aegis_io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aegis_wsc aegis_wsc;

typedef struct aegis_wsc_config {
    aegis_io_backend backend;   /* AUTO: io_uring when available, else epoll */
    bool tls;                   /* wss:// */
    const char *ca_file;        /* trust this CA (PEM) … */
    const char *pin_sha256;     /* … or exactly this certificate (64 hex chars) … */
                                /* … or, with neither, the system store */
    const char *server_name;    /* SNI and name check; default "localhost" */
    uint32_t max_message;       /* 0: 1 MiB */
    unsigned max_connections;   /* 0: 16384 */
} aegis_wsc_config;

int aegis_wsc_create(const aegis_wsc_config *cfg, aegis_wsc **out, char *err, size_t err_len);
void aegis_wsc_free(aegis_wsc *c);
const char *aegis_wsc_backend_name(const aegis_wsc *c);

/*
 * Starts a connection: TCP connect (from source_ip when given, e.g.
 * "127.0.0.7", to spread load over loopback addresses), TLS, then the
 * upgrade request for `path` with the extra header lines ("Name: value").
 * Completion is reported as AEGIS_WSC_EV_OPEN or AEGIS_WSC_EV_REFUSED.
 */
int aegis_wsc_connect(aegis_wsc *c, const char *host, uint16_t port, const char *path,
                      const char *const *headers, size_t n_headers, const char *source_ip,
                      uint64_t *conn_out);

/* Queues one message (masked, one frame); text must be UTF-8. */
int aegis_wsc_send(aegis_wsc *c, uint64_t conn, bool text, const void *data, size_t len);
int aegis_wsc_ping(aegis_wsc *c, uint64_t conn, const void *data, size_t len);
/* Starts the close handshake. */
int aegis_wsc_close(aegis_wsc *c, uint64_t conn, uint16_t code, const char *reason);

typedef enum aegis_wsc_event_kind {
    AEGIS_WSC_EV_OPEN = 1,      /* the 101 arrived */
    AEGIS_WSC_EV_REFUSED,       /* an HTTP answer other than 101: status, body */
    AEGIS_WSC_EV_MESSAGE,       /* data/len valid until the next aegis_wsc_run */
    AEGIS_WSC_EV_PONG,
    AEGIS_WSC_EV_CLOSED,        /* close_code (1006 when the TCP connection just ended) */
    AEGIS_WSC_EV_ERROR,         /* connect / TLS / protocol failure: error (−errno or TLS_ERR_*) */
} aegis_wsc_event_kind;

typedef struct aegis_wsc_event {
    aegis_wsc_event_kind kind;
    uint64_t conn;
    bool text;
    const uint8_t *data;        /* MESSAGE: payload; REFUSED: body */
    size_t len;
    int status;                 /* REFUSED: HTTP status */
    uint16_t close_code;
    int error;
} aegis_wsc_event;

/* Submits, waits up to timeout_ms (−1 forever, 0 poll) and returns up to
 * max events (≥ 0), or −errno. */
int aegis_wsc_run(aegis_wsc *c, aegis_wsc_event *out, size_t max, int timeout_ms);

/* Bytes queued but not yet sent on a connection (for pacing). */
size_t aegis_wsc_queued(const aegis_wsc *c, uint64_t conn);

#ifdef __cplusplus
}
#endif

#endif /* AEGIS_WSC_H */
