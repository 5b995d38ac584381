/*
 * aegis_core.h — the Aegis Agent Protocol v1 core, for both roles.
 *
 * This header is the documentation of the protocol core: strict base64, the
 * canonical enc() encoding, the handshake (auth request, auth_ok, session
 * keys) and secure messages (seal / open, one at a time or in batches), the
 * ack plaintext and per-session duplicate detection. The wire contract is
 * docs/protocol.md (PROTOCOL.md v1-r2 plus the readings we chose).
 *
 * Conventions, as in libsodium and picohttpparser:
 *  - Every fallible function returns an aegis_status; nothing is left in a
 *    global. aegis_status_name() names a status, and the three mapping
 *    functions turn it into the protocol's auth_error code, close code or
 *    message failure reason (one table, in status.c).
 *  - The caller owns every buffer. Sizes are exposed as functions
 *    (aegis_*_size / *_max) so that Swift and the transport can size them
 *    once. Parsers never allocate.
 *  - Secrets (identity seeds, ephemeral X25519 secrets, session keys) live in
 *    sodium_malloc'd memory behind opaque handles, are wiped on free and are
 *    never copied out. Comparisons of secrets are constant time.
 *  - JSON is parsed by our own strict, non-allocating parser (json.c): no
 *    Debian-packaged C JSON library rejects duplicate names at every depth
 *    without allocating, and the envelope fields are decoded straight from
 *    the input (base64 fields without an intermediate copy), which is what
 *    keeps open() within 10% of its bare crypto. It has a libFuzzer target.
 *
 * Thread safety: identities are immutable after creation and may be shared
 * by all threads. A session may be used by one thread at a time (open()
 * updates its duplicate window); the transport pins a session to the worker
 * that owns its connection.
 *
 * Call aegis_core_init() once before anything else (it calls sodium_init()).
 */
#ifndef AEGIS_CORE_H
#define AEGIS_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Sizes and limits (PROTOCOL.md §1, §3, §4, §6)                             */

#define AEGIS_PUBLIC_KEY_BYTES 32      /* Ed25519 public key */
#define AEGIS_SEED_BYTES 32            /* Ed25519 seed (the stored secret) */
#define AEGIS_SIGNATURE_BYTES 64
#define AEGIS_X25519_BYTES 32
#define AEGIS_AUTH_NONCE_MIN 16
#define AEGIS_AUTH_NONCE_MAX 64
#define AEGIS_AUTH_NONCE_DEFAULT 32    /* what we send */
#define AEGIS_MSG_NONCE_BYTES 12       /* ChaCha20-Poly1305 IETF nonce */
#define AEGIS_TAG_BYTES 16
#define AEGIS_SESSION_TOKEN_BYTES 32
#define AEGIS_SESSION_ID_LEN 36        /* lower-case UUID text */
#define AEGIS_SHA256_BYTES 32
#define AEGIS_ID_MAX 64                /* id: 1–64 of [A-Za-z0-9._:-] */
#define AEGIS_AGENT_ID_MAX 255         /* agent id: 1–255 of [A-Za-z0-9._:@-] */
#define AEGIS_CHANNEL_MAX 255          /* channel: 1–255 of [A-Za-z0-9._/:-] */
#define AEGIS_ACK_IDS_MAX 1024
#define AEGIS_DEFAULT_SKEW 60
#define AEGIS_MAX_MESSAGE_BYTES (1024 * 1024)      /* after auth_ok */
#define AEGIS_MAX_AUTH_MESSAGE_BYTES (16 * 1024)   /* before auth_ok */

/* Implementation limits of the strict JSON parser (docs/protocol.md):
 * deeper nesting or more object members in one text is refused as
 * AEGIS_E_JSON_LIMIT, which maps to `malformed` / 4004 syntax. */
#define AEGIS_JSON_MAX_DEPTH 64
#define AEGIS_JSON_MAX_MEMBERS 4096

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */

