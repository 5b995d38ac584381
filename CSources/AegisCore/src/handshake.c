/*
 * handshake.c — §3: the auth request, auth_ok / auth_error and the session
 * key schedule, for both roles.
 */
#include <sodium.h>
#include <stdlib.h>

#include "internal.h"
#include "json.h"

/* Largest auth_input: label, agent id, key, timestamp, nonce, ephemeral key. */
#define AUTH_INPUT_MAX (4 + 13 + 4 + AEGIS_AGENT_ID_MAX + 4 + 32 + 12 + 4 + \
                        AEGIS_AUTH_NONCE_MAX + 4 + 32)

static size_t auth_input(uint8_t out[AUTH_INPUT_MAX], const aegis_auth_request *r) {
    out_buf o;
    ob_init(&o, out, AUTH_INPUT_MAX);
    ob_enc(&o, "aegis-v1/auth", 13);
    ob_enc(&o, r->agent_id, r->agent_id_len);
    ob_enc(&o, r->public_key, AEGIS_PUBLIC_KEY_BYTES);
    ob_enc_u64(&o, r->timestamp);
    ob_enc(&o, r->nonce, r->nonce_len);
    ob_enc(&o, r->ephemeral_key, r->has_ephemeral_key ? AEGIS_X25519_BYTES : 0);
    return o.len;
}

/* th = SHA256(enc("aegis-v1/transcript", auth_input, agent_signature)) */
static void transcript_hash(uint8_t th[32], const aegis_auth_request *r) {
    uint8_t in[AUTH_INPUT_MAX];
    uint8_t buf[4 + 19 + 4 + AUTH_INPUT_MAX + 4 + 64];
    size_t in_len = auth_input(in, r);
    out_buf o;
    ob_init(&o, buf, sizeof buf);
    ob_enc(&o, "aegis-v1/transcript", 19);
    ob_enc(&o, in, in_len);
    ob_enc(&o, r->signature, AEGIS_SIGNATURE_BYTES);
    crypto_hash_sha256(th, buf, o.len);
}

/* th2 = SHA256(enc("aegis-v1/keys", th, session_id, session_token, backend_key));
 * okm = HKDF(dh1 ‖ dh2, th2, "aegis-v1/session-keys", 64). */
static void session_okm(uint8_t okm[64], const uint8_t th[32], const char *session_id,
                        const uint8_t token[32], const uint8_t backend_key[32],
                        const uint8_t *ikm, size_t ikm_len) {
    uint8_t buf[4 + 13 + 4 + 32 + 4 + 36 + 4 + 32 + 4 + 32];
    uint8_t th2[32];
    out_buf o;
    ob_init(&o, buf, sizeof buf);
    ob_enc(&o, "aegis-v1/keys", 13);
    ob_enc(&o, th, 32);
    ob_enc(&o, session_id, AEGIS_SESSION_ID_LEN);
    ob_enc(&o, token, AEGIS_SESSION_TOKEN_BYTES);
    ob_enc(&o, backend_key, AEGIS_X25519_BYTES);
    crypto_hash_sha256(th2, buf, o.len);
    hkdf_sha256(okm, 64, th2, sizeof th2, ikm, ikm_len, "aegis-v1/session-keys");
    sodium_memzero(buf, sizeof buf); /* holds the session token */
}

typedef struct auth_ok_fields {
    const uint8_t *th;
    const char *session_id;
    const uint8_t *token;
    const uint8_t *backend_key;
    const uint8_t *server_key;
    uint64_t timestamp, expires_at, heartbeat_interval;
} auth_ok_fields;

#define OK_INPUT_MAX (4 + 16 + 4 + 32 + 4 + 36 + 4 + 32 + 4 + 32 + 4 + 32 + 3 * 12)

static size_t ok_input(uint8_t out[OK_INPUT_MAX], const auth_ok_fields *f) {
    out_buf o;
    ob_init(&o, out, OK_INPUT_MAX);
    ob_enc(&o, "aegis-v1/auth-ok", 16);
    ob_enc(&o, f->th, 32);
    ob_enc(&o, f->session_id, AEGIS_SESSION_ID_LEN);
    ob_enc(&o, f->token, AEGIS_SESSION_TOKEN_BYTES);
    ob_enc(&o, f->backend_key, AEGIS_X25519_BYTES);
    ob_enc(&o, f->server_key, AEGIS_PUBLIC_KEY_BYTES);
    ob_enc_u64(&o, f->timestamp);
    ob_enc_u64(&o, f->expires_at);
    ob_enc_u64(&o, f->heartbeat_interval);
    return o.len;
}

