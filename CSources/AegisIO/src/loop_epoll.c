/*
 * loop_epoll.c — the epoll backend of loop.h: io_uring's completions,
 * emulated.
 *
 * Every descriptor the loop waits on is registered once, edge-triggered,
 * for input and output (an eventfd for input only), and stays registered
 * until loop_cancel. An edge only sets the descriptor's in_ready/out_ready
 * and puts it on the work list; the work list is then served in order, a
 * bounded burst per descriptor (accepts until EAGAIN, receives into free
 * pool buffers until EAGAIN, the pending send, the pending connect's
 * SO_ERROR), and what the system calls return is queued as completions. A
 * receiver that finds the pool empty moves to the starved list, keeping its
 * in_ready, and comes back to the work list when buffers are released: the
 * data waits in the socket, in order.
 *
 * A round (epoll_wait, then the work list) only starts when the queue is
 * empty, and serves at most EP_WORK_BUDGET descriptors, each adding at most
 * EP_FD_MAX completions: the queue, allocated at that size, cannot fill up
 * in a round. The completions that the calls themselves queue (a send that
 * went through at once, a cancelled send) grow it first, or fail with
 * -ENOMEM.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop_internal.h"

#define EP_EVENTS 256
#define EP_WORK_BUDGET 256    /* descriptors served per round */
#define EP_BURST 16           /* accepts or receives per descriptor per turn */
#define EP_FD_MAX (EP_BURST + 2) /* completions per turn: the burst, a send, a connect */

#define BIT(op) (1u << (op))
#define EP_SOCKET_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP)

enum { LIST_NONE, LIST_WORK, LIST_STARVED };
enum { TURN_DONE, TURN_MORE, TURN_STARVED };

struct efd {
    uint64_t tag[LOOP_OP_CONNECT + 1];
    const uint8_t *send_buf;
    size_t send_len;
    uint32_t next, prev;    /* on a list: fd + 1, 0 for none */
    uint8_t list;
    uint8_t armed;          /* BIT(op): accept, recv, wake; send and connect while they wait */
    bool registered;
    bool in_ready;          /* input reported and not yet read to EAGAIN */
    bool out_ready;
    bool hup;               /* hang-up or error reported: read to the end */
};

struct elist {
    uint32_t head, tail, len;
};

struct equeued {
    loop_completion c;
    int fd;                 /* the operation's descriptor, for loop_cancel */
};

struct epoll_be {
    int epfd;
    struct efd *fds;
    unsigned nfds;
    struct elist work, starved;
    uint16_t *free_bufs;    /* a stack of the pool buffers neither lent nor queued */
    unsigned nfree;
    struct equeued *q;      /* a ring, qcap a power of two */
    unsigned qcap, qhead, qlen;
    struct epoll_event evs[EP_EVENTS];
};

/* ------------------------------------------------------------------------ */
/* Completion queue                                                          */

static int q_room(struct epoll_be *e, unsigned n) {
    if (e->qlen + n <= e->qcap) return 0;
    unsigned cap = e->qcap;
    while (cap < e->qlen + n) cap *= 2;
    struct equeued *q = malloc((size_t)cap * sizeof *q);
    if (!q) return -ENOMEM;
    for (unsigned i = 0; i < e->qlen; i++) q[i] = e->q[(e->qhead + i) & (e->qcap - 1)];
    free(e->q);
    e->q = q;
    e->qcap = cap;
    e->qhead = 0;
    return 0;
}

/* Room was made by q_room, or by the round's sizing. */
static void q_push(struct epoll_be *e, int fd, uint64_t tag, uint8_t op, int32_t res, uint16_t bid, bool more) {
    e->q[(e->qhead + e->qlen++) & (e->qcap - 1)] = (struct equeued){
        .c = { .tag = tag, .res = res, .buf_id = bid, .op = op, .more = more },
        .fd = fd,
    };
}

