/*
 * queue.h — a bounded single-producer single-consumer ring of variable-size
 * records, allocated once (internal to AegisIO). Workers and the control
 * plane exchange events and commands through these; the consumer side is
 * lock-free, and the producer side is lock-free for one producer (callers
 * with several producers serialise them with their own mutex).
 *
 * A record is a 4-byte length, the bytes, padded to 8. A record that does
 * not fit before the end of the buffer leaves a wrap marker and starts at 0,
 * so every record is contiguous and can be read in place.
 */
#ifndef AEGIS_QUEUE_H
#define AEGIS_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct spsc_queue {
    uint8_t *buf;
    size_t cap;                 /* power of two */
    _Alignas(64) _Atomic size_t head;   /* written by the producer */
    _Alignas(64) _Atomic size_t tail;   /* written by the consumer */
    size_t reserved_at, reserved_len;   /* producer's open reservation */
} spsc_queue;

int spsc_init(spsc_queue *q, size_t cap);
void spsc_free(spsc_queue *q);

/* Producer: room for a record of len bytes, or NULL when the queue is full. */
void *spsc_reserve(spsc_queue *q, size_t len);
/* Producer: publishes the reserved record. */
void spsc_commit(spsc_queue *q);

/* Consumer: the next record (and its length), or NULL when empty. The
 * record stays valid until spsc_release_to() moves past it. */
void *spsc_peek(spsc_queue *q, size_t *cursor, size_t *len);
/* Consumer: frees every record before `cursor` (as advanced by peek). */
void spsc_release_to(spsc_queue *q, size_t cursor);
/* Consumer's starting cursor. */
size_t spsc_cursor(spsc_queue *q);

bool spsc_empty(spsc_queue *q);

/* The largest record that can ever fit. */
size_t spsc_max_record(const spsc_queue *q);

#endif /* AEGIS_QUEUE_H */