static bool is_int63(uint64_t v) { return v <= (uint64_t)INT64_MAX; }

/* ======================================================================== */
/* Gateway side                                                             */

enum { AR_AGENT_ID, AR_PUBLIC_KEY, AR_TIMESTAMP, AR_NONCE, AR_EPHEMERAL, AR_SIGNATURE, AR_N };

static const json_field_spec auth_request_spec[AR_N] = {
    [AR_AGENT_ID] = { "agent_id", JSON_FIELD_STRING },
    [AR_PUBLIC_KEY] = { "public_key", JSON_FIELD_STRING },
    [AR_TIMESTAMP] = { "timestamp", JSON_FIELD_UINT },
    [AR_NONCE] = { "nonce", JSON_FIELD_STRING },
    [AR_EPHEMERAL] = { "ephemeral_key", JSON_FIELD_STRING },
    [AR_SIGNATURE] = { "signature", JSON_FIELD_STRING },
};

aegis_status aegis_auth_request_check(const char *json, size_t len,
                                      const aegis_auth_context *ctx,
                                      aegis_auth_request *req) {
    json_field f[AR_N];
    size_t n;
    aegis_status st;

    memset(req, 0, sizeof *req);
    if ((st = json_read_object(json, len, auth_request_spec, AR_N, f)) != AEGIS_OK) return st;
    if (!f[AR_AGENT_ID].present || !f[AR_PUBLIC_KEY].present || !f[AR_TIMESTAMP].present ||
        !f[AR_NONCE].present || !f[AR_SIGNATURE].present)
        return AEGIS_E_FIELD_MISSING;

    if ((st = field_text(&f[AR_AGENT_ID], req->agent_id, sizeof req->agent_id,
                         &req->agent_id_len)) != AEGIS_OK)
        return st;
    if (!aegis_is_valid_agent_id(req->agent_id, req->agent_id_len)) return AEGIS_E_FIELD_SYNTAX;
    if ((st = field_b64(&f[AR_PUBLIC_KEY], req->public_key, 32, 32, &n)) != AEGIS_OK) return st;
    if (!public_key_to_x25519(req->public_key, req->public_key_x25519)) return AEGIS_E_BAD_POINT;
    req->timestamp = f[AR_TIMESTAMP].uint_value;
    if ((st = field_b64(&f[AR_NONCE], req->nonce, AEGIS_AUTH_NONCE_MIN, AEGIS_AUTH_NONCE_MAX,
                        &req->nonce_len)) != AEGIS_OK)
        return st;
    if (f[AR_EPHEMERAL].present) {
        if ((st = field_b64(&f[AR_EPHEMERAL], req->ephemeral_key, 32, 32, &n)) != AEGIS_OK)
            return st;
        req->has_ephemeral_key = true;
    }
    if ((st = field_b64(&f[AR_SIGNATURE], req->signature, 64, 64, &n)) != AEGIS_OK) return st;

    if (ctx->header_agent_id == NULL || ctx->header_public_key == NULL ||
        ctx->header_agent_id_len != req->agent_id_len ||
        memcmp(ctx->header_agent_id, req->agent_id, req->agent_id_len) != 0 ||
        memcmp(ctx->header_public_key, req->public_key, AEGIS_PUBLIC_KEY_BYTES) != 0)
        return AEGIS_E_HEADER_MISMATCH;
    if (ctx->require_ephemeral && !req->has_ephemeral_key) return AEGIS_E_EPHEMERAL_REQUIRED;

    uint64_t skew = ctx->skew ? ctx->skew : AEGIS_DEFAULT_SKEW;
    uint64_t diff = ctx->now > req->timestamp ? ctx->now - req->timestamp
                                              : req->timestamp - ctx->now;
    if (diff > skew) return AEGIS_E_CLOCK_SKEW;
    return AEGIS_OK;
}

