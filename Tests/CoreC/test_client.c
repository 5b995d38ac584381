/*
 * test_client.c — the WebSocket client (CSources/AegisIO/src/client.c)
 * against the transport's own server (server.c) in the same process.
 *
 * Build and run (from the repository root):
 *   cc -std=gnu17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
 *      -I CSources/AegisCore/include -I CSources/AegisCore/src -I CSources/AegisIO/include \
 *      -I CSources/AegisIO/src -I Tests/CoreC CSources/AegisCore/src/?*.c CSources/AegisIO/src/?*.c \
 *      Tests/CoreC/test_client.c -lsodium -lssl -lcrypto -luring -lpthread -o /tmp/test_client \
 *      && /tmp/test_client
 *
 * For each backend (io_uring, skipped with a note when the kernel refuses
 * it, and epoll), with the server on the same backend, one worker, port 0:
 *
 *   echo server, plaintext and then TLS (a self-signed certificate in a
 *   temporary data_dir, pinned by the client): text and binary echo, a
 *   1 MiB message, ping/pong, the close handshake (1000 echoed), 100
 *   connections echoing 10 messages each (some of 40 000 and 300 000 bytes,
 *   from three source addresses), and the argument checks;
 *   TLS only: a wrong pin fails with TLS_ERR_VERIFY;
 *   gateway server (echo off, plaintext): an upgrade on "/nope" is refused
 *   with 404 and the not_found body;
 *   nothing listening: ERROR with -ECONNREFUSED;
 *   echo server with a 300 ms idle timeout: the server's close (4006)
 *   reaches the client as CLOSED 4006;
 *   a scripted server (a raw socket in a thread, for what ours never
 *   sends): a wrong Sec-WebSocket-Accept; a refusal whose body has no
 *   Content-Length; a head written a byte at a time then a close frame
 *   (4001) from the server; fragmented messages with a ping in between, a
 *   message whose fragments arrive apart, messages that overflow the
 *   arena, and a masked frame (1002); silence after our close (1006 after
 *   the 2 s grace). What the client sends back (the pong,
 *   its close frames) is read with a server-side ws_reader, which also
 *   checks that it is masked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "aegis_io.h"
#include "aegis_wsc.h"
#include "check.h"
#include "http.h"
#include "tls.h"
#include "ws.h"

#define WAIT_MS 10000
#define MANY_CONNS 100
#define MANY_MSGS 10

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Events one at a time. An event's data stays valid until the next
 * aegis_wsc_run, which happens only when the batch is used up, i.e. after
 * the caller has asked for the next event. */
typedef struct pump {
    aegis_wsc *ep;
    int batch;                 /* max events per run; 0: 64 */
    aegis_wsc_event ev[64];
    int n, next;
} pump;

static bool pump_next(pump *p, aegis_wsc_event *out, int timeout_ms) {
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (p->next == p->n) {
        uint64_t t = now_ms();
        if (t >= end) return false;
        int r = aegis_wsc_run(p->ep, p->ev, p->batch ? (size_t)p->batch : 64, (int)(end - t));
        if (r < 0) {
            fprintf(stderr, "    aegis_wsc_run: %s\n", strerror(-r));
            return false;
        }
        p->n = r;
        p->next = 0;
    }
    *out = p->ev[p->next++];
    return true;
}

static const char *kind_name(aegis_wsc_event_kind k) {
    switch (k) {
    case AEGIS_WSC_EV_OPEN: return "OPEN";
    case AEGIS_WSC_EV_REFUSED: return "REFUSED";
    case AEGIS_WSC_EV_MESSAGE: return "MESSAGE";
    case AEGIS_WSC_EV_PONG: return "PONG";
    case AEGIS_WSC_EV_CLOSED: return "CLOSED";
    case AEGIS_WSC_EV_ERROR: return "ERROR";
    }
    return "?";
}

/* The next event, which must be of `conn` and of kind `want`. */
static bool expect_event(pump *p, uint64_t conn, aegis_wsc_event_kind want, aegis_wsc_event *out) {
    aegis_wsc_event ev;
    if (!pump_next(p, &ev, WAIT_MS)) {
        fprintf(stderr, "    no event (wanted %s)\n", kind_name(want));
        return false;
    }
    if (ev.conn != conn || ev.kind != want) {
        fprintf(stderr, "    got %s (error %d, status %d, code %u) on %llx, wanted %s on %llx\n",
                kind_name(ev.kind), ev.error, ev.status, ev.close_code,
                (unsigned long long)ev.conn, kind_name(want), (unsigned long long)conn);
        return false;
    }
    if (out) *out = ev;
    return true;
}

