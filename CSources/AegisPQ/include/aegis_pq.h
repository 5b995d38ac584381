/*
 * aegis_pq.h — the gateway's narrow interface to PostgreSQL (libpq).
 *
 * This header is the documentation of the database layer's C side: connect,
 * simple statements (migrations), prepared statements with text or binary
 * parameters and results, pipeline mode (several statements, one round
 * trip), LISTEN/NOTIFY (the socket and a notification drain) and identifier
 * escaping. The one Swift user is AegisStore's `Store` (docs/gateway-design.md);
 * no other code talks to PostgreSQL.
 *
 * Conventions, as in aegis_core.h:
 *  - Every fallible function returns an aegis_pq_status; nothing is left in
 *    a global. Messages go into a caller buffer (err, err_len: always NUL-
 *    terminated when err_len > 0, truncated to fit; err may be NULL).
 *    aegis_pq_status_name() names a status.
 *  - A server-side failure (AEGIS_PQ_E_SERVER) comes with its result, whose
 *    SQLSTATE, message and constraint name are read with the result
 *    accessors below. AEGIS_PQ_E_CONNECTION means the connection is gone:
 *    the outcome of a statement in flight is unknown (it may have
 *    committed); drop the handle and connect again.
 *  - Buffers passed in (parameters, notification buffers, escape output)
 *    belong to the caller and are only read or written during the call.
 *    Results belong to the caller until aegis_pq_result_free(); the
 *    pointers their accessors return live as long as the result.
 *  - Server notices (NOTICE, WARNING, "terminating connection due to
 *    administrator command") are discarded rather than printed to stderr;
 *    what matters arrives as a status.
 *
 * Parameters are sent as they are given: binary (AEGIS_PQ_BINARY; the
 * server's binary format of the parameter's type: raw bytes for text and
 * bytea, big-endian integers, microseconds since 2000-01-01 for timestamptz,
 * 16 bytes for uuid, the array format for arrays) or text (AEGIS_PQ_TEXT; a
 * NUL-terminated string of `length` bytes). A NULL value pointer is SQL
 * NULL, so an empty non-NULL value needs some non-NULL pointer. The client
 * encoding is always UTF8, so text in either format is UTF-8.
 *
 * Thread safety: a connection is used by one thread at a time (the store's
 * thread); different connections are independent. libpq itself is built
 * thread-safe on Debian.
 *
 * Pipeline mode (PostgreSQL ≥ 14 libpq, any server speaking protocol 3):
 * enter, send statements, sync, then read one result per statement with
 * aegis_pq_pipeline_next() until it returns AEGIS_PQ_SYNC, then exit. After
 * a failing statement the rest up to the sync come back AEGIS_PQ_E_ABORTED.
 * The connection stays blocking: send the statements whose results are
 * large last (the server reads a statement completely before answering it),
 * so that neither side waits on a full socket while the other does too.
 */
#ifndef AEGIS_PQ_H
#define AEGIS_PQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Handles, statuses, limits                                                 */

typedef struct aegis_pq_conn aegis_pq_conn;     /* one server connection */
typedef struct aegis_pq_result aegis_pq_result; /* one statement's answer */

typedef enum aegis_pq_status {
    AEGIS_PQ_OK = 0,
    AEGIS_PQ_SYNC = 1,        /* pipeline: the sync point; no result */
    AEGIS_PQ_NONE = 2,        /* no notification pending */

    AEGIS_PQ_E_INVALID_ARGUMENT = 10, /* NULL handle, negative count, value > INT_MAX bytes */
    AEGIS_PQ_E_NOMEM = 11,
    AEGIS_PQ_E_CONNECT = 12,    /* could not connect: server down, refused, bad conninfo, auth */
    AEGIS_PQ_E_CONNECTION = 13, /* the connection is (now) broken; a statement's outcome is unknown */
    AEGIS_PQ_E_SERVER = 14,     /* the server refused the statement: see the result's SQLSTATE */
    AEGIS_PQ_E_ABORTED = 15,    /* pipeline: skipped because an earlier statement failed */
    AEGIS_PQ_E_STATE = 16,      /* wrong mode: pipeline calls outside one, results pending, … */
    AEGIS_PQ_E_BUFFER_TOO_SMALL = 17, /* output truncated to the buffer */
    AEGIS_PQ_E_UNEXPECTED = 18, /* an answer this interface does not handle (COPY) */
} aegis_pq_status;

