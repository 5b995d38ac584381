/*
 * test_gateway_io.c — the transport in gateway mode (CSources/AegisIO/src/
 * server.c with echo off) against the client (client.c), in one thread,
 * with this test playing the control plane through the core's API.
 *
 * Build and run (from the repository root):
 *   cc -std=gnu17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
 *      -I CSources/AegisCore/include -I CSources/AegisCore/src -I CSources/AegisIO/include \
 *      -I CSources/AegisIO/src -I Tests/CoreC CSources/AegisCore/src/?*.c CSources/AegisIO/src/?*.c \
 *      Tests/CoreC/test_gateway_io.c -lsodium -lssl -lcrypto -luring -lpthread \
 *      -o /tmp/test_gateway_io && /tmp/test_gateway_io
 *
 * For each backend (io_uring, skipped with a note when the kernel refuses
 * it, and epoll), one plaintext gateway server (one worker, port 0, auth
 * timeout 400 ms, idle timeout 1500 ms) and one client endpoint on the same
 * backend, pumped alternately (aegis_wsc_run for a few ms, then
 * aegis_io_poll_events); every wait has a deadline, nothing sleeps blindly.
 *
 *   upgrade refusals: /nope 404 not_found, "agent 7" 400 invalid_agent_id,
 *     no User-Agent 400 missing_header (and no server event for any);
 *   the happy path: UPGRADED → auth request → AUTH_REQUEST → verify →
 *     gateway_accept → aegis_io_accept → auth_ok → handshake_finish → an
 *     event up (1000 bytes) → MESSAGE; a request down (aegis_io_send) →
 *     aegis_open on the agent; an ack up; aegis_io_close 4009 → CLOSED on
 *     both sides;
 *   commands for a dead connection id (send, close, refuse, accept) are
 *     accepted and dropped, even once its slot holds a new connection;
 *   20 sealed messages in a burst arrive in order; a client close (1000);
 *   auth timeout → 4002; a malformed auth request and a clock skew of
 *     1000 s → auth_error + 4001; a refusal by the control plane → auth_error
 *     `revoked` + 4003; a second message before auth_ok → 4004;
 *   after auth_ok: binary → 1003, a tampered payload → 4004, silence → 4006;
 *   drain: the live session gets 1001, a new upgrade 503 `draining`, and
 *     the server becomes idle.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aegis_core.h"
#include "aegis_io.h"
#include "aegis_wsc.h"
#include "check.h"

#define WAIT_MS 5000
#define PUMP_MS 5
#define ANY_CONN UINT64_MAX
#define AGENT_ID "agent-7"

/* ------------------------------------------------------------------------ */
/* The harness: both ends pumped in turn, their events copied into queues   */

typedef struct cq_item {
    aegis_wsc_event ev;
    uint8_t *data;            /* owned copy of ev.data */
} cq_item;

typedef struct sq_item {
    aegis_io_event ev;
    uint8_t *pt;              /* owned copy of ev.message.plaintext */
} sq_item;

typedef struct harness {
    aegis_io *io;
    aegis_wsc *ep;
    uint16_t port;
    aegis_identity *server_id, *agent_id;
    uint8_t server_pk[AEGIS_PUBLIC_KEY_BYTES], agent_pk[AEGIS_PUBLIC_KEY_BYTES];
    char key_header[96];      /* "X-Agent-Public-Key: <b64>" */
    cq_item *cq;
    size_t cn, ccap;
    sq_item *sq;
    size_t sn, scap;
    uint8_t *held_c, *held_s; /* data of the event handed out last, per side */
    unsigned sessions;        /* for distinct session ids */
    unsigned msg_seq;         /* for distinct message ids */
} harness;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_s(void) { return (uint64_t)time(NULL); }

static uint8_t *dup_bytes(const void *p, size_t n) {
    if (p == NULL || n == 0) return NULL;
    uint8_t *q = malloc(n);
    if (q) memcpy(q, p, n);
    return q;
}

static const char *ckind(aegis_wsc_event_kind k) {
    switch (k) {
    case AEGIS_WSC_EV_OPEN: return "OPEN";
    case AEGIS_WSC_EV_REFUSED: return "REFUSED";
    case AEGIS_WSC_EV_MESSAGE: return "MESSAGE";
    case AEGIS_WSC_EV_PONG: return "PONG";
    case AEGIS_WSC_EV_CLOSED: return "CLOSED";
    case AEGIS_WSC_EV_ERROR: return "ERROR";
    }
    return "?";
}

static const char *skind(aegis_io_event_kind k) {
    switch (k) {
    case AEGIS_IO_EV_UPGRADED: return "UPGRADED";
    case AEGIS_IO_EV_AUTH_REQUEST: return "AUTH_REQUEST";
    case AEGIS_IO_EV_MESSAGE: return "MESSAGE";
    case AEGIS_IO_EV_CLOSED: return "CLOSED";
    }
    return "?";
}

