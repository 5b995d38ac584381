/*
 * loop.h — the event loop, with io_uring and epoll behind one small
 * completion interface (internal to AegisIO), as redis's ae.h hides its
 * pollers.
 *
 * The interface is io_uring's shape: operations are submitted, and their
 * completions come back with the caller's 64-bit tag. The epoll backend
 * emulates it: it performs the system call when the descriptor is ready and
 * reports the result as a completion, so the connection code above is the
 * same on both. Receives use the loop's buffer pool (a provided-buffer ring
 * on io_uring, a free list on epoll): a connection owns no receive buffer
 * while it is idle.
 *
 * A loop belongs to one thread. Nothing here allocates per operation.
 *
 * Backends. LOOP_AUTO takes io_uring when the kernel allows it, else epoll;
 * setting the environment variable AEGIS_DISABLE_IO_URING=1 (any value but
 * "" or "0") makes LOOP_AUTO take epoll, so that the fallback can be run and
 * tested without root. The io_uring backend needs Linux 5.19 (provided-
 * buffer rings, multishot accept, cancel by fd); multishot receive (6.0) is
 * used when the kernel has it, else a receive is re-armed after each
 * completion, which the caller does not see. SINGLE_ISSUER, DEFER_TASKRUN
 * and COOP_TASKRUN are used where the kernel has them.
 *
 * Threads. loop_create and loop_destroy may be called from any thread,
 * everything else from the one thread that runs the loop. (On io_uring the
 * ring is bound to the first thread that submits to the kernel: the first
 * loop_run_once, loop_connect or loop_cancel.) Destroying an io_uring loop
 * may make the next blocking system calls of the thread that ran it return
 * early with EINTR, as the kernel tears the ring down.
 *
 * Descriptors. Sockets given to the loop should be non-blocking (accepted
 * sockets are created SOCK_NONBLOCK | SOCK_CLOEXEC); a watched eventfd is
 * made non-blocking. Call loop_cancel(fd) before closing any descriptor the
 * loop has seen: epoll keeps a registration per descriptor, and io_uring
 * requests keep a closed socket open.
 *
 * Completions. `more` is true while the operation stays armed. A completion
 * with more=false ends it: EOF (RECV res 0), an error (res < 0; an ACCEPT
 * error too, such as -EMFILE: arm it again when it makes sense), or, in
 * the rare case the loop had no submission room to keep a multishot
 * operation armed, a successful completion with more=false (arm it again).
 * A RECV completion with res > 0 lends its buffer to the caller until
 * loop_buffer_release, also when the caller ignores the completion (a stale
 * tag): release it anyway. When every buffer is lent, receives pause, with
 * the data left in the socket, and resume, in order, once buffers come back;
 * the caller sees no completion for that. loop_run_once may return 0 before
 * the timeout (a signal, or a wake-up that produced nothing for the caller).
 *
 * The two backends differ only where a caller that keeps to the rules above
 * cannot tell: epoll performs a send or connect inside loop_send /
 * loop_connect (its completion still comes from loop_run_once), io_uring at
 * the next loop_run_once (a connect at once); the order of completions of
 * different descriptors may differ; -EBUSY for a second send is only
 * certain while the first waits for room on epoll, until its completion is
 * returned on io_uring.
 */
#ifndef AEGIS_LOOP_H
#define AEGIS_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum loop_backend {
    LOOP_AUTO = 0,   /* io_uring if the kernel allows it, else epoll */
    LOOP_URING = 1,
    LOOP_EPOLL = 2,
} loop_backend;

typedef enum loop_op {
    LOOP_OP_ACCEPT = 1,   /* res: the new fd, or -errno; repeats (multishot) */
    LOOP_OP_RECV = 2,     /* res: bytes in buffer buf_id, 0 at EOF, or -errno; repeats until EOF/error/cancel */
    LOOP_OP_SEND = 3,     /* res: bytes sent (may be short), or -errno (-ECANCELED: loop_cancel) */
    LOOP_OP_WAKE = 4,     /* an eventfd being watched became readable (counter already read);
                             res: the counter's value, at most INT32_MAX; repeats */
    LOOP_OP_CONNECT = 5,  /* res: 0 or -errno (-ECANCELED: loop_cancel) */
} loop_op;

