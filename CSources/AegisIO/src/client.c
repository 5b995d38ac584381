/*
 * client.c — the client side of the transport (aegis_wsc.h): TCP connect,
 * TLS, the upgrade request and its answer, masked RFC 6455 frames, on the
 * same completion loop as the server. aegis_wsc.h documents the behaviour;
 * this file is how. server.c is the model: the same output queue with one
 * send in flight, the same TLS pumping, the same slots with generations.
 *
 * A connection's life:
 *
 *   W_CONNECT   the TCP connect is in flight (the upgrade request is built
 *               already: the caller's strings need not outlive the call);
 *   W_TLS       the handshake (wss:// only);
 *   W_HEAD      the request is sent; reading the answer's head;
 *   W_BODY      the answer was not 101: reading its body (≤ 8 KiB);
 *   W_OPEN      upgraded;
 *   W_CLOSING   our close frame is sent (waiting for the peer's), or the
 *               connection is over and its last bytes are being flushed;
 *   W_ZOMBIE    the socket is closed but a send is still in flight: the
 *               kernel may read its buffer until the completion arrives.
 *
 * Every connection ends with exactly one of REFUSED, CLOSED or ERROR (its
 * "final" event, c->done); its id is dead from then on, even while its
 * last bytes are still being flushed. A connection closed by the caller
 * before the upgrade completed is reported CLOSED with 1006 (there was no
 * close handshake to have).
 *
 * Events and their memory. Completions are turned into events in an
 * endpoint queue, and aegis_wsc_run() hands them out up to `max` at a time.
 * A message is unmasked by the frame reader straight into the endpoint's
 * arena (chunks of 256 KiB), or, when it is larger or spans receives, into
 * a buffer of its connection's, which joins the arena once the message is
 * whole: so a message is copied once, from the receive buffer to where the
 * caller reads it. The arena is emptied when a run starts with no events
 * left over, i.e. when every event handed out so far was handed out by an
 * earlier call, which is the "valid until the next aegis_wsc_run" promise.
 *
 * Masking keys and Sec-WebSocket-Key come from a per-endpoint ChaCha20
 * keystream (libsodium's crypto_stream_chacha20, keyed once from
 * getrandom, read 1 KiB at a time). RFC 6455 §5.3 and §10.3 want masking
 * keys the page's script cannot predict; we have no script, but a
 * keystream costs about a nanosecond per key, so there is no reason to use
 * a weaker generator (a xorshift's state is recoverable from its outputs).
 *
 * Timers: the open (connect + TLS + upgrade, 10 s) and the close handshake
 * (2 s) have deadlines, checked every 250 ms while any is set; so
 * aegis_wsc_run() waits at most 250 ms at a time while one is pending.
 *
 * Output is not bounded here: aegis_wsc_queued() tells a caller how far
 * behind the socket is, and pacing is its business (the bench sends one
 * message per echo; the SDK is bounded by its own window). In TLS mode the
 * count is of ciphertext bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "aegis_core.h"
#include "aegis_wsc.h"
#include "http.h"
#include "loop.h"
#include "outq.h"
#include "tls.h"
#include "ws.h"

/* ---- sizes and times ---------------------------------------------------------- */

#define RECV_BUF_SIZE 16384
#define RECV_BUFS_MIN 64u
#define RECV_BUFS_MAX 1024u         /* like a server worker: 16 MiB of pool at most */
#define PLAIN_BYTES 65536           /* TLS plaintext scratch */
#define CHUNK_BYTES (256u << 10)    /* arena chunk; larger messages get their own buffer */
#define MAX_BODY 8192               /* of a refusal's body */
#define CQ_BATCH 256
#define EVQ_INITIAL 256
#define OPEN_TIMEOUT_MS 10000       /* connect + TLS + upgrade */
#define CLOSE_GRACE_MS 2000
#define TIMER_SCAN_MS 250
#define DEFAULT_MAX_MESSAGE (1u << 20)
#define DEFAULT_MAX_CONNECTIONS 16384u
#define RNG_BLOCK 1024

/* ---- connections ---------------------------------------------------------------- */

enum wconn_state {
    W_FREE = 0,
    W_CONNECT,
    W_TLS,
    W_HEAD,
    W_BODY,
    W_OPEN,
    W_CLOSING,
    W_ZOMBIE,
};


/* Memory that message payloads live in: the arena's chunks, and a
 * connection's buffer for a message that outgrows the arena. */
typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(16) uint8_t data[];
} chunk;

typedef struct wconn {
    int fd;
    uint32_t gen;
    uint8_t state;
    bool sending;             /* a loop_send is in flight (out's in-flight bytes) */
    bool close_sent;          /* our close frame is queued */
    bool close_after_flush;   /* close the socket once the output is empty */
    bool done;                /* the final event is reported: the id is dead */
    uint64_t deadline_ms;     /* 0: none (see set_deadline) */
    tls_conn *tls;
    ws_reader ws;
    char accept[28];          /* the Sec-WebSocket-Accept we expect */
    uint8_t *request;         /* the upgrade request, until it is queued */
    size_t request_len;
    char *head;               /* the answer's head while in W_HEAD … */
    uint32_t head_len;
    uint8_t *body;            /* … and a refusal's body while in W_BODY */
    uint32_t body_len, body_want;
    bool body_to_eof;         /* no Content-Length: the body ends with the connection */
    int status;
    chunk *msg;               /* a message spanning receives, or over CHUNK_BYTES */
    outq out;
    uint32_t next_free;
} wconn;

/* ---- the endpoint ----------------------------------------------------------------- */

typedef struct rng {
    uint8_t key[crypto_stream_chacha20_KEYBYTES];
    uint64_t nonce;
    size_t off;
    uint8_t buf[RNG_BLOCK];
} rng;

struct aegis_wsc {
    bool tls_on;
    uint32_t max_message;
    char *server_name;
    loop *loop;
    loop_backend backend;
    tls_client *tls;
    wconn *conns;
    uint32_t max_conns, free_head;
    uint32_t n_deadlines;     /* connections with a deadline set */
    uint64_t now_ms, last_scan_ms;
    uint8_t *plain;
    /* events not yet handed out: evq[evq_head..evq_len) */
    aegis_wsc_event *evq;
    size_t evq_head, evq_len, evq_cap;
    chunk *arena;             /* the chunk messages go to; older chunks follow */
    rng rng;
};

