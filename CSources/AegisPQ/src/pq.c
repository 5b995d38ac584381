/*
 * pq.c — aegis_pq.h over libpq. See the header for the contract.
 */
#include "aegis_pq.h"

#include <libpq-fe.h>

#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct aegis_pq_conn {
    PGconn *pg;
};

/* A result is libpq's PGresult; the struct name only hides it. */
static PGresult *pgr(const aegis_pq_result *r) { return (PGresult *)r; }

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

const char *aegis_pq_status_name(aegis_pq_status s) {
    switch (s) {
    case AEGIS_PQ_OK: return "AEGIS_PQ_OK";
    case AEGIS_PQ_SYNC: return "AEGIS_PQ_SYNC";
    case AEGIS_PQ_NONE: return "AEGIS_PQ_NONE";
    case AEGIS_PQ_E_INVALID_ARGUMENT: return "AEGIS_PQ_E_INVALID_ARGUMENT";
    case AEGIS_PQ_E_NOMEM: return "AEGIS_PQ_E_NOMEM";
    case AEGIS_PQ_E_CONNECT: return "AEGIS_PQ_E_CONNECT";
    case AEGIS_PQ_E_CONNECTION: return "AEGIS_PQ_E_CONNECTION";
    case AEGIS_PQ_E_SERVER: return "AEGIS_PQ_E_SERVER";
    case AEGIS_PQ_E_ABORTED: return "AEGIS_PQ_E_ABORTED";
    case AEGIS_PQ_E_STATE: return "AEGIS_PQ_E_STATE";
    case AEGIS_PQ_E_BUFFER_TOO_SMALL: return "AEGIS_PQ_E_BUFFER_TOO_SMALL";
    case AEGIS_PQ_E_UNEXPECTED: return "AEGIS_PQ_E_UNEXPECTED";
    }
    return "AEGIS_PQ_UNKNOWN_STATUS";
}

/* Formats into the caller's buffer, without libpq's trailing newline. */
static aegis_pq_status fail(aegis_pq_status s, char *err, size_t err_len, const char *fmt, ...) {
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
        size_t n = strlen(err);
        while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' ')) err[--n] = '\0';
    }
    return s;
}

static aegis_pq_status conn_fail(aegis_pq_conn *c, aegis_pq_status s, char *err, size_t err_len) {
    const char *m = PQerrorMessage(c->pg);
    return fail(s, err, err_len, "%s", (m != NULL && *m) ? m : aegis_pq_status_name(s));
}

/* A call that libpq refused before anything was sent: broken connection,
 * or the wrong mode (busy, pipeline). */
static aegis_pq_status refused(aegis_pq_conn *c, char *err, size_t err_len) {
    aegis_pq_status s = PQstatus(c->pg) == CONNECTION_BAD ? AEGIS_PQ_E_CONNECTION : AEGIS_PQ_E_STATE;
    return conn_fail(c, s, err, err_len);
}

/* Sorts a finished statement's PGresult into a status; keeps it in *out
 * when the caller may want to read it. */
static aegis_pq_status finish(aegis_pq_conn *c, PGresult *res, aegis_pq_result **out,
                              char *err, size_t err_len) {
    if (out != NULL) *out = NULL;
    if (res == NULL) {
        if (PQstatus(c->pg) == CONNECTION_BAD) return conn_fail(c, AEGIS_PQ_E_CONNECTION, err, err_len);
        return conn_fail(c, AEGIS_PQ_E_NOMEM, err, err_len);
    }
    aegis_pq_status s;
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
    case PGRES_SINGLE_TUPLE:
        s = AEGIS_PQ_OK;
        break;
    case PGRES_FATAL_ERROR:
    case PGRES_NONFATAL_ERROR:
    case PGRES_BAD_RESPONSE:
        s = PQstatus(c->pg) == CONNECTION_BAD ? AEGIS_PQ_E_CONNECTION : AEGIS_PQ_E_SERVER;
        fail(s, err, err_len, "%s", PQresultErrorMessage(res));
        break;
    case PGRES_PIPELINE_ABORTED:
        PQclear(res);
        return fail(AEGIS_PQ_E_ABORTED, err, err_len, "skipped: an earlier statement of the pipeline failed");
    case PGRES_PIPELINE_SYNC:
        PQclear(res);
        return AEGIS_PQ_SYNC;
    default:
        /* COPY and friends: not part of this interface. */
        fail(AEGIS_PQ_E_UNEXPECTED, err, err_len, "unexpected result %s",
             PQresStatus(PQresultStatus(res)));
        PQclear(res);
        return AEGIS_PQ_E_UNEXPECTED;
    }
    if (out != NULL) *out = (aegis_pq_result *)res;
    else PQclear(res);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

