"""Operations on a running transport: SIGHUP certificate reload without
dropping connections, TLS session resumption, graceful drain on SIGTERM,
and a slow consumer cut off with 4008. Both I/O backends."""
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import pytest
from websockets.sync.client import connect

from conftest import Server, make_cert
from wsraw import RawWS




def der_fingerprint(sock):
    return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()


def tls_connect(port, cafile, session=None, ctx=None):
    if ctx is None:
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                        server_hostname="localhost", session=session)
    return s


def test_sighup_reloads_the_certificate_without_dropping_connections(backend):
    d = tempfile.mkdtemp(prefix="aegis-certs-")
    cert, key = make_cert(d, "a")
    server = Server(backend, tls=True, extra=["--tls-cert", cert, "--tls-key", key])
    try:
        ctx = ssl.create_default_context(cafile=cert)
        with connect(server.url, ssl=ctx) as old:
            old.send("before")
            assert old.recv() == "before"
            fp_a = der_fingerprint(old.socket)
            # Replace the files in place, then SIGHUP.
            cert_b, key_b = make_cert(d, "b")
            os.replace(cert_b, cert)
            os.replace(key_b, key)
            server.proc.send_signal(signal.SIGHUP)
            line = server.proc.stdout.readline()
            assert "reloaded" in line, line
            # The live connection keeps working on its old certificate.
            old.send("after")
            assert old.recv() == "after"
            # New connections get the new one.
            s = tls_connect(server.port, cert)
            fp_b = der_fingerprint(s)
            s.close()
            assert fp_a != fp_b
            assert fp_b == hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(cert).read())).hexdigest()
    finally:
        server.stop()


def test_tls_session_resumption(tls_server):
    ctx = ssl.create_default_context(cafile=tls_server.cert)
    first = tls_connect(tls_server.port, tls_server.cert, ctx=ctx)
    # TLS 1.3 tickets arrive after the handshake: read once so they are processed.
    first.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    first.recv(4096)
    session = first.session
    first.close()
    assert session is not None
    second = tls_connect(tls_server.port, tls_server.cert, session=session, ctx=ctx)
    assert second.session_reused
    second.close()


def test_drain_closes_sessions_with_1001_and_refuses_new_upgrades(backend):
    server = Server(backend, tls=False)
    try:
        live = RawWS(server.port)
        assert live.status == 101
        server.proc.send_signal(signal.SIGTERM)
        assert live.expect_close() == 1001
        # A new upgrade during the drain is answered 503 `draining` (if the
        # process has not finished draining already).
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            resp = s.recv(4096)
            if resp:
                assert resp.startswith(b"HTTP/1.1 503") and b'"draining"' in resp
        except (ConnectionRefusedError, ConnectionResetError):
            pass
        live.close()
        assert server.proc.wait(timeout=15) == 0
    finally:
        server.stop()


def test_slow_consumer_is_closed_4008(plain_server):
    ws = RawWS(plain_server.port)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    payload = os.urandom(1 << 20)
    # Never read: the echoes pile up in the server's write queue (4 MiB cap).
    try:
        for _ in range(40):
            ws.send_frame(0x2, payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
    # Now read everything: echoes first, then the close frame 4008.
    code = None
    try:
        while code is None:
            op, _, data = ws.recv_frame()
            if op == 0x8:
                code = int.from_bytes(data[:2], "big")
    except (EOFError, ConnectionResetError):
        pass
    assert code == 4008
    ws.close()


def test_auto_falls_back_to_epoll_when_io_uring_is_unavailable():
    server = Server("auto", tls=False, env={"AEGIS_DISABLE_IO_URING": "1"})
    try:
        assert server.backend == "epoll"
        assert "using epoll" in server.proc.stdout.readline()
        with connect(server.url) as ws:
            ws.send("still echoes")
            assert ws.recv() == "still echoes"
    finally:
        server.stop()


def test_resumption_survives_a_restart(backend):
    first = Server(backend, tls=True)
    try:
        ctx = ssl.create_default_context(cafile=first.cert)
        s = tls_connect(first.port, first.cert, ctx=ctx)
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(4096)
        session = s.session
        s.close()
    finally:
        first.stop()
    # Same data directory: same certificate and ticket keys.
    second = Server(backend, tls=True, data_dir=first.data_dir)
    try:
        again = tls_connect(second.port, second.cert, session=session, ctx=ctx)
        assert again.session_reused
        again.close()
        assert oct(os.stat(os.path.join(second.data_dir, "tls-tickets.key")).st_mode & 0o777) == "0o600"
    finally:
        second.stop()
