"""An independent Aegis agent, written from PROTOCOL.md alone (PyNaCl for
libsodium's primitives, the standard library for the rest). The gateway's
end-to-end tests use it so that the spec, not our own C core, is what both
sides agree on; test_agent_vectors.py proves it against vectors.json first.
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import time
import uuid

import nacl.bindings as sodium


def b64(b):
    return base64.b64encode(b).decode()


def unb64(s):
    raw = base64.b64decode(s, validate=True)
    if b64(raw) != s:
        raise ValueError("non-canonical b64")
    return raw


def unb64u(s):
    raw = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != s:
        raise ValueError("non-canonical b64u")
    return raw


def enc(*fields):
    """§1: u32be(len) ‖ bytes per field; ints as 8 bytes; None as empty."""
    out = b""
    for f in fields:
        if f is None:
            f = b""
        elif isinstance(f, int):
            f = struct.pack("!Q", f)
        elif isinstance(f, str):
            f = f.encode()
        out += struct.pack("!I", len(f)) + f
    return out


def hkdf_sha256(ikm, salt, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Agent:
    def __init__(self, agent_id, seed=None):
        self.agent_id = agent_id
        self.seed = seed or os.urandom(32)
        self.pk, self.sk = sodium.crypto_sign_seed_keypair(self.seed)

    def upgrade_headers(self):
        return {"X-Agent-ID": self.agent_id, "X-Agent-Public-Key": b64(self.pk),
                "User-Agent": "Aegis-Agent/1.0 (pytest)"}

    # §3.1
    def auth_request(self, timestamp=None, nonce=None, ephemeral_secret=None, ephemeral=True):
        self.timestamp = int(time.time()) if timestamp is None else timestamp
        self.nonce = nonce or os.urandom(32)
        self.eph_secret = None
        eph_pub = None
        if ephemeral:
            self.eph_secret = ephemeral_secret or os.urandom(32)
            eph_pub = sodium.crypto_scalarmult_base(self.eph_secret)
        self.auth_input = enc("aegis-v1/auth", self.agent_id, self.pk, self.timestamp, self.nonce, eph_pub)
        self.agent_sig = sodium.crypto_sign(self.auth_input, self.sk)[:64]
        obj = {"agent_id": self.agent_id, "public_key": b64(self.pk), "timestamp": self.timestamp,
               "nonce": b64(self.nonce)}
        if eph_pub is not None:
            obj["ephemeral_key"] = b64(eph_pub)
        obj["signature"] = b64(self.agent_sig)
        return compact(obj)

    # §3.2, §3.3
    def finish(self, text, expected_server_key=None):
        msg = json.loads(text)
        if msg.get("type") == "auth_error":
            raise AuthRefused(msg.get("code"), msg.get("message"))
        if msg.get("type") != "auth_ok":
            raise ValueError("not auth_ok")
        session_id = msg["session_id"]
        token = unb64u(msg["session_token"])
        backend = unb64(msg["backend_key"])
        server_key = unb64(msg["server_key"])
        ts, exp, hb = msg["timestamp"], msg["expires_at"], msg["heartbeat_interval"]
        if exp <= ts:
            raise ValueError("expires_at <= timestamp")
        th = hashlib.sha256(enc("aegis-v1/transcript", self.auth_input, self.agent_sig)).digest()
        ok_input = enc("aegis-v1/auth-ok", th, session_id, token, backend, server_key, ts, exp, hb)
        sodium.crypto_sign_open(unb64(msg["signature"]) + ok_input, server_key)  # raises if bad
        if expected_server_key is not None and expected_server_key != server_key:
            raise ValueError("server key differs from the pinned one")
        a_x = sodium.crypto_sign_ed25519_sk_to_curve25519(self.sk)
        dh1 = sodium.crypto_scalarmult(a_x, backend)
        dh2 = sodium.crypto_scalarmult(self.eph_secret, backend) if self.eph_secret else b""
        if dh1 == bytes(32) or (self.eph_secret and dh2 == bytes(32)):
            raise ValueError("all-zero DH")
        th2 = hashlib.sha256(enc("aegis-v1/keys", th, session_id, token, backend)).digest()
        okm = hkdf_sha256(dh1 + dh2, th2, b"aegis-v1/session-keys", 64)
        return Session(session_id, okm[:32], okm[32:], self.sk, server_key, hb, exp)


class AuthRefused(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class Session:
    """§4 for the agent: seal up with k_up, open down with k_down."""

    def __init__(self, session_id, k_up, k_down, sk, server_key, heartbeat_interval, expires_at):
        self.session_id, self.k_up, self.k_down = session_id, k_up, k_down
        self.sk, self.server_key = sk, server_key
        self.heartbeat_interval, self.expires_at = heartbeat_interval, expires_at

    @staticmethod
    def _aad(session_id, direction, mid, mtype, channel, ref, timestamp):
        return enc("aegis-v1/msg", session_id, direction, mid, mtype, channel, ref, timestamp)

    def seal(self, mid, mtype, channel, plaintext, ref=None, timestamp=None, nonce=None):
        timestamp = int(time.time()) if timestamp is None else timestamp
        nonce = nonce or os.urandom(12)
        aad = self._aad(self.session_id, "up", mid, mtype, channel, ref, timestamp)
        ct = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, aad, nonce, self.k_up)
        sig = sodium.crypto_sign(enc("aegis-v1/sig", aad, nonce, ct), self.sk)[:64]
        obj = {"id": mid, "type": mtype, "channel": channel}
        if ref is not None:
            obj["ref"] = ref
        obj.update({"payload": b64(ct), "timestamp": timestamp, "nonce": b64(nonce), "signature": b64(sig)})
        return compact(obj)

    def open(self, text, now=None, skew=60):
        m = json.loads(text)
        now = int(time.time()) if now is None else now
        if abs(now - m["timestamp"]) > skew:
            raise ValueError("clock_skew")
        ct, nonce, sig = unb64(m["payload"]), unb64(m["nonce"]), unb64(m["signature"])
        aad = self._aad(self.session_id, "down", m["id"], m["type"], m["channel"], m.get("ref"), m["timestamp"])
        pt = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(ct, aad, nonce, self.k_down)
        sodium.crypto_sign_open(sig + enc("aegis-v1/sig", aad, nonce, ct), self.server_key)
        m["plaintext"] = pt
        return m

    def ack(self, ids, mid=None):
        mid = mid or str(uuid.uuid4())
        return self.seal(mid, "ack", "aegis.ack", compact({"ids": ids}).encode(), ref=ids[0])

    def heartbeat(self, mid=None):
        return self.seal(mid or str(uuid.uuid4()), "heartbeat", "aegis.heartbeat", b"")