/* "AEGIS_PQ_E_SERVER" etc.; "AEGIS_PQ_UNKNOWN_STATUS" for values not listed. */
const char *aegis_pq_status_name(aegis_pq_status s);

/* Parameter and result formats (libpq's 0 and 1). */
#define AEGIS_PQ_TEXT 0
#define AEGIS_PQ_BINARY 1

/* NOTIFY limits of the server: channel names are identifiers (at most 63
 * bytes), payloads are shorter than 8000 bytes. Buffers of these sizes
 * (with the NUL) always suffice. */
#define AEGIS_PQ_CHANNEL_CAP 64
#define AEGIS_PQ_PAYLOAD_CAP 8000

/* The type OIDs (pg_type.dat) of the parameters the store sends, for
 * aegis_pq_prepare's param_types and the element type of binary arrays. */
#define AEGIS_PQ_OID_BOOL 16
#define AEGIS_PQ_OID_BYTEA 17
#define AEGIS_PQ_OID_INT8 20
#define AEGIS_PQ_OID_INT4 23
#define AEGIS_PQ_OID_TEXT 25
#define AEGIS_PQ_OID_TIMESTAMPTZ 1184
#define AEGIS_PQ_OID_UUID 2950
#define AEGIS_PQ_OID_BOOL_ARRAY 1000
#define AEGIS_PQ_OID_BYTEA_ARRAY 1001
#define AEGIS_PQ_OID_INT4_ARRAY 1007
#define AEGIS_PQ_OID_TEXT_ARRAY 1009
#define AEGIS_PQ_OID_INT8_ARRAY 1016
#define AEGIS_PQ_OID_TIMESTAMPTZ_ARRAY 1185
#define AEGIS_PQ_OID_UUID_ARRAY 2951

/* One statement parameter. value == NULL is SQL NULL. */
typedef struct aegis_pq_param {
    const void *value;
    size_t length;   /* bytes at value (for text: without the NUL) */
    int format;      /* AEGIS_PQ_TEXT or AEGIS_PQ_BINARY */
} aegis_pq_param;

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

/* Connects, blocking until the server answers. conninfo is a libpq
 * connection string ("host=/tmp/x dbname=aegis") or URI
 * ("postgresql://user@host/db"). Defaults that the conninfo may override:
 * connect_timeout=10, application_name=aegisd; client_encoding is always
 * UTF8. AEGIS_PQ_E_CONNECT with libpq's message (it names host and socket,
 * never the password) when the server cannot be reached or refuses. */
aegis_pq_status aegis_pq_connect(const char *conninfo, aegis_pq_conn **out,
                                 char *err, size_t err_len);

/* Closes the connection and frees the handle. NULL is a no-op. */
void aegis_pq_close(aegis_pq_conn *c);

/* Whether the connection is still usable, without blocking: reads whatever
 * the server sent while idle (an EOF or a FATAL from a shutting-down server
 * marks the connection broken) and keeps notifications for
 * aegis_pq_next_notification(). */
bool aegis_pq_alive(aegis_pq_conn *c);

/* Drops and re-establishes the connection with the same parameters
 * (blocking). Prepared statements and LISTENs do not survive it. */
aegis_pq_status aegis_pq_reset(aegis_pq_conn *c, char *err, size_t err_len);

/* The server's version as an integer (150004 for 15.4); 0 when broken. */
int aegis_pq_server_version(const aegis_pq_conn *c);

/* The transaction state of the session: whether a failed statement left a
 * transaction open that needs a ROLLBACK. */
