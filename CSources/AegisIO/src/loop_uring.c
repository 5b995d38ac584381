/*
 * loop_uring.c — the io_uring backend of loop.h, on liburing.
 *
 * Operations map one to one onto requests: multishot accept, multishot
 * recv selecting from a provided-buffer ring (group 0, one entry per pool
 * buffer), send, connect, and a multishot poll on a watched eventfd. A
 * request's user_data is the index of its record (struct urec), which holds
 * the caller's tag, so no memory is allocated per operation once the record
 * table has grown to the number of operations in flight. Submissions are
 * only queued by the calls; loop_run_once submits them and waits in one
 * io_uring_enter (io_uring_submit_and_wait_timeout).
 *
 * The kernel may end a multishot request on its own: its buffer ring ran
 * dry (-ENOBUFS), the completion ring overflowed (the last completion comes
 * without IORING_CQE_F_MORE), or, before Linux 6.0, it has no multishot
 * recv at all (-EINVAL, after which receives are re-armed after each
 * completion). The caller sees none of that: the request is re-armed here,
 * and after -ENOBUFS only once a buffer has come back (a recv armed on an
 * empty ring would fail again at once). Data stays in the socket meanwhile,
 * so nothing is lost or reordered.
 *
 * Liburing 2.3 has io_uring_register_buf_ring but not io_uring_setup_buf_ring
 * (2.4), so the buffer ring is mmap'd and registered here, as its
 * io_uring-udp.c example does; and it does not export io_uring_enable_rings.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop_internal.h"

#define UR_SQ_ENTRIES 2048
#define UR_CQ_MIN 8192          /* with room for every buffer's completion twice */
#define UR_BGID 0
/* The user_data of requests whose completions mean nothing to the caller
 * (the cancellations). Record indices are 32-bit. */
#define UR_UD_IGNORE UINT64_MAX

enum { REC_FREE, REC_KERNEL, REC_STARVED };

/* One operation: in the kernel, or (recv only) waiting for a buffer. */
struct urec {
    uint64_t tag;
    int32_t fd;
    uint32_t next;      /* free list or starved list: index + 1, 0 for none */
    uint32_t prev;      /* starved list */
    uint8_t op;         /* loop_op */
    uint8_t state;
    bool cancelled;     /* loop_cancel: what still comes is dropped */
    bool delivered;     /* a completion went to the caller */
};

/* Per descriptor: the record armed for each kind of operation, index + 1. */
struct ufd {
    uint32_t rec[LOOP_OP_CONNECT + 1];
};

struct uring {
    struct io_uring ring;
    bool enabled;           /* false until the first submission (IORING_SETUP_R_DISABLED) */
    bool oneshot_recv;      /* the kernel refused a multishot recv */
    struct io_uring_buf_ring *br;
    size_t br_len;
    int br_mask;
    unsigned br_avail;      /* buffers in the ring, by the completions seen so far */
    struct urec *recs;
    unsigned nrecs;
    uint32_t free_head;
    uint32_t starved_head, starved_tail;
    struct ufd *fds;
    unsigned nfds;
};

/* ------------------------------------------------------------------------ */
/* Records                                                                   */

static int rec_new(struct uring *u, int fd, uint8_t op, uint64_t tag, uint32_t *idx) {
    if (!u->free_head) {
        unsigned old = u->nrecs;
        int r = loop_grow((void **)&u->recs, &u->nrecs, sizeof *u->recs, old);
        if (r < 0) return r;
        for (unsigned i = u->nrecs; i-- > old;) {
            u->recs[i].next = u->free_head;
            u->free_head = i + 1;
        }
    }
    uint32_t i = u->free_head - 1;
    u->free_head = u->recs[i].next;
    u->recs[i] = (struct urec){ .tag = tag, .fd = fd, .op = op, .state = REC_KERNEL };
    *idx = i;
    return 0;
}

static void rec_free(struct uring *u, uint32_t idx) {
    u->recs[idx].state = REC_FREE;
    u->recs[idx].next = u->free_head;
    u->free_head = idx + 1;
}

/* The operation is over: its descriptor no longer points at it (unless
 * loop_cancel already let go of it), and the record is reusable. */
static void rec_finish(struct uring *u, uint32_t idx) {
    struct urec *r = &u->recs[idx];
    if ((unsigned)r->fd < u->nfds && u->fds[r->fd].rec[r->op] == idx + 1) u->fds[r->fd].rec[r->op] = 0;
    rec_free(u, idx);
}