static aegis_io *server_start(aegis_io_backend backend, bool echo, bool plaintext,
                              const char *data_dir) {
    aegis_io_config cfg = {
        .host = "127.0.0.1", .port = 0, .workers = 1, .backend = backend,
        .echo = echo, .plaintext = plaintext, .data_dir = data_dir,
    };
    aegis_io *io = NULL;
    char err[256] = "";
    int r = aegis_io_start(&cfg, &io, err, sizeof err);
    CHECK_EQ_INT(r, 0);
    if (r != 0) fprintf(stderr, "    aegis_io_start: %s\n", err);
    return r == 0 ? io : NULL;
}

static aegis_wsc *client_new(aegis_io_backend backend, bool tls, const char *pin) {
    aegis_wsc_config cfg = { .backend = backend, .tls = tls, .pin_sha256 = pin };
    aegis_wsc *ep = NULL;
    char err[256] = "";
    int r = aegis_wsc_create(&cfg, &ep, err, sizeof err);
    CHECK_EQ_INT(r, 0);
    if (r != 0) fprintf(stderr, "    aegis_wsc_create: %s\n", err);
    return r == 0 ? ep : NULL;
}

static bool open_one(pump *p, uint16_t port, uint64_t *conn) {
    int r = aegis_wsc_connect(p->ep, "127.0.0.1", port, "/ws/agent", NULL, 0, NULL, conn);
    CHECK_EQ_INT(r, 0);
    if (r != 0) return false;
    bool ok = expect_event(p, *conn, AEGIS_WSC_EV_OPEN, NULL);
    CHECK(ok);
    return ok;
}

/* Sends one message and checks that the echo is the same. */
static void echo_one(pump *p, uint64_t conn, bool text, const uint8_t *data, size_t len) {
    CHECK_EQ_INT(aegis_wsc_send(p->ep, conn, text, data, len), 0);
    aegis_wsc_event ev;
    bool got = expect_event(p, conn, AEGIS_WSC_EV_MESSAGE, &ev);
    CHECK(got);
    if (!got) return;
    CHECK(ev.text == text);
    CHECK_EQ_INT(ev.len, len);
    if (ev.len == len && len) CHECK(memcmp(ev.data, data, len) == 0);
}

/* ------------------------------------------------------------------------ */
/* Scenarios                                                                 */

