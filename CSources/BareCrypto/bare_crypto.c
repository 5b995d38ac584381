/*
 * bare_crypto.c — the baseline: libsodium calls only (see bare_crypto.h).
 */
#include "bare_crypto.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

int bare_init(void) { return sodium_init() < 0 ? -1 : 0; }

void bare_sign_keypair(uint8_t pk[32], uint8_t sk[64]) { crypto_sign_keypair(pk, sk); }

void bare_random(void *buf, size_t n) { randombytes_buf(buf, n); }

int bare_verify(const uint8_t sig[64], const uint8_t *m, size_t m_len, const uint8_t pk[32]) {
    return crypto_sign_verify_detached(sig, m, m_len, pk);
}

/* ---- enc() helpers, as in the core's syntax.c (setup only, never timed) --- */

static void put_u32be(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t enc(uint8_t *out, size_t at, const void *field, size_t n) {
    put_u32be(out + at, (uint32_t)n);
    if (n) memcpy(out + at + 4, field, n);
    return at + 4 + n;
}

static size_t enc_u64(uint8_t *out, size_t at, uint64_t v) {
    put_u32be(out + at, 8);
    for (int i = 0; i < 8; i++) out[at + 4 + i] = (uint8_t)(v >> (56 - 8 * i));
    return at + 12;
}

size_t bare_sig_prefix_max(void) {
    /* label, aad (label, sid, dir, id ≤ 64, type ≤ 9, channel ≤ 255, ref ≤ 64, ts), nonce, len */
    return 16 + 4 + (16 + 4 + 64 + 8 + 4 + 64 + 4 + 9 + 4 + 255 + 4 + 64 + 12) + 16 + 4;
}

size_t bare_sig_prefix(uint8_t *out, const char *session_id, size_t session_id_len,
                       const char *dir, const char *id, size_t id_len, const char *type,
                       const char *channel, size_t channel_len, const char *ref, size_t ref_len,
                       uint64_t timestamp, const uint8_t nonce[12], size_t ct_len,
                       size_t *aad_at, size_t *aad_len) {
    size_t at = enc(out, 0, "aegis-v1/sig", 12);
    size_t len_at = at;
    at += 4;
    *aad_at = at;
    at = enc(out, at, "aegis-v1/msg", 12);
    at = enc(out, at, session_id, session_id_len);
    at = enc(out, at, dir, strlen(dir));
    at = enc(out, at, id, id_len);
    at = enc(out, at, type, strlen(type));
    at = enc(out, at, channel, channel_len);
    at = enc(out, at, ref, ref_len);
    at = enc_u64(out, at, timestamp);
    *aad_len = at - *aad_at;
    put_u32be(out + len_at, (uint32_t)*aad_len);
    at = enc(out, at, nonce, 12);
    put_u32be(out + at, (uint32_t)ct_len);
    return at + 4;
}

/* ---- messages ------------------------------------------------------------ */

int bare_open(const uint8_t *sig_input, size_t sig_input_len, size_t ct_at, size_t ct_len,
              const uint8_t *aad, size_t aad_len, const uint8_t nonce[12],
              const uint8_t key[32], const uint8_t peer_pk[32], const uint8_t sig[64],
              uint8_t *pt_out) {
    unsigned long long pt_len;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(pt_out, &pt_len, NULL, sig_input + ct_at, ct_len,
                                                  aad, aad_len, nonce, key) != 0)
        return -1;
    if (crypto_sign_verify_detached(sig, sig_input, sig_input_len, peer_pk) != 0) return -2;
    return 0;
}

void bare_seal(uint8_t *sig_input, size_t prefix_len, const uint8_t *pt, size_t pt_len,
               const uint8_t *aad, size_t aad_len, const uint8_t nonce[12],
               const uint8_t key[32], const uint8_t sk[64], uint8_t sig_out[64]) {
    crypto_aead_chacha20poly1305_ietf_encrypt(sig_input + prefix_len, NULL, pt, pt_len, aad,
                                              aad_len, NULL, nonce, key);
    crypto_sign_detached(sig_out, NULL, sig_input, prefix_len + pt_len + 16, sk);
}

