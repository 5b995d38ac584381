"""The agent SDK (Sources/AegisAgent) through its reference command line,
`aegis-agent --json`, against real gateways: reconnect, resend and dedupe
across a gateway killed with SIGKILL and restarted on the same data directory
and port; requests answered by a command; heartbeats; TLS pinning; the clear
errors (unreachable, wrong server key, refused enrollment, key file
permissions) and their exit codes.

AEGIS_AGENT names the binary (default .build/debug/aegis-agent, else
.build-agent/debug/aegis-agent), like AEGISD for the gateway.
"""
import json
import os
import re
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

from conftest import AEGISD, ROOT, free_port
from gateway import Gateway, insert_down, wait_status


def _agent_binary():
    if os.environ.get("AEGIS_AGENT"):
        return os.environ["AEGIS_AGENT"]
    for build in (".build", ".build-agent"):
        path = os.path.join(ROOT, build, "debug", "aegis-agent")
        if os.path.exists(path):
            return path
    return os.path.join(ROOT, ".build", "debug", "aegis-agent")


AGENT = _agent_binary()

# Exit codes of aegis-agent (its --help).
EXIT_OK, EXIT_KEY_FILE, EXIT_UNREACHABLE, EXIT_TLS, EXIT_SERVER_KEY, EXIT_REFUSED = 0, 3, 4, 5, 6, 7


def new_agent_id():
    return f"sdk-{uuid.uuid4().hex[:12]}"


class AgentProcess:
    """`aegis-agent --json …`, its output lines parsed as they come."""

    def __init__(self, *args, env=None):
        self.key_dir = tempfile.mkdtemp(prefix="aegis-agent-")
        self.args = [AGENT, "--json", *args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.records, self.raw = [], []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.raw.append(line)
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    pass
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def of(self, event, **match):
        with self._cond:
            return [r for r in self.records if r.get("event") == event
                    and all(r.get(k) == v for k, v in match.items())]

    def wait_for(self, predicate, timeout=30, what="a record"):
        deadline = time.time() + timeout
        with self._cond:
            while True:
                if predicate():
                    return
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; output:\n{''.join(self.raw[-40:])}")
                self._cond.wait(min(left, 0.2))

    def wait_event(self, event, timeout=30, count=1, **match):
        self.wait_for(lambda: len(self.of(event, **match)) >= count, timeout, f"{count} × {event} {match}")
        return self.of(event, **match)

    def acked(self):
        return {i for r in self.of("acked") for i in r["ids"]}

    def wait(self, timeout=60):
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)

    @property
    def output(self):
        with self._cond:
            return "".join(self.raw)


def run_agent(*args, timeout=60):
    """Runs aegis-agent to its end: (exit code, output)."""
    a = AgentProcess(*args)
    try:
        code = a.wait(timeout=timeout)
    finally:
        a.stop()
    return code, a.output, a


def plain_args(gw, agent_id, key_file, *more, port=None):
    return ["--url", f"ws://127.0.0.1:{port or gw.port}/ws/agent", "--insecure-plaintext", "--agent-id", agent_id,
            "--key-file", key_file, *more]


def key_path():
    return os.path.join(tempfile.mkdtemp(prefix="aegis-agent-key-"), "agent.key")


def up_ids(gw, agent_id):
    return [r[0] for r in gw.sql(f"select msg_id from message_queue where agent_id = '{agent_id}' "
                                  f"and direction = 'up'")]


def insert_down_request(gw, agent_id, msg_id, payload, channel="exec/run"):
    gw.sql(f"insert into message_queue (id, agent_id, direction, msg_id, message_type, channel, payload, status, "
           f"retry_count, created_at, next_attempt_at, expires_at) values (gen_random_uuid(), '{agent_id}', 'down', "
           f"'{msg_id}', 'request', '{channel}', '\\x{payload.hex()}', 'queued', 0, now(), now(), "
           f"now() + interval '1 hour')")


@pytest.fixture(scope="module", autouse=True)
def agent_binary():
    assert os.path.exists(AGENT), f"{AGENT} is missing: swift build --product aegis-agent (or set AEGIS_AGENT)"


@pytest.fixture(scope="module")
def gw():
    g = Gateway(enrollment="open", admin=False)
    yield g
    g.stop()


# ---------------------------------------------------------------------------
# Reconnect, resend, dedupe across a gateway killed mid-stream