typedef enum aegis_pq_transaction {
    AEGIS_PQ_TX_IDLE = 0,     /* not in a transaction block */
    AEGIS_PQ_TX_ACTIVE = 1,   /* a statement is in progress */
    AEGIS_PQ_TX_OPEN = 2,     /* in a valid transaction block */
    AEGIS_PQ_TX_FAILED = 3,   /* in a failed transaction block: ROLLBACK */
    AEGIS_PQ_TX_UNKNOWN = 4,  /* the connection is broken */
} aegis_pq_transaction;

aegis_pq_transaction aegis_pq_transaction_status(const aegis_pq_conn *c);

/* ------------------------------------------------------------------------ */
/* Statements                                                                */

/* Runs SQL text through the simple protocol: several statements separated
 * by semicolons are allowed (migrations); *out receives the last
 * statement's result. No parameters. */
aegis_pq_status aegis_pq_exec(aegis_pq_conn *c, const char *sql, aegis_pq_result **out,
                              char *err, size_t err_len);

/* Prepares one statement under `name` for this connection. param_types are
 * type OIDs (0 = let the server infer; NULL = infer all), which fix how
 * binary parameters are read. *out (may be NULL) receives the result as
 * with aegis_pq_execute: on AEGIS_PQ_E_SERVER it carries the SQLSTATE
 * (42P05 when the name is prepared already, 42P01 for a missing table). */
aegis_pq_status aegis_pq_prepare(aegis_pq_conn *c, const char *name, const char *sql,
                                 int n_params, const uint32_t *param_types,
                                 aegis_pq_result **out, char *err, size_t err_len);

/* Executes a prepared statement. result_format is AEGIS_PQ_TEXT or
 * AEGIS_PQ_BINARY for every column. *out receives the result on
 * AEGIS_PQ_OK and AEGIS_PQ_E_SERVER (and on AEGIS_PQ_E_CONNECTION when the
 * server said why, e.g. SQLSTATE 57P01); it is NULL otherwise. */
aegis_pq_status aegis_pq_execute(aegis_pq_conn *c, const char *name, int n_params,
                                 const aegis_pq_param *params, int result_format,
                                 aegis_pq_result **out, char *err, size_t err_len);

/* The same for a one-off statement (unnamed, parsed each time). */
aegis_pq_status aegis_pq_execute_sql(aegis_pq_conn *c, const char *sql, int n_params,
                                     const uint32_t *param_types,
                                     const aegis_pq_param *params, int result_format,
                                     aegis_pq_result **out, char *err, size_t err_len);

/* ------------------------------------------------------------------------ */
/* Results                                                                   */

void aegis_pq_result_free(aegis_pq_result *r);

int aegis_pq_result_rows(const aegis_pq_result *r);
int aegis_pq_result_columns(const aegis_pq_result *r);
/* The column's index by name, or -1. */
int aegis_pq_result_column_index(const aegis_pq_result *r, const char *name);
/* The column's type OID (AEGIS_PQ_OID_*), 0 when out of range. */
uint32_t aegis_pq_result_column_type(const aegis_pq_result *r, int column);

/* A field: the bytes of its text or binary form (NUL-terminated for
 * convenience, NUL included for text not counted in length), or NULL for
 * SQL NULL and out-of-range positions. */
const char *aegis_pq_result_value(const aegis_pq_result *r, int row, int column);
size_t aegis_pq_result_length(const aegis_pq_result *r, int row, int column);
bool aegis_pq_result_is_null(const aegis_pq_result *r, int row, int column);

/* Rows inserted, updated, deleted, selected…; 0 for statements without a
 * count (BEGIN, CREATE …). */
uint64_t aegis_pq_result_affected(const aegis_pq_result *r);

/* Of a failed statement: the five-character SQLSTATE ("23505"), the
 * primary message and the violated constraint's name; "" when absent. */
const char *aegis_pq_result_sqlstate(const aegis_pq_result *r);
const char *aegis_pq_result_message(const aegis_pq_result *r);
const char *aegis_pq_result_constraint(const aegis_pq_result *r);

