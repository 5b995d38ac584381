import AegisGateway
import AegisProtocol
import Testing

typealias Machine = ConnectionStateMachine

/// A machine driven through its handshake, step by step.
struct Handshaking {
    var machine = Machine()
    let agent: TestAgent
    let request: AuthRequest
    static let token = "tok_abcdefghijklmnop"

    init(agent: TestAgent? = nil, request: AuthRequest? = nil, token: String? = Handshaking.token) throws {
        let agent = try agent ?? TestAgent()
        self.agent = agent
        self.request = try request ?? agent.authRequest()
        #expect(machine.upgraded(agentID: agent.id, publicKey: agent.publicKey, enrollmentToken: token,
                                 peer: "10.0.0.1:51234", now: at(0)) == .checkRateLimit(source: "10.0.0.1", agentID: agent.id))
        #expect(machine.rateLimitChecked(.allowed, now: at(0)) == .none)
    }

    /// Up to the store's checks.
    mutating func sendAuthRequest(now: UnixTime = at(1)) -> Machine.Action {
        machine.authRequestReceived(request, now: now)
    }

    /// Through to `authenticated`, admitting as given.
    mutating func authenticate(firstUse: Bool = true, now: UnixTime = at(1)) {
        _ = sendAuthRequest(now: now)
        _ = machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: firstUse, consumesToken: false))
        _ = machine.signatureChecked(valid: true, now: now)
        _ = machine.keysDerived(sessionID: "6f1c2f0e-2b7a-4c39-9d0e-0c8f2a1b3c4d")
        _ = machine.handshakeRecorded(.recorded, now: now)
    }
}

extension Machine.Action {
    var refusal: (code: AuthErrorCode, closeCode: CloseCode)? {
        if case .refuse(let code, _, let close) = self { return (code, close) }
        return nil
    }

    var closeCode: CloseCode? {
        if case .close(let code, _) = self { return code }
        return nil
    }
}