static unsigned q_pop(struct epoll_be *e, loop_completion *out, unsigned max) {
    unsigned n = 0;
    for (; n < max && e->qlen; n++, e->qlen--) {
        out[n] = e->q[e->qhead].c;
        e->qhead = (e->qhead + 1) & (e->qcap - 1);
    }
    return n;
}

/* Drops the queued accepts, receives and wakes of fd (loop_cancel): the
 * buffers go back to the pool and the accepted sockets are closed, as the
 * io_uring backend does with what arrives after a cancellation. */
static void q_purge(struct epoll_be *e, int fd) {
    unsigned kept = 0, mask = e->qcap - 1;
    for (unsigned i = 0; i < e->qlen; i++) {
        struct equeued q = e->q[(e->qhead + i) & mask];
        if (q.fd == fd && q.c.op != LOOP_OP_SEND && q.c.op != LOOP_OP_CONNECT) {
            if (q.c.op == LOOP_OP_RECV && q.c.res > 0) e->free_bufs[e->nfree++] = q.c.buf_id;
            if (q.c.op == LOOP_OP_ACCEPT && q.c.res >= 0) close(q.c.res);
            continue;
        }
        e->q[(e->qhead + kept++) & mask] = q;
    }
    e->qlen = kept;
}

/* ------------------------------------------------------------------------ */
/* Descriptors and lists                                                     */

static struct efd *ep_fd(struct epoll_be *e, int fd) {
    if (loop_grow((void **)&e->fds, &e->nfds, sizeof *e->fds, (size_t)fd) < 0) return NULL;
    return &e->fds[fd];
}

static void list_push(struct epoll_be *e, int fd, uint8_t which) {
    struct elist *L = which == LIST_WORK ? &e->work : &e->starved;
    struct efd *s = &e->fds[fd];
    s->list = which;
    s->next = 0;
    s->prev = L->tail;
    if (L->tail) e->fds[L->tail - 1].next = (uint32_t)fd + 1;
    else L->head = (uint32_t)fd + 1;
    L->tail = (uint32_t)fd + 1;
    L->len++;
}

static void list_unlink(struct epoll_be *e, int fd) {
    struct efd *s = &e->fds[fd];
    if (s->list == LIST_NONE) return;
    struct elist *L = s->list == LIST_WORK ? &e->work : &e->starved;
    if (s->prev) e->fds[s->prev - 1].next = s->next;
    else L->head = s->next;
    if (s->next) e->fds[s->next - 1].prev = s->prev;
    else L->tail = s->prev;
    s->next = s->prev = 0;
    s->list = LIST_NONE;
    L->len--;
}

static bool has_out_work(const struct efd *s) {
    return s->out_ready && (s->armed & (BIT(LOOP_OP_SEND) | BIT(LOOP_OP_CONNECT)));
}

static bool has_in_work(const struct efd *s) {
    return s->in_ready && (s->armed & (BIT(LOOP_OP_ACCEPT) | BIT(LOOP_OP_RECV) | BIT(LOOP_OP_WAKE)));
}

/* Puts fd on the work list if it has something to do there. A starved
 * receiver moves over too when its pending send can go. */
static void ep_schedule(struct epoll_be *e, int fd) {
    struct efd *s = &e->fds[fd];
    if (s->list == LIST_WORK) return;
    if (s->list == LIST_STARVED) {
        if (!has_out_work(s)) return;
        list_unlink(e, fd);
    } else if (!has_out_work(s) && !has_in_work(s)) {
        return;
    }
    list_push(e, fd, LIST_WORK);
}

static int ep_register(struct epoll_be *e, int fd, uint32_t events) {
    struct efd *s = &e->fds[fd];
    if (s->registered) return 0;
    struct epoll_event ev = { .events = events | EPOLLET, .data.fd = fd };
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 &&
        (errno != EEXIST || epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) < 0))
        return -errno;
    s->registered = true;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The work: system calls on a ready descriptor                              */

