import AegisCore

/// The first message of a session (§3.1), as the gateway parsed it.
public struct AuthRequest: Sendable, Equatable {
    public var agentID: String
    public var publicKey: [UInt8]
    public var timestamp: UInt64
    public var nonce: [UInt8]
    public var ephemeralKey: [UInt8]?
    public var signature: [UInt8]

    /// The raw C form, kept for the signature check and key derivation.
    let raw: RawAuthRequest

    public static func == (a: AuthRequest, b: AuthRequest) -> Bool {
        a.agentID == b.agentID && a.publicKey == b.publicKey && a.timestamp == b.timestamp
            && a.nonce == b.nonce && a.ephemeralKey == b.ephemeralKey && a.signature == b.signature
    }
}

/// A copy of `aegis_auth_request` that Swift can pass around: it contains
/// only public values (the agent's key, nonce and signature).
struct RawAuthRequest: @unchecked Sendable {
    var value: aegis_auth_request
}

/// What the gateway knows when it checks an auth request.
public struct AuthContext: Sendable {
    public var headerAgentID: String
    public var headerPublicKey: [UInt8]
    public var now: UInt64
    public var skew: UInt64
    public var requireEphemeral: Bool

    public init(headerAgentID: String, headerPublicKey: [UInt8], now: UInt64, skew: UInt64 = 60,
                requireEphemeral: Bool = false) {
        self.headerAgentID = headerAgentID
        self.headerPublicKey = headerPublicKey
        self.now = now
        self.skew = skew
        self.requireEphemeral = requireEphemeral
    }
}

/// What the gateway puts in `auth_ok` besides the keys.
public struct AuthOKParameters: Sendable {
    public var sessionID: String
    public var timestamp: UInt64
    public var expiresAt: UInt64
    public var heartbeatInterval: UInt64
    /// Fixed secrets that reproduce the vectors; nil in production.
    public var testBackendSecret: [UInt8]?
    public var testSessionToken: [UInt8]?

    public init(sessionID: String, timestamp: UInt64, expiresAt: UInt64, heartbeatInterval: UInt64,
                testBackendSecret: [UInt8]? = nil, testSessionToken: [UInt8]? = nil) {
        self.sessionID = sessionID
        self.timestamp = timestamp
        self.expiresAt = expiresAt
        self.heartbeatInterval = heartbeatInterval
        self.testBackendSecret = testBackendSecret
        self.testSessionToken = testSessionToken
    }
}

/// The gateway's side of the handshake, in the order of §3.1: `check`
/// (steps 1–2), then the caller's replay and enrollment checks against its
/// store (steps 3–4), then `verifySignature` (step 5), then `accept`.
public enum GatewayHandshake {
    public static func check(_ json: [UInt8], context: AuthContext) throws(AegisError) -> AuthRequest {
        try CoreLibrary.ensure()
        guard context.headerPublicKey.count == Int(AEGIS_PUBLIC_KEY_BYTES) else { throw .headerMismatch }
        var req = aegis_auth_request()
        let headerID = Array(context.headerAgentID.utf8)
        let status = json.withUnsafeBufferPointer { j in
            j.withMemoryRebound(to: CChar.self) { jc in
                headerID.withUnsafeBufferPointer { h in
                    h.withMemoryRebound(to: CChar.self) { hc in
                        context.headerPublicKey.withUnsafeBufferPointer { pk in
                            var ctx = aegis_auth_context(
                                header_agent_id: hc.baseAddress, header_agent_id_len: hc.count,
                                header_public_key: pk.baseAddress, now: context.now, skew: context.skew,
                                require_ephemeral: context.requireEphemeral)
                            return aegis_auth_request_check(jc.baseAddress, jc.count, &ctx, &req)
                        }
                    }
                }
            }
        }
        try ensureOK(status)
        return AuthRequest(req)
    }

