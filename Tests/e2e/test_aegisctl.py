"""aegisctl end to end: the operators' command-line client against a real
gateway and real agents. AEGISCTL names the binary (default
.build/debug/aegisctl, else .build-ctl/debug/aegisctl).

Exit codes: 0 ok, 1 server/unexpected, 2 usage or invalid input
(400/413/415/422), 3 unreachable, 4 401/403, 5 404, 6 409, 7 429.
Global options go after the subcommand (`aegisctl agents list --url U`)."""
import base64
import datetime
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from admin import (Admin, LiveAgent, connected_ids, enrolled_offline, fill_down_queue, make_cert, new_agent_id,
                   wait_for)
from aegis_agent import Agent, b64
from conftest import ROOT, free_port
from gateway import Gateway, Link, refused


def find_aegisctl():
    if os.environ.get("AEGISCTL"):
        return os.environ["AEGISCTL"]
    for candidate in [os.path.join(ROOT, ".build", "debug", "aegisctl"),
                      os.path.join(ROOT, ".build-ctl", "debug", "aegisctl")]:
        if os.path.exists(candidate):
            return candidate
    return os.path.join(ROOT, ".build", "debug", "aegisctl")


AEGISCTL = find_aegisctl()
DEFAULT = object()


@pytest.fixture(scope="module")
def gw():
    assert os.access(AEGISCTL, os.X_OK), f"no aegisctl at {AEGISCTL} (set AEGISCTL)"
    g = Gateway(enrollment="open")
    yield g
    g.stop()


@pytest.fixture(scope="module")
def adm(gw):
    return Admin(gw)


@pytest.fixture
def live(gw):
    a = LiveAgent(gw)
    yield a
    a.close()


# No token from the environment or from a .aegis/admin.token in the working directory.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("AEGIS_ADMIN_")}
WORKDIR = tempfile.mkdtemp(prefix="aegisctl-cwd-")


def ctl_args(gw, *args, token=DEFAULT, url=None, as_json=False, extra=()):
    cmd = [AEGISCTL, *args, "--url", url or gw.admin_url]
    token = gw.admin_token if token is DEFAULT else token
    if token is not None:
        cmd += ["--token", token]
    if as_json:
        cmd.append("--json")
    return cmd + list(extra)


def ctl(gw, *args, timeout=60, **kw):
    """Runs aegisctl ARGS --url … --token … [--json]; returns CompletedProcess."""
    return subprocess.run(ctl_args(gw, *args, **kw), capture_output=True, text=True, timeout=timeout, cwd=WORKDIR,
                          env=CLEAN_ENV)


def out(p):
    return f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"


def ok(gw, *args, **kw):
    p = ctl(gw, *args, **kw)
    assert p.returncode == 0, out(p)
    return p


def json_docs(text):
    """The JSON documents of --json output: the API's bodies, one after another."""
    docs, i, dec = [], 0, json.JSONDecoder()
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return docs
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)


def ok_json(gw, *args, **kw):
    """--json output: its one document (several commands print one per response: then the list)."""
    p = ok(gw, *args, as_json=True, **kw)
    try:
        docs = json_docs(p.stdout)
    except ValueError:
        raise AssertionError("--json output does not parse:\n" + out(p)) from None
    assert docs, out(p)
    return docs[0] if len(docs) == 1 else docs


def agents_of(doc):
    """The agents of `agents list --json`: one page {"agents": […]}, or the pages of --all."""
    pages = doc if isinstance(doc, list) else [doc]
    agents = []
    for page in pages:
        assert isinstance(page, dict) and "agents" in page and "next_cursor" in page, page
        agents += page["agents"]
    return agents


def messages_of(doc):
    if isinstance(doc, dict):
        assert "messages" in doc, doc
        return doc["messages"]
    assert isinstance(doc, list), doc
    return doc


def ts(value):
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------- exit codes


def test_health(gw):
    p = ok(gw, "health", token=None)
    assert "ok" in p.stdout and "ready" in p.stdout, out(p)
    docs = ok_json(gw, "health", token=None)  # /healthz's body, then /readyz's
    assert docs == [{"status": "ok"}, {"status": "ready", "database": "ok", "listeners": "ok"}], docs


def test_health_not_ready_is_exit_1():
    g = Gateway(enrollment="open")
    try:
        ok(g, "health", token=None)
        g.stop_database()
        p = wait_for(lambda: (lambda p: p if p.returncode == 1 else None)(ctl(g, "health", token=None)), 20,
                     what="health to fail")
        assert "not_ready" in p.stderr and "unreachable" in p.stdout + p.stderr, out(p)
    finally:
        g.stop()