static void test_basic(aegis_wsc *ep, uint16_t port) {
    pump p = { .ep = ep };
    uint64_t conn;
    if (!open_one(&p, port, &conn)) return;

    const char *hello = "hello, aegis — ünïcödé";
    echo_one(&p, conn, true, (const uint8_t *)hello, strlen(hello));
    echo_one(&p, conn, true, (const uint8_t *)"", 0);

    uint8_t bin[300];
    for (size_t i = 0; i < sizeof bin; i++) bin[i] = (uint8_t)(i * 7);
    echo_one(&p, conn, false, bin, sizeof bin);
    /* 126..65535 and ≥ 65536 take the other two length forms. */
    static uint8_t mid[70000];
    for (size_t i = 0; i < sizeof mid; i++) mid[i] = (uint8_t)(i ^ (i >> 8));
    echo_one(&p, conn, false, mid, 126);
    echo_one(&p, conn, false, mid, sizeof mid);

    /* 1 MiB: the server's (and the client's) default limit exactly. */
    size_t big_len = 1u << 20;
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++) big[i] = (uint8_t)(i * 2654435761u >> 13);
    echo_one(&p, conn, false, big, big_len);
    CHECK_EQ_INT(aegis_wsc_queued(ep, conn), 0);
    free(big);

    /* Several messages queued at once come back in order; handed out two
     * at a time, so that most wait in the endpoint's queue across runs
     * (their payloads must stay intact until each is handed out). */
    p.batch = 2;
    for (int i = 0; i < 20; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "burst %d", i);
        CHECK_EQ_INT(aegis_wsc_send(ep, conn, true, m, (size_t)n), 0);
    }
    for (int i = 0; i < 20; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "burst %d", i);
        aegis_wsc_event ev;
        if (!expect_event(&p, conn, AEGIS_WSC_EV_MESSAGE, &ev)) {
            CHECK(false);
            break;
        }
        CHECK(ev.len == (size_t)n && memcmp(ev.data, m, (size_t)n) == 0);
    }
    p.batch = 0;

    /* ping → pong with the same payload */
    CHECK_EQ_INT(aegis_wsc_ping(ep, conn, "p1", 2), 0);
    aegis_wsc_event ev;
    bool got = expect_event(&p, conn, AEGIS_WSC_EV_PONG, &ev);
    CHECK(got);
    if (got) CHECK(ev.len == 2 && memcmp(ev.data, "p1", 2) == 0);

    /* argument checks */
    CHECK_EQ_INT(aegis_wsc_send(ep, conn, true, "\xff\xfe", 2), -EINVAL);
    CHECK_EQ_INT(aegis_wsc_ping(ep, conn, bin, 126), -EINVAL);
    CHECK_EQ_INT(aegis_wsc_send(ep, conn ^ (UINT64_C(1) << 40), true, "x", 1), -ENOTCONN);
    CHECK_EQ_INT(aegis_wsc_close(ep, conn, 1005, NULL), -EINVAL);

    /* closed before the upgrade completed: no handshake, CLOSED 1006 */
    uint64_t early;
    CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", port, "/", NULL, 0, NULL, &early), 0);
    CHECK_EQ_INT(aegis_wsc_close(ep, early, 1000, NULL), 0);
    got = expect_event(&p, early, AEGIS_WSC_EV_CLOSED, &ev);
    CHECK(got);
    if (got) CHECK_EQ_INT(ev.close_code, 1006);
    CHECK_EQ_INT(aegis_wsc_close(ep, early, 1000, NULL), -ENOTCONN);

    /* the close handshake: the server echoes our code */
    CHECK_EQ_INT(aegis_wsc_close(ep, conn, 1000, "bye"), 0);
    CHECK_EQ_INT(aegis_wsc_send(ep, conn, true, "late", 4), -ENOTCONN);
    got = expect_event(&p, conn, AEGIS_WSC_EV_CLOSED, &ev);
    CHECK(got);
    if (got) CHECK_EQ_INT(ev.close_code, 1000);
    /* the id is dead */
    CHECK_EQ_INT(aegis_wsc_send(ep, conn, true, "x", 1), -ENOTCONN);
    CHECK_EQ_INT(aegis_wsc_close(ep, conn, 1000, NULL), -ENOTCONN);
}

/* Message k of connection i in test_many: short texts, and binary ones
 * that span many receives (40 000 B) or outgrow the arena's chunks (300 000
 * B), so that partial messages of different connections interleave. */
#define MANY_BIG 300000
static size_t many_message(int i, int k, uint8_t *out, bool *text) {
    size_t len;
    if (k == 3 || (k == 7 && i % 10 == 0)) {
        len = k == 3 ? 40000 : MANY_BIG;
        for (size_t j = 0; j < len; j++) out[j] = (uint8_t)(j * 31 + (size_t)i * 7 + (size_t)k);
        *text = false;
        return len;
    }
    *text = k % 2 == 0;
    return (size_t)snprintf((char *)out, 64, "conn %d message %d", i, k);
}

