/*
 * syntax.c — field syntax (§1, §2), enc() (§1), the bounded writer the
 * envelope builders share, and library start-up.
 */
#include <sodium.h>
#include <stdio.h>

#include "internal.h"

/* ---- start-up ----------------------------------------------------------- */

aegis_status aegis_core_init(void) {
    /* sodium_init is itself idempotent and thread-safe (returns 1 when done before). */
    return sodium_init() < 0 ? AEGIS_E_NOMEM : AEGIS_OK;
}

const char *aegis_core_version(void) {
    static char text[96];
    static atomic_int once;
    if (atomic_load(&once) == 0) {
        /* Racing writers write the same bytes; harmless. */
        snprintf(text, sizeof text, "1.0.0 (protocol v1-r2, libsodium %s)",
                 sodium_version_string());
        atomic_store(&once, 1);
    }
    return text;
}

/* ---- field syntax -------------------------------------------------------- */

/* One bit per charset: id, agent id, channel. */
enum { CS_ID = 1, CS_AGENT = 2, CS_CHANNEL = 4 };

static const uint8_t charset[256] = {
#define ALL (CS_ID | CS_AGENT | CS_CHANNEL)
    ['A'] = ALL, ['B'] = ALL, ['C'] = ALL, ['D'] = ALL, ['E'] = ALL, ['F'] = ALL,
    ['G'] = ALL, ['H'] = ALL, ['I'] = ALL, ['J'] = ALL, ['K'] = ALL, ['L'] = ALL,
    ['M'] = ALL, ['N'] = ALL, ['O'] = ALL, ['P'] = ALL, ['Q'] = ALL, ['R'] = ALL,
    ['S'] = ALL, ['T'] = ALL, ['U'] = ALL, ['V'] = ALL, ['W'] = ALL, ['X'] = ALL,
    ['Y'] = ALL, ['Z'] = ALL,
    ['a'] = ALL, ['b'] = ALL, ['c'] = ALL, ['d'] = ALL, ['e'] = ALL, ['f'] = ALL,
    ['g'] = ALL, ['h'] = ALL, ['i'] = ALL, ['j'] = ALL, ['k'] = ALL, ['l'] = ALL,
    ['m'] = ALL, ['n'] = ALL, ['o'] = ALL, ['p'] = ALL, ['q'] = ALL, ['r'] = ALL,
    ['s'] = ALL, ['t'] = ALL, ['u'] = ALL, ['v'] = ALL, ['w'] = ALL, ['x'] = ALL,
    ['y'] = ALL, ['z'] = ALL,
    ['0'] = ALL, ['1'] = ALL, ['2'] = ALL, ['3'] = ALL, ['4'] = ALL, ['5'] = ALL,
    ['6'] = ALL, ['7'] = ALL, ['8'] = ALL, ['9'] = ALL,
    ['.'] = ALL, ['_'] = ALL, [':'] = ALL, ['-'] = ALL,
    ['@'] = CS_AGENT,
    ['/'] = CS_CHANNEL,
#undef ALL
};

static bool all_in(const char *s, size_t len, size_t max, uint8_t set) {
    if (s == NULL || len == 0 || len > max) return false;
    for (size_t i = 0; i < len; i++)
        if (!(charset[(uint8_t)s[i]] & set)) return false;
    return true;
}

bool aegis_is_valid_id(const char *s, size_t len) {
    return all_in(s, len, AEGIS_ID_MAX, CS_ID);
}
bool aegis_is_valid_agent_id(const char *s, size_t len) {
    return all_in(s, len, AEGIS_AGENT_ID_MAX, CS_AGENT);
}
bool aegis_is_valid_channel(const char *s, size_t len) {
    return all_in(s, len, AEGIS_CHANNEL_MAX, CS_CHANNEL);
}

bool aegis_is_valid_public_key(const uint8_t pk[AEGIS_PUBLIC_KEY_BYTES]) {
    /* Canonical, on the curve, in the prime-order subgroup, not small order. */
    return crypto_core_ed25519_is_valid_point(pk) == 1;
}

/* y < p = 2^255 − 19 (the sign bit aside): the one property of a valid
 * point that the X25519 map does not check itself. */
static bool is_canonical_y(const uint8_t pk[32]) {
    if ((pk[31] & 0x7f) != 0x7f) return true;
    for (int i = 30; i > 0; i--)
        if (pk[i] != 0xff) return true;
    return pk[0] < 0xed;
}

bool public_key_to_x25519(const uint8_t pk[AEGIS_PUBLIC_KEY_BYTES], uint8_t x[AEGIS_X25519_BYTES]) {
    /* crypto_sign_ed25519_pk_to_curve25519 refuses small-order points,
     * points off the curve and points outside the prime-order subgroup:
     * with the canonical check it is exactly aegis_is_valid_public_key, and
     * the subgroup check (the expensive part) is paid once for both. */
    return is_canonical_y(pk) && crypto_sign_ed25519_pk_to_curve25519(x, pk) == 0;
}

