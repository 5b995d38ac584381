/*
 * server.c — the transport's workers: accept, TLS, the HTTP upgrade,
 * RFC 6455, the protocol core in batches, and the queues to the control
 * plane. aegis_io.h documents the behaviour; this file is how.
 *
 * One worker = one thread, one loop, one SO_REUSEPORT listener and a table
 * of connections. Each loop iteration:
 *   1. takes the completions of one loop_run_once (one system call on
 *      io_uring in steady state): accepts, receives, sends, the wake-up;
 *   2. runs the received bytes through TLS, the HTTP parser and the frame
 *      reader; whole messages of authenticated sessions are collected as
 *      open jobs, their text in the iteration's arena (no copy, no malloc);
 *   3. opens them in one aegis_open_batch() and publishes the events;
 *   4. drains the command queue and seals what it asks for in one
 *      aegis_seal_batch();
 *   5. every 250 ms, expires deadlines (head, auth, idle, closing).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "aegis_io.h"
#include "http.h"
#include "loop.h"
#include "outq.h"
#include "queue.h"
#include "tls.h"
#include "ws.h"

/* ---- sizes ----------------------------------------------------------------- */

#define RECV_BUFS 1024            /* per worker pool: 1024 × 16 KiB = 16 MiB */
#define RECV_BUF_SIZE 16384
#define EVENT_QUEUE_BYTES (32u << 20)
#define COMMAND_QUEUE_BYTES (16u << 20)
#define ARENA_BYTES (8u << 20)    /* messages and open buffers of one iteration */
#define PLAIN_BYTES 65536         /* TLS plaintext scratch */
#define MAX_JOBS 256
#define TIMER_SCAN_MS 250
#define CLOSE_GRACE_MS 2000

/* ---- connections ------------------------------------------------------------ */

enum conn_state {
    C_FREE = 0,
    C_HEAD,          /* TLS handshake and HTTP head */
    C_ECHO,          /* conformance echo mode */
    C_AUTH_WAIT,     /* upgraded: waiting for the auth request */
    C_AUTH_DECISION, /* auth request handed to the control plane */
    C_SESSION,       /* authenticated */
    C_CLOSING,       /* close sent or connection failed: flushing */
    C_ZOMBIE,        /* socket closed; waiting for the in-flight send to complete */
};

typedef struct conn {
    int fd;
    uint32_t gen;
    uint8_t state;
    bool sending, close_after_flush, close_sent, upgraded, closed_by_peer, lingering;
    uint16_t close_code;
    uint64_t deadline_ms;
    tls_conn *tls;
    ws_reader ws;
    char *head;               /* partial HTTP head, while in C_HEAD */
    uint32_t head_len;
    uint8_t *msg;             /* partial message spanning receives */
    size_t msg_cap;
    outq out;
    aegis_session *session;
    uint8_t agent_id_len;
    char agent_id[AEGIS_AGENT_ID_MAX + 1];
    uint8_t public_key[AEGIS_PUBLIC_KEY_BYTES];
    uint32_t next_free;
} conn;

/* ---- queue records ---------------------------------------------------------- */

typedef struct ev_rec {
    uint8_t kind;
    bool closed_by_peer;
    uint16_t close_code;
    uint32_t pt_len;         /* MESSAGE: plaintext bytes, then ct_len ciphertext bytes */
    uint32_t ct_len;
    uint64_t conn;
    union {
        struct {
            char agent_id[AEGIS_AGENT_ID_MAX + 1];
            uint8_t public_key[AEGIS_PUBLIC_KEY_BYTES];
            char token[257];
            char peer[64];
        } up;
        aegis_auth_request auth;
        aegis_message msg;
    } u;
    uint8_t pt[];
} ev_rec;

enum { CMD_ACCEPT = 1, CMD_REFUSE, CMD_SEND, CMD_CLOSE };

typedef struct cmd_rec {
    uint8_t kind;
    uint8_t type;
    uint16_t close_code;
    uint8_t id_len, ref_len, channel_len;
    uint32_t data_len;
    uint64_t conn;
    uint64_t timestamp;
    aegis_session *session;
    char id[AEGIS_ID_MAX], ref[AEGIS_ID_MAX], channel[AEGIS_CHANNEL_MAX];
    char auth_code[32];
    uint8_t data[];
} cmd_rec;

/* ---- workers ------------------------------------------------------------------ */

typedef struct open_job_ctx {
    uint64_t conn;
} open_job_ctx;

typedef struct worker {
    aegis_io *io;
    unsigned index;
    pthread_t thread;
    loop *loop;
    loop_backend backend;
    int listen_fd;
    int wake_fd;
    _Atomic bool stop;
    conn *conns;
    uint32_t max_conns, free_head;
    _Atomic uint32_t live;
    spsc_queue events;
    spsc_queue commands;
    pthread_mutex_t command_lock;   /* among command producers only */
    /* Set by the first producer after the worker last looked at its
     * commands; only that producer writes wake_fd, so a burst of commands
     * (a batch of acks) costs one write(2) and one wake-up, not one each. */
    _Atomic bool wake_pending;
    size_t event_cursor;            /* consumer side (the control plane) */
    bool events_published;
    uint8_t *arena;
    size_t arena_used;
    uint8_t *plain;
    aegis_open_job open_jobs[MAX_JOBS];
    uint64_t open_conn[MAX_JOBS];
    size_t n_open;
    aegis_seal_job seal_jobs[MAX_JOBS];
    uint64_t seal_conn[MAX_JOBS];
    size_t n_seal;
    uint64_t now_ms, last_scan_ms;
    bool draining_seen;
    /* Written by this worker only, read by aegis_io_get_stats(). */
    _Atomic uint64_t batch_counts[2][2 + AEGIS_IO_BATCH_BUCKETS];
} worker;

enum { STATS_OPEN, STATS_SEAL };

/* One batch of n (> 0) messages: a plain load and store, as only this
 * worker writes the counters. */
