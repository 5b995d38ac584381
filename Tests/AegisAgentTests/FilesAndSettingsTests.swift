@testable import AegisAgent
import AegisProtocol
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Key files, the server key pin, URLs, settings and small readers.
@Suite struct FilesAndSettingsTests {
    func tempDir() -> String {
        var template = Array("/tmp/aegis-agent-test-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    @Test func aMissingKeyFileIsCreated0600AndLoadedNextTime() throws {
        let path = tempDir() + "/agent.key"
        let (created, isNew) = try AgentKeyFile.loadOrCreate(path: path)
        #expect(isNew)
        #expect(AgentKeyFile.mode(path) == 0o600)
        let (loaded, isNewAgain) = try AgentKeyFile.loadOrCreate(path: path)
        #expect(!isNewAgain)
        #expect(loaded.publicKey == created.publicKey)
    }

    @Test func aKeyFileReadableByOthersIsRefusedWithAClearMessage() throws {
        let path = tempDir() + "/agent.key"
        _ = try AgentKeyFile.loadOrCreate(path: path)
        for mode: mode_t in [0o644, 0o640, 0o604] {
            chmod(path, mode)
            #expect {
                try AgentKeyFile.loadOrCreate(path: path)
            } throws: { error in
                guard case AgentError.keyFile(let p, let problem) = error else { return false }
                return p == path && problem.contains("readable by group or others")
                    && problem.contains("0\(String(mode, radix: 8))")
            }
        }
        chmod(path, 0o600)
        _ = try AgentKeyFile.loadOrCreate(path: path)
    }

    @Test func aKeyFileThatIsNotOneIsRefused() throws {
        let path = tempDir() + "/agent.key"
        let fd = open(path, O_WRONLY | O_CREAT, 0o600)
        _ = write(fd, "not a key\n", 10)
        close(fd)
        #expect(throws: AgentError.self) { try AgentKeyFile.loadOrCreate(path: path) }
    }

    @Test func theServerKeyPinIsWrittenOnceAndReadBack() throws {
        let path = tempDir() + "/agent.key.server.pub"
        #expect(try AgentKeyFile.readServerKey(path: path) == nil)
        try AgentKeyFile.writeServerKey(serverKeyA, path: path)
        #expect(try AgentKeyFile.readServerKey(path: path) == serverKeyA)
        // Never replaced.
        #expect(throws: AgentError.self) { try AgentKeyFile.writeServerKey(serverKeyB, path: path) }
        #expect(try AgentKeyFile.readServerKey(path: path) == serverKeyA)
    }

    @Test func aPinFileIsReadAtConstructionAndEnforced() throws {
        let dir = tempDir()
        try AgentKeyFile.writeServerKey(serverKeyA, path: dir + "/pin")
        var c = AgentConfiguration(urls: [try GatewayURL("ws://127.0.0.1:1/ws/agent")], agentID: "a1",
                                   identity: try Identity.generate(), serverKey: .trustOnFirstUse(pinFile: dir + "/pin"))
        c.allowPlaintext = true
        let agent = try AegisAgent(c)
        _ = agent
        // A malformed pin is an error, not a silent first use.
        let fd = open(dir + "/bad", O_WRONLY | O_CREAT, 0o600)
        _ = write(fd, "zz\n", 3)
        close(fd)
        c.serverKey = .trustOnFirstUse(pinFile: dir + "/bad")
        #expect(throws: AgentError.self) { try AegisAgent(c) }
    }

    @Test func gatewayURLs() throws {
        let a = try GatewayURL("wss://gw.example.com:8443/ws/agent")
        #expect(a == GatewayURL(secure: true, host: "gw.example.com", port: 8443, path: "/ws/agent"))
        #expect(try GatewayURL("wss://gw.example.com") == GatewayURL(secure: true, host: "gw.example.com", port: 443))
        #expect(try GatewayURL("ws://[::1]:8080/x?y=1") == GatewayURL(secure: false, host: "::1", port: 8080, path: "/x?y=1"))
        #expect(try GatewayURL("ws://[::1]:8080").description == "ws://[::1]:8080/ws/agent")
        for bad in ["http://x", "wss://", "wss://h:0", "wss://h:99999", "wss://[::1", "wss://a b"] {
            #expect(throws: AgentError.self) { try GatewayURL(bad) }
        }
    }

