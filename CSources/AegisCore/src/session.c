/*
 * session.c — an established session and its window of received ids (§4).
 *
 * The window is a FIFO ring of ids in arrival order plus an open-addressing
 * index (linear probing, keyed SipHash of the id) over it. Ids expire in
 * roughly arrival order, so expiry pops from the head; a retransmission that
 * extends an id's life updates it in place, which can only make the head
 * wait longer than needed (we remember too long, never too short).
 */
#include <sodium.h>
#include <stdlib.h>

#include "internal.h"

#define DEDUPE_INITIAL 16
#define DEDUPE_DEFAULT_LIMIT 8192

aegis_status session_create(aegis_role role, const char *session_id,
                            const uint8_t okm[64], const aegis_identity *signer,
                            const uint8_t peer_key[AEGIS_PUBLIC_KEY_BYTES],
                            aegis_session **out) {
    aegis_session *s = calloc(1, sizeof *s);
    if (s == NULL) return AEGIS_E_NOMEM;
    s->keys = secmem_alloc();
    if (s->keys == NULL) {
        free(s);
        return AEGIS_E_NOMEM;
    }
    memcpy(s->keys, okm, 64);
    s->role = role;
    memcpy(s->session_id, session_id, AEGIS_SESSION_ID_LEN);
    s->session_id[AEGIS_SESSION_ID_LEN] = '\0';
    identity_retain(signer);
    s->signer = signer;
    memcpy(s->peer_key, peer_key, AEGIS_PUBLIC_KEY_BYTES);
    s->skew = AEGIS_DEFAULT_SKEW;
    s->seen.limit = DEDUPE_DEFAULT_LIMIT;
    randombytes_buf(s->seen.hash_key, sizeof s->seen.hash_key);
    *out = s;
    return AEGIS_OK;
}

void aegis_session_free(aegis_session *s) {
    if (s == NULL) return;
    secmem_free(s->keys);
    aegis_identity_free((aegis_identity *)s->signer);
    dedupe_free(&s->seen);
    free(s);
}

aegis_role aegis_session_role(const aegis_session *s) { return s->role; }
const char *aegis_session_id(const aegis_session *s) { return s->session_id; }

void aegis_session_peer_key(const aegis_session *s, uint8_t pk[AEGIS_PUBLIC_KEY_BYTES]) {
    memcpy(pk, s->peer_key, AEGIS_PUBLIC_KEY_BYTES);
}

void aegis_session_set_skew(aegis_session *s, uint64_t skew_seconds) {
    s->skew = skew_seconds;
}

void aegis_session_set_dedupe_limit(aegis_session *s, size_t max_entries) {
    s->seen.limit = max_entries < DEDUPE_INITIAL ? DEDUPE_INITIAL : max_entries;
}

uint64_t aegis_session_dedupe_evictions(const aegis_session *s) {
    return s->seen.evictions;
}

aegis_status aegis_session_remember_id(aegis_session *s, const char *id, size_t len,
                                       uint64_t expires_at, uint64_t now) {
    if (!aegis_is_valid_id(id, len)) return AEGIS_E_INVALID_ARGUMENT;
    bool dup;
    dedupe_check_and_remember(&s->seen, id, len, expires_at, now, &dup);
    return AEGIS_OK;
}

/* ---- the window ---------------------------------------------------------- */

static uint64_t id_hash(const dedupe_window *w, const char *id, size_t len) {
    uint64_t h;
    crypto_shorthash_siphash24((unsigned char *)&h, (const unsigned char *)id, len,
                               (const unsigned char *)w->hash_key);
    return h;
}

static size_t index_mask(const dedupe_window *w) { return 2 * w->cap - 1; }

static void index_insert(dedupe_window *w, uint64_t hash, size_t pos) {
    size_t mask = index_mask(w);
    size_t i = (size_t)hash & mask;
    while (w->index[i] != 0) i = (i + 1) & mask;
    w->index[i] = (uint32_t)(pos + 1);
}

/* Removes ring position pos from the index, shifting back the probe chain
 * behind it so that lookups need no tombstones. */
static void index_remove(dedupe_window *w, size_t pos) {
    size_t mask = index_mask(w);
    size_t i = (size_t)w->ring[pos].hash & mask;
    while (w->index[i] != pos + 1) i = (i + 1) & mask;
    size_t hole = i;
    for (size_t j = (hole + 1) & mask; w->index[j] != 0; j = (j + 1) & mask) {
        size_t home = (size_t)w->ring[w->index[j] - 1].hash & mask;
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        bool home_after_hole = (j > hole) ? (home > hole && home <= j)
                                          : (home > hole || home <= j);
        if (!home_after_hole) {
            w->index[hole] = w->index[j];
            hole = j;
        }
    }
    w->index[hole] = 0;
}

static dedupe_entry *lookup(dedupe_window *w, uint64_t hash, const char *id, size_t len) {
    if (w->cap == 0) return NULL;
    size_t mask = index_mask(w);
    for (size_t i = (size_t)hash & mask; w->index[i] != 0; i = (i + 1) & mask) {
        dedupe_entry *e = &w->ring[w->index[i] - 1];
        if (e->hash == hash && e->len == len && memcmp(e->id, id, len) == 0) return e;
    }
    return NULL;
}

static void pop_head(dedupe_window *w) {
    index_remove(w, w->head);
    w->head = (w->head + 1) & (w->cap - 1);
    w->count--;
}

static bool resize(dedupe_window *w, size_t cap) {
    dedupe_entry *ring = malloc(cap * sizeof *ring);
    uint32_t *index = calloc(2 * cap, sizeof *index);
    if (ring == NULL || index == NULL) {
        free(ring);
        free(index);
        return false;
    }
    for (size_t k = 0; k < w->count; k++) ring[k] = w->ring[(w->head + k) & (w->cap - 1)];
    free(w->ring);
    free(w->index);
    w->ring = ring;
    w->index = index;
    w->cap = cap;
    w->head = 0;
    for (size_t k = 0; k < w->count; k++) index_insert(w, ring[k].hash, k);
    return true;
}

void dedupe_check_and_remember(dedupe_window *w, const char *id, size_t len,
                               uint64_t expires_at, uint64_t now, bool *dup) {
    uint64_t hash = id_hash(w, id, len);
    dedupe_entry *e = lookup(w, hash, id, len);
    if (e != NULL) {
        if (expires_at > e->expires_at) e->expires_at = expires_at;
        *dup = true;
        return;
    }
    *dup = false;
    while (w->count > 0 && w->ring[w->head].expires_at < now) pop_head(w);
    if (w->count == w->cap) {
        size_t want = w->cap == 0 ? DEDUPE_INITIAL : 2 * w->cap;
        if (want > w->limit || !resize(w, want)) {
            if (w->count == 0) return; /* no memory at all: cannot remember */
            /* At the bound: forget the oldest early (documented in the header). */
            pop_head(w);
            w->evictions++;
        }
    }
    size_t pos = (w->head + w->count) & (w->cap - 1);
    dedupe_entry *n = &w->ring[pos];
    n->expires_at = expires_at;
    n->hash = hash;
    n->len = (uint8_t)len;
    memcpy(n->id, id, len);
    w->count++;
    index_insert(w, hash, pos);
}

void dedupe_free(dedupe_window *w) {
    free(w->ring);
    free(w->index);
    memset(w, 0, sizeof *w);
}
