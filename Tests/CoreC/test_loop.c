/*
 * test_loop.c — unit test of the event loop (CSources/AegisIO/src/loop*.c).
 *
 * Build and run (from the repository root):
 *   cc -std=gnu17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
 *      -I CSources/AegisCore/include -I CSources/AegisIO/src -I Tests/CoreC \
 *      CSources/AegisIO/src/loop*.c CSources/AegisCore/src/status.c \
 *      Tests/CoreC/test_loop.c -luring -lpthread -o /tmp/test_loop
 *   /tmp/test_loop
 *
 * The same body runs on io_uring and on epoll, each forced (io_uring is
 * skipped, with a note, where the kernel refuses it), over TCP on
 * 127.0.0.1: multishot accept of several clients, receives in pool buffers,
 * echo with sends (4 MiB each way, which takes short sends), EOF, cancel
 * before close (with fd reuse, and of a send waiting for room), an eventfd
 * signalled from another thread, connect (accepted and refused), and a pool
 * of 4 buffers of 4 KiB against three flooding senders while the test holds
 * every buffer: nothing may arrive while it does, and once the buffers are
 * released every byte must arrive, in order; and a loop created on one
 * thread and run on another. Before that, argument checks, the timeout of
 * loop_run_once, and LOOP_AUTO with and without AEGIS_DISABLE_IO_URING.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "loop.h"

#define TAG(kind, i) (((uint64_t)(kind) << 32) | (uint32_t)(i))
#define TAG_KIND(t) ((uint32_t)((t) >> 32))
#define TAG_IDX(t) ((uint32_t)(t))
enum { K_LISTEN = 1, K_PEER, K_WAKE, K_CONNECT, K_RAW };

#define MAXP 16
#define BIG (4u << 20)
#define TX_CAP (BIG + (64u << 10))

/* One end of a TCP connection driven by the loop. */
struct peer {
    int fd;
    bool used, dead;        /* dead: cancelled; what still comes is counted */
    uint8_t *rx;
    size_t rx_len, rx_cap;
    int recv_end;           /* 0 while receiving, 1 at EOF, -errno */
    bool recv_more_ok;      /* every data completion had more=true */
    uint8_t *tx;            /* never reallocated: a send may point into it */
    size_t tx_len, tx_off, inflight;
    bool sending;
    unsigned sends, short_sends;
    int send_err;
    bool echo;              /* send back what arrives */
    bool hold;              /* keep the buffers (pool exhaustion) */
};

struct T {
    loop *l;
    int lfd;
    struct sockaddr_in addr;
    struct peer p[MAXP];
    int accepted[32];
    unsigned naccepted, ntaken;
    bool accept_more_ok;
    long wake_sum;
    unsigned wakes;
    bool wake_more_ok;
    int connect_res;
    bool connect_done;
    int raw_res;
    bool raw_done;
    unsigned stale;         /* completions for a cancelled peer */
    unsigned max_batch;
    uint16_t held[64];
    unsigned nheld;
    unsigned bad;           /* completions not as expected (CHECKed once, at the end) */
};

/* Checks made for each completion are counted here and checked once per
 * test, so that the test's count of checks does not depend on how the data
 * happened to be split. */
#define EXPECT(t, cond) do { \
    if (!(cond)) { (t)->bad++; fprintf(stderr, "%s:%d: unexpected: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void fill_pattern(uint8_t *b, size_t n, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        b[i] = (uint8_t)x;
    }
}

static struct peer *peer_new(struct T *t, int fd, bool echo) {
    for (unsigned i = 0; i < MAXP; i++) {
        struct peer *p = &t->p[i];
        if (p->used) continue;
        *p = (struct peer){ .fd = fd, .used = true, .echo = echo, .recv_more_ok = true };
        p->tx = malloc(TX_CAP);
        return p;
    }
    return NULL;
}

static uint64_t peer_tag(struct T *t, struct peer *p) {
    return TAG(K_PEER, (uint32_t)(p - t->p));
}

static void peer_free(struct peer *p) {
    free(p->rx);
    free(p->tx);
    *p = (struct peer){ 0 };
}