/* ---- handshake ------------------------------------------------------------ */

void bare_handshake_prepare(bare_handshake_inputs *in, size_t agent_id_len) {
    char agent_id[256];
    memset(agent_id, 'a', sizeof agent_id);
    static const char sid[] = "5f0c3d3e-8a4b-4c2e-9d1f-2b3a4c5d6e7f";
    uint8_t zero[32] = { 0 };
    if (agent_id_len > 255) agent_id_len = 255;
    memset(in, 0, sizeof *in);
    crypto_sign_keypair(in->agent_pk, in->agent_sk);
    crypto_sign_keypair(in->server_pk, in->server_sk);

    size_t at = enc(in->auth_input, 0, "aegis-v1/auth", 13);
    at = enc(in->auth_input, at, agent_id, agent_id_len);
    at = enc(in->auth_input, at, in->agent_pk, 32);
    at = enc_u64(in->auth_input, at, 1764211200);
    in->auth_nonce_at = at + 4;
    at = enc(in->auth_input, at, zero, 32);
    in->auth_eph_at = at + 4;
    at = enc(in->auth_input, at, zero, 32);
    in->auth_input_len = at;

    at = enc(in->ok_input, 0, "aegis-v1/auth-ok", 16);
    in->ok_th_at = at + 4;
    at = enc(in->ok_input, at, zero, 32);
    at = enc(in->ok_input, at, sid, 36);
    in->ok_token_at = at + 4;
    at = enc(in->ok_input, at, zero, 32);
    in->ok_backend_at = at + 4;
    at = enc(in->ok_input, at, zero, 32);
    at = enc(in->ok_input, at, in->server_pk, 32);
    at = enc_u64(in->ok_input, at, 1764211200);
    at = enc_u64(in->ok_input, at, 1764211200 + 86400);
    at = enc_u64(in->ok_input, at, 30);
    in->ok_input_len = at;

    at = enc(in->keys_input, 0, "aegis-v1/keys", 13);
    in->keys_th_at = at + 4;
    at = enc(in->keys_input, at, zero, 32);
    at = enc(in->keys_input, at, sid, 36);
    in->keys_token_at = at + 4;
    at = enc(in->keys_input, at, zero, 32);
    in->keys_backend_at = at + 4;
    at = enc(in->keys_input, at, zero, 32);
    in->keys_input_len = at;
}

/* th = SHA256(enc("aegis-v1/transcript", auth_input, signature)), streamed. */
static void transcript(uint8_t th[32], const uint8_t *auth_input, size_t len,
                       const uint8_t sig[64]) {
    static const uint8_t label[4 + 19] = "\0\0\0\x13" "aegis-v1/transcript";
    uint8_t l[4];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, label, sizeof label);
    put_u32be(l, (uint32_t)len);
    crypto_hash_sha256_update(&st, l, 4);
    crypto_hash_sha256_update(&st, auth_input, len);
    put_u32be(l, 64);
    crypto_hash_sha256_update(&st, l, 4);
    crypto_hash_sha256_update(&st, sig, 64);
    crypto_hash_sha256_final(&st, th);
}

/* HKDF-SHA256 (RFC 5869), 64 bytes: extract, then two expand blocks. */
static void hkdf64(uint8_t okm[64], const uint8_t salt[32], const uint8_t *ikm, size_t ikm_len,
                   const char *info) {
    uint8_t prk[32], one = 1, two = 2;
    size_t info_len = strlen(info);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, salt, 32);
    crypto_auth_hmacsha256_update(&st, ikm, ikm_len);
    crypto_auth_hmacsha256_final(&st, prk);
    crypto_auth_hmacsha256_init(&st, prk, 32);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)info, info_len);
    crypto_auth_hmacsha256_update(&st, &one, 1);
    crypto_auth_hmacsha256_final(&st, okm);
    crypto_auth_hmacsha256_init(&st, prk, 32);
    crypto_auth_hmacsha256_update(&st, okm, 32);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)info, info_len);
    crypto_auth_hmacsha256_update(&st, &two, 1);
    crypto_auth_hmacsha256_final(&st, okm + 32);
}

