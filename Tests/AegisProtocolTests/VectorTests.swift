import AegisCore
import AegisProtocol
import Foundation
import Testing

/// Every positive vector of vectors.json reproduced byte for byte, and every
/// negative one rejected with its expected code.
@Suite struct VectorTests {
    @Test func base64() throws {
        let b = Vectors.dict("base64")
        for v in b["b64_valid"] as! [[String: Any]] {
            #expect(try Base64.decode(v.s("text")) == hex(v.s("hex")), "\(v)")
            #expect(Base64.encode(hex(v.s("hex"))) == v.s("text"))
        }
        for v in b["b64u_valid"] as! [[String: Any]] {
            #expect(try Base64.decodeURL(v.s("text")) == hex(v.s("hex")), "\(v)")
            #expect(Base64.encodeURL(hex(v.s("hex"))) == v.s("text"))
        }
        for v in b["b64_invalid"] as! [[String: Any]] {
            #expect(throws: AegisError.base64, "\(v)") { try Base64.decode(v.s("text")) }
        }
        for v in b["b64u_invalid"] as! [[String: Any]] {
            #expect(throws: AegisError.base64, "\(v)") { try Base64.decodeURL(v.s("text")) }
        }
    }

    @Test func enc() {
        for v in Vectors.list("enc") {
            var out = [UInt8]()
            for f in v["fields"] as! [[String: Any]] {
                var buf = [UInt8](repeating: 0, count: 1024)
                let n: Int
                switch f.s("kind") {
                case "string": n = aegis_enc_bytes(&buf, buf.count, Array(f.s("value").utf8), f.s("value").utf8.count)
                case "bytes":
                    let b = hex(f.s("hex"))
                    n = aegis_enc_bytes(&buf, buf.count, b, b.count)
                case "integer": n = aegis_enc_u64(&buf, buf.count, f.u("value"))
                default: n = aegis_enc_bytes(&buf, buf.count, nil, 0)
                }
                out += buf[..<n]
            }
            #expect(hexString(out) == v.s("enc_hex"), "\(v["description"]!)")
        }
    }

    /// Integers are exercised through the auth request's timestamp: a valid
    /// text yields its value, an invalid one makes the object malformed.
    @Test func integers() throws {
        let hs = Vectors.list("handshakes")[0]
        let json = hs.d("auth_request").s("json")
        let ts = String(hs.d("auth_request").d("inputs").u("timestamp"))
        let pk = try Base64.decode(Vectors.key("agent").s("public_key"))
        let ints = Vectors.dict("integers")
        for v in ints["valid"] as! [[String: Any]] {
            let text = json.replacingOccurrences(of: "\"timestamp\":\(ts)", with: "\"timestamp\":\(v.s("json"))")
            let value = v.u("value")
            let req = try GatewayHandshake.check(
                Array(text.utf8), context: AuthContext(headerAgentID: "agent-7", headerPublicKey: pk, now: value))
            #expect(req.timestamp == value)
        }
        for v in ints["invalid"] as! [[String: Any]] {
            let text = json.replacingOccurrences(of: "\"timestamp\":\(ts)", with: "\"timestamp\":\(v.s("json"))")
            do {
                _ = try GatewayHandshake.check(
                    Array(text.utf8), context: AuthContext(headerAgentID: "agent-7", headerPublicKey: pk, now: 0))
                Issue.record("accepted \(v)")
            } catch {
                #expect(error.authCode == "malformed", "\(v) gave \(error)")
            }
        }
    }