typedef enum aegis_status {
    AEGIS_OK = 0,

    /* Caller errors: not protocol failures. */
    AEGIS_E_BUFFER_TOO_SMALL = 1,  /* an output buffer is smaller than *_size() said */
    AEGIS_E_INVALID_ARGUMENT = 2,  /* a field handed to a builder breaks the spec */
    AEGIS_E_NOMEM = 3,             /* sodium_malloc / malloc failed */
    AEGIS_E_RANDOM = 4,            /* reserved */
    AEGIS_E_IO = 5,                /* key file could not be read or written */
    AEGIS_E_KEY_FILE_PERMISSIONS = 6, /* key file readable by group or others */

    /* Syntax: auth `malformed` (4001), message reason `syntax` (4004). */
    AEGIS_E_B64 = 10,              /* not strict b64 / b64u (§1) */
    AEGIS_E_JSON_SYNTAX = 11,      /* not JSON, bad escape, invalid UTF-8, trailing bytes */
    AEGIS_E_JSON_NOT_OBJECT = 12,  /* the text is JSON but not an object */
    AEGIS_E_JSON_DUPLICATE_KEY = 13, /* a name repeats in one object, at any depth */
    AEGIS_E_JSON_LIMIT = 14,       /* deeper than AEGIS_JSON_MAX_DEPTH or too many members */
    AEGIS_E_FIELD_MISSING = 15,    /* a required field is absent */
    AEGIS_E_FIELD_TYPE = 16,       /* wrong JSON type: null, float, exponent, string for int… */
    AEGIS_E_FIELD_EMPTY = 17,      /* a present field is the empty string */
    AEGIS_E_FIELD_SYNTAX = 18,     /* id / agent id / channel charset or length, unknown type */
    AEGIS_E_FIELD_ENCODING = 19,   /* a b64 field is not strict or has the wrong length */
    AEGIS_E_BAD_POINT = 20,        /* public key is not a prime-order Ed25519 point */
    AEGIS_E_HEADER_MISMATCH = 21,  /* agent_id / public_key differ from the upgrade headers */
    AEGIS_E_REF_RULE = 22,         /* ref present on request/event, absent on response/ack */
    AEGIS_E_CHANNEL_RULE = 23,     /* reserved channel misuse (§5) */
    AEGIS_E_INTEGER_RANGE = 24,    /* integer outside 0 … 2^63−1 */

    /* Auth outcomes (§3.1 steps 1–5, §3.3). */
    AEGIS_E_EPHEMERAL_REQUIRED = 30,
    AEGIS_E_CLOCK_SKEW = 31,       /* also message reason `clock_skew` */
    AEGIS_E_REPLAY = 32,
    AEGIS_E_KEY_MISMATCH = 33,
    AEGIS_E_REVOKED = 34,
    AEGIS_E_PENDING_APPROVAL = 35,
    AEGIS_E_UNKNOWN_AGENT = 36,
    AEGIS_E_RATE_LIMITED = 37,
    AEGIS_E_KEY_EXCHANGE = 38,     /* point conversion failed or a DH output is all zero */
    AEGIS_E_SIGNATURE = 39,        /* Ed25519 verification failed */

    /* Message outcomes (§4, §5). */
    AEGIS_E_DECRYPT = 40,          /* AEAD authentication failed */
    AEGIS_E_PLAINTEXT = 41,        /* ack / heartbeat plaintext rules */

    /* Agent side of the handshake (§3.2): all close with 4001. */
    AEGIS_E_AUTH_REFUSED = 50,     /* the gateway sent auth_error */
    AEGIS_E_AUTH_EXPIRY = 51,      /* auth_ok with expires_at <= timestamp */
    AEGIS_E_SERVER_KEY = 52,       /* server_key differs from the configured key */
} aegis_status;

/* "AEGIS_E_DECRYPT" etc.; "AEGIS_E_UNKNOWN_STATUS" for values not listed. */
const char *aegis_status_name(aegis_status s);

/* The §3.2 auth_error code ("malformed", "clock_skew", …) for a failure of
 * the handshake, or NULL when the status is not a handshake outcome. */
const char *aegis_status_auth_code(aegis_status s);

/* The WebSocket close code for a failure during the handshake (4001, 4003,
 * 4029) or of a secure message (4004); 0 for AEGIS_OK and caller errors. */
int aegis_status_handshake_close_code(aegis_status s);
int aegis_status_message_close_code(aegis_status s);