int bare_handshake(bare_handshake_inputs *in, uint8_t okm_gateway[64], uint8_t okm_agent[64]) {
    static const char info[] = "aegis-v1/session-keys";
    uint8_t rnd[128]; /* nonce ‖ e ‖ b ‖ token */
    uint8_t *nonce = rnd, *e = rnd + 32, *b = rnd + 64, *token = rnd + 96;
    uint8_t agent_sig[64], ok_sig[64], th[32], th2[32], backend[32], a_x[32], ikm[64];
    uint8_t *auth = in->auth_input;

    randombytes_buf(rnd, sizeof rnd);

    /* Agent: the auth request. */
    memcpy(auth + in->auth_nonce_at, nonce, 32);
    crypto_scalarmult_base(auth + in->auth_eph_at, e);
    crypto_sign_detached(agent_sig, NULL, auth, in->auth_input_len, in->agent_sk);
    uint8_t th_agent[32];
    transcript(th_agent, auth, in->auth_input_len, agent_sig);

    /* Gateway: verify, key exchange, auth_ok. */
    if (crypto_sign_verify_detached(agent_sig, auth, in->auth_input_len, in->agent_pk) != 0)
        return -1;
    crypto_scalarmult_base(backend, b);
    if (crypto_sign_ed25519_pk_to_curve25519(a_x, in->agent_pk) != 0) return -2;
    if (crypto_scalarmult(ikm, b, a_x) != 0) return -3;
    if (crypto_scalarmult(ikm + 32, b, auth + in->auth_eph_at) != 0) return -4;
    transcript(th, auth, in->auth_input_len, agent_sig);
    memcpy(in->keys_input + in->keys_th_at, th, 32);
    memcpy(in->keys_input + in->keys_token_at, token, 32);
    memcpy(in->keys_input + in->keys_backend_at, backend, 32);
    crypto_hash_sha256(th2, in->keys_input, in->keys_input_len);
    hkdf64(okm_gateway, th2, ikm, 64, info);
    memcpy(in->ok_input + in->ok_th_at, th, 32);
    memcpy(in->ok_input + in->ok_token_at, token, 32);
    memcpy(in->ok_input + in->ok_backend_at, backend, 32);
    crypto_sign_detached(ok_sig, NULL, in->ok_input, in->ok_input_len, in->server_sk);

    /* Agent: verify auth_ok, key exchange. */
    if (crypto_sign_verify_detached(ok_sig, in->ok_input, in->ok_input_len, in->server_pk) != 0)
        return -5;
    if (crypto_sign_ed25519_sk_to_curve25519(a_x, in->agent_sk) != 0) return -6;
    if (crypto_scalarmult(ikm, a_x, backend) != 0) return -7;
    if (crypto_scalarmult(ikm + 32, e, backend) != 0) return -8;
    memcpy(in->keys_input + in->keys_th_at, th_agent, 32); /* the same bytes as the gateway's */
    crypto_hash_sha256(th2, in->keys_input, in->keys_input_len);
    hkdf64(okm_agent, th2, ikm, 64, info);
    return memcmp(okm_gateway, okm_agent, 64) == 0 ? 0 : -9;
}