static void starved_push(struct uring *u, uint32_t idx, bool front) {
    struct urec *r = &u->recs[idx];
    r->state = REC_STARVED;
    if (front) {
        r->prev = 0;
        r->next = u->starved_head;
        if (u->starved_head) u->recs[u->starved_head - 1].prev = idx + 1;
        else u->starved_tail = idx + 1;
        u->starved_head = idx + 1;
    } else {
        r->next = 0;
        r->prev = u->starved_tail;
        if (u->starved_tail) u->recs[u->starved_tail - 1].next = idx + 1;
        else u->starved_head = idx + 1;
        u->starved_tail = idx + 1;
    }
}

static void starved_unlink(struct uring *u, uint32_t idx) {
    struct urec *r = &u->recs[idx];
    if (r->prev) u->recs[r->prev - 1].next = r->next;
    else u->starved_head = r->next;
    if (r->next) u->recs[r->next - 1].prev = r->prev;
    else u->starved_tail = r->prev;
    r->prev = r->next = 0;
}

/* ------------------------------------------------------------------------ */
/* Submission                                                                */

/* A ring made with IORING_SETUP_R_DISABLED belongs to no thread yet: with
 * SINGLE_ISSUER it is bound to the thread that enables it, which is the one
 * that first needs the kernel, so that a loop may be created on one thread
 * and run on another. */
static int ur_enable(struct uring *u) {
    if (u->enabled) return 0;
    /* Liburing 2.3 declares io_uring_enable_rings but does not export it
     * (missing from its liburing.map): the raw register call it wraps. */
    int r = io_uring_register(u->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    if (r < 0) return r;
    u->enabled = true;
    return 0;
}

static int ur_flush(struct uring *u) {
    int r = ur_enable(u);
    if (r < 0) return r;
    r = io_uring_submit(&u->ring);
    return r < 0 ? r : 0;
}

/* A free submission entry, submitting what is queued if there is none. */
static struct io_uring_sqe *ur_sqe(struct uring *u) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe && ur_flush(u) == 0) sqe = io_uring_get_sqe(&u->ring);
    return sqe;
}

/* Queues the request of a multishot record (accept, recv, eventfd poll):
 * its first arming, or its re-arming after the kernel ended it. */
static int ur_arm(loop *l, uint32_t idx) {
    struct uring *u = l->be;
    struct io_uring_sqe *sqe = ur_sqe(u);
    if (!sqe) return -EBUSY;
    struct urec *r = &u->recs[idx];
    switch (r->op) {
    case LOOP_OP_ACCEPT:
        io_uring_prep_multishot_accept(sqe, r->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    case LOOP_OP_RECV:
        if (u->oneshot_recv) io_uring_prep_recv(sqe, r->fd, NULL, l->buf_size, 0);
        else io_uring_prep_recv_multishot(sqe, r->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = UR_BGID;
        break;
    case LOOP_OP_WAKE:
        io_uring_prep_poll_multishot(sqe, r->fd, POLLIN);
        break;
    }
    io_uring_sqe_set_data64(sqe, idx);
    r->state = REC_KERNEL;
    return 0;
}

/* Starts an operation on fd: a record, a submission entry, and the fd's
 * slot pointing at the record. With sqe, the caller fills the entry (and
 * its user_data); without, it is a multishot request armed here. */
static int ur_begin(loop *l, int fd, uint8_t op, uint64_t tag, uint32_t *idx, struct io_uring_sqe **sqe) {
    struct uring *u = l->be;
    int r = loop_grow((void **)&u->fds, &u->nfds, sizeof *u->fds, (size_t)fd);
    if (r < 0) return r;
    if (u->fds[fd].rec[op]) return -EBUSY;
    r = rec_new(u, fd, op, tag, idx);
    if (r < 0) return r;
    if (sqe) {
        *sqe = ur_sqe(u);
        if (!*sqe) {
            rec_free(u, *idx);
            return -EBUSY;
        }
    } else if ((r = ur_arm(l, *idx)) < 0) {
        rec_free(u, *idx);
        return r;
    }
    u->fds[fd].rec[op] = *idx + 1;
    return 0;
}

static int ur_accept(loop *l, int fd, uint64_t tag) {
    uint32_t idx;
    return ur_begin(l, fd, LOOP_OP_ACCEPT, tag, &idx, NULL);
}

static int ur_recv(loop *l, int fd, uint64_t tag) {
    uint32_t idx;
    return ur_begin(l, fd, LOOP_OP_RECV, tag, &idx, NULL);
}

static int ur_watch_eventfd(loop *l, int efd, uint64_t tag) {
    uint32_t idx;
    return ur_begin(l, efd, LOOP_OP_WAKE, tag, &idx, NULL);
}

static int ur_send(loop *l, int fd, const void *buf, size_t len, uint64_t tag) {
    uint32_t idx;
    struct io_uring_sqe *sqe;
    int r = ur_begin(l, fd, LOOP_OP_SEND, tag, &idx, &sqe);
    if (r < 0) return r;
    io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, idx);
    return 0;
}

static int ur_connect(loop *l, int fd, const void *addr, unsigned addr_len, uint64_t tag) {
    struct uring *u = l->be;
    uint32_t idx;
    struct io_uring_sqe *sqe;
    int r = ur_begin(l, fd, LOOP_OP_CONNECT, tag, &idx, &sqe);
    if (r < 0) return r;
    io_uring_prep_connect(sqe, fd, addr, addr_len);
    io_uring_sqe_set_data64(sqe, idx);
    /* The kernel reads the address when it takes the request, and the
     * caller's copy may not outlive this call: submit now. */
    r = ur_flush(u);
    if (r < 0) {
        /* Not taken: the entry is still ours (no SQPOLL), make it harmless. */
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, UR_UD_IGNORE);
        rec_finish(u, idx);
    }
    return r;
}