/* ---- small helpers ------------------------------------------------------------------ */

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

static bool live(const wconn *c) { return c->state != W_FREE && c->state != W_ZOMBIE; }

/* Ids and loop tags are the same: generation above, slot below. A slot's
 * generation moves on each time it is handed out (never 0), so an id of a
 * closed connection never names its successor, and no id is 0. */
static uint64_t conn_id(const aegis_wsc *ep, const wconn *c) {
    return ((uint64_t)c->gen << 32) | (uint32_t)(c - ep->conns);
}

static wconn *conn_slot(aegis_wsc *ep, uint64_t id) {
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);
    if (slot >= ep->max_conns) return NULL;
    wconn *c = &ep->conns[slot];
    return c->gen == gen ? c : NULL;
}

/* A connection the caller may still act on. */
static wconn *conn_lookup(aegis_wsc *ep, uint64_t id) {
    wconn *c = conn_slot(ep, id);
    return c && live(c) && !c->done ? c : NULL;
}

static void rng_bytes(rng *r, uint8_t *out, size_t n) {
    while (n > 0) {
        if (r->off == sizeof r->buf) {
            uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
            memcpy(nonce, &r->nonce, sizeof nonce);
            r->nonce++;
            crypto_stream_chacha20(r->buf, sizeof r->buf, nonce, r->key);
            r->off = 0;
        }
        size_t k = sizeof r->buf - r->off < n ? sizeof r->buf - r->off : n;
        memcpy(out, r->buf + r->off, k);
        /* Used bytes are not left lying around for a later read to reuse. */
        memset(r->buf + r->off, 0, k);
        r->off += k;
        out += k;
        n -= k;
    }
}

