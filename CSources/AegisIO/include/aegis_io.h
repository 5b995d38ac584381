/*
 * aegis_io.h — the transport: agent connections on io_uring (or epoll), TLS,
 * the HTTP upgrade and RFC 6455 framing, feeding the protocol core in
 * batches. This header is its documentation and its whole surface.
 *
 * Threads. aegis_io_start() starts `workers` threads (default: one per
 * core), each with its own loop, its own SO_REUSEPORT listener and its own
 * connections; a connection lives on one worker for its whole life, so no
 * connection state is shared. The control plane (Swift) talks to the
 * workers only through two bounded queues per worker:
 *
 *   events   worker → control plane: upgraded, auth request, message,
 *            closed. aegis_io_poll_events() takes them; the eventfd of
 *            aegis_io_event_fd() is readable while any are pending.
 *   commands control plane → worker: accept a session, refuse, send,
 *            send to many, close. Each worker's eventfd wakes its loop.
 *
 * Each queue is a ring of fixed-size records plus a byte ring for payloads,
 * allocated once: nothing is allocated per message. The consumer side of
 * each queue is lock-free; producers of commands (any Swift task) take a
 * per-worker mutex among themselves, which the worker never touches.
 *
 * What the workers do alone, without the control plane: TLS, the HTTP head
 * (8 KiB, 64 headers, 5 s), the request-only upgrade checks of §2 (with the
 * core's aegis_upgrade_check), RFC 6455, steps 1–2 of the auth check,
 * opening messages (aegis_open_batch: syntax, clock, AEAD, signature,
 * duplicates), sealing what the control plane sends (aegis_seal_batch),
 * ping/pong, timeouts, backpressure. What needs state or a database — rate
 * limits, enrollment policy, nonce replay, storage, routing, acks — is the
 * control plane's.
 *
 * Connection ids are 64-bit: worker index, slot and a generation, so a
 * command for a connection that has since closed is ignored, never applied
 * to its successor in the slot.
 */
#ifndef AEGIS_IO_H
#define AEGIS_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aegis_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aegis_io aegis_io;

typedef enum aegis_io_backend {
    AEGIS_IO_AUTO = 0,    /* io_uring when the kernel allows it, else epoll (logged) */
    AEGIS_IO_URING = 1,   /* fail to start without io_uring */
    AEGIS_IO_EPOLL = 2,
} aegis_io_backend;

typedef struct aegis_io_config {
    const char *host;                  /* listen address; "0.0.0.0" by default */
    uint16_t port;                     /* 0 picks a free port: see aegis_io_port() */
    unsigned workers;                  /* 0: one per online core */
    aegis_io_backend backend;
    /* TLS: cert and key files; with neither, a self-signed certificate for
     * localhost is created in data_dir. `plaintext` serves ws:// instead and
     * must be asked for explicitly (behind a TLS-terminating proxy). */
    const char *tls_cert;
    const char *tls_key;
    const char *data_dir;
    bool plaintext;
    /* Conformance echo mode: every text and binary message is echoed, on
     * any path, with no upgrade checks and no auth. For testing framing. */
    bool echo;
    const aegis_identity *server_identity; /* not needed in echo mode */
    uint32_t max_message;              /* after auth_ok; 0: 1 MiB */
    uint32_t max_message_before_auth;  /* 0: 16 KiB */
    uint32_t write_queue_limit;        /* bytes queued per connection before 4008; 0: 4 MiB */
    uint32_t head_timeout_ms;          /* 0: 5000 */
    uint32_t auth_timeout_ms;          /* 0: 10000 → 4002 */
    uint32_t idle_timeout_ms;          /* 0: 90000 (three 30 s heartbeats) → 4006 */
    uint64_t skew;                     /* 0: 60 s */
    bool require_ephemeral;
    unsigned max_connections;          /* per worker; 0: 16384 */
    unsigned ticket_rotate_seconds;    /* 0: 3600 */
} aegis_io_config;

/* Starts the workers. On failure returns a negative errno-style code and
 * writes a message naming the problem (bad address, certificate, backend). */
int aegis_io_start(const aegis_io_config *cfg, aegis_io **out, char *err, size_t err_len);
/* Graceful drain (SIGTERM): stop accepting, answer new upgrades 503
 * `draining`, close live sessions with 1001, flush what is queued. */