/* Receives, accepts and the eventfd watch on fd stop: whatever they still
 * complete is dropped (buffers back to the ring, accepted sockets closed). A
 * send or connect in flight completes as usual, with -ECANCELED if the
 * cancellation caught it. */
static int ur_cancel(loop *l, int fd) {
    struct uring *u = l->be;
    if ((unsigned)fd >= u->nfds) return 0;
    struct ufd *s = &u->fds[fd];
    bool in_kernel = false;
    for (unsigned op = 1; op <= LOOP_OP_CONNECT; op++) {
        if (!s->rec[op]) continue;
        uint32_t idx = s->rec[op] - 1;
        s->rec[op] = 0;
        struct urec *r = &u->recs[idx];
        if (op == LOOP_OP_RECV || op == LOOP_OP_ACCEPT || op == LOOP_OP_WAKE) r->cancelled = true;
        if (r->state == REC_STARVED) {
            starved_unlink(u, idx);
            rec_free(u, idx);
        } else {
            in_kernel = true;
        }
    }
    if (!in_kernel) return 0;
    struct io_uring_sqe *sqe = ur_sqe(u);
    if (!sqe) return -EBUSY;
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, UR_UD_IGNORE);
    /* Now, not at the next loop_run_once: the caller closes fd next, and a
     * cancellation by fd finds nothing once the descriptor is gone, while
     * the requests would keep the socket open. */
    return ur_flush(u);
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */

/* Buffer bid goes back to the kernel's ring, and lets one receive that
 * found the ring empty try again (one per buffer: more would only find it
 * empty again). */
static void ur_buffer_release(loop *l, uint16_t bid) {
    struct uring *u = l->be;
    io_uring_buf_ring_add(u->br, loop_buf_addr(l, bid), l->buf_size, bid, u->br_mask, 0);
    io_uring_buf_ring_advance(u->br, 1);
    u->br_avail++;
    if (u->starved_head) {
        uint32_t idx = u->starved_head - 1;
        starved_unlink(u, idx);
        if (ur_arm(l, idx) < 0) starved_push(u, idx, true);
    }
}

/* A receive ended with -ENOBUFS. Buffers released since the kernel said so
 * (its completion waited in the ring) make it worth re-arming at once;
 * otherwise it waits for a release. */
static void ur_starve(loop *l, uint32_t idx) {
    struct uring *u = l->be;
    if (u->br_avail > 0 && ur_arm(l, idx) == 0) return;
    starved_push(u, idx, false);
}

/* ------------------------------------------------------------------------ */
/* Completions                                                               */

static int ur_emit(struct uring *u, uint32_t idx, int32_t res, int bid, bool more, loop_completion *c) {
    const struct urec *r = &u->recs[idx];
    *c = (loop_completion){
        .tag = r->tag, .res = res, .buf_id = bid >= 0 ? (uint16_t)bid : 0, .op = r->op, .more = more,
    };
    u->recs[idx].delivered = true;
    if (!more) rec_finish(u, idx);
    return 1;
}

