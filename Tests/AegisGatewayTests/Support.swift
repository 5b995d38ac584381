import AegisGateway
import AegisProtocol
import Testing

/// The fixed "now" of the tests, in Unix seconds (as in the protocol tests).
let base: UInt64 = 1_764_211_200

/// `base + seconds + milliseconds`, as a `UnixTime`.
func at(_ seconds: UInt64 = 0, ms: UInt64 = 0) -> UnixTime {
    UnixTime(millisecondsSinceEpoch: (base + seconds) * 1000 + ms)
}

/// An agent with a real key and real auth requests, checked by the core as
/// the transport does (steps 1–2), so the machine sees what it would see.
struct TestAgent {
    let id: String
    let identity: Identity

    init(id: String = "agent-7") throws {
        self.id = id
        self.identity = try Identity.generate()
    }

    var publicKey: [UInt8] { identity.publicKey }

    /// A fresh auth request (new nonce each time), as the core parsed it.
    func authRequest(timestamp: UInt64 = base) throws -> AuthRequest {
        let hs = try AgentHandshake(identity: identity, agentID: id, timestamp: timestamp)
        return try GatewayHandshake.check(
            hs.authRequest, context: AuthContext(headerAgentID: id, headerPublicKey: publicKey, now: timestamp))
    }

    /// A request whose signature is another request's: well formed, but it
    /// does not verify.
    func forgedAuthRequest(timestamp: UInt64 = base) throws -> AuthRequest {
        let a = try AgentHandshake(identity: identity, agentID: id, timestamp: timestamp)
        let b = try AgentHandshake(identity: identity, agentID: id, timestamp: timestamp)
        let forged = replacingField("signature", in: String(decoding: a.authRequest, as: UTF8.self),
                                    with: String(decoding: b.authRequest, as: UTF8.self))
        return try GatewayHandshake.check(
            Array(forged.utf8), context: AuthContext(headerAgentID: id, headerPublicKey: publicKey, now: timestamp))
    }
}

/// `"name":"value"` of `source` put in place of the one in `target`.
private func replacingField(_ name: String, in target: String, with source: String) -> String {
    func range(in text: String) -> Range<String.Index>? {
        let marker = "\"\(name)\":\""
        var i = text.startIndex
        while i < text.endIndex {
            if text[i...].hasPrefix(marker) {
                let start = text.index(i, offsetBy: marker.count)
                guard let end = text[start...].firstIndex(of: "\"") else { return nil }
                return start..<end
            }
            i = text.index(after: i)
        }
        return nil
    }
    guard let t = range(in: target), let s = range(in: source) else { return target }
    var out = target
    out.replaceSubrange(t, with: source[s])
    return out
}

/// Both ends of a real session, for messages that went through the core's
/// checks (`SecureMessage` has no public initializer, on purpose).
final class SessionLink {
    let agentSession: SessionKeys
    let gatewaySession: SessionKeys

    init() throws {
        let server = try Identity.generate()
        let agent = try Identity.generate()
        let hs = try AgentHandshake(identity: agent, agentID: "agent-7", timestamp: base)
        let req = try GatewayHandshake.check(
            hs.authRequest, context: AuthContext(headerAgentID: "agent-7", headerPublicKey: agent.publicKey, now: base))
        let accepted = try GatewayHandshake.accept(
            server: server, request: req,
            parameters: AuthOKParameters(sessionID: "6f1c2f0e-2b7a-4c39-9d0e-0c8f2a1b3c4d", timestamp: base,
                                         expiresAt: base + 86_400, heartbeatInterval: 30))
        let (_, session) = try hs.finish(accepted.authOK, expectedServerKey: server.publicKey)
        agentSession = session
        gatewaySession = accepted.session
    }

    /// Seals as the agent, opens as the gateway: the result carries
    /// `isDuplicate` as the gateway's session window decides it.
    func up(_ id: String, _ type: MessageType, channel: String? = nil, ref: String? = nil,
            plaintext: [UInt8] = [], timestamp: UInt64 = base) throws -> SecureMessage {
        let ch = channel ?? (type == .heartbeat ? "aegis.heartbeat" : type == .ack ? "aegis.ack" : "jobs/run")
        let json = try agentSession.seal(MessageHeader(id: id, type: type, channel: ch, ref: ref, timestamp: timestamp),
                                         plaintext: plaintext)
        return try gatewaySession.open(json, now: timestamp)
    }

    func ack(_ id: String, ids: [String]) throws -> SecureMessage {
        try up(id, .ack, ref: ids.first, plaintext: try AckPlaintext.build(ids: ids))
    }
}