    @Test func handshakesByteForByte() throws {
        let agent = try Identity.fromSeed(hex(Vectors.key("agent").s("seed_hex")))
        let server = try Identity.fromSeed(hex(Vectors.key("server").s("seed_hex")))
        #expect(agent.publicKeyBase64 == Vectors.key("agent").s("public_key"))
        #expect(server.publicKeyBase64 == Vectors.key("server").s("public_key"))
        for hs in Vectors.list("handshakes") {
            let r = hs.d("auth_request"), inputs = r.d("inputs")
            let ok = hs.d("auth_ok"), okIn = ok.d("inputs")
            let agentHS = try AgentHandshake(
                identity: agent, agentID: inputs.s("agent_id"), timestamp: inputs.u("timestamp"),
                ephemeral: inputs["ephemeral_key"] is String, testNonce: hex(inputs.s("nonce_hex")),
                testEphemeralSecret: (inputs["ephemeral_secret_hex"] as? String).map(hex))
            #expect(String(decoding: agentHS.authRequest, as: UTF8.self) == r.s("json"), "\(hs.s("name"))")

            let req = try GatewayHandshake.check(
                Array(r.s("json").utf8),
                context: AuthContext(headerAgentID: inputs.s("agent_id"), headerPublicKey: agent.publicKey,
                                     now: r.u("gateway_now")))
            #expect(hexString(req.signature) == r.s("signature_hex"))
            #expect(Base64.encode(req.nonce) == inputs.s("nonce"))
            #expect(req.ephemeralKey.map(Base64.encode) == inputs.optS("ephemeral_key"))
            try GatewayHandshake.verifySignature(req)

            let acc = try GatewayHandshake.accept(
                server: server, request: req,
                parameters: AuthOKParameters(
                    sessionID: okIn.s("session_id"), timestamp: okIn.u("timestamp"),
                    expiresAt: okIn.u("expires_at"), heartbeatInterval: okIn.u("heartbeat_interval"),
                    testBackendSecret: hex(okIn.s("backend_secret_hex")),
                    testSessionToken: hex(okIn.s("session_token_hex"))))
            #expect(String(decoding: acc.authOK, as: UTF8.self) == ok.s("json"), "\(hs.s("name"))")
            #expect(hexString(acc.sessionTokenHash) == ok.s("session_token_sha256_hex"))

            let (authOK, session) = try agentHS.finish(Array(ok.s("json").utf8), expectedServerKey: server.publicKey)
            #expect(authOK.sessionID == okIn.s("session_id"))
            #expect(Base64.encode(authOK.backendKey) == okIn.s("backend_key"))
            #expect(authOK.expiresAt == okIn.u("expires_at"))
            #expect(session.sessionID == okIn.s("session_id"))
        }
    }

    @Test func messagesByteForByte() throws {
        let s = try VectorSessions.make()
        for v in Vectors.list("messages") {
            let name = v.s("name"), dir = v.s("dir"), session = v.s("session")
            let f = v.d("fields")
            let header = MessageHeader(
                id: f.s("id"), type: MessageType(rawValue: f.s("type"))!, channel: f.s("channel"),
                ref: f.optS("ref"), timestamp: f.u("timestamp"))
            let pt = hex(v.s("plaintext_hex"))
            let sealed = try s.sender(session: session, dir: dir).seal(header, plaintext: pt, testNonce: hex(v.s("nonce_hex")))
            #expect(String(decoding: sealed, as: UTF8.self) == v.s("json"), "\(name)")

            let receiver = s.receiver(session: session, dir: dir)
            let m = try receiver.open(Array(v.s("json").utf8), now: v.u("receiver_now"))
            #expect(m.header == header, "\(name)")
            #expect(m.plaintext == pt, "\(name)")
            // The audit fields are the envelope's, exactly as received.
            #expect(Base64.encode(m.ciphertext) == v.s("payload"), "\(name)")
            #expect(hexString(m.nonce) == v.s("nonce_hex"), "\(name)")
            #expect(Base64.encode(m.signature) == v.s("signature"), "\(name)")
            if let ids = v["ack_ids"] as? [String] {
                #expect(try AckPlaintext.ids(from: m.plaintext) == ids, "\(name)")
                #expect(try AckPlaintext.build(ids: ids) == pt, "\(name)")
            }
        }
    }

    @Test func duplicates() throws {
        for v in Vectors.list("duplicates") {
            // A fresh pair of sessions per vector: each starts with exactly
            // the ids the vector says were received.
            let s = try VectorSessions.make()
            let receiver = s.receiver(session: v.s("session"), dir: v.s("receiver_dir"))
            let now = v.u("receiver_now")
            for id in v["received_ids"] as! [String] {
                try receiver.rememberReceivedID(id, expiresAt: now + 60, now: now)
            }
            let m = try receiver.open(Array(v.s("json").utf8), now: now)
            let expect = v.d("expect")
            #expect(m.isDuplicate == (expect.s("outcome") == "duplicate"), "\(v.s("name"))")
            #expect(!m.isDuplicate == (expect["processed"] as! Bool), "\(v.s("name"))")
            #expect(m.type.needsAck == (expect["acked_again"] as! Bool), "\(v.s("name"))")
            let ackIDs = expect["ack_ids"] as! [String]
            #expect((m.type.needsAck ? [m.id] : []) == ackIDs)
        }
    }