/* The kernel ended a multishot request that the caller still wants: arm it
 * again, or, if there is no room to, tell the caller it ended (more=false
 * on a successful completion: the caller may arm it again). */
static bool ur_keep(loop *l, uint32_t idx, bool kernel_more) {
    return kernel_more || ur_arm(l, idx) == 0;
}

static int ur_recv_done(loop *l, uint32_t idx, int res, int bid, bool more, loop_completion *c) {
    struct uring *u = l->be;
    if (res > 0 && bid >= 0) return ur_emit(u, idx, res, bid, ur_keep(l, idx, more), c);
    if (bid >= 0) ur_buffer_release(l, (uint16_t)bid); /* not expected: no data in it */
    if (res > 0) res = -EIO;                            /* nor data without a buffer */
    if (res == -ENOBUFS) {
        ur_starve(l, idx);
        return 0;
    }
    /* A kernel before 6.0 refuses IORING_RECV_MULTISHOT. */
    if (res == -EINVAL && !u->oneshot_recv && !u->recs[idx].delivered) {
        u->oneshot_recv = true;
        if (ur_arm(l, idx) == 0) return 0;
    }
    return ur_emit(u, idx, res, 0, false, c); /* EOF or error */
}

static int ur_wake_done(loop *l, uint32_t idx, int res, bool more, loop_completion *c) {
    struct uring *u = l->be;
    if (res < 0) return ur_emit(u, idx, res, 0, false, c);
    /* POLLIN: read the counter, which resets it. The read finds nothing if
     * an earlier report's read already took this signal. */
    uint64_t v;
    bool got = read(u->recs[idx].fd, &v, sizeof v) == (ssize_t)sizeof v;
    bool keep = ur_keep(l, idx, more);
    if (got) return ur_emit(u, idx, v > INT32_MAX ? INT32_MAX : (int32_t)v, 0, keep, c);
    if (!keep) return ur_emit(u, idx, -EBUSY, 0, false, c);
    return 0;
}

/* Turns one completion into what the caller sees: 1 if *c was filled. */
static int ur_complete(loop *l, const struct io_uring_cqe *cqe, loop_completion *c) {
    struct uring *u = l->be;
    if (cqe->user_data == UR_UD_IGNORE) return 0;
    uint32_t idx = (uint32_t)cqe->user_data;
    struct urec *r = &u->recs[idx];
    int res = cqe->res;
    bool more = cqe->flags & IORING_CQE_F_MORE;
    int bid = -1;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        u->br_avail--;
    }
    if (r->cancelled) {
        if (bid >= 0) ur_buffer_release(l, (uint16_t)bid);
        if (r->op == LOOP_OP_ACCEPT && res >= 0) close(res);
        if (!more) rec_free(u, idx);
        return 0;
    }
    switch (r->op) {
    case LOOP_OP_RECV: return ur_recv_done(l, idx, res, bid, more, c);
    case LOOP_OP_WAKE: return ur_wake_done(l, idx, res, more, c);
    case LOOP_OP_ACCEPT:
        if (res >= 0) return ur_emit(u, idx, res, 0, ur_keep(l, idx, more), c);
        return ur_emit(u, idx, res, 0, false, c);
    default: /* send, connect */
        return ur_emit(u, idx, res, 0, false, c);
    }
}

static unsigned ur_harvest(loop *l, loop_completion *out, unsigned max) {
    struct uring *u = l->be;
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0, n = 0;
    io_uring_for_each_cqe(&u->ring, head, cqe) {
        if (n == max) break;
        seen++;
        n += (unsigned)ur_complete(l, cqe, &out[n]);
    }
    io_uring_cq_advance(&u->ring, seen);
    return n;
}

