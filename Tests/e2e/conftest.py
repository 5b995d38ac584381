"""Fixtures for end-to-end tests: a real aegisd process per test module.

AEGISD (default .build/debug/aegisd) is the binary under test; `make test`
builds it first. Every server binds port 0's equivalent by asking the OS for a
free port, and is stopped (SIGTERM, then SIGKILL) at the end.
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AEGISD = os.environ.get("AEGISD", os.path.join(ROOT, ".build", "debug", "aegisd"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory, name="admin"):
    """A self-signed P-256 certificate for localhost / 127.0.0.1: (cert, key)."""
    cert, key = os.path.join(directory, name + ".crt"), os.path.join(directory, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


class Server:
    def __init__(self, backend, tls, extra=(), env=None, data_dir=None):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="aegis-e2e-")
        self.port = free_port()
        self.tls = tls
        args = [AEGISD, "--echo", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
                "--io-backend", backend, "--workers", "2"]
        if not tls:
            args.append("--plaintext")
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        self.output = []
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = re.search(r"I/O backend (\S+)", line)
            if m:
                self.backend = m.group(1)
                if tls:
                    self.fingerprint = re.search(r"fingerprint: ([0-9a-f]{64})",
                                                 self.proc.stdout.readline()).group(1)
                return
        raise RuntimeError("aegisd did not start: " + "".join(self.output))

    @property
    def url(self):
        return f"{'wss' if self.tls else 'ws'}://localhost:{self.port}/echo"

    @property
    def cert(self):
        return os.path.join(self.data_dir, "tls.crt")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


BACKENDS = ["io_uring", "epoll"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def plain_server(backend):
    s = Server(backend, tls=False)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tls_server(backend):
    s = Server(backend, tls=True)
    yield s
    s.stop()
