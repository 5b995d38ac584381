import AegisProtocol

/// One agent connection, from the WebSocket upgrade to the close, as a
/// sans-IO state machine: each `mutating` event method returns the one
/// `Action` the I/O layer (the `Gateway` actor) carries out, and the result
/// of that action comes back as the next event. No sockets, no store, no
/// clock: time arrives as `now`.
///
/// The handshake follows §3.1 in its order, one step per round trip:
///
///     upgraded ─▶ checkRateLimit ─▶ awaitingAuth (auth timeout, 10 s)
///       ─ authRequestReceived (steps 1–2 done by the core) ─▶ checkStore
///       ─ storeAnswered: 3 replay, then 4 enrollment ─▶ verifySignature
///       ─ signatureChecked: 5 ─▶ deriveSessionKeys (§3.3)
///       ─ keysDerived ─▶ recordNonceAndPin (the first write of the handshake)
///       ─ handshakeRecorded ─▶ completeHandshake (send auth_ok) ─▶ authenticated
///
/// Any refusal sends `auth_error` and closes with the code of §3.2; the
/// machine then waits in `closing` for the transport's `closed`. Events
/// that do not apply in the current state (a late store answer after a
/// close, say) return `.none` and change nothing.
public struct ConnectionStateMachine: Sendable {
    // MARK: Settings

    public struct Settings: Sendable, Equatable {
        /// From the 101 response to the auth request (§3.1: 10 s).
        public var authTimeout: Duration
        /// From the auth request to `auth_ok`: the store's checks, the
        /// signature, key derivation and the store's writes. Past it the
        /// connection closes with 1013 (try again later), without
        /// `auth_error`, since the agent did nothing wrong.
        public var handshakeCompletionTimeout: Duration
        /// The accepted clock skew; an accepted nonce is kept until
        /// `timestamp + skew` (§3.1).
        public var clockSkew: Duration
        /// Announced in `auth_ok`; whole seconds.
        public var heartbeatInterval: Duration
        /// Silence (no message, no ping or pong) for this many heartbeat
        /// intervals closes with 4006 (§5: three).
        public var silentIntervalsBeforeClose: Int
        /// `expires_at − timestamp` of `auth_ok`; whole seconds.
        public var sessionLifetime: Duration

        public init(authTimeout: Duration = .seconds(10), handshakeCompletionTimeout: Duration = .seconds(10),
                    clockSkew: Duration = .seconds(60), heartbeatInterval: Duration = .seconds(30),
                    silentIntervalsBeforeClose: Int = 3, sessionLifetime: Duration = .seconds(86_400)) {
            self.authTimeout = authTimeout
            self.handshakeCompletionTimeout = handshakeCompletionTimeout
            self.clockSkew = clockSkew
            self.heartbeatInterval = heartbeatInterval
            self.silentIntervalsBeforeClose = max(1, silentIntervalsBeforeClose)
            self.sessionLifetime = sessionLifetime
        }

        public init(_ configuration: GatewayConfiguration) {
            self.init(authTimeout: configuration.authTimeout, clockSkew: configuration.clockSkew,
                      heartbeatInterval: configuration.heartbeatInterval,
                      sessionLifetime: configuration.sessionLifetime)
        }

        var heartbeatIntervalSeconds: UInt64 { max(1, UInt64(clamping: heartbeatInterval.wholeMilliseconds / 1000)) }
        var sessionLifetimeSeconds: UInt64 { max(1, UInt64(clamping: sessionLifetime.wholeMilliseconds / 1000)) }
        var clockSkewSeconds: UInt64 { UInt64(clamping: clockSkew.wholeMilliseconds / 1000) }
    }

    // MARK: What the machine knows

    /// The upgrade request's agent headers, checked by the core (§2).
    public struct Upgrade: Sendable, Equatable {
        public var agentID: String
        public var publicKey: [UInt8]
        /// A well-formed `X-Enrollment-Token`; nil when absent or malformed
        /// (a malformed token is never looked up, and counts as invalid).
        public var enrollmentToken: EnrollmentToken?
        /// The peer's address as the transport reports it ("ip:port").
        public var peer: String
        public var upgradedAt: UnixTime
    }