static int ur_run_once(loop *l, loop_completion *out, unsigned max, int timeout_ms) {
    struct uring *u = l->be;
    struct io_uring *ring = &u->ring;
    int r = ur_enable(u);
    if (r < 0) return r;
    if (io_uring_cq_ready(ring) == 0) {
        /* Submit and wait in one io_uring_enter. */
        struct __kernel_timespec ts = {
            .tv_sec = timeout_ms / 1000, .tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
        };
        struct io_uring_cqe *cqe;
        r = io_uring_submit_and_wait_timeout(ring, &cqe, 1, timeout_ms < 0 ? NULL : &ts, NULL);
    } else if (io_uring_sq_ready(ring)) {
        /* Completions are waiting: submit, but do not wait. */
        r = io_uring_submit(ring);
    }
    /* -ETIME: the timeout; -EINTR: a signal; -EBUSY/-EAGAIN: the kernel is
     * short of completion space or memory for now. None is the caller's. */
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) return r;
    unsigned n = ur_harvest(l, out, max);
    /* Completions the ring had no room for wait in the kernel's overflow
     * list; they come out (in order) once the ring has room. */
    if (n < max && io_uring_cq_has_overflow(ring) && io_uring_get_events(ring) >= 0)
        n += ur_harvest(l, out + n, max - n);
    return (int)n;
}

/* ------------------------------------------------------------------------ */
/* Creation                                                                  */

static int ur_ring_init(struct uring *u, unsigned nbufs) {
    /* Newest first; the kernel refuses a flag it does not know with -EINVAL.
     * DEFER_TASKRUN (6.1) runs completion work only in our io_uring_enter,
     * SINGLE_ISSUER (6.0) lets the kernel skip locking, COOP_TASKRUN (5.19)
     * spares the interrupts. */
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_R_DISABLED,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    unsigned cq = nbufs * 2 > UR_CQ_MIN ? nbufs * 2 : UR_CQ_MIN;
    int r = -EINVAL;
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        struct io_uring_params p = {
            .flags = tries[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL,
            .cq_entries = cq,
        };
        r = io_uring_queue_init_params(UR_SQ_ENTRIES, &u->ring, &p);
        if (r == 0) {
            u->enabled = !(tries[i] & IORING_SETUP_R_DISABLED);
            return 0;
        }
        if (r != -EINVAL) return r; /* -EPERM, -ENOSYS: io_uring is off */
    }
    return r;
}

static int ur_buf_ring_init(struct uring *u, loop *l) {
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)l->nbufs * sizeof(struct io_uring_buf);
    len = (len + (size_t)page - 1) & ~((size_t)page - 1);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -errno;
    u->br = p;
    u->br_len = len;
    io_uring_buf_ring_init(u->br);
    struct io_uring_buf_reg reg = { .ring_addr = (uintptr_t)p, .ring_entries = l->nbufs, .bgid = UR_BGID };
    int r = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (r < 0) {
        munmap(p, len);
        /* Before 5.19: no buffer rings, and no multishot accept either. */
        return r == -EINVAL ? -EOPNOTSUPP : r;
    }
    u->br_mask = io_uring_buf_ring_mask(l->nbufs);
    for (unsigned i = 0; i < l->nbufs; i++)
        io_uring_buf_ring_add(u->br, loop_buf_addr(l, (uint16_t)i), l->buf_size, (unsigned short)i, u->br_mask, (int)i);
    io_uring_buf_ring_advance(u->br, (int)l->nbufs);
    u->br_avail = l->nbufs;
    return 0;
}

static int ur_create(loop *l) {
    struct uring *u = calloc(1, sizeof *u);
    if (!u) return -ENOMEM;
    int r = ur_ring_init(u, l->nbufs);
    if (r == 0 && (r = ur_buf_ring_init(u, l)) < 0) io_uring_queue_exit(&u->ring);
    if (r < 0) {
        free(u);
        return r;
    }
    l->be = u;
    return 0;
}

static void ur_destroy(loop *l) {
    struct uring *u = l->be;
    /* Sockets accepted but never reported would otherwise leak. */
    struct io_uring_cqe *cqe;
    unsigned head;
    io_uring_for_each_cqe(&u->ring, head, cqe) {
        if (cqe->user_data != UR_UD_IGNORE && cqe->res >= 0 &&
            u->recs[(uint32_t)cqe->user_data].op == LOOP_OP_ACCEPT)
            close(cqe->res);
    }
    io_uring_queue_exit(&u->ring);
    munmap(u->br, u->br_len);
    free(u->recs);
    free(u->fds);
    free(u);
}

const struct loop_ops loop_uring_ops = {
    .backend = LOOP_URING,
    .create = ur_create,
    .destroy = ur_destroy,
    .accept = ur_accept,
    .recv = ur_recv,
    .send = ur_send,
    .connect = ur_connect,
    .cancel = ur_cancel,
    .watch_eventfd = ur_watch_eventfd,
    .buffer_release = ur_buffer_release,
    .run_once = ur_run_once,
};