/* The failing check of a secure message, as the vectors name it: "syntax",
 * "clock_skew", "decrypt", "signature" or "plaintext"; NULL otherwise. */
const char *aegis_status_message_reason(aegis_status s);

/* ------------------------------------------------------------------------ */
/* Library                                                                   */

/* Initialises libsodium and picks the fastest base64 and scanning code for
 * this CPU. Idempotent and thread-safe. Returns AEGIS_E_NOMEM if libsodium
 * cannot start. */
aegis_status aegis_core_init(void);

/* "1.0.0 (libsodium 1.0.18, b64 avx2)" — for logs and --version. */
const char *aegis_core_version(void);

/* ------------------------------------------------------------------------ */
/* Strict base64 (§1)                                                        */
/*
 * b64: standard alphabet with padding; b64u: URL alphabet without padding.
 * Decoders refuse whitespace, wrong padding and non-zero trailing bits.
 * These are for public data (ciphertexts, signatures, keys) and run at
 * memory speed (AVX2 when the CPU has it, a table otherwise). Secret fields
 * (the session token) are decoded inside the core in constant time.
 */
size_t aegis_b64_encoded_len(size_t bin_len);
size_t aegis_b64u_encoded_len(size_t bin_len);
/* Upper bound of the decoded size of a text of text_len characters. */
size_t aegis_b64_decoded_max(size_t text_len);

/* Writes exactly aegis_b64[u]_encoded_len(bin_len) characters, no NUL. */
void aegis_b64_encode(const uint8_t *bin, size_t bin_len, char *out);
void aegis_b64u_encode(const uint8_t *bin, size_t bin_len, char *out);

/* AEGIS_OK, AEGIS_E_B64, or AEGIS_E_BUFFER_TOO_SMALL when out_cap is below
 * the decoded length. */
aegis_status aegis_b64_decode(const char *text, size_t text_len,
                              uint8_t *out, size_t out_cap, size_t *out_len);
aegis_status aegis_b64u_decode(const char *text, size_t text_len,
                               uint8_t *out, size_t out_cap, size_t *out_len);

/* ------------------------------------------------------------------------ */
/* Field syntax (§1, §2)                                                     */

bool aegis_is_valid_id(const char *s, size_t len);        /* 1–64 [A-Za-z0-9._:-] */
bool aegis_is_valid_agent_id(const char *s, size_t len);  /* 1–255 [A-Za-z0-9._:@-] */
bool aegis_is_valid_channel(const char *s, size_t len);   /* 1–255 [A-Za-z0-9._/:-] */
/* A canonical encoding of a prime-order Ed25519 point (§2). */
bool aegis_is_valid_public_key(const uint8_t pk[AEGIS_PUBLIC_KEY_BYTES]);

/* SHA-256, for hashes the gateway stores instead of secrets (enrollment
 * tokens, session tokens). */
void aegis_sha256(const void *in, size_t len, uint8_t out[AEGIS_SHA256_BYTES]);

/* enc(): appends u32be(len) ‖ bytes. Returns the bytes written (len + 4),
 * or 0 when it does not fit. Exposed for tests and tools. */
size_t aegis_enc_bytes(uint8_t *out, size_t cap, const void *field, size_t len);
size_t aegis_enc_u64(uint8_t *out, size_t cap, uint64_t v);

/* ------------------------------------------------------------------------ */
/* The upgrade request (§2)                                                  */

typedef struct aegis_http_header {
    const char *name;      /* as received; compared case-insensitively */
    size_t name_len;
    const char *value;     /* without surrounding whitespace */
    size_t value_len;
} aegis_http_header;

typedef struct aegis_upgrade {
    /* 0 when every check passed; else the HTTP status to answer with and
     * its §2 error code (a static string), e.g. 400 "invalid_agent_id". */
    int http_status;
    const char *error_code;
    /* On success: spans into the caller's header values, and the key. */
    const char *agent_id;
    size_t agent_id_len;
    uint8_t public_key[AEGIS_PUBLIC_KEY_BYTES];
    const char *enrollment_token;   /* NULL when absent; not validated here */
    size_t enrollment_token_len;
    const char *websocket_key;      /* for Sec-WebSocket-Accept */
    size_t websocket_key_len;
    unsigned agent_version_minor;   /* MAJOR is 1 by then */
} aegis_upgrade;

