/*
 * fuzz_open.c — libFuzzer target for the receiving side of the protocol:
 * aegis_open() in both roles, the auth request check, and the ack
 * plaintext reader. The sessions are the vectors' "with_ephemeral_key"
 * handshake, made deterministically, so the committed corpus (the vectors'
 * messages) opens for real and mutations start from valid traffic.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aegis_core.h"

static aegis_session *gateway, *agent;
static uint8_t agent_pk[32];

static void hex(const char *h, uint8_t *out) {
    for (size_t i = 0; h[2 * i]; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void setup(void) {
    uint8_t agent_seed[32], server_seed[32], nonce[32], eph[32], backend[32], token[32];
    hex("2482a9945ca14a74dd81af9e34abf863e3e51f2ed0d1e0d91e6b1f35d57a3efd", agent_seed);
    hex("e7fd153aabedf07803ae94dabf1f88db6249b662b4749721fee99bf00c8be4c0", server_seed);
    hex("3c1bc480a3d7b0acbbafe772da1018c63131f300929f9df10bcd6a3aadd0b6e1", nonce);
    hex("bbee35a148e82ebcf150486454092a26ca10118babb3ab14f8c5b549b0bfc994", eph);
    hex("abba6bdf713951b31b0b9180c187966088d241df81fbc80dda5b26051845d169", backend);
    hex("6443f6137ecc1b57a37a12b311bd600895832b03095ad7f1ecf9661bd62171fd", token);
    aegis_identity *a, *s;
    assert(aegis_core_init() == AEGIS_OK);
    assert(aegis_identity_from_seed(agent_seed, &a) == AEGIS_OK);
    assert(aegis_identity_from_seed(server_seed, &s) == AEGIS_OK);
    aegis_identity_public_key(a, agent_pk);

    char req_json[1024], ok_json[1024];
    size_t req_len, ok_len;
    aegis_agent_handshake *hs;
    aegis_auth_request_params rp = { "agent-7", 7, 1764211200, true, nonce, 32, eph };
    assert(aegis_agent_handshake_begin(a, &rp, &hs, req_json, sizeof req_json, &req_len) == AEGIS_OK);
    aegis_auth_context ctx = { "agent-7", 7, agent_pk, 1764211200, 60, true };
    aegis_auth_request req;
    assert(aegis_auth_request_check(req_json, req_len, &ctx, &req) == AEGIS_OK);
    aegis_auth_ok_params op = { "c3a8f2d1-4e5b-4a69-8d7c-0b1e2f3a4b5c", 1764211201, 1764297601, 30,
                                backend, token };
    uint8_t token_hash[32];
    assert(aegis_gateway_accept(s, &req, &op, &gateway, token_hash, ok_json, sizeof ok_json,
                                &ok_len) == AEGIS_OK);
    aegis_auth_ok ok;
    aegis_auth_error err;
    assert(aegis_agent_handshake_finish(hs, ok_json, ok_len, NULL, &ok, &err, &agent) == AEGIS_OK);
    aegis_agent_handshake_free(hs);
    aegis_identity_free(a);
    aegis_identity_free(s);
    /* Wide skew: let mutated traffic reach the AEAD and signature checks. */
    aegis_session_set_skew(gateway, 1u << 30);
    aegis_session_set_skew(agent, 1u << 30);
    aegis_session_set_dedupe_limit(gateway, 64);
}

static void check_message(const aegis_message *m, const uint8_t *buf, size_t cap) {
    assert(m->id_len >= 1 && m->id_len <= AEGIS_ID_MAX && m->id[m->id_len] == '\0');
    assert(m->channel_len >= 1 && m->channel_len <= AEGIS_CHANNEL_MAX);
    assert(m->plaintext >= buf && m->plaintext + m->plaintext_len <= buf + cap);
    assert(m->ciphertext >= buf && m->ciphertext + m->ciphertext_len <= buf + cap);
    assert(m->ciphertext_len == m->plaintext_len + AEGIS_TAG_BYTES);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    const char *json = (const char *)data;
    size_t cap = aegis_open_buffer_size(size);
    uint8_t *buf = malloc(cap);
    aegis_message m;
    if (aegis_open(gateway, json, size, 1764211260, buf, cap, &m) == AEGIS_OK)
        check_message(&m, buf, cap);
    if (aegis_open(agent, json, size, 1764211260, buf, cap, &m) == AEGIS_OK)
        check_message(&m, buf, cap);
    /* The same buffer one byte short must be refused, never overrun. */
    assert(aegis_open(gateway, json, size, 1764211260, buf, cap - 1, &m) ==
           AEGIS_E_BUFFER_TOO_SMALL);
    free(buf);

    aegis_auth_context ctx = { "agent-7", 7, agent_pk, 1764211200, 60, false };
    aegis_auth_request req;
    aegis_status st = aegis_auth_request_check(json, size, &ctx, &req);
    if (st == AEGIS_OK) assert(req.nonce_len >= 16 && req.nonce_len <= 64);
    assert(aegis_status_auth_code(st) != NULL || st == AEGIS_OK);

    aegis_id ids[AEGIS_ACK_IDS_MAX];
    size_t n;
    if (aegis_ack_plaintext_parse(data, size, ids, AEGIS_ACK_IDS_MAX, &n) == AEGIS_OK)
        assert(n >= 1 && n <= AEGIS_ACK_IDS_MAX);
    return 0;
}
