"""The REST admin API end to end (Sources/AegisAdmin/Resources/openapi.json):
a real aegisd with its private PostgreSQL, real agents (aegis_agent.py on
threads that ack and answer requests), and requests over HTTP.

Most tests share one gateway (module scope) and use agents of their own;
what needs another enrollment policy, a broadcast to every agent, a stopped
database or TLS gets a gateway of its own."""
import base64
import datetime
import json
import os
import re
import stat
import threading
import time
import uuid

import pytest
import requests

from admin import (Admin, LiveAgent, assert_error, connected_ids, enrolled_offline, fill_down_queue, make_cert,
                   new_agent_id, wait_for)
from aegis_agent import Agent, b64
from gateway import Gateway, Link, refused

OPENAPI = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "Sources", "AegisAdmin", "Resources", "openapi.json")
NODE = "e2e-admin-node"
MIB = 1 << 20


@pytest.fixture(scope="module")
def gw():
    g = Gateway(enrollment="open", extra=["--node-id", NODE])
    yield g
    g.stop()


@pytest.fixture(scope="module")
def adm(gw):
    assert gw.admin_token, "no bootstrap admin token: " + "".join(open(gw.log_path).readlines()[-30:])
    return Admin(gw)


@pytest.fixture(scope="module")
def tokens(adm):
    """One API token per scope: read, send, admin."""
    return {name: adm.create_token(scopes, name=f"e2e-{name}")["token"]
            for name, scopes in [("read", ["read"]), ("send", ["send"]), ("admin", ["admin"])]}


@pytest.fixture
def live(gw):
    """A connected, answering agent for one test."""
    a = LiveAgent(gw)
    yield a
    a.close()


def ts(value):
    """An RFC 3339 date-time of the API, as an aware datetime."""
    assert isinstance(value, str), value
    d = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert d.tzinfo is not None, f"{value}: no time zone"
    return d


def near_now(value, slack=120):
    d = ts(value)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((d - now).total_seconds()) < slack, f"{value} is not near {now.isoformat()}"
    return d


def state(adm, mid):
    return adm.ok("GET", f"/api/v1/messages/{mid}", 200)


def wait_state(adm, mid, status, timeout=10):
    return wait_for(lambda: (lambda s: s if s["status"] == status else None)(state(adm, mid)), timeout,
                    what=f"{mid} to be {status}")


def send(adm, agent_id, body, status=202, **kw):
    return adm.ok("POST", f"/api/v1/agents/{agent_id}/send", status, json=body, **kw)


def down_rows(gw, agent_id):
    return gw.sql(f"select msg_id, status from message_queue where agent_id = '{agent_id}' and direction = 'down' "
                  f"order by created_at")


# ---------------------------------------------------------------- bootstrap, health, document


def test_listening_line_and_bootstrap_token_file(gw, adm):
    log = open(gw.log_path).read()
    assert f"admin API: listening on http://127.0.0.1:{gw.admin_port}" in log
    path = os.path.join(gw.data_dir, "admin.token")
    assert f"admin API: bootstrap token written to {path}" in log
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read()
    assert text.endswith("\n") and text.count("\n") == 1 and text.strip() == gw.admin_token
    assert gw.admin_token not in log  # the secret itself is never logged
    # The bootstrap token is an admin token, listed without its secret.
    listed = adm.ok("GET", "/api/v1/tokens", 200)["tokens"]
    assert any("admin" in t["scopes"] and t["revoked_at"] is None for t in listed), listed
    assert all("token" not in t for t in listed), listed


def test_healthz_needs_no_token(adm):
    r = adm.get("/healthz", token=None)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["Content-Type"].startswith("application/json")


def test_readyz_when_ready(adm):
    r = adm.get("/readyz", token=None)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "database": "ok", "listeners": "ok"}


def test_served_openapi_equals_the_committed_document(adm, tokens):
    r = adm.get("/api/v1/openapi.json", token=tokens["read"])
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.json() == json.load(open(OPENAPI))


def test_unknown_route_is_404(adm):
    assert_error(adm.get("/api/v1/no-such-thing"), 404, "not_found")


# ---------------------------------------------------------------- authentication and scopes

UUID0 = "00000000-0000-4000-8000-000000000000"
PROTECTED = [
    ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/agents"), ("GET", "/api/v1/agents/a-1/status"),
    ("POST", "/api/v1/agents/a-1/send"), ("POST", "/api/v1/agents/broadcast"),
    ("POST", "/api/v1/agents/a-1/approve"), ("POST", "/api/v1/agents/a-1/revoke"), ("DELETE", "/api/v1/agents/a-1"),
    ("POST", "/api/v1/enrollment-tokens"), ("DELETE", f"/api/v1/enrollment-tokens/{UUID0}"),
    ("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"), ("DELETE", f"/api/v1/tokens/{UUID0}"),
    ("GET", "/api/v1/messages"), ("GET", "/api/v1/messages/m-1"), ("GET", "/api/v1/stream"),
]
VALID_BODY = {"/api/v1/agents/a-1/send": {"type": "event", "channel": "c", "payload": {}},
              "/api/v1/agents/broadcast": {"type": "event", "channel": "c", "payload": {}},
              "/api/v1/tokens": {"name": "x", "scopes": ["read"]}, "/api/v1/enrollment-tokens": {}}


def call(adm, method, path, **kw):
    if method == "POST" and path in VALID_BODY:
        kw["json"] = VALID_BODY[path]
    r = adm.api(method, path, stream=True, timeout=10, **kw)  # stream: a 200 SSE answer must not hang us
    if r.headers.get("Content-Type", "").startswith("text/event-stream"):
        r.close()
    return r


@pytest.mark.parametrize("method,path", PROTECTED)
def test_no_token_is_401(adm, method, path):
    assert_error(call(adm, method, path, token=None), 401, "unauthorized")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "{tok}", "Token {tok}",
                                    "Bearer {tok} {tok}", "Bearer {tok}x", "Bearer x{tok}"])
def test_malformed_authorization_is_401(adm, header):
    value = header.replace("{tok}", adm.token)
    for method, path in [("GET", "/api/v1/agents"), ("POST", "/api/v1/agents/broadcast")]:
        try:
            r = call(adm, method, path, token=None, headers={"Authorization": value})
        except (requests.exceptions.InvalidHeader, ValueError):
            pytest.skip("the client refuses to send this header")
        assert_error(r, 401, "unauthorized")


@pytest.mark.parametrize("method,path", [("GET", "/api/v1/agents"), ("GET", "/api/v1/stream"),
                                         ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/agents/a-1")])
def test_unknown_token_is_401(adm, method, path):
    for wrong in ["aegis_" + uuid.uuid4().hex, adm.token[:-1] + ("A" if adm.token[-1] != "A" else "B"), "x" * 300]:
        assert_error(call(adm, method, path, token=wrong), 401, "unauthorized")


def test_revoked_token_is_401(adm):
    created = adm.create_token(["admin"])
    assert adm.get("/api/v1/agents", token=created["token"]).status_code == 200
    r = adm.delete(f"/api/v1/tokens/{created['id']}")
    assert r.status_code == 204 and r.content == b"", r.text
    for method, path in [("GET", "/api/v1/agents"), ("GET", "/api/v1/tokens"), ("GET", "/api/v1/openapi.json")]:
        assert_error(call(adm, method, path, token=created["token"]), 401, "unauthorized")
    listed = {t["id"]: t for t in adm.ok("GET", "/api/v1/tokens", 200)["tokens"]}
    if created["id"] in listed:
        near_now(listed[created["id"]]["revoked_at"])


def test_read_scope(gw, adm, tokens, live):
    read = tokens["read"]
    assert adm.get("/api/v1/agents", token=read).status_code == 200
    assert adm.get(f"/api/v1/agents/{live.agent_id}/status", token=read).status_code == 200
    assert adm.get("/api/v1/messages", token=read).status_code == 200
    assert adm.get("/api/v1/openapi.json", token=read).status_code == 200
    r, sse = adm.stream(token=read)
    assert r.status_code == 200
    sse.close()
    aid = live.agent_id
    for method, path, body in [
        ("POST", f"/api/v1/agents/{aid}/send", {"type": "event", "channel": "c", "payload": 1}),
        ("POST", "/api/v1/agents/broadcast", {"type": "event", "channel": "c", "payload": 1, "agent_ids": [aid]}),
        ("POST", f"/api/v1/agents/{aid}/approve", None), ("POST", f"/api/v1/agents/{aid}/revoke", None),
        ("DELETE", f"/api/v1/agents/{aid}", None), ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"name": "n", "scopes": ["read"]}), ("POST", "/api/v1/enrollment-tokens", {}),
        ("DELETE", f"/api/v1/tokens/{UUID0}", None), ("DELETE", f"/api/v1/enrollment-tokens/{UUID0}", None),
    ]:
        kw = {"json": body} if body is not None else {}
        assert_error(adm.api(method, path, token=read, **kw), 403, "forbidden")
    # Nothing happened: no message went down, the agent is still connected and active.
    time.sleep(0.3)
    assert live.received == [] and down_rows(gw, aid) == []
    st = adm.ok("GET", f"/api/v1/agents/{aid}/status", 200)
    assert (st["enrollment"], st["connected"]) == ("active", True)