def test_unreachable_is_exit_3(gw):
    closed = free_port()
    p = ctl(gw, "agents", "list", url=f"http://127.0.0.1:{closed}")
    assert p.returncode == 3, out(p)
    assert p.stderr.strip(), out(p)
    assert ctl(gw, "health", url=f"http://127.0.0.1:{closed}").returncode == 3


def test_bad_token_is_exit_4(gw, adm):
    p = ctl(gw, "agents", "list", token="not-a-token-" + uuid.uuid4().hex)
    assert p.returncode == 4, out(p)
    read = adm.create_token(["read"])["token"]
    assert ok_json(gw, "agents", "list", token=read) is not None
    p = ctl(gw, "tokens", "create", "--name", "x", "--scope", "read", token=read)  # 403
    assert p.returncode == 4, out(p)
    assert ctl(gw, "agents", "list", token=None).returncode == 4  # no token at all: 401


def test_unknown_agent_is_exit_5(gw):
    ghost = new_agent_id("ghost")
    for args in [("agents", "status", ghost), ("agents", "revoke", ghost), ("agents", "delete", ghost),
                 ("send", ghost, "--channel", "c", "--payload", "1"), ("messages", "show", "no-such-message")]:
        p = ctl(gw, *args)
        assert p.returncode == 5, f"{args}: {out(p)}"


def test_invalid_field_is_exit_2(gw, live):
    p = ctl(gw, "send", live.agent_id, "--channel", "bad channel!", "--payload", "1")
    assert p.returncode == 2, out(p)
    p = ctl(gw, "send", live.agent_id, "--channel", "aegis.reserved", "--payload", "1")
    assert p.returncode == 2, out(p)
    p = ctl(gw, "send", live.agent_id, "--channel", "c", "--type", "event", "--payload", "1", "--wait", "5")
    assert p.returncode == 2, out(p)  # --wait only with a request (aegisctl or the API: 422)
    p = ctl(gw, "tokens", "create", "--name", "x", "--scope", "root")
    assert p.returncode == 2, out(p)
    time.sleep(0.3)
    assert live.received == []


def test_usage_errors_are_exit_2(gw):
    for args in [("send",), ("agents", "status"), ("no-such-command",), ("agents", "list", "--limit", "many"),
                 ("send", "a-1", "--channel", "c", "--payload", "{not json")]:
        p = ctl(gw, *args)
        assert p.returncode == 2, f"{args}: {out(p)}"


def test_revoked_agent_is_exit_6(gw, adm):
    agent = enrolled_offline(gw)
    adm.ok("POST", f"/api/v1/agents/{agent.agent_id}/revoke", 200)
    p = ctl(gw, "send", agent.agent_id, "--channel", "c", "--payload", "1")
    assert p.returncode == 6, out(p)


def test_queue_full_is_exit_7(gw):
    agent = enrolled_offline(gw)
    fill_down_queue(gw, agent.agent_id)
    p = ctl(gw, "send", agent.agent_id, "--channel", "c", "--payload", "1")
    assert p.returncode == 7, out(p)
    assert "queue_full" in p.stderr, out(p)


def test_token_file(gw):
    d = tempfile.mkdtemp(prefix="aegisctl-")
    path = os.path.join(d, "token")
    with open(path, "w") as f:
        f.write(gw.admin_token + "\n")
    os.chmod(path, 0o600)
    p = ctl(gw, "agents", "list", token=None, extra=["--token-file", path])
    assert p.returncode == 0, out(p)
    with open(path, "w") as f:
        f.write("wrong-token\n")
    p = ctl(gw, "agents", "list", token=None, extra=["--token-file", path])
    assert p.returncode == 4, out(p)


# ---------------------------------------------------------------- agents


def test_agents_list_and_status(gw, adm, live):
    off = enrolled_offline(gw)
    text = ok(gw, "agents", "list").stdout
    assert live.agent_id in text and off.agent_id in text
    everyone = agents_of(ok_json(gw, "agents", "list", "--all", "--limit", "1"))
    ids = [a["agent_id"] for a in everyone]
    assert live.agent_id in ids and off.agent_id in ids and len(ids) == len(set(ids)) >= 2
    connected = [a["agent_id"] for a in agents_of(ok_json(gw, "agents", "list", "--status", "connected", "--all"))]
    assert live.agent_id in connected and off.agent_id not in connected
    first = agents_of(ok_json(gw, "agents", "list", "--limit", "1"))
    assert len(first) == 1
    st = ok_json(gw, "agents", "status", live.agent_id)
    assert st["agent_id"] == live.agent_id and st["connected"] is True
    assert st["session_id"] == live.session.session_id and st["public_key"] == b64(live.agent.pk)
    assert st["queue"] == {"pending": 0, "sent": 0, "delivered": 0, "failed": 0}
    p = ok(gw, "agents", "status", live.agent_id)
    assert live.agent_id in p.stdout