static void discard_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

aegis_pq_status aegis_pq_connect(const char *conninfo, aegis_pq_conn **out, char *err, size_t err_len) {
    if (out == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no output handle");
    *out = NULL;
    if (conninfo == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no conninfo");
    aegis_pq_conn *c = calloc(1, sizeof *c);
    if (c == NULL) return fail(AEGIS_PQ_E_NOMEM, err, err_len, "out of memory");
    /* Keywords are applied in order and the last one wins: the defaults
     * before dbname (which expands the conninfo) can be overridden by it,
     * client_encoding after it cannot. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", "client_encoding", NULL};
    const char *const vals[] = {"10", "aegisd", conninfo, "UTF8", NULL};
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (c->pg == NULL) {
        free(c);
        return fail(AEGIS_PQ_E_NOMEM, err, err_len, "out of memory");
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        aegis_pq_status s = conn_fail(c, AEGIS_PQ_E_CONNECT, err, err_len);
        PQfinish(c->pg);
        free(c);
        return s;
    }
    PQsetNoticeProcessor(c->pg, discard_notice, NULL);
    *out = c;
    return AEGIS_PQ_OK;
}

void aegis_pq_close(aegis_pq_conn *c) {
    if (c == NULL) return;
    PQfinish(c->pg);
    free(c);
}

bool aegis_pq_alive(aegis_pq_conn *c) {
    if (c == NULL || PQstatus(c->pg) != CONNECTION_OK) return false;
    /* Only idle connections are checked: in a pipeline or busy, the
     * socket's data belongs to results. */
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF || PQisBusy(c->pg)) return true;
    /* A server shutting down sends a FATAL (parsed as a notice while idle)
     * and then closes: read until the socket has nothing more, so that the
     * EOF behind the message is seen too. */
    for (int round = 0; round < 8; round++) {
        struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN, .revents = 0};
        if (p.fd < 0) return false;
        if (poll(&p, 1, 0) <= 0) break;
        if (!PQconsumeInput(c->pg)) return false;
        (void)PQisBusy(c->pg); /* parses what arrived */
        if (PQstatus(c->pg) != CONNECTION_OK) return false;
    }
    return PQstatus(c->pg) == CONNECTION_OK;
}

aegis_pq_status aegis_pq_reset(aegis_pq_conn *c, char *err, size_t err_len) {
    if (c == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no connection");
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK) return conn_fail(c, AEGIS_PQ_E_CONNECT, err, err_len);
    PQsetNoticeProcessor(c->pg, discard_notice, NULL);
    return AEGIS_PQ_OK;
}

int aegis_pq_server_version(const aegis_pq_conn *c) {
    return c == NULL ? 0 : PQserverVersion(c->pg);
}

aegis_pq_transaction aegis_pq_transaction_status(const aegis_pq_conn *c) {
    if (c == NULL) return AEGIS_PQ_TX_UNKNOWN;
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE: return AEGIS_PQ_TX_IDLE;
    case PQTRANS_ACTIVE: return AEGIS_PQ_TX_ACTIVE;
    case PQTRANS_INTRANS: return AEGIS_PQ_TX_OPEN;
    case PQTRANS_INERROR: return AEGIS_PQ_TX_FAILED;
    default: return AEGIS_PQ_TX_UNKNOWN;
    }
}

/* ------------------------------------------------------------------------ */
/* Parameters                                                                */

/* libpq wants three parallel arrays; small statements use the stack. */
enum { PARAMS_ON_STACK = 16 };

typedef struct param_arrays {
    const char *values_s[PARAMS_ON_STACK];
    int lengths_s[PARAMS_ON_STACK];
    int formats_s[PARAMS_ON_STACK];
    const char **values;
    int *lengths;
    int *formats;
    void *heap;
} param_arrays;