static int rng_init(rng *r) {
    size_t got = 0;
    while (got < sizeof r->key) {
        ssize_t k = getrandom(r->key + got, sizeof r->key - got, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        got += (size_t)k;
    }
    r->nonce = 0;
    r->off = sizeof r->buf;   /* refill on first use */
    return 0;
}

/* Deadlines are counted so that the periodic scan only runs while one is set. */
static void set_deadline(aegis_wsc *ep, wconn *c, uint64_t at_ms) {
    if (c->deadline_ms == 0 && at_ms != 0) ep->n_deadlines++;
    if (c->deadline_ms != 0 && at_ms == 0) ep->n_deadlines--;
    c->deadline_ms = at_ms;
}

/* ---- output buffers ------------------------------------------------------------------ */


/* ---- the arena and the event queue ------------------------------------------------------ */

static chunk *chunk_new(size_t cap) {
    if (cap > SIZE_MAX - sizeof(chunk)) return NULL;
    chunk *k = malloc(sizeof(chunk) + cap);
    if (k) {
        k->next = NULL;
        k->cap = cap;
        k->used = 0;
    }
    return k;
}

static void chunks_free(chunk *k) {
    while (k) {
        chunk *next = k->next;
        free(k);
        k = next;
    }
}

/* A fresh chunk for new messages; the old ones keep what events point to. */
static bool arena_new_chunk(aegis_wsc *ep) {
    chunk *k = chunk_new(CHUNK_BYTES);
    if (k == NULL) return false;
    k->next = ep->arena;
    ep->arena = k;
    return true;
}

/* A whole message in a buffer of its own becomes the arena's, to be freed
 * with it (behind the current chunk, which stays where messages go). */
static void arena_adopt(aegis_wsc *ep, chunk *k) {
    k->next = ep->arena->next;
    ep->arena->next = k;
}

static void *arena_alloc(aegis_wsc *ep, size_t n) {
    chunk *a = ep->arena;
    if (n > CHUNK_BYTES) return NULL;
    if (a->cap - a->used < n) {
        if (!arena_new_chunk(ep)) return NULL;
        a = ep->arena;
    }
    void *p = a->data + a->used;
    a->used += align16(n);
    if (a->used > a->cap) a->used = a->cap;
    return p;
}

/* Called with no event outstanding: everything but the current chunk goes. */
static void arena_reset(aegis_wsc *ep) {
    chunks_free(ep->arena->next);
    ep->arena->next = NULL;
    ep->arena->used = 0;
}

static aegis_wsc_event *event_push(aegis_wsc *ep, aegis_wsc_event_kind kind, const wconn *c) {
    if (ep->evq_len == ep->evq_cap) {
        if (ep->evq_head > 0) {
            memmove(ep->evq, ep->evq + ep->evq_head,
                    (ep->evq_len - ep->evq_head) * sizeof *ep->evq);
            ep->evq_len -= ep->evq_head;
            ep->evq_head = 0;
        } else {
            size_t cap = ep->evq_cap * 2;
            aegis_wsc_event *q = realloc(ep->evq, cap * sizeof *q);
            if (q == NULL) return NULL;   /* the event is lost; nothing better to do */
            ep->evq = q;
            ep->evq_cap = cap;
        }
    }
    aegis_wsc_event *e = &ep->evq[ep->evq_len++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->conn = conn_id(ep, c);
    return e;
}

/* ---- sending ------------------------------------------------------------------------------- */

static void conn_destroy(aegis_wsc *ep, wconn *c);
static void conn_fail(aegis_wsc *ep, wconn *c, int error);

static void conn_start_send(aegis_wsc *ep, wconn *c) {
    if (c->sending || !live(c) || c->state == W_CONNECT) return;
    size_t len;
    const uint8_t *p = outq_next(&c->out, &len);
    if (p != NULL) {
        int rc = loop_send(ep->loop, c->fd, p, len, conn_id(ep, c));
        if (rc == 0)
            c->sending = true;
        else
            conn_fail(ep, c, rc);
        return;
    }
    /* Nothing left (and outq_next freed the buffers). */
    if (c->close_after_flush) conn_destroy(ep, c);
}

/* TLS output (handshake messages, records, alerts) to the pending queue. */
static bool conn_drain_tls(wconn *c) {
    size_t pend;
    while (c->tls && (pend = tls_pending(c->tls)) > 0) {
        uint8_t *p = outq_reserve(&c->out, pend);
        if (p == NULL) return false;
        size_t k = tls_take(c->tls, p, pend);
        if (k == 0) break;
        outq_commit(&c->out, k);
    }
    return true;
}

/* Plain bytes for the socket, through TLS when there is TLS. */
static int conn_queue_raw(wconn *c, const void *p, size_t n) {
    if (c->tls) {
        int r = tls_write(c->tls, p, n);
        if (r != TLS_OK) return r;
        return conn_drain_tls(c) ? 0 : -ENOMEM;
    }
    return outq_append(&c->out, p, n) ? 0 : -ENOMEM;
}

/*
 * One masked frame. In the clear it is masked in place in the output
 * queue; with TLS it is masked through a bounce buffer a record's worth at
 * a time (the header rides with the first part of the payload), as OpenSSL
 * copies it into records anyway. Returns 0 or the failure (the caller
 * fails the connection).
 */
static int conn_queue_frame(aegis_wsc *ep, wconn *c, uint8_t opcode, const void *data,
                            size_t len) {
    uint8_t mask[4], hdr[14];
    rng_bytes(&ep->rng, mask, sizeof mask);
    size_t h = ws_frame_header(hdr, opcode, true, len, mask);
    const uint8_t *src = data;
    if (c->tls == NULL) {
        if (len > SIZE_MAX - h) return -EMSGSIZE;
        uint8_t *p = outq_reserve(&c->out, h + len);
        if (p == NULL) return -ENOMEM;
        memcpy(p, hdr, h);
        if (len) {
            memcpy(p + h, src, len);
            ws_mask(p + h, len, mask, 0);
        }
        outq_commit(&c->out, h + len);
        return 0;
    }
    uint8_t tmp[16384];
    size_t fill = h, off = 0;
    memcpy(tmp, hdr, h);
    do {
        size_t k = len - off < sizeof tmp - fill ? len - off : sizeof tmp - fill;
        if (k) {
            memcpy(tmp + fill, src + off, k);
            ws_mask(tmp + fill, k, mask, off);
        }
        int r = tls_write(c->tls, tmp, fill + k);
        if (r != TLS_OK) return r;
        off += k;
        fill = 0;
        /* Taken as it comes, so OpenSSL's queue never holds a whole large message. */
        if (!conn_drain_tls(c)) return -ENOMEM;
    } while (off < len);
    return 0;
}

/* 0, or the connection is gone (failed and reported): the caller must not
 * touch it then. With a frame just queued, the only way conn_start_send
 * can end the connection is a loop_send that failed. */
static int conn_send_frame(aegis_wsc *ep, wconn *c, uint8_t opcode, const void *data, size_t len) {
    int r = conn_queue_frame(ep, c, opcode, data, len);
    if (r != 0) {
        conn_fail(ep, c, r);
        return r;
    }
    conn_start_send(ep, c);
    return live(c) ? 0 : -EPIPE;
}

/* After the final event: flush what is queued (a close frame, close_notify)
 * and close the socket; the grace deadline bounds a peer that stops reading. */
static void conn_linger(aegis_wsc *ep, wconn *c) {
    c->state = W_CLOSING;
    c->close_after_flush = true;
    set_deadline(ep, c, ep->now_ms + CLOSE_GRACE_MS);
    if (c->tls && tls_handshake_done(c->tls)) {
        tls_shutdown(c->tls);
        conn_drain_tls(c);
    }
    conn_start_send(ep, c);
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

/* Reports the final event (once). */
static aegis_wsc_event *conn_final(aegis_wsc *ep, wconn *c, aegis_wsc_event_kind kind) {
    if (c->done) return NULL;
    c->done = true;
    return event_push(ep, kind, c);
}

static void conn_report_closed(aegis_wsc *ep, wconn *c, uint16_t code) {
    aegis_wsc_event *e = conn_final(ep, c, AEGIS_WSC_EV_CLOSED);
    if (e) e->close_code = code;
}

static void conn_report_error(aegis_wsc *ep, wconn *c, int error, uint16_t close_code) {
    aegis_wsc_event *e = conn_final(ep, c, AEGIS_WSC_EV_ERROR);
    if (e) {
        e->error = error;
        e->close_code = close_code;
    }
}

static void conn_release_slot(aegis_wsc *ep, wconn *c) {
    outq_free(&c->out);
    c->state = W_FREE;
    c->next_free = ep->free_head;
    ep->free_head = (uint32_t)(c - ep->conns);
}

static void conn_free_parts(wconn *c) {
    tls_conn_free(c->tls);
    c->tls = NULL;
    free(c->request);
    c->request = NULL;
    free(c->head);
    c->head = NULL;
    free(c->body);
    c->body = NULL;
    chunks_free(c->msg);
    c->msg = NULL;
}

static void conn_destroy(aegis_wsc *ep, wconn *c) {
    if (!live(c)) return;
    if (!c->done) {
        /* Every path reports before it gets here; this is the safety net
         * that keeps "one final event per connection" true regardless. */
        if (c->state == W_OPEN || c->state == W_CLOSING)
            conn_report_closed(ep, c, 1006);
        else
            conn_report_error(ep, c, -ECONNABORTED, 0);
    }
    set_deadline(ep, c, 0);
    loop_cancel(ep->loop, c->fd);
    close(c->fd);
    c->fd = -1;
    conn_free_parts(c);
    outq_free_pending(&c->out);
    if (c->sending) {
        /* The kernel may still read the in-flight buffer: keep it, and the
         * slot, until the send's completion arrives. */
        c->state = W_ZOMBIE;
        return;
    }
    conn_release_slot(ep, c);
}

static void conn_fail(aegis_wsc *ep, wconn *c, int error) {
    conn_report_error(ep, c, error, 0);
    conn_destroy(ep, c);
}

/* ---- the upgrade -------------------------------------------------------------------------------- */

static const aegis_http_header *find_header(const http_response_head *res, const char *name,
                                            size_t *count) {
    size_t len = strlen(name);
    const aegis_http_header *found = NULL;
    *count = 0;
    for (size_t i = 0; i < res->num_headers; i++) {
        const aegis_http_header *h = &res->headers[i];
        if (h->name_len == len && strncasecmp(h->name, name, len) == 0) {
            if (!found) found = h;
            ++*count;
        }
    }
    return found;
}

static bool value_is(const aegis_http_header *h, const char *want) {
    size_t n = strlen(want);
    return h && h->value_len == n && strncasecmp(h->value, want, n) == 0;
}

/* Does any Connection header list the token "upgrade"? */
static bool connection_has_upgrade(const http_response_head *res) {
    for (size_t i = 0; i < res->num_headers; i++) {
        const aegis_http_header *h = &res->headers[i];
        if (h->name_len != 10 || strncasecmp(h->name, "Connection", 10) != 0) continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
            const char *t = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t') p++;
            if (p - t == 7 && strncasecmp(t, "upgrade", 7) == 0) return true;
        }
    }
    return false;
}

/* RFC 6455 §4.1, the client's checks of a 101: Upgrade: websocket,
 * Connection: upgrade, the one Accept we expect, and no extension (we
 * offered none). A subprotocol is the caller's business (its headers). */
static bool upgrade_ok(const wconn *c, const http_response_head *res) {
    size_t n;
    const aegis_http_header *up = find_header(res, "Upgrade", &n);
    if (n != 1 || !value_is(up, "websocket")) return false;
    if (!connection_has_upgrade(res)) return false;
    const aegis_http_header *acc = find_header(res, "Sec-WebSocket-Accept", &n);
    if (n != 1 || acc->value_len != 28 || memcmp(acc->value, c->accept, 28) != 0) return false;
    find_header(res, "Sec-WebSocket-Extensions", &n);
    return n == 0;
}

/* Content-Length, or -1 when absent or unusable. */
static long long content_length(const http_response_head *res) {
    size_t n;
    const aegis_http_header *h = find_header(res, "Content-Length", &n);
    if (n != 1 || h->value_len == 0 || h->value_len > 18) return -1;
    long long v = 0;
    for (size_t i = 0; i < h->value_len; i++) {
        if (h->value[i] < '0' || h->value[i] > '9') return -1;
        v = v * 10 + (h->value[i] - '0');
    }
    return v;
}

static void conn_refused_done(aegis_wsc *ep, wconn *c) {
    uint8_t *copy = c->body_len ? arena_alloc(ep, c->body_len) : NULL;
    aegis_wsc_event *e = conn_final(ep, c, AEGIS_WSC_EV_REFUSED);
    if (e) {
        e->status = c->status;
        if (copy) {
            memcpy(copy, c->body, c->body_len);
            e->data = copy;
            e->len = c->body_len;
        }
    }
    conn_destroy(ep, c);
}

static void conn_body(aegis_wsc *ep, wconn *c, const uint8_t *p, size_t n) {
    size_t take = c->body_want - c->body_len;
    if (take > n) take = n;
    if (take) memcpy(c->body + c->body_len, p, take);
    c->body_len += (uint32_t)take;
    if (c->body_len == c->body_want) conn_refused_done(ep, c);
}

static void conn_frames(aegis_wsc *ep, wconn *c, const uint8_t *p, size_t n);

/* The head is complete: 101 → open, anything else → a refusal. `rest` is
 * what followed the head in the same bytes. */
static void conn_answer(aegis_wsc *ep, wconn *c, const http_response_head *res,
                        const uint8_t *rest, size_t rest_len) {
    if (res->status == 101) {
        if (!upgrade_ok(c, res)) {
            conn_fail(ep, c, -EPROTO);
            return;
        }
        c->state = W_OPEN;
        set_deadline(ep, c, 0);
        ws_reader_init(&c->ws, false, ep->max_message);
        event_push(ep, AEGIS_WSC_EV_OPEN, c);
        if (rest_len) conn_frames(ep, c, rest, rest_len);
        return;
    }
    c->status = res->status;
    long long cl = content_length(res);
    c->body_to_eof = cl < 0;
    c->body_want = cl < 0 || cl > MAX_BODY ? MAX_BODY : (uint32_t)cl;
    if (c->body_want == 0) {
        conn_refused_done(ep, c);
        return;
    }
    c->body = malloc(c->body_want);
    if (c->body == NULL) {
        conn_fail(ep, c, -ENOMEM);
        return;
    }
    c->state = W_BODY;
    conn_body(ep, c, rest, rest_len);
}

static void conn_head(aegis_wsc *ep, wconn *c, const uint8_t *p, size_t n) {
    size_t take = http_head_append(&c->head, &c->head_len, p, n);
    if (take == SIZE_MAX) {
        conn_fail(ep, c, -ENOMEM);
        return;
    }
    http_response_head res;
    int r = http_parse_response(c->head, c->head_len, &res, HTTP_MAX_HEADERS);
    if (r == HTTP_NEED_MORE) return;
    if (r < 0) {
        conn_fail(ep, c, -EPROTO);
        return;
    }
    /* The head buffer is ours until the answer is handled: what follows the
     * head in it goes first, then the rest of this input. */
    char *head = c->head;
    size_t head_len = c->head_len;
    c->head = NULL;
    c->head_len = 0;
    conn_answer(ep, c, &res, (const uint8_t *)head + r, head_len - (size_t)r);
    free(head);
    if (take < n && live(c) && !c->done) {
        if (c->state == W_OPEN || c->state == W_CLOSING)
            conn_frames(ep, c, p + take, n - take);
        else if (c->state == W_BODY)
            conn_body(ep, c, p + take, n - take);
    }
}

/* ---- frames ---------------------------------------------------------------------------------------- */

/* A partial message lying in the arena moves to a buffer of its own (before
 * the arena is used for anything else, or other connections' messages). */
static bool conn_detach_partial(wconn *c, const uint8_t *mb) {
    size_t have = c->ws.msg_len;
    size_t want = have + (size_t)c->ws.remaining;
    if (want < 4096) want = 4096;
    c->msg = chunk_new(want);
    if (c->msg == NULL) return false;
    memcpy(c->msg->data, mb, have);
    return true;
}

static void conn_close_received(aegis_wsc *ep, wconn *c, uint16_t code) {
    if (!c->close_sent) {
        /* Echo the peer's code (RFC 6455 §5.5.1), none if it sent none. */
        uint8_t payload[125];
        size_t len = code != WS_CLOSE_NO_STATUS ? ws_close_payload(payload, code, NULL, 0) : 0;
        c->close_sent = true;
        if (conn_send_frame(ep, c, WS_OP_CLOSE, payload, len) != 0) return;
    }
    conn_report_closed(ep, c, code);
    conn_linger(ep, c);
}

static void conn_protocol_error(aegis_wsc *ep, wconn *c, uint16_t code) {
    if (!c->close_sent) {
        uint8_t payload[125];
        size_t len = ws_close_payload(payload, code, NULL, 0);
        c->close_sent = true;
        if (conn_send_frame(ep, c, WS_OP_CLOSE, payload, len) != 0) return;
    }
    conn_report_error(ep, c, -EPROTO, code);
    conn_linger(ep, c);
}

static void conn_frames(aegis_wsc *ep, wconn *c, const uint8_t *p, size_t n) {
    ws_event ev;
    while (live(c) && !c->done) {
        bool in_arena = c->msg == NULL;
        uint8_t *mb;
        size_t cap;
        if (in_arena) {
            mb = ep->arena->data + ep->arena->used;
            cap = ep->arena->cap - ep->arena->used;
        } else {
            mb = c->msg->data;
            cap = c->msg->cap;
        }
        size_t used = ws_read(&c->ws, p, n, mb, cap, &ev);
        p += used;
        n -= used;
        switch (ev.kind) {
        case WS_EV_NONE:
            if (in_arena && c->ws.msg_len > 0 && !conn_detach_partial(c, mb))
                conn_fail(ep, c, -ENOMEM);
            return;
        case WS_EV_NEED_BUFFER:
            if (in_arena && ev.needed <= CHUNK_BYTES) {
                /* The old chunk stays (earlier events point into it). */
                if (!arena_new_chunk(ep)) {
                    conn_fail(ep, c, -ENOMEM);
                    return;
                }
                memcpy(ep->arena->data, mb, c->ws.msg_len);
            } else if (in_arena) {
                c->msg = chunk_new(ev.needed);
                if (c->msg == NULL) {
                    conn_fail(ep, c, -ENOMEM);
                    return;
                }
                memcpy(c->msg->data, mb, c->ws.msg_len);
            } else {
                chunk *k = realloc(c->msg, sizeof(chunk) + ev.needed);
                if (k == NULL) {
                    conn_fail(ep, c, -ENOMEM);
                    return;
                }
                k->cap = ev.needed;
                c->msg = k;
            }
            continue;
        case WS_EV_MESSAGE: {
            if (in_arena) {
                ep->arena->used += align16(ev.len);
                if (ep->arena->used > ep->arena->cap) ep->arena->used = ep->arena->cap;
            } else {
                arena_adopt(ep, c->msg);
                c->msg = NULL;
            }
            aegis_wsc_event *e = event_push(ep, AEGIS_WSC_EV_MESSAGE, c);
            if (e) {
                e->text = ev.opcode == WS_OP_TEXT;
                e->data = ev.data;
                e->len = ev.len;
            }
            continue;
        }
        case WS_EV_PING:
            /* Answered at once; not reported. The payload is inside the
             * reader, and conn_queue_frame copies it. */
            if (c->close_sent) continue;
            if (conn_send_frame(ep, c, WS_OP_PONG, ev.data, ev.len) != 0) return;
            continue;
        case WS_EV_PONG: {
            if (in_arena && c->ws.msg_len > 0 && !conn_detach_partial(c, mb)) {
                conn_fail(ep, c, -ENOMEM);
                return;
            }
            uint8_t *copy = ev.len ? arena_alloc(ep, ev.len) : NULL;
            aegis_wsc_event *e = event_push(ep, AEGIS_WSC_EV_PONG, c);
            if (e && copy) {
                memcpy(copy, ev.data, ev.len);
                e->data = copy;
                e->len = ev.len;
            }
            continue;
        }
        case WS_EV_CLOSE:
            /* Whatever follows a close is discarded (RFC 6455 §5.5.1). */
            conn_close_received(ep, c, ev.close_code);
            return;
        case WS_EV_ERROR:
            conn_protocol_error(ep, c, ev.error_code);
            return;
        }
    }
}

/* ---- input ------------------------------------------------------------------------------------------- */

static void conn_input(aegis_wsc *ep, wconn *c, const uint8_t *p, size_t n) {
    switch (c->state) {
    case W_HEAD:
        conn_head(ep, c, p, n);
        break;
    case W_BODY:
        conn_body(ep, c, p, n);
        break;
    case W_OPEN:
    case W_CLOSING:
        if (!c->done) conn_frames(ep, c, p, n);
        break;
    default:
        break;   /* nothing is expected before the request is sent */
    }
}

/* The upgrade request goes out (after the TCP connect, or after TLS). */
static void conn_send_request(aegis_wsc *ep, wconn *c) {
    int r = conn_queue_raw(c, c->request, c->request_len);
    free(c->request);
    c->request = NULL;
    c->request_len = 0;
    if (r != 0) {
        conn_fail(ep, c, r);
        return;
    }
    c->state = W_HEAD;
    conn_start_send(ep, c);
}

/* The connection ended (EOF, a receive error, the peer's close_notify). */
static void conn_ended(aegis_wsc *ep, wconn *c, int res) {
    switch (c->state) {
    case W_BODY:
        /* A body without Content-Length ends here; a short one is what it is. */
        conn_refused_done(ep, c);
        return;
    case W_OPEN:
    case W_CLOSING:
        conn_report_closed(ep, c, 1006);
        break;
    default:
        conn_report_error(ep, c, res < 0 ? res : -ECONNRESET, 0);
        break;
    }
    conn_destroy(ep, c);
}

static void on_recv_tls(aegis_wsc *ep, wconn *c) {
    for (;;) {
        size_t n = 0;
        int r = tls_read(c->tls, ep->plain, PLAIN_BYTES, &n);
        if (c->state == W_TLS && tls_handshake_done(c->tls)) {
            conn_send_request(ep, c);
            if (!live(c)) return;
        }
        if (r == TLS_OK && n > 0) {
            conn_input(ep, c, ep->plain, n);
            if (!live(c) || c->tls == NULL) return;
            continue;
        }
        if (r == TLS_WANT_MORE) break;
        /* A handshake failure, a bad record or close_notify: send what
         * OpenSSL has for the peer (an alert), then end. */
        conn_drain_tls(c);
        if (r == TLS_ERR_CLOSED)
            conn_ended(ep, c, 0);
        else
            conn_fail(ep, c, r);
        return;
    }
    if (!conn_drain_tls(c)) {
        conn_fail(ep, c, -ENOMEM);
        return;
    }
    conn_start_send(ep, c);
}

static void on_recv(aegis_wsc *ep, wconn *c, const loop_completion *cq) {
    if (cq->res <= 0) {
        if (cq->res == -ENOBUFS) {
            /* The pool ran dry: rearm; buffers come back as completions are handled. */
            int r = loop_recv(ep->loop, c->fd, conn_id(ep, c));
            if (r != 0) conn_ended(ep, c, r);
            return;
        }
        conn_ended(ep, c, cq->res);
        return;
    }
    uint8_t *data = loop_buffer(ep->loop, cq->buf_id);
    if (c->tls) {
        int fed = tls_feed(c->tls, data, (size_t)cq->res);
        loop_buffer_release(ep->loop, cq->buf_id);
        if (fed != TLS_OK) {
            conn_fail(ep, c, fed);
            return;
        }
        on_recv_tls(ep, c);
    } else {
        conn_input(ep, c, data, (size_t)cq->res);
        loop_buffer_release(ep->loop, cq->buf_id);
    }
    if (!cq->more && live(c)) {
        int r = loop_recv(ep->loop, c->fd, conn_id(ep, c));
        if (r != 0) conn_ended(ep, c, r);
    }
}

static void on_connect(aegis_wsc *ep, wconn *c, int res) {
    if (res < 0) {
        conn_fail(ep, c, res);
        return;
    }
    int r = loop_recv(ep->loop, c->fd, conn_id(ep, c));
    if (r != 0) {
        conn_fail(ep, c, r);
        return;
    }
    if (c->tls) {
        /* The ClientHello has been waiting since aegis_wsc_connect. */
        c->state = W_TLS;
        if (!conn_drain_tls(c)) {
            conn_fail(ep, c, -ENOMEM);
            return;
        }
        conn_start_send(ep, c);
        return;
    }
    conn_send_request(ep, c);
}

static void on_send(aegis_wsc *ep, wconn *c, const loop_completion *cq) {
    c->sending = false;
    if (c->state == W_ZOMBIE) {
        conn_release_slot(ep, c);
        return;
    }
    if (cq->res < 0) {
        if (c->state == W_OPEN || c->state == W_CLOSING)
            conn_report_closed(ep, c, 1006);
        conn_fail(ep, c, cq->res);
        return;
    }
    outq_sent(&c->out, (size_t)cq->res);
    conn_start_send(ep, c);
}

static void on_completion(aegis_wsc *ep, const loop_completion *cq) {
    wconn *c = conn_slot(ep, cq->tag);
    switch (cq->op) {
    case LOOP_OP_RECV:
        if (c == NULL || !live(c) || c->state == W_CONNECT) {
            /* Stale (the connection is gone): its buffer goes back. */
            if (cq->res > 0) loop_buffer_release(ep->loop, cq->buf_id);
            return;
        }
        on_recv(ep, c, cq);
        return;
    case LOOP_OP_SEND:
        if (c && c->sending && (live(c) || c->state == W_ZOMBIE)) on_send(ep, c, cq);
        return;
    case LOOP_OP_CONNECT:
        if (c && c->state == W_CONNECT) on_connect(ep, c, cq->res);
        return;
    default:
        return;
    }
}

/* ---- timers --------------------------------------------------------------------------------------- */

static void scan_deadlines(aegis_wsc *ep) {
    for (uint32_t i = 0; i < ep->max_conns && ep->n_deadlines > 0; i++) {
        wconn *c = &ep->conns[i];
        if (!live(c) || c->deadline_ms == 0 || ep->now_ms < c->deadline_ms) continue;
        switch (c->state) {
        case W_CONNECT:
        case W_TLS:
        case W_HEAD:
            conn_fail(ep, c, -ETIMEDOUT);
            break;
        case W_BODY:
            conn_refused_done(ep, c);
            break;
        default:
            /* W_OPEN with our close unanswered, or a flush that stalled. */
            conn_report_closed(ep, c, 1006);
            conn_destroy(ep, c);
            break;
        }
    }
}

/* ---- the API ---------------------------------------------------------------------------------------- */

static unsigned pool_bufs(unsigned max_conns) {
    unsigned n = RECV_BUFS_MIN;
    while (n < max_conns && n < RECV_BUFS_MAX) n *= 2;
    return n;
}

int aegis_wsc_create(const aegis_wsc_config *cfg, aegis_wsc **out, char *err, size_t err_len) {
    char dummy[1];
    if (err == NULL || err_len == 0) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (cfg == NULL || out == NULL) {
        snprintf(err, err_len, "no configuration");
        return -EINVAL;
    }
    *out = NULL;
    if (aegis_core_init() != AEGIS_OK) {
        snprintf(err, err_len, "libsodium failed to start");
        return -ENOMEM;
    }
    aegis_wsc *ep = calloc(1, sizeof *ep);
    if (ep == NULL) return -ENOMEM;
    ep->tls_on = cfg->tls;
    ep->max_message = cfg->max_message ? cfg->max_message : DEFAULT_MAX_MESSAGE;
    ep->max_conns = cfg->max_connections ? cfg->max_connections : DEFAULT_MAX_CONNECTIONS;
    int rc = -ENOMEM;
    if (ep->max_conns > (1u << 24)) {
        snprintf(err, err_len, "max_connections over %u", 1u << 24);
        rc = -EINVAL;
        goto fail;
    }
    ep->server_name = strdup(cfg->server_name ? cfg->server_name : "localhost");
    ep->conns = calloc(ep->max_conns, sizeof *ep->conns);
    ep->plain = malloc(PLAIN_BYTES);
    ep->evq_cap = EVQ_INITIAL;
    ep->evq = malloc(ep->evq_cap * sizeof *ep->evq);
    ep->arena = chunk_new(CHUNK_BYTES);
    if (!ep->server_name || !ep->conns || !ep->plain || !ep->evq || !ep->arena) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    if ((rc = rng_init(&ep->rng)) != 0) {
        snprintf(err, err_len, "getrandom: %s", strerror(-rc));
        goto fail;
    }
    for (uint32_t i = 0; i < ep->max_conns; i++) {
        ep->conns[i].fd = -1;
        ep->conns[i].next_free = i + 1 < ep->max_conns ? i + 1 : UINT32_MAX;
    }
    ep->free_head = 0;
    loop_backend want = cfg->backend == AEGIS_IO_URING ? LOOP_URING
                      : cfg->backend == AEGIS_IO_EPOLL ? LOOP_EPOLL : LOOP_AUTO;
    rc = loop_create(want, pool_bufs(ep->max_conns), RECV_BUF_SIZE, &ep->loop, &ep->backend);
    if (rc != 0) {
        snprintf(err, err_len, "event loop (%s): %s", loop_backend_name(want), strerror(-rc));
        goto fail;
    }
    if (cfg->tls) {
        rc = tls_client_create(cfg->ca_file, cfg->pin_sha256, &ep->tls, err, err_len);
        if (rc != TLS_OK) {
            rc = -EINVAL;
            goto fail;
        }
    }
    ep->now_ms = mono_ms();
    ep->last_scan_ms = ep->now_ms;
    *out = ep;
    return 0;
fail:
    aegis_wsc_free(ep);
    return rc;
}

void aegis_wsc_free(aegis_wsc *ep) {
    if (ep == NULL) return;
    if (ep->conns) {
        for (uint32_t i = 0; i < ep->max_conns; i++) {
            wconn *c = &ep->conns[i];
            if (c->state == W_FREE) continue;
            if (c->state != W_ZOMBIE) close(c->fd);
            conn_free_parts(c);
        }
    }
    /* The loop goes before the output buffers: io_uring may still hold
     * sends that point into them until the ring is torn down. */
    if (ep->loop) loop_destroy(ep->loop);
    if (ep->conns) {
        for (uint32_t i = 0; i < ep->max_conns; i++) {
            outq_free(&ep->conns[i].out);
        }
    }
    tls_client_free(ep->tls);
    if (ep->arena) chunks_free(ep->arena);
    free(ep->conns);
    free(ep->plain);
    free(ep->evq);
    free(ep->server_name);
    sodium_memzero(&ep->rng, sizeof ep->rng);
    free(ep);
}

const char *aegis_wsc_backend_name(const aegis_wsc *ep) { return loop_backend_name(ep->backend); }

/* host → address with port: an IP literal, or a name through getaddrinfo
 * (which blocks; the bench and the tests give literals). */
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        *len = sizeof *v6;
        return 0;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) return -EHOSTUNREACH;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET) v4->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6) v6->sin6_port = htons(port);
    else return -EAFNOSUPPORT;
    return 0;
}