aegis_status aegis_auth_request_verify(const aegis_auth_request *req) {
    uint8_t in[AUTH_INPUT_MAX];
    size_t in_len = auth_input(in, req);
    return crypto_sign_verify_detached(req->signature, in, in_len, req->public_key) == 0
               ? AEGIS_OK
               : AEGIS_E_SIGNATURE;
}

size_t aegis_auth_ok_json_max(void) {
    /* Field names and punctuation (< 200) plus the values at their widest. */
    return 200 + AEGIS_SESSION_ID_LEN + 43 + 3 * 44 + 88 + 3 * 19;
}

static void write_auth_ok_json(out_buf *o, const auth_ok_fields *f, const uint8_t sig[64]) {
    ob_str(o, "{\"type\":\"auth_ok\",\"session_id\":\"");
    ob_put(o, f->session_id, AEGIS_SESSION_ID_LEN);
    ob_str(o, "\",\"session_token\":\"");
    ob_b64u(o, f->token, AEGIS_SESSION_TOKEN_BYTES);
    ob_str(o, "\",\"backend_key\":\"");
    ob_b64(o, f->backend_key, AEGIS_X25519_BYTES);
    ob_str(o, "\",\"server_key\":\"");
    ob_b64(o, f->server_key, AEGIS_PUBLIC_KEY_BYTES);
    ob_str(o, "\",\"timestamp\":");
    ob_u64_dec(o, f->timestamp);
    ob_str(o, ",\"expires_at\":");
    ob_u64_dec(o, f->expires_at);
    ob_str(o, ",\"heartbeat_interval\":");
    ob_u64_dec(o, f->heartbeat_interval);
    ob_str(o, ",\"signature\":\"");
    ob_b64(o, sig, AEGIS_SIGNATURE_BYTES);
    ob_str(o, "\"}");
}

aegis_status aegis_gateway_accept(const aegis_identity *server,
                                  const aegis_auth_request *req,
                                  const aegis_auth_ok_params *p,
                                  aegis_session **session_out,
                                  uint8_t session_token_sha256[AEGIS_SHA256_BYTES],
                                  char *json_out, size_t json_cap, size_t *json_len) {
    if (server == NULL || req == NULL || p == NULL || session_out == NULL ||
        p->session_id == NULL || !is_lower_uuid(p->session_id, strlen(p->session_id)) ||
        !is_int63(p->timestamp) || !is_int63(p->expires_at) ||
        !is_int63(p->heartbeat_interval) || p->expires_at <= p->timestamp ||
        p->heartbeat_interval == 0)
        return AEGIS_E_INVALID_ARGUMENT;
    if (json_cap < aegis_auth_ok_json_max()) return AEGIS_E_BUFFER_TOO_SMALL;

    /* Secrets of this handshake, each in a secure slot:
     * b ‖ token, then dh1 ‖ dh2, then the okm. */
    uint8_t *bt = secmem_alloc(), *ikm = secmem_alloc(), *okm = secmem_alloc();
    aegis_status st = AEGIS_E_NOMEM;
    if (bt == NULL || ikm == NULL || okm == NULL) goto done;
    uint8_t *b = bt, *token = bt + 32;
    uint8_t backend_key[32], th[32];

    if (p->test_backend_secret) memcpy(b, p->test_backend_secret, 32);
    else randombytes_buf(b, 32);
    if (p->test_session_token) memcpy(token, p->test_session_token, 32);
    else randombytes_buf(token, 32);
    crypto_scalarmult_base(backend_key, b);

    /* libsodium's scalarmult returns -1 for an all-zero output (§3.3). */
    st = AEGIS_E_KEY_EXCHANGE;
    if (crypto_scalarmult(ikm, b, req->public_key_x25519) != 0) goto done;
    size_t ikm_len = 32;
    if (req->has_ephemeral_key) {
        if (crypto_scalarmult(ikm + 32, b, req->ephemeral_key) != 0) goto done;
        ikm_len = 64;
    }

    transcript_hash(th, req);
    session_okm(okm, th, p->session_id, token, backend_key, ikm, ikm_len);

    auth_ok_fields f = {
        .th = th, .session_id = p->session_id, .token = token, .backend_key = backend_key,
        .server_key = server->public_key, .timestamp = p->timestamp,
        .expires_at = p->expires_at, .heartbeat_interval = p->heartbeat_interval,
    };
    uint8_t in[OK_INPUT_MAX], sig[64];
    size_t in_len = ok_input(in, &f);
    identity_sign(server, sig, in, in_len);
    sodium_memzero(in, sizeof in);

    out_buf o;
    ob_init(&o, json_out, json_cap);
    write_auth_ok_json(&o, &f, sig);
    if (!o.ok) { st = AEGIS_E_BUFFER_TOO_SMALL; goto done; }

    if ((st = session_create(AEGIS_ROLE_GATEWAY, p->session_id, okm, server, req->public_key,
                             session_out)) != AEGIS_OK)
        goto done;
    if (session_token_sha256) crypto_hash_sha256(session_token_sha256, token, 32);
    *json_len = o.len;
    st = AEGIS_OK;
done:
    secmem_free(bt);
    secmem_free(ikm);
    secmem_free(okm);
    return st;
}