static aegis_pq_status params_build(param_arrays *a, int n, const aegis_pq_param *params,
                                    char *err, size_t err_len) {
    a->heap = NULL;
    a->values = a->values_s;
    a->lengths = a->lengths_s;
    a->formats = a->formats_s;
    if (n < 0 || (n > 0 && params == NULL))
        return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "bad parameter count %d", n);
    if (n > 65535) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "more than 65535 parameters");
    if (n > PARAMS_ON_STACK) {
        size_t bytes = (size_t)n * (sizeof(char *) + 2 * sizeof(int));
        char *h = malloc(bytes);
        if (h == NULL) return fail(AEGIS_PQ_E_NOMEM, err, err_len, "out of memory");
        a->heap = h;
        a->values = (const char **)(void *)h;
        a->lengths = (int *)(void *)(h + (size_t)n * sizeof(char *));
        a->formats = a->lengths + n;
    }
    for (int i = 0; i < n; i++) {
        if (params[i].length > (size_t)INT_MAX) {
            free(a->heap);
            a->heap = NULL;
            return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "parameter $%d is larger than 2 GiB", i + 1);
        }
        if (params[i].format != AEGIS_PQ_TEXT && params[i].format != AEGIS_PQ_BINARY) {
            free(a->heap);
            a->heap = NULL;
            return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "parameter $%d has format %d", i + 1,
                        params[i].format);
        }
        a->values[i] = params[i].value;
        a->lengths[i] = (int)params[i].length;
        a->formats[i] = params[i].format;
    }
    return AEGIS_PQ_OK;
}

static void params_free(param_arrays *a) { free(a->heap); }

static bool valid_format(int f) { return f == AEGIS_PQ_TEXT || f == AEGIS_PQ_BINARY; }

/* ------------------------------------------------------------------------ */
/* Statements                                                                */

static aegis_pq_status not_in_pipeline(aegis_pq_conn *c, char *err, size_t err_len) {
    if (c == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no connection");
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF)
        return fail(AEGIS_PQ_E_STATE, err, err_len, "in pipeline mode");
    return AEGIS_PQ_OK;
}

aegis_pq_status aegis_pq_exec(aegis_pq_conn *c, const char *sql, aegis_pq_result **out,
                              char *err, size_t err_len) {
    if (out != NULL) *out = NULL;
    aegis_pq_status s = not_in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    if (sql == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no SQL");
    return finish(c, PQexec(c->pg, sql), out, err, err_len);
}

aegis_pq_status aegis_pq_prepare(aegis_pq_conn *c, const char *name, const char *sql,
                                 int n_params, const uint32_t *param_types,
                                 aegis_pq_result **out, char *err, size_t err_len) {
    if (out != NULL) *out = NULL;
    aegis_pq_status s = not_in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    if (name == NULL || sql == NULL || n_params < 0)
        return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "bad prepare arguments");
    PGresult *res = PQprepare(c->pg, name, sql, n_params, (const Oid *)param_types);
    return finish(c, res, out, err, err_len);
}

aegis_pq_status aegis_pq_execute(aegis_pq_conn *c, const char *name, int n_params,
                                 const aegis_pq_param *params, int result_format,
                                 aegis_pq_result **out, char *err, size_t err_len) {
    if (out != NULL) *out = NULL;
    aegis_pq_status s = not_in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    if (name == NULL || !valid_format(result_format))
        return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "bad execute arguments");
    param_arrays a;
    if ((s = params_build(&a, n_params, params, err, err_len)) != AEGIS_PQ_OK) return s;
    PGresult *res = PQexecPrepared(c->pg, name, n_params, a.values, a.lengths, a.formats, result_format);
    params_free(&a);
    return finish(c, res, out, err, err_len);
}

aegis_pq_status aegis_pq_execute_sql(aegis_pq_conn *c, const char *sql, int n_params,
                                     const uint32_t *param_types,
                                     const aegis_pq_param *params, int result_format,
                                     aegis_pq_result **out, char *err, size_t err_len) {
    if (out != NULL) *out = NULL;
    aegis_pq_status s = not_in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    if (sql == NULL || !valid_format(result_format))
        return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "bad execute arguments");
    param_arrays a;
    if ((s = params_build(&a, n_params, params, err, err_len)) != AEGIS_PQ_OK) return s;
    PGresult *res = PQexecParams(c->pg, sql, n_params, (const Oid *)param_types, a.values, a.lengths,
                                 a.formats, result_format);
    params_free(&a);
    return finish(c, res, out, err, err_len);
}

/* ------------------------------------------------------------------------ */
/* Results                                                                   */

void aegis_pq_result_free(aegis_pq_result *r) {
    if (r != NULL) PQclear(pgr(r));
}