/* One turn: the client's loop for up to ms, then every pending server event. */
static void pump(harness *h, int ms) {
    aegis_wsc_event evs[64];
    int r = aegis_wsc_run(h->ep, evs, 64, ms);
    if (r < 0) fprintf(stderr, "    aegis_wsc_run: %s\n", strerror(-r));
    for (int i = 0; i < r; i++) {
        if (h->cn == h->ccap) {
            h->ccap = h->ccap ? h->ccap * 2 : 64;
            h->cq = realloc(h->cq, h->ccap * sizeof *h->cq);
        }
        cq_item *it = &h->cq[h->cn++];
        it->ev = evs[i];
        it->data = dup_bytes(evs[i].data, evs[i].len);
        it->ev.data = it->data;
    }
    static aegis_io_event sevs[32];
    for (;;) {
        size_t n = aegis_io_poll_events(h->io, sevs, 32);
        for (size_t i = 0; i < n; i++) {
            if (h->sn == h->scap) {
                h->scap = h->scap ? h->scap * 2 : 64;
                h->sq = realloc(h->sq, h->scap * sizeof *h->sq);
            }
            sq_item *it = &h->sq[h->sn++];
            it->ev = sevs[i];
            it->pt = NULL;
            if (sevs[i].kind == AEGIS_IO_EV_MESSAGE) {
                /* plaintext and ciphertext are adjacent in the event record */
                it->pt = dup_bytes(sevs[i].message.plaintext,
                                   sevs[i].message.plaintext_len + sevs[i].message.ciphertext_len);
                it->ev.message.plaintext = it->pt;
                it->ev.message.ciphertext = it->pt + sevs[i].message.plaintext_len;
            }
        }
        if (n < 32) break;
    }
}

/* The next client event of `conn`, which must be of kind `want`. Its data
 * stays valid until the next wait_client. */
static bool wait_client_ms(harness *h, uint64_t conn, aegis_wsc_event_kind want,
                           aegis_wsc_event *out, int timeout_ms) {
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        for (size_t i = 0; i < h->cn; i++) {
            if (h->cq[i].ev.conn != conn) continue;
            cq_item it = h->cq[i];
            memmove(&h->cq[i], &h->cq[i + 1], (h->cn - i - 1) * sizeof *h->cq);
            h->cn--;
            free(h->held_c);
            h->held_c = it.data;
            if (out) *out = it.ev;
            if (it.ev.kind != want) {
                fprintf(stderr, "    client: got %s (status %d, code %u, error %d, %zu bytes: %.*s), wanted %s\n",
                        ckind(it.ev.kind), it.ev.status, it.ev.close_code, it.ev.error, it.ev.len,
                        (int)(it.ev.len < 200 ? it.ev.len : 200), it.ev.data ? (const char *)it.ev.data : "",
                        ckind(want));
                return false;
            }
            return true;
        }
        if (now_ms() >= end) {
            fprintf(stderr, "    client: no event within %d ms (wanted %s)\n", timeout_ms, ckind(want));
            return false;
        }
        pump(h, PUMP_MS);
    }
}

static bool wait_client(harness *h, uint64_t conn, aegis_wsc_event_kind want, aegis_wsc_event *out) {
    return wait_client_ms(h, conn, want, out, WAIT_MS);
}

/* The next server event of `conn` (ANY_CONN: of any connection), which must
 * be of kind `want`. Its plaintext stays valid until the next wait_server. */
static bool wait_server_ms(harness *h, uint64_t conn, aegis_io_event_kind want,
                           aegis_io_event *out, int timeout_ms) {
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        for (size_t i = 0; i < h->sn; i++) {
            if (conn != ANY_CONN && h->sq[i].ev.conn != conn) continue;
            sq_item it = h->sq[i];
            memmove(&h->sq[i], &h->sq[i + 1], (h->sn - i - 1) * sizeof *h->sq);
            h->sn--;
            free(h->held_s);
            h->held_s = it.pt;
            if (out) *out = it.ev;
            if (it.ev.kind != want) {
                fprintf(stderr, "    server: got %s (conn %llx, code %u), wanted %s\n",
                        skind(it.ev.kind), (unsigned long long)it.ev.conn, it.ev.close_code,
                        skind(want));
                return false;
            }
            return true;
        }
        if (now_ms() >= end) {
            fprintf(stderr, "    server: no event within %d ms (wanted %s)\n", timeout_ms, skind(want));
            return false;
        }
        pump(h, PUMP_MS);
    }
}

static bool wait_server(harness *h, uint64_t conn, aegis_io_event_kind want, aegis_io_event *out) {
    return wait_server_ms(h, conn, want, out, WAIT_MS);
}

/* Nothing left over on either side (the end of each scenario). */
static void check_quiet(harness *h, const char *scenario) {
    pump(h, 0);
    for (size_t i = 0; i < h->cn; i++) {
        fprintf(stderr, "    %s: stray client event %s on %llx\n", scenario, ckind(h->cq[i].ev.kind),
                (unsigned long long)h->cq[i].ev.conn);
        free(h->cq[i].data);
    }
    for (size_t i = 0; i < h->sn; i++) {
        fprintf(stderr, "    %s: stray server event %s on %llx (code %u)\n", scenario,
                skind(h->sq[i].ev.kind), (unsigned long long)h->sq[i].ev.conn, h->sq[i].ev.close_code);
        free(h->sq[i].pt);
    }
    CHECK_EQ_INT(h->cn, 0);
    CHECK_EQ_INT(h->sn, 0);
    h->cn = h->sn = 0;
}

/* ------------------------------------------------------------------------ */
/* The agent's side and the control plane's                                 */

static bool connect_raw(harness *h, const char *path, const char *const *hdrs, size_t n,
                        uint64_t *cconn) {
    int r = aegis_wsc_connect(h->ep, "127.0.0.1", h->port, path, hdrs, n, NULL, cconn);
    CHECK_EQ_INT(r, 0);
    return r == 0;
}

/* An upgrade with the agent's headers: OPEN on the client, UPGRADED on the
 * server with the same agent id and key. */