def test_send_scope_includes_read_not_admin(adm, tokens, live):
    tok = tokens["send"]
    assert adm.get("/api/v1/agents", token=tok).status_code == 200
    assert adm.get("/api/v1/messages", token=tok).status_code == 200
    body = send(adm, live.agent_id, {"type": "event", "channel": "scoped/send", "payload": {"by": "send"}}, token=tok)
    live.wait_received(body["id"])
    r = adm.post("/api/v1/agents/broadcast", token=tok,
                 json={"type": "event", "channel": "scoped/b", "payload": 2, "agent_ids": [live.agent_id]})
    assert r.status_code == 202, r.text
    for method, path in [("GET", "/api/v1/tokens"), ("POST", f"/api/v1/agents/{live.agent_id}/revoke"),
                         ("DELETE", f"/api/v1/agents/{live.agent_id}"), ("POST", "/api/v1/enrollment-tokens")]:
        assert_error(call(adm, method, path, token=tok), 403, "forbidden")
    assert live.closed.is_set() is False


def test_admin_scope_includes_send_and_read(adm, tokens, live):
    tok = tokens["admin"]
    assert adm.get("/api/v1/agents", token=tok).status_code == 200
    assert adm.get("/api/v1/tokens", token=tok).status_code == 200
    body = send(adm, live.agent_id, {"type": "event", "channel": "scoped/admin", "payload": [1]}, token=tok)
    assert live.wait_received(body["id"])["plaintext"] == b"[1]"


# ---------------------------------------------------------------- API tokens


