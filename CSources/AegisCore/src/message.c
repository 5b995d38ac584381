/*
 * message.c — §4 secure messages (seal / open, single and batched) and the
 * §5 plaintext rules for acks and heartbeats.
 *
 * Both directions build the signature input
 *     enc("aegis-v1/sig", aad, nonce, payload)
 * in one caller-owned buffer with the ciphertext at its end, so that the
 * ciphertext is written (seal) or base64-decoded (open) exactly once, where
 * the AEAD and Ed25519 both read it. No other copy of the payload is made.
 */
#include <sodium.h>

#include "internal.h"
#include "json.h"

static const char *const type_names[] = {
    [AEGIS_MSG_REQUEST] = "request", [AEGIS_MSG_RESPONSE] = "response",
    [AEGIS_MSG_EVENT] = "event",     [AEGIS_MSG_HEARTBEAT] = "heartbeat",
    [AEGIS_MSG_ACK] = "ack",
};
#define TYPE_COUNT 5

const char *aegis_message_type_name(aegis_message_type t) {
    return (unsigned)t < TYPE_COUNT ? type_names[t] : NULL;
}

/* aad: label, session id, dir, id, type (≤ 9), channel, ref, timestamp. */
#define AAD_MAX (4 + 12 + 4 + AEGIS_SESSION_ID_LEN + 4 + 4 + 4 + AEGIS_ID_MAX + 4 + 9 + \
                 4 + AEGIS_CHANNEL_MAX + 4 + AEGIS_ID_MAX + 12)
/* Signature input before the ciphertext: label, enc(aad), enc(nonce), u32 length. */
#define SIG_PREFIX_MAX (4 + 12 + 4 + AAD_MAX + 4 + AEGIS_MSG_NONCE_BYTES + 4)
#define JSON_OVERHEAD (128 + AEGIS_ID_MAX + 9 + AEGIS_CHANNEL_MAX + AEGIS_ID_MAX + 19 + 16 + 88)

static bool is_reserved_channel(const char *c, size_t n) {
    return n >= 6 && memcmp(c, "aegis.", 6) == 0;
}

static bool channel_is(const char *c, size_t n, const char *want) {
    size_t w = strlen(want);
    return n == w && memcmp(c, want, w) == 0;
}

/* The ref rule and the reserved-channel rule (§4, §5) in one place. */
static aegis_status check_rules(aegis_message_type type, const char *channel, size_t channel_len,
                                bool has_ref) {
    switch (type) {
    case AEGIS_MSG_REQUEST:
    case AEGIS_MSG_EVENT:
        if (has_ref) return AEGIS_E_REF_RULE;
        break;
    case AEGIS_MSG_RESPONSE:
    case AEGIS_MSG_ACK:
        if (!has_ref) return AEGIS_E_REF_RULE;
        break;
    case AEGIS_MSG_HEARTBEAT:
        break;
    }
    if (type == AEGIS_MSG_HEARTBEAT)
        return channel_is(channel, channel_len, "aegis.heartbeat") ? AEGIS_OK : AEGIS_E_CHANNEL_RULE;
    if (type == AEGIS_MSG_ACK)
        return channel_is(channel, channel_len, "aegis.ack") ? AEGIS_OK : AEGIS_E_CHANNEL_RULE;
    return is_reserved_channel(channel, channel_len) ? AEGIS_E_CHANNEL_RULE : AEGIS_OK;
}

/* Writes enc("aegis-v1/sig") ‖ u32(aad_len) ‖ aad ‖ enc(nonce) ‖ u32(ct_len) and
 * returns its length; *aad_at is where the aad starts. */