    /// A handshake in progress: the request and what the steps decided.
    public struct Handshake: Sendable, Equatable {
        public var upgrade: Upgrade
        public var request: AuthRequest
        public var receivedAt: UnixTime
        /// Past this instant the handshake closes with 1013.
        public var completeBy: UnixTime
        /// Step 4's admission, once the store answered.
        public var firstUse = false
        public var consumesToken = false
        /// Set when the signature verified (timestamps of auth_ok).
        public var terms: SessionTerms?
        /// Set when the keys are derived.
        public var sessionID: String?
    }

    /// What goes into `auth_ok` besides the keys (§3.2).
    public struct SessionTerms: Sendable, Equatable {
        /// auth_ok's `timestamp`, Unix seconds.
        public var timestamp: UInt64
        /// auth_ok's `expires_at`, Unix seconds.
        public var expiresAt: UInt64
        /// auth_ok's `heartbeat_interval`, seconds.
        public var heartbeatInterval: UInt64

        public init(timestamp: UInt64, expiresAt: UInt64, heartbeatInterval: UInt64) {
            self.timestamp = timestamp
            self.expiresAt = expiresAt
            self.heartbeatInterval = heartbeatInterval
        }
    }

    /// An authenticated session.
    public struct Session: Sendable, Equatable {
        public var agentID: String
        public var publicKey: [UInt8]
        public var sessionID: String
        public var establishedAt: UnixTime
        /// `expires_at`: the session closes with 4010 at this instant.
        public var expiresAt: UnixTime
        public var heartbeatInterval: Duration
        /// The last message, ping or pong from the agent.
        public var lastHeardAt: UnixTime

        public init(agentID: String, publicKey: [UInt8], sessionID: String, establishedAt: UnixTime,
                    expiresAt: UnixTime, heartbeatInterval: Duration, lastHeardAt: UnixTime) {
            self.agentID = agentID
            self.publicKey = publicKey
            self.sessionID = sessionID
            self.establishedAt = establishedAt
            self.expiresAt = expiresAt
            self.heartbeatInterval = heartbeatInterval
            self.lastHeardAt = lastHeardAt
        }
    }

    public enum State: Sendable, Equatable {
        /// Created, before the transport's `upgraded` event.
        case idle
        /// 101 sent; waiting for the rate limiter's verdict. An auth request
        /// arriving meanwhile is held and handled after the verdict.
        case upgraded(Upgrade, heldRequest: AuthRequest?)
        /// Waiting for the auth request until `deadline` (4002 after it).
        case awaitingAuth(Upgrade, deadline: UnixTime)
        /// Steps 3 and 4: the store's replay check and enrollment record.
        case checkingStore(Handshake)
        /// Step 5, then key derivation.
        case verifyingSignature(Handshake)
        /// Manual mode, unknown agent: the answer is `pending_approval`; the
        /// signature decides only whether the agent is recorded as pending.
        case verifyingForApproval(Handshake)
        case derivingKeys(Handshake)
        /// Recording the nonce, pinning a first-use key, consuming a token.
        case recordingHandshake(Handshake)
        case authenticated(Session)
        /// The machine asked for a close; waiting for the transport's
        /// `closed`. `session` is the session being closed, if any.
        case closing(CloseCode, session: Session?)
        case closed
    }

    // MARK: What the I/O layer does

    /// Steps 3 and 4 read the store; nothing is written.
    public struct StoreQuery: Sendable, Equatable {
        public var agentID: String
        public var nonce: [UInt8]
        public var publicKey: [UInt8]
        /// Look it up only when present; nil means "no valid token".
        public var enrollmentToken: EnrollmentToken?

        public init(agentID: String, nonce: [UInt8], publicKey: [UInt8], enrollmentToken: EnrollmentToken?) {
            self.agentID = agentID
            self.nonce = nonce
            self.publicKey = publicKey
            self.enrollmentToken = enrollmentToken
        }
    }

    /// The writes of a successful handshake, in one transaction, before
    /// `auth_ok` is sent.
    public struct HandshakeRecord: Sendable, Equatable {
        public var agentID: String
        public var publicKey: [UInt8]
        public var nonce: [UInt8]
        /// Keep the nonce at least until then: `timestamp + skew` (§3.1).
        public var keepNonceUntil: UnixTime
        /// First use: pin `publicKey` and make the agent active.
        public var pinsKey: Bool
        /// Consume one use of this token.
        public var consumesToken: EnrollmentToken?
        public var sessionID: String
        public var expiresAt: UnixTime

