import AegisProtocol
import Foundation
import Testing

/// Both roles against each other, with and without the ephemeral key.
@Suite struct RoundTripTests {
    @Test(arguments: [true, false])
    func bothDirections(ephemeral: Bool) throws {
        let p = try SessionPair.make(ephemeral: ephemeral)
        #expect(p.gateway.sessionID == p.agent.sessionID)
        #expect(p.gateway.peerPublicKey == p.agentIdentity.publicKey)
        #expect(p.agent.peerPublicKey == p.serverIdentity.publicKey)
        let now = SessionPair.now

        let up = try p.agent.seal(MessageHeader(id: "u1", type: .request, channel: "jobs.run", timestamp: now),
                                  plaintext: Array("{\"cmd\":\"uptime\"}".utf8))
        let got = try p.gateway.open(up, now: now)
        #expect(got.id == "u1" && got.type == .request && !got.isDuplicate)
        #expect(String(decoding: got.plaintext, as: UTF8.self) == "{\"cmd\":\"uptime\"}")

        let down = try p.gateway.seal(MessageHeader(id: "d1", type: .response, channel: "jobs.run", ref: "u1", timestamp: now),
                                      plaintext: [1, 2, 3])
        let back = try p.agent.open(down, now: now)
        #expect(back.ref == "u1" && back.plaintext == [1, 2, 3])

        // Reflection: a message opened by its own sender's role fails the AEAD.
        #expect(throws: AegisError.decrypt) { try p.agent.open(up, now: now) }
        #expect(throws: AegisError.decrypt) { try p.gateway.open(down, now: now) }

        // A second session's keys do not open the first's traffic.
        let other = try SessionPair.make(ephemeral: ephemeral)
        #expect(throws: AegisError.decrypt) { try other.gateway.open(up, now: now) }
    }

    @Test func retransmissionIsDuplicate() throws {
        let p = try SessionPair.make()
        let h = MessageHeader(id: "e1", type: .event, channel: "telemetry", timestamp: SessionPair.now)
        let first = try p.gateway.open(try p.agent.seal(h, plaintext: [0]), now: SessionPair.now)
        #expect(!first.isDuplicate)
        var again = h
        again.timestamp += 30
        let second = try p.gateway.open(try p.agent.seal(again, plaintext: [0]), now: SessionPair.now + 30)
        #expect(second.isDuplicate)
    }

    @Test func heartbeatAndAck() throws {
        let p = try SessionPair.make()
        let now = SessionPair.now
        let hb = try p.agent.seal(MessageHeader(id: "hb1", type: .heartbeat, channel: "aegis.heartbeat", timestamp: now), plaintext: [])
        #expect(try p.gateway.open(hb, now: now).type == .heartbeat)
        let hbObj = try p.agent.seal(MessageHeader(id: "hb2", type: .heartbeat, channel: "aegis.heartbeat", timestamp: now),
                                     plaintext: Array("{\"load\":1}".utf8))
        #expect(try p.gateway.open(hbObj, now: now).plaintext.count == 10)
        let hbBad = try p.agent.seal(MessageHeader(id: "hb3", type: .heartbeat, channel: "aegis.heartbeat", timestamp: now),
                                     plaintext: Array("[1]".utf8))
        #expect(throws: AegisError.plaintext) { try p.gateway.open(hbBad, now: now) }

        let ids = (0..<1024).map { "id-\($0)" }
        let ack = try p.gateway.seal(MessageHeader(id: "a1", type: .ack, channel: "aegis.ack", ref: "id-0", timestamp: now),
                                     plaintext: try AckPlaintext.build(ids: ids))
        #expect(try AckPlaintext.ids(from: try p.agent.open(ack, now: now).plaintext) == ids)
        #expect(throws: AegisError.invalidArgument) { try AckPlaintext.build(ids: ids + ["one-more"]) }
        #expect(throws: AegisError.invalidArgument) { try AckPlaintext.build(ids: []) }
        // 1025 ids sealed by hand are refused by the receiver.
        var big = Array("{\"ids\":[".utf8)
        big += Array((0...1024).map { "\"i\($0)\"" }.joined(separator: ",").utf8)
        big += Array("]}".utf8)
        let tooMany = try p.gateway.seal(MessageHeader(id: "a2", type: .ack, channel: "aegis.ack", ref: "i0", timestamp: now),
                                         plaintext: big)
        #expect(throws: AegisError.plaintext) { try p.agent.open(tooMany, now: now) }
    }