/* Sends what is queued, one send in flight at a time. */
static void peer_kick(struct T *t, struct peer *p) {
    if (p->sending || p->dead) return;
    if (p->tx_off == p->tx_len) {
        p->tx_off = p->tx_len = 0;
        return;
    }
    p->inflight = p->tx_len - p->tx_off;
    int r = loop_send(t->l, p->fd, p->tx + p->tx_off, p->inflight, peer_tag(t, p));
    EXPECT(t, r == 0);
    if (r == 0) p->sending = true, p->sends++;
}

static bool peer_queue(struct T *t, struct peer *p, const void *data, size_t n) {
    if (!p->sending && p->tx_off == p->tx_len) p->tx_off = p->tx_len = 0;
    if (p->tx_len + n > TX_CAP) return false;
    memcpy(p->tx + p->tx_len, data, n);
    p->tx_len += n;
    peer_kick(t, p);
    return true;
}

static void rx_append(struct peer *p, const void *data, size_t n) {
    if (p->rx_len + n > p->rx_cap) {
        p->rx_cap = (p->rx_len + n) * 2;
        p->rx = realloc(p->rx, p->rx_cap);
    }
    memcpy(p->rx + p->rx_len, data, n);
    p->rx_len += n;
}

static void on_completion(struct T *t, const loop_completion *c) {
    uint32_t kind = TAG_KIND(c->tag), i = TAG_IDX(c->tag);
    struct peer *p = kind == K_PEER && i < MAXP ? &t->p[i] : NULL;
    if (p && p->dead) {
        t->stale++;
        if (c->op == LOOP_OP_RECV && c->res > 0) loop_buffer_release(t->l, c->buf_id);
        return;
    }
    switch (c->op) {
    case LOOP_OP_ACCEPT:
        EXPECT(t, kind == K_LISTEN);
        EXPECT(t, c->res >= 0);
        if (!c->more) t->accept_more_ok = false;
        if (c->res >= 0 && t->naccepted < 32) t->accepted[t->naccepted++] = c->res;
        break;
    case LOOP_OP_RECV:
        if (!p) {
            EXPECT(t, !"receive for an unknown tag");
            break;
        }
        if (c->res > 0) {
            if (!c->more) p->recv_more_ok = false;
            const uint8_t *b = loop_buffer(t->l, c->buf_id);
            rx_append(p, b, (size_t)c->res);
            if (p->echo && !peer_queue(t, p, b, (size_t)c->res)) EXPECT(t, !"echo queue overflow");
            if (p->hold && t->nheld < 64) t->held[t->nheld++] = c->buf_id;
            else loop_buffer_release(t->l, c->buf_id);
        } else {
            EXPECT(t, !c->more);
            p->recv_end = c->res == 0 ? 1 : c->res;
        }
        break;
    case LOOP_OP_SEND:
        if (kind == K_RAW) {
            t->raw_res = c->res;
            t->raw_done = true;
            break;
        }
        if (!p) {
            EXPECT(t, !"send for an unknown tag");
            break;
        }
        EXPECT(t, !c->more);
        p->sending = false;
        if (c->res < 0) {
            p->send_err = c->res;
            break;
        }
        if ((size_t)c->res < p->inflight) p->short_sends++;
        p->tx_off += (size_t)c->res;
        peer_kick(t, p);
        break;
    case LOOP_OP_WAKE:
        EXPECT(t, kind == K_WAKE);
        if (!c->more) t->wake_more_ok = false;
        t->wake_sum += c->res;
        t->wakes++;
        break;
    case LOOP_OP_CONNECT:
        EXPECT(t, kind == K_CONNECT);
        t->connect_res = c->res;
        t->connect_done = true;
        break;
    default:
        EXPECT(t, !"unknown op");
    }
}

static int pump(struct T *t, int timeout_ms) {
    loop_completion out[64];
    unsigned max = t->max_batch ? t->max_batch : 64;
    int n = loop_run_once(t->l, out, max, timeout_ms);
    EXPECT(t, n >= 0);
    for (int i = 0; i < n; i++) on_completion(t, &out[i]);
    return n;
}

/* Runs the loop until cond holds (a CHECK fails after 10 s). */
#define WAIT(t, cond) do { \
    double end_ = now_ms() + 10000; \
    while (!(cond) && now_ms() < end_) pump((t), 20); \
    CHECK(cond); \
} while (0)

/* Runs the loop for ms milliseconds; the number of completions. */
static unsigned pump_for(struct T *t, int ms) {
    unsigned n = 0;
    double end = now_ms() + ms;
    while (now_ms() < end) n += (unsigned)pump(t, 5);
    return n;
}