static void test_many(aegis_wsc *ep, uint16_t port) {
    pump p = { .ep = ep };
    uint64_t conns[MANY_CONNS];
    int next_seq[MANY_CONNS] = {0}, opened = 0, closed = 0, echoes = 0, bad = 0;
    bool is_open[MANY_CONNS] = {false};
    uint8_t *msg = malloc(MANY_BIG);
    for (int i = 0; i < MANY_CONNS; i++) {
        /* a third each from 127.0.0.1, from 127.0.0.2 and unbound */
        char src[16];
        snprintf(src, sizeof src, "127.0.0.%d", 1 + i % 3);
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", port, "/ws/agent", NULL, 0,
                                       i % 3 == 2 ? NULL : src, &conns[i]), 0);
    }
    uint64_t end = now_ms() + 3 * WAIT_MS;
    aegis_wsc_event ev;
    while ((opened < MANY_CONNS || echoes < MANY_CONNS * MANY_MSGS) && now_ms() < end &&
           pump_next(&p, &ev, WAIT_MS)) {
        int i = 0;
        while (i < MANY_CONNS && conns[i] != ev.conn) i++;
        if (i == MANY_CONNS) {
            bad++;
            continue;
        }
        bool text;
        size_t n;
        switch (ev.kind) {
        case AEGIS_WSC_EV_OPEN:
            opened++;
            is_open[i] = true;
            /* all ten at once: the echoes must come back in order */
            for (int k = 0; k < MANY_MSGS; k++) {
                n = many_message(i, k, msg, &text);
                if (aegis_wsc_send(ep, conns[i], text, msg, n) != 0) bad++;
            }
            break;
        case AEGIS_WSC_EV_MESSAGE:
            n = many_message(i, next_seq[i], msg, &text);
            if (ev.len != n || memcmp(ev.data, msg, n) != 0 || ev.text != text) {
                fprintf(stderr, "    conn %d message %d: wrong echo (%zu bytes)\n", i,
                        next_seq[i], ev.len);
                bad++;
            }
            next_seq[i]++;
            echoes++;
            break;
        default:
            fprintf(stderr, "    conn %d: unexpected %s (error %d)\n", i, kind_name(ev.kind), ev.error);
            bad++;
            break;
        }
    }
    free(msg);
    CHECK_EQ_INT(opened, MANY_CONNS);
    CHECK_EQ_INT(echoes, MANY_CONNS * MANY_MSGS);
    CHECK_EQ_INT(bad, 0);
    for (int i = 0; i < MANY_CONNS; i++)
        if (is_open[i]) CHECK_EQ_INT(aegis_wsc_close(ep, conns[i], 1000, NULL), 0);
    end = now_ms() + WAIT_MS;
    while (closed < opened && now_ms() < end && pump_next(&p, &ev, WAIT_MS)) {
        if (ev.kind == AEGIS_WSC_EV_CLOSED && ev.close_code == 1000) closed++;
        else bad++;
    }
    CHECK_EQ_INT(closed, MANY_CONNS);
    CHECK_EQ_INT(bad, 0);
}

static void test_wrong_pin(aegis_io_backend backend, uint16_t port) {
    const char *pin = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    aegis_wsc *ep = client_new(backend, true, pin);
    if (ep == NULL) return;
    pump p = { .ep = ep };
    uint64_t conn;
    CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", port, "/", NULL, 0, NULL, &conn), 0);
    aegis_wsc_event ev;
    bool got = expect_event(&p, conn, AEGIS_WSC_EV_ERROR, &ev);
    CHECK(got);
    if (got) CHECK_EQ_INT(ev.error, TLS_ERR_VERIFY);
    aegis_wsc_free(ep);
}

static void test_refused(aegis_io_backend backend) {
    aegis_io *io = server_start(backend, false, true, NULL);
    if (io == NULL) return;
    aegis_wsc *ep = client_new(backend, false, NULL);
    if (ep != NULL) {
        pump p = { .ep = ep };
        uint64_t conn;
        const char *hdrs[] = { "X-Test: 1" };
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", aegis_io_port(io), "/nope", hdrs, 1,
                                       "127.0.0.1", &conn), 0);
        aegis_wsc_event ev;
        bool got = expect_event(&p, conn, AEGIS_WSC_EV_REFUSED, &ev);
        CHECK(got);
        if (got) {
            CHECK_EQ_INT(ev.status, 404);
            const char *want = "{\"error\":{\"code\":\"not_found\"";
            CHECK(ev.len >= strlen(want) && memcmp(ev.data, want, strlen(want)) == 0);
            if (ev.len) fprintf(stderr, "    refused body: %.*s\n", (int)ev.len, (const char *)ev.data);
        }
        CHECK_EQ_INT(aegis_wsc_send(ep, conn, true, "x", 1), -ENOTCONN);
        /* a header line that would break the head is refused up front */
        const char *bad[] = { "X-Bad: a\r\nInjected: b" };
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", aegis_io_port(io), "/", bad, 1, NULL,
                                       &conn), -EINVAL);
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", aegis_io_port(io), "no-slash", NULL, 0,
                                       NULL, &conn), -EINVAL);
        aegis_wsc_free(ep);
    }
    aegis_io_stop(io);
}

static void test_nothing_listening(aegis_io_backend backend) {
    /* A port that was free a moment ago: the server's, after it stopped. */
    aegis_io *io = server_start(backend, true, true, NULL);
    if (io == NULL) return;
    uint16_t port = aegis_io_port(io);
    aegis_io_stop(io);
    aegis_wsc *ep = client_new(backend, false, NULL);
    if (ep == NULL) return;
    pump p = { .ep = ep };
    uint64_t conn;
    CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", port, "/", NULL, 0, NULL, &conn), 0);
    aegis_wsc_event ev;
    bool got = expect_event(&p, conn, AEGIS_WSC_EV_ERROR, &ev);
    CHECK(got);
    if (got) CHECK_EQ_INT(ev.error, -ECONNREFUSED);
    aegis_wsc_free(ep);
}

