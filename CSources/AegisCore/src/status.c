/*
 * status.c — the one table that maps each status to its name and to what
 * the protocol says about it: the auth_error code and close code of a failed
 * handshake (§3.2), the close code and failing check of a bad message (§4).
 */
#include "aegis_core.h"

typedef struct status_row {
    aegis_status status;
    const char *name;
    const char *auth_code;   /* §3.2 code when the handshake fails with it */
    int handshake_close;     /* close code for that handshake failure */
    const char *msg_reason;  /* failing check when a secure message fails with it */
} status_row;

#define SYNTAX(s) { s, #s, "malformed", 4001, "syntax" }

static const status_row rows[] = {
    { AEGIS_OK, "AEGIS_OK", NULL, 0, NULL },
    { AEGIS_E_BUFFER_TOO_SMALL, "AEGIS_E_BUFFER_TOO_SMALL", NULL, 0, NULL },
    { AEGIS_E_INVALID_ARGUMENT, "AEGIS_E_INVALID_ARGUMENT", NULL, 0, NULL },
    { AEGIS_E_NOMEM, "AEGIS_E_NOMEM", NULL, 0, NULL },
    { AEGIS_E_RANDOM, "AEGIS_E_RANDOM", NULL, 0, NULL },
    { AEGIS_E_IO, "AEGIS_E_IO", NULL, 0, NULL },
    { AEGIS_E_KEY_FILE_PERMISSIONS, "AEGIS_E_KEY_FILE_PERMISSIONS", NULL, 0, NULL },
    SYNTAX(AEGIS_E_B64),
    SYNTAX(AEGIS_E_JSON_SYNTAX),
    SYNTAX(AEGIS_E_JSON_NOT_OBJECT),
    SYNTAX(AEGIS_E_JSON_DUPLICATE_KEY),
    SYNTAX(AEGIS_E_JSON_LIMIT),
    SYNTAX(AEGIS_E_FIELD_MISSING),
    SYNTAX(AEGIS_E_FIELD_TYPE),
    SYNTAX(AEGIS_E_FIELD_EMPTY),
    SYNTAX(AEGIS_E_FIELD_SYNTAX),
    SYNTAX(AEGIS_E_FIELD_ENCODING),
    SYNTAX(AEGIS_E_BAD_POINT),
    SYNTAX(AEGIS_E_HEADER_MISMATCH),
    SYNTAX(AEGIS_E_REF_RULE),
    SYNTAX(AEGIS_E_CHANNEL_RULE),
    SYNTAX(AEGIS_E_INTEGER_RANGE),
    { AEGIS_E_EPHEMERAL_REQUIRED, "AEGIS_E_EPHEMERAL_REQUIRED", "ephemeral_required", 4001, NULL },
    { AEGIS_E_CLOCK_SKEW, "AEGIS_E_CLOCK_SKEW", "clock_skew", 4001, "clock_skew" },
    { AEGIS_E_REPLAY, "AEGIS_E_REPLAY", "replay", 4001, NULL },
    { AEGIS_E_KEY_MISMATCH, "AEGIS_E_KEY_MISMATCH", "key_mismatch", 4003, NULL },
    { AEGIS_E_REVOKED, "AEGIS_E_REVOKED", "revoked", 4003, NULL },
    { AEGIS_E_PENDING_APPROVAL, "AEGIS_E_PENDING_APPROVAL", "pending_approval", 4003, NULL },
    { AEGIS_E_UNKNOWN_AGENT, "AEGIS_E_UNKNOWN_AGENT", "unknown_agent", 4003, NULL },
    { AEGIS_E_RATE_LIMITED, "AEGIS_E_RATE_LIMITED", "rate_limited", 4029, NULL },
    /* §3.3: a failed key exchange aborts the handshake as `malformed`. */
    { AEGIS_E_KEY_EXCHANGE, "AEGIS_E_KEY_EXCHANGE", "malformed", 4001, NULL },
    { AEGIS_E_SIGNATURE, "AEGIS_E_SIGNATURE", "invalid_signature", 4001, "signature" },
    { AEGIS_E_DECRYPT, "AEGIS_E_DECRYPT", NULL, 0, "decrypt" },
    { AEGIS_E_PLAINTEXT, "AEGIS_E_PLAINTEXT", NULL, 0, "plaintext" },
    /* The agent's side of §3.2: whatever is wrong with the answer, 4001. */
    { AEGIS_E_AUTH_REFUSED, "AEGIS_E_AUTH_REFUSED", NULL, 4001, NULL },
    { AEGIS_E_AUTH_EXPIRY, "AEGIS_E_AUTH_EXPIRY", NULL, 4001, NULL },
    { AEGIS_E_SERVER_KEY, "AEGIS_E_SERVER_KEY", NULL, 4001, NULL },
};

static const status_row *find(aegis_status s) {
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].status == s) return &rows[i];
    return NULL;
}

const char *aegis_status_name(aegis_status s) {
    const status_row *r = find(s);
    return r ? r->name : "AEGIS_E_UNKNOWN_STATUS";
}

const char *aegis_status_auth_code(aegis_status s) {
    const status_row *r = find(s);
    return r ? r->auth_code : NULL;
}

int aegis_status_handshake_close_code(aegis_status s) {
    const status_row *r = find(s);
    return r ? r->handshake_close : 0;
}

int aegis_status_message_close_code(aegis_status s) {
    const status_row *r = find(s);
    return (r && r->msg_reason) ? 4004 : 0;
}

const char *aegis_status_message_reason(aegis_status s) {
    const status_row *r = find(s);
    return r ? r->msg_reason : NULL;
}