    /// Step 5: the Ed25519 signature over auth_input.
    public static func verifySignature(_ request: AuthRequest) throws(AegisError) {
        var raw = request.raw.value
        try ensureOK(aegis_auth_request_verify(&raw))
    }

    public struct Accepted: Sendable {
        public let session: SessionKeys
        /// The signed auth_ok text to send.
        public let authOK: [UInt8]
        /// SHA256(session_token): all the gateway keeps of the token.
        public let sessionTokenHash: [UInt8]
    }

    /// Derives the session keys (§3.3) and signs auth_ok (§3.2).
    public static func accept(server: Identity, request: AuthRequest,
                              parameters p: AuthOKParameters) throws(AegisError) -> Accepted {
        var raw = request.raw.value
        var session: OpaquePointer?
        var hash = [UInt8](repeating: 0, count: Int(AEGIS_SHA256_BYTES))
        let cap = aegis_auth_ok_json_max()
        var status = AEGIS_OK
        let json = [UInt8](unsafeUninitializedCapacity: cap) { buf, count in
            var n = 0
            status = p.sessionID.withCString { sid in
                withOptionalPointer(p.testBackendSecret) { b in
                    withOptionalPointer(p.testSessionToken) { t in
                        var params = aegis_auth_ok_params(
                            session_id: sid, timestamp: p.timestamp, expires_at: p.expiresAt,
                            heartbeat_interval: p.heartbeatInterval, test_backend_secret: b,
                            test_session_token: t)
                        return buf.withMemoryRebound(to: CChar.self) { jb in
                            aegis_gateway_accept(server.handle, &raw, &params, &session, &hash,
                                                 jb.baseAddress, cap, &n)
                        }
                    }
                }
            }
            count = status == AEGIS_OK ? n : 0
        }
        try ensureOK(status)
        guard let session else { throw .outOfMemory }
        return Accepted(session: SessionKeys(handle: session), authOK: json, sessionTokenHash: hash)
    }

    /// `{"type":"auth_error","code":…,"message":…}` for a refusal.
    public static func authError(code: String, message: String) -> [UInt8] {
        let msg = Array(message.utf8)
        let cap = aegis_auth_error_json_max(msg.count)
        return [UInt8](unsafeUninitializedCapacity: cap) { buf, count in
            var n = 0
            let st = msg.withUnsafeBufferPointer { m in
                m.withMemoryRebound(to: CChar.self) { mc in
                    buf.withMemoryRebound(to: CChar.self) { b in
                        aegis_auth_error_json(code, mc.baseAddress, mc.count, b.baseAddress, cap, &n)
                    }
                }
            }
            count = st == AEGIS_OK ? n : 0
        }
    }
}

extension AuthRequest {
    /// A request the transport already checked (steps 1–2).
    package init(checked r: aegis_auth_request) { self.init(r) }

    init(_ r: aegis_auth_request) {
        func bytes<T>(_ tuple: T, _ len: Int) -> [UInt8] {
            withUnsafeBytes(of: tuple) { Array($0.prefix(len)) }
        }
        self.init(
            agentID: withUnsafeBytes(of: r.agent_id) { String(decoding: $0.prefix(r.agent_id_len), as: UTF8.self) },
            publicKey: bytes(r.public_key, 32), timestamp: r.timestamp,
            nonce: bytes(r.nonce, r.nonce_len),
            ephemeralKey: r.has_ephemeral_key ? bytes(r.ephemeral_key, 32) : nil,
            signature: bytes(r.signature, 64), raw: RawAuthRequest(value: r))
    }
}

/// The agent's view of a successful auth_ok.
public struct AuthOK: Sendable, Equatable {
    public var sessionID: String
    public var serverKey: [UInt8]
    public var backendKey: [UInt8]
    public var timestamp: UInt64
    public var expiresAt: UInt64
    public var heartbeatInterval: UInt64
}

