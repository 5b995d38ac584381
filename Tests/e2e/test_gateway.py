"""The gateway end to end: aegisd with its private PostgreSQL, driven by the
independent Python agent (aegis_agent.py, proven against vectors.json).
What was acked is looked up in PostgreSQL with psql."""
import json
import signal
import time
import uuid

import pytest

from aegis_agent import Agent
from gateway import Gateway, Link, refused, token_hash


@pytest.fixture(scope="module")
def gw():
    g = Gateway(enrollment="open")
    yield g
    g.stop()


def agent_id():
    return "agent-" + uuid.uuid4().hex[:12]


def test_up_message_is_stored_then_acked(gw):
    a = Agent(agent_id())
    link = Link(gw, a)
    link.send("e-1", payload=b'{"cpu":0.5}')
    link.acked_ids(["e-1"])
    rows = gw.sql(f"select message_type, channel, convert_from(payload, 'UTF8'), status, "
                  f"length(encrypted_payload), length(nonce), length(signature) "
                  f"from message_queue where agent_id = '{a.agent_id}' and direction = 'up'")
    assert rows == [["event", "telemetry", '{"cpu":0.5}', "received", "27", "12", "64"]]
    link.close()


def test_acks_are_coalesced_per_connection(gw):
    link = Link(gw, Agent(agent_id()))
    ids = [f"burst-{i}" for i in range(200)]
    for i in ids:
        link.send(i)
    acks = link.acked_ids(ids)
    # 200 messages in well under the 20 ms window each: far fewer acks than ids.
    assert len(acks) < 50, len(acks)
    link.close()


def test_duplicate_up_id_is_acked_again_not_stored_again(gw):
    a = Agent(agent_id())
    link = Link(gw, a)
    link.send("dup-1", payload=b"first")
    link.acked_ids(["dup-1"])
    link.send("dup-1", payload=b"second")  # a retransmission, sealed afresh
    link.acked_ids(["dup-1"])
    link.close()
    # Across sessions too (the durable unique key, not only the session window).
    link2 = Link(gw, a)
    link2.send("dup-1", payload=b"third")
    link2.acked_ids(["dup-1"])
    link2.close()
    assert gw.sql(f"select convert_from(payload, 'UTF8') from message_queue "
                  f"where agent_id = '{a.agent_id}' and msg_id = 'dup-1'") == [["first"]]


def test_heartbeat_is_answered_with_its_id(gw):
    link = Link(gw, Agent(agent_id()))
    link.ws.send(link.session.heartbeat("hb-7"))
    m = link.recv()
    assert m["type"] == "heartbeat" and m["ref"] == "hb-7"
    link.close()


def test_open_enrollment_pins_the_first_key(gw):
    aid = agent_id()
    Link(gw, Agent(aid)).close()
    code, close = refused(gw, Agent(aid))  # same id, another key
    assert (code, close) == ("key_mismatch", 4003)


def test_replayed_auth_request_is_refused(gw):
    a = Agent(agent_id())
    text = a.auth_request()
    Link(gw, a, auth_text=text).close()
    code, close = refused(gw, a, auth_text=text)
    assert (code, close) == ("replay", 4001)


def test_revoked_agent_is_refused(gw):
    a = Agent(agent_id())
    Link(gw, a).close()
    gw.sql(f"update agent_connections set enrollment = 'revoked', revoked_at = now() where agent_id = '{a.agent_id}'")
    assert refused(gw, a) == ("revoked", 4003)


def test_newer_session_replaces_the_older_with_4009(gw):
    a = Agent(agent_id())
    first = Link(gw, a)
    second = Link(gw, a)
    with pytest.raises(Exception):
        while True:
            first.recv(timeout=10)
    assert first.ws.close_code == 4009
    second.send("after-replace")
    second.acked_ids(["after-replace"])
    second.close()