        public init(agentID: String, publicKey: [UInt8], nonce: [UInt8], keepNonceUntil: UnixTime, pinsKey: Bool,
                    consumesToken: EnrollmentToken?, sessionID: String, expiresAt: UnixTime) {
            self.agentID = agentID
            self.publicKey = publicKey
            self.nonce = nonce
            self.keepNonceUntil = keepNonceUntil
            self.pinsKey = pinsKey
            self.consumesToken = consumesToken
            self.sessionID = sessionID
            self.expiresAt = expiresAt
        }
    }

    /// A down message ready to go out on this connection.
    public struct DownMessage: Sendable, Equatable {
        public var id: String
        public var type: MessageType
        public var channel: String
        public var ref: String?
        public var plaintext: [UInt8]

        public init(id: String, type: MessageType, channel: String, ref: String? = nil, plaintext: [UInt8]) {
            self.id = id
            self.type = type
            self.channel = channel
            self.ref = ref
            self.plaintext = plaintext
        }
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Ask the `RateLimiter` (source IP and agent id); answer with
        /// `rateLimitChecked`.
        case checkRateLimit(source: String, agentID: String)
        /// Steps 3 and 4 against the store; answer with `storeAnswered`.
        case checkStore(StoreQuery)
        /// Step 5 (`GatewayHandshake.verifySignature`); answer with
        /// `signatureChecked`.
        case verifySignature(AuthRequest)
        /// §3.3 (`GatewayHandshake.accept` with a fresh session id and these
        /// terms); keep the result, answer with `keysDerived` or
        /// `keyDerivationFailed`.
        case deriveSessionKeys(AuthRequest, SessionTerms)
        /// Record the nonce and pin a first-use key (one transaction); answer
        /// with `handshakeRecorded`.
        case recordNonceAndPin(HandshakeRecord)
        /// Send `auth_ok` (`Transport.accept`) and close the agent's older
        /// session, if any, with 4009 (its machine: `replacedByNewerSession`).
        case completeHandshake(Session)
        /// Send `auth_error` and close.
        case refuse(code: AuthErrorCode, message: String, closeCode: CloseCode)
        /// Record the agent as pending approval (manual mode), then refuse.
        case recordPendingAndRefuse(agentID: String, publicKey: [UInt8], code: AuthErrorCode, message: String,
                                    closeCode: CloseCode)
        /// Close without `auth_error`.
        case close(CloseCode, reason: String)
        /// Store the up message durably, then report `ackStored`. A
        /// `response` also marks the down message its `ref` names delivered.
        case store(SecureMessage, answersDownMessage: String?)
        /// Acknowledge these stored ids (hand them to the `AckCoalescer`).
        case acknowledge(ids: [String])
        /// Send a heartbeat on `aegis.heartbeat` whose `ref` is this id (§5).
        case answerHeartbeat(ref: String)
        /// The agent acknowledged these down messages (see `DownDeliveryPolicy`).
        case markDelivered(ids: [String])
        /// Seal and send this down message now.
        case send(DownMessage)
        /// The session is over: mark it inactive in the store, if it is still
        /// the agent's current session (a replaced session must not mark its
        /// successor inactive).
        case endSession(agentID: String, sessionID: String)
    }

    public let settings: Settings
    public private(set) var state: State = .idle

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    /// The session while the connection is authenticated.
    public var authenticatedSession: Session? {
        if case .authenticated(let session) = state { return session }
        return nil
    }

    // MARK: Handshake events

    /// The transport upgraded the connection; its agent headers passed §2.
    public mutating func upgraded(agentID: String, publicKey: [UInt8], enrollmentToken: String?, peer: String,
                                  now: UnixTime) -> Action {
        guard case .idle = state else { return .none }
        let upgrade = Upgrade(agentID: agentID, publicKey: publicKey,
                              enrollmentToken: enrollmentToken.flatMap(EnrollmentToken.init), peer: peer,
                              upgradedAt: now)
        state = .upgraded(upgrade, heldRequest: nil)
        return .checkRateLimit(source: SourceAddress.rateLimitKey(peer: peer), agentID: agentID)
    }

