/*
 * test_session.c — the per-session duplicate window (session.c) against a
 * naive model, and the secure-memory slots it and the keys live in.
 */
#include <stdlib.h>

#include "check.h"
#include "internal.h"

/* The model: a plain array of (id, expires), expired entries dropped lazily
 * in arrival order, exactly the rules the header documents, with no bound. */
typedef struct { char id[16]; uint64_t expires; int live; } model_entry;

static int model_seen(model_entry *m, size_t n, const char *id, uint64_t expires, uint64_t now) {
    (void)now;
    for (size_t i = 0; i < n; i++)
        if (m[i].live && strcmp(m[i].id, id) == 0) {
            if (expires > m[i].expires) m[i].expires = expires;
            return 1;
        }
    return 0;
}

static uint64_t rng_state = 12345;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_against_model(void) {
    /* Limit far above the live set: the window must agree with the model on
     * every id that the model still remembers. */
    dedupe_window w = { 0 };
    w.limit = 1 << 16;
    enum { N = 20000 };
    model_entry *m = calloc(N, sizeof *m);
    size_t n = 0;
    uint64_t now = 1000;
    int disagreements = 0;
    for (int step = 0; step < N; step++) {
        now += rnd() % 3;
        /* ids from a small space so that repeats are common */
        char id[16];
        snprintf(id, sizeof id, "id-%u", (unsigned)(rnd() % 3000));
        uint64_t expires = now + 20 + rnd() % 40;
        /* the model drops what expired (in arrival order, like the ring) */
        int in_model = 0;
        for (size_t i = 0; i < n; i++)
            if (m[i].live && strcmp(m[i].id, id) == 0) in_model = m[i].expires >= now;
        bool dup;
        dedupe_check_and_remember(&w, id, strlen(id), expires, now, &dup);
        if (in_model && !dup) disagreements++;  /* forgot an id too early */
        if (!model_seen(m, n, id, expires, now) || !in_model) {
            for (size_t i = 0; i < n; i++)
                if (m[i].live && strcmp(m[i].id, id) == 0) m[i].live = 0;
            snprintf(m[n].id, sizeof m[n].id, "%s", id);
            m[n].expires = expires;
            m[n].live = 1;
            n++;
        }
    }
    CHECK_EQ_INT(disagreements, 0);
    CHECK_EQ_INT(w.evictions, 0);
    dedupe_free(&w);
    free(m);
}

static void test_never_confuses_ids(void) {
    dedupe_window w = { 0 };
    w.limit = 1 << 14;
    bool dup;
    char id[16];
    /* 10,000 distinct ids, none expired: none is a duplicate of another. */
    int false_dups = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "m%d", i);
        dedupe_check_and_remember(&w, id, strlen(id), 5000, 1, &dup);
        false_dups += dup;
    }
    CHECK_EQ_INT(false_dups, 0);
    int found = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "m%d", i);
        dedupe_check_and_remember(&w, id, strlen(id), 5000, 1, &dup);
        found += dup;
    }
    CHECK_EQ_INT(found, 10000);
    dedupe_free(&w);
}

static void test_bound_and_expiry(void) {
    dedupe_window w = { 0 };
    w.limit = 16;
    bool dup;
    char id[16];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof id, "b%d", i);
        dedupe_check_and_remember(&w, id, strlen(id), 1000, 10, &dup);
        CHECK(!dup);
    }
    CHECK(w.cap <= 16);
    CHECK_EQ_INT(w.count, 16);
    CHECK_EQ_INT(w.evictions, 84);
    /* the newest 16 are remembered, the oldest forgotten */
    dedupe_check_and_remember(&w, "b99", 3, 1000, 10, &dup);
    CHECK(dup);
    dedupe_check_and_remember(&w, "b0", 2, 1000, 10, &dup);
    CHECK(!dup);
    /* after expiry everything goes, without counting evictions */
    uint64_t before = w.evictions;
    dedupe_check_and_remember(&w, "late", 4, 3000, 2000, &dup);
    CHECK(!dup);
    CHECK_EQ_INT(w.count, 1);
    CHECK_EQ_INT(w.evictions, before);
    dedupe_free(&w);
}

static void test_secmem(void) {
    /* Enough slots to need a second slab; each is zeroed when handed out. */
    enum { N = 2500 };
    uint8_t **slots = calloc(N, sizeof *slots);
    int zeroed = 0, distinct = 1;
    for (int i = 0; i < N; i++) {
        slots[i] = secmem_alloc();
        int z = 1;
        for (int k = 0; k < SECMEM_SLOT; k++) z &= slots[i][k] == 0;
        zeroed += z;
        memset(slots[i], 0xA5, SECMEM_SLOT);
        if (i && slots[i] == slots[i - 1]) distinct = 0;
    }
    CHECK_EQ_INT(zeroed, N);
    CHECK(distinct);
    for (int i = 0; i < N; i++) secmem_free(slots[i]);
    /* freed slots come back wiped */
    uint8_t *again = secmem_alloc();
    int z = 1;
    for (int k = 0; k < SECMEM_SLOT; k++) z &= again[k] == 0;
    CHECK(z);
    secmem_free(again);
    free(slots);
}

int main(void) {
    CHECK_STATUS(aegis_core_init(), AEGIS_OK);
    test_against_model();
    test_never_confuses_ids();
    test_bound_and_expiry();
    test_secmem();
    return check_summary();
}