void aegis_io_drain(aegis_io *io);
/* Stops the workers (after a drain, once aegis_io_idle() or a deadline) and frees all. */
void aegis_io_stop(aegis_io *io);
/* True when no connection is open on any worker. */
bool aegis_io_idle(const aegis_io *io);
/* True once aegis_io_drain() was called. */
bool aegis_io_draining(const aegis_io *io);

/* Counters for /metrics, summed over the workers since the start. Each
 * worker opens (and seals) what one loop iteration gathered in one batch;
 * a batch of n messages counts in every bucket i with n <= 2^i
 * (cumulative, as Prometheus histograms are), the last bucket being +Inf. */
#define AEGIS_IO_BATCH_BUCKETS 10
typedef struct aegis_io_batch_stats {
    uint64_t batches;
    uint64_t messages;
    uint64_t le[AEGIS_IO_BATCH_BUCKETS];
} aegis_io_batch_stats;

typedef struct aegis_io_stats {
    aegis_io_batch_stats open;   /* up messages: aegis_open_batch() */
    aegis_io_batch_stats seal;   /* down messages: aegis_seal_batch() */
    uint64_t connections;        /* open now, authenticated or not */
} aegis_io_stats;

void aegis_io_get_stats(const aegis_io *io, aegis_io_stats *out);

/* Rereads the TLS certificate and key (SIGHUP) without dropping connections. */
int aegis_io_reload_tls(aegis_io *io, char *err, size_t err_len);

uint16_t aegis_io_port(const aegis_io *io);
const char *aegis_io_backend_name(const aegis_io *io);   /* "io_uring" / "epoll" */
/* SHA-256 of the certificate in use (64 hex chars), "" in plaintext mode. */
const char *aegis_io_tls_fingerprint(const aegis_io *io);

/* ---- events -------------------------------------------------------------- */

typedef enum aegis_io_event_kind {
    AEGIS_IO_EV_UPGRADED = 1,     /* the 101 is sent; headers checked (§2) */
    AEGIS_IO_EV_AUTH_REQUEST = 2, /* steps 1–2 passed; do 3–4, verify (5), then accept or refuse */
    AEGIS_IO_EV_MESSAGE = 3,      /* a message that passed every check of §4 */
    AEGIS_IO_EV_CLOSED = 4,       /* the connection is gone; its id is dead */
} aegis_io_event_kind;

typedef struct aegis_io_event {
    aegis_io_event_kind kind;
    uint64_t conn;
    /* UPGRADED */
    char agent_id[AEGIS_AGENT_ID_MAX + 1];
    uint8_t public_key[AEGIS_PUBLIC_KEY_BYTES];
    char enrollment_token[257];        /* "" when absent */
    char peer[64];                     /* "ip:port" */
    /* AUTH_REQUEST */
    aegis_auth_request auth;
    /* MESSAGE: header fields, the plaintext, and the ciphertext, nonce and
     * signature as received (for the audit record); the buffers are valid
     * until the next aegis_io_poll_events() call. */
    aegis_message message;
    /* CLOSED: the code sent or received, and who closed. */
    uint16_t close_code;
    bool closed_by_peer;
} aegis_io_event;

/* Readable (an eventfd) while events are pending. */
int aegis_io_event_fd(const aegis_io *io);
/* Takes up to max pending events from all workers. Payloads of the events
 * returned by the previous call are released by this call. */
size_t aegis_io_poll_events(aegis_io *io, aegis_io_event *out, size_t max);

/* ---- commands ------------------------------------------------------------ */
/* Each returns 0, -EAGAIN when the worker's command queue is full (try again
 * after the next poll), or -EINVAL. A command for a dead connection is
 * accepted and dropped by the worker. */

/* Completes a handshake: the worker sends auth_ok and owns the session from
 * now on (it seals and opens with it, and frees it at close). */
int aegis_io_accept(aegis_io *io, uint64_t conn, aegis_session *session,
                    const char *auth_ok_json, size_t len);
/* Refuses a handshake: sends {"type":"auth_error",…} and closes with close_code. */
int aegis_io_refuse(aegis_io *io, uint64_t conn, const char *auth_code, const char *message,
                    uint16_t close_code);
/* Seals (in the worker, batched) and sends one message. */
int aegis_io_send(aegis_io *io, uint64_t conn, const aegis_message_header *h,
                  const uint8_t *plaintext, size_t len);
/* Closes with a code and reason (e.g. 4009 when a newer session replaces it). */
int aegis_io_close(aegis_io *io, uint64_t conn, uint16_t code, const char *reason);

#ifdef __cplusplus
}
#endif

#endif /* AEGIS_IO_H */