    /// The rate limiter's verdict for this attempt.
    public mutating func rateLimitChecked(_ decision: RateLimiter.Decision, now: UnixTime) -> Action {
        guard case .upgraded(let upgrade, let held) = state else { return .none }
        if case .retryAfter(let seconds) = decision {
            return refuse(.rateLimited, "too many handshakes; retry after \(seconds) s")
        }
        state = .awaitingAuth(upgrade, deadline: upgrade.upgradedAt + settings.authTimeout)
        if let held { return authRequestReceived(held, now: now) }
        return .none
    }

    /// The first message: an auth request that passed steps 1 (syntax) and
    /// 2 (clock skew) in the core.
    public mutating func authRequestReceived(_ request: AuthRequest, now: UnixTime) -> Action {
        switch state {
        case .upgraded(let upgrade, nil):
            state = .upgraded(upgrade, heldRequest: request)
            return .none
        case .awaitingAuth(let upgrade, _):
            // The core compared these with the headers; a mismatch here
            // would be a transport bug, and is refused as step 1 would.
            guard request.agentID == upgrade.agentID, request.publicKey == upgrade.publicKey else {
                return refuse(.malformed, "agent_id and public_key must equal the upgrade headers")
            }
            let handshake = Handshake(upgrade: upgrade, request: request, receivedAt: now,
                                      completeBy: now + settings.handshakeCompletionTimeout)
            state = .checkingStore(handshake)
            return .checkStore(StoreQuery(agentID: request.agentID, nonce: request.nonce,
                                          publicKey: request.publicKey, enrollmentToken: upgrade.enrollmentToken))
        default:
            return .none
        }
    }

    /// Steps 3 and 4: whether the store has accepted this nonce for this
    /// agent before, and the enrollment policy's decision. The replay check
    /// comes first: a replayed request is refused as `replay` whatever the
    /// enrollment would say.
    public mutating func storeAnswered(replaySeen: Bool, decision: EnrollmentDecision) -> Action {
        guard case .checkingStore(var handshake) = state else { return .none }
        if replaySeen { return refuse(.replay, "this nonce was already used") }
        switch decision {
        case .refuse(let refusal):
            return refuse(refusal.code, refusal.message)
        case .requestApproval:
            state = .verifyingForApproval(handshake)
            return .verifySignature(handshake.request)
        case .admit(let firstUse, let consumesToken):
            handshake.firstUse = firstUse
            handshake.consumesToken = consumesToken && handshake.upgrade.enrollmentToken != nil
            state = .verifyingSignature(handshake)
            return .verifySignature(handshake.request)
        }
    }

    /// Step 5: whether the Ed25519 signature over auth_input verified.
    public mutating func signatureChecked(valid: Bool, now: UnixTime) -> Action {
        switch state {
        case .verifyingForApproval(let handshake):
            let refusal = EnrollmentRefusal.pendingApproval
            guard valid else {
                // Step 4 failed first, so the answer stays pending_approval;
                // only the recording depends on the signature.
                return refuse(refusal.code, refusal.message)
            }
            state = .closing(refusal.closeCode, session: nil)
            return .recordPendingAndRefuse(agentID: handshake.request.agentID, publicKey: handshake.request.publicKey,
                                           code: refusal.code, message: refusal.message,
                                           closeCode: refusal.closeCode)
        case .verifyingSignature(var handshake):
            guard valid else { return refuse(.invalidSignature, "the auth request's signature does not verify") }
            let timestamp = now.seconds
            let terms = SessionTerms(timestamp: timestamp, expiresAt: timestamp + settings.sessionLifetimeSeconds,
                                     heartbeatInterval: settings.heartbeatIntervalSeconds)
            handshake.terms = terms
            state = .derivingKeys(handshake)
            return .deriveSessionKeys(handshake.request, terms)
        default:
            return .none
        }
    }

    /// §3.3 succeeded; `sessionID` is the one put into `auth_ok`.
    public mutating func keysDerived(sessionID: String) -> Action {
        guard case .derivingKeys(var handshake) = state, let terms = handshake.terms else { return .none }
        handshake.sessionID = sessionID
        state = .recordingHandshake(handshake)
        let request = handshake.request
        return .recordNonceAndPin(HandshakeRecord(
            agentID: request.agentID, publicKey: request.publicKey, nonce: request.nonce,
            keepNonceUntil: UnixTime(seconds: request.timestamp) + settings.clockSkew,
            pinsKey: handshake.firstUse,
            consumesToken: handshake.consumesToken ? handshake.upgrade.enrollmentToken : nil,
            sessionID: sessionID, expiresAt: UnixTime(seconds: terms.expiresAt)))
    }