def test_nothing_acked_is_lost_and_nothing_processed_twice_across_a_gateway_kill():
    g = Gateway(enrollment="open", admin=False)
    port, data_dir = g.port, g.data_dir
    restarted = None
    agent_id, key = new_agent_id(), key_path()
    total = 300
    a = AgentProcess(*plain_args(g, agent_id, key, "--send-events", str(total), "--send-interval", "0.02",
                                 "--reconnect-initial", "0.2", "--reconnect-cap", "1", "--exit-when-acked"))
    try:
        a.wait_event("connected")
        insert_down(g, agent_id, "down-before", b'{"n":1}')
        a.wait_event("event", id="down-before")
        wait_status(g, agent_id, "down-before", "delivered")
        a.wait_for(lambda: len(a.acked()) >= 40, what="40 acked events")

        # Mid-stream: the agent has events in flight, unacked.
        g.proc.kill()
        g.proc.wait()
        killed_at_acked = set(a.acked())
        a.wait_event("disconnected")
        # While the gateway is down, as if its last ack had not been recorded:
        # down-before is open again (it will be resent on the next session),
        # and a new down message waits.
        g.sql(f"update message_queue set status = 'sent', retry_count = 1, delivered_at = null "
              f"where agent_id = '{agent_id}' and msg_id = 'down-before'")
        insert_down(g, agent_id, "down-after", b'{"n":2}')
        time.sleep(1.0)  # the agent keeps queueing and retrying

        # The same data directory and port: the private cluster is adopted.
        restarted = Gateway(enrollment="open", data_dir=data_dir, admin=False,
                            extra=["--listen", f"127.0.0.1:{port}"])
        assert f"127.0.0.1:{port}" in "".join(restarted.output)
        connected = a.wait_event("connected", count=2, timeout=60)
        assert connected[1]["resending"] > 0  # what was not acked goes again

        a.wait_event("event", id="down-after")
        a.wait_event("duplicate", id="down-before")  # resent by the gateway, not processed again
        wait_status(restarted, agent_id, "down-before", "delivered")
        wait_status(restarted, agent_id, "down-after", "delivered")

        assert a.wait(timeout=120) == EXIT_OK  # --exit-when-acked: every event acked
        queued = {r["id"] for r in a.of("queued")}
        acked = a.acked()
        assert len(queued) == total
        assert acked == queued
        stored = up_ids(restarted, agent_id)
        # Nothing acked is lost (acked before the kill included), nothing is stored twice.
        assert killed_at_acked <= set(stored)
        assert set(stored) == acked and len(stored) == len(set(stored))
        # Each down message was handed to the application once.
        assert len(a.of("event", id="down-before")) == 1
        assert len(a.of("event", id="down-after")) == 1
    finally:
        a.stop()
        if restarted:
            restarted.stop()
        else:
            g.stop_database()


def test_unacked_events_queued_while_the_gateway_is_away_are_delivered_after_it_comes_back():
    """The agent starts with the gateway down: nothing is lost while it backs off."""
    port = free_port()
    agent_id, key = new_agent_id(), key_path()
    a = AgentProcess("--url", f"ws://127.0.0.1:{port}/ws/agent", "--insecure-plaintext", "--agent-id", agent_id,
                     "--key-file", key, "--send-event", "boot:first", "--send-event", "boot:second",
                     "--reconnect-initial", "0.2", "--reconnect-cap", "0.5", "--exit-when-acked")
    g = None
    try:
        a.wait_event("disconnected", count=2)
        g = Gateway(enrollment="open", admin=False, extra=["--listen", f"127.0.0.1:{port}"])
        assert a.wait(timeout=60) == EXIT_OK
        assert sorted(up_ids(g, agent_id)) == sorted(r["id"] for r in a.of("queued"))
    finally:
        a.stop()
        if g:
            g.stop()


# ---------------------------------------------------------------------------
# Requests, events, heartbeats


def test_requests_are_answered_by_the_command_and_events_printed(gw):
    agent_id, key = new_agent_id(), key_path()
    a = AgentProcess(*plain_args(gw, agent_id, key, "--exec", "tr a-z A-Z", "--exec-timeout", "5"))
    try:
        a.wait_event("connected")
        insert_down_request(gw, agent_id, "req-1", b"hello agent")
        insert_down(gw, agent_id, "evt-1", b'{"config":"changed"}')
        a.wait_event("request", id="req-1")
        assert a.wait_event("event", id="evt-1")[0]["payload"] == '{"config":"changed"}'
        a.wait_event("responded", request_id="req-1")
        deadline = time.time() + 10
        rows = []
        while time.time() < deadline and not rows:
            rows = gw.sql(f"select message_type, ref, convert_from(payload, 'UTF8') from message_queue "
                          f"where agent_id = '{agent_id}' and direction = 'up' and message_type = 'response'")
            time.sleep(0.1)
        assert rows == [["response", "req-1", "HELLO AGENT"]]
        wait_status(gw, agent_id, "req-1", "delivered")
    finally:
        a.stop()