/* ------------------------------------------------------------------------ */
/* A scripted server: one connection, raw bytes                              */

enum { SCRIPT_BAD_ACCEPT, SCRIPT_NO_LENGTH, SCRIPT_SERVER_CLOSE, SCRIPT_FRAMES, SCRIPT_SILENT };

#define FRAMES_BIG 100000
#define FRAMES_MID 60000
#define FRAMES_MIDS 4
#define FRAMES_SMALL 1000
#define FRAMES_SMALLS 600   /* 600 KB in one write: over two arena chunks */

typedef struct script {
    int kind;
    int listen_fd;
    uint16_t port;
    pthread_t thread;
    uint8_t *got;              /* what the client sent after its head */
    size_t got_len;
    _Atomic bool finished;
} script;

static void put_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
        if (k <= 0) return;
        b += k;
        n -= (size_t)k;
    }
}

static void put_frame(int fd, uint8_t opcode, bool fin, const void *p, size_t n,
                      const uint8_t *mask) {
    uint8_t hdr[14];
    size_t h = ws_frame_header(hdr, opcode, fin, n, mask);
    uint8_t *buf = malloc(h + n + 1);
    memcpy(buf, hdr, h);
    if (n) memcpy(buf + h, p, n);
    if (mask) ws_mask(buf + h, n, mask, 0);
    put_all(fd, buf, h + n);
    free(buf);
}

static void frames_payload(uint8_t *p, size_t n, unsigned salt) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 13 + salt);
}

static void script_run(script *s, int fd, const char *accept) {
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: %.28s\r\n\r\n",
                     accept);
    switch (s->kind) {
    case SCRIPT_BAD_ACCEPT: {
        const char *bad = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        put_all(fd, bad, strlen(bad));
        break;
    }
    case SCRIPT_NO_LENGTH: {
        const char *r = "HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\nno length";
        put_all(fd, r, strlen(r));
        usleep(20000);   /* the rest of the body in a receive of its own */
        put_all(fd, " here", 5);
        shutdown(fd, SHUT_WR);
        break;
    }
    case SCRIPT_SERVER_CLOSE: {
        for (int i = 0; i < n; i++) {
            put_all(fd, head + i, 1);
            usleep(500);
        }
        uint8_t payload[125];
        size_t len = ws_close_payload(payload, 4001, "bye", 3);
        put_frame(fd, WS_OP_CLOSE, true, payload, len, NULL);
        break;
    }
    case SCRIPT_FRAMES: {
        /* the head and the first frames in one write */
        uint8_t first[1024];
        size_t k = (size_t)n;
        memcpy(first, head, k);
        k += ws_frame_header(first + k, WS_OP_TEXT, false, 3, NULL);
        memcpy(first + k, "Hel", 3), k += 3;
        k += ws_frame_header(first + k, WS_OP_PING, true, 2, NULL);
        memcpy(first + k, "pp", 2), k += 2;
        k += ws_frame_header(first + k, WS_OP_CONTINUATION, true, 2, NULL);
        memcpy(first + k, "lo", 2), k += 2;
        put_all(fd, first, k);
        /* a message whose second fragment comes later and is much larger */
        uint8_t *big = malloc(FRAMES_BIG);
        frames_payload(big, FRAMES_BIG, 1);
        put_frame(fd, WS_OP_BINARY, false, big, 10, NULL);
        usleep(50000);
        put_frame(fd, WS_OP_CONTINUATION, true, big + 10, FRAMES_BIG - 10, NULL);
        /* more than an arena chunk's worth at once */
        for (unsigned i = 0; i < FRAMES_MIDS; i++) {
            frames_payload(big, FRAMES_MID, 2 + i);
            put_frame(fd, WS_OP_BINARY, true, big, FRAMES_MID, NULL);
        }
        /* many small ones in one write: they fill the arena within a run */
        size_t one = FRAMES_SMALL + 4, k2 = 0;
        uint8_t *smalls = malloc(one * FRAMES_SMALLS);
        for (unsigned i = 0; i < FRAMES_SMALLS; i++) {
            k2 += ws_frame_header(smalls + k2, WS_OP_BINARY, true, FRAMES_SMALL, NULL);
            frames_payload(smalls + k2, FRAMES_SMALL, 100 + i);
            k2 += FRAMES_SMALL;
        }
        put_all(fd, smalls, k2);
        free(smalls);
        free(big);
        /* a server must not mask: 1002 */
        const uint8_t mask[4] = { 1, 2, 3, 4 };
        put_frame(fd, WS_OP_TEXT, true, "x", 1, mask);
        break;
    }
    case SCRIPT_SILENT:
        /* upgrades, then never answers the client's close */
        put_all(fd, head, (size_t)n);
        break;
    }
}