/* ------------------------------------------------------------------------ */
/* Pipeline mode                                                             */

/* Only when idle (no result pending). Ordinary calls (exec, execute…) are
 * refused with AEGIS_PQ_E_STATE while in pipeline mode. */
aegis_pq_status aegis_pq_pipeline_enter(aegis_pq_conn *c, char *err, size_t err_len);

/* Queues a prepared statement, or a one-off statement with parameters
 * (param_types as in aegis_pq_prepare; BEGIN and COMMIT are one-off
 * statements without parameters). */
aegis_pq_status aegis_pq_pipeline_send(aegis_pq_conn *c, const char *name, int n_params,
                                       const aegis_pq_param *params, int result_format,
                                       char *err, size_t err_len);
aegis_pq_status aegis_pq_pipeline_send_sql(aegis_pq_conn *c, const char *sql, int n_params,
                                           const uint32_t *param_types,
                                           const aegis_pq_param *params, int result_format,
                                           char *err, size_t err_len);

/* Marks a sync point and sends everything queued. */
aegis_pq_status aegis_pq_pipeline_sync(aegis_pq_conn *c, char *err, size_t err_len);

/* The answer to the next queued statement, in order, blocking until it
 * arrives: AEGIS_PQ_OK with *out, AEGIS_PQ_E_SERVER with *out (the failing
 * statement), AEGIS_PQ_E_ABORTED (skipped; *out NULL), AEGIS_PQ_SYNC when
 * the sync point is reached (every statement before it has answered;
 * *out NULL), AEGIS_PQ_E_CONNECTION, or AEGIS_PQ_E_STATE when nothing is
 * pending. */
aegis_pq_status aegis_pq_pipeline_next(aegis_pq_conn *c, aegis_pq_result **out,
                                       char *err, size_t err_len);

/* Leaves pipeline mode; AEGIS_PQ_E_STATE while results are pending. */
aegis_pq_status aegis_pq_pipeline_exit(aegis_pq_conn *c, char *err, size_t err_len);

/* ------------------------------------------------------------------------ */
/* LISTEN / NOTIFY                                                           */

/* The connection's socket, to wait on for readability (poll/epoll), or -1.
 * It changes after aegis_pq_reset(). */
int aegis_pq_socket(const aegis_pq_conn *c);

/* Reads what arrived on the socket without blocking (call when it is
 * readable). AEGIS_PQ_E_CONNECTION when the connection broke. */
aegis_pq_status aegis_pq_consume_input(aegis_pq_conn *c, char *err, size_t err_len);

/* Takes the next received notification: AEGIS_PQ_OK with channel and
 * payload copied (NUL-terminated; *payload_len without the NUL, may be
 * NULL; *sender_pid the notifying backend, may be NULL), AEGIS_PQ_NONE when
 * none is pending, AEGIS_PQ_E_BUFFER_TOO_SMALL when a buffer was smaller
 * than AEGIS_PQ_CHANNEL_CAP / AEGIS_PQ_PAYLOAD_CAP and the text was cut (the
 * notification is consumed either way). LISTEN itself is a statement:
 * aegis_pq_exec(c, "LISTEN <escaped identifier>"). */
aegis_pq_status aegis_pq_next_notification(aegis_pq_conn *c, char *channel, size_t channel_cap,
                                           char *payload, size_t payload_cap,
                                           size_t *payload_len, int *sender_pid);

/* ------------------------------------------------------------------------ */
/* Escaping                                                                  */

/* Writes `s` (len bytes) as a double-quoted SQL identifier into out
 * (NUL-terminated), for names that cannot be parameters (LISTEN channels).
 * AEGIS_PQ_E_BUFFER_TOO_SMALL when out_cap is too small (2 * len + 3
 * always suffices); AEGIS_PQ_E_INVALID_ARGUMENT for text that is not valid
 * in the client encoding. */
aegis_pq_status aegis_pq_escape_identifier(aegis_pq_conn *c, const char *s, size_t len,
                                           char *out, size_t out_cap,
                                           char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* AEGIS_PQ_H */