/// The agent's side of the handshake: `begin` writes the auth request,
/// `finish` checks the gateway's answer and derives the session.
public final class AgentHandshake: @unchecked Sendable {
    // Owned by one task: the handshake object is used once, then dropped.
    private let handle: OpaquePointer
    /// The auth request JSON to send as the first message.
    public let authRequest: [UInt8]

    public init(identity: Identity, agentID: String, timestamp: UInt64, ephemeral: Bool = true,
                testNonce: [UInt8]? = nil, testEphemeralSecret: [UInt8]? = nil) throws(AegisError) {
        try CoreLibrary.ensure()
        var hs: OpaquePointer?
        let id = Array(agentID.utf8)
        let cap = aegis_auth_request_json_max()
        var status = AEGIS_OK
        let json = [UInt8](unsafeUninitializedCapacity: cap) { buf, count in
            var n = 0
            status = id.withUnsafeBufferPointer { idp in
                idp.withMemoryRebound(to: CChar.self) { idc in
                    withOptionalPointer(testNonce) { nonce in
                        withOptionalPointer(testEphemeralSecret) { eph in
                            var p = aegis_auth_request_params(
                                agent_id: idc.baseAddress, agent_id_len: idc.count, timestamp: timestamp,
                                with_ephemeral_key: ephemeral, test_nonce: nonce,
                                test_nonce_len: testNonce?.count ?? 0, test_ephemeral_secret: eph)
                            return buf.withMemoryRebound(to: CChar.self) { b in
                                aegis_agent_handshake_begin(identity.handle, &p, &hs, b.baseAddress, cap, &n)
                            }
                        }
                    }
                }
            }
            count = status == AEGIS_OK ? n : 0
        }
        try ensureOK(status)
        guard let hs else { throw .outOfMemory }
        self.handle = hs
        self.authRequest = json
    }

    deinit { aegis_agent_handshake_free(handle) }

    /// The gateway's refusal, when `finish` throws `.authRefused`.
    public private(set) var refusal: (code: String, message: String)?

    /// Checks auth_ok (§3.2) and derives the session (§3.3). Pass the
    /// configured server key, or nil to accept any and pin `AuthOK.serverKey`.
    public func finish(_ json: [UInt8], expectedServerKey: [UInt8]?) throws(AegisError) -> (AuthOK, SessionKeys) {
        var ok = aegis_auth_ok()
        var err = aegis_auth_error()
        var session: OpaquePointer?
        let status = json.withUnsafeBufferPointer { j in
            j.withMemoryRebound(to: CChar.self) { jc in
                withOptionalPointer(expectedServerKey) { key in
                    aegis_agent_handshake_finish(handle, jc.baseAddress, jc.count, key, &ok, &err, &session)
                }
            }
        }
        if status == AEGIS_E_AUTH_REFUSED {
            refusal = (cString(err.code), cString(err.message))
        }
        try ensureOK(status)
        guard let session else { throw .outOfMemory }
        func bytes<T>(_ t: T) -> [UInt8] { withUnsafeBytes(of: t) { Array($0) } }
        let result = AuthOK(
            sessionID: withUnsafeBytes(of: ok.session_id) { String(decoding: $0.prefix(36), as: UTF8.self) },
            serverKey: bytes(ok.server_key), backendKey: bytes(ok.backend_key), timestamp: ok.timestamp,
            expiresAt: ok.expires_at, heartbeatInterval: ok.heartbeat_interval)
        return (result, SessionKeys(handle: session))
    }
}

// MARK: - small C helpers

func withOptionalPointer<R>(_ bytes: [UInt8]?, _ body: (UnsafePointer<UInt8>?) -> R) -> R {
    guard let bytes else { return body(nil) }
    return bytes.withUnsafeBufferPointer { body($0.baseAddress) }
}

func cString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        let end = raw.firstIndex(of: 0) ?? raw.count
        return String(decoding: raw.prefix(end), as: UTF8.self)
    }
}