static void ep_output(struct epoll_be *e, int fd) {
    struct efd *s = &e->fds[fd];
    if (!has_out_work(s)) return;
    if (s->armed & BIT(LOOP_OP_CONNECT)) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        s->armed &= (uint8_t)~BIT(LOOP_OP_CONNECT);
        q_push(e, fd, s->tag[LOOP_OP_CONNECT], LOOP_OP_CONNECT, -err, 0, false);
    }
    if (s->armed & BIT(LOOP_OP_SEND)) {
        ssize_t n;
        do n = send(fd, s->send_buf, s->send_len, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s->out_ready = false;
            return;
        }
        s->armed &= (uint8_t)~BIT(LOOP_OP_SEND);
        q_push(e, fd, s->tag[LOOP_OP_SEND], LOOP_OP_SEND, n < 0 ? -errno : (int32_t)n, 0, false);
    }
}

static int ep_accept(struct epoll_be *e, int fd) {
    struct efd *s = &e->fds[fd];
    for (unsigned i = 0; i < EP_BURST;) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
            q_push(e, fd, s->tag[LOOP_OP_ACCEPT], LOOP_OP_ACCEPT, c, 0, true);
            i++;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            s->in_ready = false;
            return TURN_DONE;
        }
        /* As io_uring ends a multishot accept on an error (EMFILE...): the
         * caller decides when to arm it again. */
        s->armed &= (uint8_t)~BIT(LOOP_OP_ACCEPT);
        q_push(e, fd, s->tag[LOOP_OP_ACCEPT], LOOP_OP_ACCEPT, -errno, 0, false);
        return TURN_DONE;
    }
    return TURN_MORE;
}

