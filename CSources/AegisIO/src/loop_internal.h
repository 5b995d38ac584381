/*
 * loop_internal.h — what loop.c shares with the two backends (private to
 * loop*.c).
 *
 * loop.c owns the object, the buffer pool's memory and the checks common to
 * both backends; a backend is a table of functions (struct loop_ops) and
 * its own state behind loop->be. Buffers are lent to the caller by
 * loop_run_once in loop.c (loop->lent), so a backend only ever sees a
 * buffer come back through its buffer_release.
 */
#ifndef AEGIS_LOOP_INTERNAL_H
#define AEGIS_LOOP_INTERNAL_H

#include "loop.h"

struct loop_ops {
    loop_backend backend;
    /* Sets l->be; returns 0 or -errno (and leaves nothing behind). */
    int (*create)(loop *l);
    void (*destroy)(loop *l);
    int (*accept)(loop *l, int fd, uint64_t tag);
    int (*recv)(loop *l, int fd, uint64_t tag);
    int (*send)(loop *l, int fd, const void *buf, size_t len, uint64_t tag);
    int (*connect)(loop *l, int fd, const void *addr, unsigned addr_len, uint64_t tag);
    int (*cancel)(loop *l, int fd);
    int (*watch_eventfd)(loop *l, int efd, uint64_t tag);
    /* Buffer bid is free again (the caller released it, or a completion
     * carrying it was dropped). */
    void (*buffer_release)(loop *l, uint16_t bid);
    int (*run_once)(loop *l, loop_completion *out, unsigned max, int timeout_ms);
};

extern const struct loop_ops loop_uring_ops;
extern const struct loop_ops loop_epoll_ops;

struct loop {
    const struct loop_ops *ops;
    void *be;              /* the backend's state */
    unsigned nbufs;
    unsigned buf_size;
    uint8_t *bufs;         /* nbufs * buf_size bytes, mmap'd once */
    size_t bufs_len;
    uint8_t *lent;         /* lent[bid] != 0 while the caller holds buffer bid */
};

static inline uint8_t *loop_buf_addr(const loop *l, uint16_t bid) {
    return l->bufs + (size_t)bid * l->buf_size;
}

/* Sends are capped so that a byte count always fits a completion's res. */
#define LOOP_SEND_MAX ((size_t)INT32_MAX)

/*
 * Grows the array *arr of *cap elements of elem bytes so that index `need`
 * is valid (doubling, at least 64), zeroing the new elements. 0 or -ENOMEM;
 * on failure *arr is unchanged.
 */
int loop_grow(void **arr, unsigned *cap, size_t elem, size_t need);

#endif /* AEGIS_LOOP_INTERNAL_H */