def test_agents_revoke_approve_delete(gw, adm):
    a = LiveAgent(gw)
    try:
        ok(gw, "agents", "approve", a.agent_id)  # already active: no change
        assert ok_json(gw, "agents", "status", a.agent_id)["enrollment"] == "active"
        doc = ok_json(gw, "agents", "revoke", a.agent_id)
        assert doc["enrollment"] == "revoked"
        assert a.wait_closed() == 4003
        assert refused(gw, a.agent) == ("revoked", 4003)
        assert ctl(gw, "agents", "approve", a.agent_id).returncode == 6  # 409 agent_revoked
    finally:
        a.close()
    b = LiveAgent(gw)
    try:
        ok(gw, "agents", "delete", b.agent_id)
        assert b.wait_closed() == 4003
        assert ctl(gw, "agents", "status", b.agent_id).returncode == 5
        assert ctl(gw, "agents", "delete", b.agent_id).returncode == 5
    finally:
        b.close()


# ---------------------------------------------------------------- send, broadcast


def test_send_event_variants(gw, adm, live):
    doc = ok_json(gw, "send", live.agent_id, "--channel", "ctl/json", "--payload", '{"a":[1,2]}')
    assert doc["status"] in ("sent", "queued")
    assert live.wait_received(doc["id"])["plaintext"] == b'{"a":[1,2]}'
    raw = b"\x00\x01\xfe\xff"
    doc = ok_json(gw, "send", live.agent_id, "--channel", "ctl/raw", "--payload-base64", base64.b64encode(raw).decode())
    assert live.wait_received(doc["id"])["plaintext"] == raw
    path = os.path.join(tempfile.mkdtemp(prefix="aegisctl-"), "payload.json")
    with open(path, "wb") as f:
        f.write(b'{"from":"file"}')  # compact JSON: the same bytes whether sent as JSON or as raw bytes
    doc = ok_json(gw, "send", live.agent_id, "--channel", "ctl/file", "--payload-file", path, "--ttl", "600")
    m = live.wait_received(doc["id"])
    assert m["plaintext"] == b'{"from":"file"}' and m["type"] == "event"
    s = adm.ok("GET", f"/api/v1/messages/{doc['id']}", 200)
    assert s["channel"] == "ctl/file"
    assert abs((ts(s["expires_at"]) - ts(s["created_at"])).total_seconds() - 600) < 5
    # Text output names the message id.
    p = ok(gw, "send", live.agent_id, "--channel", "ctl/text", "--payload", "7")
    m = wait_for(lambda: next((m for m in live.received if m["channel"] == "ctl/text"), None), 10, what="ctl/text")
    assert m["id"] in p.stdout, out(p)


def test_send_wait_prints_the_agents_response(gw, live):
    nonce = uuid.uuid4().hex
    doc = ok_json(gw, "send", live.agent_id, "--channel", "rpc/ctl", "--type", "request",
                  "--payload", json.dumps({"nonce": nonce}), "--wait", "10")
    assert doc["status"] == "responded"
    rid, answer = live.answered[doc["id"]]
    assert doc["response"]["id"] == rid and doc["response"]["payload"] == json.loads(answer)
    assert doc["response"]["payload"]["echo"] == {"nonce": nonce}
    nonce2 = uuid.uuid4().hex
    p = ok(gw, "send", live.agent_id, "--channel", "rpc/ctl", "--type", "request",
           "--payload", json.dumps({"nonce": nonce2}), "--wait", "10")
    assert nonce2 in p.stdout, out(p)  # the response payload is printed


def test_send_to_an_offline_agent_is_queued(gw):
    agent = enrolled_offline(gw)
    doc = ok_json(gw, "send", agent.agent_id, "--channel", "ctl/later", "--payload", '"hi"')
    assert doc["status"] == "queued"
    a = LiveAgent(gw, agent=agent)
    try:
        assert a.wait_received(doc["id"])["plaintext"] == b'"hi"'
    finally:
        a.close()