def test_create_list_and_revoke_api_tokens(adm):
    name = "ops-" + uuid.uuid4().hex[:6]
    r = adm.post("/api/v1/tokens", json={"name": name, "scopes": ["read", "send"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == name and sorted(created["scopes"]) == ["read", "send"]
    uuid.UUID(created["id"])
    near_now(created["created_at"])
    assert created["last_used_at"] is None and created["revoked_at"] is None
    assert isinstance(created["token"], str) and len(created["token"]) >= 16
    other = adm.create_token(["read"])
    assert other["token"] != created["token"] and other["id"] != created["id"]
    listed = {t["id"]: t for t in adm.ok("GET", "/api/v1/tokens", 200)["tokens"]}
    assert listed[created["id"]]["name"] == name
    assert sorted(listed[created["id"]]["scopes"]) == ["read", "send"]
    assert "token" not in listed[created["id"]]
    assert created["token"] not in json.dumps(listed)
    # The new token works with its scopes.
    assert adm.get("/api/v1/agents", token=created["token"]).status_code == 200
    assert_error(adm.get("/api/v1/tokens", token=created["token"]), 403, "forbidden")
    # Revoked: 204 with no body, 401 from then on; a second revoke of it or an unknown id is 404.
    r = adm.delete(f"/api/v1/tokens/{created['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(adm.get("/api/v1/agents", token=created["token"]), 401, "unauthorized")
    assert adm.get("/api/v1/agents", token=other["token"]).status_code == 200  # only that one
    assert_error(adm.delete(f"/api/v1/tokens/{uuid.uuid4()}"), 404, "not_found")
    assert_error(adm.delete("/api/v1/tokens/not-a-uuid"), 404, "not_found")


@pytest.mark.parametrize("body,field", [
    ({"scopes": ["read"]}, "name"), ({"name": "", "scopes": ["read"]}, "name"),
    ({"name": "n" * 101, "scopes": ["read"]}, "name"), ({"name": 5, "scopes": ["read"]}, "name"),
    ({"name": "n"}, "scopes"), ({"name": "n", "scopes": []}, "scopes"), ({"name": "n", "scopes": ["root"]}, ("scopes", "scopes[0]")),
    ({"name": "n", "scopes": ["read", "read"]}, "scopes"), ({"name": "n", "scopes": "read"}, "scopes"),
    ({"name": "n", "scopes": ["read", "root"]}, ("scopes", "scopes[1]")),
    ({"name": "n", "scopes": ["read", "send", "admin", "read"]}, "scopes"),
])
def test_create_token_invalid_field(adm, body, field):
    before = len(adm.ok("GET", "/api/v1/tokens", 200)["tokens"])
    assert_error(adm.post("/api/v1/tokens", json=body), 422, "invalid_field", field)
    assert len(adm.ok("GET", "/api/v1/tokens", 200)["tokens"]) == before


def test_token_name_of_100_characters_is_accepted(adm):
    assert adm.create_token(["read"], name="n" * 100)["name"] == "n" * 100


# ---------------------------------------------------------------- agents: list and status


def test_agent_status_of_a_connected_agent(gw, adm, live):
    st = adm.ok("GET", f"/api/v1/agents/{live.agent_id}/status", 200)
    assert st["agent_id"] == live.agent_id
    assert st["connected"] is True and st["is_active"] is True
    assert st["node"] == NODE
    assert st["session_id"] == live.session.session_id
    near_now(st["connected_at"])
    near_now(st["last_seen"])
    near_now(st["created_at"])
    assert st["public_key"] == b64(live.agent.pk)
    assert st["enrollment"] == "active" and st["revoked_at"] is None
    assert st["queue"] == {"pending": 0, "sent": 0, "delivered": 0, "failed": 0}
    live.close()
    # `connected` follows the gateway's memory at once; `is_active` is the
    # stored flag, written just after the session ends.
    st = wait_for(lambda: (lambda s: s if not s["connected"] and not s["is_active"] else None)(
        adm.ok("GET", f"/api/v1/agents/{live.agent_id}/status", 200)), 10, what="connected and is_active false")
    assert st["enrollment"] == "active"


def test_agent_status_of_an_unknown_agent_is_404(adm):
    assert_error(adm.get("/api/v1/agents/nobody-here/status"), 404, "not_found")


def test_queue_counts_follow_the_down_messages(gw, adm):
    agent = enrolled_offline(gw)
    aid = agent.agent_id
    ids = [send(adm, aid, {"type": "event", "channel": "q/c", "payload": {"i": i}})["id"] for i in range(3)]
    short = send(adm, aid, {"type": "event", "channel": "q/c", "payload": "short", "ttl_seconds": 1})["id"]
    st = adm.ok("GET", f"/api/v1/agents/{aid}/status", 200)
    assert st["connected"] is False
    assert st["queue"]["pending"] + st["queue"]["failed"] == 4 and st["queue"]["sent"] == 0
    # The one with a time to live of 1 s fails while the agent is away.
    wait_for(lambda: adm.ok("GET", f"/api/v1/agents/{aid}/status", 200)["queue"]["failed"] == 1, 15,
             what="the expired message to fail")
    assert adm.ok("GET", f"/api/v1/agents/{aid}/status", 200)["queue"] == \
        {"pending": 3, "sent": 0, "delivered": 0, "failed": 1}
    assert state(adm, short)["status"] == "failed"
    # Connected, not acking yet: sent, ack awaited.
    a = LiveAgent(gw, agent=agent, ack=False)
    try:
        for mid in ids:
            a.wait_received(mid)
        assert short not in a.received_ids()
        wait_for(lambda: adm.ok("GET", f"/api/v1/agents/{aid}/status", 200)["queue"] ==
                 {"pending": 0, "sent": 3, "delivered": 0, "failed": 1}, 10, what="3 sent")
        a._send(a.session.ack(ids))
        wait_for(lambda: adm.ok("GET", f"/api/v1/agents/{aid}/status", 200)["queue"] ==
                 {"pending": 0, "sent": 0, "delivered": 3, "failed": 1}, 10, what="3 delivered")
    finally:
        a.close()


def list_all(adm, params=None, limit=2):
    """Every page of GET /api/v1/agents; returns (agents, pages)."""
    agents, pages, cursor = [], [], None
    while True:
        p = dict(params or {}, limit=limit)
        if cursor is not None:
            p["cursor"] = cursor
        page = adm.ok("GET", "/api/v1/agents", 200, params=p)
        assert set(page) >= {"agents", "next_cursor"}
        assert len(page["agents"]) <= limit
        pages.append(page)
        agents += page["agents"]
        cursor = page["next_cursor"]
        if cursor is None:
            return agents, pages
        assert isinstance(cursor, str) and cursor
        assert len(pages) < 500, "paging does not end"


def test_list_agents_pages_by_id(gw, adm):
    prefix = "page-" + uuid.uuid4().hex[:6] + "-"
    ours = sorted(prefix + uuid.uuid4().hex[:8] for _ in range(5))
    for aid in ours:
        enrolled_offline(gw, Agent(aid))
    agents, pages = list_all(adm)
    ids = [a["agent_id"] for a in agents]
    assert len(ids) == len(set(ids)), "an agent on two pages"
    assert [i for i in ids if i.startswith(prefix)] == ours  # all of ours, in id order
    assert all(len(p["agents"]) == 2 for p in pages[:-1])
    one_page = adm.ok("GET", "/api/v1/agents", 200, params={"limit": 1000})
    assert [a["agent_id"] for a in one_page["agents"]] == ids and one_page["next_cursor"] is None
    a = next(a for a in agents if a["agent_id"] == ours[0])
    assert a["enrollment"] == "active" and a["connected"] is False and a["node"] == NODE


def test_list_agents_by_status(gw, adm):
    on = LiveAgent(gw)
    off = enrolled_offline(gw)
    gone = enrolled_offline(gw)
    try:
        adm.ok("POST", f"/api/v1/agents/{gone.agent_id}/revoke", 200)
        connected = connected_ids(adm)
        assert on.agent_id in connected and off.agent_id not in connected and gone.agent_id not in connected
        by = {s: {a["agent_id"]: a for a in list_all(adm, {"status": s}, limit=1000)[0]}
              for s in ["active", "revoked", "pending"]}
        assert {on.agent_id, off.agent_id} <= set(by["active"]) and gone.agent_id not in by["active"]
        assert all(a["enrollment"] == "active" for a in by["active"].values())
        assert gone.agent_id in by["revoked"] and on.agent_id not in by["revoked"]
        assert all(a["enrollment"] == "revoked" for a in by["revoked"].values())
        assert by["pending"] == {}  # open enrollment has none
    finally:
        on.close()


@pytest.mark.parametrize("params,field", [({"status": "sleeping"}, "status"), ({"limit": 0}, "limit"),
                                          ({"limit": 1001}, "limit"), ({"limit": "ten"}, "limit"),
                                          ({"limit": -1}, "limit")])
def test_list_agents_bad_query(adm, params, field):
    assert_error(adm.get("/api/v1/agents", params=params), 400, "invalid_query", field)


# ---------------------------------------------------------------- send


def test_send_event_to_a_connected_agent(gw, adm, live):
    body = send(adm, live.agent_id, {"type": "event", "channel": "jobs/run", "payload": {"job": [1, "two", {"three": True}]}})
    assert isinstance(body["id"], str) and body["id"] and body["status"] in ("sent", "queued")
    m = live.wait_received(body["id"])
    assert (m["type"], m["channel"], m.get("ref")) == ("event", "jobs/run", None)
    assert m["plaintext"] == b'{"job":[1,"two",{"three":true}]}'
    s = wait_state(adm, body["id"], "delivered")
    assert s["kind"] == "message" and s["id"] == body["id"] and s["agent_id"] == live.agent_id
    assert (s["type"], s["channel"], s["send_count"], s["response"]) == ("event", "jobs/run", 1, None)
    created, expires = near_now(s["created_at"]), ts(s["expires_at"])
    assert abs((expires - created).total_seconds() - 3600) < 5  # the default down_ttl, 1 h
    near_now(s["last_attempt_at"])
    near_now(s["delivered_at"])


def test_send_status_is_sent_for_a_connected_agent(adm, live):
    # 202 status: `sent` when the agent has a live session here and the message went out at once.
    time.sleep(0.5)  # past the session's start
    statuses = []
    for i in range(20):
        body = send(adm, live.agent_id, {"type": "event", "channel": "status/c", "payload": i})
        live.wait_received(body["id"])
        statuses.append(body["status"])
        time.sleep(0.05)
    assert statuses == ["sent"] * 20, statuses


def test_send_payload_whitespace_is_not_sent(adm, live):
    # The contract: a JSON payload goes down as its compact UTF-8 text, whatever the request's layout.
    raw = b'{ "type" : "event" ,\n "channel" : "payload/ws" ,\n "payload" : { "a" : [ 1 , 2 ] ,\t"b" : "x y" }\n}'
    r = adm.post(f"/api/v1/agents/{live.agent_id}/send", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert live.wait_received(r.json()["id"])["plaintext"] == b'{"a":[1,2],"b":"x y"}'


@pytest.mark.parametrize("payload,text", [("text", b'"text"'), (42, b"42"), ([], b"[]"), (True, b"true"),
                                          ({"a": {"b": [None, 1.5, -2]}}, b'{"a":{"b":[null,1.5,-2]}}')])
def test_send_payload_is_the_compact_json_text(adm, live, payload, text):
    raw = json.dumps({"type": "event", "channel": "payload/json", "payload": payload}, indent=2).encode()
    r = adm.post(f"/api/v1/agents/{live.agent_id}/send", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert live.wait_received(r.json()["id"])["plaintext"] == text


def test_send_unicode_payload_as_utf8(adm, live):
    value = {"name": "Zoë ✓ 𝄞"}
    raw = json.dumps({"type": "event", "channel": "payload/utf8", "payload": value}, ensure_ascii=False,
                     separators=(",", ":")).encode()
    r = adm.post(f"/api/v1/agents/{live.agent_id}/send", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    pt = live.wait_received(r.json()["id"])["plaintext"]
    assert pt == '{"name":"Zoë ✓ 𝄞"}'.encode() and json.loads(pt.decode("utf-8")) == value


def test_send_payload_base64_is_raw_bytes(adm, live):
    raw = bytes(range(256)) + b"\xff\xfe not json"
    body = send(adm, live.agent_id, {"type": "event", "channel": "payload/raw",
                                     "payload_base64": base64.b64encode(raw).decode()})
    assert live.wait_received(body["id"])["plaintext"] == raw


def test_send_to_an_offline_agent_is_queued_then_delivered(gw, adm):
    agent = enrolled_offline(gw)
    body = send(adm, agent.agent_id, {"type": "event", "channel": "later/c", "payload": {"x": 1}})
    assert body["status"] == "queued"
    s = state(adm, body["id"])
    assert (s["status"], s["send_count"], s["last_attempt_at"], s["delivered_at"]) == ("queued", 0, None, None)
    a = LiveAgent(gw, agent=agent)
    try:
        assert a.wait_received(body["id"])["plaintext"] == b'{"x":1}'
        s = wait_state(adm, body["id"], "delivered")
        assert s["send_count"] == 1
    finally:
        a.close()


def test_send_request_and_wait_returns_the_agents_response(gw, adm, live):
    nonce = uuid.uuid4().hex
    t0 = time.time()
    r = adm.post(f"/api/v1/agents/{live.agent_id}/send",
                 json={"type": "request", "channel": "rpc/ping", "payload": {"nonce": nonce}, "wait_seconds": 10})
    elapsed = time.time() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "responded" and elapsed < 8
    request = live.wait_received(body["id"])
    assert request["type"] == "request" and request["channel"] == "rpc/ping"
    response_id, answer = live.answered[body["id"]]
    assert body["response"]["id"] == response_id
    assert body["response"]["payload"] == json.loads(answer)
    assert body["response"]["payload"] == {"agent": live.agent_id, "answer_to": body["id"], "channel": "rpc/ping",
                                           "echo": {"nonce": nonce}}
    assert "payload_base64" not in body["response"]
    assert isinstance(body["response"]["timestamp"], int) and abs(body["response"]["timestamp"] - time.time()) < 60
    # The message's state carries the response too; the response is stored as an up message.
    s = wait_state(adm, body["id"], "delivered")
    assert s["response"]["id"] == response_id and s["response"]["payload"] == json.loads(answer)
    up = adm.ok("GET", "/api/v1/messages", 200, params={"agent_id": live.agent_id})["messages"]
    resp = [m for m in up if m["id"] == response_id]
    assert len(resp) == 1 and resp[0]["type"] == "response" and resp[0]["ref"] == body["id"]
    assert resp[0]["channel"] == "rpc/ping" and resp[0]["payload"] == json.loads(answer)


def test_send_request_and_wait_binary_response(gw, adm):
    a = LiveAgent(gw, respond=lambda agent, m: b"\x00\xffraw answer to " + m["id"].encode())
    try:
        body = send(adm, a.agent_id, {"type": "request", "channel": "rpc/bin", "payload_base64": "AAE=",
                                      "wait_seconds": 10}, status=200)
        assert a.wait_received(body["id"])["plaintext"] == b"\x00\x01"
        assert body["response"]["payload_base64"] == base64.b64encode(b"\x00\xffraw answer to " +
                                                                       body["id"].encode()).decode()
        assert "payload" not in body["response"]
    finally:
        a.close()


def test_send_request_wait_runs_out_without_a_response(gw, adm):
    a = LiveAgent(gw, respond=False)
    try:
        t0 = time.time()
        body = send(adm, a.agent_id, {"type": "request", "channel": "rpc/slow", "payload": 1, "wait_seconds": 1.5})
        elapsed = time.time() - t0
        # (sent vs queued: test_send_status_is_sent_for_a_connected_agent)
        assert body["status"] in ("queued", "sent", "delivered") and "response" not in body
        assert 1.4 <= elapsed < 8, elapsed
        assert a.wait_received(body["id"])["type"] == "request"
        assert state(adm, body["id"])["response"] is None
    finally:
        a.close()


def test_send_request_wait_for_an_agent_that_connects_meanwhile(gw, adm):
    agent = enrolled_offline(gw)
    result = {}

    def call_api():
        result["r"] = adm.post(f"/api/v1/agents/{agent.agent_id}/send", json={
            "type": "request", "channel": "rpc/late", "payload": {"q": "late"}, "wait_seconds": 15})

    t = threading.Thread(target=call_api)
    t.start()
    time.sleep(1.0)
    a = LiveAgent(gw, agent=agent)
    try:
        t.join(20)
        r = result["r"]
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "responded"
        assert r.json()["response"]["payload"]["echo"] == {"q": "late"}
    finally:
        a.close()


def test_send_to_an_unknown_agent_is_404(gw, adm):
    aid = new_agent_id("ghost")
    assert_error(adm.post(f"/api/v1/agents/{aid}/send", json={"type": "event", "channel": "c", "payload": 1}),
                 404, "not_found")
    assert down_rows(gw, aid) == []


def test_full_down_queue_is_429(gw, adm):
    agent = enrolled_offline(gw)
    fill_down_queue(gw, agent.agent_id)
    assert adm.ok("GET", f"/api/v1/agents/{agent.agent_id}/status", 200)["queue"]["pending"] == 10_000
    assert_error(adm.post(f"/api/v1/agents/{agent.agent_id}/send", json={"type": "event", "channel": "c", "payload": 1}),
                 429, "queue_full")
    assert len(down_rows(gw, agent.agent_id)) == 10_000  # nothing more was queued
    # One delivered (here: marked so in the store) makes room for one more.
    gw.sql(f"update message_queue set status = 'delivered' where agent_id = '{agent.agent_id}' and msg_id = 'fill-1'")
    assert send(adm, agent.agent_id, {"type": "event", "channel": "c", "payload": 1})["status"] == "queued"
    assert_error(adm.post(f"/api/v1/agents/{agent.agent_id}/send", json={"type": "event", "channel": "c", "payload": 2}),
                 429, "queue_full")


def test_idempotency_key(gw, adm, live):
    key = "idem-" + uuid.uuid4().hex
    req = {"type": "event", "channel": "idem/c", "payload": {"n": 1}}
    first = send(adm, live.agent_id, req, headers={"Idempotency-Key": key})
    again = send(adm, live.agent_id, req, headers={"Idempotency-Key": key})
    assert again["id"] == first["id"] and again["status"] in ("queued", "sent", "delivered", "failed")
    live.wait_received(first["id"])
    assert_error(adm.post(f"/api/v1/agents/{live.agent_id}/send", json=dict(req, payload={"n": 2}),
                          headers={"Idempotency-Key": key}), 409, "idempotency_conflict")
    other = send(adm, live.agent_id, req, headers={"Idempotency-Key": key + "-2"})
    assert other["id"] != first["id"]
    live.wait_received(other["id"])
    time.sleep(0.5)
    assert live.received_ids().count(first["id"]) == 1
    assert sorted(r[0] for r in down_rows(gw, live.agent_id)) == sorted([first["id"], other["id"]])


def test_ttl_seconds_sets_expires_at(gw, adm):
    agent = enrolled_offline(gw)
    body = send(adm, agent.agent_id, {"type": "event", "channel": "ttl/c", "payload": 1, "ttl_seconds": 600})
    s = state(adm, body["id"])
    assert abs((ts(s["expires_at"]) - ts(s["created_at"])).total_seconds() - 600) < 5


# ---------------------------------------------------------------- request bodies: 400, 413, 415, 422


def test_malformed_json_is_400(adm, live):
    for path in [f"/api/v1/agents/{live.agent_id}/send", "/api/v1/agents/broadcast", "/api/v1/tokens",
                 "/api/v1/enrollment-tokens"]:
        for raw in [b'{"type":"event",', b"{'type': 'event'}", b'{"type":"event"}}', b"\xff\xfe{}"]:
            r = adm.post(path, data=raw, headers={"Content-Type": "application/json"})
            assert_error(r, 400, "bad_request")
    assert live.received == []


def exact_body(size):
    """A send body of exactly `size` bytes (a long string payload)."""
    head, tail = b'{"type":"event","channel":"big/c","payload":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_body_over_1_mib_is_413(gw, adm, live):
    body = exact_body(MIB + 1)
    assert len(body) == MIB + 1
    r = adm.post(f"/api/v1/agents/{live.agent_id}/send", data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    for path in ["/api/v1/agents/broadcast", "/api/v1/tokens", "/api/v1/enrollment-tokens"]:
        assert_error(adm.post(path, data=body, headers={"Content-Type": "application/json"}), 413,
                     "payload_too_large")
    assert down_rows(gw, live.agent_id) == []


def test_body_over_1_mib_without_content_length_is_413(adm, live):
    body = exact_body(MIB + 1)

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    r = adm.post(f"/api/v1/agents/{live.agent_id}/send", data=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_body_of_exactly_1_mib_is_read_and_its_payload_judged(adm, live):
    # 1 MiB is allowed as a body; its ~1 MB payload is over the 768,000-byte plaintext limit.
    r = adm.post(f"/api/v1/agents/{live.agent_id}/send", data=exact_body(MIB),
                 headers={"Content-Type": "application/json"})
    assert_error(r, 422, "invalid_field", "payload")


def test_plaintext_limit(adm, live):
    def payload_of(n):  # a JSON string whose compact text is n bytes
        return "y" * (n - 2)

    ok = send(adm, live.agent_id, {"type": "event", "channel": "big/ok", "payload": payload_of(768000)})
    assert len(live.wait_received(ok["id"], timeout=20)["plaintext"]) == 768000
    assert_error(adm.post(f"/api/v1/agents/{live.agent_id}/send",
                          json={"type": "event", "channel": "big/no", "payload": payload_of(768001)}),
                 422, "invalid_field", "payload")
    assert_error(adm.post(f"/api/v1/agents/{live.agent_id}/send",
                          json={"type": "event", "channel": "big/no",
                                "payload_base64": base64.b64encode(b"z" * 768001).decode()}),
                 422, "invalid_field")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None,
                                          "application/jsonx", "text/json"])
def test_body_not_json_content_type_is_415(adm, live, content_type):
    raw = json.dumps({"type": "event", "channel": "c", "payload": 1}).encode()
    for path in [f"/api/v1/agents/{live.agent_id}/send", "/api/v1/agents/broadcast", "/api/v1/tokens",
                 "/api/v1/enrollment-tokens"]:
        r = adm.post(path, data=raw, headers={"Content-Type": content_type})
        assert_error(r, 415, "unsupported_media_type")
    assert live.received == []


def test_json_content_type_with_charset_is_accepted(adm, live):
    raw = json.dumps({"type": "event", "channel": "charset/c", "payload": 1}).encode()
    r = adm.post(f"/api/v1/agents/{live.agent_id}/send", data=raw,
                 headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 202, r.text
    live.wait_received(r.json()["id"])


SEND_422 = [
    ({"channel": "c", "payload": 1}, "type"),
    ({"type": "heartbeat", "channel": "c", "payload": 1}, "type"),
    ({"type": "response", "channel": "c", "payload": 1}, "type"),
    ({"type": "ack", "channel": "c", "payload": 1}, "type"),
    ({"type": 1, "channel": "c", "payload": 1}, "type"),
    ({"type": "event", "payload": 1}, "channel"),
    ({"type": "event", "channel": "", "payload": 1}, "channel"),
    ({"type": "event", "channel": "has space", "payload": 1}, "channel"),
    ({"type": "event", "channel": "c" * 256, "payload": 1}, "channel"),
    ({"type": "event", "channel": "aegis.reserved", "payload": 1}, "channel"),
    ({"type": "event", "channel": "aegis.ack", "payload": 1}, "channel"),
    ({"type": "event", "channel": 7, "payload": 1}, "channel"),
    ({"type": "event", "channel": "c"}, "payload"),
    ({"type": "event", "channel": "c", "payload": 1, "payload_base64": "AA=="}, "payload"),
    ({"type": "event", "channel": "c", "payload": 1, "ttl_seconds": 0}, "ttl_seconds"),
    ({"type": "event", "channel": "c", "payload": 1, "ttl_seconds": 2592001}, "ttl_seconds"),
    ({"type": "event", "channel": "c", "payload": 1, "ttl_seconds": "60"}, "ttl_seconds"),
    ({"type": "event", "channel": "c", "payload": 1, "ttl_seconds": 1.5}, "ttl_seconds"),
    ({"type": "event", "channel": "c", "payload": 1, "wait_seconds": 5}, "wait_seconds"),
    ({"type": "request", "channel": "c", "payload": 1, "wait_seconds": -1}, "wait_seconds"),
    ({"type": "request", "channel": "c", "payload": 1, "wait_seconds": 60.5}, "wait_seconds"),
    ({"type": "request", "channel": "c", "payload": 1, "wait_seconds": "5"}, "wait_seconds"),
]


@pytest.mark.parametrize("body,field", SEND_422)
def test_send_invalid_field_is_422(gw, adm, live, body, field):
    assert_error(adm.post(f"/api/v1/agents/{live.agent_id}/send", json=body), 422, "invalid_field", field)
    assert down_rows(gw, live.agent_id) == []


@pytest.mark.parametrize("b64", ["not base64!", "AAA", "A===", "YQ"])
def test_send_bad_payload_base64_is_422(adm, live, b64):
    err = assert_error(adm.post(f"/api/v1/agents/{live.agent_id}/send",
                                json={"type": "event", "channel": "c", "payload_base64": b64}), 422, "invalid_field")
    assert err.get("field") in ("payload_base64", "payload"), err


def test_send_boundaries_are_accepted(adm, live):
    for extra in [{"ttl_seconds": 1}, {"ttl_seconds": 2592000}, {"channel": "c" * 255},
                  {"channel": "A-z.0_9:/x"}, {"type": "request", "wait_seconds": 0}]:
        body = dict({"type": "event", "channel": "bound/c", "payload": 1}, **extra)
        r = adm.post(f"/api/v1/agents/{live.agent_id}/send", json=body)
        assert r.status_code in (200, 202), (body, r.text)


# ---------------------------------------------------------------- revoke, delete


def test_revoke_cuts_the_live_session_with_4003(gw, adm):
    a = LiveAgent(gw)
    try:
        r = adm.post(f"/api/v1/agents/{a.agent_id}/revoke")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["agent_id"] == a.agent_id and body["enrollment"] == "revoked"
        near_now(body["revoked_at"])
        assert a.wait_closed() == 4003
        assert refused(gw, a.agent) == ("revoked", 4003)
        st = wait_for(lambda: (lambda s: s if not s["connected"] else None)(
            adm.ok("GET", f"/api/v1/agents/{a.agent_id}/status", 200)), 10, what="connected false")
        assert st["enrollment"] == "revoked" and st["is_active"] is False
        assert_error(adm.post(f"/api/v1/agents/{a.agent_id}/send", json={"type": "event", "channel": "c",
                                                                         "payload": 1}), 409, "agent_revoked")
        assert_error(adm.post(f"/api/v1/agents/{a.agent_id}/approve"), 409, "agent_revoked")
        assert adm.ok("GET", f"/api/v1/agents/{a.agent_id}/status", 200)["enrollment"] == "revoked"
    finally:
        a.close()


def test_revoke_an_offline_agent_then_it_cannot_connect(gw, adm):
    agent = enrolled_offline(gw)
    assert adm.ok("POST", f"/api/v1/agents/{agent.agent_id}/revoke", 200)["enrollment"] == "revoked"
    assert refused(gw, agent) == ("revoked", 4003)


def test_revoke_and_approve_unknown_agent_is_404(adm):
    assert_error(adm.post(f"/api/v1/agents/{new_agent_id('ghost')}/revoke"), 404, "not_found")
    assert_error(adm.post(f"/api/v1/agents/{new_agent_id('ghost')}/approve"), 404, "not_found")


def test_approve_an_active_agent_changes_nothing(gw, adm):
    agent = enrolled_offline(gw)
    before = adm.ok("GET", f"/api/v1/agents/{agent.agent_id}/status", 200)
    body = adm.ok("POST", f"/api/v1/agents/{agent.agent_id}/approve", 200)
    assert body["agent_id"] == agent.agent_id and body["enrollment"] == "active"
    assert body["public_key"] == before["public_key"] and body["created_at"] == before["created_at"]


def test_delete_closes_the_session_and_forgets_the_pin(gw, adm):
    a = LiveAgent(gw)
    a.send_up("before-delete", payload=b'{"kept":true}')
    a.wait_acked(["before-delete"])
    r = adm.delete(f"/api/v1/agents/{a.agent_id}")
    assert r.status_code == 204 and r.content == b""
    assert a.wait_closed() == 4003
    a.close()
    assert_error(adm.get(f"/api/v1/agents/{a.agent_id}/status"), 404, "not_found")
    assert_error(adm.delete(f"/api/v1/agents/{a.agent_id}"), 404, "not_found")
    # Its messages stay.
    msgs = adm.ok("GET", "/api/v1/messages", 200, params={"agent_id": a.agent_id})["messages"]
    assert [m["id"] for m in msgs] == ["before-delete"] and msgs[0]["payload"] == {"kept": True}
    # Open enrollment: the same id enrolls again, even with another key.
    again = Agent(a.agent_id)
    Link(gw, again).close()
    st = adm.ok("GET", f"/api/v1/agents/{a.agent_id}/status", 200)
    assert st["public_key"] == b64(again.pk) != b64(a.agent.pk)


def test_delete_unknown_agent_is_404(adm):
    assert_error(adm.delete(f"/api/v1/agents/{new_agent_id('ghost')}"), 404, "not_found")


# ---------------------------------------------------------------- messages


def test_messages_of_an_agent_in_pages(gw, adm):
    a = LiveAgent(gw)
    try:
        chan = "metrics/" + uuid.uuid4().hex[:8]
        payloads = [b'{"cpu":0.25}', b'"text"', b"[1,2,3]", b"\x00\x01binary", b""]
        ids = [f"up-{i}" for i in range(len(payloads))]
        for mid, p in zip(ids, payloads):
            a.send_up(mid, channel=chan, payload=p)
            a.wait_acked([mid])  # one at a time: arrival order is send order
        pages, cursor = [], None
        while True:
            params = {"agent_id": a.agent_id, "limit": 2}
            if cursor is not None:
                params["after"] = cursor
            page = adm.ok("GET", "/api/v1/messages", 200, params=params)
            pages.append(page)
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert cursor == str(page["messages"][-1]["seq"])
            assert len(pages) < 10
        assert [len(p["messages"]) for p in pages] == [2, 2, 1]
        msgs = [m for p in pages for m in p["messages"]]
        assert [m["id"] for m in msgs] == ids
        seqs = [m["seq"] for m in msgs]
        assert all(isinstance(s, int) for s in seqs) and seqs == sorted(seqs) and len(set(seqs)) == 5
        for m in msgs:
            assert (m["agent_id"], m["direction"], m["type"], m["channel"], m["ref"], m["status"]) == \
                (a.agent_id, "up", "event", chan, None, "received")
            assert isinstance(m["timestamp"], int) and abs(m["timestamp"] - time.time()) < 120
            near_now(m["received_at"])
        assert msgs[0]["payload"] == {"cpu": 0.25} and "payload_base64" not in msgs[0]
        assert msgs[1]["payload"] == "text"
        assert msgs[2]["payload"] == [1, 2, 3]
        assert msgs[3]["payload_base64"] == base64.b64encode(b"\x00\x01binary").decode() and "payload" not in msgs[3]
        assert msgs[4]["payload_base64"] == "" and "payload" not in msgs[4]
        # Filters: channel alone, direction (default up; down lists what went to agents).
        by_chan = adm.ok("GET", "/api/v1/messages", 200, params={"channel": chan})
        assert [m["id"] for m in by_chan["messages"]] == ids and by_chan["next_cursor"] is None
        explicit = adm.ok("GET", "/api/v1/messages", 200, params={"agent_id": a.agent_id, "direction": "up"})
        assert [m["id"] for m in explicit["messages"]] == ids
        down = send(adm, a.agent_id, {"type": "event", "channel": chan, "payload": {"d": 1}})
        a.wait_received(down["id"])
        wait_state(adm, down["id"], "delivered")
        downs = adm.ok("GET", "/api/v1/messages", 200, params={"agent_id": a.agent_id, "direction": "down"})
        assert [m["id"] for m in downs["messages"]] == [down["id"]]
        d = downs["messages"][0]
        assert (d["direction"], d["type"], d["channel"], d["status"], d["payload"]) == \
            ("down", "event", chan, "delivered", {"d": 1})
        # after the last seq: nothing.
        empty = adm.ok("GET", "/api/v1/messages", 200, params={"agent_id": a.agent_id, "after": str(seqs[-1])})
        assert (empty["messages"], empty["next_cursor"]) == ([], None)
    finally:
        a.close()


def test_messages_of_an_unknown_agent_is_an_empty_page(adm):
    page = adm.ok("GET", "/api/v1/messages", 200, params={"agent_id": new_agent_id("nobody")})
    assert (page["messages"], page["next_cursor"]) == ([], None)


@pytest.mark.parametrize("params,field", [
    ({"after": "abc"}, "after"), ({"after": "-1"}, "after"), ({"after": "1" * 19}, "after"),
    ({"direction": "sideways"}, "direction"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
    ({"limit": "x"}, "limit"), ({"agent_id": "bad id!"}, "agent_id"), ({"agent_id": "a" * 256}, "agent_id"),
    ({"channel": "c" * 256}, "channel"),
])
def test_messages_bad_query_is_400(adm, params, field):
    assert_error(adm.get("/api/v1/messages", params=params), 400, "invalid_query", field)


def test_message_state_of_an_unknown_id_is_404(adm):
    assert_error(adm.get(f"/api/v1/messages/{uuid.uuid4()}"), 404, "not_found")


# ---------------------------------------------------------------- Server-Sent Events


def test_stream_live_then_resume_with_last_event_id(gw, adm):
    chan = "stream/" + uuid.uuid4().hex[:8]
    a = LiveAgent(gw)
    r, sse = adm.stream({"channel": chan})
    try:
        assert r.status_code == 200
        assert r.headers["Content-Type"].split(";")[0].strip() == "text/event-stream"
        time.sleep(0.3)  # subscribed before the first message
        a.send_up("s-0", channel="stream/other", payload=b'{"n":0}')  # not this channel
        for i in range(1, 4):
            a.send_up(f"s-{i}", channel=chan, payload=json.dumps({"n": i}).encode())
        a.wait_acked(["s-0", "s-1", "s-2", "s-3"])
        events = sse.take(3, timeout=10)
        assert [e["event"] for e in events] == ["message"] * 3
        msgs = [json.loads(e["data"]) for e in events]
        assert [m["id"] for m in msgs] == ["s-1", "s-2", "s-3"]
        assert [e["id"] for e in events] == [str(m["seq"]) for m in msgs]
        for i, m in enumerate(msgs, 1):
            assert (m["agent_id"], m["direction"], m["channel"], m["payload"], m["status"]) == \
                (a.agent_id, "up", chan, {"n": i}, "received")
        assert sse.quiet(1.0) is None
        last = events[-1]["id"]
    finally:
        sse.close()
    # Missed while away: replayed from the database after Last-Event-ID, then live again.
    for i in range(4, 6):
        a.send_up(f"s-{i}", channel=chan, payload=json.dumps({"n": i}).encode())
    a.wait_acked(["s-4", "s-5"])
    r, sse = adm.stream({"channel": chan}, last_event_id=last)
    try:
        assert r.status_code == 200
        replay = sse.messages(2)
        assert [m["id"] for _, m in replay] == ["s-4", "s-5"]
        a.send_up("s-6", channel=chan, payload=b'{"n":6}')
        (eid, m), = sse.messages(1)
        assert m["id"] == "s-6" and eid == str(m["seq"]) and int(eid) > int(replay[-1][0])
        assert sse.quiet(1.0) is None  # nothing twice
    finally:
        sse.close()
        a.close()


def test_stream_from_an_early_last_event_id_replays_everything_after_it(gw, adm):
    chan = "replay/" + uuid.uuid4().hex[:8]
    a = LiveAgent(gw)
    try:
        for i in range(4):
            a.send_up(f"r-{i}", channel=chan, payload=b"{}")
            a.wait_acked([f"r-{i}"])
        msgs = adm.ok("GET", "/api/v1/messages", 200, params={"channel": chan})["messages"]
        r, sse = adm.stream({"channel": chan}, last_event_id=msgs[0]["seq"])
        try:
            assert [m["id"] for _, m in sse.messages(3)] == ["r-1", "r-2", "r-3"]
            assert sse.quiet(1.0) is None
        finally:
            sse.close()
    finally:
        a.close()


def test_stream_by_agent(gw, adm):
    a, b = LiveAgent(gw), LiveAgent(gw)
    r, sse = adm.stream({"agent_id": b.agent_id})
    try:
        assert r.status_code == 200
        time.sleep(0.3)
        a.send_up("from-a", channel="mix/c")
        b.send_up("from-b", channel="mix/c")
        a.wait_acked(["from-a"])
        b.wait_acked(["from-b"])
        (_, m), = sse.messages(1)
        assert (m["id"], m["agent_id"]) == ("from-b", b.agent_id)
        assert sse.quiet(1.0) is None
    finally:
        sse.close()
        a.close()
        b.close()


def test_stream_bad_last_event_id_is_400(adm):
    r, sse = adm.stream(last_event_id="not-a-number")
    try:
        assert r.status_code == 400, f"got {r.status_code}"  # (a 200 would be an endless stream: no r.text)
        err = assert_error(r, 400, r.json()["error"]["code"])
        assert err["code"] in ("invalid_query", "bad_request"), err
    finally:
        if sse:
            sse.close()
        r.close()


# ---------------------------------------------------------------- metrics


def metric_samples(adm):
    r = adm.get("/metrics", token=None)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.headers
    samples = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$", line)
        assert m, f"not Prometheus text: {line!r}"
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


def total(samples, prefix, suffix=""):
    return sum(v for (name, _), v in samples.items() if name.startswith(prefix) and name.endswith(suffix))


def test_metrics_after_traffic(gw, adm):
    before = metric_samples(adm)
    a = LiveAgent(gw)
    try:
        a.send_up("metric-1")
        a.wait_acked(["metric-1"])
        body = send(adm, a.agent_id, {"type": "event", "channel": "m/c", "payload": 1})
        a.wait_received(body["id"])
        after = metric_samples(adm)
        names = {name for name, _ in after}
        for family in ["aegis_handshake", "aegis_message", "aegis_session"]:
            assert any(n.startswith(family) for n in names), f"no {family}* metric in {sorted(names)}"
        assert total(after, "aegis_handshake", "_total") >= total(before, "aegis_handshake", "_total") + 1
        assert total(after, "aegis_message", "_total") >= total(before, "aegis_message", "_total") + 1
        # A gauge of live sessions counts this one.
        gauges = {k: v for k, v in after.items() if k[0].startswith("aegis_session") and not k[0].endswith(
            ("_total", "_bucket", "_count", "_sum", "_created"))}
        assert any(v >= 1 for v in gauges.values()), gauges
    finally:
        a.close()


# ---------------------------------------------------------------- broadcast (a gateway of its own: "all agents")


@pytest.fixture(scope="module")
def bgw():
    g = Gateway(enrollment="open")
    yield g
    g.stop()


def test_broadcast_reaches_connected_agents_and_queues_for_offline_ones(bgw):
    adm = Admin(bgw)
    a, b = LiveAgent(bgw), LiveAgent(bgw)
    c = enrolled_offline(bgw)
    r_agent = enrolled_offline(bgw)
    adm.ok("POST", f"/api/v1/agents/{r_agent.agent_id}/revoke", 200)
    try:
        r = adm.post("/api/v1/agents/broadcast",
                     json={"type": "event", "channel": "fleet/update", "payload": {"version": "2.0"}})
        assert r.status_code == 202, r.text
        body = r.json()
        assert (body["recipients"], body["sent"], body["skipped"]) == (3, 2, [])
        bid = body["id"]
        for agent in (a, b):
            m = agent.wait_received(bid)
            assert (m["type"], m["channel"], m["plaintext"]) == ("event", "fleet/update", b'{"version":"2.0"}')

        def recipients():
            s = state(adm, bid)
            return {x["agent_id"]: x for x in s["recipients"]}, s

        per, s = wait_for(lambda: (lambda p: p if p[0][a.agent_id]["status"] == "delivered" and
                                   p[0][b.agent_id]["status"] == "delivered" else None)(recipients()), 10,
                          what="a and b delivered")
        assert s["kind"] == "broadcast" and s["id"] == bid
        assert (s["type"], s["channel"]) == ("event", "fleet/update")
        near_now(s["created_at"])
        assert set(per) == {a.agent_id, b.agent_id, c.agent_id}
        assert per[c.agent_id]["status"] == "queued" and per[c.agent_id]["send_count"] == 0
        assert per[c.agent_id]["delivered_at"] is None
        assert per[a.agent_id]["send_count"] == 1
        near_now(per[a.agent_id]["delivered_at"])
        assert s["counts"] == {"queued": 1, "sent": 0, "delivered": 2, "failed": 0}
        # The offline one gets it when it connects.
        lc = LiveAgent(bgw, agent=c)
        try:
            m = lc.wait_received(bid)
            assert m["plaintext"] == b'{"version":"2.0"}'
            wait_for(lambda: state(adm, bid)["counts"] == {"queued": 0, "sent": 0, "delivered": 3, "failed": 0},
                     10, what="all three delivered")
        finally:
            lc.close()
        # The revoked one never does.
        assert r_agent.agent_id not in recipients()[0]
    finally:
        a.close()
        b.close()


def test_broadcast_connected_only(bgw):
    adm = Admin(bgw)
    a = LiveAgent(bgw)
    c = enrolled_offline(bgw)
    try:
        wait_for(lambda: connected_ids(adm) == {a.agent_id}, 10, what="only a connected")
        body = adm.ok("POST", "/api/v1/agents/broadcast", 202,
                      json={"type": "event", "channel": "fleet/now", "payload": 1, "connected_only": True})
        assert (body["recipients"], body["sent"], body["skipped"]) == (1, 1, [])
        a.wait_received(body["id"])
        assert c.agent_id not in {x["agent_id"] for x in state(adm, body["id"])["recipients"]}
        lc = LiveAgent(bgw, agent=c)
        try:
            time.sleep(1.5)
            assert body["id"] not in lc.received_ids()
        finally:
            lc.close()
    finally:
        a.close()


def test_broadcast_to_listed_agents(bgw):
    adm = Admin(bgw)
    a, other = LiveAgent(bgw), LiveAgent(bgw)
    c = enrolled_offline(bgw)
    gone = enrolled_offline(bgw)
    adm.ok("POST", f"/api/v1/agents/{gone.agent_id}/revoke", 200)
    ghost = new_agent_id("ghost")
    try:
        body = adm.ok("POST", "/api/v1/agents/broadcast", 202, json={
            "type": "request", "channel": "fleet/some", "payload_base64": base64.b64encode(b"\x01\x02").decode(),
            "agent_ids": [a.agent_id, c.agent_id, ghost, gone.agent_id]})
        assert (body["recipients"], body["sent"]) == (2, 1)
        assert sorted(body["skipped"]) == sorted([ghost, gone.agent_id])
        m = a.wait_received(body["id"])
        assert (m["type"], m["plaintext"]) == ("request", b"\x01\x02")
        per = {x["agent_id"]: x["status"] for x in state(adm, body["id"])["recipients"]}
        assert set(per) == {a.agent_id, c.agent_id} and per[c.agent_id] == "queued"
        time.sleep(0.5)
        assert body["id"] not in other.received_ids()
    finally:
        a.close()
        other.close()


def test_broadcast_payload_is_the_compact_json_text(bgw):
    adm = Admin(bgw)
    a = LiveAgent(bgw)
    try:
        raw = json.dumps({"type": "event", "channel": "fleet/compact", "payload": {"k": [1, {"v": None}]},
                          "agent_ids": [a.agent_id]}, indent=2).encode()
        r = adm.post("/api/v1/agents/broadcast", data=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 202, r.text
        assert a.wait_received(r.json()["id"])["plaintext"] == b'{"k":[1,{"v":null}]}'
    finally:
        a.close()


@pytest.mark.parametrize("body,field", [
    ({"channel": "c", "payload": 1}, "type"), ({"type": "heartbeat", "channel": "c", "payload": 1}, "type"),
    ({"type": "event", "payload": 1}, "channel"), ({"type": "event", "channel": "aegis.x", "payload": 1}, "channel"),
    ({"type": "event", "channel": "bad chan", "payload": 1}, "channel"),
    ({"type": "event", "channel": "c"}, "payload"),
    ({"type": "event", "channel": "c", "payload": 1, "payload_base64": "AA=="}, "payload"),
    ({"type": "event", "channel": "c", "payload": 1, "ttl_seconds": 0}, "ttl_seconds"),
    ({"type": "event", "channel": "c", "payload": 1, "agent_ids": []}, "agent_ids"),
    ({"type": "event", "channel": "c", "payload": 1, "agent_ids": "a-1"}, "agent_ids"),
    ({"type": "event", "channel": "c", "payload": 1, "agent_ids": [""]}, ("agent_ids", "agent_ids[0]")),
    ({"type": "event", "channel": "c", "payload": 1, "agent_ids": ["a-1", 5]}, ("agent_ids", "agent_ids[1]")),
    ({"type": "event", "channel": "c", "payload": 1, "agent_ids": ["a" * 256]}, ("agent_ids", "agent_ids[0]")),
    ({"type": "event", "channel": "c", "payload": 1, "connected_only": "yes"}, "connected_only"),
])
def test_broadcast_invalid_field_is_422(adm, body, field):
    assert_error(adm.post("/api/v1/agents/broadcast", json=body), 422, "invalid_field", field)


# ---------------------------------------------------------------- manual enrollment: approve


def test_approve_a_pending_agent():
    g = Gateway(enrollment="manual")
    try:
        adm = Admin(g)
        agent = Agent(new_agent_id("pending"))
        assert refused(g, agent) == ("pending_approval", 4003)
        pending = {a["agent_id"]: a for a in adm.ok("GET", "/api/v1/agents", 200,
                                                     params={"status": "pending"})["agents"]}
        assert pending[agent.agent_id]["enrollment"] == "pending"
        assert pending[agent.agent_id]["public_key"] == b64(agent.pk)
        assert pending[agent.agent_id]["connected"] is False
        st = adm.ok("GET", f"/api/v1/agents/{agent.agent_id}/status", 200)
        assert st["enrollment"] == "pending"
        # Messages may be queued for a pending agent? Not assumed: only approve is tested here.
        body = adm.ok("POST", f"/api/v1/agents/{agent.agent_id}/approve", 200)
        assert body["agent_id"] == agent.agent_id and body["enrollment"] == "active"
        assert body["public_key"] == b64(agent.pk) and body["revoked_at"] is None
        live = LiveAgent(g, agent=agent)
        try:
            st = adm.ok("GET", f"/api/v1/agents/{agent.agent_id}/status", 200)
            assert (st["enrollment"], st["connected"]) == ("active", True)
            out = send(adm, agent.agent_id, {"type": "event", "channel": "hello/c", "payload": "welcome"})
            assert live.wait_received(out["id"])["plaintext"] == b'"welcome"'
        finally:
            live.close()
        assert adm.ok("POST", f"/api/v1/agents/{agent.agent_id}/approve", 200)["enrollment"] == "active"
        # The pin holds: another key for the approved id is refused.
        assert refused(g, Agent(agent.agent_id))[0] == "key_mismatch"
        # Revoked, then approve: 409.
        adm.ok("POST", f"/api/v1/agents/{agent.agent_id}/revoke", 200)
        assert_error(adm.post(f"/api/v1/agents/{agent.agent_id}/approve"), 409, "agent_revoked")
        assert_error(adm.post(f"/api/v1/agents/{new_agent_id('ghost')}/approve"), 404, "not_found")
    finally:
        g.stop()


# ---------------------------------------------------------------- token enrollment: enrollment tokens


def test_enrollment_tokens():
    g = Gateway(enrollment="token")
    try:
        adm = Admin(g)
        # Defaults: one use, 24 h.
        r = adm.post("/api/v1/enrollment-tokens", json={})
        assert r.status_code == 201, r.text
        one = r.json()
        uuid.UUID(one["id"])
        assert one["uses"] == 1 and isinstance(one["token"], str)
        exp = ts(one["expires_at"])
        assert abs((exp - datetime.datetime.now(datetime.timezone.utc)).total_seconds() - 86400) < 120
        first, second = Agent(new_agent_id("tok")), Agent(new_agent_id("tok"))
        assert refused(g, first) == ("unknown_agent", 4003)  # without a token
        Link(g, first, extra_headers={"X-Enrollment-Token": one["token"]}).close()
        assert adm.ok("GET", f"/api/v1/agents/{first.agent_id}/status", 200)["enrollment"] == "active"
        assert refused(g, second, extra_headers={"X-Enrollment-Token": one["token"]}) == ("unknown_agent", 4003)
        # Two uses and a TTL; created without any body too.
        two = adm.ok("POST", "/api/v1/enrollment-tokens", 201, json={"ttl_seconds": 3600, "uses": 2})
        assert two["uses"] == 2
        assert abs((ts(two["expires_at"]) - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
                   - 3600) < 120
        for agent in (second, Agent(new_agent_id("tok"))):
            Link(g, agent, extra_headers={"X-Enrollment-Token": two["token"]}).close()
        assert refused(g, Agent(new_agent_id("tok")), extra_headers={"X-Enrollment-Token": two["token"]}) == \
            ("unknown_agent", 4003)
        r = adm.api("POST", "/api/v1/enrollment-tokens")  # no body at all
        assert r.status_code == 201, r.text
        bare = r.json()
        assert bare["uses"] == 1 and bare["token"] not in (one["token"], two["token"])
        # Revoked: refused from then on; agents already enrolled stay.
        r = adm.delete(f"/api/v1/enrollment-tokens/{bare['id']}")
        assert r.status_code == 204 and r.content == b""
        assert refused(g, Agent(new_agent_id("tok")), extra_headers={"X-Enrollment-Token": bare["token"]}) == \
            ("unknown_agent", 4003)
        Link(g, first).close()
        assert_error(adm.delete(f"/api/v1/enrollment-tokens/{bare['id']}"), 404, "not_found")
        assert_error(adm.delete(f"/api/v1/enrollment-tokens/{uuid.uuid4()}"), 404, "not_found")
        assert_error(adm.delete("/api/v1/enrollment-tokens/not-a-uuid"), 404, "not_found")
        for body, field in [({"ttl_seconds": 59}, "ttl_seconds"), ({"ttl_seconds": 31536001}, "ttl_seconds"),
                            ({"ttl_seconds": "3600"}, "ttl_seconds"), ({"uses": 0}, "uses"),
                            ({"uses": 1000001}, "uses"), ({"uses": 1.5}, "uses")]:
            assert_error(adm.post("/api/v1/enrollment-tokens", json=body), 422, "invalid_field", field)
    finally:
        g.stop()


# ---------------------------------------------------------------- database down: /readyz 503; restart keeps tokens


def test_restart_keeps_tokens_then_readyz_503_when_the_database_is_down():
    g = Gateway(enrollment="open")
    try:
        first_token = g.admin_token
        assert first_token
        made = Admin(g).create_token(["read"])
    finally:
        g.stop()
    g = Gateway(enrollment="open", data_dir=g.data_dir)
    try:
        assert "bootstrap token written" not in open(g.log_path).read()  # the token table is not empty
        assert g.admin_token == first_token  # the file is left as it was
        adm = Admin(g)
        assert adm.get("/api/v1/agents").status_code == 200
        assert adm.get("/api/v1/agents", token=made["token"]).status_code == 200
        g.stop_database()
        r, = wait_for(lambda: (lambda r: (r,) if r.status_code == 503 else None)(adm.get("/readyz", token=None)), 20,
                      what="/readyz 503")  # (a tuple: a 503 Response is falsy)
        assert r.json() == {"status": "not_ready", "database": "unreachable", "listeners": "ok"}
        health = adm.get("/healthz", token=None)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
    finally:
        g.stop()


# ---------------------------------------------------------------- admin over TLS; admin off


def test_admin_api_over_tls():
    d = __import__("tempfile").mkdtemp(prefix="aegis-admin-tls-")
    cert, key = make_cert(d)
    g = Gateway(enrollment="open", extra=["--admin-tls-cert", cert, "--admin-tls-key", key])
    try:
        assert g.admin_url == f"https://127.0.0.1:{g.admin_port}", g.admin_url
        assert f"admin API: listening on https://127.0.0.1:{g.admin_port}" in open(g.log_path).read()
        adm = Admin(g, verify=cert)
        assert adm.get("/healthz", token=None).json() == {"status": "ok"}
        assert adm.get("/api/v1/agents").status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            Admin(g, verify=True).get("/healthz", token=None)  # self-signed: not trusted by default
        with pytest.raises(requests.exceptions.ConnectionError):
            Admin(g, base_url=f"http://127.0.0.1:{g.admin_port}").get("/healthz", token=None, timeout=5)
    finally:
        g.stop()


def port_open(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def test_admin_off():
    default_taken = port_open(8081)
    g = Gateway(enrollment="open", admin=False)
    try:
        assert "admin API: listening" not in open(g.log_path).read()
        if not default_taken:
            assert not port_open(8081)  # not on the default port either
        Link(g, Agent(new_agent_id())).close()  # the agent side works without it
    finally:
        g.stop()