size_t aegis_auth_error_json_max(size_t message_len) {
    return 64 + 32 + 6 * message_len;
}

aegis_status aegis_auth_error_json(const char *code, const char *message, size_t message_len,
                                   char *out, size_t cap, size_t *out_len) {
    if (code == NULL || (message == NULL && message_len)) return AEGIS_E_INVALID_ARGUMENT;
    out_buf o;
    ob_init(&o, out, cap);
    ob_str(&o, "{\"type\":\"auth_error\",\"code\":\"");
    ob_json_escaped(&o, code, strlen(code));
    ob_str(&o, "\",\"message\":\"");
    ob_json_escaped(&o, message, message_len);
    ob_str(&o, "\"}");
    if (!o.ok) return AEGIS_E_BUFFER_TOO_SMALL;
    *out_len = o.len;
    return AEGIS_OK;
}

/* ======================================================================== */
/* Agent side                                                               */

struct aegis_agent_handshake {
    const aegis_identity *agent;
    uint8_t th[32];
    bool has_ephemeral;
    uint8_t *ephemeral_secret; /* secmem slot */
};

size_t aegis_auth_request_json_max(void) {
    return 128 + AEGIS_AGENT_ID_MAX + 44 + 19 + 88 + 44 + 88;
}

aegis_status aegis_agent_handshake_begin(const aegis_identity *agent,
                                         const aegis_auth_request_params *p,
                                         aegis_agent_handshake **hs_out,
                                         char *json_out, size_t json_cap, size_t *json_len) {
    if (agent == NULL || p == NULL || hs_out == NULL ||
        !aegis_is_valid_agent_id(p->agent_id, p->agent_id_len) || !is_int63(p->timestamp) ||
        (p->test_nonce && (p->test_nonce_len < AEGIS_AUTH_NONCE_MIN ||
                           p->test_nonce_len > AEGIS_AUTH_NONCE_MAX)))
        return AEGIS_E_INVALID_ARGUMENT;

    aegis_agent_handshake *hs = calloc(1, sizeof *hs);
    if (hs == NULL) return AEGIS_E_NOMEM;
    hs->ephemeral_secret = secmem_alloc();
    if (hs->ephemeral_secret == NULL) {
        free(hs);
        return AEGIS_E_NOMEM;
    }
    identity_retain(agent);
    hs->agent = agent;

    aegis_auth_request r;
    memset(&r, 0, sizeof r);
    memcpy(r.agent_id, p->agent_id, p->agent_id_len);
    r.agent_id_len = p->agent_id_len;
    memcpy(r.public_key, agent->public_key, 32);
    r.timestamp = p->timestamp;
    if (p->test_nonce) {
        memcpy(r.nonce, p->test_nonce, p->test_nonce_len);
        r.nonce_len = p->test_nonce_len;
    } else {
        randombytes_buf(r.nonce, AEGIS_AUTH_NONCE_DEFAULT);
        r.nonce_len = AEGIS_AUTH_NONCE_DEFAULT;
    }
    if (p->with_ephemeral_key) {
        if (p->test_ephemeral_secret) memcpy(hs->ephemeral_secret, p->test_ephemeral_secret, 32);
        else randombytes_buf(hs->ephemeral_secret, 32);
        crypto_scalarmult_base(r.ephemeral_key, hs->ephemeral_secret);
        r.has_ephemeral_key = true;
        hs->has_ephemeral = true;
    }

    uint8_t in[AUTH_INPUT_MAX];
    identity_sign(agent, r.signature, in, auth_input(in, &r));
    transcript_hash(hs->th, &r);

    out_buf o;
    ob_init(&o, json_out, json_cap);
    ob_str(&o, "{\"agent_id\":\"");
    ob_put(&o, r.agent_id, r.agent_id_len);
    ob_str(&o, "\",\"public_key\":\"");
    ob_b64(&o, r.public_key, 32);
    ob_str(&o, "\",\"timestamp\":");
    ob_u64_dec(&o, r.timestamp);
    ob_str(&o, ",\"nonce\":\"");
    ob_b64(&o, r.nonce, r.nonce_len);
    if (r.has_ephemeral_key) {
        ob_str(&o, "\",\"ephemeral_key\":\"");
        ob_b64(&o, r.ephemeral_key, 32);
    }
    ob_str(&o, "\",\"signature\":\"");
    ob_b64(&o, r.signature, 64);
    ob_str(&o, "\"}");
    if (!o.ok) {
        aegis_agent_handshake_free(hs);
        return AEGIS_E_BUFFER_TOO_SMALL;
    }
    *json_len = o.len;
    *hs_out = hs;
    return AEGIS_OK;
}

