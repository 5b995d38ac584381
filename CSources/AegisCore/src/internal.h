/*
 * internal.h — what the core's files share and nothing outside sees.
 */
#ifndef AEGIS_INTERNAL_H
#define AEGIS_INTERNAL_H

#include <stdatomic.h>
#include <string.h>

#include "aegis_core.h"

/* ---- secure memory (secmem.c) ------------------------------------------ */
/* Fixed 64-byte slots carved from sodium_malloc'd slabs: one guarded,
 * mlock'ed allocation serves 1023 sessions, so a session's keys cost 64
 * bytes of locked memory instead of the 3+ pages of one sodium_malloc. Slots
 * are wiped when freed. Thread-safe (a mutex: called per handshake, never
 * per message). */
#define SECMEM_SLOT 64
void *secmem_alloc(void);
void secmem_free(void *slot);

/* ---- identities (identity.c) ------------------------------------------- */
struct aegis_identity {
    _Atomic long refs;
    uint8_t public_key[AEGIS_PUBLIC_KEY_BYTES];
    uint8_t *secret_key;   /* secmem slot: libsodium's 64-byte seed ‖ pk form */
};
void identity_retain(const aegis_identity *id);
void identity_sign(const aegis_identity *id, uint8_t sig[AEGIS_SIGNATURE_BYTES],
                   const uint8_t *m, size_t m_len);

/* ---- sessions (session.c) ---------------------------------------------- */
typedef struct dedupe_entry {
    uint64_t expires_at;
    uint64_t hash;
    uint8_t len;
    char id[AEGIS_ID_MAX];
} dedupe_entry;

typedef struct dedupe_window {
    dedupe_entry *ring;    /* FIFO of remembered ids, oldest at head */
    uint32_t *index;       /* open addressing: ring position + 1, 0 = empty */
    size_t cap;            /* ring capacity (power of two) */
    size_t head, count;
    size_t limit;          /* most entries ever held */
    uint64_t evictions;
    uint64_t hash_key[2];  /* per-session key, so ids cannot be chosen to collide */
} dedupe_window;

struct aegis_session {
    aegis_role role;
    char session_id[AEGIS_SESSION_ID_LEN + 1];
    uint8_t *keys;         /* secmem slot: k_up ‖ k_down */
    const aegis_identity *signer;
    uint8_t peer_key[AEGIS_PUBLIC_KEY_BYTES];
    uint64_t skew;
    dedupe_window seen;
};

aegis_status session_create(aegis_role role, const char *session_id,
                            const uint8_t okm[64], const aegis_identity *signer,
                            const uint8_t peer_key[AEGIS_PUBLIC_KEY_BYTES],
                            aegis_session **out);
/* Sets *dup when the id is in the window (extending its life), else
 * remembers it until expires_at. If the window cannot grow (bound or
 * memory), the oldest id is forgotten to make room. */
void dedupe_check_and_remember(dedupe_window *w, const char *id, size_t len,
                               uint64_t expires_at, uint64_t now, bool *dup);
void dedupe_free(dedupe_window *w);

/* ---- encoding helpers (syntax.c) --------------------------------------- */
/* A bounded writer: every put is checked; `ok` turns false on overflow. */
typedef struct out_buf {
    uint8_t *p;
    size_t len, cap;
    bool ok;
} out_buf;

static inline void ob_init(out_buf *o, void *p, size_t cap) {
    o->p = (uint8_t *)p;
    o->len = 0;
    o->cap = cap;
    o->ok = true;
}
static inline void ob_put(out_buf *o, const void *src, size_t n) {
    if (!o->ok || o->cap - o->len < n) { o->ok = false; return; }
    if (n) memcpy(o->p + o->len, src, n);
    o->len += n;
}
static inline void ob_str(out_buf *o, const char *s) { ob_put(o, s, strlen(s)); }
void ob_u64_dec(out_buf *o, uint64_t v);
void ob_b64(out_buf *o, const uint8_t *bin, size_t n);
void ob_b64u(out_buf *o, const uint8_t *bin, size_t n);
/* enc() field: u32be(n) ‖ bytes */
void ob_enc(out_buf *o, const void *field, size_t n);
void ob_enc_u64(out_buf *o, uint64_t v);
/* Escapes a UTF-8 text for a JSON string body (quotes not included). */
void ob_json_escaped(out_buf *o, const char *s, size_t n);

/* Constant-time strict b64u decode for secrets (the session token). */
aegis_status b64u_decode_secret(const char *text, size_t len, uint8_t *out,
                                size_t expect_len);

bool is_lower_uuid(const char *s, size_t len);
/* aegis_is_valid_public_key and the Ed25519→X25519 map in one step. */
bool public_key_to_x25519(const uint8_t pk[AEGIS_PUBLIC_KEY_BYTES], uint8_t x[AEGIS_X25519_BYTES]);

/* ---- envelope fields (syntax.c) ----------------------------------------- */
struct json_field;
/* A text field, unescaped into out (cap bytes, NUL added): empty →
 * AEGIS_E_FIELD_EMPTY, longer than cap - 1 → AEGIS_E_FIELD_SYNTAX. */
aegis_status field_text(const struct json_field *f, char *out, size_t cap, size_t *len);
/* A short b64 field (≤ 64 decoded bytes) whose decoded length lies in
 * [min, max]: empty → AEGIS_E_FIELD_EMPTY, else AEGIS_E_FIELD_ENCODING. */
aegis_status field_b64(const struct json_field *f, uint8_t *out, size_t min, size_t max,
                       size_t *len);

/* HKDF-SHA256 (RFC 5869) on libsodium's HMAC-SHA256; out_len ≤ 255 × 32. */
void hkdf_sha256(uint8_t *out, size_t out_len, const uint8_t *salt, size_t salt_len,
                 const uint8_t *ikm, size_t ikm_len, const char *info);

#endif /* AEGIS_INTERNAL_H */