static size_t sig_prefix(uint8_t *out, const aegis_session *s, bool up,
                         const char *id, size_t id_len, aegis_message_type type,
                         const char *channel, size_t channel_len,
                         const char *ref, size_t ref_len, uint64_t timestamp,
                         const uint8_t nonce[12], size_t ct_len, size_t *aad_at,
                         size_t *aad_len) {
    out_buf o;
    ob_init(&o, out, SIG_PREFIX_MAX);
    ob_enc(&o, "aegis-v1/sig", 12);
    size_t len_at = o.len;
    ob_put(&o, "\0\0\0\0", 4);
    *aad_at = o.len;
    ob_enc(&o, "aegis-v1/msg", 12);
    ob_enc(&o, s->session_id, AEGIS_SESSION_ID_LEN);
    ob_enc(&o, up ? "up" : "down", up ? 2 : 4);
    ob_enc(&o, id, id_len);
    ob_enc(&o, type_names[type], strlen(type_names[type]));
    ob_enc(&o, channel, channel_len);
    ob_enc(&o, ref, ref_len);
    ob_enc_u64(&o, timestamp);
    *aad_len = o.len - *aad_at;
    out[len_at] = (uint8_t)(*aad_len >> 24);
    out[len_at + 1] = (uint8_t)(*aad_len >> 16);
    out[len_at + 2] = (uint8_t)(*aad_len >> 8);
    out[len_at + 3] = (uint8_t)*aad_len;
    ob_enc(&o, nonce, AEGIS_MSG_NONCE_BYTES);
    uint8_t l[4] = { (uint8_t)(ct_len >> 24), (uint8_t)(ct_len >> 16), (uint8_t)(ct_len >> 8),
                     (uint8_t)ct_len };
    ob_put(&o, l, 4);
    return o.len;
}

/* ======================================================================== */
/* seal                                                                     */

size_t aegis_seal_json_max(size_t pt_len) {
    return JSON_OVERHEAD + aegis_b64_encoded_len(pt_len + AEGIS_TAG_BYTES);
}

size_t aegis_seal_scratch_size(size_t pt_len) {
    return SIG_PREFIX_MAX + pt_len + AEGIS_TAG_BYTES;
}

aegis_status aegis_seal(const aegis_session *s, const aegis_message_header *h,
                        const uint8_t *pt, size_t pt_len, const uint8_t *test_nonce,
                        uint8_t *scratch, size_t scratch_cap,
                        char *json_out, size_t json_cap, size_t *json_len) {
    if (s == NULL || h == NULL || (pt == NULL && pt_len) || (unsigned)h->type >= TYPE_COUNT ||
        !aegis_is_valid_id(h->id, h->id_len) ||
        !aegis_is_valid_channel(h->channel, h->channel_len) ||
        h->timestamp > (uint64_t)INT64_MAX || pt_len > UINT32_MAX - AEGIS_TAG_BYTES)
        return AEGIS_E_INVALID_ARGUMENT;
    bool has_ref = h->ref != NULL && h->ref_len > 0;
    if (has_ref && !aegis_is_valid_id(h->ref, h->ref_len)) return AEGIS_E_INVALID_ARGUMENT;
    if (check_rules(h->type, h->channel, h->channel_len, has_ref) != AEGIS_OK)
        return AEGIS_E_INVALID_ARGUMENT;
    if (scratch_cap < aegis_seal_scratch_size(pt_len) || json_cap < aegis_seal_json_max(pt_len))
        return AEGIS_E_BUFFER_TOO_SMALL;

    bool up = s->role == AEGIS_ROLE_AGENT;
    const uint8_t *key = up ? s->keys : s->keys + 32;
    uint8_t nonce[AEGIS_MSG_NONCE_BYTES];
    if (test_nonce) memcpy(nonce, test_nonce, sizeof nonce);
    else randombytes_buf(nonce, sizeof nonce);

    size_t ct_len = pt_len + AEGIS_TAG_BYTES, aad_at, aad_len;
    size_t prefix = sig_prefix(scratch, s, up, h->id, h->id_len, h->type, h->channel,
                               h->channel_len, has_ref ? h->ref : NULL, has_ref ? h->ref_len : 0,
                               h->timestamp, nonce, ct_len, &aad_at, &aad_len);
    uint8_t *ct = scratch + prefix;
    crypto_aead_chacha20poly1305_ietf_encrypt(ct, NULL, pt, pt_len, scratch + aad_at, aad_len,
                                              NULL, nonce, key);
    uint8_t sig[AEGIS_SIGNATURE_BYTES];
    identity_sign(s->signer, sig, scratch, prefix + ct_len);

    out_buf o;
    ob_init(&o, json_out, json_cap);
    ob_str(&o, "{\"id\":\"");
    ob_put(&o, h->id, h->id_len);
    ob_str(&o, "\",\"type\":\"");
    ob_str(&o, type_names[h->type]);
    ob_str(&o, "\",\"channel\":\"");
    ob_put(&o, h->channel, h->channel_len);
    if (has_ref) {
        ob_str(&o, "\",\"ref\":\"");
        ob_put(&o, h->ref, h->ref_len);
    }
    ob_str(&o, "\",\"payload\":\"");
    ob_b64(&o, ct, ct_len);
    ob_str(&o, "\",\"timestamp\":");
    ob_u64_dec(&o, h->timestamp);
    ob_str(&o, ",\"nonce\":\"");
    ob_b64(&o, nonce, sizeof nonce);
    ob_str(&o, "\",\"signature\":\"");
    ob_b64(&o, sig, sizeof sig);
    ob_str(&o, "\"}");
    if (!o.ok) return AEGIS_E_BUFFER_TOO_SMALL;
    *json_len = o.len;
    return AEGIS_OK;
}