def test_down_message_is_delivered_and_marked_on_ack(gw):
    a = Agent(agent_id())
    link = Link(gw, a)
    gw.sql(f"insert into message_queue (id, agent_id, direction, msg_id, message_type, channel, payload, status, "
           f"retry_count, created_at, next_attempt_at) values (gen_random_uuid(), '{a.agent_id}', 'down', "
           f"'down-1', 'request', 'jobs/run', convert_to('{{\"job\":1}}', 'UTF8'), 'queued', 0, now(), now())")
    deadline = time.time() + 10
    while True:
        m = link.recv(timeout=max(0.1, deadline - time.time()))
        if m["type"] == "request":
            break
    assert m["id"] == "down-1" and m["plaintext"] == b'{"job":1}'
    link.ws.send(link.session.ack(["down-1"]))
    deadline = time.time() + 10
    while time.time() < deadline:
        if gw.sql(f"select status from message_queue where msg_id = 'down-1' and agent_id = '{a.agent_id}'") == [["delivered"]]:
            break
        time.sleep(0.1)
    assert gw.sql(f"select status from message_queue where msg_id = 'down-1' and agent_id = '{a.agent_id}'") == [["delivered"]]
    link.close()


def test_token_and_manual_enrollment():
    g = Gateway(enrollment="token")
    try:
        a = Agent(agent_id())
        assert refused(g, a) == ("unknown_agent", 4003)
        token = "tok_" + uuid.uuid4().hex  # 36 characters of the b64u alphabet
        g.sql(f"insert into enrollment_tokens (id, token_hash, expires_at, uses_left) values "
              f"(gen_random_uuid(), '\\x{token_hash(token)}', now() + interval '1 hour', 1)")
        Link(g, a, extra_headers={"X-Enrollment-Token": token}).close()
        assert g.sql(f"select uses_left from enrollment_tokens where token_hash = '\\x{token_hash(token)}'") == [["0"]]
        # Enrolled now: no token needed; another agent cannot reuse the spent token.
        Link(g, a).close()
        assert refused(g, Agent(agent_id()), extra_headers={"X-Enrollment-Token": token}) == ("unknown_agent", 4003)
    finally:
        g.stop()
    m = Gateway(enrollment="manual")
    try:
        a = Agent(agent_id())
        assert refused(m, a) == ("pending_approval", 4003)
        assert m.sql(f"select enrollment from agent_connections where agent_id = '{a.agent_id}'") == [["pending"]]
        m.sql(f"update agent_connections set enrollment = 'active' where agent_id = '{a.agent_id}'")
        Link(m, a).close()
    finally:
        m.stop()


def test_acked_message_survives_kill_9_of_the_gateway():
    g = Gateway(enrollment="open")
    try:
        a = Agent(agent_id())
        link = Link(g, a)
        link.send("durable-1", payload=b"keep me")
        link.acked_ids(["durable-1"])
        g.proc.kill()  # SIGKILL right after the ack
        g.proc.wait()
        # The private cluster is its own process and still runs.
        assert g.sql(f"select convert_from(payload, 'UTF8') from message_queue "
                     f"where agent_id = '{a.agent_id}' and msg_id = 'durable-1'") == [["keep me"]]
    finally:
        g.stop_database()


def test_nonce_replay_across_two_gateways_on_one_database():
    first = Gateway(enrollment="open")
    try:
        second = Gateway(enrollment="open", database_url=first.database_url)
        try:
            a = Agent(agent_id())
            text = a.auth_request()
            Link(first, a, auth_text=text).close()
            assert refused(second, a, auth_text=text) == ("replay", 4001)
        finally:
            second.stop()
    finally:
        first.stop()


def test_postgres_restart_during_traffic_loses_nothing_acked():
    import threading

    from gateway import restart_database
    g = Gateway(enrollment="open")
    try:
        a = Agent(agent_id())
        sent, acked = [], set()
        restarted = threading.Event()
        done_at = [None]

        def restart_soon():
            time.sleep(0.5)
            restart_database(g)
            done_at[0] = time.time()
            restarted.set()

        def drain(link, wait):
            while True:
                try:
                    m = link.session.open(link.ws.recv(timeout=wait))
                except TimeoutError:
                    return
                if m["type"] == "ack":
                    acked.update(json.loads(m["plaintext"])["ids"])

        threading.Thread(target=restart_soon, daemon=True).start()
        deadline = time.time() + 90
        while time.time() < deadline:
            traffic_over = restarted.is_set() and time.time() > done_at[0] + 1.0
            if traffic_over and acked == set(sent):
                break
            try:
                link = Link(g, a)
            except Exception:
                time.sleep(0.2)  # the gateway refuses handshakes (1013) while its store is down
                continue
            try:
                # Resend what is not acked (same ids), then keep sending new ones
                # until well after the restart, as an agent does.
                for i in [x for x in sent if x not in acked]:
                    link.send(i)
                while not (restarted.is_set() and time.time() > done_at[0] + 1.0) and time.time() < deadline:
                    sent.append(f"m-{len(sent)}")
                    link.send(sent[-1])
                    drain(link, 0.005)
                drain(link, 1.0)
            except Exception:
                pass  # closed (1013) or broken: reconnect and resend
            finally:
                try:
                    link.close()
                except Exception:
                    pass
        assert restarted.is_set()
        assert len(sent) > 50
        assert acked == set(sent)
        stored = [r[0] for r in g.sql(f"select msg_id from message_queue where agent_id = '{a.agent_id}'")]
        assert set(stored) == acked and len(stored) == len(set(stored))  # nothing acked lost, nothing twice
    finally:
        g.stop()