int aegis_pq_result_rows(const aegis_pq_result *r) { return r == NULL ? 0 : PQntuples(pgr(r)); }

int aegis_pq_result_columns(const aegis_pq_result *r) { return r == NULL ? 0 : PQnfields(pgr(r)); }

int aegis_pq_result_column_index(const aegis_pq_result *r, const char *name) {
    return (r == NULL || name == NULL) ? -1 : PQfnumber(pgr(r), name);
}

uint32_t aegis_pq_result_column_type(const aegis_pq_result *r, int column) {
    if (r == NULL || column < 0 || column >= PQnfields(pgr(r))) return 0;
    return (uint32_t)PQftype(pgr(r), column);
}

static bool in_range(const aegis_pq_result *r, int row, int column) {
    return r != NULL && row >= 0 && column >= 0 && row < PQntuples(pgr(r)) && column < PQnfields(pgr(r));
}

const char *aegis_pq_result_value(const aegis_pq_result *r, int row, int column) {
    if (!in_range(r, row, column) || PQgetisnull(pgr(r), row, column)) return NULL;
    return PQgetvalue(pgr(r), row, column);
}

size_t aegis_pq_result_length(const aegis_pq_result *r, int row, int column) {
    if (!in_range(r, row, column)) return 0;
    int n = PQgetlength(pgr(r), row, column);
    return n < 0 ? 0 : (size_t)n;
}

bool aegis_pq_result_is_null(const aegis_pq_result *r, int row, int column) {
    return !in_range(r, row, column) || PQgetisnull(pgr(r), row, column);
}

uint64_t aegis_pq_result_affected(const aegis_pq_result *r) {
    if (r == NULL) return 0;
    const char *t = PQcmdTuples(pgr(r));
    if (t == NULL || *t == '\0') return 0;
    return strtoull(t, NULL, 10);
}

static const char *field(const aegis_pq_result *r, int code) {
    if (r == NULL) return "";
    const char *f = PQresultErrorField(pgr(r), code);
    return f == NULL ? "" : f;
}

const char *aegis_pq_result_sqlstate(const aegis_pq_result *r) { return field(r, PG_DIAG_SQLSTATE); }

const char *aegis_pq_result_message(const aegis_pq_result *r) { return field(r, PG_DIAG_MESSAGE_PRIMARY); }

const char *aegis_pq_result_constraint(const aegis_pq_result *r) { return field(r, PG_DIAG_CONSTRAINT_NAME); }

/* ------------------------------------------------------------------------ */
/* Pipeline mode                                                             */

static aegis_pq_status in_pipeline(aegis_pq_conn *c, char *err, size_t err_len) {
    if (c == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no connection");
    if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF)
        return fail(AEGIS_PQ_E_STATE, err, err_len, "not in pipeline mode");
    return AEGIS_PQ_OK;
}

aegis_pq_status aegis_pq_pipeline_enter(aegis_pq_conn *c, char *err, size_t err_len) {
    if (c == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no connection");
    if (!PQenterPipelineMode(c->pg)) return refused(c, err, err_len);
    return AEGIS_PQ_OK;
}

aegis_pq_status aegis_pq_pipeline_send(aegis_pq_conn *c, const char *name, int n_params,
                                       const aegis_pq_param *params, int result_format,
                                       char *err, size_t err_len) {
    aegis_pq_status s = in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    if (name == NULL || !valid_format(result_format))
        return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "bad send arguments");
    param_arrays a;
    if ((s = params_build(&a, n_params, params, err, err_len)) != AEGIS_PQ_OK) return s;
    int ok = PQsendQueryPrepared(c->pg, name, n_params, a.values, a.lengths, a.formats, result_format);
    params_free(&a);
    return ok ? AEGIS_PQ_OK : refused(c, err, err_len);
}

aegis_pq_status aegis_pq_pipeline_send_sql(aegis_pq_conn *c, const char *sql, int n_params,
                                           const uint32_t *param_types,
                                           const aegis_pq_param *params, int result_format,
                                           char *err, size_t err_len) {
    aegis_pq_status s = in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    if (sql == NULL || !valid_format(result_format))
        return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "bad send arguments");
    param_arrays a;
    if ((s = params_build(&a, n_params, params, err, err_len)) != AEGIS_PQ_OK) return s;
    int ok = PQsendQueryParams(c->pg, sql, n_params, (const Oid *)param_types, a.values, a.lengths,
                               a.formats, result_format);
    params_free(&a);
    return ok ? AEGIS_PQ_OK : refused(c, err, err_len);
}