static int ep_read(loop *l, int fd) {
    struct epoll_be *e = l->be;
    struct efd *s = &e->fds[fd];
    for (unsigned i = 0; i < EP_BURST;) {
        if (e->nfree == 0) return TURN_STARVED;
        uint16_t bid = e->free_bufs[e->nfree - 1];
        ssize_t n = recv(fd, loop_buf_addr(l, bid), l->buf_size, MSG_DONTWAIT);
        if (n > 0) {
            e->nfree--;
            q_push(e, fd, s->tag[LOOP_OP_RECV], LOOP_OP_RECV, (int32_t)n, bid, true);
            i++;
            /* A short read emptied the socket, so what arrives next is a new
             * edge; saves the recv that would say EAGAIN. Not after a
             * hang-up, whose edge has been seen: read on to the 0. */
            if ((size_t)n < l->buf_size && !s->hup) {
                s->in_ready = false;
                return TURN_DONE;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            s->in_ready = false;
            return TURN_DONE;
        }
        s->armed &= (uint8_t)~BIT(LOOP_OP_RECV);
        q_push(e, fd, s->tag[LOOP_OP_RECV], LOOP_OP_RECV, n == 0 ? 0 : -errno, 0, false);
        return TURN_DONE;
    }
    return TURN_MORE;
}

static void ep_wake(struct epoll_be *e, int fd) {
    struct efd *s = &e->fds[fd];
    uint64_t v;
    s->in_ready = false;
    /* Nothing to read if an earlier edge's read already took this signal. */
    if (read(fd, &v, sizeof v) == (ssize_t)sizeof v)
        q_push(e, fd, s->tag[LOOP_OP_WAKE], LOOP_OP_WAKE, v > INT32_MAX ? INT32_MAX : (int32_t)v, 0, true);
}

static int ep_input(loop *l, int fd) {
    struct epoll_be *e = l->be;
    struct efd *s = &e->fds[fd];
    if (!has_in_work(s)) return TURN_DONE;
    if (s->armed & BIT(LOOP_OP_ACCEPT)) return ep_accept(e, fd);
    if (s->armed & BIT(LOOP_OP_WAKE)) {
        ep_wake(e, fd);
        return TURN_DONE;
    }
    return ep_read(l, fd);
}

/* One turn for each descriptor on the work list (as it was on entry, up to
 * EP_WORK_BUDGET): one that has more to do goes to the back, for the next
 * round, after an epoll_wait has had a look at the others. */
static void ep_serve(loop *l) {
    struct epoll_be *e = l->be;
    unsigned budget = e->work.len < EP_WORK_BUDGET ? e->work.len : EP_WORK_BUDGET;
    for (; budget && e->work.head; budget--) {
        int fd = (int)e->work.head - 1;
        list_unlink(e, fd);
        ep_output(e, fd);
        switch (ep_input(l, fd)) {
        case TURN_MORE: list_push(e, fd, LIST_WORK); break;
        case TURN_STARVED: list_push(e, fd, LIST_STARVED); break;
        default: break;
        }
    }
}

static int ep_run_once(loop *l, loop_completion *out, unsigned max, int timeout_ms) {
    struct epoll_be *e = l->be;
    if (e->qlen == 0) {
        /* Starved receivers come back, one per free buffer: each will use
         * one. Before the wait, which must not block while they can read. */
        for (unsigned k = e->nfree; k && e->starved.head; k--) {
            int fd = (int)e->starved.head - 1;
            list_unlink(e, fd);
            list_push(e, fd, LIST_WORK);
        }
        /* With work left over, only look for new edges, so that the
         * descriptors behind them get their turn too. */
        int n = epoll_wait(e->epfd, e->evs, EP_EVENTS, e->work.head ? 0 : timeout_ms);
        if (n < 0 && errno != EINTR) return -errno;
        for (int i = 0; i < n; i++) {
            int fd = e->evs[i].data.fd;
            uint32_t ev = e->evs[i].events;
            if ((unsigned)fd >= e->nfds) continue;
            struct efd *s = &e->fds[fd];
            if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->hup = true;
            if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s->in_ready = true;
            if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s->out_ready = true;
            ep_schedule(e, fd);
        }
        ep_serve(l);
    }
    return (int)q_pop(e, out, max);
}

/* ------------------------------------------------------------------------ */
/* The calls                                                                 */

static int ep_arm(loop *l, int fd, uint8_t op, uint64_t tag, uint32_t events) {
    struct epoll_be *e = l->be;
    struct efd *s = ep_fd(e, fd);
    if (!s) return -ENOMEM;
    if (s->armed & BIT(op)) return -EBUSY;
    int r = ep_register(e, fd, events);
    if (r < 0) return r;
    s->armed |= (uint8_t)BIT(op);
    s->tag[op] = tag;
    /* Input reported before this arming has no new edge coming. */
    ep_schedule(e, fd);
    return 0;
}

static int ep_accept_arm(loop *l, int fd, uint64_t tag) {
    return ep_arm(l, fd, LOOP_OP_ACCEPT, tag, EP_SOCKET_EVENTS);
}

static int ep_recv(loop *l, int fd, uint64_t tag) {
    return ep_arm(l, fd, LOOP_OP_RECV, tag, EP_SOCKET_EVENTS);
}

static int ep_watch_eventfd(loop *l, int efd, uint64_t tag) {
    return ep_arm(l, efd, LOOP_OP_WAKE, tag, EPOLLIN);
}

/* Sends at once; only if the socket is full does it wait for EPOLLOUT. */
static int ep_send(loop *l, int fd, const void *buf, size_t len, uint64_t tag) {
    struct epoll_be *e = l->be;
    struct efd *s = ep_fd(e, fd);
    if (!s) return -ENOMEM;
    if (s->armed & BIT(LOOP_OP_SEND)) return -EBUSY;
    if (q_room(e, 1) < 0) return -ENOMEM;
    ssize_t n;
    do n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        q_push(e, fd, tag, LOOP_OP_SEND, n < 0 ? -errno : (int32_t)n, 0, false);
        return 0;
    }
    int r = ep_register(e, fd, EP_SOCKET_EVENTS);
    if (r < 0) return r;
    s->armed |= (uint8_t)BIT(LOOP_OP_SEND);
    s->tag[LOOP_OP_SEND] = tag;
    s->send_buf = buf;
    s->send_len = len;
    s->out_ready = false; /* the EAGAIN just said so; EPOLLOUT will follow */
    return 0;
}

