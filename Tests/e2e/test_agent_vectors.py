"""The independent Python agent reproduces vectors.json byte for byte, so
that the end-to-end tests that use it stand on the spec, not on our code."""
import json
import os

import nacl.bindings as sodium

from aegis_agent import Agent, Session, b64, hkdf_sha256

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "..", "shared", "protocol", "vectors.json")
COPY = os.path.join(HERE, "..", "AegisProtocolTests", "Fixtures", "vectors.json")
V = json.load(open(SHARED if os.path.exists(SHARED) else COPY))


def agent():
    return Agent("agent-7", seed=bytes.fromhex(V["keys"]["agent"]["seed_hex"]))


def test_auth_requests_and_session_keys():
    for hs in V["handshakes"]:
        inputs = hs["auth_request"]["inputs"]
        a = agent()
        text = a.auth_request(timestamp=inputs["timestamp"], nonce=bytes.fromhex(inputs["nonce_hex"]),
                              ephemeral_secret=bytes.fromhex(inputs["ephemeral_secret_hex"])
                              if inputs.get("ephemeral_secret_hex") else None,
                              ephemeral=bool(inputs.get("ephemeral_key")))
        assert text == hs["auth_request"]["json"]
        s = a.finish(hs["auth_ok"]["json"], expected_server_key=bytes.fromhex(V["keys"]["server"]["public_key_hex"]))
        assert s.k_up.hex() == hs["session_keys"]["k_up_hex"]
        assert s.k_down.hex() == hs["session_keys"]["k_down_hex"]


def test_up_messages_and_down_opens():
    sessions = {}
    for hs in V["handshakes"]:
        inputs = hs["auth_request"]["inputs"]
        a = agent()
        a.auth_request(timestamp=inputs["timestamp"], nonce=bytes.fromhex(inputs["nonce_hex"]),
                       ephemeral_secret=bytes.fromhex(inputs["ephemeral_secret_hex"])
                       if inputs.get("ephemeral_secret_hex") else None,
                       ephemeral=bool(inputs.get("ephemeral_key")))
        sessions[hs["name"]] = a.finish(hs["auth_ok"]["json"])
    for m in V["messages"]:
        s = sessions[m["session"]]
        f = m["fields"]
        if m["dir"] == "up":
            text = s.seal(f["id"], f["type"], f["channel"], bytes.fromhex(m["plaintext_hex"]), ref=f["ref"],
                          timestamp=f["timestamp"], nonce=bytes.fromhex(m["nonce_hex"]))
            assert text == m["json"], m["name"]
        else:
            got = s.open(m["json"], now=m["receiver_now"])
            assert got["plaintext"].hex() == m["plaintext_hex"], m["name"]


def test_hkdf_rfc5869_case_3():
    okm = hkdf_sha256(bytes([0x0B] * 22), b"", b"", 42)
    assert okm.hex() == ("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                         "9d201395faa4b61a96c8")