void aegis_agent_handshake_free(aegis_agent_handshake *hs) {
    if (hs == NULL) return;
    secmem_free(hs->ephemeral_secret);
    aegis_identity_free((aegis_identity *)hs->agent);
    sodium_memzero(hs, sizeof *hs);
    free(hs);
}

enum { AO_TYPE, AO_SESSION_ID, AO_TOKEN, AO_BACKEND, AO_SERVER, AO_TIMESTAMP, AO_EXPIRES,
       AO_HEARTBEAT, AO_SIGNATURE, AO_CODE, AO_MESSAGE, AO_N };

static const json_field_spec auth_response_spec[AO_N] = {
    [AO_TYPE] = { "type", JSON_FIELD_STRING },
    [AO_SESSION_ID] = { "session_id", JSON_FIELD_STRING },
    [AO_TOKEN] = { "session_token", JSON_FIELD_STRING },
    [AO_BACKEND] = { "backend_key", JSON_FIELD_STRING },
    [AO_SERVER] = { "server_key", JSON_FIELD_STRING },
    [AO_TIMESTAMP] = { "timestamp", JSON_FIELD_UINT },
    [AO_EXPIRES] = { "expires_at", JSON_FIELD_UINT },
    [AO_HEARTBEAT] = { "heartbeat_interval", JSON_FIELD_UINT },
    [AO_SIGNATURE] = { "signature", JSON_FIELD_STRING },
    [AO_CODE] = { "code", JSON_FIELD_ANY },
    [AO_MESSAGE] = { "message", JSON_FIELD_ANY },
};

/* Copies what it can of an auth_error's text member, for the agent's log. */
static void copy_error_text(const json_field *f, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    if (!f->present || f->raw_len < 2 || f->raw[0] != '"') return;
    char tmp[1024];
    if (json_unescape(f->raw + 1, f->raw_len - 2, tmp, sizeof tmp, &n) != AEGIS_OK) return;
    if (n > cap - 1) n = cap - 1;
    memcpy(out, tmp, n);
    out[n] = '\0';
}