static void *script_main(void *arg) {
    script *s = arg;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* the request head */
    char req[HTTP_MAX_HEAD + 1];
    size_t len = 0;
    char *end = NULL;
    while (len < HTTP_MAX_HEAD && end == NULL) {
        ssize_t k = recv(fd, req + len, HTTP_MAX_HEAD - len, 0);
        if (k <= 0) break;
        len += (size_t)k;
        req[len] = '\0';
        end = strstr(req, "\r\n\r\n");
    }
    const char *key = strstr(req, "Sec-WebSocket-Key: ");
    char accept[28] = "";
    if (end && key) http_websocket_accept(key + 19, 24, accept);
    if (end && key) script_run(s, fd, accept);
    /* everything the client sends after its head, until it closes */
    size_t cap = 65536, have = len - (size_t)(end ? end + 4 - req : (ptrdiff_t)len);
    s->got = malloc(cap);
    if (have) memcpy(s->got, end + 4, have);
    for (;;) {
        if (have == cap) break;
        ssize_t k = recv(fd, s->got + have, cap - have, 0);
        if (k <= 0) break;
        have += (size_t)k;
    }
    s->got_len = have;
    close(fd);
    atomic_store(&s->finished, true);
    return NULL;
}

static bool script_start(script *s, int kind) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(s->listen_fd, 4) != 0 || getsockname(s->listen_fd, (struct sockaddr *)&a, &al) != 0) {
        CHECK(false);
        return false;
    }
    s->port = ntohs(a.sin_port);
    return pthread_create(&s->thread, NULL, script_main, s) == 0;
}

/* The client's loop keeps running meanwhile: its last frames are only
 * submitted (io_uring) and its socket only closed by aegis_wsc_run. */
