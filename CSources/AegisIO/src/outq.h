/*
 * outq.h — a connection's output queue (internal to AegisIO), shared by the
 * server's and the client's connections.
 *
 * Two buffers: `inflight`, whose bytes the kernel may be reading (one send
 * in flight per socket), and `pending`, where new output is appended
 * meanwhile. When the in-flight bytes are all sent, pending takes their
 * place. Both buffers are freed once the queue is empty, so an idle
 * connection holds no output memory.
 */
#ifndef AEGIS_OUTQ_H
#define AEGIS_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct outbuf {
    uint8_t *p;
    size_t len, off, cap;
} outbuf;

typedef struct outq {
    outbuf inflight, pending;
} outq;

/* Room for n more bytes at the end of pending (NULL when out of memory);
 * outq_commit(q, k) then adds the k bytes written there. */
uint8_t *outq_reserve(outq *q, size_t n);
void outq_commit(outq *q, size_t n);
bool outq_append(outq *q, const void *p, size_t n);

/* The bytes to hand to the socket next (the rest of the in-flight buffer,
 * else the pending bytes, which become in flight), or NULL when the queue
 * is empty, in which case both buffers are freed. */
const uint8_t *outq_next(outq *q, size_t *len);
/* n bytes of what outq_next() gave were sent. */
void outq_sent(outq *q, size_t n);

size_t outq_queued(const outq *q);
/* Forgets what is pending but not in flight (a slow consumer is cut off). */
void outq_drop_pending(outq *q);
/* Frees the pending buffer only; the in-flight one may still be read by the
 * kernel. */
void outq_free_pending(outq *q);
void outq_free(outq *q);

#endif /* AEGIS_OUTQ_H */