static int ep_connect(loop *l, int fd, const void *addr, unsigned addr_len, uint64_t tag) {
    struct epoll_be *e = l->be;
    struct efd *s = ep_fd(e, fd);
    if (!s) return -ENOMEM;
    if (s->armed & BIT(LOOP_OP_CONNECT)) return -EBUSY;
    if (q_room(e, 1) < 0) return -ENOMEM;
    /* EINTR: the connection goes on in the background, as with EINPROGRESS. */
    int r = connect(fd, addr, addr_len);
    if (r == 0 || (errno != EINPROGRESS && errno != EINTR)) {
        q_push(e, fd, tag, LOOP_OP_CONNECT, r == 0 ? 0 : -errno, 0, false);
        return 0;
    }
    r = ep_register(e, fd, EP_SOCKET_EVENTS);
    if (r < 0) return r;
    s->armed |= (uint8_t)BIT(LOOP_OP_CONNECT);
    s->tag[LOOP_OP_CONNECT] = tag;
    s->out_ready = false;
    return 0;
}

static int ep_cancel(loop *l, int fd) {
    struct epoll_be *e = l->be;
    if ((unsigned)fd >= e->nfds) return 0;
    struct efd *s = &e->fds[fd];
    if (q_room(e, 2) < 0) return -ENOMEM;
    if (s->registered) epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
    list_unlink(e, fd);
    q_purge(e, fd);
    /* What io_uring's cancellation of a waiting send or connect reports. */
    if (s->armed & BIT(LOOP_OP_SEND)) q_push(e, fd, s->tag[LOOP_OP_SEND], LOOP_OP_SEND, -ECANCELED, 0, false);
    if (s->armed & BIT(LOOP_OP_CONNECT))
        q_push(e, fd, s->tag[LOOP_OP_CONNECT], LOOP_OP_CONNECT, -ECANCELED, 0, false);
    memset(s, 0, sizeof *s);
    return 0;
}

static void ep_buffer_release(loop *l, uint16_t bid) {
    struct epoll_be *e = l->be;
    e->free_bufs[e->nfree++] = bid;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

static int ep_create(loop *l) {
    struct epoll_be *e = calloc(1, sizeof *e);
    if (!e) return -ENOMEM;
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->free_bufs = malloc(l->nbufs * sizeof *e->free_bufs);
    /* What a round can queue (see the top of the file). */
    e->qcap = 1;
    while (e->qcap < EP_WORK_BUDGET * EP_FD_MAX) e->qcap *= 2;
    e->q = malloc((size_t)e->qcap * sizeof *e->q);
    if (e->epfd < 0 || !e->free_bufs || !e->q) {
        int r = e->epfd < 0 ? -errno : -ENOMEM;
        if (e->epfd >= 0) close(e->epfd);
        free(e->free_bufs);
        free(e->q);
        free(e);
        return r;
    }
    /* Lowest ids on top: the first receives use the first buffers. */
    for (unsigned i = 0; i < l->nbufs; i++) e->free_bufs[i] = (uint16_t)(l->nbufs - 1 - i);
    e->nfree = l->nbufs;
    l->be = e;
    return 0;
}

static void ep_destroy(loop *l) {
    struct epoll_be *e = l->be;
    /* Sockets accepted but never reported would otherwise leak. */
    for (unsigned i = 0; i < e->qlen; i++) {
        const loop_completion *c = &e->q[(e->qhead + i) & (e->qcap - 1)].c;
        if (c->op == LOOP_OP_ACCEPT && c->res >= 0) close(c->res);
    }
    close(e->epfd);
    free(e->fds);
    free(e->free_bufs);
    free(e->q);
    free(e);
}

const struct loop_ops loop_epoll_ops = {
    .backend = LOOP_EPOLL,
    .create = ep_create,
    .destroy = ep_destroy,
    .accept = ep_accept_arm,
    .recv = ep_recv,
    .send = ep_send,
    .connect = ep_connect,
    .cancel = ep_cancel,
    .watch_eventfd = ep_watch_eventfd,
    .buffer_release = ep_buffer_release,
    .run_once = ep_run_once,
};