static void script_finish(script *s, aegis_wsc *ep) {
    aegis_wsc_event evs[8];
    uint64_t end = now_ms() + WAIT_MS;
    while (!atomic_load(&s->finished) && now_ms() < end) aegis_wsc_run(ep, evs, 8, 20);
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

/* The client's frames as a server reads them: each must be masked. */
typedef struct client_frames {
    int pongs, closes;
    uint8_t pong[125];
    size_t pong_len;
    uint16_t close_code;
    bool error;
} client_frames;

static client_frames read_client_frames(const script *s) {
    client_frames f = {0};
    ws_reader r;
    ws_reader_init(&r, true, 1 << 20);
    uint8_t buf[4096];
    const uint8_t *p = s->got;
    size_t n = s->got_len;
    for (;;) {
        ws_event ev;
        size_t used = ws_read(&r, p, n, buf, sizeof buf, &ev);
        p += used;
        n -= used;
        if (ev.kind == WS_EV_NONE) break;
        if (ev.kind == WS_EV_ERROR || ev.kind == WS_EV_NEED_BUFFER) {
            f.error = true;
            break;
        }
        if (ev.kind == WS_EV_PONG) {
            f.pongs++;
            f.pong_len = ev.len;
            memcpy(f.pong, ev.data, ev.len);
        }
        if (ev.kind == WS_EV_CLOSE) {
            f.closes++;
            f.close_code = ev.close_code;
        }
    }
    return f;
}

static void test_scripted(aegis_io_backend backend) {
    aegis_wsc *ep = client_new(backend, false, NULL);
    if (ep == NULL) return;
    pump p = { .ep = ep };
    script s;
    uint64_t conn;
    aegis_wsc_event ev;

    /* a wrong Sec-WebSocket-Accept */
    if (script_start(&s, SCRIPT_BAD_ACCEPT)) {
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", s.port, "/", NULL, 0, NULL, &conn), 0);
        bool got = expect_event(&p, conn, AEGIS_WSC_EV_ERROR, &ev);
        CHECK(got);
        if (got) CHECK_EQ_INT(ev.error, -EPROTO);
        script_finish(&s, ep);
        free(s.got);
    }

    /* a refusal whose body ends with the connection */
    if (script_start(&s, SCRIPT_NO_LENGTH)) {
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", s.port, "/", NULL, 0, NULL, &conn), 0);
        bool got = expect_event(&p, conn, AEGIS_WSC_EV_REFUSED, &ev);
        CHECK(got);
        if (got) {
            CHECK_EQ_INT(ev.status, 403);
            CHECK(ev.len == 14 && memcmp(ev.data, "no length here", 14) == 0);
            if (ev.len) fprintf(stderr, "    refused body: %.*s\n", (int)ev.len, (const char *)ev.data);
        }
        script_finish(&s, ep);
        free(s.got);
    }

    /* a head a byte at a time, then the server closes: the client echoes 4001 */
    if (script_start(&s, SCRIPT_SERVER_CLOSE)) {
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", s.port, "/", NULL, 0, NULL, &conn), 0);
        CHECK(expect_event(&p, conn, AEGIS_WSC_EV_OPEN, NULL));
        bool got = expect_event(&p, conn, AEGIS_WSC_EV_CLOSED, &ev);
        CHECK(got);
        if (got) CHECK_EQ_INT(ev.close_code, 4001);
        script_finish(&s, ep);
        client_frames f = read_client_frames(&s);
        CHECK(!f.error);
        CHECK_EQ_INT(f.closes, 1);
        CHECK_EQ_INT(f.close_code, 4001);
        free(s.got);
    }

    /* fragments, a ping, arena overflow, then a masked frame */
    if (script_start(&s, SCRIPT_FRAMES)) {
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", s.port, "/", NULL, 0, NULL, &conn), 0);
        CHECK(expect_event(&p, conn, AEGIS_WSC_EV_OPEN, NULL));
        bool got = expect_event(&p, conn, AEGIS_WSC_EV_MESSAGE, &ev);
        CHECK(got);
        if (got) CHECK(ev.text && ev.len == 5 && memcmp(ev.data, "Hello", 5) == 0);
        uint8_t *want = malloc(FRAMES_BIG);
        frames_payload(want, FRAMES_BIG, 1);
        got = expect_event(&p, conn, AEGIS_WSC_EV_MESSAGE, &ev);
        CHECK(got);
        if (got) CHECK(!ev.text && ev.len == FRAMES_BIG && memcmp(ev.data, want, FRAMES_BIG) == 0);
        /* handed out one at a time: most wait in the queue, in the arena */
        p.batch = 1;
        for (unsigned i = 0; i < FRAMES_MIDS; i++) {
            frames_payload(want, FRAMES_MID, 2 + i);
            got = expect_event(&p, conn, AEGIS_WSC_EV_MESSAGE, &ev);
            CHECK(got);
            if (got) CHECK(ev.len == FRAMES_MID && memcmp(ev.data, want, FRAMES_MID) == 0);
        }
        for (unsigned i = 0; i < FRAMES_SMALLS; i++) {
            frames_payload(want, FRAMES_SMALL, 100 + i);
            got = expect_event(&p, conn, AEGIS_WSC_EV_MESSAGE, &ev);
            CHECK(got);
            if (!got) break;
            if (ev.len != FRAMES_SMALL || memcmp(ev.data, want, FRAMES_SMALL) != 0) {
                fprintf(stderr, "    small message %u differs\n", i);
                CHECK(false);
            }
        }
        p.batch = 0;
        free(want);
        got = expect_event(&p, conn, AEGIS_WSC_EV_ERROR, &ev);
        CHECK(got);
        if (got) {
            CHECK_EQ_INT(ev.error, -EPROTO);
            CHECK_EQ_INT(ev.close_code, 1002);
        }
        script_finish(&s, ep);
        client_frames f = read_client_frames(&s);
        CHECK(!f.error);
        CHECK_EQ_INT(f.pongs, 1);
        CHECK(f.pong_len == 2 && memcmp(f.pong, "pp", 2) == 0);
        CHECK_EQ_INT(f.closes, 1);
        CHECK_EQ_INT(f.close_code, 1002);
        free(s.got);
    }

    /* our close unanswered: after the 2 s grace, CLOSED with 1006 */
    if (script_start(&s, SCRIPT_SILENT)) {
        CHECK_EQ_INT(aegis_wsc_connect(ep, "127.0.0.1", s.port, "/", NULL, 0, NULL, &conn), 0);
        CHECK(expect_event(&p, conn, AEGIS_WSC_EV_OPEN, NULL));
        uint64_t t0 = now_ms();
        CHECK_EQ_INT(aegis_wsc_close(ep, conn, 1000, "going"), 0);
        bool got = expect_event(&p, conn, AEGIS_WSC_EV_CLOSED, &ev);
        CHECK(got);
        if (got) {
            CHECK_EQ_INT(ev.close_code, 1006);
            CHECK(now_ms() - t0 >= 1900);
        }
        script_finish(&s, ep);
        client_frames f = read_client_frames(&s);
        CHECK(!f.error);
        CHECK_EQ_INT(f.closes, 1);
        CHECK_EQ_INT(f.close_code, 1000);
        free(s.got);
    }
    aegis_wsc_free(ep);
}

/* The server closes an idle connection (4006); the client sees its code. */
static void test_server_close(aegis_io_backend backend) {
    aegis_io_config cfg = {
        .host = "127.0.0.1", .workers = 1, .backend = backend, .echo = true, .plaintext = true,
        .idle_timeout_ms = 300,
    };
    aegis_io *io = NULL;
    char err[256];
    CHECK_EQ_INT(aegis_io_start(&cfg, &io, err, sizeof err), 0);
    if (io == NULL) return;
    aegis_wsc *ep = client_new(backend, false, NULL);
    if (ep != NULL) {
        pump p = { .ep = ep };
        uint64_t conn;
        if (open_one(&p, aegis_io_port(io), &conn)) {
            aegis_wsc_event ev;
            bool got = expect_event(&p, conn, AEGIS_WSC_EV_CLOSED, &ev);
            CHECK(got);
            if (got) CHECK_EQ_INT(ev.close_code, 4006);
        }
        aegis_wsc_free(ep);
    }
    aegis_io_stop(io);
}

static void remove_dir(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/tls.crt", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/tls.key", dir);
    unlink(path);
    rmdir(dir);
}