def next_of_type(link, mtype, timeout=10):
    deadline = time.time() + timeout
    while True:
        m = link.recv(timeout=max(0.1, deadline - time.time()))
        if m["type"] == mtype:
            return m


def test_down_redelivery_retries_and_expiry():
    from gateway import insert_down, wait_status
    # Short timers so that the schedule plays out in seconds: ack timeout 1 s, one retry.
    g = Gateway(enrollment="open", env={"AEGIS_ACK_TIMEOUT": "1s", "AEGIS_RETRIES": "1"})
    try:
        a = Agent(agent_id())
        # Redelivery after a dropped connection: received, not acked, connection dropped.
        link = Link(g, a)
        insert_down(g, a.agent_id, "redo-1", b'{"n":1}')
        assert next_of_type(link, "event")["id"] == "redo-1"
        link.ws.socket.close()  # dropped without acking
        link2 = Link(g, a)
        again = next_of_type(link2, "event")
        assert again["id"] == "redo-1" and again["plaintext"] == b'{"n":1}'  # the same message, sealed afresh
        link2.ws.send(link2.session.ack(["redo-1"]))
        wait_status(g, a.agent_id, "redo-1", "delivered")

        # Retries exhausted: 1 + 1 sends, never acked, then failed.
        insert_down(g, a.agent_id, "never-acked")
        assert next_of_type(link2, "event")["id"] == "never-acked"
        assert next_of_type(link2, "event", timeout=5)["id"] == "never-acked"  # the one retry
        wait_status(g, a.agent_id, "never-acked", "failed", timeout=10)
        # A late ack does not revive it.
        link2.ws.send(link2.session.ack(["never-acked"]))
        time.sleep(0.5)
        wait_status(g, a.agent_id, "never-acked", "failed")
        link2.close()

        # Expiry: queued for an agent that is away until its time to live passes.
        b = Agent(agent_id())
        Link(g, b).close()
        insert_down(g, b.agent_id, "too-late", expires="now() + interval '1 second'")
        wait_status(g, b.agent_id, "too-late", "failed", timeout=10)
    finally:
        g.stop()


def test_handshakes_are_rate_limited_per_agent():
    g = Gateway(enrollment="open")
    try:
        a = Agent(agent_id())
        codes = []
        for _ in range(8):
            try:
                Link(g, a).close()
                codes.append("ok")
            except Exception:
                codes.append("refused")
        # The default per-agent burst is 5 handshakes.
        assert codes[:5] == ["ok"] * 5
        assert refused(g, a) == ("rate_limited", 4029)
    finally:
        g.stop()


def test_a_bad_setting_is_named_at_start():
    import subprocess
    import tempfile

    from conftest import AEGISD
    out = subprocess.run([AEGISD, "--enrollment", "maybe", "--data-dir", tempfile.mkdtemp()],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "enrollment: expected open, token or manual, got 'maybe'" in out.stdout + out.stderr
    env = {**__import__("os").environ, "AEGIS_HEARTBEAT_INTERVAL": "often"}
    out = subprocess.run([AEGISD, "--data-dir", tempfile.mkdtemp()], capture_output=True, text=True, timeout=30,
                         env=env)
    assert out.returncode != 0 and "heartbeat_interval" in out.stdout + out.stderr
    assert "AEGIS_HEARTBEAT_INTERVAL" in out.stdout + out.stderr


def test_logs_name_ids_and_never_secrets(gw):
    a = Agent(agent_id())
    link = Link(gw, a)
    link.send("log-1", payload=b"top secret payload")
    link.acked_ids(["log-1"])
    link.close()
    time.sleep(0.5)
    log = open(gw.log_path).read()
    assert f"agent_id={a.agent_id}" in log and "session_id=" in log
    assert "top secret payload" not in log
    assert link.session.session_id in log