    /// §3.3 failed (a conversion failure or an all-zero DH output).
    public mutating func keyDerivationFailed(_ error: AegisError) -> Action {
        guard case .derivingKeys = state else { return .none }
        return refuse(AuthErrorCode(error), "the key exchange failed")
    }

    /// The outcome of `recordNonceAndPin`.
    public enum HandshakeRecordOutcome: Sendable, Equatable {
        case recorded
        /// Another handshake (maybe on another node) recorded the same nonce
        /// since step 3 read it.
        case nonceAlreadyRecorded
        /// Another handshake pinned a different key since step 4 read it.
        case keyPinnedConcurrently
        /// The agent was revoked since step 4 read it.
        case revokedConcurrently
        /// The token was used up, expired or revoked since step 4 read it.
        case tokenNoLongerValid
    }

    /// The store's answer to `recordNonceAndPin`. A lost race is refused
    /// with the code the losing step would have given.
    public mutating func handshakeRecorded(_ outcome: HandshakeRecordOutcome, now: UnixTime) -> Action {
        guard case .recordingHandshake(let handshake) = state, let terms = handshake.terms,
              let sessionID = handshake.sessionID else { return .none }
        switch outcome {
        case .nonceAlreadyRecorded: return refuse(.replay, "this nonce was already used")
        case .keyPinnedConcurrently: return refuse(EnrollmentRefusal.keyMismatch.code, EnrollmentRefusal.keyMismatch.message)
        case .revokedConcurrently: return refuse(EnrollmentRefusal.revoked.code, EnrollmentRefusal.revoked.message)
        case .tokenNoLongerValid: return refuse(EnrollmentRefusal.unknownAgent.code, EnrollmentRefusal.unknownAgent.message)
        case .recorded: break
        }
        let session = Session(agentID: handshake.request.agentID, publicKey: handshake.request.publicKey,
                              sessionID: sessionID, establishedAt: now,
                              expiresAt: UnixTime(seconds: terms.expiresAt),
                              heartbeatInterval: .seconds(Int64(clamping: terms.heartbeatInterval)),
                              lastHeardAt: now)
        state = .authenticated(session)
        return .completeHandshake(session)
    }

    /// The store cannot be reached. A handshake in progress closes with 1013
    /// (the agent retries later); an authenticated session carries on and
    /// simply gets no acks (§5) until the gateway's buffer limit.
    public mutating func storeUnavailable() -> Action {
        switch state {
        case .checkingStore, .verifyingSignature, .verifyingForApproval, .derivingKeys, .recordingHandshake:
            return close(.tryAgainLater, "the gateway cannot reach its store")
        default:
            return .none
        }
    }

    // MARK: Session events

    /// A secure message that passed every check of §4 in the core.
    public mutating func messageReceived(_ message: SecureMessage, now: UnixTime) -> Action {
        guard case .authenticated(var session) = state else { return .none }
        if now >= session.expiresAt { return close(.sessionExpired, "session expired") }
        session.lastHeardAt = max(session.lastHeardAt, now)
        state = .authenticated(session)
        switch message.type {
        case .heartbeat:
            // A repeated heartbeat is not answered again (§4).
            return message.isDuplicate ? .none : .answerHeartbeat(ref: message.id)
        case .ack:
            guard !message.isDuplicate else { return .none }
            guard let ids = try? AckPlaintext.ids(from: message.plaintext) else {
                return close(.badMessage, "bad ack")
            }
            return .markDelivered(ids: ids)
        case .request, .response, .event:
            // A duplicate is acked again, not stored again (§4, §5).
            if message.isDuplicate { return .acknowledge(ids: [message.id]) }
            return .store(message, answersDownMessage: message.type == .response ? message.ref : nil)
        }
    }

    /// A WebSocket ping or pong from the agent: it counts as being heard (§5).
    public mutating func peerActivity(now: UnixTime) -> Action {
        guard case .authenticated(var session) = state else { return .none }
        session.lastHeardAt = max(session.lastHeardAt, now)
        state = .authenticated(session)
        return .none
    }

    /// These up messages are committed: acknowledge them.
    public mutating func ackStored(ids: [String]) -> Action {
        guard case .authenticated = state, !ids.isEmpty else { return .none }
        return .acknowledge(ids: ids)
    }