    @Test func configurationIsCheckedBeforeConnecting() throws {
        let identity = try Identity.generate()
        var c = AgentConfiguration(urls: [try GatewayURL("ws://127.0.0.1:9/ws/agent")], agentID: "agent-7",
                                   identity: identity, serverKey: .trustOnFirstUse(pinFile: nil))
        #expect(throws: AgentError.self) { try c.validate() }  // ws:// without consent
        c.allowPlaintext = true
        try c.validate()
        c.agentID = "bad id"
        #expect(throws: AgentError.self) { try c.validate() }
        c.agentID = "agent-7"
        c.enrollmentToken = "short"
        #expect(throws: AgentError.self) { try c.validate() }
        c.enrollmentToken = "tok_abcdefghijklmnop"
        try c.validate()
        c.tls = .pinnedSHA256("12:34")
        #expect(throws: AgentError.self) { try c.validate() }
        c.tls = .pinnedSHA256(String(repeating: "AB:", count: 31) + "AB")
        try c.validate()
        c.serverKey = .pinned([1, 2, 3])
        #expect(throws: AgentError.self) { try c.validate() }
    }

    @Test func sendsAreCheckedAndQueuedBeforeStart() async throws {
        var c = AgentConfiguration(urls: [try GatewayURL("ws://127.0.0.1:9/ws/agent")], agentID: "agent-7",
                                   identity: try Identity.generate(), serverKey: .trustOnFirstUse(pinFile: nil))
        c.allowPlaintext = true
        c.maxQueuedMessages = 2
        let agent = try AegisAgent(c)
        await #expect(throws: AgentError.invalidArgument("channel aegis.ack is reserved (aegis.*)")) {
            try await agent.send(event: [], channel: "aegis.ack")
        }
        await #expect(throws: AgentError.self) { try await agent.send(event: [], channel: "bad channel") }
        let big = [UInt8](repeating: 0, count: agent.maxPayloadBytes + 1)
        await #expect(throws: AgentError.payloadTooLarge(bytes: big.count, limit: agent.maxPayloadBytes)) {
            try await agent.send(event: big, channel: "t")
        }
        #expect(agent.maxPayloadBytes > 700_000 && agent.maxPayloadBytes < 1 << 20)
        _ = try await agent.send(event: [1], channel: "t")
        _ = try await agent.send(event: [2], channel: "t")
        await #expect(throws: AgentError.queueFull) { try await agent.send(event: [3], channel: "t") }
        await agent.stop()
        await #expect(throws: AgentError.notRunning) { try await agent.send(event: [3], channel: "t") }
    }

    @Test func onlyARequestTakesAResponse() async throws {
        var c = AgentConfiguration(urls: [try GatewayURL("ws://127.0.0.1:9/ws/agent")], agentID: "agent-7",
                                   identity: try Identity.generate(), serverKey: .trustOnFirstUse(pinFile: nil))
        c.allowPlaintext = true
        let agent = try AegisAgent(c)
        let incoming = IncomingMessage(event("e1"), runtime: agent.runtime)
        #expect(incoming.kind == .event)
        await #expect(throws: AgentError.invalidArgument("only a request takes a response")) {
            try await incoming.respond([1])
        }
        let request = IncomingMessage(event("r1", type: .request), runtime: agent.runtime)
        #expect(request.kind == .request)
        // Queued even before the agent runs (its response waits for a session).
        let id = try await request.respond([1])
        #expect(FieldSyntax.isValidID(id))
        await agent.stop()
    }

    @Test func anUnreachableGatewayEndsTheAttemptsWithAClearError() async throws {
        var c = AgentConfiguration(urls: [try GatewayURL("ws://127.0.0.1:9/ws/agent")], agentID: "agent-7",
                                   identity: try Identity.generate(), serverKey: .trustOnFirstUse(pinFile: nil))
        c.allowPlaintext = true
        c.maxAttemptsWithoutSession = 2
        c.backoff = BackoffPolicy(initial: .milliseconds(20), cap: .milliseconds(40))
        let agent = try AegisAgent(c)
        await #expect {
            try await agent.start()
        } throws: { error in
            guard case AgentError.unreachable(let url, let reason) = error else { return false }
            return url == "ws://127.0.0.1:9/ws/agent" && reason.contains("refused")
        }
        let final = await agent.waitUntilStopped()
        #expect(final != nil)
    }

    @Test func refusalBodiesAndMessageIDs() {
        let body = Array(#"{"error":{"code":"unknown_agent","message":"no \"such\" agent \u00e9"}}"#.utf8)
        let (code, message) = HTTPRefusalBody.parse(body)
        #expect(code == "unknown_agent")
        #expect(message == "no \"such\" agent é")
        #expect(HTTPRefusalBody.parse(Array("<html>".utf8)).code == nil)
        let id = MessageIDs.make()
        #expect(id.count == 36 && FieldSyntax.isValidID(id))
        #expect(MessageIDs.make() != id)
    }
}