static bool agent_connect(harness *h, uint64_t *cconn, uint64_t *sconn) {
    const char *hdrs[] = { "X-Agent-ID: " AGENT_ID, h->key_header, "User-Agent: Aegis-Agent/1.0" };
    if (!connect_raw(h, "/ws/agent", hdrs, 3, cconn)) return false;
    bool ok = wait_client(h, *cconn, AEGIS_WSC_EV_OPEN, NULL);
    CHECK(ok);
    if (!ok) return false;
    aegis_io_event ev;
    ok = wait_server(h, ANY_CONN, AEGIS_IO_EV_UPGRADED, &ev);
    CHECK(ok);
    if (!ok) return false;
    CHECK(strcmp(ev.agent_id, AGENT_ID) == 0);
    CHECK_EQ_MEM(ev.public_key, h->agent_pk, AEGIS_PUBLIC_KEY_BYTES);
    CHECK(strcmp(ev.enrollment_token, "") == 0);
    CHECK(strncmp(ev.peer, "127.0.0.1:", 10) == 0);
    *sconn = ev.conn;
    return true;
}

/* The agent's auth request, sent as text. */
static bool send_auth_request(harness *h, uint64_t cconn, uint64_t timestamp,
                              aegis_agent_handshake **hs) {
    char json[1024];
    CHECK(aegis_auth_request_json_max() <= sizeof json);
    size_t len = 0;
    aegis_auth_request_params params = {
        .agent_id = AGENT_ID, .agent_id_len = strlen(AGENT_ID), .timestamp = timestamp,
        .with_ephemeral_key = true,
    };
    aegis_status st = aegis_agent_handshake_begin(h->agent_id, &params, hs, json, sizeof json, &len);
    CHECK_STATUS(st, AEGIS_OK);
    if (st != AEGIS_OK) return false;
    int r = aegis_wsc_send(h->ep, cconn, true, json, len);
    CHECK_EQ_INT(r, 0);
    return r == 0;
}

/* The control plane's accept: the gateway's session and auth_ok, handed to
 * the worker. */
static bool control_accept(harness *h, uint64_t sconn, const aegis_auth_request *req,
                           char session_id[AEGIS_SESSION_ID_LEN + 1]) {
    snprintf(session_id, AEGIS_SESSION_ID_LEN + 1, "5e551011-0000-4000-8000-%012x",
             ++h->sessions);
    uint64_t now = now_s();
    aegis_auth_ok_params p = {
        .session_id = session_id, .timestamp = now, .expires_at = now + 3600,
        .heartbeat_interval = 30,
    };
    aegis_session *gs = NULL;
    uint8_t token_hash[AEGIS_SHA256_BYTES];
    char json[2048];
    CHECK(aegis_auth_ok_json_max() <= sizeof json);
    size_t len = 0;
    aegis_status st = aegis_gateway_accept(h->server_id, req, &p, &gs, token_hash, json,
                                           sizeof json, &len);
    CHECK_STATUS(st, AEGIS_OK);
    if (st != AEGIS_OK) return false;
    CHECK(aegis_session_role(gs) == AEGIS_ROLE_GATEWAY);
    int r = aegis_io_accept(h->io, sconn, gs, json, len);
    CHECK_EQ_INT(r, 0);
    if (r != 0) {
        aegis_session_free(gs);
        return false;
    }
    return true;
}

/* A whole handshake, every step checked: returns the agent's session. */
static aegis_session *establish(harness *h, uint64_t *cconn, uint64_t *sconn) {
    if (!agent_connect(h, cconn, sconn)) return NULL;
    aegis_agent_handshake *hs = NULL;
    if (!send_auth_request(h, *cconn, now_s(), &hs)) {
        aegis_agent_handshake_free(hs);
        return NULL;
    }
    aegis_io_event ev;
    bool ok = wait_server(h, *sconn, AEGIS_IO_EV_AUTH_REQUEST, &ev);
    CHECK(ok);
    aegis_session *as = NULL;
    char sid[AEGIS_SESSION_ID_LEN + 1];
    if (ok) {
        CHECK(strcmp(ev.auth.agent_id, AGENT_ID) == 0);
        CHECK_EQ_INT(ev.auth.agent_id_len, strlen(AGENT_ID));
        CHECK_EQ_MEM(ev.auth.public_key, h->agent_pk, AEGIS_PUBLIC_KEY_BYTES);
        CHECK(ev.auth.has_ephemeral_key);
        CHECK_EQ_INT(ev.auth.nonce_len, AEGIS_AUTH_NONCE_DEFAULT);
        CHECK(ev.auth.timestamp + 5 >= now_s() && ev.auth.timestamp <= now_s());
        CHECK_STATUS(aegis_auth_request_verify(&ev.auth), AEGIS_OK);
        ok = control_accept(h, *sconn, &ev.auth, sid);
    }
    aegis_wsc_event cev;
    if (ok) {
        ok = wait_client(h, *cconn, AEGIS_WSC_EV_MESSAGE, &cev);
        CHECK(ok);
    }
    if (ok) {
        CHECK(cev.text);
        aegis_auth_ok aok;
        aegis_auth_error aerr;
        aegis_status st = aegis_agent_handshake_finish(hs, (const char *)cev.data, cev.len,
                                                       h->server_pk, &aok, &aerr, &as);
        CHECK_STATUS(st, AEGIS_OK);
        if (st == AEGIS_OK) {
            CHECK(strcmp(aok.session_id, sid) == 0);
            CHECK_EQ_MEM(aok.server_key, h->server_pk, AEGIS_PUBLIC_KEY_BYTES);
            CHECK_EQ_INT(aok.heartbeat_interval, 30);
            CHECK_EQ_INT(aok.expires_at - aok.timestamp, 3600);
            CHECK(aegis_session_role(as) == AEGIS_ROLE_AGENT);
            CHECK(memcmp(aegis_session_id(as), sid, AEGIS_SESSION_ID_LEN) == 0);
        } else {
            as = NULL;
        }
    }
    aegis_agent_handshake_free(hs);
    return as;
}