static int listener(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    *addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof *addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, len) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        perror("listener");
        exit(2);
    }
    return fd;
}

static int client(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        perror("client");
        exit(2);
    }
    return fd;
}

static void set_nonblock(int fd) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Reads exactly n bytes from a blocking socket, giving up after 5 s. */
static size_t read_exact(int fd, uint8_t *b, size_t n) {
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, b + got, n - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* A helper whose address buffer is gone when the connect completes: the
 * loop must have taken it during the call. */
static int start_connect(loop *l, int fd, uint16_t port_be) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = port_be, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    return loop_connect(l, fd, &a, sizeof a, TAG(K_CONNECT, 0));
}

/* Accepts one more connection and arms its receive. */
static struct peer *accept_peer(struct T *t, bool echo) {
    WAIT(t, t->naccepted > t->ntaken);
    if (t->naccepted == t->ntaken) return NULL;
    struct peer *p = peer_new(t, t->accepted[t->ntaken++], echo);
    CHECK_EQ_INT(loop_recv(t->l, p->fd, peer_tag(t, p)), 0);
    return p;
}

/* The client socket (of cli[0..n)) whose other end is server socket srv. */
static int client_of(const int *cli, int n, int srv) {
    struct sockaddr_in ca, sa;
    socklen_t len = sizeof sa;
    getpeername(srv, (struct sockaddr *)&sa, &len);
    for (int i = 0; i < n; i++) {
        len = sizeof ca;
        getsockname(cli[i], (struct sockaddr *)&ca, &len);
        if (ca.sin_port == sa.sin_port) return cli[i];
    }
    return -1;
}