def test_send_idempotency_key(gw, live):
    key = uuid.uuid4().hex
    args = ("send", live.agent_id, "--channel", "ctl/idem", "--payload", "1", "--idempotency-key", key)
    first, again = ok_json(gw, *args), ok_json(gw, *args)
    assert first["id"] == again["id"]
    p = ctl(gw, "send", live.agent_id, "--channel", "ctl/idem", "--payload", "2", "--idempotency-key", key)
    assert p.returncode == 6, out(p)
    live.wait_received(first["id"])
    time.sleep(0.3)
    assert live.received_ids().count(first["id"]) == 1


def test_broadcast(gw, adm):
    a, b = LiveAgent(gw), LiveAgent(gw)
    c = enrolled_offline(gw)
    ghost = new_agent_id("ghost")
    try:
        doc = ok_json(gw, "broadcast", "--channel", "fleet/ctl", "--payload", '{"v":3}',
                      "--agent", a.agent_id, "--agent", c.agent_id, "--agent", ghost)
        assert (doc["recipients"], doc["sent"], doc["skipped"]) == (2, 1, [ghost])
        assert a.wait_received(doc["id"])["plaintext"] == b'{"v":3}'
        time.sleep(0.3)
        assert doc["id"] not in b.received_ids()
        per = {r["agent_id"]: r["status"] for r in adm.ok("GET", f"/api/v1/messages/{doc['id']}", 200)["recipients"]}
        assert set(per) == {a.agent_id, c.agent_id} and per[c.agent_id] == "queued"
        # connected only: every live session (a and b here, once earlier tests' sessions have ended),
        # nothing queued for c.
        wait_for(lambda: connected_ids(adm) == {a.agent_id, b.agent_id}, 10, what="only a and b connected")
        doc = ok_json(gw, "broadcast", "--channel", "fleet/now", "--payload", "1", "--connected-only")
        assert (doc["recipients"], doc["sent"]) == (2, 2)
        a.wait_received(doc["id"])
        b.wait_received(doc["id"])
        per = adm.ok("GET", f"/api/v1/messages/{doc['id']}", 200)["recipients"]
        assert c.agent_id not in {r["agent_id"] for r in per}
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- messages


def test_messages_list_and_show(gw, adm, live):
    chan = "ctl/" + uuid.uuid4().hex[:8]
    ids = [f"c-{i}" for i in range(3)]
    for i, mid in enumerate(ids):
        live.send_up(mid, channel=chan, payload=json.dumps({"i": i}).encode())
        live.wait_acked([mid])
    msgs = messages_of(ok_json(gw, "messages", "list", "--agent", live.agent_id))
    assert [m["id"] for m in msgs] == ids and msgs[0]["payload"] == {"i": 0}
    page = ok_json(gw, "messages", "list", "--channel", chan, "--limit", "2")
    assert [m["id"] for m in messages_of(page)] == ids[:2]
    after = str(messages_of(page)[-1]["seq"])
    rest = messages_of(ok_json(gw, "messages", "list", "--channel", chan, "--after", after))
    assert [m["id"] for m in rest] == ids[2:]
    text = ok(gw, "messages", "list", "--agent", live.agent_id).stdout
    assert all(i in text for i in ids)
    down = ok_json(gw, "send", live.agent_id, "--channel", chan, "--payload", "5")
    live.wait_received(down["id"])
    downs = messages_of(ok_json(gw, "messages", "list", "--agent", live.agent_id, "--direction", "down"))
    assert [m["id"] for m in downs] == [down["id"]]
    shown = wait_for(lambda: (lambda d: d if d["status"] == "delivered" else None)(
        ok_json(gw, "messages", "show", down["id"])), 10, what="delivered")
    assert shown["kind"] == "message" and shown["agent_id"] == live.agent_id and shown["channel"] == chan
    assert ctl(gw, "messages", "list", "--direction", "sideways").returncode == 2