aegis_status aegis_agent_handshake_finish(aegis_agent_handshake *hs,
                                          const char *json, size_t len,
                                          const uint8_t *expected_server_key,
                                          aegis_auth_ok *ok, aegis_auth_error *err,
                                          aegis_session **session_out) {
    json_field f[AO_N];
    aegis_status st;
    size_t n;
    char type[16];

    if (hs == NULL || ok == NULL || session_out == NULL) return AEGIS_E_INVALID_ARGUMENT;
    memset(ok, 0, sizeof *ok);
    if ((st = json_read_object(json, len, auth_response_spec, AO_N, f)) != AEGIS_OK) return st;
    if (!f[AO_TYPE].present) return AEGIS_E_FIELD_MISSING;
    if ((st = field_text(&f[AO_TYPE], type, sizeof type, &n)) != AEGIS_OK) return st;
    if (strcmp(type, "auth_error") == 0) {
        if (err) {
            copy_error_text(&f[AO_CODE], err->code, sizeof err->code);
            copy_error_text(&f[AO_MESSAGE], err->message, sizeof err->message);
        }
        return AEGIS_E_AUTH_REFUSED;
    }
    if (strcmp(type, "auth_ok") != 0) return AEGIS_E_FIELD_SYNTAX;
    for (int i = AO_SESSION_ID; i <= AO_SIGNATURE; i++)
        if (!f[i].present) return AEGIS_E_FIELD_MISSING;

    if ((st = field_text(&f[AO_SESSION_ID], ok->session_id, sizeof ok->session_id, &n)) != AEGIS_OK)
        return st;
    if (!is_lower_uuid(ok->session_id, n)) return AEGIS_E_FIELD_SYNTAX;
    if ((st = field_b64(&f[AO_BACKEND], ok->backend_key, 32, 32, &n)) != AEGIS_OK) return st;
    if ((st = field_b64(&f[AO_SERVER], ok->server_key, 32, 32, &n)) != AEGIS_OK) return st;
    uint8_t sig[64];
    if ((st = field_b64(&f[AO_SIGNATURE], sig, 64, 64, &n)) != AEGIS_OK) return st;
    ok->timestamp = f[AO_TIMESTAMP].uint_value;
    ok->expires_at = f[AO_EXPIRES].uint_value;
    ok->heartbeat_interval = f[AO_HEARTBEAT].uint_value;
    if (f[AO_TOKEN].raw_len == 0) return AEGIS_E_FIELD_EMPTY;

    uint8_t *token = secmem_alloc(), *ikm = secmem_alloc(), *okm = secmem_alloc();
    uint8_t *a_x = secmem_alloc();
    st = AEGIS_E_NOMEM;
    if (token == NULL || ikm == NULL || okm == NULL || a_x == NULL) goto done;
    const char *token_text = f[AO_TOKEN].raw;
    size_t token_len = f[AO_TOKEN].raw_len;
    if (f[AO_TOKEN].has_escapes) {
        /* Legal if odd JSON: unescape into secure memory (okm is free yet). */
        st = AEGIS_E_FIELD_ENCODING;
        if (json_unescape(token_text, token_len, (char *)okm, SECMEM_SLOT, &token_len) != AEGIS_OK)
            goto done;
        token_text = (const char *)okm;
    }
    if ((st = b64u_decode_secret(token_text, token_len, token, 32)) != AEGIS_OK) goto done;

    st = AEGIS_E_AUTH_EXPIRY;
    if (ok->expires_at <= ok->timestamp) goto done;

    auth_ok_fields of = {
        .th = hs->th, .session_id = ok->session_id, .token = token,
        .backend_key = ok->backend_key, .server_key = ok->server_key,
        .timestamp = ok->timestamp, .expires_at = ok->expires_at,
        .heartbeat_interval = ok->heartbeat_interval,
    };
    uint8_t in[OK_INPUT_MAX];
    size_t in_len = ok_input(in, &of);
    int bad = crypto_sign_verify_detached(sig, in, in_len, ok->server_key);
    sodium_memzero(in, sizeof in);
    st = AEGIS_E_SIGNATURE;
    if (bad) goto done;
    st = AEGIS_E_SERVER_KEY;
    if (expected_server_key && sodium_memcmp(expected_server_key, ok->server_key, 32) != 0)
        goto done;

    st = AEGIS_E_KEY_EXCHANGE;
    if (crypto_sign_ed25519_sk_to_curve25519(a_x, hs->agent->secret_key) != 0) goto done;
    if (crypto_scalarmult(ikm, a_x, ok->backend_key) != 0) goto done;
    size_t ikm_len = 32;
    if (hs->has_ephemeral) {
        if (crypto_scalarmult(ikm + 32, hs->ephemeral_secret, ok->backend_key) != 0) goto done;
        ikm_len = 64;
    }
    session_okm(okm, hs->th, ok->session_id, token, ok->backend_key, ikm, ikm_len);
    st = session_create(AEGIS_ROLE_AGENT, ok->session_id, okm, hs->agent, ok->server_key,
                        session_out);
done:
    secmem_free(token);
    secmem_free(ikm);
    secmem_free(okm);
    secmem_free(a_x);
    return st;
}
