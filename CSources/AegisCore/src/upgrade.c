/*
 * upgrade.c — the request-only checks of the WebSocket upgrade (§2), in the
 * order §2 lists them. The transport parses the HTTP head; this decides.
 */
#include <strings.h>

#include "internal.h"

static bool name_is(const aegis_http_header *h, const char *name) {
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* Finds a header; *count says how often it occurs. */
static const aegis_http_header *find(const aegis_http_header *hs, size_t n, const char *name,
                                     int *count) {
    const aegis_http_header *first = NULL;
    *count = 0;
    for (size_t i = 0; i < n; i++)
        if (name_is(&hs[i], name)) {
            if (!first) first = &hs[i];
            (*count)++;
        }
    return first;
}

/* Does a comma-separated header value contain `token` (case-insensitive)? */
static bool has_token(const char *v, size_t len, const char *token) {
    size_t t = strlen(token), i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t start = i;
        while (i < len && v[i] != ',') i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) end--;
        if (end - start == t && strncasecmp(v + start, token, t) == 0) return true;
    }
    return false;
}

/* A decimal number without leading zeros; returns chars consumed, 0 if none. */
static size_t decimal(const char *s, size_t len, unsigned *out) {
    size_t i = 0;
    unsigned v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (i == 9) return 0; /* far beyond any version we will see */
        v = v * 10 + (unsigned)(s[i] - '0');
        i++;
    }
    if (i == 0 || (i > 1 && s[0] == '0')) return 0;
    *out = v;
    return i;
}

/* `Aegis-Agent/MAJOR.MINOR` optionally followed by a space and anything. */
static bool user_agent_ok(const char *v, size_t len, unsigned *minor) {
    static const char prefix[] = "Aegis-Agent/";
    size_t p = sizeof prefix - 1, n;
    unsigned major;
    if (len < p || memcmp(v, prefix, p) != 0) return false;
    if ((n = decimal(v + p, len - p, &major)) == 0) return false;
    p += n;
    if (p >= len || v[p] != '.') return false;
    p++;
    if ((n = decimal(v + p, len - p, minor)) == 0) return false;
    p += n;
    if (p < len && v[p] != ' ') return false;
    return major == 1;
}

static int refuse(aegis_upgrade *out, int status, const char *code) {
    out->http_status = status;
    out->error_code = code;
    return status;
}

int aegis_upgrade_check(const char *method, size_t method_len, const char *path, size_t path_len,
                        const aegis_http_header *hs, size_t n, bool draining, aegis_upgrade *out) {
    memset(out, 0, sizeof *out);
    if (draining) return refuse(out, 503, "draining");

    size_t plen = 0;
    while (plen < path_len && path[plen] != '?') plen++;
    if (plen != 9 || memcmp(path, "/ws/agent", 9) != 0) return refuse(out, 404, "not_found");
    if (method_len != 3 || memcmp(method, "GET", 3) != 0)
        return refuse(out, 405, "method_not_allowed");

    int c_up, c_conn, c_key, c_ver;
    const aegis_http_header *up = find(hs, n, "Upgrade", &c_up);
    const aegis_http_header *conn = find(hs, n, "Connection", &c_conn);
    const aegis_http_header *key = find(hs, n, "Sec-WebSocket-Key", &c_key);
    const aegis_http_header *ver = find(hs, n, "Sec-WebSocket-Version", &c_ver);
    uint8_t nonce[18];
    size_t nonce_len = 0;
    if (c_up != 1 || !has_token(up->value, up->value_len, "websocket") || c_conn != 1 ||
        !has_token(conn->value, conn->value_len, "upgrade") || c_key != 1 ||
        aegis_b64_decode(key->value, key->value_len, nonce, sizeof nonce, &nonce_len) != AEGIS_OK ||
        nonce_len != 16)
        return refuse(out, 400, "bad_upgrade");
    if (c_ver != 1 || ver->value_len != 2 || memcmp(ver->value, "13", 2) != 0)
        return refuse(out, 426, "unsupported_websocket_version");

    int c_id, c_pk, c_ua, c_tok;
    const aegis_http_header *id = find(hs, n, "X-Agent-ID", &c_id);
    const aegis_http_header *pk = find(hs, n, "X-Agent-Public-Key", &c_pk);
    const aegis_http_header *ua = find(hs, n, "User-Agent", &c_ua);
    const aegis_http_header *tok = find(hs, n, "X-Enrollment-Token", &c_tok);
    if (c_id == 0 || c_pk == 0 || c_ua == 0) return refuse(out, 400, "missing_header");
    if (c_id > 1 || c_pk > 1 || c_ua > 1 || c_tok > 1) return refuse(out, 400, "duplicate_header");
    if (!aegis_is_valid_agent_id(id->value, id->value_len))
        return refuse(out, 400, "invalid_agent_id");
    size_t pk_len = 0;
    uint8_t key_bytes[33];
    if (aegis_b64_decode(pk->value, pk->value_len, key_bytes, sizeof key_bytes, &pk_len) !=
            AEGIS_OK ||
        pk_len != AEGIS_PUBLIC_KEY_BYTES || !aegis_is_valid_public_key(key_bytes))
        return refuse(out, 400, "invalid_public_key");
    if (!user_agent_ok(ua->value, ua->value_len, &out->agent_version_minor))
        return refuse(out, 400, "unsupported_agent_version");

    out->agent_id = id->value;
    out->agent_id_len = id->value_len;
    memcpy(out->public_key, key_bytes, AEGIS_PUBLIC_KEY_BYTES);
    if (tok) {
        out->enrollment_token = tok->value;
        out->enrollment_token_len = tok->value_len;
    }
    out->websocket_key = key->value;
    out->websocket_key_len = key->value_len;
    return 0;
}
