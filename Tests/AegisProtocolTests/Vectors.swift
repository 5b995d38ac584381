import AegisProtocol
import Foundation

/// Loads ../shared/protocol/vectors.json when the repository sits beside
/// shared/ (developers, CI), else the committed copy in Fixtures/; the
/// Makefile warns when the two differ.
enum Vectors {
    nonisolated(unsafe) static let root: [String: Any] = {  // read-only after load
        let here = URL(fileURLWithPath: #filePath)
        let shared = here.deletingLastPathComponent().appendingPathComponent("../../../shared/protocol/vectors.json")
        let url = FileManager.default.fileExists(atPath: shared.path)
            ? shared
            : Bundle.module.url(forResource: "Fixtures/vectors", withExtension: "json")!
        let data = try! Data(contentsOf: url)
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func dict(_ path: String...) -> [String: Any] {
        var cur: Any = root
        for k in path { cur = (cur as! [String: Any])[k]! }
        return cur as! [String: Any]
    }

    static func list(_ path: String...) -> [[String: Any]] {
        var cur: Any = root
        for k in path { cur = (cur as! [String: Any])[k]! }
        return cur as! [[String: Any]]
    }

    static func key(_ name: String) -> [String: Any] { dict("keys", name) }
}

func hex(_ s: String) -> [UInt8] {
    var out = [UInt8]()
    var it = s.utf8.makeIterator()
    while let a = it.next(), let b = it.next() {
        out.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16)!)
    }
    return out
}

func hexString(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

extension Dictionary where Key == String, Value == Any {
    func s(_ k: String) -> String { self[k] as! String }
    func u(_ k: String) -> UInt64 { (self[k] as! NSNumber).uint64Value }
    func d(_ k: String) -> [String: Any] { self[k] as! [String: Any] }
    func optS(_ k: String) -> String? { self[k] as? String }
}

/// The two sessions of the vectors, both ends of each, made by running the
/// deterministic handshakes.
struct VectorSessions {
    let agent: AegisProtocol.Identity
    let server: AegisProtocol.Identity
    let gateway: [String: SessionKeys]
    let agentSide: [String: SessionKeys]

    static func make() throws -> VectorSessions {
        let agent = try Identity.fromSeed(hex(Vectors.key("agent").s("seed_hex")))
        let server = try Identity.fromSeed(hex(Vectors.key("server").s("seed_hex")))
        var g: [String: SessionKeys] = [:], a: [String: SessionKeys] = [:]
        for hs in Vectors.list("handshakes") {
            let name = hs.s("name")
            let r = hs.d("auth_request"), inputs = r.d("inputs")
            let okIn = hs.d("auth_ok").d("inputs")
            let agentHS = try AgentHandshake(
                identity: agent, agentID: inputs.s("agent_id"), timestamp: inputs.u("timestamp"),
                ephemeral: inputs["ephemeral_key"] is String,
                testNonce: hex(inputs.s("nonce_hex")),
                testEphemeralSecret: (inputs["ephemeral_secret_hex"] as? String).map(hex))
            let req = try GatewayHandshake.check(
                agentHS.authRequest,
                context: AuthContext(headerAgentID: inputs.s("agent_id"), headerPublicKey: agent.publicKey,
                                     now: r.u("gateway_now")))
            try GatewayHandshake.verifySignature(req)
            let acc = try GatewayHandshake.accept(
                server: server, request: req,
                parameters: AuthOKParameters(
                    sessionID: okIn.s("session_id"), timestamp: okIn.u("timestamp"),
                    expiresAt: okIn.u("expires_at"), heartbeatInterval: okIn.u("heartbeat_interval"),
                    testBackendSecret: hex(okIn.s("backend_secret_hex")),
                    testSessionToken: hex(okIn.s("session_token_hex"))))
            let (_, session) = try agentHS.finish(acc.authOK, expectedServerKey: server.publicKey)
            g[name] = acc.session
            a[name] = session
        }
        return VectorSessions(agent: agent, server: server, gateway: g, agentSide: a)
    }

    /// The receiver of `dir` messages: the gateway receives up, the agent down.
    func receiver(session: String, dir: String) -> SessionKeys {
        dir == "up" ? gateway[session]! : agentSide[session]!
    }

    func sender(session: String, dir: String) -> SessionKeys {
        dir == "up" ? agentSide[session]! : gateway[session]!
    }
}