static void run_echo(aegis_io_backend backend, bool tls) {
    char dir[] = "/tmp/aegis-test-client-XXXXXX";
    if (tls && mkdtemp(dir) == NULL) {
        CHECK(false);
        return;
    }
    aegis_io *io = server_start(backend, true, !tls, tls ? dir : NULL);
    if (io != NULL) {
        uint16_t port = aegis_io_port(io);
        const char *pin = tls ? aegis_io_tls_fingerprint(io) : NULL;
        aegis_wsc *ep = client_new(backend, tls, pin);
        if (ep != NULL) {
            CHECK(strcmp(aegis_wsc_backend_name(ep), aegis_io_backend_name(io)) == 0);
            test_basic(ep, port);
            test_many(ep, port);
            aegis_wsc_free(ep);
        }
        if (tls) test_wrong_pin(backend, port);
        aegis_io_stop(io);
    }
    if (tls) remove_dir(dir);
}

static bool uring_available(void) {
    aegis_wsc_config cfg = { .backend = AEGIS_IO_URING };
    aegis_wsc *ep = NULL;
    char err[256];
    if (aegis_wsc_create(&cfg, &ep, err, sizeof err) != 0) {
        printf("note: io_uring unavailable (%s): its runs are skipped\n", err);
        return false;
    }
    aegis_wsc_free(ep);
    return true;
}

int main(void) {
    const struct {
        aegis_io_backend backend;
        const char *name;
    } backends[] = { { AEGIS_IO_URING, "io_uring" }, { AEGIS_IO_EPOLL, "epoll" } };
    for (size_t b = 0; b < 2; b++) {
        if (backends[b].backend == AEGIS_IO_URING && !uring_available()) continue;
        for (int tls = 0; tls <= 1; tls++) {
            printf("%s, %s: echo\n", backends[b].name, tls ? "TLS" : "plaintext");
            fflush(stdout);
            run_echo(backends[b].backend, tls);
        }
        printf("%s: refused, connection refused\n", backends[b].name);
        fflush(stdout);
        test_refused(backends[b].backend);
        test_nothing_listening(backends[b].backend);
        printf("%s: server close, scripted server\n", backends[b].name);
        fflush(stdout);
        test_server_close(backends[b].backend);
        test_scripted(backends[b].backend);
    }
    return check_summary();
}
