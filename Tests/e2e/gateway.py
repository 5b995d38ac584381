"""A real gateway for end-to-end tests: aegisd with its private PostgreSQL
cluster in a temporary data directory (or another gateway's database), and
psql to look at what it stored."""
import hashlib
import os
import re
import signal
import subprocess
import tempfile
import time

from websockets.sync.client import connect

from aegis_agent import Agent, AuthRefused
from conftest import AEGISD, free_port


class Gateway:
    def __init__(self, enrollment="open", database_url=None, data_dir=None, backend="auto", extra=(), env=None,
                 admin=True):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="aegis-gw-")
        self.port = free_port()
        # The admin API listens on a port of its own (never the default 8081,
        # which parallel or consecutive gateways would share); admin=False: off.
        self.admin_port = free_port() if admin else None
        self.admin_url = f"http://127.0.0.1:{self.admin_port}" if admin else None
        self._admin_token = None
        args = [AEGISD, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir, "--plaintext",
                "--enrollment", enrollment, "--io-backend", backend, "--workers", "2",
                "--admin-listen", f"127.0.0.1:{self.admin_port}" if admin else "off"] + list(extra)
        if database_url:
            args += ["--database-url", database_url]
        # The log goes to a file, not a pipe: nobody reads a pipe after the
        # start, and a full pipe would block the gateway's logging.
        self.log_path = os.path.join(tempfile.mkdtemp(prefix="aegis-log-"), "aegisd.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.output = []
        deadline = time.time() + 90
        while time.time() < deadline and self.proc.poll() is None:
            self.output = open(self.log_path).readlines()
            for line in self.output:
                m = re.search(r"server key: (\S+=) ", line)
                if m:
                    import base64
                    self.server_key = base64.b64decode(m.group(1))
                m = re.search(r"admin API: listening on (https?://\S+)", line)
                if m:
                    self.admin_url = m.group(1).rstrip("/")
            started = any("I/O backend" in line for line in self.output)
            admin_up = not admin or any("admin API: listening" in line for line in self.output)
            if started and admin_up:
                return
            time.sleep(0.05)
        self.output = open(self.log_path).readlines()
        raise RuntimeError("aegisd did not start: " + "".join(self.output))

    @property
    def admin_token_path(self):
        for line in open(self.log_path).readlines():
            m = re.search(r"admin API: bootstrap token written to (\S+)", line)
            if m:
                return m.group(1)
        return os.path.join(self.data_dir, "admin.token")

    @property
    def admin_token(self):
        """The bootstrap admin token (the file `<data dir>/admin.token`), or
        None when this gateway wrote none (e.g. on another gateway's database)."""
        if self._admin_token is None and self.admin_port:
            deadline = time.time() + 1  # the file may come just after the listening line
            while True:
                path = self.admin_token_path
                if os.path.exists(path) and open(path).read().endswith("\n"):
                    self._admin_token = open(path).read().strip()
                    break
                if time.time() > deadline:
                    break
                time.sleep(0.05)
        return self._admin_token

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws/agent"

    @property
    def database_url(self):
        from urllib.parse import quote
        return f"postgresql://aegis@/aegis?host={quote(os.path.join(self.data_dir, 'pg'), safe='')}"

    @property
    def conninfo(self):
        return f"host={os.path.join(self.data_dir, 'pg')} user=aegis dbname=aegis"

    def sql(self, query):
        out = subprocess.run(["psql", self.conninfo, "-At", "-c", query], capture_output=True, text=True, check=True)
        return [line.split("|") for line in out.stdout.strip().splitlines() if line]

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop_database(self):
        pgdir = os.path.join(self.data_dir, "pg")
        subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "stop",
                        "-D", os.path.realpath(pgdir), "-m", "fast", "-w"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Link:
    """One agent connection: handshake, then sealed traffic."""

    def __init__(self, gw, agent, extra_headers=None, auth_text=None):
        headers = dict(agent.upgrade_headers())
        headers.update(extra_headers or {})
        self.ws = connect(gw.url, additional_headers=headers, open_timeout=10).__enter__()
        self.agent = agent
        self.ws.send(auth_text or agent.auth_request())
        self.session = agent.finish(self.ws.recv(timeout=10), expected_server_key=gw.server_key)

    def send(self, mid, mtype="event", channel="telemetry", payload=b"{}", ref=None):
        self.ws.send(self.session.seal(mid, mtype, channel, payload, ref=ref))

    def recv(self, timeout=10):
        return self.session.open(self.ws.recv(timeout=timeout))

    def acked_ids(self, want, timeout=10):
        """Reads acks until every id in `want` was acked; returns the acks' id lists."""
        seen, acks = set(), []
        deadline = time.time() + timeout
        while not set(want) <= seen:
            m = self.recv(timeout=max(0.1, deadline - time.time()))
            if m["type"] == "ack":
                import json
                ids = json.loads(m["plaintext"])["ids"]
                acks.append(ids)
                seen.update(ids)
        return acks

    def close(self):
        self.ws.close()


def refused(gw, agent, extra_headers=None, auth_text=None):
    """The auth_error code and close code of a refused handshake."""
    headers = dict(agent.upgrade_headers())
    headers.update(extra_headers or {})
    with connect(gw.url, additional_headers=headers, open_timeout=10) as ws:
        text = auth_text or agent.auth_request()
        try:
            ws.send(text)
        except Exception:
            pass  # refused before the auth request (a rate limit): the answer is already there
        try:
            agent.finish(ws.recv(timeout=10))
        except AuthRefused as e:
            code = e.code
        else:
            return None, None
        try:
            ws.recv(timeout=10)
        except Exception:
            pass
        return code, ws.close_code


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def restart_database(gw):
    """pg_ctl restart: the same options as the running server (postmaster.opts)."""
    pgdir = os.path.realpath(os.path.join(gw.data_dir, "pg"))
    subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "restart",
                    "-D", pgdir, "-m", "fast", "-w", "-t", "60"],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)  # no pipes: the restarted server would hold them open


def insert_down(gw, agent_id, msg_id, payload=b"{}", expires="now() + interval '1 hour'"):
    gw.sql(f"insert into message_queue (id, agent_id, direction, msg_id, message_type, channel, payload, status, "
           f"retry_count, created_at, next_attempt_at, expires_at) values (gen_random_uuid(), '{agent_id}', 'down', "
           f"'{msg_id}', 'event', 'config/changed', '\\x{payload.hex()}', 'queued', 0, now(), now(), {expires})")


def wait_status(gw, agent_id, msg_id, want, timeout=15):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = gw.sql(f"select status from message_queue where agent_id = '{agent_id}' and msg_id = '{msg_id}'")
        if got == [[want]]:
            return True
        time.sleep(0.1)
    raise AssertionError(f"{msg_id}: {got}, wanted {want}")