    @Test func sealRefusesWhatTheSpecForbids() throws {
        let p = try SessionPair.make()
        let now = SessionPair.now
        let bad: [MessageHeader] = [
            MessageHeader(id: "x y", type: .event, channel: "c", timestamp: now),
            MessageHeader(id: String(repeating: "a", count: 65), type: .event, channel: "c", timestamp: now),
            MessageHeader(id: "a", type: .event, channel: "aegis.control", timestamp: now),
            MessageHeader(id: "a", type: .event, channel: "c", ref: "r", timestamp: now),
            MessageHeader(id: "a", type: .response, channel: "c", timestamp: now),
            MessageHeader(id: "a", type: .ack, channel: "c", ref: "r", timestamp: now),
            MessageHeader(id: "a", type: .heartbeat, channel: "c", timestamp: now),
            MessageHeader(id: "a", type: .event, channel: "c", timestamp: UInt64(Int64.max) + 1),
        ]
        for h in bad {
            #expect(throws: AegisError.invalidArgument, "\(h)") { try p.agent.seal(h, plaintext: []) }
        }
    }

    @Test func agentChecksAuthOK() throws {
        let server = try Identity.generate(), agent = try Identity.generate(), impostor = try Identity.generate()
        let now = SessionPair.now
        func attempt(expected: [UInt8]?, expiresAt: UInt64) throws -> AegisError? {
            let hs = try AgentHandshake(identity: agent, agentID: "a", timestamp: now)
            let req = try GatewayHandshake.check(hs.authRequest,
                                                 context: AuthContext(headerAgentID: "a", headerPublicKey: agent.publicKey, now: now))
            let acc = try GatewayHandshake.accept(
                server: server, request: req,
                parameters: AuthOKParameters(sessionID: "00000000-0000-4000-8000-000000000001", timestamp: now,
                                             expiresAt: expiresAt, heartbeatInterval: 30))
            do {
                _ = try hs.finish(acc.authOK, expectedServerKey: expected)
                return nil
            } catch { return error }
        }
        #expect(try attempt(expected: server.publicKey, expiresAt: now + 10) == nil)
        #expect(try attempt(expected: nil, expiresAt: now + 10) == nil)
        #expect(try attempt(expected: impostor.publicKey, expiresAt: now + 10) == .serverKey)
        // The gateway refuses to sign an auth_ok that expires before it starts.
        #expect(throws: AegisError.invalidArgument) { _ = try attempt(expected: nil, expiresAt: now) }

        let hs = try AgentHandshake(identity: agent, agentID: "a", timestamp: now)
        let refusal = GatewayHandshake.authError(code: "revoked", message: "agent \"a\" is revoked\n")
        #expect(String(decoding: refusal, as: UTF8.self)
                == #"{"type":"auth_error","code":"revoked","message":"agent \"a\" is revoked\u000a"}"#)
        #expect(throws: AegisError.authRefused) { _ = try hs.finish(refusal, expectedServerKey: nil) }
        #expect(hs.refusal?.code == "revoked")
        #expect(hs.refusal?.message == "agent \"a\" is revoked\n")
    }

    @Test func batchMatchesSingle() throws {
        let pairs = try (0..<4).map { _ in try SessionPair.make() }
        let now = SessionPair.now
        var items: [(session: SessionKeys, json: [UInt8])] = []
        for (i, p) in pairs.enumerated() {
            for k in 0..<3 {
                let json = try p.agent.seal(MessageHeader(id: "m\(k)", type: .event, channel: "c", timestamp: now),
                                            plaintext: Array(repeating: UInt8(i), count: k * 100))
                items.append((p.gateway, json))
            }
        }
        items.append((pairs[0].gateway, Array("{}".utf8)))
        let results = MessageBatch.open(items, now: now)
        #expect(results.count == items.count)
        for (i, r) in results.dropLast().enumerated() {
            let m = try r.get()
            #expect(m.id == "m\(i % 3)" && m.plaintext == Array(repeating: UInt8(i / 3), count: (i % 3) * 100))
        }
        #expect(throws: AegisError.fieldMissing) { try results.last!.get() }
    }
}

@Suite struct IdentityTests {
    @Test func keyFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("agent.key").path
        let id = try Identity.generate()
        try id.save(path: path)
        let attrs = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attrs[.posixPermissions] as! NSNumber).intValue == 0o600)
        #expect(try Identity.load(path: path).publicKey == id.publicKey)
        #expect(throws: AegisError.io) { try id.save(path: path) }  // never overwrites
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        #expect(throws: AegisError.keyFilePermissions) { try Identity.load(path: path) }
        #expect(throws: AegisError.io) { try Identity.load(path: dir.appendingPathComponent("none").path) }
        let seed = [UInt8](repeating: 7, count: 32)
        #expect(try Identity.fromSeedBase64(Base64.encode(seed)).publicKey == (try Identity.fromSeed(seed)).publicKey)
        #expect(throws: AegisError.base64) { try Identity.fromSeedBase64("not base64") }
    }

    @Test func statusTableIsComplete() {
        for e in AegisError.allCases where e != .unknown {
            #expect(e.name.hasPrefix("AEGIS_E_"), "\(e)")
            if e.messageReason != nil { #expect(e.messageCloseCode == 4004) }
            if let code = e.authCode { #expect([4001, 4003, 4029].contains(e.handshakeCloseCode ?? 0), "\(code)") }
        }
    }
}
