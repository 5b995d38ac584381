#if canImport(Glibc)
import Glibc
#endif

/// An in-process handshake and one message each way, with fresh keys: what
/// `aegisd` runs at start to prove the core works on this machine.
public enum SelfTest {
    public static func run(now: UInt64 = UInt64(ContinuousClockSeconds.now)) throws(AegisError) -> String {
        let server = try Identity.generate()
        let agent = try Identity.generate()
        let hs = try AgentHandshake(identity: agent, agentID: "self-test", timestamp: now)
        let ctx = AuthContext(headerAgentID: "self-test", headerPublicKey: agent.publicKey, now: now,
                              requireEphemeral: true)
        let req = try GatewayHandshake.check(hs.authRequest, context: ctx)
        try GatewayHandshake.verifySignature(req)
        let accepted = try GatewayHandshake.accept(
            server: server, request: req,
            parameters: AuthOKParameters(sessionID: "00000000-0000-4000-8000-000000000000",
                                         timestamp: now, expiresAt: now + 60, heartbeatInterval: 30))
        let (_, agentSession) = try hs.finish(accepted.authOK, expectedServerKey: server.publicKey)
        let up = try agentSession.seal(
            MessageHeader(id: "up-1", type: .event, channel: "self.test", timestamp: now),
            plaintext: Array("{\"ok\":true}".utf8))
        let opened = try accepted.session.open(up, now: now)
        let down = try accepted.session.seal(
            MessageHeader(id: "down-1", type: .ack, channel: "aegis.ack", ref: "up-1", timestamp: now),
            plaintext: try AckPlaintext.build(ids: [opened.id]))
        let ack = try agentSession.open(down, now: now)
        guard try AckPlaintext.ids(from: ack.plaintext) == ["up-1"] else { throw .plaintext }
        return "ok (handshake with ephemeral key, up event, down ack)"
    }
}

/// Wall-clock Unix seconds without Foundation.
public enum ContinuousClockSeconds {
    public static var now: Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts.tv_sec
    }
}
