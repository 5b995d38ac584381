/*
 * secmem.c — 64-byte slots for secrets, carved from sodium_malloc'd slabs.
 *
 * sodium_malloc gives guard pages, a canary and mlock, but costs three or
 * more pages per call; a gateway with 100,000 sessions cannot pay that per
 * session. Slabs of SLAB_SLOTS slots amortise it. Free slots form a list
 * threaded through the slots themselves; a freed slot is wiped first, so
 * the only non-zero bytes a free slot holds are the list pointer.
 * Slabs are never returned to the system (the bound is the peak session
 * count × 64 bytes).
 */
#include <pthread.h>
#include <sodium.h>

#include "internal.h"

#define SLAB_SLOTS 1024

typedef union slot {
    union slot *next;
    uint8_t bytes[SECMEM_SLOT];
} slot;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static slot *free_list;

static bool grow(void) {
    slot *slab = sodium_malloc(sizeof(slot) * SLAB_SLOTS);
    if (slab == NULL) return false;
    sodium_memzero(slab, sizeof(slot) * SLAB_SLOTS);
    for (size_t i = 0; i < SLAB_SLOTS; i++) {
        slab[i].next = free_list;
        free_list = &slab[i];
    }
    return true;
}

void *secmem_alloc(void) {
    pthread_mutex_lock(&lock);
    if (free_list == NULL && !grow()) {
        pthread_mutex_unlock(&lock);
        return NULL;
    }
    slot *s = free_list;
    free_list = s->next;
    pthread_mutex_unlock(&lock);
    sodium_memzero(s, sizeof *s);
    return s;
}

void secmem_free(void *p) {
    if (p == NULL) return;
    slot *s = p;
    sodium_memzero(s, sizeof *s);
    pthread_mutex_lock(&lock);
    s->next = free_list;
    free_list = s;
    pthread_mutex_unlock(&lock);
}