/* Seals a message on the agent's session into a malloc'd JSON text. */
static char *agent_seal(harness *h, const aegis_session *as, aegis_message_type type,
                        const char *channel, const char *ref, const uint8_t *pt, size_t pt_len,
                        char id_out[AEGIS_ID_MAX + 1], size_t *json_len) {
    char id[AEGIS_ID_MAX + 1];
    snprintf(id, sizeof id, "up-%u", ++h->msg_seq);
    if (id_out) strcpy(id_out, id);
    aegis_message_header hd = {
        .id = id, .id_len = strlen(id), .type = type, .channel = channel,
        .channel_len = strlen(channel), .ref = ref, .ref_len = ref ? strlen(ref) : 0,
        .timestamp = now_s(),
    };
    size_t scap = aegis_seal_scratch_size(pt_len), jcap = aegis_seal_json_max(pt_len);
    uint8_t *scratch = malloc(scap);
    char *json = malloc(jcap);
    aegis_status st = aegis_seal(as, &hd, pt, pt_len, NULL, scratch, scap, json, jcap, json_len);
    CHECK_STATUS(st, AEGIS_OK);
    free(scratch);
    if (st != AEGIS_OK) {
        free(json);
        return NULL;
    }
    return json;
}

/* Both sides see the connection end with `code`. */
static void expect_closed(harness *h, uint64_t cconn, uint64_t sconn, uint16_t code,
                          uint64_t *client_ms) {
    aegis_wsc_event cev;
    bool ok = wait_client(h, cconn, AEGIS_WSC_EV_CLOSED, &cev);
    CHECK(ok);
    if (client_ms) *client_ms = now_ms();
    if (ok) CHECK_EQ_INT(cev.close_code, code);
    aegis_io_event sev;
    ok = wait_server(h, sconn, AEGIS_IO_EV_CLOSED, &sev);
    CHECK(ok);
    if (ok) CHECK_EQ_INT(sev.close_code, code);
}

/* The client's next event is an auth_error text with this code. */
static void expect_auth_error(harness *h, uint64_t cconn, aegis_agent_handshake *hs,
                              const char *code, const char *message) {
    aegis_wsc_event cev;
    bool ok = wait_client(h, cconn, AEGIS_WSC_EV_MESSAGE, &cev);
    CHECK(ok);
    if (!ok) return;
    CHECK(cev.text);
    char want[128];
    snprintf(want, sizeof want, "{\"type\":\"auth_error\",\"code\":\"%s\",", code);
    CHECK(cev.len >= strlen(want) && memcmp(cev.data, want, strlen(want)) == 0);
    if (hs) {
        /* and the agent side of the core reads it as a refusal */
        aegis_auth_ok aok;
        aegis_auth_error aerr;
        aegis_session *s = NULL;
        CHECK_STATUS(aegis_agent_handshake_finish(hs, (const char *)cev.data, cev.len, h->server_pk,
                                                  &aok, &aerr, &s),
                     AEGIS_E_AUTH_REFUSED);
        CHECK(s == NULL);
        CHECK(strcmp(aerr.code, code) == 0);
        if (message) CHECK(strcmp(aerr.message, message) == 0);
    }
}

/* ------------------------------------------------------------------------ */
/* Scenarios                                                                 */

static void expect_refused(harness *h, const char *path, const char *const *hdrs, size_t n,
                           int status, const char *code) {
    uint64_t cconn;
    if (!connect_raw(h, path, hdrs, n, &cconn)) return;
    aegis_wsc_event ev;
    bool ok = wait_client(h, cconn, AEGIS_WSC_EV_REFUSED, &ev);
    CHECK(ok);
    if (!ok) return;
    CHECK_EQ_INT(ev.status, status);
    char want[96];
    snprintf(want, sizeof want, "{\"error\":{\"code\":\"%s\"", code);
    CHECK(ev.len >= strlen(want) && memcmp(ev.data, want, strlen(want)) == 0);
    if (ev.len < strlen(want) || memcmp(ev.data, want, strlen(want)) != 0)
        fprintf(stderr, "    refused body: %.*s\n", (int)ev.len, (const char *)ev.data);
}

static void test_upgrade_refusals(harness *h) {
    const char *good[] = { "X-Agent-ID: " AGENT_ID, h->key_header, "User-Agent: Aegis-Agent/1.0" };
    expect_refused(h, "/nope", good, 3, 404, "not_found");
    const char *bad_id[] = { "X-Agent-ID: agent 7", h->key_header, "User-Agent: Aegis-Agent/1.0" };
    expect_refused(h, "/ws/agent", bad_id, 3, 400, "invalid_agent_id");
    const char *no_ua[] = { "X-Agent-ID: " AGENT_ID, h->key_header };
    expect_refused(h, "/ws/agent", no_ua, 2, 400, "missing_header");
    /* none of them was upgraded: no server event (checked by check_quiet,
     * after a complete upgrade that must be the server's first event) */
    uint64_t cconn, sconn;
    if (agent_connect(h, &cconn, &sconn)) {
        CHECK_EQ_INT(aegis_wsc_close(h->ep, cconn, 1000, NULL), 0);
        expect_closed(h, cconn, sconn, 1000, NULL);
    }
    check_quiet(h, "upgrade refusals");
}