void aegis_seal_batch(aegis_seal_job *jobs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        aegis_seal_job *j = &jobs[i];
        j->status = aegis_seal(j->session, &j->header, j->plaintext, j->plaintext_len, NULL,
                               j->scratch, j->scratch_cap, j->json, j->json_cap, &j->json_len);
    }
}

/* ======================================================================== */
/* ack plaintext                                                            */

size_t aegis_ack_plaintext_max(size_t n) {
    return 10 + n * (AEGIS_ID_MAX + 3);
}

aegis_status aegis_ack_plaintext_build(const aegis_id *ids, size_t n, uint8_t *out, size_t cap,
                                       size_t *out_len) {
    if (ids == NULL || n == 0 || n > AEGIS_ACK_IDS_MAX) return AEGIS_E_INVALID_ARGUMENT;
    out_buf o;
    ob_init(&o, out, cap);
    ob_str(&o, "{\"ids\":[");
    for (size_t i = 0; i < n; i++) {
        if (!aegis_is_valid_id(ids[i].bytes, ids[i].len)) return AEGIS_E_INVALID_ARGUMENT;
        ob_str(&o, i ? ",\"" : "\"");
        ob_put(&o, ids[i].bytes, ids[i].len);
        ob_str(&o, "\"");
    }
    ob_str(&o, "]}");
    if (!o.ok) return AEGIS_E_BUFFER_TOO_SMALL;
    *out_len = o.len;
    return AEGIS_OK;
}

static const json_field_spec ack_spec[1] = { { "ids", JSON_FIELD_ARRAY } };

/* Walks {"ids":[…]}: 1–1024 strings of id syntax. Stores up to cap of them
 * in ids (may be NULL) and the first in *first. */
static aegis_status ack_walk(const uint8_t *pt, size_t len, aegis_id *ids, size_t cap,
                             size_t *count, aegis_id *first) {
    json_field f;
    if (json_read_object((const char *)pt, len, ack_spec, 1, &f) != AEGIS_OK || !f.present)
        return AEGIS_E_PLAINTEXT;
    json_array_iter it;
    json_array_begin(&it, f.raw, f.raw_len);
    size_t n = 0;
    for (;;) {
        const char *raw;
        size_t raw_len;
        bool esc, done;
        if (json_array_next_string(&it, &raw, &raw_len, &esc, &done) != AEGIS_OK)
            return AEGIS_E_PLAINTEXT;
        if (done) break;
        if (n == AEGIS_ACK_IDS_MAX) return AEGIS_E_PLAINTEXT;
        aegis_id id;
        size_t id_len;
        if (json_unescape(raw, raw_len, id.bytes, sizeof id.bytes, &id_len) != AEGIS_OK ||
            !aegis_is_valid_id(id.bytes, id_len))
            return AEGIS_E_PLAINTEXT;
        id.len = (uint8_t)id_len;
        if (n == 0 && first) *first = id;
        if (ids && n < cap) ids[n] = id;
        n++;
    }
    if (n == 0) return AEGIS_E_PLAINTEXT;
    *count = n;
    return AEGIS_OK;
}

aegis_status aegis_ack_plaintext_parse(const uint8_t *pt, size_t len, aegis_id *ids, size_t cap,
                                       size_t *n) {
    aegis_status st = ack_walk(pt, len, ids, cap, n, NULL);
    if (st == AEGIS_OK && *n > cap) return AEGIS_E_BUFFER_TOO_SMALL;
    return st;
}

