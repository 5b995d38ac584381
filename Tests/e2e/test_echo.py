"""The transport's framing, end to end, against `aegisd --echo` on both I/O
backends, with an independent client (the `websockets` package) and a raw
RFC 6455 client for what a library will not send."""
import contextlib
import os
import socket
import ssl
import struct
import time

import pytest
from websockets.sync.client import connect

from wsraw import RawWS


def test_backend_is_the_one_asked_for(plain_server, backend):
    assert plain_server.backend == backend


def test_text_and_binary_echo(plain_server):
    with connect(plain_server.url) as ws:
        ws.send("hello ✓")
        assert ws.recv() == "hello ✓"
        ws.send(b"\x00\xff binary")
        assert ws.recv() == b"\x00\xff binary"


def test_fragmented_message_is_reassembled(plain_server):
    with connect(plain_server.url) as ws:
        ws.send(["frag", "men", "ted ✓"])
        assert ws.recv() == "fragmented ✓"


def test_control_frames_inside_a_fragmented_message(plain_server):
    ws = RawWS(plain_server.port)
    assert ws.status == 101
    ws.send_frame(0x1, b"Hel", fin=False)
    ws.send_frame(0x9, b"ping-1")
    ws.send_frame(0x0, b"lo, ", fin=False)
    ws.send_frame(0x9, b"ping-2")
    ws.send_frame(0x0, b"world", fin=True)
    got = [ws.recv_frame() for _ in range(3)]
    assert (0xA, True, b"ping-1") in got and (0xA, True, b"ping-2") in got
    assert (0x1, True, b"Hello, world") in got
    ws.close()


def test_large_message_exactly_at_the_limit(plain_server):
    payload = os.urandom(1 << 20)
    with connect(plain_server.url, max_size=2 << 20) as ws:
        ws.send(payload)
        assert ws.recv() == payload


@pytest.mark.parametrize("frames,code", [
    ([(0x1, b"\xc3\x28", True)], 1007),                      # invalid UTF-8
    ([(0x1, b"ok \xe2\x82", False), (0x0, b"\x28", True)], 1007),  # split across fragments
    ([(0x3, b"x", True)], 1002),                             # reserved opcode
    ([(0xB, b"", True)], 1002),                              # reserved control opcode
    ([(0x0, b"orphan", True)], 1002),                        # continuation with nothing open
    ([(0x1, b"a", False), (0x1, b"b", True)], 1002),         # new message inside a fragmented one
    ([(0x9, b"x" * 126, True)], 1002),                       # control frame over 125 bytes
    ([(0x9, b"x", False)], 1002),                            # fragmented control frame
])
def test_protocol_violations_close_with_their_code(plain_server, frames, code):
    ws = RawWS(plain_server.port)
    for op, payload, fin in frames:
        ws.send_frame(op, payload, fin=fin)
    assert ws.expect_close() == code
    ws.close()


def test_reserved_bits_close_1002(plain_server):
    ws = RawWS(plain_server.port)
    ws.send_frame(0x1, b"x", rsv=4)
    assert ws.expect_close() == 1002


def test_unmasked_client_frame_closes_1002(plain_server):
    ws = RawWS(plain_server.port)
    ws.send_frame(0x1, b"x", mask=False)
    assert ws.expect_close() == 1002


def test_oversize_message_closes_1009(plain_server):
    ws = RawWS(plain_server.port)
    try:
        ws.send_frame(0x2, b"\x00" * ((1 << 20) + 1))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may refuse before the payload is all sent
    assert ws.expect_close() == 1009


def test_close_handshake_echoes_the_code(plain_server):
    ws = RawWS(plain_server.port)
    ws.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
    assert ws.expect_close() == 1000
    assert ws.sock.recv(1) == b""  # and the server closes TCP
    ws.close()


@pytest.mark.parametrize("payload,code", [
    (struct.pack("!H", 999), 1002),
    (struct.pack("!H", 1005), 1002),
    (struct.pack("!H", 2999), 1002),
    (b"\x03", 1002),
    (struct.pack("!H", 1000) + b"\xff", 1007),
])
def test_invalid_close_frames(plain_server, payload, code):
    ws = RawWS(plain_server.port)
    ws.send_frame(0x8, payload)
    assert ws.expect_close() == code


def test_bad_upgrade_is_refused(plain_server):
    s = socket.create_connection(("127.0.0.1", plain_server.port), timeout=10)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    resp = s.recv(4096)
    assert resp.startswith(b"HTTP/1.1 426")
    assert b"Sec-WebSocket-Version: 13" in resp
    assert b'"unsupported_websocket_version"' in resp


def test_slowloris_head_is_cut_at_5_seconds(plain_server):
    s = socket.create_connection(("127.0.0.1", plain_server.port), timeout=15)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
    start = time.time()
    while True:
        try:
            if s.recv(4096) == b"":
                break
        except ConnectionResetError:
            break
    took = time.time() - start
    assert 4.0 <= took <= 7.5, took


def test_many_connections_interleaved(plain_server):
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(connect(plain_server.url)) for _ in range(50)]
        for i, ws in enumerate(conns):
            ws.send(f"m{i}")
        for i, ws in enumerate(conns):
            assert ws.recv() == f"m{i}"


def test_tls_with_the_generated_certificate(tls_server):
    ctx = ssl.create_default_context(cafile=tls_server.cert)
    with connect(tls_server.url, ssl=ctx, max_size=2 << 20) as ws:
        ws.send("over tls")
        assert ws.recv() == "over tls"
        big = os.urandom(300_000)
        ws.send(big)
        assert ws.recv() == big
        assert ws.socket.version() in ("TLSv1.3", "TLSv1.2")


def test_tls_protocol_violation_still_closes_with_code(tls_server):
    ws = RawWS(tls_server.port, tls=True, cafile=tls_server.cert)
    ws.send_frame(0x1, b"\xff")
    assert ws.expect_close() == 1007


def test_tls_rejects_plaintext_http(tls_server):
    s = socket.create_connection(("127.0.0.1", tls_server.port), timeout=10)
    s.sendall(b"GET /echo HTTP/1.1\r\n\r\n")
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    assert not data.startswith(b"HTTP/1.1 101")