/* Returns the dead server connection id, for test_dead_ids. */
static uint64_t test_happy_path(harness *h) {
    uint64_t cconn, sconn;
    aegis_session *as = establish(h, &cconn, &sconn);
    CHECK(as != NULL);
    if (as == NULL) return UINT64_MAX;

    /* an event up: 1000 bytes on "telemetry" */
    uint8_t pt[1000];
    for (size_t i = 0; i < sizeof pt; i++) pt[i] = (uint8_t)(i * 131 + 7);
    char id[AEGIS_ID_MAX + 1];
    size_t jlen = 0;
    char *json = agent_seal(h, as, AEGIS_MSG_EVENT, "telemetry", NULL, pt, sizeof pt, id, &jlen);
    if (json) {
        CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, true, json, jlen), 0);
        char *json_copy = strndup(json, jlen);
        free(json);
        aegis_io_event ev;
        bool ok = wait_server(h, sconn, AEGIS_IO_EV_MESSAGE, &ev);
        CHECK(ok);
        if (ok) {
            CHECK(strcmp(ev.message.id, id) == 0);
            CHECK_EQ_INT(ev.message.type, AEGIS_MSG_EVENT);
            CHECK(strcmp(ev.message.channel, "telemetry") == 0);
            CHECK_EQ_INT(ev.message.ref_len, 0);
            CHECK(!ev.message.duplicate);
            CHECK_EQ_INT(ev.message.plaintext_len, sizeof pt);
            if (ev.message.plaintext_len == sizeof pt) CHECK_EQ_MEM(ev.message.plaintext, pt, sizeof pt);
            /* The audit fields: the sealed envelope's, byte for byte. */
            CHECK_EQ_INT(ev.message.ciphertext_len, sizeof pt + AEGIS_TAG_BYTES);
            CHECK(ev.message.ciphertext != NULL);
            CHECK(strstr(json_copy, "\"payload\":\"") != NULL);
            if (ev.message.ciphertext && ev.message.ciphertext_len == sizeof pt + AEGIS_TAG_BYTES) {
                char b64[2048];
                aegis_b64_encode(ev.message.ciphertext, ev.message.ciphertext_len, b64);
                b64[aegis_b64_encoded_len(ev.message.ciphertext_len)] = '\0';
                CHECK(strstr(json_copy, b64) != NULL);
            }
        }
        free(json_copy);
    }

    /* a request down, sealed by the worker, opened by the agent */
    const char *req_pt = "{\"job\":\"run\",\"args\":[1,2,3]}";
    aegis_message_header hd = {
        .id = "down-req-1", .id_len = 10, .type = AEGIS_MSG_REQUEST, .channel = "jobs/run",
        .channel_len = 8, .timestamp = now_s(),
    };
    CHECK_EQ_INT(aegis_io_send(h->io, sconn, &hd, (const uint8_t *)req_pt, strlen(req_pt)), 0);
    aegis_wsc_event cev;
    bool ok = wait_client(h, cconn, AEGIS_WSC_EV_MESSAGE, &cev);
    CHECK(ok);
    if (ok) {
        CHECK(cev.text);
        uint8_t *buf = malloc(aegis_open_buffer_size(cev.len));
        aegis_message m;
        aegis_status st = aegis_open(as, (const char *)cev.data, cev.len, now_s(), buf,
                                     aegis_open_buffer_size(cev.len), &m);
        CHECK_STATUS(st, AEGIS_OK);
        if (st == AEGIS_OK) {
            CHECK(strcmp(m.id, "down-req-1") == 0);
            CHECK_EQ_INT(m.type, AEGIS_MSG_REQUEST);
            CHECK(strcmp(m.channel, "jobs/run") == 0);
            CHECK_EQ_INT(m.plaintext_len, strlen(req_pt));
            if (m.plaintext_len == strlen(req_pt)) CHECK_EQ_MEM(m.plaintext, req_pt, strlen(req_pt));
            CHECK(!m.duplicate);
        }
        free(buf);
    }

    /* the agent acks it (the ack plaintext of §5) */
    aegis_id ids[1] = { { .len = 10 } };
    memcpy(ids[0].bytes, "down-req-1", 10);
    uint8_t ack_pt[128];
    size_t ack_len = 0;
    CHECK_STATUS(aegis_ack_plaintext_build(ids, 1, ack_pt, sizeof ack_pt, &ack_len), AEGIS_OK);
    json = agent_seal(h, as, AEGIS_MSG_ACK, "aegis.ack", "down-req-1", ack_pt, ack_len, id, &jlen);
    if (json) {
        CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, true, json, jlen), 0);
        free(json);
        aegis_io_event ev;
        ok = wait_server(h, sconn, AEGIS_IO_EV_MESSAGE, &ev);
        CHECK(ok);
        if (ok) {
            CHECK_EQ_INT(ev.message.type, AEGIS_MSG_ACK);
            CHECK(strcmp(ev.message.ref, "down-req-1") == 0);
            aegis_id got[4];
            size_t n = 0;
            CHECK_STATUS(aegis_ack_plaintext_parse(ev.message.plaintext, ev.message.plaintext_len,
                                                   got, 4, &n), AEGIS_OK);
            CHECK(n == 1 && got[0].len == 10 && memcmp(got[0].bytes, "down-req-1", 10) == 0);
        }
    }

    /* replaced by a newer session: 4009 on both sides */
    CHECK_EQ_INT(aegis_io_close(h->io, sconn, 4009, "replaced"), 0);
    expect_closed(h, cconn, sconn, 4009, NULL);
    aegis_session_free(as);
    check_quiet(h, "happy path");
    return sconn;
}

/* Commands for a connection that is gone are accepted and dropped, also
 * when its slot holds a newer connection. */