    /// A down message for this agent is due (see `DownDeliveryPolicy`). Only
    /// an authenticated connection sends; otherwise it stays queued.
    public mutating func downMessageReady(_ message: DownMessage) -> Action {
        guard case .authenticated = state else { return .none }
        return .send(message)
    }

    /// Time passed: the auth timeout (4002), the handshake completion
    /// timeout (1013), the session's expiry (4010) and silence (4006).
    public mutating func tick(now: UnixTime) -> Action {
        switch state {
        case .awaitingAuth(_, let deadline) where now >= deadline:
            // §3.2: no auth_error for a missing auth request.
            return close(.authTimeout, "no auth request in time")
        case .checkingStore(let h) where now >= h.completeBy,
             .verifyingSignature(let h) where now >= h.completeBy,
             .verifyingForApproval(let h) where now >= h.completeBy,
             .derivingKeys(let h) where now >= h.completeBy,
             .recordingHandshake(let h) where now >= h.completeBy:
            return close(.tryAgainLater, "the handshake could not complete in time")
        case .authenticated(let session):
            if now >= session.expiresAt { return close(.sessionExpired, "session expired") }
            if now >= silenceDeadline(session) { return close(.heartbeatTimeout, "no heartbeat") }
            return .none
        default:
            return .none
        }
    }

    /// When `tick` could next act, for the I/O layer's timer; nil when no
    /// deadline applies.
    public var nextDeadline: UnixTime? {
        switch state {
        case .awaitingAuth(_, let deadline): deadline
        case .checkingStore(let h), .verifyingSignature(let h), .verifyingForApproval(let h), .derivingKeys(let h),
             .recordingHandshake(let h): h.completeBy
        case .authenticated(let session): min(session.expiresAt, silenceDeadline(session))
        default: nil
        }
    }

    /// A newer handshake of the same agent succeeded (§5: 4009).
    public mutating func replacedByNewerSession() -> Action {
        guard case .authenticated = state else { return .none }
        return close(.replaced, "replaced by a newer session")
    }

    /// An operator revoked the agent. During the session: close with 4003
    /// (§5); during the handshake: refuse with `revoked`.
    public mutating func revoked() -> Action {
        switch state {
        case .authenticated:
            return close(.agentRefused, "agent revoked")
        case .upgraded, .awaitingAuth, .checkingStore, .verifyingSignature, .verifyingForApproval, .derivingKeys,
             .recordingHandshake:
            return refuse(EnrollmentRefusal.revoked.code, EnrollmentRefusal.revoked.message)
        case .idle, .closing, .closed:
            return .none
        }
    }

    /// The gateway's buffer of unstored up messages is full (§5: 1013).
    public mutating func bufferLimitExceeded() -> Action {
        guard case .authenticated = state else { return .none }
        return close(.tryAgainLater, "the gateway cannot store messages now")
    }

    /// The gateway is shutting down (1001).
    public mutating func shuttingDown() -> Action {
        switch state {
        case .idle, .closing, .closed: return .none
        default: return close(.goingAway, "gateway shutting down")
        }
    }

    /// The transport closed the connection (either side, any code). A
    /// session that was established ends here, whoever closed it.
    public mutating func closed() -> Action {
        let ending: Session?
        switch state {
        case .authenticated(let session): ending = session
        case .closing(_, let session): ending = session
        default: ending = nil
        }
        state = .closed
        guard let ending else { return .none }
        return .endSession(agentID: ending.agentID, sessionID: ending.sessionID)
    }

    // MARK: Helpers

    private func silenceDeadline(_ session: Session) -> UnixTime {
        session.lastHeardAt + session.heartbeatInterval * settings.silentIntervalsBeforeClose
    }

    /// Ends a handshake: `auth_error` and its close code.
    private mutating func refuse(_ code: AuthErrorCode, _ message: String) -> Action {
        state = .closing(code.closeCode, session: nil)
        return .refuse(code: code, message: message, closeCode: code.closeCode)
    }

    /// Closes without `auth_error`, remembering the session for `closed`.
    private mutating func close(_ code: CloseCode, _ reason: String) -> Action {
        var session: Session?
        if case .authenticated(let s) = state { session = s }
        state = .closing(code, session: session)
        return .close(code, reason: reason)
    }
}