@Suite struct HandshakeTests {
    @Test func fullHandshakeInProtocolOrder() throws {
        var h = try Handshaking()
        guard case .awaitingAuth(_, let deadline) = h.machine.state else {
            Issue.record("expected awaitingAuth, got \(h.machine.state)")
            return
        }
        #expect(deadline == at(10))

        // Steps 1–2 were done by the core; the machine starts with 3 and 4, reading only.
        let token = try #require(EnrollmentToken(Handshaking.token))
        #expect(h.sendAuthRequest(now: at(1)) == .checkStore(Machine.StoreQuery(
            agentID: h.agent.id, nonce: h.request.nonce, publicKey: h.agent.publicKey, enrollmentToken: token)))

        // 5 only after 3 and 4 passed.
        #expect(h.machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: true, consumesToken: true))
                == .verifySignature(h.request))
        // The real check, as the I/O layer runs it.
        try GatewayHandshake.verifySignature(h.request)

        // Then the key derivation, with the auth_ok terms.
        let terms = Machine.SessionTerms(timestamp: base + 2, expiresAt: base + 2 + 86_400, heartbeatInterval: 30)
        #expect(h.machine.signatureChecked(valid: true, now: at(2, ms: 400)) == .deriveSessionKeys(h.request, terms))

        // Then the first write: nonce, pin, token — before auth_ok is sent.
        let sid = "6f1c2f0e-2b7a-4c39-9d0e-0c8f2a1b3c4d"
        #expect(h.machine.keysDerived(sessionID: sid) == .recordNonceAndPin(Machine.HandshakeRecord(
            agentID: h.agent.id, publicKey: h.agent.publicKey, nonce: h.request.nonce,
            keepNonceUntil: at(60), pinsKey: true, consumesToken: token, sessionID: sid,
            expiresAt: at(2 + 86_400))))

        // Then auth_ok.
        let action = h.machine.handshakeRecorded(.recorded, now: at(3))
        let session = Machine.Session(agentID: h.agent.id, publicKey: h.agent.publicKey, sessionID: sid,
                                      establishedAt: at(3), expiresAt: at(2 + 86_400),
                                      heartbeatInterval: .seconds(30), lastHeardAt: at(3))
        #expect(action == .completeHandshake(session))
        #expect(h.machine.state == .authenticated(session))
        #expect(h.machine.authenticatedSession == session)
    }

    @Test func replayIsCheckedBeforeEnrollment() throws {
        // A replayed request of a revoked agent with a bad signature: step 3 answers.
        let agent = try TestAgent()
        var h = try Handshaking(agent: agent, request: try agent.forgedAuthRequest())
        _ = h.sendAuthRequest()
        let action = h.machine.storeAnswered(replaySeen: true, decision: .refuse(.revoked))
        #expect(action.refusal?.code == .replay)
        #expect(action.refusal?.closeCode == .authFailed)
    }

    @Test func enrollmentIsCheckedBeforeSignature() throws {
        // A bad signature is never looked at when step 4 refuses.
        let agent = try TestAgent()
        let forged = try agent.forgedAuthRequest()
        #expect(throws: AegisError.signature) { try GatewayHandshake.verifySignature(forged) }
        var h = try Handshaking(agent: agent, request: forged)
        _ = h.sendAuthRequest()
        let action = h.machine.storeAnswered(replaySeen: false, decision: .refuse(.keyMismatch))
        #expect(action.refusal?.code == .keyMismatch)
        #expect(action.refusal?.closeCode == .agentRefused)
    }

    @Test func signatureIsCheckedAfterAdmission() throws {
        let agent = try TestAgent()
        var h = try Handshaking(agent: agent, request: try agent.forgedAuthRequest())
        _ = h.sendAuthRequest()
        let action = h.machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: true, consumesToken: false))
        guard case .verifySignature(let request) = action else {
            Issue.record("expected verifySignature, got \(action)")
            return
        }
        var valid = true
        do { try GatewayHandshake.verifySignature(request) } catch { valid = false }
        let refusal = h.machine.signatureChecked(valid: valid, now: at(1))
        #expect(refusal.refusal?.code == .invalidSignature)
        #expect(refusal.refusal?.closeCode == .authFailed)
        // Nothing is recorded after a failed step.
        #expect(h.machine.keysDerived(sessionID: "x") == .none)
    }

    @Test(arguments: EnrollmentRefusal.allCases)
    func everyEnrollmentRefusalCloses4003(refusal: EnrollmentRefusal) throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        let action = h.machine.storeAnswered(replaySeen: false, decision: .refuse(refusal))
        #expect(action == .refuse(code: refusal.code, message: refusal.message, closeCode: CloseCode(rawValue: 4003)))
        #expect(h.machine.state == .closing(.agentRefused, session: nil))
    }

    @Test func refusalCodesAndCloseCodesFollowTheTable() {
        let expected: [AuthErrorCode: UInt16] = [
            .malformed: 4001, .ephemeralRequired: 4001, .clockSkew: 4001, .replay: 4001, .invalidSignature: 4001,
            .keyMismatch: 4003, .revoked: 4003, .pendingApproval: 4003, .unknownAgent: 4003, .rateLimited: 4029,
        ]
        for code in AuthErrorCode.allCases {
            #expect(code.closeCode.rawValue == expected[code], "\(code)")
        }
        // The same table as the C core's.
        let core: [(AegisError, AuthErrorCode)] = [
            (.fieldSyntax, .malformed), (.ephemeralRequired, .ephemeralRequired), (.clockSkew, .clockSkew),
            (.replay, .replay), (.signature, .invalidSignature), (.keyExchange, .malformed),
            (.keyMismatch, .keyMismatch), (.revoked, .revoked), (.pendingApproval, .pendingApproval),
            (.unknownAgent, .unknownAgent), (.rateLimited, .rateLimited),
        ]
        for (error, code) in core {
            #expect(AuthErrorCode(error) == code)
            #expect(error.handshakeCloseCode == code.closeCode.rawValue)
        }
    }

    @Test func rateLimitedHandshakeCloses4029() throws {
        let agent = try TestAgent()
        var m = Machine()
        _ = m.upgraded(agentID: agent.id, publicKey: agent.publicKey, enrollmentToken: nil, peer: "[::1]:9", now: at(0))
        let action = m.rateLimitChecked(.retryAfter(seconds: 7), now: at(0))
        #expect(action == .refuse(code: .rateLimited, message: "too many handshakes; retry after 7 s",
                                  closeCode: CloseCode(rawValue: 4029)))
        // The auth request that follows is ignored.
        #expect(m.authRequestReceived(try agent.authRequest(), now: at(1)) == .none)
    }

    @Test func authRequestBeforeTheRateLimitVerdictIsHeld() throws {
        let agent = try TestAgent()
        let request = try agent.authRequest()
        var m = Machine()
        _ = m.upgraded(agentID: agent.id, publicKey: agent.publicKey, enrollmentToken: nil, peer: "10.1.2.3:1", now: at(0))
        #expect(m.authRequestReceived(request, now: at(0)) == .none)
        #expect(m.rateLimitChecked(.allowed, now: at(0)) == .checkStore(Machine.StoreQuery(
            agentID: agent.id, nonce: request.nonce, publicKey: agent.publicKey, enrollmentToken: nil)))
    }

    @Test func noAuthRequestWithinTenSecondsCloses4002WithoutAuthError() throws {
        var h = try Handshaking()
        #expect(h.machine.nextDeadline == at(10))
        #expect(h.machine.tick(now: at(9, ms: 999)) == .none)
        #expect(h.machine.tick(now: at(10)) == .close(.authTimeout, reason: "no auth request in time"))
        #expect(CloseCode.authTimeout.rawValue == 4002)
        // Too late now.
        #expect(h.sendAuthRequest(now: at(11)) == .none)
    }

    @Test func authRequestThatDoesNotMatchTheHeadersIsMalformed() throws {
        let other = try TestAgent(id: "agent-8")
        var h = try Handshaking(request: try other.authRequest())
        let action = h.sendAuthRequest()
        #expect(action.refusal?.code == .malformed)
        #expect(action.refusal?.closeCode == .authFailed)
    }

    @Test func malformedOrAbsentTokenIsNotLookedUp() throws {
        for token in [nil, "short", "has spaces in it!!", String(repeating: "a", count: 257)] as [String?] {
            var h = try Handshaking(token: token)
            guard case .checkStore(let query) = h.sendAuthRequest() else {
                Issue.record("expected checkStore")
                continue
            }
            #expect(query.enrollmentToken == nil)
        }
    }

    @Test func tokenIsConsumedOnlyWhenTheAdmissionRestsOnIt() throws {
        for consumes in [true, false] {
            var h = try Handshaking()
            _ = h.sendAuthRequest()
            _ = h.machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: true, consumesToken: consumes))
            _ = h.machine.signatureChecked(valid: true, now: at(1))
            guard case .recordNonceAndPin(let record) = h.machine.keysDerived(sessionID: "s") else {
                Issue.record("expected recordNonceAndPin")
                continue
            }
            #expect((record.consumesToken != nil) == consumes)
            #expect(record.pinsKey)
        }
    }

    @Test func knownAgentIsNotPinnedAgain() throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        _ = h.machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: false, consumesToken: false))
        _ = h.machine.signatureChecked(valid: true, now: at(1))
        guard case .recordNonceAndPin(let record) = h.machine.keysDerived(sessionID: "s") else {
            Issue.record("expected recordNonceAndPin")
            return
        }
        #expect(!record.pinsKey && record.consumesToken == nil)
    }

    @Test func nonceIsKeptUntilTimestampPlusSkew() throws {
        let agent = try TestAgent()
        var m = Machine(settings: .init(clockSkew: .seconds(45)))
        _ = m.upgraded(agentID: agent.id, publicKey: agent.publicKey, enrollmentToken: nil, peer: "1.1.1.1:1", now: at(0))
        _ = m.rateLimitChecked(.allowed, now: at(0))
        _ = m.authRequestReceived(try agent.authRequest(timestamp: base - 20), now: at(0))
        _ = m.storeAnswered(replaySeen: false, decision: .admit(firstUse: false, consumesToken: false))
        _ = m.signatureChecked(valid: true, now: at(0))
        guard case .recordNonceAndPin(let record) = m.keysDerived(sessionID: "s") else {
            Issue.record("expected recordNonceAndPin")
            return
        }
        #expect(record.keepNonceUntil == UnixTime(seconds: base - 20 + 45))
    }

    @Test func keyDerivationFailureIsMalformed() throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        _ = h.machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: true, consumesToken: false))
        _ = h.machine.signatureChecked(valid: true, now: at(1))
        let action = h.machine.keyDerivationFailed(.keyExchange)
        #expect(action.refusal?.code == .malformed)
        #expect(action.refusal?.closeCode == .authFailed)
    }

    @Test(arguments: [
        (Machine.HandshakeRecordOutcome.nonceAlreadyRecorded, AuthErrorCode.replay),
        (.keyPinnedConcurrently, .keyMismatch),
        (.revokedConcurrently, .revoked),
        (.tokenNoLongerValid, .unknownAgent),
    ])
    func lostRaceAtRecordingIsRefused(outcome: Machine.HandshakeRecordOutcome, code: AuthErrorCode) throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        _ = h.machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: true, consumesToken: true))
        _ = h.machine.signatureChecked(valid: true, now: at(1))
        _ = h.machine.keysDerived(sessionID: "s")
        let action = h.machine.handshakeRecorded(outcome, now: at(1))
        #expect(action.refusal?.code == code)
        #expect(action.refusal?.closeCode == code.closeCode)
    }

    @Test func manualModeRecordsAPendingAgentOnlyWithAValidSignature() throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        #expect(h.machine.storeAnswered(replaySeen: false, decision: .requestApproval) == .verifySignature(h.request))
        #expect(h.machine.signatureChecked(valid: true, now: at(1)) == .recordPendingAndRefuse(
            agentID: h.agent.id, publicKey: h.agent.publicKey, code: .pendingApproval,
            message: EnrollmentRefusal.pendingApproval.message, closeCode: CloseCode(rawValue: 4003)))

        var forged = try Handshaking()
        _ = forged.sendAuthRequest()
        _ = forged.machine.storeAnswered(replaySeen: false, decision: .requestApproval)
        // Step 4 failed first, so the answer is still pending_approval; nothing is recorded.
        let action = forged.machine.signatureChecked(valid: false, now: at(1))
        #expect(action.refusal?.code == .pendingApproval)
        #expect(action.refusal?.closeCode == .agentRefused)
    }

    @Test func storeThatNeverAnswersClosesWith1013() throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest(now: at(1))
        #expect(h.machine.nextDeadline == at(11))
        #expect(h.machine.tick(now: at(10, ms: 999)) == .none)
        #expect(h.machine.tick(now: at(11)).closeCode == .tryAgainLater)
        // The late answer changes nothing.
        #expect(h.machine.storeAnswered(replaySeen: false, decision: .admit(firstUse: true, consumesToken: false)) == .none)

        var unreachable = try Handshaking()
        _ = unreachable.sendAuthRequest()
        #expect(unreachable.machine.storeUnavailable().closeCode == .tryAgainLater)
    }

    @Test func revokedDuringTheHandshakeIsRefused() throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        let action = h.machine.revoked()
        #expect(action.refusal?.code == .revoked)
        #expect(action.refusal?.closeCode == .agentRefused)
    }

    @Test func eventsOutOfOrderDoNothing() throws {
        var m = Machine()
        #expect(m.storeAnswered(replaySeen: false, decision: .admit(firstUse: true, consumesToken: false)) == .none)
        #expect(m.signatureChecked(valid: true, now: at(0)) == .none)
        #expect(m.keysDerived(sessionID: "s") == .none)
        #expect(m.handshakeRecorded(.recorded, now: at(0)) == .none)
        #expect(m.ackStored(ids: ["a"]) == .none)
        #expect(m.tick(now: at(100)) == .none)
        #expect(m.state == .idle)
        // Signature before the store answered: ignored, still checking the store.
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        #expect(h.machine.signatureChecked(valid: true, now: at(1)) == .none)
        guard case .checkingStore = h.machine.state else {
            Issue.record("expected checkingStore, got \(h.machine.state)")
            return
        }
    }
}