/* ======================================================================== */
/* open                                                                     */

enum { M_ID, M_TYPE, M_CHANNEL, M_REF, M_PAYLOAD, M_TIMESTAMP, M_NONCE, M_SIGNATURE, M_N };

static const json_field_spec message_spec[M_N] = {
    [M_ID] = { "id", JSON_FIELD_STRING },
    [M_TYPE] = { "type", JSON_FIELD_STRING },
    [M_CHANNEL] = { "channel", JSON_FIELD_STRING },
    [M_REF] = { "ref", JSON_FIELD_STRING },
    [M_PAYLOAD] = { "payload", JSON_FIELD_STRING },
    [M_TIMESTAMP] = { "timestamp", JSON_FIELD_UINT },
    [M_NONCE] = { "nonce", JSON_FIELD_STRING },
    [M_SIGNATURE] = { "signature", JSON_FIELD_STRING },
};

size_t aegis_open_buffer_size(size_t json_len) {
    /* prefix, the decoded payload, and a plaintext region large enough to
     * hold an escaped payload's unescaped text on the slow path. */
    return SIG_PREFIX_MAX + aegis_b64_decoded_max(json_len) + json_len + 16;
}

static aegis_status parse_type(const json_field *f, aegis_message_type *t) {
    char name[16];
    size_t n;
    aegis_status st = field_text(f, name, sizeof name, &n);
    if (st != AEGIS_OK) return st == AEGIS_E_FIELD_EMPTY ? st : AEGIS_E_FIELD_SYNTAX;
    for (int i = 0; i < TYPE_COUNT; i++)
        if (strcmp(name, type_names[i]) == 0) {
            *t = (aegis_message_type)i;
            return AEGIS_OK;
        }
    return AEGIS_E_FIELD_SYNTAX;
}

