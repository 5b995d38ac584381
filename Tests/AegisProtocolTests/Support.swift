import AegisProtocol
import Foundation

/// SplitMix64: a seeded generator, so a failing property run can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Both ends of a fresh session, made by a real handshake.
struct SessionPair {
    let gateway: SessionKeys
    let agent: SessionKeys
    let agentIdentity: Identity
    let serverIdentity: Identity
    static let now: UInt64 = 1_764_211_200

    static func make(ephemeral: Bool = true, agentID: String = "agent-7") throws -> SessionPair {
        let server = try Identity.generate()
        let agent = try Identity.generate()
        let hs = try AgentHandshake(identity: agent, agentID: agentID, timestamp: now, ephemeral: ephemeral)
        let req = try GatewayHandshake.check(
            hs.authRequest, context: AuthContext(headerAgentID: agentID, headerPublicKey: agent.publicKey, now: now))
        try GatewayHandshake.verifySignature(req)
        let acc = try GatewayHandshake.accept(
            server: server, request: req,
            parameters: AuthOKParameters(sessionID: UUID().uuidString.lowercased(), timestamp: now,
                                         expiresAt: now + 86_400, heartbeatInterval: 30))
        let (_, session) = try hs.finish(acc.authOK, expectedServerKey: server.publicKey)
        return SessionPair(gateway: acc.session, agent: session, agentIdentity: agent, serverIdentity: server)
    }
}

func randomBytes<G: RandomNumberGenerator>(_ n: Int, using g: inout G) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: n)
    var i = 0
    while i < n {
        var w = g.next()
        for _ in 0..<8 where i < n {
            out[i] = UInt8(truncatingIfNeeded: w)
            w >>= 8
            i += 1
        }
    }
    return out
}

let idAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
let channelAlphabet = idAlphabet + ["/"]

func randomText<G: RandomNumberGenerator>(_ alphabet: [Character], _ range: ClosedRange<Int>, using g: inout G) -> String {
    String((0..<Int.random(in: range, using: &g)).map { _ in alphabet.randomElement(using: &g)! })
}