static void count_batch(worker *w, int which, size_t n) {
    _Atomic uint64_t *c = w->batch_counts[which];
    atomic_store_explicit(&c[0], atomic_load_explicit(&c[0], memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_store_explicit(&c[1], atomic_load_explicit(&c[1], memory_order_relaxed) + n, memory_order_relaxed);
    for (int i = 0; i < AEGIS_IO_BATCH_BUCKETS; i++) {
        if (i == AEGIS_IO_BATCH_BUCKETS - 1 || n <= ((size_t)1 << i))
            atomic_store_explicit(&c[2 + i], atomic_load_explicit(&c[2 + i], memory_order_relaxed) + 1,
                                  memory_order_relaxed);
    }
}

struct aegis_io {
    aegis_io_config cfg;
    worker *workers;
    unsigned n_workers;
    int event_fd;
    uint16_t port;
    tls_server *tls;
    char fingerprint[65];
    _Atomic bool draining;
    const char *backend_name;
};

/* ---- small helpers -------------------------------------------------------------- */

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t wall_s(void) { return (uint64_t)time(NULL); }

static uint64_t conn_id(const worker *w, const conn *c) {
    return ((uint64_t)w->index << 56) | ((uint64_t)(c - w->conns) << 24) | (c->gen & 0xffffff);
}

static conn *conn_lookup(worker *w, uint64_t id) {
    uint32_t slot = (uint32_t)((id >> 24) & 0xffffffff);
    if (slot >= w->max_conns) return NULL;
    conn *c = &w->conns[slot];
    if (c->state == C_FREE || c->state == C_ZOMBIE || (c->gen & 0xffffff) != (id & 0xffffff))
        return NULL;
    return c;
}

/* Loop tags: slot and generation, and the operation kind for sanity. */
static uint64_t tag_of(const worker *w, const conn *c) {
    return ((uint64_t)(c - w->conns) << 32) | c->gen;
}
#define TAG_LISTEN UINT64_C(0xffffffff00000001)
#define TAG_WAKE UINT64_C(0xffffffff00000002)

/* ---- events --------------------------------------------------------------------- */

/* A queue record's bytes start 4 bytes past an 8-aligned position (after
 * its length word), and ev_rec / cmd_rec hold 64-bit fields and pointers:
 * both ends round the record pointer up to 8, within REC_PAD spare bytes
 * reserved for it. The rounding is the same on both sides, as records lie at
 * 8-aligned offsets of a 64-aligned buffer. */
#define REC_PAD 8
static void *rec_align(void *p) {
    return p ? (void *)(((uintptr_t)p + 7) & ~(uintptr_t)7) : NULL;
}

static ev_rec *event_reserve(worker *w, size_t pt_len) {
    ev_rec *e = rec_align(spsc_reserve(&w->events, sizeof(ev_rec) + pt_len + REC_PAD));
    if (e) {
        memset(e, 0, sizeof *e);
        e->pt_len = (uint32_t)pt_len;
    }
    return e;
}

static void event_commit(worker *w) {
    spsc_commit(&w->events);
    w->events_published = true;
}

/* ---- sending ---------------------------------------------------------------------- */

static void conn_destroy(worker *w, conn *c);

static void conn_start_send(worker *w, conn *c) {
    if (c->sending || c->state == C_ZOMBIE) return;
    size_t len;
    const uint8_t *p = outq_next(&c->out, &len);
    if (p != NULL) {
        if (loop_send(w->loop, c->fd, p, len, tag_of(w, c)) == 0)
            c->sending = true;
        else
            conn_destroy(w, c);
        return;
    }
    /* Nothing left (and outq_next freed the buffers). */
    if (c->close_after_flush && !c->lingering) {
        /* Lingering close: half-close and read (and drop) what the peer
         * still sends until its FIN or the grace period. Closing at once
         * with unread input would make the kernel answer with a reset, which
         * can destroy our close frame before the peer reads it. */
        c->lingering = true;
        c->state = C_CLOSING;
        c->deadline_ms = w->now_ms + CLOSE_GRACE_MS;
        shutdown(c->fd, SHUT_WR);
    }
}

/* Queues bytes for the socket, through TLS when there is TLS. Past the
 * write-queue limit the peer is a slow consumer: 4008 and drop. */
static bool conn_queue_raw(worker *w, conn *c, const void *p, size_t n) {
    if (c->tls) {
        if (tls_write(c->tls, p, n) != TLS_OK) return false;
        size_t pend;
        while ((pend = tls_pending(c->tls)) > 0) {
            uint8_t tmp[16384];
            size_t k = tls_take(c->tls, tmp, sizeof tmp);
            if (k == 0 || !outq_append(&c->out, tmp, k)) return false;
        }
    } else if (!outq_append(&c->out, p, n)) {
        return false;
    }
    size_t queued = outq_queued(&c->out);
    uint32_t limit = w->io->cfg.write_queue_limit;
    if (queued > limit && !c->close_sent) {
        /* Slow consumer: what is queued is dropped, and so is the peer,
         * told why in a close frame behind what is already in flight. */
        outq_drop_pending(&c->out);
        c->close_code = 4008;
        c->close_after_flush = true;
        c->state = C_CLOSING;
        c->close_sent = true;
        c->deadline_ms = w->now_ms + CLOSE_GRACE_MS;
        uint8_t frame[2 + 125];
        size_t n = ws_close_payload(frame + 2, 4008, "slow consumer", 13);
        frame[0] = 0x80 | WS_OP_CLOSE;
        frame[1] = (uint8_t)n;
        if (c->tls) {
            if (tls_write(c->tls, frame, n + 2) == TLS_OK) {
                uint8_t tmp[512];
                size_t k;
                while ((k = tls_take(c->tls, tmp, sizeof tmp)) > 0) outq_append(&c->out, tmp, k);
            }
        } else {
            outq_append(&c->out, frame, n + 2);
        }
    }
    return true;
}

static void conn_flush_tls(worker *w, conn *c) {
    if (!c->tls) return;
    uint8_t tmp[16384];
    while (tls_pending(c->tls) > 0) {
        size_t k = tls_take(c->tls, tmp, sizeof tmp);
        if (k == 0 || !outq_append(&c->out, tmp, k)) break;
    }
    conn_start_send(w, c);
}

static void conn_send_frame(worker *w, conn *c, uint8_t opcode, const void *p, size_t n) {
    if (c->close_sent && opcode != WS_OP_CLOSE) return;
    uint8_t hdr[14];
    size_t h = ws_frame_header(hdr, opcode, true, n, NULL);
    if (c->tls) {
        /* One TLS record for header and payload when they fit a small buffer. */
        if (n <= 4096) {
            uint8_t tmp[4096 + 14];
            memcpy(tmp, hdr, h);
            memcpy(tmp + h, p, n);
            conn_queue_raw(w, c, tmp, h + n);
        } else {
            conn_queue_raw(w, c, hdr, h);
            conn_queue_raw(w, c, p, n);
        }
    } else {
        conn_queue_raw(w, c, hdr, h);
        if (n) conn_queue_raw(w, c, p, n);
    }
    conn_start_send(w, c);
}

/* Sends a close frame (once) and closes the socket when it is flushed. */
static void conn_close(worker *w, conn *c, uint16_t code, const char *reason) {
    if (c->state == C_ZOMBIE || c->state == C_FREE) return;
    if (!c->close_sent) {
        uint8_t payload[125];
        size_t n = ws_close_payload(payload, code, reason, reason ? strlen(reason) : 0);
        conn_send_frame(w, c, WS_OP_CLOSE, payload, n);
        /* A send that failed at once has destroyed the connection. */
        if (c->state == C_FREE || c->state == C_ZOMBIE) return;
        c->close_sent = true;
        c->close_code = code;
    }
    c->state = C_CLOSING;
    c->close_after_flush = true;
    c->deadline_ms = w->now_ms + CLOSE_GRACE_MS;
    if (c->state != C_ZOMBIE) conn_start_send(w, c);
}

/* An HTTP answer before the upgrade, then close. */
static void conn_http_refuse(worker *w, conn *c, int status, const char *code,
                             const char *message) {
    const char *extra[1];
    size_t n_extra = 0;
    if (status == 405) extra[n_extra++] = "Allow: GET";
    if (status == 426) extra[n_extra++] = "Sec-WebSocket-Version: 13";
    char out[1024];
    size_t n = http_write_error(out, sizeof out, status, code, message, extra, n_extra);
    if (n) conn_queue_raw(w, c, out, n);
    c->state = C_CLOSING;
    c->close_sent = true;
    c->close_after_flush = true;
    c->deadline_ms = w->now_ms + CLOSE_GRACE_MS;
    conn_start_send(w, c);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static void conn_release_slot(worker *w, conn *c) {
    outq_free(&c->out);
    c->state = C_FREE;
    c->gen++;
    c->next_free = w->free_head;
    w->free_head = (uint32_t)(c - w->conns);
    atomic_fetch_sub(&w->live, 1);
}

static void conn_destroy(worker *w, conn *c) {
    if (c->state == C_FREE || c->state == C_ZOMBIE) return;
    if (c->upgraded && !w->io->cfg.echo) {
        ev_rec *e = event_reserve(w, 0);
        if (e) {
            e->kind = AEGIS_IO_EV_CLOSED;
            e->conn = conn_id(w, c);
            e->close_code = c->close_code ? c->close_code : WS_CLOSE_NO_STATUS;
            e->closed_by_peer = c->closed_by_peer;
            event_commit(w);
        }
    }
    loop_cancel(w->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    tls_conn_free(c->tls);
    c->tls = NULL;
    free(c->head);
    c->head = NULL;
    free(c->msg);
    c->msg = NULL;
    c->msg_cap = 0;
    aegis_session_free(c->session);
    c->session = NULL;
    outq_free_pending(&c->out);
    if (c->sending) {
        /* The kernel may still read the in-flight buffer: keep it (and the
         * slot) until the send's completion arrives. */
        c->state = C_ZOMBIE;
        c->gen++;   /* new commands and events no longer reach this slot */
        return;
    }
    conn_release_slot(w, c);
}

static void conn_fail(worker *w, conn *c, uint16_t code, const char *reason) {
    conn_close(w, c, code, reason);
}

/* ---- the upgrade -------------------------------------------------------------------- */

static bool is_agent_header_code(const char *code) {
    return strcmp(code, "missing_header") == 0 || strcmp(code, "duplicate_header") == 0 ||
           strcmp(code, "invalid_agent_id") == 0 || strcmp(code, "invalid_public_key") == 0 ||
           strcmp(code, "unsupported_agent_version") == 0;
}

static void peer_text(int fd, char out[64]) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    out[0] = '\0';
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return;
    char host[INET6_ADDRSTRLEN];
    char serv[8];
    if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(out, 64, "%s:%s", host, serv);
}

static void conn_upgrade(worker *w, conn *c, const http_request *req) {
    aegis_io *io = w->io;
    aegis_upgrade up;
    /* Echo mode serves any path and no agent headers: the core's checks are
     * run on the path it expects, and its agent-header group is waived. */
    const char *path = io->cfg.echo ? "/ws/agent" : req->path;
    size_t path_len = io->cfg.echo ? 9 : req->path_len;
    int status = aegis_upgrade_check(req->method, req->method_len, path, path_len, req->headers,
                                     req->num_headers, atomic_load(&io->draining), &up);
    if (status != 0 && !(io->cfg.echo && status == 400 && is_agent_header_code(up.error_code))) {
        conn_http_refuse(w, c, status, up.error_code, "upgrade refused");
        return;
    }
    const char *key = up.websocket_key;
    size_t key_len = up.websocket_key_len;
    if (status != 0) {
        /* echo mode with agent headers missing: find the key ourselves */
        for (size_t i = 0; i < req->num_headers; i++)
            if (req->headers[i].name_len == 17 &&
                strncasecmp(req->headers[i].name, "Sec-WebSocket-Key", 17) == 0) {
                key = req->headers[i].value;
                key_len = req->headers[i].value_len;
            }
    }
    char accept[28], out[256];
    http_websocket_accept(key, key_len, accept);
    size_t n = http_write_switching(out, sizeof out, accept);
    conn_queue_raw(w, c, out, n);
    conn_start_send(w, c);
    c->upgraded = true;
    if (io->cfg.echo) {
        c->state = C_ECHO;
        ws_reader_init(&c->ws, true, io->cfg.max_message);
        c->deadline_ms = w->now_ms + io->cfg.idle_timeout_ms;
        return;
    }
    c->state = C_AUTH_WAIT;
    c->deadline_ms = w->now_ms + io->cfg.auth_timeout_ms;
    c->agent_id_len = (uint8_t)up.agent_id_len;
    memcpy(c->agent_id, up.agent_id, up.agent_id_len);
    c->agent_id[up.agent_id_len] = '\0';
    memcpy(c->public_key, up.public_key, AEGIS_PUBLIC_KEY_BYTES);

    ev_rec *e = event_reserve(w, 0);
    if (e == NULL) {
        conn_fail(w, c, WS_CLOSE_TRY_AGAIN, "gateway busy");
        return;
    }
    e->kind = AEGIS_IO_EV_UPGRADED;
    e->conn = conn_id(w, c);
    memcpy(e->u.up.agent_id, c->agent_id, (size_t)c->agent_id_len + 1);
    memcpy(e->u.up.public_key, c->public_key, AEGIS_PUBLIC_KEY_BYTES);
    if (up.enrollment_token && up.enrollment_token_len < sizeof e->u.up.token) {
        memcpy(e->u.up.token, up.enrollment_token, up.enrollment_token_len);
        e->u.up.token[up.enrollment_token_len] = '\0';
    }
    peer_text(c->fd, e->u.up.peer);
    event_commit(w);
}

/* ---- messages ------------------------------------------------------------------------ */

static void *arena_alloc(worker *w, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (ARENA_BYTES - w->arena_used < n) return NULL;
    void *p = w->arena + w->arena_used;
    w->arena_used += n;
    return p;
}

static void run_open_batch(worker *w);

static void conn_auth_request(worker *w, conn *c, const uint8_t *text, size_t len) {
    aegis_io *io = w->io;
    aegis_auth_context ctx = {
        .header_agent_id = c->agent_id, .header_agent_id_len = c->agent_id_len,
        .header_public_key = c->public_key, .now = wall_s(), .skew = io->cfg.skew,
        .require_ephemeral = io->cfg.require_ephemeral,
    };
    ev_rec *e = event_reserve(w, 0);
    if (e == NULL) {
        conn_fail(w, c, WS_CLOSE_TRY_AGAIN, "gateway busy");
        return;
    }
    aegis_status st = aegis_auth_request_check((const char *)text, len, &ctx, &e->u.auth);
    if (st != AEGIS_OK) {
        /* The reservation is simply not committed. */
        char json[512];
        size_t n = 0;
        const char *code = aegis_status_auth_code(st);
        if (code == NULL) code = "malformed";
        const char *why = aegis_status_name(st);
        if (aegis_auth_error_json(code, why, strlen(why), json, sizeof json, &n) == AEGIS_OK)
            conn_send_frame(w, c, WS_OP_TEXT, json, n);
        int close = aegis_status_handshake_close_code(st);
        conn_close(w, c, (uint16_t)(close ? close : 4001), code);
        return;
    }
    e->kind = AEGIS_IO_EV_AUTH_REQUEST;
    e->conn = conn_id(w, c);
    event_commit(w);
    c->state = C_AUTH_DECISION;
}

/* A whole message; an authenticated session's is queued for the batch. */
static bool conn_message(worker *w, conn *c, uint8_t opcode, const uint8_t *p, size_t len,
                         bool in_arena) {
    if (c->state == C_ECHO) {
        conn_send_frame(w, c, opcode, p, len);
        return false;
    }
    if (opcode == WS_OP_BINARY) {
        conn_fail(w, c, WS_CLOSE_UNSUPPORTED, "binary messages are not part of the protocol");
        return false;
    }
    switch (c->state) {
    case C_AUTH_WAIT:
        conn_auth_request(w, c, p, len);
        return false;
    case C_AUTH_DECISION:
        conn_fail(w, c, 4004, "message before auth_ok");
        return false;
    case C_SESSION:
        break;
    default:
        return false;
    }
    /* The text and its open buffer go in the iteration's arena. A message
     * received into the arena lies at its free end already. */
    size_t buf_len = aegis_open_buffer_size(len);
    size_t need = ((len + 15) & ~(size_t)15) + ((buf_len + 15) & ~(size_t)15);
    if (w->n_open == MAX_JOBS || ARENA_BYTES - w->arena_used < need) {
        run_open_batch(w);  /* empties the arena */
        if (in_arena) {
            memmove(w->arena, p, len);
            p = w->arena;
        }
    }
    const uint8_t *json;
    if (in_arena) {
        json = p;
        w->arena_used += (len + 15) & ~(size_t)15;
    } else {
        uint8_t *copy = arena_alloc(w, len);
        memcpy(copy, p, len);
        json = copy;
    }
    aegis_open_job *j = &w->open_jobs[w->n_open];
    j->session = c->session;
    j->json = (const char *)json;
    j->json_len = len;
    j->buf = arena_alloc(w, buf_len);
    j->buf_cap = buf_len;
    w->open_conn[w->n_open++] = conn_id(w, c);
    return true;
}

static void run_open_batch(worker *w) {
    if (w->n_open == 0) {
        w->arena_used = 0;
        return;
    }
    aegis_open_batch(w->open_jobs, w->n_open, wall_s());
    count_batch(w, STATS_OPEN, w->n_open);
    for (size_t i = 0; i < w->n_open; i++) {
        aegis_open_job *j = &w->open_jobs[i];
        conn *c = conn_lookup(w, w->open_conn[i]);
        if (c == NULL || c->state != C_SESSION) continue;
        if (j->status != AEGIS_OK) {
            const char *reason = aegis_status_message_reason(j->status);
            conn_fail(w, c, 4004, reason ? reason : "bad message");
            continue;
        }
        /* The plaintext for consumers and the ciphertext for the audit record. */
        ev_rec *e = event_reserve(w, j->msg.plaintext_len + j->msg.ciphertext_len);
        if (e == NULL) {
            /* The control plane is behind: the agent resends after 1013. */
            conn_fail(w, c, WS_CLOSE_TRY_AGAIN, "gateway busy");
            continue;
        }
        e->kind = AEGIS_IO_EV_MESSAGE;
        e->conn = w->open_conn[i];
        e->u.msg = j->msg;
        e->u.msg.plaintext = NULL;
        e->u.msg.ciphertext = NULL;
        e->pt_len = (uint32_t)j->msg.plaintext_len;
        e->ct_len = (uint32_t)j->msg.ciphertext_len;
        memcpy(e->pt, j->msg.plaintext, j->msg.plaintext_len);
        memcpy(e->pt + e->pt_len, j->msg.ciphertext, j->msg.ciphertext_len);
        event_commit(w);
    }
    w->n_open = 0;
    w->arena_used = 0;
}

/* Frames from decrypted bytes. */
static void conn_frames(worker *w, conn *c, const uint8_t *p, size_t n) {
    ws_event ev;
    while (c->state != C_CLOSING && c->state != C_FREE && c->state != C_ZOMBIE) {
        uint8_t *mb;
        size_t cap;
        bool arena = c->msg == NULL;
        if (arena) {
            mb = w->arena + w->arena_used;
            cap = ARENA_BYTES - w->arena_used;
        } else {
            mb = c->msg;
            cap = c->msg_cap;
        }
        size_t used = ws_read(&c->ws, p, n, mb, cap, &ev);
        p += used;
        n -= used;
        switch (ev.kind) {
        case WS_EV_NONE:
            if (arena && c->ws.msg_len > 0) {
                /* A message continues in the next receive: it moves out of
                 * the iteration's arena into a buffer of its own. */
                size_t want = c->ws.msg_len * 2 > 16384 ? c->ws.msg_len * 2 : 16384;
                c->msg = malloc(want);
                if (c->msg == NULL) {
                    conn_fail(w, c, WS_CLOSE_INTERNAL, "out of memory");
                    return;
                }
                memcpy(c->msg, mb, c->ws.msg_len);
                c->msg_cap = want;
            }
            return;
        case WS_EV_NEED_BUFFER:
            if (arena && w->arena_used > 0 && ev.needed <= ARENA_BYTES) {
                run_open_batch(w);  /* frees the arena; the partial message moves to 0 */
                if (c->ws.msg_len) memmove(w->arena, mb, c->ws.msg_len);
                continue;
            }
            {
                uint8_t *q = realloc(arena ? NULL : c->msg, ev.needed);
                if (q == NULL) {
                    conn_fail(w, c, WS_CLOSE_INTERNAL, "out of memory");
                    return;
                }
                if (arena && c->ws.msg_len) memcpy(q, mb, c->ws.msg_len);
                c->msg = q;
                c->msg_cap = ev.needed;
            }
            continue;
        case WS_EV_MESSAGE:
            c->deadline_ms = w->now_ms + w->io->cfg.idle_timeout_ms;
            conn_message(w, c, ev.opcode, ev.data, ev.len, arena);
            if (!arena) {
                free(c->msg);
                c->msg = NULL;
                c->msg_cap = 0;
            }
            continue;
        case WS_EV_PING:
            c->deadline_ms = w->now_ms + w->io->cfg.idle_timeout_ms;
            conn_send_frame(w, c, WS_OP_PONG, ev.data, ev.len);
            continue;
        case WS_EV_PONG:
            c->deadline_ms = w->now_ms + w->io->cfg.idle_timeout_ms;
            continue;
        case WS_EV_CLOSE:
            c->closed_by_peer = true;
            if (!c->close_sent) {
                /* Echo the peer's code, as RFC 6455 §5.5.1 suggests. */
                uint16_t code = ev.close_code == WS_CLOSE_NO_STATUS ? 0 : ev.close_code;
                uint8_t payload[125];
                size_t len = code ? ws_close_payload(payload, code, NULL, 0) : 0;
                conn_send_frame(w, c, WS_OP_CLOSE, payload, len);
                c->close_sent = true;
            }
            c->close_code = ev.close_code;
            c->state = C_CLOSING;
            c->close_after_flush = true;
            c->deadline_ms = w->now_ms + CLOSE_GRACE_MS;
            conn_start_send(w, c);
            return;
        case WS_EV_ERROR:
            conn_fail(w, c, ev.error_code, "frame error");
            return;
        }
    }
}

static void conn_input(worker *w, conn *c, const uint8_t *p, size_t n) {
    if (c->state == C_HEAD) {
        size_t take = http_head_append(&c->head, &c->head_len, p, n);
        if (take == SIZE_MAX) {
            conn_destroy(w, c);
            return;
        }
        http_request req;
        int r = http_parse_request(c->head, c->head_len, &req, HTTP_MAX_HEADERS);
        if (r == HTTP_NEED_MORE) {
            if (c->head_len > HTTP_MAX_HEAD) conn_http_refuse(w, c, 431, "head_too_large", "request head over 8 KiB");
            return;
        }
        if (r < 0) {
            int status = r == HTTP_ERR_VERSION ? 505 : r == HTTP_ERR_SYNTAX ? 400 : 431;
            conn_http_refuse(w, c, status, status == 400 ? "bad_request" : status == 505 ? "http_version" : "head_too_large",
                             "cannot parse the request head");
            return;
        }
        conn_upgrade(w, c, &req);
        /* Bytes after the head are the first frames. */
        size_t extra_in_head = c->head_len - (size_t)r;
        uint8_t rest[HTTP_MAX_HEAD + 1];
        memcpy(rest, c->head + r, extra_in_head);
        free(c->head);
        c->head = NULL;
        c->head_len = 0;
        if (c->state == C_CLOSING) return;
        if (extra_in_head) conn_frames(w, c, rest, extra_in_head);
        if (take < n) conn_frames(w, c, p + take, n - take);
        return;
    }
    conn_frames(w, c, p, n);
}

/* ---- completions ---------------------------------------------------------------------- */

static void on_accept(worker *w, int fd) {
    aegis_io *io = w->io;
    if (fd < 0) return;
    /* While draining, connections are still accepted so that their
     * upgrade gets a clear 503 `draining` rather than a hang. */
    if (w->free_head == UINT32_MAX) {
        close(fd);
        return;
    }
    conn *c = &w->conns[w->free_head];
    w->free_head = c->next_free;
    atomic_fetch_add(&w->live, 1);
    uint32_t gen = c->gen;
    memset(c, 0, sizeof *c);
    c->gen = gen;
    c->fd = fd;
    c->state = C_HEAD;
    c->deadline_ms = w->now_ms + io->cfg.head_timeout_ms;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ws_reader_init(&c->ws, true, io->cfg.max_message_before_auth);
    if (io->tls) {
        c->tls = tls_conn_server(io->tls);
        if (c->tls == NULL) {
            close(fd);
            c->state = C_FREE;
            conn_release_slot(w, c);
            return;
        }
    }
    if (loop_recv(w->loop, fd, tag_of(w, c)) != 0) conn_destroy(w, c);
}

static void on_recv(worker *w, conn *c, const loop_completion *cq) {
    if (cq->res <= 0) {
        if (cq->res == -ENOBUFS) {
            /* The pool ran dry: rearm; buffers come back as messages finish. */
            loop_recv(w->loop, c->fd, tag_of(w, c));
            return;
        }
        c->closed_by_peer = true;
        if (!c->close_code) c->close_code = 1006;
        conn_destroy(w, c);
        return;
    }
    if (c->lingering) {
        /* Half-closed: the peer's remaining bytes are read and dropped. */
        loop_buffer_release(w->loop, cq->buf_id);
        if (!cq->more) loop_recv(w->loop, c->fd, tag_of(w, c));
        return;
    }
    uint8_t *data = loop_buffer(w->loop, cq->buf_id);
    if (c->tls) {
        int fed = tls_feed(c->tls, data, (size_t)cq->res);
        loop_buffer_release(w->loop, cq->buf_id);
        if (fed != TLS_OK) {
            conn_destroy(w, c);
            return;
        }
        for (;;) {
            size_t n = 0;
            int r = tls_read(c->tls, w->plain, PLAIN_BYTES, &n);
            if (r == TLS_OK && n > 0) {
                conn_input(w, c, w->plain, n);
                if (c->state == C_FREE || c->state == C_ZOMBIE || c->tls == NULL) return;
                continue;
            }
            if (r == TLS_WANT_MORE) break;
            /* handshake failure, bad record or close_notify */
            conn_flush_tls(w, c);
            c->closed_by_peer = r == TLS_ERR_CLOSED;
            if (c->state != C_FREE && c->state != C_ZOMBIE) conn_destroy(w, c);
            return;
        }
        conn_flush_tls(w, c);
    } else {
        conn_input(w, c, data, (size_t)cq->res);
        loop_buffer_release(w->loop, cq->buf_id);
    }
    if (!cq->more && c->state != C_FREE && c->state != C_ZOMBIE)
        loop_recv(w->loop, c->fd, tag_of(w, c));
}

static void on_send(worker *w, conn *c, const loop_completion *cq) {
    c->sending = false;
    if (c->state == C_ZOMBIE) {
        conn_release_slot(w, c);
        return;
    }
    if (cq->res < 0) {
        conn_destroy(w, c);
        return;
    }
    outq_sent(&c->out, (size_t)cq->res);
    conn_start_send(w, c);
}

/* ---- commands -------------------------------------------------------------------------- */

static void run_seal_batch(worker *w) {
    if (w->n_seal == 0) return;
    aegis_seal_batch(w->seal_jobs, w->n_seal);
    count_batch(w, STATS_SEAL, w->n_seal);
    for (size_t i = 0; i < w->n_seal; i++) {
        aegis_seal_job *j = &w->seal_jobs[i];
        conn *c = conn_lookup(w, w->seal_conn[i]);
        if (c && c->state == C_SESSION && j->status == AEGIS_OK)
            conn_send_frame(w, c, WS_OP_TEXT, j->json, j->json_len);
        free(j->scratch);
        free(j->json);
    }
    w->n_seal = 0;
}

static void run_commands(worker *w) {
    size_t cursor = spsc_cursor(&w->commands), len;
    cmd_rec *r;
    while ((r = rec_align(spsc_peek(&w->commands, &cursor, &len))) != NULL) {
        conn *c = conn_lookup(w, r->conn);
        switch (r->kind) {
        case CMD_ACCEPT:
            if (c && c->state == C_AUTH_DECISION) {
                c->session = r->session;
                conn_send_frame(w, c, WS_OP_TEXT, r->data, r->data_len);
                if (c->state == C_FREE || c->state == C_ZOMBIE) break;
                c->state = C_SESSION;
                c->ws.max_message = w->io->cfg.max_message;
                c->deadline_ms = w->now_ms + w->io->cfg.idle_timeout_ms;
            } else {
                aegis_session_free(r->session);
            }
            break;
        case CMD_REFUSE:
            if (c) {
                char json[600];
                size_t n = 0;
                if (aegis_auth_error_json(r->auth_code, (const char *)r->data, r->data_len, json,
                                          sizeof json, &n) == AEGIS_OK)
                    conn_send_frame(w, c, WS_OP_TEXT, json, n);
                conn_close(w, c, r->close_code, r->auth_code);
            }
            break;
        case CMD_SEND:
            if (c && c->state == C_SESSION) {
                if (w->n_seal == MAX_JOBS) run_seal_batch(w);
                aegis_seal_job *j = &w->seal_jobs[w->n_seal];
                memset(j, 0, sizeof *j);
                j->session = c->session;
                /* The header's text points into the record, alive until release. */
                j->header.id = r->id;
                j->header.id_len = r->id_len;
                j->header.type = (aegis_message_type)r->type;
                j->header.channel = r->channel;
                j->header.channel_len = r->channel_len;
                j->header.ref = r->ref_len ? r->ref : NULL;
                j->header.ref_len = r->ref_len;
                j->header.timestamp = r->timestamp ? r->timestamp : wall_s();
                j->plaintext = r->data;
                j->plaintext_len = r->data_len;
                j->scratch_cap = aegis_seal_scratch_size(r->data_len);
                j->json_cap = aegis_seal_json_max(r->data_len);
                j->scratch = malloc(j->scratch_cap);
                j->json = malloc(j->json_cap);
                if (j->scratch == NULL || j->json == NULL) {
                    free(j->scratch);
                    free(j->json);
                    break;
                }
                w->seal_conn[w->n_seal++] = r->conn;
            }
            break;
        case CMD_CLOSE:
            if (c) conn_close(w, c, r->close_code, (const char *)r->data);
            break;
        }
    }
    run_seal_batch(w);
    spsc_release_to(&w->commands, cursor);
}

/* ---- timers and drain ------------------------------------------------------------------- */

static void scan_deadlines(worker *w) {
    bool draining = atomic_load(&w->io->draining);
    bool drain_now = draining && !w->draining_seen;
    if (drain_now) w->draining_seen = true;
    for (uint32_t i = 0; i < w->max_conns; i++) {
        conn *c = &w->conns[i];
        if (c->state == C_FREE || c->state == C_ZOMBIE) continue;
        if (drain_now && c->state != C_HEAD && c->state != C_CLOSING) {
            conn_close(w, c, WS_CLOSE_GOING_AWAY, "gateway shutting down");
            continue;
        }
        if (w->now_ms < c->deadline_ms) continue;
        switch (c->state) {
        case C_HEAD:
            conn_destroy(w, c);  /* slowloris: no answer owed */
            break;
        case C_AUTH_WAIT:
        case C_AUTH_DECISION:
            conn_close(w, c, 4002, "no auth request in time");
            break;
        case C_ECHO:
        case C_SESSION:
            conn_close(w, c, 4006, "idle");
            break;
        case C_CLOSING:
            conn_destroy(w, c);
            break;
        }
    }
}

/* ---- the worker thread ----------------------------------------------------------------------- */

static void *worker_main(void *arg) {
    worker *w = arg;
    loop_completion cq[256];
    w->now_ms = mono_ms();
    w->last_scan_ms = w->now_ms;
    while (!atomic_load(&w->stop)) {
        int n = loop_run_once(w->loop, cq, 256, TIMER_SCAN_MS);
        w->now_ms = mono_ms();
        for (int i = 0; i < n; i++) {
            const loop_completion *e = &cq[i];
            if (e->tag == TAG_LISTEN) {
                if (e->op == LOOP_OP_ACCEPT) on_accept(w, e->res);
                continue;
            }
            if (e->tag == TAG_WAKE) continue;  /* commands run below */
            uint32_t slot = (uint32_t)(e->tag >> 32), gen = (uint32_t)e->tag;
            conn *c = slot < w->max_conns ? &w->conns[slot] : NULL;
            bool stale = c == NULL || c->state == C_FREE ||
                         (c->state != C_ZOMBIE && c->gen != gen);
            if (e->op == LOOP_OP_RECV) {
                if (stale || c->state == C_ZOMBIE) {
                    if (e->res > 0) loop_buffer_release(w->loop, e->buf_id);
                    continue;
                }
                on_recv(w, c, e);
            } else if (e->op == LOOP_OP_SEND) {
                if (c && (c->state == C_ZOMBIE ? c->gen == gen + 1 : !stale)) on_send(w, c, e);
            }
        }
        run_open_batch(w);
        atomic_store(&w->wake_pending, false);   /* before the drain: see command_end */
        run_commands(w);
        if (w->now_ms - w->last_scan_ms >= TIMER_SCAN_MS || (atomic_load(&w->io->draining) && !w->draining_seen)) {
            scan_deadlines(w);
            w->last_scan_ms = w->now_ms;
        }
        if (w->events_published) {
            uint64_t one = 1;
            ssize_t r = write(w->io->event_fd, &one, sizeof one);
            (void)r;
            w->events_published = false;
        }
    }
    return NULL;
}

/* ---- start and stop ----------------------------------------------------------------------------- */

static int listen_socket(const char *host, uint16_t port, uint16_t *bound, char *err, size_t err_len) {
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    char serv[8];
    snprintf(serv, sizeof serv, "%u", port);
    int rc = getaddrinfo(host, serv, &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "listen address %s: %s", host, gai_strerror(rc));
        return -EINVAL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        snprintf(err, err_len, "listen on %s:%u: %s", host, port, strerror(e));
        close(fd);
        freeaddrinfo(res);
        return -e;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static void defaults(aegis_io_config *c) {
    if (c->host == NULL) c->host = "0.0.0.0";
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 ? (unsigned)n : 1;
    }
    if (c->max_message == 0) c->max_message = AEGIS_MAX_MESSAGE_BYTES;
    if (c->max_message_before_auth == 0) c->max_message_before_auth = AEGIS_MAX_AUTH_MESSAGE_BYTES;
    if (c->write_queue_limit == 0) c->write_queue_limit = 4u << 20;
    if (c->head_timeout_ms == 0) c->head_timeout_ms = 5000;
    if (c->auth_timeout_ms == 0) c->auth_timeout_ms = 10000;
    if (c->idle_timeout_ms == 0) c->idle_timeout_ms = 90000;
    if (c->skew == 0) c->skew = AEGIS_DEFAULT_SKEW;
    if (c->max_connections == 0) c->max_connections = 16384;
    if (c->ticket_rotate_seconds == 0) c->ticket_rotate_seconds = 3600;
    if (c->data_dir == NULL) c->data_dir = ".aegis";
}

static void worker_free(worker *w) {
    if (w->conns) {
        for (uint32_t i = 0; i < w->max_conns; i++) {
            conn *c = &w->conns[i];
            if (c->state == C_FREE) continue;
            if (c->fd >= 0 && c->state != C_ZOMBIE) close(c->fd);
            tls_conn_free(c->tls);
            free(c->head);
            free(c->msg);
            aegis_session_free(c->session);
            outq_free(&c->out);
        }
    }
    /* Commands never run still own their sessions. */
    if (w->commands.buf) {
        size_t cursor = spsc_cursor(&w->commands), len;
        cmd_rec *r;
        while ((r = rec_align(spsc_peek(&w->commands, &cursor, &len))) != NULL)
            if (r->kind == CMD_ACCEPT) aegis_session_free(r->session);
    }
    if (w->loop) loop_destroy(w->loop);
    if (w->listen_fd > 0) close(w->listen_fd);
    if (w->wake_fd > 0) close(w->wake_fd);
    spsc_free(&w->events);
    spsc_free(&w->commands);
    free(w->conns);
    free(w->arena);
    free(w->plain);
    pthread_mutex_destroy(&w->command_lock);
}

static int worker_init(aegis_io *io, worker *w, unsigned index, char *err, size_t err_len) {
    memset(w, 0, sizeof *w);
    w->io = io;
    w->index = index;
    w->listen_fd = -1;
    w->wake_fd = -1;
    pthread_mutex_init(&w->command_lock, NULL);
    loop_backend want = io->cfg.backend == AEGIS_IO_URING ? LOOP_URING
                      : io->cfg.backend == AEGIS_IO_EPOLL ? LOOP_EPOLL : LOOP_AUTO;
    int rc = loop_create(want, RECV_BUFS, RECV_BUF_SIZE, &w->loop, &w->backend);
    if (rc != 0) {
        snprintf(err, err_len, "event loop (%s): %s", loop_backend_name(want), strerror(-rc));
        return rc;
    }
    w->max_conns = io->cfg.max_connections;
    w->conns = calloc(w->max_conns, sizeof *w->conns);
    w->arena = aligned_alloc(64, ARENA_BYTES);
    w->plain = malloc(PLAIN_BYTES);
    if (w->conns == NULL || w->arena == NULL || w->plain == NULL ||
        spsc_init(&w->events, EVENT_QUEUE_BYTES) != 0 ||
        spsc_init(&w->commands, COMMAND_QUEUE_BYTES) != 0) {
        snprintf(err, err_len, "out of memory for worker %u", index);
        return -ENOMEM;
    }
    /* Slots are handed out from the front: a free list in index order. */
    for (uint32_t i = 0; i < w->max_conns; i++) {
        w->conns[i].fd = -1;
        w->conns[i].next_free = i + 1 < w->max_conns ? i + 1 : UINT32_MAX;
    }
    w->free_head = 0;
    uint16_t bound = 0;
    int fd = listen_socket(io->cfg.host, io->port, &bound, err, err_len);
    if (fd < 0) return fd;
    w->listen_fd = fd;
    if (io->port == 0) io->port = bound;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->wake_fd < 0 || loop_accept(w->loop, fd, TAG_LISTEN) != 0 ||
        loop_watch_eventfd(w->loop, w->wake_fd, TAG_WAKE) != 0) {
        snprintf(err, err_len, "arming worker %u's loop failed", index);
        return -EIO;
    }
    return 0;
}

int aegis_io_start(const aegis_io_config *cfg, aegis_io **out, char *err, size_t err_len) {
    if (aegis_core_init() != AEGIS_OK) {
        snprintf(err, err_len, "libsodium failed to start");
        return -ENOMEM;
    }
    aegis_io *io = calloc(1, sizeof *io);
    if (io == NULL) return -ENOMEM;
    io->cfg = *cfg;
    defaults(&io->cfg);
    io->port = io->cfg.port;
    io->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int rc = 0;
    if (!io->cfg.plaintext) {
        char cert[512], key[512];
        const char *cp = io->cfg.tls_cert, *kp = io->cfg.tls_key;
        if (cp == NULL || kp == NULL) {
            if (tls_ensure_self_signed(io->cfg.data_dir, cert, key, sizeof cert, io->fingerprint,
                                       err, err_len) != TLS_OK) {
                rc = -EINVAL;
                goto fail;
            }
            cp = cert;
            kp = key;
        } else if (tls_cert_fingerprint(cp, io->fingerprint) != TLS_OK) {
            snprintf(err, err_len, "TLS certificate %s cannot be read", cp);
            rc = -EINVAL;
            goto fail;
        }
        /* Ticket keys persist there, so that tickets survive a restart. */
        char tickets[512];
        if ((size_t)snprintf(tickets, sizeof tickets, "%s/tls-tickets.key", io->cfg.data_dir) >=
            sizeof tickets) {
            snprintf(err, err_len, "data directory path too long: %s", io->cfg.data_dir);
            rc = -EINVAL;
            goto fail;
        }
        if (tls_server_create(cp, kp, io->cfg.ticket_rotate_seconds, tickets, &io->tls, err,
                              err_len) != TLS_OK) {
            rc = -EINVAL;
            goto fail;
        }
    }
    io->n_workers = io->cfg.workers;
    io->workers = calloc(io->n_workers, sizeof *io->workers);
    if (io->workers == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < io->n_workers; i++) {
        if ((rc = worker_init(io, &io->workers[i], i, err, err_len)) != 0) {
            /* workers 0..i are initialised (i partly): free them */
            for (unsigned k = 0; k <= i; k++) worker_free(&io->workers[k]);
            free(io->workers);
            io->workers = NULL;
            goto fail;
        }
    }
    io->backend_name = loop_backend_name(io->workers[0].backend);
    for (unsigned i = 0; i < io->n_workers; i++)
        pthread_create(&io->workers[i].thread, NULL, worker_main, &io->workers[i]);
    *out = io;
    return 0;
fail:
    if (io->tls) tls_server_free(io->tls);
    if (io->event_fd >= 0) close(io->event_fd);
    free(io);
    return rc ? rc : -EINVAL;
}

void aegis_io_drain(aegis_io *io) {
    atomic_store(&io->draining, true);
    for (unsigned i = 0; i < io->n_workers; i++) {
        uint64_t one = 1;
        ssize_t r = write(io->workers[i].wake_fd, &one, sizeof one);
        (void)r;
    }
}

bool aegis_io_draining(const aegis_io *io) {
    return atomic_load(&io->draining);
}

void aegis_io_get_stats(const aegis_io *io, aegis_io_stats *out) {
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < io->n_workers; i++) {
        const worker *w = &io->workers[i];
        aegis_io_batch_stats *dst[2] = {&out->open, &out->seal};
        for (int k = 0; k < 2; k++) {
            dst[k]->batches += atomic_load_explicit(&w->batch_counts[k][0], memory_order_relaxed);
            dst[k]->messages += atomic_load_explicit(&w->batch_counts[k][1], memory_order_relaxed);
            for (int b = 0; b < AEGIS_IO_BATCH_BUCKETS; b++)
                dst[k]->le[b] += atomic_load_explicit(&w->batch_counts[k][2 + b], memory_order_relaxed);
        }
        out->connections += atomic_load(&w->live);
    }
}

bool aegis_io_idle(const aegis_io *io) {
    for (unsigned i = 0; i < io->n_workers; i++)
        if (atomic_load(&io->workers[i].live) != 0) return false;
    return true;
}

void aegis_io_stop(aegis_io *io) {
    if (io == NULL) return;
    for (unsigned i = 0; i < io->n_workers; i++) {
        atomic_store(&io->workers[i].stop, true);
        uint64_t one = 1;
        ssize_t r = write(io->workers[i].wake_fd, &one, sizeof one);
        (void)r;
    }
    for (unsigned i = 0; i < io->n_workers; i++) pthread_join(io->workers[i].thread, NULL);
    for (unsigned i = 0; i < io->n_workers; i++) worker_free(&io->workers[i]);
    free(io->workers);
    if (io->tls) tls_server_free(io->tls);
    close(io->event_fd);
    free(io);
}

int aegis_io_reload_tls(aegis_io *io, char *err, size_t err_len) {
    if (io->tls == NULL) return 0;
    if (tls_server_reload(io->tls, err, err_len) != TLS_OK) return -EINVAL;
    tls_server_fingerprint(io->tls, io->fingerprint);
    return 0;
}

uint16_t aegis_io_port(const aegis_io *io) { return io->port; }
const char *aegis_io_backend_name(const aegis_io *io) { return io->backend_name; }
const char *aegis_io_tls_fingerprint(const aegis_io *io) { return io->fingerprint; }
int aegis_io_event_fd(const aegis_io *io) { return io->event_fd; }

/* ---- the control plane's side of the queues ---------------------------------------------------- */

size_t aegis_io_poll_events(aegis_io *io, aegis_io_event *out, size_t max) {
    uint64_t counter;
    ssize_t r = read(io->event_fd, &counter, sizeof counter);
    (void)r;
    size_t n = 0;
    bool more = false;
    for (unsigned i = 0; i < io->n_workers; i++) {
        worker *w = &io->workers[i];
        /* What the previous call handed out is released now. */
        spsc_release_to(&w->events, w->event_cursor);
        size_t cursor = w->event_cursor, len;
        ev_rec *e;
        while (n < max && (e = rec_align(spsc_peek(&w->events, &cursor, &len))) != NULL) {
            aegis_io_event *o = &out[n++];
            o->kind = (aegis_io_event_kind)e->kind;
            o->conn = e->conn;
            o->close_code = e->close_code;
            o->closed_by_peer = e->closed_by_peer;
            switch (e->kind) {
            case AEGIS_IO_EV_UPGRADED:
                memcpy(o->agent_id, e->u.up.agent_id, sizeof o->agent_id);
                memcpy(o->public_key, e->u.up.public_key, sizeof o->public_key);
                memcpy(o->enrollment_token, e->u.up.token, sizeof o->enrollment_token);
                memcpy(o->peer, e->u.up.peer, sizeof o->peer);
                break;
            case AEGIS_IO_EV_AUTH_REQUEST:
                o->auth = e->u.auth;
                break;
            case AEGIS_IO_EV_MESSAGE:
                o->message = e->u.msg;
                o->message.plaintext = e->pt;
                o->message.ciphertext = e->pt + e->pt_len;
                break;
            default:
                break;
            }
        }
        w->event_cursor = cursor;
        if (n == max && !more) {
            size_t probe = cursor;
            more = spsc_peek(&w->events, &probe, &len) != NULL;
        }
    }
    if (more || n == max) {
        /* Keep the eventfd readable: more is pending than this call took. */
        uint64_t one = 1;
        r = write(io->event_fd, &one, sizeof one);
    }
    return n;
}

static cmd_rec *command_begin(aegis_io *io, uint64_t conn, size_t data_len, worker **wp) {
    unsigned index = (unsigned)(conn >> 56);
    if (index >= io->n_workers) return NULL;
    worker *w = &io->workers[index];
    pthread_mutex_lock(&w->command_lock);
    cmd_rec *r = rec_align(spsc_reserve(&w->commands, sizeof(cmd_rec) + data_len + REC_PAD));
    if (r == NULL) {
        pthread_mutex_unlock(&w->command_lock);
        return NULL;
    }
    memset(r, 0, sizeof *r);
    r->conn = conn;
    r->data_len = (uint32_t)data_len;
    *wp = w;
    return r;
}

static void command_end(worker *w) {
    spsc_commit(&w->commands);
    pthread_mutex_unlock(&w->command_lock);
    /* The commit is ordered before the exchange: a worker that clears the
     * flag after it (and then drains) sees the record; one that cleared it
     * before makes this exchange return false, and we wake it. */
    if (!atomic_exchange(&w->wake_pending, true)) {
        uint64_t one = 1;
        ssize_t r = write(w->wake_fd, &one, sizeof one);
        (void)r;
    }
}

int aegis_io_accept(aegis_io *io, uint64_t conn, aegis_session *session, const char *json,
                    size_t len) {
    worker *w;
    if (session == NULL || json == NULL) return -EINVAL;
    cmd_rec *r = command_begin(io, conn, len, &w);
    if (r == NULL) return (conn >> 56) >= io->n_workers ? -EINVAL : -EAGAIN;
    r->kind = CMD_ACCEPT;
    r->session = session;
    memcpy(r->data, json, len);
    command_end(w);
    return 0;
}

int aegis_io_refuse(aegis_io *io, uint64_t conn, const char *auth_code, const char *message,
                    uint16_t close_code) {
    worker *w;
    size_t len = message ? strlen(message) : 0;
    if (auth_code == NULL || strlen(auth_code) >= 32 || len > 400) return -EINVAL;
    cmd_rec *r = command_begin(io, conn, len, &w);
    if (r == NULL) return (conn >> 56) >= io->n_workers ? -EINVAL : -EAGAIN;
    r->kind = CMD_REFUSE;
    r->close_code = close_code;
    strcpy(r->auth_code, auth_code);
    if (len) memcpy(r->data, message, len);
    command_end(w);
    return 0;
}

int aegis_io_send(aegis_io *io, uint64_t conn, const aegis_message_header *h,
                  const uint8_t *plaintext, size_t len) {
    worker *w;
    if (h == NULL || h->id_len == 0 || h->id_len > AEGIS_ID_MAX || h->channel_len == 0 ||
        h->channel_len > AEGIS_CHANNEL_MAX || h->ref_len > AEGIS_ID_MAX ||
        (plaintext == NULL && len) || len > io->cfg.max_message)
        return -EINVAL;
    cmd_rec *r = command_begin(io, conn, len, &w);
    if (r == NULL) return (conn >> 56) >= io->n_workers ? -EINVAL : -EAGAIN;
    r->kind = CMD_SEND;
    r->type = (uint8_t)h->type;
    r->id_len = (uint8_t)h->id_len;
    memcpy(r->id, h->id, h->id_len);
    r->channel_len = (uint8_t)h->channel_len;
    memcpy(r->channel, h->channel, h->channel_len);
    if (h->ref && h->ref_len) {
        r->ref_len = (uint8_t)h->ref_len;
        memcpy(r->ref, h->ref, h->ref_len);
    }
    r->timestamp = h->timestamp;
    if (len) memcpy(r->data, plaintext, len);
    command_end(w);
    return 0;
}

int aegis_io_close(aegis_io *io, uint64_t conn, uint16_t code, const char *reason) {
    worker *w;
    size_t len = reason ? strlen(reason) : 0;
    if (len > 120) len = 120;
    cmd_rec *r = command_begin(io, conn, len + 1, &w);
    if (r == NULL) return (conn >> 56) >= io->n_workers ? -EINVAL : -EAGAIN;
    r->kind = CMD_CLOSE;
    r->close_code = code;
    if (len) memcpy(r->data, reason, len);
    r->data[len] = '\0';
    command_end(w);
    return 0;
}