def test_a_failing_or_slow_command_answers_with_an_error(gw):
    agent_id, key = new_agent_id(), key_path()
    a = AgentProcess(*plain_args(gw, agent_id, key, "--exec", "sleep 5", "--exec-timeout", "0.5"))
    try:
        a.wait_event("connected")
        insert_down_request(gw, agent_id, "slow-1", b"x")
        a.wait_event("responded", request_id="slow-1", timeout=20)
        deadline = time.time() + 10
        rows = []
        while time.time() < deadline and not rows:
            rows = gw.sql(f"select convert_from(payload, 'UTF8') from message_queue where agent_id = '{agent_id}' "
                          f"and direction = 'up' and ref = 'slow-1'")
            time.sleep(0.1)
        assert json.loads(rows[0][0])["error"]["code"] == "exec_timeout"
    finally:
        a.stop()


def test_without_a_command_requests_are_echoed(gw):
    agent_id, key = new_agent_id(), key_path()
    a = AgentProcess(*plain_args(gw, agent_id, key))
    try:
        a.wait_event("connected")
        insert_down_request(gw, agent_id, "echo-1", b"\x00\xffbinary")
        assert a.wait_event("request", id="echo-1")[0]["payload_b64"]
        a.wait_event("responded", request_id="echo-1")
        deadline = time.time() + 10
        rows = []
        while time.time() < deadline and not rows:
            rows = gw.sql(f"select encode(payload, 'hex') from message_queue where agent_id = '{agent_id}' "
                          f"and direction = 'up' and ref = 'echo-1'")
            time.sleep(0.1)
        assert rows == [[b"\x00\xffbinary".hex()]]
    finally:
        a.stop()


def test_a_request_of_the_agent_gets_the_gateways_response(gw):
    agent_id, key = new_agent_id(), key_path()
    a = AgentProcess(*plain_args(gw, agent_id, key, "--send-request", "inventory:which packages?",
                                 "--request-timeout", "20", "--exit-when-acked"))
    try:
        deadline = time.time() + 20
        rows = []
        while time.time() < deadline and not rows:
            rows = gw.sql(f"select msg_id, channel from message_queue where agent_id = '{agent_id}' "
                          f"and direction = 'up' and message_type = 'request'")
            time.sleep(0.1)
        [[request_id, channel]] = rows
        # The backend answers: a down response naming the request.
        gw.sql(f"insert into message_queue (id, agent_id, direction, msg_id, message_type, channel, ref, payload, "
               f"status, retry_count, created_at, next_attempt_at, expires_at) values (gen_random_uuid(), "
               f"'{agent_id}', 'down', 'resp-{request_id[:8]}', 'response', '{channel}', '{request_id}', "
               f"'\\x{b'openssl 3'.hex()}', 'queued', 0, now(), now(), now() + interval '1 hour')")
        response = a.wait_event("response", request_id=request_id)[0]
        assert response["payload"] == "openssl 3" and response["channel"] == "inventory"
        assert a.wait(timeout=30) == EXIT_OK
        wait_status(gw, agent_id, f"resp-{request_id[:8]}", "delivered")
    finally:
        a.stop()


def test_heartbeats_keep_a_quiet_session_alive():
    g = Gateway(enrollment="open", admin=False, env={"AEGIS_HEARTBEAT_INTERVAL": "1s"})
    agent_id, key = new_agent_id(), key_path()
    a = AgentProcess(*plain_args(g, agent_id, key))
    try:
        a.wait_event("connected")
        time.sleep(5)  # five intervals: silence would have closed it (4006) after three
        assert a.of("disconnected") == []
        a.stop()
        log = open(g.log_path).read()
        assert "close_code=4006" not in log
        assert re.search(rf"agent_id={agent_id} by=agent close_code=1000", log)
    finally:
        a.stop()
        g.stop()


# ---------------------------------------------------------------------------
# Clear errors


def test_an_unreachable_gateway_is_a_clear_error():
    code, out, a = run_agent("--url", f"ws://127.0.0.1:{free_port()}/ws/agent", "--insecure-plaintext",
                             "--agent-id", new_agent_id(), "--key-file", key_path(), "--max-attempts", "2",
                             "--reconnect-initial", "0.1")
    assert code == EXIT_UNREACHABLE
    fatal = a.of("fatal")[0]
    assert "unreachable" in fatal["error"] and "Connection refused" in fatal["error"]
    assert "aegis-agent: gateway unreachable at ws://127.0.0.1:" in out


def test_a_wrong_server_key_stops_the_agent_without_retrying(gw):
    from aegis_agent import Agent
    other = Agent("unrelated").pk  # a valid Ed25519 key that is not the gateway's
    import base64
    code, out, a = run_agent(*plain_args(gw, new_agent_id(), key_path(), "--server-key",
                                         base64.b64encode(other).decode()))
    assert code == EXIT_SERVER_KEY
    assert "server key mismatch" in a.of("fatal")[0]["error"]
    assert len(a.of("connecting")) <= 1 and a.of("disconnected") == []