static void test_dead_ids(harness *h, uint64_t dead) {
    if (dead == UINT64_MAX) return;
    uint64_t cconn, sconn;
    aegis_session *as = establish(h, &cconn, &sconn);
    CHECK(as != NULL);
    if (as == NULL) return;
    CHECK(sconn != dead);
    if (((sconn >> 24) & 0xffffffff) != ((dead >> 24) & 0xffffffff))
        printf("    note: the new connection did not reuse the dead one's slot\n");

    const uint8_t pt[] = "for nobody";
    aegis_message_header hd = {
        .id = "dead-1", .id_len = 6, .type = AEGIS_MSG_EVENT, .channel = "jobs/run",
        .channel_len = 8,
    };
    CHECK_EQ_INT(aegis_io_send(h->io, dead, &hd, pt, sizeof pt - 1), 0);
    CHECK_EQ_INT(aegis_io_close(h->io, dead, 4003, "revoked"), 0);
    CHECK_EQ_INT(aegis_io_refuse(h->io, dead, "revoked", "gone", 4003), 0);
    /* an accept for a dead id: the worker frees the session */
    aegis_auth_request fake;
    memset(&fake, 0, sizeof fake);
    {
        /* a real request to build a real session from */
        aegis_agent_handshake *hs = NULL;
        char json[1024];
        size_t len = 0;
        aegis_auth_request_params params = {
            .agent_id = AGENT_ID, .agent_id_len = strlen(AGENT_ID), .timestamp = now_s(),
            .with_ephemeral_key = true,
        };
        CHECK_STATUS(aegis_agent_handshake_begin(h->agent_id, &params, &hs, json, sizeof json, &len),
                     AEGIS_OK);
        aegis_auth_context ctx = {
            .header_agent_id = AGENT_ID, .header_agent_id_len = strlen(AGENT_ID),
            .header_public_key = h->agent_pk, .now = now_s(),
        };
        CHECK_STATUS(aegis_auth_request_check(json, len, &ctx, &fake), AEGIS_OK);
        char sid[AEGIS_SESSION_ID_LEN + 1];
        CHECK(control_accept(h, dead, &fake, sid));
        aegis_agent_handshake_free(hs);
    }
    /* a worker index that does not exist */
    CHECK_EQ_INT(aegis_io_send(h->io, UINT64_C(7) << 56, &hd, pt, sizeof pt - 1), -EINVAL);
    CHECK_EQ_INT(aegis_io_close(h->io, UINT64_C(7) << 56, 1000, NULL), -EINVAL);

    /* the live connection is untouched: the next thing it gets is this */
    aegis_message_header live = {
        .id = "live-1", .id_len = 6, .type = AEGIS_MSG_EVENT, .channel = "jobs/run",
        .channel_len = 8,
    };
    CHECK_EQ_INT(aegis_io_send(h->io, sconn, &live, pt, sizeof pt - 1), 0);
    aegis_wsc_event cev;
    bool ok = wait_client(h, cconn, AEGIS_WSC_EV_MESSAGE, &cev);
    CHECK(ok);
    if (ok) {
        uint8_t *buf = malloc(aegis_open_buffer_size(cev.len));
        aegis_message m;
        CHECK_STATUS(aegis_open(as, (const char *)cev.data, cev.len, now_s(), buf,
                                aegis_open_buffer_size(cev.len), &m), AEGIS_OK);
        CHECK(strcmp(m.id, "live-1") == 0);
        free(buf);
    }
    /* and it still works both ways */
    char id[AEGIS_ID_MAX + 1];
    size_t jlen;
    char *json = agent_seal(h, as, AEGIS_MSG_EVENT, "telemetry", NULL, pt, sizeof pt - 1, id, &jlen);
    if (json) {
        CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, true, json, jlen), 0);
        free(json);
        aegis_io_event ev;
        ok = wait_server(h, sconn, AEGIS_IO_EV_MESSAGE, &ev);
        CHECK(ok);
        if (ok) CHECK(strcmp(ev.message.id, id) == 0);
    }
    CHECK_EQ_INT(aegis_wsc_close(h->ep, cconn, 1000, NULL), 0);
    expect_closed(h, cconn, sconn, 1000, NULL);
    /* and its own id, now dead too, is dropped as well */
    CHECK_EQ_INT(aegis_io_send(h->io, sconn, &live, pt, sizeof pt - 1), 0);
    pump(h, PUMP_MS);
    aegis_session_free(as);
    check_quiet(h, "dead ids");
}

#define BURST 20

