/* outq.c — see outq.h. */
#include <stdlib.h>
#include <string.h>

#include "outq.h"

/* A buffer this large is not kept for reuse after it drains. */
#define KEEP_CAP 65536

static void outbuf_free(outbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

uint8_t *outq_reserve(outq *q, size_t n) {
    outbuf *b = &q->pending;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) return NULL;
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL) return NULL;
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->len;
}

void outq_commit(outq *q, size_t n) { q->pending.len += n; }

bool outq_append(outq *q, const void *p, size_t n) {
    uint8_t *dst = outq_reserve(q, n);
    if (dst == NULL) return false;
    if (n) memcpy(dst, p, n);
    q->pending.len += n;
    return true;
}

const uint8_t *outq_next(outq *q, size_t *len) {
    if (q->inflight.off >= q->inflight.len) {
        /* What was in flight is done: the pending bytes go next, and the
         * drained buffer becomes the new pending one (kept if small). */
        outbuf done = q->inflight;
        q->inflight = q->pending;
        q->pending = done;
        q->pending.len = q->pending.off = 0;
        if (q->pending.cap > KEEP_CAP) outbuf_free(&q->pending);
    }
    if (q->inflight.off < q->inflight.len) {
        *len = q->inflight.len - q->inflight.off;
        return q->inflight.p + q->inflight.off;
    }
    outq_free(q);
    *len = 0;
    return NULL;
}

void outq_sent(outq *q, size_t n) { q->inflight.off += n; }

size_t outq_queued(const outq *q) {
    return (q->inflight.len - q->inflight.off) + (q->pending.len - q->pending.off);
}

void outq_drop_pending(outq *q) { q->pending.len = q->pending.off = 0; }

void outq_free_pending(outq *q) { outbuf_free(&q->pending); }

void outq_free(outq *q) {
    outbuf_free(&q->inflight);
    outbuf_free(&q->pending);
}
