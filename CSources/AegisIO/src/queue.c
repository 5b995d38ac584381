/*
 * queue.c — see queue.h. Positions are free-running byte counters; the
 * index into buf is pos & (cap − 1). Acquire/release ordering on head and
 * tail is the only synchronisation.
 */
#include <stdlib.h>
#include <string.h>

#include "queue.h"

#define WRAP UINT32_MAX
#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

int spsc_init(spsc_queue *q, size_t cap) {
    memset(q, 0, sizeof *q);
    if (cap < 64 || (cap & (cap - 1))) return -1;
    q->buf = aligned_alloc(64, cap);
    if (q->buf == NULL) return -1;
    q->cap = cap;
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
    return 0;
}

void spsc_free(spsc_queue *q) {
    free(q->buf);
    q->buf = NULL;
}

size_t spsc_max_record(const spsc_queue *q) { return q->cap / 2 - 8; }

void *spsc_reserve(spsc_queue *q, size_t len) {
    size_t need = ALIGN8(4 + len);
    if (len > spsc_max_record(q)) return NULL;
    size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    size_t at = head & (q->cap - 1);
    size_t to_end = q->cap - at;
    size_t total = need <= to_end ? need : to_end + need; /* a wrap wastes the tail end */
    if (q->cap - (head - tail) < total) return NULL;
    if (need > to_end) {
        uint32_t marker = WRAP;
        memcpy(q->buf + at, &marker, 4);
        head += to_end;
        at = 0;
    }
    uint32_t l = (uint32_t)len;
    memcpy(q->buf + at, &l, 4);
    q->reserved_at = head;
    q->reserved_len = need;
    return q->buf + at + 4;
}

void spsc_commit(spsc_queue *q) {
    atomic_store_explicit(&q->head, q->reserved_at + q->reserved_len, memory_order_release);
}

size_t spsc_cursor(spsc_queue *q) {
    return atomic_load_explicit(&q->tail, memory_order_relaxed);
}

void *spsc_peek(spsc_queue *q, size_t *cursor, size_t *len) {
    size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (*cursor == head) return NULL;
    size_t at = *cursor & (q->cap - 1);
    uint32_t l;
    memcpy(&l, q->buf + at, 4);
    if (l == WRAP) {
        *cursor += q->cap - at;
        if (*cursor == head) return NULL;
        at = 0;
        memcpy(&l, q->buf, 4);
    }
    *len = l;
    void *rec = q->buf + at + 4;
    *cursor += ALIGN8(4 + (size_t)l);
    return rec;
}

void spsc_release_to(spsc_queue *q, size_t cursor) {
    atomic_store_explicit(&q->tail, cursor, memory_order_release);
}

bool spsc_empty(spsc_queue *q) {
    return atomic_load_explicit(&q->head, memory_order_acquire) ==
           atomic_load_explicit(&q->tail, memory_order_relaxed);
}