/*
 * The checks of §2 that need nothing but the request, in the order of §2:
 * 503 draining, 404 not_found, 405 method_not_allowed (answer with
 * `Allow: GET`), 400 bad_upgrade, 426 unsupported_websocket_version (answer
 * with `Sec-WebSocket-Version: 13`), then over the agent headers 400
 * missing_header, duplicate_header, invalid_agent_id, invalid_public_key,
 * unsupported_agent_version. The gateway then applies its rate limit (429)
 * and enrollment policy (403), which need its state. The path may carry a
 * query string, which is ignored. Returns out->http_status.
 */
int aegis_upgrade_check(const char *method, size_t method_len, const char *path, size_t path_len,
                        const aegis_http_header *headers, size_t n_headers, bool draining,
                        aegis_upgrade *out);

/* ------------------------------------------------------------------------ */
/* Identities (long-term Ed25519 keys)                                       */

typedef struct aegis_identity aegis_identity;

aegis_status aegis_identity_generate(aegis_identity **out);
/* From a 32-byte seed (tests, and keys handed over by the environment). */
aegis_status aegis_identity_from_seed(const uint8_t seed[AEGIS_SEED_BYTES],
                                      aegis_identity **out);
/* From b64 of the seed, e.g. an environment variable; decoded in constant time. */
aegis_status aegis_identity_from_seed_b64(const char *text, size_t len,
                                          aegis_identity **out);
/* Key files hold one line: b64 of the 32-byte seed. load() refuses a file
 * that group or others may read (AEGIS_E_KEY_FILE_PERMISSIONS); save()
 * creates it with mode 0600 and refuses to overwrite. */
aegis_status aegis_identity_load(const char *path, aegis_identity **out);
aegis_status aegis_identity_save(const aegis_identity *id, const char *path);
void aegis_identity_public_key(const aegis_identity *id,
                               uint8_t pk[AEGIS_PUBLIC_KEY_BYTES]);
/* Identities are reference counted: sessions retain the identity that signs
 * for them. free() drops one reference; the secret is wiped at the last. */
void aegis_identity_free(aegis_identity *id);

/* ------------------------------------------------------------------------ */
/* Sessions                                                                  */

typedef enum aegis_role {
    AEGIS_ROLE_GATEWAY = 0, /* seals down with k_down, opens up with k_up */
    AEGIS_ROLE_AGENT = 1,   /* seals up with k_up, opens down with k_down */
} aegis_role;

/* An established session: its id, both keys (in secure memory), the
 * identity that signs what we send, the peer's public key, and the window
 * of message ids received (duplicate detection, below). */
typedef struct aegis_session aegis_session;

void aegis_session_free(aegis_session *s);
aegis_role aegis_session_role(const aegis_session *s);
/* The 36-character session id (not NUL-terminated). */
const char *aegis_session_id(const aegis_session *s);
void aegis_session_peer_key(const aegis_session *s, uint8_t pk[AEGIS_PUBLIC_KEY_BYTES]);
/* The clock skew this session accepts (default AEGIS_DEFAULT_SKEW). */
void aegis_session_set_skew(aegis_session *s, uint64_t skew_seconds);

/*
 * Duplicate detection (§4). Each session remembers the ids it has opened,
 * each until the timestamp + skew of its latest transmission, in a table
 * that grows on demand from 16 entries up to a bound (default 8192; about
 * 96 bytes an entry, so at most ~0.8 MiB for a session that sends more than
 * bound / (2 × skew) messages a second, and ~1.5 KiB for a quiet one). When
 * the table is full of unexpired ids, the oldest is forgotten early and
 * aegis_session_dedupe_evictions() counts it: a retransmission of that id
 * would then be processed again. On the gateway that is still safe, because
 * stored up ids are also unique in PostgreSQL (agent id, direction, id).
 * Ids are compared in full (never by hash alone), so no message is ever
 * taken for a duplicate of another.
 */
