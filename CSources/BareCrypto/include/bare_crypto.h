/*
 * bare_crypto.h — the libsodium calls that Aegis's seal(), open() and
 * handshake cannot avoid, and nothing else: the baseline the benchmarks
 * divide our cost by.
 *
 * Every function works on inputs the caller prepared once (keys, the
 * signature input with its aad, nonces), so what is timed is the crypto
 * alone: no JSON, no base64, no field checks, no allocation. The inputs are
 * laid out and sized like the core's own (bare_sig_prefix builds the same
 * enc("aegis-v1/sig", aad, nonce, len) prefix as message.c), so ours and
 * bare hash, encrypt and sign the same byte counts.
 */
#ifndef BARE_CRYPTO_H
#define BARE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* sodium_init(); 0 on success. */
int bare_init(void);

/* Setup helpers (never timed): keys, random bytes, and a plain Ed25519
 * verification used to check that the core signs the layout below. */
void bare_sign_keypair(uint8_t pk[32], uint8_t sk[64]);
void bare_random(void *buf, size_t n);
int bare_verify(const uint8_t sig[64], const uint8_t *m, size_t m_len, const uint8_t pk[32]);

/*
 * Writes the signature-input prefix of a secure message exactly as the core
 * lays it out (docs/protocol.md §4):
 *   enc("aegis-v1/sig") ‖ u32(aad_len) ‖ aad ‖ enc(nonce) ‖ u32(ct_len)
 *   aad = enc("aegis-v1/msg", session_id, dir, id, type, channel, ref, u64 ts)
 * Returns the prefix length (the ciphertext goes right after it) and sets
 * *aad_at / *aad_len. out must hold bare_sig_prefix_max() bytes.
 */
size_t bare_sig_prefix_max(void);
size_t bare_sig_prefix(uint8_t *out, const char *session_id, size_t session_id_len,
                       const char *dir, const char *id, size_t id_len, const char *type,
                       const char *channel, size_t channel_len, const char *ref, size_t ref_len,
                       uint64_t timestamp, const uint8_t nonce[12], size_t ct_len,
                       size_t *aad_at, size_t *aad_len);

/*
 * open()'s unavoidable crypto: ChaCha20-Poly1305-IETF decryption of the
 * ciphertext at sig_input + ct_at (ct_len bytes, tag included) with the aad,
 * then Ed25519 verification of sig over sig_input[0 .. sig_input_len).
 * Returns 0 when both pass, -1 (decrypt) or -2 (signature).
 */
int bare_open(const uint8_t *sig_input, size_t sig_input_len, size_t ct_at, size_t ct_len,
              const uint8_t *aad, size_t aad_len, const uint8_t nonce[12],
              const uint8_t key[32], const uint8_t peer_pk[32], const uint8_t sig[64],
              uint8_t *pt_out);

/*
 * seal()'s unavoidable crypto: encrypts pt (pt_len bytes) to
 * sig_input + prefix_len (pt_len + 16 bytes) with the aad, then signs
 * sig_input[0 .. prefix_len + pt_len + 16) with the Ed25519 secret key
 * (libsodium's 64-byte seed ‖ pk form).
 */
void bare_seal(uint8_t *sig_input, size_t prefix_len, const uint8_t *pt, size_t pt_len,
               const uint8_t *aad, size_t aad_len, const uint8_t nonce[12],
               const uint8_t key[32], const uint8_t sk[64], uint8_t sig_out[64]);

/*
 * The handshake's unavoidable crypto, both sides (§3): what a minimal
 * implementation of the same protocol must compute. Inputs are prepared by
 * bare_handshake_prepare with the sizes of a real handshake (agent id
 * length, 32-byte nonce, ephemeral key present).
 */
typedef struct bare_handshake_inputs {
    uint8_t agent_sk[64], agent_pk[32];     /* long-term Ed25519 keys */
    uint8_t server_sk[64], server_pk[32];
    /* auth_input = enc("aegis-v1/auth", agent_id, pk, u64 ts, nonce, E) */
    uint8_t auth_input[512];
    size_t auth_input_len, auth_nonce_at, auth_eph_at;
    /* ok_input = enc("aegis-v1/auth-ok", th, sid, token, B, server_pk, ts, exp, hb) */
    uint8_t ok_input[320];
    size_t ok_input_len, ok_th_at, ok_token_at, ok_backend_at;
    /* keys_input = enc("aegis-v1/keys", th, sid, token, B), hashed to th2 */
    uint8_t keys_input[256];
    size_t keys_input_len, keys_th_at, keys_token_at, keys_backend_at;
} bare_handshake_inputs;

void bare_handshake_prepare(bare_handshake_inputs *in, size_t agent_id_len);

/*
 * One complete handshake, both sides, the crypto only:
 *   randomness: 128 bytes (nonce, ephemeral secret e, backend secret b, token)
 *   agent:   E = X25519(e, base); sign(auth_input);  th = SHA256(transcript)
 *   gateway: verify(auth_input); B = X25519(b, base); A_x = pk→curve25519(A)
 *            (this also checks A is a prime-order point);
 *            dh1 = X25519(b, A_x); dh2 = X25519(b, E); th = SHA256(transcript);
 *            th2 = SHA256(keys input); okm = HKDF(dh1‖dh2, th2, info, 64)
 *            (HMAC-SHA256: extract + 2 expand blocks); sign(ok_input)
 *   agent:   verify(ok_input); a_x = sk→curve25519(a); dh1 = X25519(a_x, B);
 *            dh2 = X25519(e, B); th2 = SHA256(keys input); okm = HKDF(…)
 * Writes both sides' 64-byte okm; returns 0 when they match and every step
 * passed, else a negative step number.
 */
int bare_handshake(bare_handshake_inputs *in, uint8_t okm_gateway[64], uint8_t okm_agent[64]);

/*
 * The gateway's share of a handshake as aegis-bench's headline counts it:
 * Ed25519 verify of the auth request, X25519 ×2 (dh1, dh2), HKDF-SHA256
 * (64 bytes), Ed25519 sign of auth_ok. The agent's request, the backend
 * key pair and the transcript hash are prepared once by
 * bare_gateway_handshake_prepare (not timed). Returns 0, or a negative step.
 */
typedef struct bare_gateway_handshake {
    bare_handshake_inputs in;
    uint8_t agent_sig[64];
    uint8_t a_x[32];            /* the agent's key as a curve25519 point */
    uint8_t b[32];              /* the backend secret */
    uint8_t th2[32];
} bare_gateway_handshake;

int bare_gateway_handshake_prepare(bare_gateway_handshake *h, size_t agent_id_len);
int bare_gateway_handshake_run(bare_gateway_handshake *h, uint8_t okm[64]);

/*
 * One secure message's bare crypto, prepared once with the core's layout
 * (a 36-byte id, the given channel, type "event", plaintext of pt_len
 * bytes): bare_message_seal() is what the sender must compute, and
 * bare_message_open() what the receiver must (for the message just
 * sealed). Both reuse the same key, nonce and buffers, so a timed loop
 * measures the calls alone. NULL when out of memory.
 */
typedef struct bare_message bare_message;

bare_message *bare_message_new(size_t pt_len, const char *channel);
void bare_message_seal(bare_message *m);
int bare_message_open(bare_message *m);   /* 0 when both checks pass */
void bare_message_free(bare_message *m);

#ifdef __cplusplus
}
#endif

#endif /* BARE_CRYPTO_H */