@Suite struct SessionTests {
    func authenticated(at now: UnixTime = at(1), settings: Machine.Settings = .init()) throws -> Handshaking {
        var h = try Handshaking()
        h.machine = Machine(settings: settings)
        _ = h.machine.upgraded(agentID: h.agent.id, publicKey: h.agent.publicKey, enrollmentToken: nil,
                               peer: "10.0.0.1:1", now: now)
        _ = h.machine.rateLimitChecked(.allowed, now: now)
        h.authenticate(now: now)
        guard case .authenticated = h.machine.state else {
            Issue.record("not authenticated: \(h.machine.state)")
            return h
        }
        return h
    }

    @Test func heartbeatIsAnsweredWithTheAgentsIDAsRef() throws {
        var h = try authenticated()
        let link = try SessionLink()
        #expect(h.machine.messageReceived(try link.up("hb-1", .heartbeat), now: at(30)) == .answerHeartbeat(ref: "hb-1"))
        #expect(h.machine.messageReceived(try link.up("hb-2", .heartbeat, plaintext: Array("{\"load\":1}".utf8)),
                                          now: at(60)) == .answerHeartbeat(ref: "hb-2"))
    }

    @Test func duplicateHeartbeatIsNotAnsweredAgain() throws {
        var h = try authenticated()
        let link = try SessionLink()
        #expect(h.machine.messageReceived(try link.up("hb-1", .heartbeat), now: at(30)) == .answerHeartbeat(ref: "hb-1"))
        let again = try link.up("hb-1", .heartbeat, timestamp: base + 31)
        #expect(again.isDuplicate)
        #expect(h.machine.messageReceived(again, now: at(31)) == .none)
        // It still counts as hearing from the agent.
        #expect(h.machine.tick(now: at(31 + 89)) == .none)
        #expect(h.machine.tick(now: at(31 + 90)).closeCode == .heartbeatTimeout)
    }

    @Test func requestsResponsesAndEventsAreStoredThenAcked() throws {
        var h = try authenticated()
        let link = try SessionLink()
        let request = try link.up("r-1", .request)
        #expect(h.machine.messageReceived(request, now: at(2)) == .store(request, answersDownMessage: nil))
        let event = try link.up("e-1", .event, channel: "telemetry")
        #expect(h.machine.messageReceived(event, now: at(2)) == .store(event, answersDownMessage: nil))
        let response = try link.up("s-1", .response, ref: "down-9")
        #expect(h.machine.messageReceived(response, now: at(2)) == .store(response, answersDownMessage: "down-9"))
        // Acked only after the store says so.
        #expect(h.machine.ackStored(ids: ["r-1", "e-1", "s-1"]) == .acknowledge(ids: ["r-1", "e-1", "s-1"]))
        #expect(h.machine.ackStored(ids: []) == .none)
    }

    @Test func duplicatesAreAckedAgainWithoutStoring() throws {
        var h = try authenticated()
        let link = try SessionLink()
        for type in [MessageType.request, .event] {
            let id = "\(type)-1"
            _ = h.machine.messageReceived(try link.up(id, type), now: at(2))
            let again = try link.up(id, type, timestamp: base + 5)
            #expect(again.isDuplicate)
            #expect(h.machine.messageReceived(again, now: at(5)) == .acknowledge(ids: [id]))
        }
        _ = h.machine.messageReceived(try link.up("s-1", .response, ref: "d-1"), now: at(2))
        #expect(h.machine.messageReceived(try link.up("s-1", .response, ref: "d-1", timestamp: base + 6), now: at(6))
                == .acknowledge(ids: ["s-1"]))
    }

    @Test func acksFromTheAgentMarkDownMessagesDelivered() throws {
        var h = try authenticated()
        let link = try SessionLink()
        #expect(h.machine.messageReceived(try link.ack("k-1", ids: ["d-1", "d-2"]), now: at(2))
                == .markDelivered(ids: ["d-1", "d-2"]))
        // A repeated ack is not processed again (and acks are never acked).
        let again = try link.up("k-1", .ack, ref: "d-1", plaintext: try AckPlaintext.build(ids: ["d-1", "d-2"]),
                                timestamp: base + 3)
        #expect(h.machine.messageReceived(again, now: at(3)) == .none)
    }

    @Test func silenceForThreeHeartbeatIntervalsCloses4006() throws {
        var h = try authenticated(at: at(0))
        #expect(h.machine.nextDeadline == at(90))
        #expect(h.machine.tick(now: at(30)) == .none)
        #expect(h.machine.tick(now: at(89, ms: 999)) == .none)
        #expect(h.machine.tick(now: at(90)) == .close(.heartbeatTimeout, reason: "no heartbeat"))
        #expect(CloseCode.heartbeatTimeout.rawValue == 4006)
        // The session ends when the transport reports the close.
        #expect(h.machine.closed() == .endSession(agentID: "agent-7", sessionID: "6f1c2f0e-2b7a-4c39-9d0e-0c8f2a1b3c4d"))
        #expect(h.machine.state == .closed)
    }

    @Test func anyMessageOrPingResetsTheSilenceClock() throws {
        var h = try authenticated(at: at(0))
        let link = try SessionLink()
        _ = h.machine.messageReceived(try link.up("e-1", .event), now: at(60))
        #expect(h.machine.tick(now: at(90)) == .none)
        #expect(h.machine.nextDeadline == at(150))
        _ = h.machine.peerActivity(now: at(140))
        #expect(h.machine.tick(now: at(229)) == .none)
        #expect(h.machine.tick(now: at(230)).closeCode == .heartbeatTimeout)
    }

    @Test func heartbeatIntervalComesFromTheSettings() throws {
        var h = try authenticated(at: at(0), settings: .init(heartbeatInterval: .seconds(10)))
        #expect(h.machine.tick(now: at(29)) == .none)
        #expect(h.machine.tick(now: at(30)).closeCode == .heartbeatTimeout)
    }

    @Test func sessionExpiresAtExpiresAt4010() throws {
        let settings = Machine.Settings(sessionLifetime: .seconds(3600))
        var h = try authenticated(at: at(0), settings: settings)
        let link = try SessionLink()
        // Keep it alive with heartbeats.
        var t: UInt64 = 0
        while t + 30 < 3600 {
            t += 30
            _ = h.machine.messageReceived(try link.up("hb-\(t)", .heartbeat, timestamp: base + t), now: at(t))
        }
        #expect(h.machine.nextDeadline == at(3600))
        #expect(h.machine.tick(now: at(3599, ms: 999)) == .none)
        #expect(h.machine.tick(now: at(3600)) == .close(.sessionExpired, reason: "session expired"))
        #expect(CloseCode.sessionExpired.rawValue == 4010)
    }

    @Test func expiryWinsOverSilenceAndStopsMessages() throws {
        let settings = Machine.Settings(heartbeatInterval: .seconds(20), sessionLifetime: .seconds(60))
        var h = try authenticated(at: at(0), settings: settings)
        #expect(h.machine.tick(now: at(60)).closeCode == .sessionExpired)

        var late = try authenticated(at: at(0), settings: settings)
        let link = try SessionLink()
        #expect(late.machine.messageReceived(try link.up("e-1", .event, timestamp: base + 60), now: at(60)).closeCode
                == .sessionExpired)
    }

    @Test func revokedDuringTheSessionCloses4003() throws {
        var h = try authenticated()
        #expect(h.machine.revoked() == .close(.agentRefused, reason: "agent revoked"))
        #expect(CloseCode.agentRefused.rawValue == 4003)
        #expect(h.machine.closed() == .endSession(agentID: "agent-7", sessionID: "6f1c2f0e-2b7a-4c39-9d0e-0c8f2a1b3c4d"))
    }

    @Test func replacedByANewerSessionCloses4009() throws {
        var h = try authenticated()
        #expect(h.machine.replacedByNewerSession() == .close(.replaced, reason: "replaced by a newer session"))
        #expect(CloseCode.replaced.rawValue == 4009)
        // While closing, nothing more happens on this connection.
        let link = try SessionLink()
        #expect(h.machine.messageReceived(try link.up("e-1", .event), now: at(2)) == .none)
        #expect(h.machine.ackStored(ids: ["e-1"]) == .none)
        #expect(h.machine.tick(now: at(1000)) == .none)
    }

    @Test func shutdownAndBufferLimit() throws {
        var h = try authenticated()
        #expect(h.machine.shuttingDown().closeCode == CloseCode(rawValue: 1001))
        var full = try authenticated()
        #expect(full.machine.bufferLimitExceeded().closeCode == CloseCode(rawValue: 1013))
        // A store outage alone only stops acks: the session goes on.
        var outage = try authenticated()
        #expect(outage.machine.storeUnavailable() == .none)
        guard case .authenticated = outage.machine.state else {
            Issue.record("expected authenticated")
            return
        }
    }

    @Test func downMessagesGoOutOnlyOnAnAuthenticatedConnection() throws {
        let message = Machine.DownMessage(id: "d-1", type: .response, channel: "jobs/run", ref: "r-1",
                                          plaintext: Array("ok".utf8))
        var h = try Handshaking()
        #expect(h.machine.downMessageReady(message) == .none)
        h.authenticate()
        #expect(h.machine.downMessageReady(message) == .send(message))
    }

    @Test func closeBeforeAuthenticationEndsNoSession() throws {
        var h = try Handshaking()
        _ = h.sendAuthRequest()
        #expect(h.machine.closed() == .none)
        #expect(h.machine.state == .closed)
    }

    @Test func settingsFromTheConfiguration() throws {
        var config = GatewayConfiguration()
        config.heartbeatInterval = .seconds(15)
        config.sessionLifetime = .seconds(7200)
        config.clockSkew = .seconds(30)
        config.authTimeout = .seconds(5)
        let settings = Machine.Settings(config)
        #expect(settings.heartbeatInterval == .seconds(15))
        #expect(settings.sessionLifetime == .seconds(7200))
        #expect(settings.clockSkew == .seconds(30))
        #expect(settings.authTimeout == .seconds(5))
        #expect(settings.silentIntervalsBeforeClose == 3)
    }
}
