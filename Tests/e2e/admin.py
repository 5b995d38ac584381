"""Helpers for the admin API's end-to-end tests: an HTTP client bound to a
Gateway (requests), a Server-Sent Events reader with timeouts, and a live
agent (aegis_agent.py on a thread) that acks what it receives and answers
requests with a response, as a real agent would."""
import json as jsonlib
import os
import queue
import socket
import subprocess
import threading
import time
import uuid

import requests
from websockets.exceptions import ConnectionClosed

from aegis_agent import Agent, compact
from conftest import make_cert  # noqa: F401 (re-exported for the tests)
from gateway import Link

DEFAULT = object()  # "the gateway's bootstrap admin token"
NOBODY = object()   # "no request body"


def new_agent_id(prefix="agent"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_for(predicate, timeout=10, interval=0.05, what="condition"):
    """Polls until predicate() is truthy; returns its value or fails naming `what`."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def enrolled_offline(gw, agent=None):
    """An agent that enrolled (one handshake) and is now away (its session ended in the store too)."""
    agent = agent or Agent(new_agent_id())
    Link(gw, agent).close()
    wait_for(lambda: gw.sql(f"select is_active from agent_connections where agent_id = '{agent.agent_id}'") == [["f"]],
             10, what=f"{agent.agent_id}'s session to end")
    return agent


def fill_down_queue(gw, agent_id, n=10_000):
    """n queued down messages for the agent, straight into the store (the gateway's
    per-agent limit of open down messages is 10,000)."""
    gw.sql(f"insert into message_queue (id, agent_id, direction, msg_id, message_type, channel, payload, status, "
           f"retry_count, created_at, next_attempt_at, expires_at) select gen_random_uuid(), '{agent_id}', 'down', "
           f"'fill-' || i, 'event', 'fill/c', '\\x7b7d', 'queued', 0, now(), now(), now() + interval '1 hour' "
           f"from generate_series(1, {n}) as i")


def connected_ids(adm, timeout=10):
    """The agents listed under status=connected, once every one listed says connected: true
    (a session that just ended may take a moment to leave the store)."""
    deadline = time.time() + timeout
    while True:
        agents = adm.ok("GET", "/api/v1/agents", 200, params={"status": "connected", "limit": 1000})["agents"]
        if all(a["connected"] for a in agents):
            return {a["agent_id"] for a in agents}
        if time.time() > deadline:
            raise AssertionError(f"status=connected lists agents that are not connected: {agents}")
        time.sleep(0.1)


class Admin:
    """The admin API of one Gateway. `token` defaults to the gateway's
    bootstrap admin token; token=None sends no Authorization header."""

    def __init__(self, gw, token=DEFAULT, verify=True, base_url=None):
        self.gw = gw
        self.token = gw.admin_token if token is DEFAULT else token
        self.verify = verify
        self.base_url = (base_url or gw.admin_url).rstrip("/")
        self.session = requests.Session()

    def api(self, method, path, token=DEFAULT, json=NOBODY, data=None, headers=None, params=None, stream=False,
            timeout=30):
        """One request; returns the requests.Response (never raises on a status)."""
        h = {}
        token = self.token if token is DEFAULT else token
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if json is not NOBODY:
            # Compact, as the agent is to receive a JSON payload (tests of the
            # gateway's own compaction send other layouts through `data`).
            data = jsonlib.dumps(json, separators=(",", ":")).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}  # headers={"Content-Type": None} drops one
        return self.session.request(method, self.base_url + path, data=data, headers=h, params=params,
                                    stream=stream, timeout=timeout, verify=self.verify)

    def get(self, path, **kw):
        return self.api("GET", path, **kw)

    def post(self, path, json=NOBODY, **kw):
        return self.api("POST", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.api("DELETE", path, **kw)

    def ok(self, method, path, status, **kw):
        """A request that must answer `status`; returns the parsed body (or None)."""
        r = self.api(method, path, **kw)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json() if r.content else None

    def stream(self, params=None, last_event_id=None, token=DEFAULT, headers=None):
        """GET /api/v1/stream; returns (response, SSEReader) — the reader only when 200."""
        h = dict(headers or {})
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        # (connect, read): a read timeout well above the 15 s keepalive.
        r = self.api("GET", "/api/v1/stream", token=token, params=params, headers=h, stream=True,
                     timeout=(10, 60))
        return r, (SSEReader(r) if r.status_code == 200 else None)

    def create_token(self, scopes, name=None):
        body = self.ok("POST", "/api/v1/tokens", 201,
                       json={"name": name or f"test-{uuid.uuid4().hex[:8]}", "scopes": list(scopes)})
        return body


class SSEEnd(Exception):
    pass


class SSEReader:
    """Reads Server-Sent Events from a streaming requests.Response on a
    thread; next(timeout) returns {"id", "event", "data"} (id: the block's own
    `id:` field or None; event defaults to "message") or raises TimeoutError.
    Comments (`: keepalive`) are counted in .comments."""

    def __init__(self, response):
        self.response = response
        self.events = queue.Queue()
        self.comments = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read(self):
        raw = self.response.raw
        if hasattr(raw, "read1"):
            return raw.read1(65536)
        return raw.read(1)

    def _run(self):
        buf = b""
        ev = {"id": None, "event": None, "data": []}
        try:
            while True:
                chunk = self._read()
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.rstrip(b"\r").decode("utf-8")
                    if line == "":
                        if ev["data"]:
                            self.events.put({"id": ev["id"], "event": ev["event"] or "message",
                                             "data": "\n".join(ev["data"])})
                        ev = {"id": None, "event": None, "data": []}
                        continue
                    if line.startswith(":"):
                        self.comments.append(line)
                        continue
                    name, _, value = line.partition(":")
                    if value.startswith(" "):
                        value = value[1:]
                    if name == "data":
                        ev["data"].append(value)
                    elif name in ("id", "event"):
                        ev[name] = value
        except Exception as e:  # closed by close(), or a broken stream
            self.events.put(e)
        self.events.put(SSEEnd("the stream ended"))

    def next(self, timeout=10):
        try:
            item = self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None
        if isinstance(item, Exception):
            self.events.put(item)  # stays ended
            raise item
        return item

    def take(self, n, timeout=10):
        """The next n events (all within `timeout` seconds)."""
        deadline = time.time() + timeout
        return [self.next(timeout=max(0.01, deadline - time.time())) for _ in range(n)]

    def messages(self, n, timeout=10):
        """The next n `message` events as (id, parsed data)."""
        out = []
        deadline = time.time() + timeout
        while len(out) < n:
            e = self.next(timeout=max(0.01, deadline - time.time()))
            if e["event"] == "message":
                out.append((e["id"], jsonlib.loads(e["data"])))
        return out

    def quiet(self, seconds):
        """Asserts that no event arrives for `seconds`; returns the stray one otherwise."""
        try:
            return self.next(timeout=seconds)
        except TimeoutError:
            return None

    def _socket(self):
        raw = self.response.raw
        conn = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
        if conn is not None and getattr(conn, "sock", None) is not None:
            return conn.sock
        try:  # urllib3 → http.client.HTTPResponse → buffered socket file → SocketIO
            return raw._fp.fp.raw._sock
        except AttributeError:
            return None

    def close(self):
        sock = self._socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread blocked in recv
            except OSError:
                pass
        self.response.close()
        self.thread.join(timeout=5)


def default_answer(agent, m):
    """What a LiveAgent answers to a request: proof that it read it."""
    try:
        echo = jsonlib.loads(m["plaintext"])
    except ValueError:
        echo = {"bytes_hex": m["plaintext"].hex()}
    return compact({"agent": agent.agent_id, "answer_to": m["id"], "channel": m["channel"], "echo": echo}).encode()


class LiveAgent:
    """A connected agent on a thread: acks every request and event, answers
    each request with a `response` (ref = the request's id, same channel),
    heartbeats, and records what came down and how its connection ended.

    respond: True (default_answer), False (never answer), or a function
    (agent, message) -> bytes."""

    def __init__(self, gw, agent=None, respond=True, ack=True, extra_headers=None):
        self.agent = agent or Agent(new_agent_id())
        self.agent_id = self.agent.agent_id
        self.respond = respond
        self.do_ack = ack
        self.link = Link(gw, self.agent, extra_headers=extra_headers)
        self.session = self.link.session
        self.received = []      # down requests and events, in arrival order (dicts with "plaintext")
        self.acked = set()      # our up ids the gateway acked
        self.answered = {}      # request id -> (response id, response bytes)
        self.close_code = None
        self.closed = threading.Event()
        self._send_lock = threading.Lock()
        self._stop = False
        self._last_send = time.time()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _send(self, text):
        with self._send_lock:
            self.link.ws.send(text)
            self._last_send = time.time()

    def _run(self):
        ws = self.link.ws
        try:
            while not self._stop:
                try:
                    text = ws.recv(timeout=0.2)
                except TimeoutError:
                    if time.time() - self._last_send > 10:
                        self._send(self.session.heartbeat())
                    continue
                m = self.session.open(text)
                if m["type"] == "ack":
                    self.acked.update(jsonlib.loads(m["plaintext"])["ids"])
                elif m["type"] in ("request", "event"):
                    self.received.append(m)
                    if m["type"] == "request" and self.respond:
                        answer = (default_answer if self.respond is True else self.respond)(self.agent, m)
                        rid = "resp-" + uuid.uuid4().hex[:16]
                        self.answered[m["id"]] = (rid, answer)
                        self._send(self.session.seal(rid, "response", m["channel"], answer, ref=m["id"]))
                    if self.do_ack:
                        self._send(self.session.ack([m["id"]]))
        except ConnectionClosed as e:
            self.close_code = e.rcvd.code if e.rcvd is not None else ws.close_code
        except Exception:
            self.close_code = ws.close_code
        finally:
            if self.close_code is None:
                self.close_code = ws.close_code
            self.closed.set()

    def send_up(self, mid, mtype="event", channel="telemetry", payload=b"{}", ref=None):
        self._send(self.session.seal(mid, mtype, channel, payload, ref=ref))

    def wait_acked(self, ids, timeout=10):
        wait_for(lambda: set(ids) <= self.acked, timeout, what=f"acks of {ids}")

    def wait_received(self, mid, timeout=10):
        """The down message with id `mid`, once it has arrived."""
        return wait_for(lambda: next((m for m in list(self.received) if m["id"] == mid), None), timeout,
                        what=f"{self.agent_id} receiving {mid}")

    def received_ids(self):
        return [m["id"] for m in list(self.received)]

    def wait_closed(self, timeout=10):
        assert self.closed.wait(timeout), f"{self.agent_id}: the session was not closed"
        return self.close_code

    def close(self):
        self._stop = True
        self.thread.join(timeout=5)
        try:
            self.link.close()
        except Exception:
            pass




def assert_error(resp, status, code, field=None):
    """The contract's error shape: {"error": {"code", "message"[, "field"]}} and nothing else."""
    assert resp.status_code == status, f"wanted {status} {code}, got {resp.status_code}: {resp.text[:2000]}"
    assert resp.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"code", "message", "field"} and {"code", "message"} <= set(err), body
    assert isinstance(err["message"], str) and err["message"], body
    assert err["code"] == code, body
    if field is not None:
        allowed = field if isinstance(field, tuple) else (field,)
        assert err.get("field") in allowed, f"field {err.get('field')!r}, wanted one of {allowed}: {body}"
    return err