int bare_gateway_handshake_prepare(bare_gateway_handshake *h, size_t agent_id_len) {
    uint8_t e[32], th[32], backend[32];
    bare_handshake_prepare(&h->in, agent_id_len);
    randombytes_buf(h->in.auth_input + h->in.auth_nonce_at, 32);
    randombytes_buf(e, sizeof e);
    crypto_scalarmult_base(h->in.auth_input + h->in.auth_eph_at, e);
    crypto_sign_detached(h->agent_sig, NULL, h->in.auth_input, h->in.auth_input_len, h->in.agent_sk);
    randombytes_buf(h->b, sizeof h->b);
    crypto_scalarmult_base(backend, h->b);
    if (crypto_sign_ed25519_pk_to_curve25519(h->a_x, h->in.agent_pk) != 0) return -1;
    transcript(th, h->in.auth_input, h->in.auth_input_len, h->agent_sig);
    memcpy(h->in.keys_input + h->in.keys_th_at, th, 32);
    memcpy(h->in.keys_input + h->in.keys_backend_at, backend, 32);
    crypto_hash_sha256(h->th2, h->in.keys_input, h->in.keys_input_len);
    memcpy(h->in.ok_input + h->in.ok_th_at, th, 32);
    memcpy(h->in.ok_input + h->in.ok_backend_at, backend, 32);
    return 0;
}

int bare_gateway_handshake_run(bare_gateway_handshake *h, uint8_t okm[64]) {
    static const char info[] = "aegis-v1/session-keys";
    uint8_t ikm[64], ok_sig[64];
    if (crypto_sign_verify_detached(h->agent_sig, h->in.auth_input, h->in.auth_input_len, h->in.agent_pk) != 0)
        return -1;
    if (crypto_scalarmult(ikm, h->b, h->a_x) != 0) return -2;
    if (crypto_scalarmult(ikm + 32, h->b, h->in.auth_input + h->in.auth_eph_at) != 0) return -3;
    hkdf64(okm, h->th2, ikm, 64, info);
    crypto_sign_detached(ok_sig, NULL, h->in.ok_input, h->in.ok_input_len, h->in.server_sk);
    return 0;
}

/* ---- one message, prepared ------------------------------------------------ */

struct bare_message {
    size_t pt_len, prefix_len, aad_at, aad_len;
    uint8_t key[32], nonce[12], pk[32], sk[64], sig[64];
    uint8_t *pt, *out, *sig_input;
};

bare_message *bare_message_new(size_t pt_len, const char *channel) {
    static const char sid[] = "5f0c3d3e-8a4b-4c2e-9d1f-2b3a4c5d6e7f";
    static const char id[] = "9b2f6a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    bare_message *m = calloc(1, sizeof *m);
    if (m == NULL) return NULL;
    m->pt_len = pt_len;
    m->pt = malloc(pt_len + 1);
    m->out = malloc(pt_len + 1);
    m->sig_input = malloc(bare_sig_prefix_max() + pt_len + 16);
    if (m->pt == NULL || m->out == NULL || m->sig_input == NULL) {
        bare_message_free(m);
        return NULL;
    }
    crypto_sign_keypair(m->pk, m->sk);
    randombytes_buf(m->key, sizeof m->key);
    randombytes_buf(m->nonce, sizeof m->nonce);
    randombytes_buf(m->pt, pt_len);
    m->prefix_len = bare_sig_prefix(m->sig_input, sid, 36, "up", id, 36, "event", channel, strlen(channel),
                                    "", 0, 1764211200, m->nonce, pt_len + 16, &m->aad_at, &m->aad_len);
    bare_message_seal(m);
    return m;
}

void bare_message_seal(bare_message *m) {
    bare_seal(m->sig_input, m->prefix_len, m->pt, m->pt_len, m->sig_input + m->aad_at, m->aad_len, m->nonce,
              m->key, m->sk, m->sig);
}

int bare_message_open(bare_message *m) {
    return bare_open(m->sig_input, m->prefix_len + m->pt_len + 16, m->prefix_len, m->pt_len + 16,
                     m->sig_input + m->aad_at, m->aad_len, m->nonce, m->key, m->pk, m->sig, m->out);
}

void bare_message_free(bare_message *m) {
    if (m == NULL) return;
    free(m->pt);
    free(m->out);
    free(m->sig_input);
    free(m);
}