aegis_status aegis_open(aegis_session *s, const char *json, size_t len, uint64_t now,
                        uint8_t *buf, size_t buf_cap, aegis_message *m) {
    json_field f[M_N];
    aegis_status st;
    size_t n;

    if (s == NULL || m == NULL || (json == NULL && len)) return AEGIS_E_INVALID_ARGUMENT;
    m->id_len = m->channel_len = m->ref_len = 0;
    m->plaintext = NULL;
    m->plaintext_len = 0;
    m->duplicate = false;
    m->ciphertext = NULL;
    m->ciphertext_len = 0;
    if (buf_cap < aegis_open_buffer_size(len)) return AEGIS_E_BUFFER_TOO_SMALL;

    /* 1. syntax */
    if ((st = json_read_object(json, len, message_spec, M_N, f)) != AEGIS_OK) return st;
    if (!f[M_ID].present || !f[M_TYPE].present || !f[M_CHANNEL].present ||
        !f[M_PAYLOAD].present || !f[M_TIMESTAMP].present || !f[M_NONCE].present ||
        !f[M_SIGNATURE].present)
        return AEGIS_E_FIELD_MISSING;
    if ((st = field_text(&f[M_ID], m->id, sizeof m->id, &m->id_len)) != AEGIS_OK) return st;
    if (!aegis_is_valid_id(m->id, m->id_len)) return AEGIS_E_FIELD_SYNTAX;
    if ((st = parse_type(&f[M_TYPE], &m->type)) != AEGIS_OK) return st;
    if ((st = field_text(&f[M_CHANNEL], m->channel, sizeof m->channel, &m->channel_len)) != AEGIS_OK)
        return st;
    if (!aegis_is_valid_channel(m->channel, m->channel_len)) return AEGIS_E_FIELD_SYNTAX;
    m->ref[0] = '\0';
    if (f[M_REF].present) {
        if ((st = field_text(&f[M_REF], m->ref, sizeof m->ref, &m->ref_len)) != AEGIS_OK) return st;
        if (!aegis_is_valid_id(m->ref, m->ref_len)) return AEGIS_E_FIELD_SYNTAX;
    }
    if ((st = check_rules(m->type, m->channel, m->channel_len, f[M_REF].present)) != AEGIS_OK)
        return st;
    m->timestamp = f[M_TIMESTAMP].uint_value;
    uint8_t nonce[AEGIS_MSG_NONCE_BYTES], sig[AEGIS_SIGNATURE_BYTES];
    if ((st = field_b64(&f[M_NONCE], nonce, 12, 12, &n)) != AEGIS_OK) return st;
    if ((st = field_b64(&f[M_SIGNATURE], sig, 64, 64, &n)) != AEGIS_OK) return st;

    /* The opener's direction is the peer's: a gateway opens "up". */
    bool up = s->role == AEGIS_ROLE_GATEWAY;
    size_t aad_at, aad_len;
    size_t prefix = sig_prefix(buf, s, up, m->id, m->id_len, m->type, m->channel, m->channel_len,
                               m->ref, m->ref_len, m->timestamp, nonce, 0, &aad_at, &aad_len);
    uint8_t *ct = buf + prefix;
    uint8_t *pt_region = buf + SIG_PREFIX_MAX + aegis_b64_decoded_max(len);
    size_t ct_cap = (size_t)(pt_region - ct), ct_len;
    const char *text = f[M_PAYLOAD].raw;
    size_t text_len = f[M_PAYLOAD].raw_len;
    if (text_len == 0) return AEGIS_E_FIELD_EMPTY;
    if (f[M_PAYLOAD].has_escapes) {
        /* Slow path: unescape into the (still unused) plaintext region. */
        if (json_unescape(text, text_len, (char *)pt_region, len, &text_len) != AEGIS_OK)
            return AEGIS_E_FIELD_ENCODING;
        text = (const char *)pt_region;
    }
    if (aegis_b64_decode(text, text_len, ct, ct_cap, &ct_len) != AEGIS_OK ||
        ct_len < AEGIS_TAG_BYTES || ct_len > UINT32_MAX)
        return AEGIS_E_FIELD_ENCODING;
    ct[-4] = (uint8_t)(ct_len >> 24);
    ct[-3] = (uint8_t)(ct_len >> 16);
    ct[-2] = (uint8_t)(ct_len >> 8);
    ct[-1] = (uint8_t)ct_len;

    /* 2. clock */
    uint64_t diff = now > m->timestamp ? now - m->timestamp : m->timestamp - now;
    if (diff > s->skew) return AEGIS_E_CLOCK_SKEW;

    /* 3. AEAD: cheap, and only the session's holder can pass it */
    const uint8_t *key = up ? s->keys : s->keys + 32;
    unsigned long long pt_len = 0;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(pt_region, &pt_len, NULL, ct, ct_len,
                                                  buf + aad_at, aad_len, nonce, key) != 0)
        return AEGIS_E_DECRYPT;

    /* 4. Ed25519, the expensive step, last */
    if (crypto_sign_verify_detached(sig, buf, prefix + ct_len, s->peer_key) != 0)
        return AEGIS_E_SIGNATURE;

    /* 5. plaintext rules of §5 */
    if (m->type == AEGIS_MSG_ACK) {
        aegis_id first;
        size_t count;
        if (ack_walk(pt_region, pt_len, NULL, 0, &count, &first) != AEGIS_OK ||
            first.len != m->ref_len || memcmp(first.bytes, m->ref, m->ref_len) != 0)
            return AEGIS_E_PLAINTEXT;
    } else if (m->type == AEGIS_MSG_HEARTBEAT && pt_len > 0) {
        if (json_read_object((const char *)pt_region, pt_len, NULL, 0, NULL) != AEGIS_OK)
            return AEGIS_E_PLAINTEXT;
    }

    m->plaintext = pt_region;
    m->plaintext_len = pt_len;
    memcpy(m->nonce, nonce, sizeof nonce);
    memcpy(m->signature, sig, sizeof sig);
    m->ciphertext = ct;
    m->ciphertext_len = ct_len;
    uint64_t expires = m->timestamp > UINT64_MAX - s->skew ? UINT64_MAX : m->timestamp + s->skew;
    dedupe_check_and_remember(&s->seen, m->id, m->id_len, expires, now, &m->duplicate);
    return AEGIS_OK;
}

void aegis_open_batch(aegis_open_job *jobs, size_t n, uint64_t now) {
    for (size_t i = 0; i < n; i++) {
        aegis_open_job *j = &jobs[i];
        j->status = aegis_open(j->session, j->json, j->json_len, now, j->buf, j->buf_cap, &j->msg);
    }
}