def test_trust_on_first_use_pins_the_server_key_and_enforces_it(gw):
    import base64
    agent_id, key = new_agent_id(), key_path()
    pin = key + ".server.pub"
    code, out, a = run_agent(*plain_args(gw, agent_id, key, "--send-event", "t:x", "--exit-when-acked"))
    assert code == EXIT_OK
    assert base64.b64decode(open(pin).read().strip()) == gw.server_key
    assert a.of("server_key_pinned")
    # Another gateway (another server key) with the same pin file: refused.
    other = Gateway(enrollment="open", admin=False)
    try:
        code, out, a = run_agent(*plain_args(other, agent_id, key))
        assert code == EXIT_SERVER_KEY
        assert "server key mismatch" in out
    finally:
        other.stop()


def test_a_refused_enrollment_is_a_clear_error():
    g = Gateway(enrollment="token", admin=False)
    try:
        code, out, a = run_agent(*plain_args(g, new_agent_id(), key_path()))
        assert code == EXIT_REFUSED
        assert "unknown_agent" in a.of("fatal")[0]["error"]
    finally:
        g.stop()


def test_a_key_file_readable_by_others_is_refused(gw):
    agent_id, key = new_agent_id(), key_path()
    code, _, _ = run_agent(*plain_args(gw, agent_id, key, "--send-event", "t:x", "--exit-when-acked"))
    assert code == EXIT_OK
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600  # created 0600
    for mode in (0o644, 0o640):
        os.chmod(key, mode)
        code, out, a = run_agent(*plain_args(gw, agent_id, key))
        assert code == EXIT_KEY_FILE
        assert "readable by group or others" in a.of("fatal")[0]["error"]
        assert a.of("connecting") == [] and a.of("connected") == []
    os.chmod(key, 0o600)
    code, _, _ = run_agent(*plain_args(gw, agent_id, key, "--send-event", "t:y", "--exit-when-acked"))
    assert code == EXIT_OK


def test_plaintext_needs_consent():
    code, out, _ = run_agent("--url", "ws://127.0.0.1:1/ws/agent", "--agent-id", "a", "--key-file", key_path())
    assert code == 2
    assert "plaintext" in out


# ---------------------------------------------------------------------------
# TLS: the certificate pin and a CA file


@pytest.fixture(scope="module")
def tls_gw():
    """A gateway on wss:// (gateway.py's Gateway is plaintext)."""
    data_dir = tempfile.mkdtemp(prefix="aegis-gw-tls-")
    port = free_port()
    log_path = os.path.join(data_dir, "aegisd.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([AEGISD, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir, "--enrollment", "open",
                             "--admin-listen", "off", "--workers", "2"], stdout=log, stderr=subprocess.STDOUT)
    fingerprint = None
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None and not fingerprint:
        m = re.search(r"fingerprint: ([0-9a-f]{64})", open(log_path).read())
        fingerprint = m and m.group(1)
        time.sleep(0.05)
    assert fingerprint, open(log_path).read()
    yield port, fingerprint, os.path.join(data_dir, "tls.crt")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_a_pinned_certificate_is_accepted_and_another_refused(tls_gw):
    port, fingerprint, _ = tls_gw
    key = key_path()
    code, out, _ = run_agent("--url", f"wss://127.0.0.1:{port}/ws/agent", "--pin-sha256", fingerprint,
                             "--agent-id", new_agent_id(), "--key-file", key, "--send-event", "t:tls",
                             "--exit-when-acked")
    assert code == EXIT_OK, out
    wrong = fingerprint[:-1] + ("0" if fingerprint[-1] != "0" else "1")
    code, out, a = run_agent("--url", f"wss://127.0.0.1:{port}/ws/agent", "--pin-sha256", wrong,
                             "--agent-id", new_agent_id(), "--key-file", key_path())
    assert code == EXIT_TLS
    assert "TLS verification failed" in a.of("fatal")[0]["error"]


def test_a_ca_file_is_accepted_for_the_certificates_name(tls_gw):
    port, _, cert = tls_gw
    code, out, _ = run_agent("--url", f"wss://localhost:{port}/ws/agent", "--ca-file", cert,
                             "--agent-id", new_agent_id(), "--key-file", key_path(), "--send-event", "t:ca",
                             "--exit-when-acked")
    assert code == EXIT_OK, out


def test_the_next_url_is_tried_when_one_is_down(gw):
    agent_id = new_agent_id()
    code, out, a = run_agent("--url", f"ws://127.0.0.1:{free_port()}/ws/agent", "--url", gw.url,
                             "--insecure-plaintext", "--agent-id", agent_id, "--key-file", key_path(),
                             "--reconnect-initial", "0.1", "--send-event", "t:failover", "--exit-when-acked")
    assert code == EXIT_OK, out
    assert a.of("connected")[0]["url"] == gw.url
    assert len(up_ids(gw, agent_id)) == 1