bool is_lower_uuid(const char *s, size_t len) {
    if (len != AEGIS_SESSION_ID_LEN) return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

void aegis_sha256(const void *in, size_t len, uint8_t out[AEGIS_SHA256_BYTES]) {
    crypto_hash_sha256(out, in, len);
}

/* ---- enc() and the writer ---------------------------------------------- */

static void put_u32be(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_u64be(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

void ob_enc(out_buf *o, const void *field, size_t n) {
    uint8_t len[4];
    if (n > UINT32_MAX) { o->ok = false; return; }
    put_u32be(len, (uint32_t)n);
    ob_put(o, len, 4);
    ob_put(o, field, n);
}

void ob_enc_u64(out_buf *o, uint64_t v) {
    uint8_t b[12];
    put_u32be(b, 8);
    put_u64be(b + 4, v);
    ob_put(o, b, sizeof b);
}

size_t aegis_enc_bytes(uint8_t *out, size_t cap, const void *field, size_t len) {
    out_buf o;
    ob_init(&o, out, cap);
    ob_enc(&o, field, len);
    return o.ok ? o.len : 0;
}

size_t aegis_enc_u64(uint8_t *out, size_t cap, uint64_t v) {
    out_buf o;
    ob_init(&o, out, cap);
    ob_enc_u64(&o, v);
    return o.ok ? o.len : 0;
}

void ob_u64_dec(out_buf *o, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    ob_put(o, tmp + sizeof tmp - n, n);
}

void ob_b64(out_buf *o, const uint8_t *bin, size_t n) {
    size_t need = aegis_b64_encoded_len(n);
    if (!o->ok || o->cap - o->len < need) { o->ok = false; return; }
    aegis_b64_encode(bin, n, (char *)o->p + o->len);
    o->len += need;
}

void ob_b64u(out_buf *o, const uint8_t *bin, size_t n) {
    size_t need = aegis_b64u_encoded_len(n);
    if (!o->ok || o->cap - o->len < need) { o->ok = false; return; }
    aegis_b64u_encode(bin, n, (char *)o->p + o->len);
    o->len += need;
}

void ob_json_escaped(out_buf *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = { '\\', (char)c };
            ob_put(o, e, 2);
        } else if (c < 0x20) {
            char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            ob_put(o, e, 6);
        } else {
            ob_put(o, &s[i], 1);
        }
    }
}

/* ---- secrets in b64u ---------------------------------------------------- */

aegis_status b64u_decode_secret(const char *text, size_t len, uint8_t *out,
                                size_t expect_len) {
    /* libsodium's decoder runs in constant time; it accepts trailing bits,
     * so canonical form is checked by re-encoding and comparing in constant
     * time as well. */
    size_t bin_len = 0;
    char again[64];
    if (len != aegis_b64u_encoded_len(expect_len) || len + 1 > sizeof again)
        return AEGIS_E_FIELD_ENCODING;
    if (sodium_base642bin(out, expect_len, text, len, NULL, &bin_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        bin_len != expect_len)
        return AEGIS_E_FIELD_ENCODING;
    sodium_bin2base64(again, sizeof again, out, expect_len,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int same = sodium_memcmp(again, text, len);
    sodium_memzero(again, sizeof again);
    if (same != 0) {
        sodium_memzero(out, expect_len);
        return AEGIS_E_FIELD_ENCODING;
    }
    return AEGIS_OK;
}

/* ---- envelope fields ----------------------------------------------------- */

#include "json.h"

aegis_status field_text(const json_field *f, char *out, size_t cap, size_t *len) {
    if (f->raw_len == 0) return AEGIS_E_FIELD_EMPTY;
    if (!f->has_escapes) {
        if (f->raw_len > cap - 1) return AEGIS_E_FIELD_SYNTAX;
        memcpy(out, f->raw, f->raw_len);
        *len = f->raw_len;
    } else if (json_unescape(f->raw, f->raw_len, out, cap - 1, len) != AEGIS_OK) {
        return AEGIS_E_FIELD_SYNTAX;
    }
    out[*len] = '\0';
    return AEGIS_OK;
}

aegis_status field_b64(const json_field *f, uint8_t *out, size_t min, size_t max,
                       size_t *len) {
    char text[128];
    const char *src = f->raw;
    size_t src_len = f->raw_len;
    if (src_len == 0) return AEGIS_E_FIELD_EMPTY;
    if (f->has_escapes) {
        /* "\/" is a legal (if odd) way to write '/', so escapes are decoded. */
        if (json_unescape(f->raw, f->raw_len, text, sizeof text, &src_len) != AEGIS_OK)
            return AEGIS_E_FIELD_ENCODING;
        src = text;
    }
    uint8_t tmp[96];
    size_t n = 0;
    if (aegis_b64_decode(src, src_len, tmp, sizeof tmp, &n) != AEGIS_OK || n < min || n > max)
        return AEGIS_E_FIELD_ENCODING;
    memcpy(out, tmp, n);
    *len = n;
    return AEGIS_OK;
}

void hkdf_sha256(uint8_t *out, size_t out_len, const uint8_t *salt, size_t salt_len,
                 const uint8_t *ikm, size_t ikm_len, const char *info) {
    uint8_t prk[crypto_auth_hmacsha256_BYTES];
    uint8_t t[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;

    crypto_auth_hmacsha256_init(&st, salt, salt_len);
    crypto_auth_hmacsha256_update(&st, ikm, ikm_len);
    crypto_auth_hmacsha256_final(&st, prk);

    size_t done = 0;
    for (uint8_t i = 1; done < out_len; i++) {
        crypto_auth_hmacsha256_init(&st, prk, sizeof prk);
        if (i > 1) crypto_auth_hmacsha256_update(&st, t, sizeof t);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)info, strlen(info));
        crypto_auth_hmacsha256_update(&st, &i, 1);
        crypto_auth_hmacsha256_final(&st, t);
        size_t take = out_len - done < sizeof t ? out_len - done : sizeof t;
        memcpy(out + done, t, take);
        done += take;
    }
    sodium_memzero(prk, sizeof prk);
    sodium_memzero(t, sizeof t);
    sodium_memzero(&st, sizeof st);
}