/* A socket for dst, bound to source_ip when given. IP_BIND_ADDRESS_NO_PORT
 * leaves the port to connect(), so that a source address's ephemeral ports
 * are shared between destinations instead of reserved at bind(). */
static int open_socket(const struct sockaddr_storage *dst, const char *source_ip) {
    int fd = socket(dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (source_ip && *source_ip) {
        struct sockaddr_storage src;
        socklen_t src_len;
        int r = -EINVAL;
        if (resolve(source_ip, 0, &src, &src_len) != 0 || src.ss_family != dst->ss_family)
            goto fail;
#ifdef IP_BIND_ADDRESS_NO_PORT
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
        if (bind(fd, (struct sockaddr *)&src, src_len) != 0) {
            r = -errno;
            goto fail;
        }
        return fd;
    fail:
        close(fd);
        return r;
    }
    return fd;
}

/* The request is written now, while the caller's strings are alive. */
static int build_request(aegis_wsc *ep, wconn *c, const char *host, uint16_t port,
                         const char *path, const char *const *headers, size_t n_headers) {
    uint8_t nonce[16];
    char key[25];
    rng_bytes(&ep->rng, nonce, sizeof nonce);
    aegis_b64_encode(nonce, sizeof nonce, key);
    key[24] = '\0';
    http_websocket_accept(key, 24, c->accept);

    char host_hdr[300];
    bool v6 = strchr(host, ':') != NULL;
    uint16_t dflt = ep->tls_on ? 443 : 80;
    int k = port == dflt ? snprintf(host_hdr, sizeof host_hdr, v6 ? "[%s]" : "%s", host)
                         : snprintf(host_hdr, sizeof host_hdr, v6 ? "[%s]:%u" : "%s:%u", host,
                                    (unsigned)port);
    if (k < 0 || (size_t)k >= sizeof host_hdr) return -EINVAL;
    char *buf = malloc(HTTP_MAX_HEAD);
    if (buf == NULL) return -ENOMEM;
    size_t n = http_write_upgrade_request(buf, HTTP_MAX_HEAD, host_hdr, path, key, headers,
                                          n_headers);
    if (n == 0) {
        free(buf);
        return -EINVAL;   /* a path, host or header line that would break the head */
    }
    char *exact = realloc(buf, n);
    c->request = (uint8_t *)(exact ? exact : buf);
    c->request_len = n;
    return 0;
}

int aegis_wsc_connect(aegis_wsc *ep, const char *host, uint16_t port, const char *path,
                      const char *const *headers, size_t n_headers, const char *source_ip,
                      uint64_t *conn_out) {
    if (ep == NULL || host == NULL || path == NULL || conn_out == NULL ||
        (headers == NULL && n_headers))
        return -EINVAL;
    if (ep->free_head == UINT32_MAX) return -EMFILE;
    struct sockaddr_storage dst;
    socklen_t dst_len;
    int rc = resolve(host, port, &dst, &dst_len);
    if (rc != 0) return rc;

    wconn *c = &ep->conns[ep->free_head];
    uint32_t gen = c->gen + 1 ? c->gen + 1 : 1, next_free = c->next_free;
    memset(c, 0, sizeof *c);
    c->gen = gen;
    c->next_free = next_free;
    c->fd = -1;
    if ((rc = build_request(ep, c, host, port, path, headers, n_headers)) != 0) goto fail;
    if (ep->tls) {
        c->tls = tls_conn_client(ep->tls, ep->server_name);
        if (c->tls == NULL) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    if ((c->fd = open_socket(&dst, source_ip)) < 0) {
        rc = c->fd;
        c->fd = -1;
        goto fail;
    }
    if ((rc = loop_connect(ep->loop, c->fd, &dst, dst_len, conn_id(ep, c))) != 0) goto fail;
    ep->free_head = c->next_free;
    c->state = W_CONNECT;
    set_deadline(ep, c, mono_ms() + OPEN_TIMEOUT_MS);
    *conn_out = conn_id(ep, c);
    return 0;
fail:
    /* The slot was never handed out: it stays at the head of the free list
     * (its generation has moved on, which costs nothing). */
    if (c->fd >= 0) close(c->fd);
    conn_free_parts(c);
    c->fd = -1;
    c->state = W_FREE;
    return rc;
}

int aegis_wsc_send(aegis_wsc *ep, uint64_t conn, bool text, const void *data, size_t len) {
    if (ep == NULL || (data == NULL && len)) return -EINVAL;
    wconn *c = conn_lookup(ep, conn);
    if (c == NULL || c->state != W_OPEN || c->close_sent) return -ENOTCONN;
    if (text && !ws_utf8_valid(data, len)) return -EINVAL;
    return conn_send_frame(ep, c, text ? WS_OP_TEXT : WS_OP_BINARY, data, len);
}

int aegis_wsc_ping(aegis_wsc *ep, uint64_t conn, const void *data, size_t len) {
    if (ep == NULL || (data == NULL && len) || len > 125) return -EINVAL;
    wconn *c = conn_lookup(ep, conn);
    if (c == NULL || c->state != W_OPEN || c->close_sent) return -ENOTCONN;
    return conn_send_frame(ep, c, WS_OP_PING, data, len);
}

int aegis_wsc_close(aegis_wsc *ep, uint64_t conn, uint16_t code, const char *reason) {
    if (ep == NULL) return -EINVAL;
    wconn *c = conn_lookup(ep, conn);
    if (c == NULL) return -ENOTCONN;
    if (c->state != W_OPEN && c->state != W_CLOSING) {
        /* Before the upgrade there is no handshake to close: just drop. */
        conn_report_closed(ep, c, 1006);
        conn_destroy(ep, c);
        return 0;
    }
    if (c->close_sent) return 0;   /* already closing */
    if (!ws_close_code_valid(code)) return -EINVAL;
    size_t reason_len = reason ? strlen(reason) : 0;
    if (reason_len && !ws_utf8_valid((const uint8_t *)reason, reason_len)) return -EINVAL;
    uint8_t payload[125];
    size_t n = ws_close_payload(payload, code, reason, reason_len);
    c->close_sent = true;
    int r = conn_send_frame(ep, c, WS_OP_CLOSE, payload, n);
    if (r != 0) return r;
    /* Messages may still arrive until the peer's close frame answers ours. */
    c->state = W_CLOSING;
    set_deadline(ep, c, mono_ms() + CLOSE_GRACE_MS);
    return 0;
}

size_t aegis_wsc_queued(const aegis_wsc *ep, uint64_t conn) {
    if (ep == NULL) return 0;
    wconn *c = conn_lookup((aegis_wsc *)ep, conn);
    if (c == NULL) return 0;
    return outq_queued(&c->out) +
           c->request_len;
}

/* Hands out queued events. */
static int deliver(aegis_wsc *ep, aegis_wsc_event *out, size_t max) {
    size_t n = ep->evq_len - ep->evq_head;
    if (n > max) n = max;
    if (n) memcpy(out, ep->evq + ep->evq_head, n * sizeof *out);
    ep->evq_head += n;
    return (int)n;
}

int aegis_wsc_run(aegis_wsc *ep, aegis_wsc_event *out, size_t max, int timeout_ms) {
    if (ep == NULL || (out == NULL && max)) return -EINVAL;
    if (ep->evq_head < ep->evq_len) {
        /* Events left over from an earlier run (more than its max): these
         * first, and no new input until they are gone, so that the memory
         * their payloads use stays bounded by one batch of completions. */
        return deliver(ep, out, max);
    }
    /* Every event handed out so far came from an earlier call: their memory goes. */
    ep->evq_head = ep->evq_len = 0;
    arena_reset(ep);

    loop_completion cq[CQ_BATCH];
    uint64_t start = mono_ms();
    for (;;) {
        int wait = timeout_ms;
        if (ep->n_deadlines > 0 && (wait < 0 || wait > TIMER_SCAN_MS)) wait = TIMER_SCAN_MS;
        if (timeout_ms > 0) {
            uint64_t spent = mono_ms() - start;
            int left = spent >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int)spent;
            if (wait > left) wait = left;
        }
        int n = loop_run_once(ep->loop, cq, CQ_BATCH, wait);
        if (n < 0 && n != -EINTR && n != -ETIME) return n;
        ep->now_ms = mono_ms();
        for (int i = 0; i < n; i++) on_completion(ep, &cq[i]);
        if (ep->n_deadlines > 0 && ep->now_ms - ep->last_scan_ms >= TIMER_SCAN_MS) {
            scan_deadlines(ep);
            ep->last_scan_ms = ep->now_ms;
        }
        /* Back to the caller after any progress (a send completing matters
         * to a caller pacing by aegis_wsc_queued), or when time is up. */
        if (n > 0 || ep->evq_len > 0 || timeout_ms == 0) break;
        if (timeout_ms > 0 && ep->now_ms - start >= (uint64_t)timeout_ms) break;
    }
    return deliver(ep, out, max);
}