static void test_burst(harness *h) {
    uint64_t cconn, sconn;
    aegis_session *as = establish(h, &cconn, &sconn);
    CHECK(as != NULL);
    if (as == NULL) return;
    char ids[BURST][AEGIS_ID_MAX + 1];
    uint8_t pts[BURST][64];
    size_t pt_lens[BURST];
    /* all queued before the client's loop runs: one write, one batch */
    for (int i = 0; i < BURST; i++) {
        pt_lens[i] = (size_t)snprintf((char *)pts[i], sizeof pts[i], "{\"seq\":%d}", i);
        size_t jlen;
        char *json = agent_seal(h, as, AEGIS_MSG_EVENT, "telemetry/burst", NULL, pts[i],
                                pt_lens[i], ids[i], &jlen);
        if (json == NULL) break;
        CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, true, json, jlen), 0);
        free(json);
    }
    for (int i = 0; i < BURST; i++) {
        aegis_io_event ev;
        bool ok = wait_server(h, sconn, AEGIS_IO_EV_MESSAGE, &ev);
        CHECK(ok);
        if (!ok) break;
        if (strcmp(ev.message.id, ids[i]) != 0 || ev.message.plaintext_len != pt_lens[i] ||
            memcmp(ev.message.plaintext, pts[i], pt_lens[i]) != 0) {
            fprintf(stderr, "    burst message %d: got id %s\n", i, ev.message.id);
            CHECK(false);
        }
    }
    /* the agent closes: the server echoes 1000 and reports it */
    CHECK_EQ_INT(aegis_wsc_close(h->ep, cconn, 1000, "bye"), 0);
    aegis_wsc_event cev;
    bool ok = wait_client(h, cconn, AEGIS_WSC_EV_CLOSED, &cev);
    CHECK(ok);
    if (ok) CHECK_EQ_INT(cev.close_code, 1000);
    aegis_io_event sev;
    ok = wait_server(h, sconn, AEGIS_IO_EV_CLOSED, &sev);
    CHECK(ok);
    if (ok) {
        CHECK_EQ_INT(sev.close_code, 1000);
        CHECK(sev.closed_by_peer);
    }
    aegis_session_free(as);
    check_quiet(h, "burst");
}

static void test_auth_timeout(harness *h) {
    uint64_t cconn, sconn;
    if (!agent_connect(h, &cconn, &sconn)) return;
    uint64_t t0 = now_ms(), t1 = 0;
    expect_closed(h, cconn, sconn, 4002, &t1);
    uint64_t took = t1 - t0;
    printf("    auth timeout after %llu ms\n", (unsigned long long)took);
    CHECK(took >= 350 && took <= 1500);
    check_quiet(h, "auth timeout");
}

static void test_bad_auth(harness *h) {
    /* malformed: auth_error malformed, then 4001; no AUTH_REQUEST */
    uint64_t cconn, sconn;
    if (agent_connect(h, &cconn, &sconn)) {
        const char *bad = "{\"agent_id\":\"agent-7\"}";
        CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, true, bad, strlen(bad)), 0);
        expect_auth_error(h, cconn, NULL, "malformed", NULL);
        expect_closed(h, cconn, sconn, 4001, NULL);
    }
    check_quiet(h, "malformed");

    /* 1000 s off: clock_skew, 4001 */
    aegis_agent_handshake *hs = NULL;
    if (agent_connect(h, &cconn, &sconn) && send_auth_request(h, cconn, now_s() - 1000, &hs)) {
        expect_auth_error(h, cconn, hs, "clock_skew", NULL);
        expect_closed(h, cconn, sconn, 4001, NULL);
    }
    aegis_agent_handshake_free(hs);
    check_quiet(h, "clock skew");
}

static void test_refuse(harness *h) {
    uint64_t cconn, sconn;
    aegis_agent_handshake *hs = NULL;
    if (agent_connect(h, &cconn, &sconn) && send_auth_request(h, cconn, now_s(), &hs)) {
        aegis_io_event ev;
        bool ok = wait_server(h, sconn, AEGIS_IO_EV_AUTH_REQUEST, &ev);
        CHECK(ok);
        if (ok) {
            CHECK_STATUS(aegis_auth_request_verify(&ev.auth), AEGIS_OK);
            CHECK_EQ_INT(aegis_io_refuse(h->io, sconn, "revoked", "agent revoked", 4003), 0);
            expect_auth_error(h, cconn, hs, "revoked", "agent revoked");
            expect_closed(h, cconn, sconn, 4003, NULL);
        }
    }
    aegis_agent_handshake_free(hs);
    check_quiet(h, "refuse");
}

static void test_message_before_auth_ok(harness *h) {
    uint64_t cconn, sconn;
    aegis_agent_handshake *hs = NULL;
    /* both queued before the client's loop runs; the AUTH_REQUEST is never
     * answered, so the second message always meets C_AUTH_DECISION */
    if (agent_connect(h, &cconn, &sconn) && send_auth_request(h, cconn, now_s(), &hs)) {
        CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, true, "{\"too\":\"soon\"}", 14), 0);
        CHECK(wait_server(h, sconn, AEGIS_IO_EV_AUTH_REQUEST, NULL));
        expect_closed(h, cconn, sconn, 4004, NULL);
    }
    aegis_agent_handshake_free(hs);
    check_quiet(h, "message before auth_ok");
}

static void test_session_failures(harness *h) {
    uint64_t cconn, sconn;
    /* binary after auth_ok: 1003 */
    aegis_session *as = establish(h, &cconn, &sconn);
    CHECK(as != NULL);
    if (as) {
        CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, false, "\x01\x02\x03", 3), 0);
        expect_closed(h, cconn, sconn, 1003, NULL);
        aegis_session_free(as);
    }
    check_quiet(h, "binary");

    /* one base64 character of the payload flipped: 4004 */
    as = establish(h, &cconn, &sconn);
    CHECK(as != NULL);
    if (as) {
        const uint8_t pt[] = "sixteen bytes or more of plaintext";
        size_t jlen;
        char *json = agent_seal(h, as, AEGIS_MSG_EVENT, "telemetry", NULL, pt, sizeof pt - 1, NULL, &jlen);
        if (json) {
            char *p = strstr(json, "\"payload\":\"");
            CHECK(p != NULL);
            if (p) {
                p += strlen("\"payload\":\"") + 10;
                *p = *p == 'A' ? 'B' : 'A';
            }
            CHECK_EQ_INT(aegis_wsc_send(h->ep, cconn, true, json, jlen), 0);
            free(json);
            expect_closed(h, cconn, sconn, 4004, NULL);
        }
        aegis_session_free(as);
    }
    check_quiet(h, "tampered");

    /* silence after auth_ok: 4006 after the idle timeout */
    as = establish(h, &cconn, &sconn);
    CHECK(as != NULL);
    if (as) {
        uint64_t t0 = now_ms(), t1 = 0;
        expect_closed(h, cconn, sconn, 4006, &t1);
        uint64_t took = t1 - t0;
        printf("    idle timeout after %llu ms\n", (unsigned long long)took);
        CHECK(took >= 1400 && took <= 3000);
        aegis_session_free(as);
    }
    check_quiet(h, "idle");
}