void aegis_session_set_dedupe_limit(aegis_session *s, size_t max_entries);
uint64_t aegis_session_dedupe_evictions(const aegis_session *s);
/* Marks an id as received (e.g. ids restored from the store); rarely needed. */
aegis_status aegis_session_remember_id(aegis_session *s, const char *id, size_t len,
                                       uint64_t expires_at, uint64_t now);

/* ------------------------------------------------------------------------ */
/* Handshake, gateway side (§3.1, §3.2, §3.3)                                */

typedef struct aegis_auth_request {
    char agent_id[AEGIS_AGENT_ID_MAX + 1];  /* NUL-terminated */
    size_t agent_id_len;
    uint8_t public_key[AEGIS_PUBLIC_KEY_BYTES];
    uint64_t timestamp;
    uint8_t nonce[AEGIS_AUTH_NONCE_MAX];
    size_t nonce_len;
    bool has_ephemeral_key;
    uint8_t ephemeral_key[AEGIS_X25519_BYTES];
    uint8_t signature[AEGIS_SIGNATURE_BYTES];
    /* public_key mapped to X25519, computed once by the check (the map
     * proves the point is in the prime-order subgroup) and reused by accept. */
    uint8_t public_key_x25519[AEGIS_X25519_BYTES];
} aegis_auth_request;

typedef struct aegis_auth_context {
    const char *header_agent_id;    /* X-Agent-ID, as received */
    size_t header_agent_id_len;
    const uint8_t *header_public_key; /* decoded X-Agent-Public-Key (32 bytes) */
    uint64_t now;
    uint64_t skew;                  /* seconds; 0 means AEGIS_DEFAULT_SKEW */
    bool require_ephemeral;
} aegis_auth_context;

/*
 * Steps 1 and 2 of §3.1 on the first message: syntax (every field decoded
 * with its exact length, the key a valid point, agent_id and public_key
 * equal to the headers), then ephemeral_required, then clock_skew.
 * Steps 3 (replay) and 4 (enrollment policy) need the store: the caller
 * performs them next, with req->nonce and req->agent_id / public_key, and
 * then calls aegis_auth_request_verify() for step 5. Nothing is recorded
 * here: the caller records the nonce and pins a first-use key only after
 * aegis_gateway_accept() succeeds.
 */
aegis_status aegis_auth_request_check(const char *json, size_t len,
                                      const aegis_auth_context *ctx,
                                      aegis_auth_request *req);
/* Step 5: the Ed25519 signature over auth_input. AEGIS_OK or AEGIS_E_SIGNATURE. */
aegis_status aegis_auth_request_verify(const aegis_auth_request *req);

typedef struct aegis_auth_ok_params {
    const char *session_id;         /* 36 chars, lower-case UUID */
    uint64_t timestamp;
    uint64_t expires_at;
    uint64_t heartbeat_interval;
    /* Deterministic inputs for test vectors only; NULL in production,
     * where both come from randombytes_buf. */
    const uint8_t *test_backend_secret;  /* 32 bytes */
    const uint8_t *test_session_token;   /* 32 bytes */
} aegis_auth_ok_params;

/* Upper bound of the auth_ok JSON text. */
size_t aegis_auth_ok_json_max(void);

/*
 * After steps 1–5 passed: creates the gateway's session (§3.3: a fresh
 * X25519 key pair, dh1, dh2 when the agent sent an ephemeral key, HKDF) and
 * writes the signed auth_ok JSON. A conversion failure or an all-zero DH
 * output gives AEGIS_E_KEY_EXCHANGE (auth_error `malformed`). The backend
 * secret and session token are wiped before returning; only
 * SHA256(session_token) leaves, for the store.
 */
aegis_status aegis_gateway_accept(const aegis_identity *server,
                                  const aegis_auth_request *req,
                                  const aegis_auth_ok_params *params,
                                  aegis_session **session_out,
                                  uint8_t session_token_sha256[AEGIS_SHA256_BYTES],
                                  char *json_out, size_t json_cap, size_t *json_len);

/* {"type":"auth_error","code":"…","message":"…"}; the message is escaped.
 * Size: aegis_auth_error_json_max(message_len). */