aegis_pq_status aegis_pq_pipeline_sync(aegis_pq_conn *c, char *err, size_t err_len) {
    aegis_pq_status s = in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    return PQpipelineSync(c->pg) ? AEGIS_PQ_OK : refused(c, err, err_len);
}

aegis_pq_status aegis_pq_pipeline_next(aegis_pq_conn *c, aegis_pq_result **out,
                                       char *err, size_t err_len) {
    if (out != NULL) *out = NULL;
    aegis_pq_status s = in_pipeline(c, err, err_len);
    if (s != AEGIS_PQ_OK) return s;
    /* libpq ends each statement's results with a NULL; a NULL right after
     * that one means nothing is pending at all. */
    for (int nulls = 0; nulls < 2;) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            if (PQstatus(c->pg) == CONNECTION_BAD) return conn_fail(c, AEGIS_PQ_E_CONNECTION, err, err_len);
            nulls++;
            continue;
        }
        return finish(c, res, out, err, err_len);
    }
    return fail(AEGIS_PQ_E_STATE, err, err_len, "no pipeline result pending");
}

aegis_pq_status aegis_pq_pipeline_exit(aegis_pq_conn *c, char *err, size_t err_len) {
    if (c == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no connection");
    if (!PQexitPipelineMode(c->pg)) return refused(c, err, err_len);
    return AEGIS_PQ_OK;
}

/* ------------------------------------------------------------------------ */
/* LISTEN / NOTIFY                                                           */

int aegis_pq_socket(const aegis_pq_conn *c) { return c == NULL ? -1 : PQsocket(c->pg); }

aegis_pq_status aegis_pq_consume_input(aegis_pq_conn *c, char *err, size_t err_len) {
    if (c == NULL) return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "no connection");
    if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD)
        return conn_fail(c, AEGIS_PQ_E_CONNECTION, err, err_len);
    return AEGIS_PQ_OK;
}

/* Copies with truncation; false when cut. */
static bool copy_text(char *dst, size_t cap, const char *src, size_t *len_out) {
    size_t n = strlen(src);
    bool fits = n < cap;
    if (cap > 0) {
        size_t m = fits ? n : cap - 1;
        memcpy(dst, src, m);
        dst[m] = '\0';
        if (len_out != NULL) *len_out = m;
    } else if (len_out != NULL) {
        *len_out = 0;
    }
    return fits;
}

aegis_pq_status aegis_pq_next_notification(aegis_pq_conn *c, char *channel, size_t channel_cap,
                                           char *payload, size_t payload_cap,
                                           size_t *payload_len, int *sender_pid) {
    if (c == NULL || (channel == NULL && channel_cap > 0) || (payload == NULL && payload_cap > 0))
        return AEGIS_PQ_E_INVALID_ARGUMENT;
    PGnotify *n = PQnotifies(c->pg);
    if (n == NULL) return AEGIS_PQ_NONE;
    bool ok = copy_text(channel, channel_cap, n->relname, NULL);
    ok = copy_text(payload, payload_cap, n->extra != NULL ? n->extra : "", payload_len) && ok;
    if (sender_pid != NULL) *sender_pid = n->be_pid;
    PQfreemem(n);
    return ok ? AEGIS_PQ_OK : AEGIS_PQ_E_BUFFER_TOO_SMALL;
}

/* ------------------------------------------------------------------------ */
/* Escaping                                                                  */

aegis_pq_status aegis_pq_escape_identifier(aegis_pq_conn *c, const char *s, size_t len,
                                           char *out, size_t out_cap,
                                           char *err, size_t err_len) {
    if (c == NULL || (s == NULL && len > 0) || out == NULL || out_cap == 0)
        return fail(AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len, "bad escape arguments");
    char *e = PQescapeIdentifier(c->pg, s == NULL ? "" : s, len);
    if (e == NULL) return conn_fail(c, AEGIS_PQ_E_INVALID_ARGUMENT, err, err_len);
    bool fits = copy_text(out, out_cap, e, NULL);
    PQfreemem(e);
    if (!fits) return fail(AEGIS_PQ_E_BUFFER_TOO_SMALL, err, err_len, "escaped identifier does not fit");
    return AEGIS_PQ_OK;
}