typedef struct loop_completion {
    uint64_t tag;       /* the caller's, from the submission */
    int32_t res;
    uint16_t buf_id;    /* RECV with res > 0: the pool buffer holding the data */
    uint8_t op;         /* loop_op */
    bool more;          /* the operation stays armed (multishot) */
} loop_completion;

typedef struct loop loop;

/*
 * Creates a loop. `want` LOOP_AUTO tries io_uring and falls back to epoll
 * (kernel.io_uring_disabled, a seccomp profile, an old kernel); *got says
 * which. The pool has nbufs receive buffers of buf_size bytes each (nbufs a
 * power of two, ≤ 32768; 0 < buf_size ≤ 1 GiB), allocated once here.
 * Returns 0 or -errno: -EINVAL for bad arguments; for a forced LOOP_URING
 * that the kernel refuses, what io_uring_setup said (-EPERM: disabled by
 * kernel.io_uring_disabled or a seccomp profile; -ENOSYS: not built in or
 * filtered) or -EOPNOTSUPP (a kernel before 5.19).
 */
int loop_create(loop_backend want, unsigned nbufs, unsigned buf_size, loop **out, loop_backend *got);
void loop_destroy(loop *l);
const char *loop_backend_name(loop_backend b);

/*
 * The calls below return 0, or -errno when the operation could not be
 * started (-EBUSY: one of the same kind is already armed on fd; -ENOMEM).
 * What the operation itself gives, an error included, comes as a completion.
 */

/* Arms accepts on a listening socket (non-blocking). */
int loop_accept(loop *l, int listen_fd, uint64_t tag);
/* Arms receives on a connected socket: completions until EOF, error or
 * loop_cancel(). Each carries one pool buffer, returned with loop_buffer_release. */
int loop_recv(loop *l, int fd, uint64_t tag);
/* Sends buf[0..len); the buffer must stay valid until the completion. At most
 * one send per fd in flight (the caller queues the rest). Over INT32_MAX
 * bytes, the send is short. */
int loop_send(loop *l, int fd, const void *buf, size_t len, uint64_t tag);
/* Starts a non-blocking connect (client side). addr need not outlive the call. */
int loop_connect(loop *l, int fd, const void *addr, unsigned addr_len, uint64_t tag);
/* Stops the receives, accepts and eventfd watch armed on fd (before close):
 * no completion of theirs is returned by later loop_run_once calls (buffers
 * they held go back to the pool, accepted sockets are closed), but those
 * already returned by an earlier call may still be in the caller's hands and
 * must be ignored by tag. A send or connect in flight on fd completes once
 * more, with its result or -ECANCELED. On io_uring this submits at once (a
 * system call) when anything is in flight on fd. */
int loop_cancel(loop *l, int fd);
/* Watches an eventfd: a LOOP_OP_WAKE completion each time it is signalled
 * (signals between two completions are summed into one). */
int loop_watch_eventfd(loop *l, int efd, uint64_t tag);

/* The buffer's memory (NULL for an id out of range). */
uint8_t *loop_buffer(loop *l, uint16_t buf_id);
/* Gives a lent buffer back; an id not lent (released twice) is ignored. */
void loop_buffer_release(loop *l, uint16_t buf_id);
unsigned loop_buffer_size(const loop *l);

/*
 * Submits what is pending and waits up to timeout_ms (−1: forever, 0: poll)
 * for completions; fills out[0..max) and returns their count (≥ 0) or −errno.
 * Returns at once when completions are already waiting; those beyond max
 * wait for the next call. One call is one system call in steady state on
 * io_uring (io_uring_enter submitting and waiting), and on epoll one
 * epoll_wait plus the I/O calls themselves.
 */
int loop_run_once(loop *l, loop_completion *out, unsigned max, int timeout_ms);

#endif /* AEGIS_LOOP_H */