size_t aegis_auth_error_json_max(size_t message_len);
aegis_status aegis_auth_error_json(const char *code, const char *message, size_t message_len,
                                   char *out, size_t cap, size_t *out_len);

/* ------------------------------------------------------------------------ */
/* Handshake, agent side                                                     */

/* The agent's half-open handshake: its auth_input signature and, when
 * used, its ephemeral X25519 secret (secure memory). */
typedef struct aegis_agent_handshake aegis_agent_handshake;

typedef struct aegis_auth_request_params {
    const char *agent_id;
    size_t agent_id_len;
    uint64_t timestamp;
    bool with_ephemeral_key;           /* agents should always send it */
    /* Deterministic inputs for test vectors only; NULL in production. */
    const uint8_t *test_nonce;
    size_t test_nonce_len;
    const uint8_t *test_ephemeral_secret; /* 32 bytes */
} aegis_auth_request_params;

size_t aegis_auth_request_json_max(void);

aegis_status aegis_agent_handshake_begin(const aegis_identity *agent,
                                         const aegis_auth_request_params *params,
                                         aegis_agent_handshake **hs_out,
                                         char *json_out, size_t json_cap, size_t *json_len);
void aegis_agent_handshake_free(aegis_agent_handshake *hs);

typedef struct aegis_auth_ok {
    char session_id[AEGIS_SESSION_ID_LEN + 1];
    uint8_t server_key[AEGIS_PUBLIC_KEY_BYTES];
    uint8_t backend_key[AEGIS_X25519_BYTES];
    uint64_t timestamp;
    uint64_t expires_at;
    uint64_t heartbeat_interval;
} aegis_auth_ok;

/* The gateway's refusal, when the answer was auth_error. */
typedef struct aegis_auth_error {
    char code[32];        /* NUL-terminated, truncated */
    char message[256];    /* NUL-terminated, truncated, unescaped */
} aegis_auth_error;

/*
 * Checks the gateway's answer (§3.2): auth_error gives AEGIS_E_AUTH_REFUSED
 * with *err filled; auth_ok is checked for syntax, expires_at > timestamp,
 * the signature, and server_key against expected_server_key (NULL to accept
 * any and pin it: the caller reads ok->server_key). On success it derives
 * the session keys and creates the agent's session. The handshake object
 * stays the caller's to free.
 */
aegis_status aegis_agent_handshake_finish(aegis_agent_handshake *hs,
                                          const char *json, size_t len,
                                          const uint8_t *expected_server_key,
                                          aegis_auth_ok *ok, aegis_auth_error *err,
                                          aegis_session **session_out);

/* ------------------------------------------------------------------------ */
/* Secure messages (§4)                                                      */

typedef enum aegis_message_type {
    AEGIS_MSG_REQUEST = 0,
    AEGIS_MSG_RESPONSE = 1,
    AEGIS_MSG_EVENT = 2,
    AEGIS_MSG_HEARTBEAT = 3,
    AEGIS_MSG_ACK = 4,
} aegis_message_type;

const char *aegis_message_type_name(aegis_message_type t);

/* What a sender names; text fields need not be NUL-terminated. */
typedef struct aegis_message_header {
    const char *id;
    size_t id_len;
    aegis_message_type type;
    const char *channel;
    size_t channel_len;
    const char *ref;        /* NULL / 0 when absent */
    size_t ref_len;
    uint64_t timestamp;
} aegis_message_header;

/* What a receiver gets: text fields copied and NUL-terminated, the
 * plaintext pointing into the caller's buffer. */
typedef struct aegis_message {
    char id[AEGIS_ID_MAX + 1];
    size_t id_len;
    aegis_message_type type;
    char channel[AEGIS_CHANNEL_MAX + 1];
    size_t channel_len;
    char ref[AEGIS_ID_MAX + 1];
    size_t ref_len;         /* 0 when absent */
    uint64_t timestamp;
    const uint8_t *plaintext;
    size_t plaintext_len;
    bool duplicate;         /* the id was received before in this session */
    /* The envelope's cryptographic fields exactly as received, so that a
     * store can keep an audit record that can be verified again later; the
     * ciphertext (with its tag) points into the caller's buffer too. */
    uint8_t nonce[AEGIS_MSG_NONCE_BYTES];
    uint8_t signature[AEGIS_SIGNATURE_BYTES];
    const uint8_t *ciphertext;
    size_t ciphertext_len;
} aegis_message;