    @Test func negativeMessages() throws {
        for v in Vectors.list("negative", "messages") {
            let s = try VectorSessions.make()
            let receiver = s.receiver(session: v.s("session"), dir: v.s("receiver_dir"))
            let now = v.u("receiver_now")
            for id in v["received_ids"] as! [String] {
                try receiver.rememberReceivedID(id, expiresAt: now + 60, now: now)
            }
            let expect = v.d("expect")
            do {
                let m = try receiver.open(Array(v.s("json").utf8), now: now)
                Issue.record("\(v.s("name")) accepted: \(m.header)")
            } catch {
                #expect(error.messageCloseCode == UInt16(expect.u("close_code")), "\(v.s("name")): \(error)")
                #expect(error.messageReason == expect.s("reason"), "\(v.s("name")): \(error.name)")
            }
        }
    }

    /// The gateway's §3.1 order around the core: check (1–2), replay (3),
    /// enrollment (4), signature (5), key derivation (§3.3).
    @Test func negativeAuth() throws {
        let server = try Identity.fromSeed(hex(Vectors.key("server").s("seed_hex")))
        for v in Vectors.list("negative", "auth") {
            let ctx = v.d("context"), headers = ctx.d("headers")
            let expect = v.d("expect")
            let name = v.s("name")
            do {
                let req = try GatewayHandshake.check(
                    Array(v.s("json").utf8),
                    context: AuthContext(
                        headerAgentID: headers.s("X-Agent-ID"),
                        headerPublicKey: try Base64.decode(headers.s("X-Agent-Public-Key")),
                        now: ctx.u("now"), skew: ctx.u("skew"),
                        requireEphemeral: ctx["require_ephemeral"] as! Bool))
                if (ctx["used_nonces"] as! [String]).contains(Base64.encode(req.nonce)) {
                    throw AegisError.replay
                }
                if let pinned = (ctx["pinned_keys"] as! [String: String])[req.agentID],
                   pinned != Base64.encode(req.publicKey) {
                    throw AegisError.keyMismatch
                }
                try GatewayHandshake.verifySignature(req)
                _ = try GatewayHandshake.accept(
                    server: server, request: req,
                    parameters: AuthOKParameters(sessionID: "c3a8f2d1-4e5b-4a69-8d7c-0b1e2f3a4b5c",
                                                 timestamp: ctx.u("now"), expiresAt: ctx.u("now") + 86400,
                                                 heartbeatInterval: 30))
                Issue.record("\(name) accepted")
            } catch let error as AegisError {
                #expect(error.authCode == expect.s("auth_error"), "\(name): \(error.name)")
                #expect(error.handshakeCloseCode == UInt16(expect.u("close_code")), "\(name)")
            }
        }
    }

    /// §2: the core's request checks, then the gateway's rate limit (429)
    /// and enrollment (403), in that order.
    @Test func upgrades() throws {
        func evaluate(_ v: [String: Any]) -> (Int, String?, UpgradeDecision) {
            var headers: [(String, String)] = []
            for (k, val) in v.d("websocket_headers") { headers.append((k, val as! String)) }
            for (k, val) in v.d("headers") { headers.append((k, val as! String)) }
            for pair in v["extra_headers"] as! [[String]] { headers.append((pair[0], pair[1])) }
            let ctx = v.d("context")
            let d = UpgradeRequest.check(method: v.s("method"), path: v.s("path"), headers: headers,
                                         draining: ctx["draining"] as! Bool)
            guard case let .accepted(agentID, publicKey, _, _) = d else {
                if case let .refused(status, code) = d { return (status, code, d) }
                return (0, nil, d)
            }
            if ctx["retry_after"] is NSNumber { return (429, "rate_limited", d) }
            if (ctx["revoked"] as! [String]).contains(agentID) { return (403, "revoked", d) }
            if let pinned = (ctx["pinned_keys"] as! [String: String])[agentID], pinned != Base64.encode(publicKey) {
                return (403, "key_mismatch", d)
            }
            return (0, nil, d)
        }
        for v in Vectors.list("upgrade_accepted") {
            let (status, code, d) = evaluate(v)
            #expect(status == 0 && code == nil, "\(v.s("name"))")
            let expect = v.d("expect")
            if case let .accepted(agentID, publicKey, _, _) = d {
                #expect(agentID == expect.s("agent_id"))
                #expect(Base64.encode(publicKey) == expect.s("public_key"))
            }
        }
        for v in Vectors.list("negative", "upgrade") {
            let (status, code, _) = evaluate(v)
            let expect = v.d("expect")
            #expect(status == Int(expect.u("http_status")) && code == expect.s("error_code"),
                    "\(v.s("name")): got \(status) \(code ?? "-")")
        }
    }
}