def test_messages_tail(gw, live):
    chan = "tail/" + uuid.uuid4().hex[:8]
    d = tempfile.mkdtemp(prefix="aegisctl-tail-")
    log = os.path.join(d, "tail.out")
    with open(log, "w") as f:
        proc = subprocess.Popen(ctl_args(gw, "messages", "tail", "--channel", chan, as_json=True), stdout=f,
                                stderr=open(log + ".err", "w"), cwd=WORKDIR, env=CLEAN_ENV)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, open(log).read() + open(log + ".err").read()
        live.send_up("t-1", channel=chan, payload=b'{"t":1}')
        live.send_up("t-2", channel=chan, payload=b'{"t":2}')
        live.send_up("t-x", channel="tail/other", payload=b'{"t":0}')
        live.wait_acked(["t-1", "t-2", "t-x"])
        wait_for(lambda: '"id":"t-1"' in open(log).read() and '"id":"t-2"' in open(log).read(), 10, what="tail output")
        time.sleep(0.5)
        assert '"id":"t-x"' not in open(log).read()
        lines = [json.loads(line) for line in open(log).read().splitlines() if line.strip()]
        assert [m["id"] for m in lines] == ["t-1", "t-2"] and lines[0]["payload"] == {"t": 1}
        first_seq = lines[0]["seq"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("messages tail did not stop on SIGINT")
    # --from SEQ replays what came after it.
    log2 = os.path.join(d, "tail2.out")
    with open(log2, "w") as f:
        proc = subprocess.Popen(ctl_args(gw, "messages", "tail", "--channel", chan, "--from", str(first_seq),
                                         as_json=True), stdout=f, stderr=open(log2 + ".err", "w"), cwd=WORKDIR,
                                env=CLEAN_ENV)
    try:
        wait_for(lambda: '"id":"t-2"' in open(log2).read(), 10, what="replayed t-2")
        live.send_up("t-3", channel=chan, payload=b"{}")
        wait_for(lambda: '"id":"t-3"' in open(log2).read(), 10, what="live t-3")
        ids = [json.loads(line)["id"] for line in open(log2).read().splitlines() if line.strip()]
        assert ids == ["t-2", "t-3"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------- tokens


def test_tokens_create_list_revoke(gw, adm):
    name = "ctl-" + uuid.uuid4().hex[:6]
    doc = ok_json(gw, "tokens", "create", "--name", name, "--scope", "read", "--scope", "send")
    assert doc["name"] == name and sorted(doc["scopes"]) == ["read", "send"] and doc["token"]
    assert adm.get("/api/v1/agents", token=doc["token"]).status_code == 200
    listed = ok_json(gw, "tokens", "list")
    tokens = listed["tokens"] if isinstance(listed, dict) else listed
    assert doc["id"] in [t["id"] for t in tokens]
    assert doc["token"] not in json.dumps(listed)
    assert name in ok(gw, "tokens", "list").stdout
    ok(gw, "tokens", "revoke", doc["id"])
    assert ctl(gw, "agents", "list", token=doc["token"]).returncode == 4
    assert ctl(gw, "tokens", "revoke", str(uuid.uuid4())).returncode == 5
    # Text output of create shows the secret once.
    p = ok(gw, "tokens", "create", "--name", name + "-2", "--scope", "admin")
    created = [t for t in adm.ok("GET", "/api/v1/tokens", 200)["tokens"] if t["name"] == name + "-2"]
    assert len(created) == 1
    words = [w.strip("\"',;:") for w in p.stdout.split()]
    assert any(adm.get("/api/v1/tokens", token=w).status_code == 200 for w in words if len(w) >= 16), out(p)


def test_enrollment_tokens_create_and_revoke():
    g = Gateway(enrollment="token")
    try:
        doc = ok_json(g, "enrollment-tokens", "create", "--ttl", "3600", "--uses", "2")
        assert doc["uses"] == 2 and doc["token"]
        uuid.UUID(doc["id"])
        agent = Agent(new_agent_id("ctl"))
        Link(g, agent, extra_headers={"X-Enrollment-Token": doc["token"]}).close()
        ok(g, "enrollment-tokens", "revoke", doc["id"])
        assert refused(g, Agent(new_agent_id("ctl")), extra_headers={"X-Enrollment-Token": doc["token"]}) == \
            ("unknown_agent", 4003)
        assert ctl(g, "enrollment-tokens", "revoke", doc["id"]).returncode == 5
        plain = ok_json(g, "enrollment-tokens", "create")
        assert plain["uses"] == 1
        assert ctl(g, "enrollment-tokens", "create", "--ttl", "5").returncode == 2  # below 60 s: 422
    finally:
        g.stop()


# ---------------------------------------------------------------- TLS


def test_cacert_for_an_https_admin_api():
    d = tempfile.mkdtemp(prefix="aegisctl-tls-")
    cert, key = make_cert(d)
    g = Gateway(enrollment="open", extra=["--admin-tls-cert", cert, "--admin-tls-key", key])
    try:
        assert g.admin_url.startswith("https://")
        p = ctl(g, "agents", "list", extra=["--cacert", cert])
        assert p.returncode == 0, out(p)
        p = ctl(g, "agents", "list")  # not trusted without --cacert
        assert p.returncode != 0, out(p)
        other, _ = make_cert(d, "other")
        p = ctl(g, "agents", "list", extra=["--cacert", other])
        assert p.returncode != 0, out(p)
    finally:
        g.stop()