/* Buffer sizes for a plaintext of pt_len bytes / a JSON text of json_len. */
size_t aegis_seal_json_max(size_t pt_len);
size_t aegis_seal_scratch_size(size_t pt_len);
size_t aegis_open_buffer_size(size_t json_len);

/*
 * seal(): validates the header (id, channel, type, the ref and reserved
 * channel rules), draws a fresh nonce (or takes test_nonce, 12 bytes, for
 * vectors), encrypts with the sending key, signs with the session's
 * identity, and writes the compact JSON of the vectors' form. scratch holds
 * the signature input (aegis_seal_scratch_size bytes) so that the
 * ciphertext is written once and signed where it lies.
 * Cost: AEAD encrypt + Ed25519 sign + one base64 encode of the ciphertext.
 */
aegis_status aegis_seal(const aegis_session *s, const aegis_message_header *h,
                        const uint8_t *pt, size_t pt_len, const uint8_t *test_nonce,
                        uint8_t *scratch, size_t scratch_cap,
                        char *json_out, size_t json_cap, size_t *json_len);

/*
 * open(): the receiver's checks in the order of §4 — syntax, clock skew
 * against `now`, AEAD decryption, the Ed25519 signature last, then the
 * plaintext rules of §5 for ack and heartbeat — and finally duplicate
 * detection (msg->duplicate; not an error). buf (aegis_open_buffer_size
 * bytes) receives the signature input and the plaintext; msg->plaintext
 * points into it. Any error closes the connection with 4004.
 * Cost: one pass over the JSON, base64 decode of the payload straight into
 * the signature input, AEAD decrypt, Ed25519 verify.
 */
aegis_status aegis_open(aegis_session *s, const char *json, size_t len, uint64_t now,
                        uint8_t *buf, size_t buf_cap, aegis_message *msg);

/*
 * Batches: one call per completion batch of the transport, each job with
 * its own session and buffers. libsodium 1.0.18 has no batch Ed25519
 * verification, so a batch buys no cheaper crypto: it buys one crossing
 * from Swift or the event loop per batch instead of per message, and keeps
 * the core's code and tables hot in cache (see Benchmarks/ for the figure).
 * Jobs sharing a session are processed in order.
 */
typedef struct aegis_open_job {
    aegis_session *session;
    const char *json;
    size_t json_len;
    uint8_t *buf;
    size_t buf_cap;
    aegis_message msg;       /* out */
    aegis_status status;     /* out */
} aegis_open_job;

typedef struct aegis_seal_job {
    const aegis_session *session;
    aegis_message_header header;
    const uint8_t *plaintext;
    size_t plaintext_len;
    uint8_t *scratch;
    size_t scratch_cap;
    char *json;
    size_t json_cap;
    size_t json_len;         /* out */
    aegis_status status;     /* out */
} aegis_seal_job;

void aegis_open_batch(aegis_open_job *jobs, size_t n, uint64_t now);
void aegis_seal_batch(aegis_seal_job *jobs, size_t n);

/* ------------------------------------------------------------------------ */
/* Ack plaintext (§5): {"ids":["…", …]} with 1–1024 ids                      */

typedef struct aegis_id {
    uint8_t len;
    char bytes[AEGIS_ID_MAX];
} aegis_id;

/* Upper bound of the ack plaintext for n ids. */
size_t aegis_ack_plaintext_max(size_t n);
/* Writes the compact {"ids":[...]}; AEGIS_E_INVALID_ARGUMENT for 0 or more
 * than 1024 ids or an id of bad syntax. */
aegis_status aegis_ack_plaintext_build(const aegis_id *ids, size_t n,
                                       uint8_t *out, size_t cap, size_t *out_len);
/* Reads the ids of an ack plaintext that open() accepted. */
aegis_status aegis_ack_plaintext_parse(const uint8_t *pt, size_t len,
                                       aegis_id *ids, size_t cap, size_t *n);

#ifdef __cplusplus
}
#endif

#endif /* AEGIS_CORE_H */
