/*
 * loop.c — the part of the event loop both backends share: creation and
 * backend selection, the buffer pool's memory and its lending, and the
 * argument checks of the public calls. The backends are loop_uring.c and
 * loop_epoll.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "loop_internal.h"

/* The kernel's limit for a provided-buffer ring, which loop.h promises for
 * both backends (and buf_id is 16 bits). */
#define LOOP_MAX_BUFS 32768u
/* A buffer's length must fit a completion's res. */
#define LOOP_MAX_BUF_SIZE (1u << 30)

int loop_grow(void **arr, unsigned *cap, size_t elem, size_t need) {
    if (need < *cap) return 0;
    if (need >= UINT32_MAX / 2) return -ENOMEM;
    size_t n = *cap ? *cap : 64;
    while (n <= need) n *= 2;
    void *p = realloc(*arr, n * elem);
    if (!p) return -ENOMEM;
    memset((uint8_t *)p + (size_t)*cap * elem, 0, (n - *cap) * elem);
    *arr = p;
    *cap = (unsigned)n;
    return 0;
}

const char *loop_backend_name(loop_backend b) {
    switch (b) {
    case LOOP_AUTO: return "auto";
    case LOOP_URING: return "io_uring";
    case LOOP_EPOLL: return "epoll";
    }
    return "unknown";
}

/* AEGIS_DISABLE_IO_URING set to anything but "" or "0" keeps LOOP_AUTO on
 * epoll, so that tests and operators can take the fallback path without
 * changing kernel.io_uring_disabled. */
static bool uring_disabled_by_env(void) {
    const char *v = getenv("AEGIS_DISABLE_IO_URING");
    return v && *v && strcmp(v, "0") != 0;
}

static void pool_free(loop *l) {
    if (l->bufs) munmap(l->bufs, l->bufs_len);
    free(l->lent);
}

static int pool_init(loop *l, unsigned nbufs, unsigned buf_size) {
    l->nbufs = nbufs;
    l->buf_size = buf_size;
    l->bufs_len = (size_t)nbufs * buf_size;
    /* mmap rather than malloc: page-aligned, and untouched buffers cost no
     * memory until the kernel first writes to them. */
    void *p = mmap(NULL, l->bufs_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -errno;
    l->bufs = p;
    l->lent = calloc(nbufs, 1);
    if (!l->lent) {
        pool_free(l);
        return -ENOMEM;
    }
    return 0;
}

int loop_create(loop_backend want, unsigned nbufs, unsigned buf_size, loop **out, loop_backend *got) {
    if (!out) return -EINVAL;
    *out = NULL;
    if (nbufs == 0 || nbufs > LOOP_MAX_BUFS || (nbufs & (nbufs - 1)) != 0) return -EINVAL;
    if (buf_size == 0 || buf_size > LOOP_MAX_BUF_SIZE) return -EINVAL;
    if (want != LOOP_AUTO && want != LOOP_URING && want != LOOP_EPOLL) return -EINVAL;

    loop *l = calloc(1, sizeof *l);
    if (!l) return -ENOMEM;
    int r = pool_init(l, nbufs, buf_size);
    if (r < 0) {
        free(l);
        return r;
    }

    if (want == LOOP_AUTO && uring_disabled_by_env()) want = LOOP_EPOLL;
    r = -ENOSYS;
    if (want != LOOP_EPOLL) {
        l->ops = &loop_uring_ops;
        r = l->ops->create(l);
    }
    /* Whatever stopped io_uring (sysctl, seccomp, an old kernel, its memory
     * accounting), LOOP_AUTO still has epoll; a forced LOOP_URING reports it. */
    if (r < 0 && want != LOOP_URING) {
        l->ops = &loop_epoll_ops;
        r = l->ops->create(l);
    }
    if (r < 0) {
        pool_free(l);
        free(l);
        return r;
    }
    if (got) *got = l->ops->backend;
    *out = l;
    return 0;
}

void loop_destroy(loop *l) {
    if (!l) return;
    l->ops->destroy(l);
    pool_free(l);
    free(l);
}

int loop_accept(loop *l, int listen_fd, uint64_t tag) {
    if (listen_fd < 0) return -EBADF;
    return l->ops->accept(l, listen_fd, tag);
}

int loop_recv(loop *l, int fd, uint64_t tag) {
    if (fd < 0) return -EBADF;
    return l->ops->recv(l, fd, tag);
}

int loop_send(loop *l, int fd, const void *buf, size_t len, uint64_t tag) {
    if (fd < 0) return -EBADF;
    if (!buf && len) return -EFAULT;
    if (len > LOOP_SEND_MAX) len = LOOP_SEND_MAX; /* a short send, as loop.h allows */
    return l->ops->send(l, fd, buf, len, tag);
}

int loop_connect(loop *l, int fd, const void *addr, unsigned addr_len, uint64_t tag) {
    if (fd < 0) return -EBADF;
    if (!addr || addr_len == 0) return -EINVAL;
    return l->ops->connect(l, fd, addr, addr_len, tag);
}

int loop_cancel(loop *l, int fd) {
    if (fd < 0) return -EBADF;
    return l->ops->cancel(l, fd);
}

int loop_watch_eventfd(loop *l, int efd, uint64_t tag) {
    if (efd < 0) return -EBADF;
    /* Both backends read the counter after a readiness report that may be
     * stale (the counter already read with an earlier report): that read
     * must not block the loop. */
    int fl = fcntl(efd, F_GETFL);
    if (fl < 0) return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(efd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    return l->ops->watch_eventfd(l, efd, tag);
}

uint8_t *loop_buffer(loop *l, uint16_t buf_id) {
    return buf_id < l->nbufs ? loop_buf_addr(l, buf_id) : NULL;
}

void loop_buffer_release(loop *l, uint16_t buf_id) {
    /* Only a buffer the caller holds goes back: a second release of the same
     * buffer would otherwise hand it to the kernel twice. */
    if (buf_id >= l->nbufs || !l->lent[buf_id]) return;
    l->lent[buf_id] = 0;
    l->ops->buffer_release(l, buf_id);
}

unsigned loop_buffer_size(const loop *l) {
    return l->buf_size;
}

int loop_run_once(loop *l, loop_completion *out, unsigned max, int timeout_ms) {
    if (!out || max == 0) return -EINVAL;
    int n = l->ops->run_once(l, out, max, timeout_ms);
    for (int i = 0; i < n; i++)
        if (out[i].op == LOOP_OP_RECV && out[i].res > 0) l->lent[out[i].buf_id] = 1;
    return n;
}