static void *signaller(void *arg) {
    int efd = *(int *)arg;
    for (int i = 0; i < 3; i++) {
        struct timespec ts = { .tv_nsec = 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
        uint64_t one = 1;
        if (write(efd, &one, sizeof one) != sizeof one) perror("eventfd write");
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */

enum { NCLI = 4 };

static void test_echo_and_friends(loop_backend be) {
    struct T *t = calloc(1, sizeof *t);
    loop_backend got = LOOP_AUTO;
    int r = loop_create(be, 64, 16384, &t->l, &got);
    CHECK_EQ_INT(r, 0);
    if (r < 0) {
        free(t);
        return;
    }
    CHECK_EQ_INT(got, be);
    CHECK_EQ_INT(loop_buffer_size(t->l), 16384);
    t->accept_more_ok = t->wake_more_ok = true;

    /* Multishot accept; one completion per call, to cover what is left over
     * between calls. */
    t->lfd = listener(&t->addr);
    CHECK_EQ_INT(loop_accept(t->l, t->lfd, TAG(K_LISTEN, 0)), 0);
    CHECK_EQ_INT(loop_accept(t->l, t->lfd, TAG(K_LISTEN, 0)), -EBUSY);
    t->max_batch = 1;
    int cli[NCLI];
    for (int i = 0; i < NCLI; i++) cli[i] = client(&t->addr);
    WAIT(t, t->naccepted == NCLI);
    CHECK(t->accept_more_ok);

    /* Receive and echo: which accepted socket is which client does not
     * matter, each client must get its own message back. */
    struct peer *srv[NCLI];
    t->ntaken = NCLI;
    for (int i = 0; i < NCLI; i++) {
        srv[i] = peer_new(t, t->accepted[i], true);
        CHECK_EQ_INT(loop_recv(t->l, srv[i]->fd, peer_tag(t, srv[i])), 0);
    }
    CHECK_EQ_INT(loop_recv(t->l, srv[0]->fd, peer_tag(t, srv[0])), -EBUSY);
    char msg[NCLI][32];
    size_t total = 0;
    for (int i = 0; i < NCLI; i++) {
        int n = snprintf(msg[i], sizeof msg[i], "hello from client %d", i);
        total += (size_t)n;
        CHECK_EQ_INT(write(cli[i], msg[i], (size_t)n), n);
    }
    WAIT(t, srv[0]->rx_len + srv[1]->rx_len + srv[2]->rx_len + srv[3]->rx_len == total &&
                !srv[0]->sending && !srv[1]->sending && !srv[2]->sending && !srv[3]->sending);
    for (int i = 0; i < NCLI; i++) {
        uint8_t back[32] = { 0 };
        size_t n = strlen(msg[i]);
        CHECK_EQ_INT(read_exact(cli[i], back, n), n);
        CHECK_EQ_MEM(back, msg[i], n);
    }
    for (int i = 0; i < NCLI; i++) CHECK(srv[i]->recv_more_ok);
    t->max_batch = 0;

    /* 4 MiB each way: the client end is driven by the loop too. Which server
     * end is client 0's: the one whose peer address is client 0's. */
    struct peer *s0 = NULL;
    for (int i = 0; i < NCLI; i++)
        if (client_of(cli, 1, srv[i]->fd) == cli[0]) s0 = srv[i];
    CHECK(s0 != NULL);
    set_nonblock(cli[0]);
    struct peer *c0 = peer_new(t, cli[0], false);
    CHECK_EQ_INT(loop_recv(t->l, c0->fd, peer_tag(t, c0)), 0);
    uint8_t *big = malloc(BIG);
    fill_pattern(big, BIG, 7);
    CHECK(peer_queue(t, c0, big, BIG));
    WAIT(t, c0->rx_len == BIG);
    CHECK_EQ_INT(c0->rx_len, BIG);
    if (c0->rx_len == BIG) CHECK_EQ_MEM(c0->rx, big, BIG);
    CHECK(c0->short_sends > 0);
    CHECK(s0 && s0->sends > 1);
    CHECK_EQ_INT(c0->send_err, 0);
    printf("  4 MiB echo: client %u sends (%u short), server %u sends\n", c0->sends, c0->short_sends,
           s0 ? s0->sends : 0);

    /* EOF: the client end closes its writing half. */
    struct peer *s1 = NULL;
    for (int i = 0; i < NCLI; i++)
        if (srv[i] != s0 && !s1) s1 = srv[i];
    int c1fd = client_of(cli, NCLI, s1->fd);
    CHECK(c1fd >= 0);
    shutdown(c1fd, SHUT_WR);
    WAIT(t, s1->recv_end != 0);
    CHECK_EQ_INT(s1->recv_end, 1);
    /* The receive has ended: arming it again is allowed. */
    CHECK_EQ_INT(loop_recv(t->l, s1->fd, peer_tag(t, s1)), 0);
    CHECK_EQ_INT(loop_cancel(t->l, s1->fd), 0);

    /* Cancel before close: nothing more for that tag, even with data
     * arriving; then a new connection, likely on the same descriptor number. */
    struct peer *s2 = NULL;
    for (int i = 0; i < NCLI; i++)
        if (srv[i] != s0 && srv[i] != s1 && !s2) s2 = srv[i];
    CHECK_EQ_INT(loop_cancel(t->l, s2->fd), 0);
    s2->dead = true;
    CHECK_EQ_INT(write(client_of(cli, NCLI, s2->fd), "late", 4), 4);
    pump_for(t, 100);
    CHECK_EQ_INT(t->stale, 0);
    /* The new client first, so that the accepted socket gets the number
     * just closed. */
    int cnew = client(&t->addr);
    int old_fd = s2->fd;
    close(s2->fd);
    s2->fd = -1;
    struct peer *sn = accept_peer(t, false);
    if (sn) {
        printf("  fd reuse after cancel: %s\n", sn->fd == old_fd ? "same number" : "other number");
        CHECK_EQ_INT(write(cnew, "fresh", 5), 5);
        WAIT(t, sn->rx_len == 5);
        CHECK_EQ_MEM(sn->rx, "fresh", 5);
    }
    CHECK_EQ_INT(t->stale, 0);

    /* A send waiting for room, cancelled: completes once, with -ECANCELED. */
    struct peer *s3 = NULL;
    for (int i = 0; i < NCLI; i++)
        if (srv[i] != s0 && srv[i] != s1 && srv[i] != s2 && !s3) s3 = srv[i];
    size_t off = 0;
    bool waiting = false;
    for (int k = 0; k < 64 && !waiting; k++) {
        t->raw_done = false;
        EXPECT(t, loop_send(t->l, s3->fd, big + off, BIG - off, TAG(K_RAW, 0)) == 0);
        double end = now_ms() + 100;
        while (!t->raw_done && now_ms() < end) pump(t, 5);
        if (!t->raw_done) waiting = true;
        else if (t->raw_res > 0) off += (size_t)t->raw_res;
        else break;
    }
    CHECK(waiting);
    CHECK_EQ_INT(loop_send(t->l, s3->fd, big, 1, TAG(K_RAW, 1)), -EBUSY);
    CHECK_EQ_INT(loop_cancel(t->l, s3->fd), 0);
    WAIT(t, t->raw_done);
    CHECK_EQ_INT(t->raw_res, -ECANCELED);
    s3->dead = true;
    t->stale = 0;

    /* An eventfd signalled from another thread (created blocking: the loop
     * makes it non-blocking). */
    int efd = eventfd(0, EFD_CLOEXEC);
    CHECK_EQ_INT(loop_watch_eventfd(t->l, efd, TAG(K_WAKE, 0)), 0);
    pthread_t th;
    pthread_create(&th, NULL, signaller, &efd);
    WAIT(t, t->wake_sum == 3);
    pthread_join(th, NULL);
    CHECK_EQ_INT(t->wake_sum, 3);
    CHECK(t->wakes >= 1 && t->wake_more_ok);
    uint64_t five = 5;
    CHECK_EQ_INT(write(efd, &five, sizeof five), 8);
    WAIT(t, t->wake_sum == 8);
    CHECK_EQ_INT(loop_cancel(t->l, efd), 0);
    CHECK_EQ_INT(write(efd, &five, sizeof five), 8);
    pump_for(t, 50);
    CHECK_EQ_INT(t->wake_sum, 8);
    close(efd);

    /* Connect: to the listener (accepted there too), then to a closed port. */
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    unsigned before = t->naccepted;
    CHECK_EQ_INT(start_connect(t->l, cfd, t->addr.sin_port), 0);
    WAIT(t, t->connect_done && t->naccepted > before);
    CHECK_EQ_INT(t->connect_res, 0);
    struct peer *cp = peer_new(t, cfd, false);
    CHECK_EQ_INT(loop_recv(t->l, cfd, peer_tag(t, cp)), 0);
    int acc = t->accepted[t->ntaken++];
    CHECK_EQ_INT(write(acc, "over", 4), 4);
    WAIT(t, cp->rx_len == 4);
    CHECK_EQ_INT(loop_cancel(t->l, cfd), 0);
    close(cfd);
    close(acc);
    cp->fd = -1;
    cp->dead = true;

    struct sockaddr_in dead;
    int tmp = listener(&dead);
    close(tmp);
    cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    t->connect_done = false;
    CHECK_EQ_INT(start_connect(t->l, cfd, dead.sin_port), 0);
    WAIT(t, t->connect_done);
    CHECK_EQ_INT(t->connect_res, -ECONNREFUSED);
    CHECK_EQ_INT(loop_cancel(t->l, cfd), 0);
    close(cfd);

    /* A buffer released twice goes back once. */
    loop_buffer_release(t->l, 0);
    loop_buffer_release(t->l, 60000);
    CHECK(loop_buffer(t->l, 64) == NULL);

    /* Cancel everything, then close. */
    CHECK_EQ_INT(loop_cancel(t->l, t->lfd), 0);
    for (unsigned i = 0; i < MAXP; i++) {
        if (!t->p[i].used || t->p[i].fd < 0) continue;
        CHECK_EQ_INT(loop_cancel(t->l, t->p[i].fd), 0);
        t->p[i].dead = true;
    }
    pump_for(t, 20);
    for (unsigned i = 0; i < MAXP; i++) {
        if (!t->p[i].used) continue;
        if (t->p[i].fd >= 0 && &t->p[i] != c0) close(t->p[i].fd);
        peer_free(&t->p[i]);
    }
    for (int i = 0; i < NCLI; i++) close(cli[i]);
    close(cnew);
    close(t->lfd);
    free(big);
    CHECK_EQ_INT(t->bad, 0);
    loop_destroy(t->l);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Pool exhaustion                                                           */

#define FLOOD_BYTES (256u << 10)
#define NFLOOD 3

struct flood_arg {
    struct sockaddr_in addr;
    uint32_t seed;
};

static void *flooder(void *arg) {
    struct flood_arg *a = arg;
    int fd = client(&a->addr);
    uint8_t *b = malloc(FLOOD_BYTES);
    fill_pattern(b, FLOOD_BYTES, a->seed);
    /* The first 4 bytes say who this is. */
    memcpy(b, &a->seed, 4);
    /* Odd sizes, so that buffers fill unevenly. */
    for (size_t off = 0; off < FLOOD_BYTES;) {
        size_t n = 1000 + (off / 1000) % 7 * 1111;
        if (n > FLOOD_BYTES - off) n = FLOOD_BYTES - off;
        ssize_t w = write(fd, b + off, n);
        if (w <= 0) break;
        off += (size_t)w;
    }
    close(fd);
    free(b);
    return NULL;
}

static void test_pool_exhaustion(loop_backend be) {
    struct T *t = calloc(1, sizeof *t);
    int r = loop_create(be, 4, 4096, &t->l, NULL);
    CHECK_EQ_INT(r, 0);
    if (r < 0) {
        free(t);
        return;
    }
    t->lfd = listener(&t->addr);
    CHECK_EQ_INT(loop_accept(t->l, t->lfd, TAG(K_LISTEN, 0)), 0);
    struct flood_arg args[NFLOOD];
    pthread_t th[NFLOOD];
    for (int i = 0; i < NFLOOD; i++) {
        args[i] = (struct flood_arg){ .addr = t->addr, .seed = 100u + (uint32_t)i };
        pthread_create(&th[i], NULL, flooder, &args[i]);
    }
    struct peer *ps[NFLOOD];
    for (int i = 0; i < NFLOOD; i++) {
        ps[i] = accept_peer(t, false);
        if (ps[i]) ps[i]->hold = true;
    }
    unsigned full = 0, leaked = 0;
    double end = now_ms() + 20000;
    for (;;) {
        bool done = true;
        for (int i = 0; i < NFLOOD; i++) done &= ps[i] && ps[i]->recv_end != 0;
        if (done || now_ms() > end) break;
        pump(t, 10);
        if (t->nheld == 4) {
            /* Every buffer is ours: nothing can arrive. */
            full++;
            if (full % 16 == 1) {
                unsigned before = t->nheld;
                pump_for(t, 5);
                leaked += t->nheld - before;
            }
        }
        /* Released in reverse, so that ids come back out of order. */
        if (t->nheld >= 4 || (t->nheld > 0 && rand() % 3 == 0))
            while (t->nheld) loop_buffer_release(t->l, t->held[--t->nheld]);
    }
    while (t->nheld) loop_buffer_release(t->l, t->held[--t->nheld]);
    for (int i = 0; i < NFLOOD; i++) pthread_join(th[i], NULL);

    CHECK_EQ_INT(leaked, 0);
    CHECK(full > 0);
    printf("  pool of 4: all buffers held %u times\n", full);
    for (int i = 0; i < NFLOOD; i++) {
        struct peer *p = ps[i];
        if (!p) continue;
        CHECK_EQ_INT(p->recv_end, 1);
        CHECK_EQ_INT(p->rx_len, FLOOD_BYTES);
        if (p->rx_len != FLOOD_BYTES) continue;
        uint32_t seed;
        memcpy(&seed, p->rx, 4);
        uint8_t *want = malloc(FLOOD_BYTES);
        fill_pattern(want, FLOOD_BYTES, seed);
        memcpy(want, &seed, 4);
        CHECK_EQ_MEM(p->rx, want, FLOOD_BYTES);
        free(want);
    }
    CHECK_EQ_INT(loop_cancel(t->l, t->lfd), 0);
    for (int i = 0; i < NFLOOD; i++) {
        if (!ps[i]) continue;
        CHECK_EQ_INT(loop_cancel(t->l, ps[i]->fd), 0);
        close(ps[i]->fd);
        peer_free(ps[i]);
    }
    close(t->lfd);
    CHECK_EQ_INT(t->bad, 0);
    loop_destroy(t->l);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Created on one thread, run on another (io_uring binds the ring to the
 * thread of its first submission)                                           */

struct thread_run {
    loop *l;
    int ok;
};

static void *run_elsewhere(void *arg) {
    struct thread_run *tr = arg;
    struct T t = { .l = tr->l };
    t.lfd = listener(&t.addr);
    if (loop_accept(t.l, t.lfd, TAG(K_LISTEN, 0)) != 0) return NULL;
    int c = client(&t.addr);
    struct peer *p = accept_peer(&t, true);
    if (p && write(c, "ping", 4) == 4) {
        uint8_t back[4];
        double end = now_ms() + 5000;
        while ((p->rx_len < 4 || p->sending) && now_ms() < end) pump(&t, 10);
        tr->ok = read_exact(c, back, 4) == 4 && memcmp(back, "ping", 4) == 0 && t.bad == 0;
    }
    loop_cancel(t.l, t.lfd);
    if (p) {
        loop_cancel(t.l, p->fd);
        close(p->fd);
        peer_free(p);
    }
    close(c);
    close(t.lfd);
    return NULL;
}

static void test_other_thread(loop_backend be) {
    struct thread_run tr = { 0 };
    CHECK_EQ_INT(loop_create(be, 8, 4096, &tr.l, NULL), 0);
    pthread_t th;
    pthread_create(&th, NULL, run_elsewhere, &tr);
    pthread_join(th, NULL);
    CHECK(tr.ok);
    loop_destroy(tr.l);
}

/* ------------------------------------------------------------------------ */

/* loop_run_once(30 ms) with nothing armed: 0, after 30 ms. loop.h lets a
 * wait end early with nothing, and one does after an io_uring loop was
 * destroyed (the kernel's teardown interrupts the thread's next waits), so
 * a few early returns are allowed. */
static bool waits_for_timeout(loop *l) {
    loop_completion c;
    for (int i = 0; i < 5; i++) {
        double t0 = now_ms();
        if (loop_run_once(l, &c, 1, 30) != 0) return false;
        if (now_ms() - t0 >= 29) return true;
    }
    return false;
}

static void test_create(void) {
    loop *l = NULL;
    CHECK_EQ_INT(loop_create(LOOP_EPOLL, 3, 4096, &l, NULL), -EINVAL);
    CHECK_EQ_INT(loop_create(LOOP_EPOLL, 65536, 4096, &l, NULL), -EINVAL);
    CHECK_EQ_INT(loop_create(LOOP_EPOLL, 4, 0, &l, NULL), -EINVAL);
    CHECK(l == NULL);
    CHECK(strcmp(loop_backend_name(LOOP_URING), "io_uring") == 0);
    CHECK(strcmp(loop_backend_name(LOOP_EPOLL), "epoll") == 0);

    /* LOOP_AUTO: io_uring where it works, epoll when told not to use it. */
    loop_backend got = LOOP_AUTO;
    setenv("AEGIS_DISABLE_IO_URING", "1", 1);
    CHECK_EQ_INT(loop_create(LOOP_AUTO, 8, 4096, &l, &got), 0);
    CHECK_EQ_INT(got, LOOP_EPOLL);
    loop_destroy(l);
    unsetenv("AEGIS_DISABLE_IO_URING");
    bool uring_ok = loop_create(LOOP_URING, 8, 4096, &l, NULL) == 0;
    if (uring_ok) loop_destroy(l);
    CHECK_EQ_INT(loop_create(LOOP_AUTO, 8, 4096, &l, &got), 0);
    CHECK_EQ_INT(got, uring_ok ? LOOP_URING : LOOP_EPOLL);
    loop_destroy(l);

    /* run_once with a timeout and nothing to do returns 0 after it, or
     * sooner: a ring torn down above interrupts the thread's next wait. */
    CHECK_EQ_INT(loop_create(LOOP_EPOLL, 8, 4096, &l, NULL), 0);
    CHECK(waits_for_timeout(l));
    loop_destroy(l);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    test_create();
    static const loop_backend backends[] = { LOOP_URING, LOOP_EPOLL };
    for (size_t i = 0; i < 2; i++) {
        loop_backend be = backends[i];
        loop *probe;
        int r = loop_create(be, 8, 4096, &probe, NULL);
        if (r < 0) {
            printf("%s: unavailable here (%s), skipped\n", loop_backend_name(be), strerror(-r));
            continue;
        }
        CHECK(waits_for_timeout(probe));
        loop_destroy(probe);
        int p0 = check_passed_, f0 = check_failed_;
        printf("%s:\n", loop_backend_name(be));
        test_echo_and_friends(be);
        test_pool_exhaustion(be);
        test_other_thread(be);
        printf("%s: %d passed, %d failed\n", loop_backend_name(be), check_passed_ - p0, check_failed_ - f0);
    }
    return check_summary();
}