static void test_drain(harness *h) {
    uint64_t cconn, sconn;
    aegis_session *as = establish(h, &cconn, &sconn);
    CHECK(as != NULL);
    if (as == NULL) return;
    CHECK(!aegis_io_idle(h->io));
    aegis_io_drain(h->io);
    expect_closed(h, cconn, sconn, 1001, NULL);
    aegis_session_free(as);
    /* a new upgrade while draining: 503 draining */
    const char *hdrs[] = { "X-Agent-ID: " AGENT_ID, h->key_header, "User-Agent: Aegis-Agent/1.0" };
    expect_refused(h, "/ws/agent", hdrs, 3, 503, "draining");
    uint64_t end = now_ms() + WAIT_MS;
    while (!aegis_io_idle(h->io) && now_ms() < end) pump(h, PUMP_MS);
    CHECK(aegis_io_idle(h->io));
    check_quiet(h, "drain");
}

/* ------------------------------------------------------------------------ */

static void run_backend(aegis_io_backend backend, const char *name) {
    harness h;
    memset(&h, 0, sizeof h);
    CHECK_STATUS(aegis_identity_generate(&h.server_id), AEGIS_OK);
    CHECK_STATUS(aegis_identity_generate(&h.agent_id), AEGIS_OK);
    if (h.server_id == NULL || h.agent_id == NULL) return;
    aegis_identity_public_key(h.server_id, h.server_pk);
    aegis_identity_public_key(h.agent_id, h.agent_pk);
    char b64[64];
    aegis_b64_encode(h.agent_pk, AEGIS_PUBLIC_KEY_BYTES, b64);
    b64[aegis_b64_encoded_len(AEGIS_PUBLIC_KEY_BYTES)] = '\0';
    snprintf(h.key_header, sizeof h.key_header, "X-Agent-Public-Key: %s", b64);

    aegis_io_config cfg = {
        .host = "127.0.0.1", .port = 0, .workers = 1, .backend = backend, .plaintext = true,
        .echo = false, .server_identity = h.server_id, .auth_timeout_ms = 400,
        .idle_timeout_ms = 1500,
    };
    char err[256] = "";
    int r = aegis_io_start(&cfg, &h.io, err, sizeof err);
    CHECK_EQ_INT(r, 0);
    if (r != 0) {
        fprintf(stderr, "    aegis_io_start: %s\n", err);
        goto out;
    }
    h.port = aegis_io_port(h.io);
    aegis_wsc_config ccfg = { .backend = backend };
    r = aegis_wsc_create(&ccfg, &h.ep, err, sizeof err);
    CHECK_EQ_INT(r, 0);
    if (r != 0) {
        fprintf(stderr, "    aegis_wsc_create: %s\n", err);
        goto out;
    }
    CHECK(strcmp(aegis_io_backend_name(h.io), name) == 0);
    CHECK(strcmp(aegis_wsc_backend_name(h.ep), name) == 0);
    CHECK(strcmp(aegis_io_tls_fingerprint(h.io), "") == 0);

    int before = check_passed_ + check_failed_;
    printf("%s: upgrade refusals\n", name); fflush(stdout);
    test_upgrade_refusals(&h);
    printf("%s: happy path, dead ids\n", name); fflush(stdout);
    uint64_t dead = test_happy_path(&h);
    test_dead_ids(&h, dead);
    printf("%s: burst\n", name); fflush(stdout);
    test_burst(&h);
    printf("%s: auth timeout, bad auth, refuse, message before auth_ok\n", name); fflush(stdout);
    test_auth_timeout(&h);
    test_bad_auth(&h);
    test_refuse(&h);
    test_message_before_auth_ok(&h);
    printf("%s: binary, tampered, idle\n", name); fflush(stdout);
    test_session_failures(&h);
    printf("%s: drain\n", name); fflush(stdout);
    test_drain(&h);
    printf("%s: %d checks\n", name, check_passed_ + check_failed_ - before);

out:
    if (h.ep) aegis_wsc_free(h.ep);
    if (h.io) aegis_io_stop(h.io);
    for (size_t i = 0; i < h.cn; i++) free(h.cq[i].data);
    for (size_t i = 0; i < h.sn; i++) free(h.sq[i].pt);
    free(h.cq);
    free(h.sq);
    free(h.held_c);
    free(h.held_s);
    aegis_identity_free(h.server_id);
    aegis_identity_free(h.agent_id);
}

static bool uring_available(void) {
    aegis_wsc_config cfg = { .backend = AEGIS_IO_URING };
    aegis_wsc *ep = NULL;
    char err[256];
    if (aegis_wsc_create(&cfg, &ep, err, sizeof err) != 0) {
        printf("note: io_uring unavailable (%s): its run is skipped\n", err);
        return false;
    }
    aegis_wsc_free(ep);
    return true;
}

int main(void) {
    CHECK_STATUS(aegis_core_init(), AEGIS_OK);
    if (uring_available()) run_backend(AEGIS_IO_URING, "io_uring");
    run_backend(AEGIS_IO_EPOLL, "epoll");
    return check_summary();
}
