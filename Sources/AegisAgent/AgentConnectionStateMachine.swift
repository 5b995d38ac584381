import AegisProtocol

/// A point in time as the machine sees it: a monotonic reading for timers
/// (any fixed origin) and the wall clock for message timestamps.
public struct AgentInstant: Sendable, Equatable {
    public var monotonic: Duration
    public var unixSeconds: UInt64

    public init(monotonic: Duration, unixSeconds: UInt64) {
        self.monotonic = monotonic
        self.unixSeconds = unixSeconds
    }
}

/// One connection attempt: its number (events of older attempts are
/// ignored) and the index of the URL it goes to.
public struct ConnectionAttempt: Sendable, Hashable {
    public var number: UInt64
    public var endpoint: Int
}

/// A down message that passed §4's checks in the core.
public struct ReceivedMessage: Sendable, Equatable {
    public var id: String
    public var type: MessageType
    public var channel: String
    public var ref: String?
    public var payload: [UInt8]
    public var timestamp: UInt64
    /// The core saw this id earlier in the same session.
    public var isDuplicate: Bool

    public init(id: String, type: MessageType, channel: String, ref: String? = nil, payload: [UInt8],
                timestamp: UInt64, isDuplicate: Bool = false) {
        self.id = id
        self.type = type
        self.channel = channel
        self.ref = ref
        self.payload = payload
        self.timestamp = timestamp
        self.isDuplicate = isDuplicate
    }

    public init(_ m: SecureMessage) {
        self.init(id: m.id, type: m.type, channel: m.channel, ref: m.ref, payload: m.plaintext,
                  timestamp: m.timestamp, isDuplicate: m.isDuplicate)
    }
}

/// What a verified auth_ok established.
public struct SessionParameters: Sendable, Equatable {
    public var sessionID: String
    public var serverKey: [UInt8]
    public var heartbeatInterval: UInt64
    public var expiresAt: UInt64

    public init(sessionID: String, serverKey: [UInt8], heartbeatInterval: UInt64, expiresAt: UInt64) {
        self.sessionID = sessionID
        self.serverKey = serverKey
        self.heartbeatInterval = heartbeatInterval
        self.expiresAt = expiresAt
    }
}

/// Why a connection attempt ended before a session existed.
public enum ConnectFailure: Sendable, Equatable {
    case unreachable(reason: String)
    case tlsVerification
    /// An HTTP answer other than 101, with the §2 error body's code.
    case httpRefused(status: Int, code: String, message: String)
    /// Closed after the upgrade, before auth_ok.
    case closedBeforeAuth(code: UInt16)
}

/// Why the gateway's answer to the auth request was not a usable auth_ok.
public enum AuthFailure: Sendable, Equatable {
    /// `auth_error` (§3.2).
    case refused(code: String, message: String)
    /// auth_ok failed its checks (syntax, expiry, signature).
    case invalid(reason: String)
}

/// What the agent reports about its connection (the `events` stream, logs).
public enum AgentEvent: Sendable, Equatable {
    case connecting(url: String)
    case connected(url: String, sessionID: String, serverKey: String, resending: Int)
    /// A connection attempt failed or a session ended; the next attempt
    /// follows after `retryIn`.
    case disconnected(url: String, error: AgentError, retryIn: Duration)
    /// Trust on first use: this server key (b64) is pinned from now on.
    case serverKeyPinned(String)
    /// These up messages are durably stored by the gateway.
    case acknowledged([String])
    /// A down message processed before came again: acked, not delivered.
    case duplicateDropped(id: String)
    /// A response to no pending request (e.g. after its timeout): acked, dropped.
    case unmatchedResponse(id: String, ref: String?)
    case stopped(AgentError?)
}

/// The agent's protocol logic without I/O: every event of the connection
/// and of the application goes in, and what to do comes out as actions,
/// which the runtime (`AgentRuntime`) carries out against the C client and
/// the core. Time and randomness are inputs, so every rule is testable
/// without sockets: reconnect with full-jitter backoff over a list of URLs,
/// resend of unacked up messages with their ids, the window of processed
/// down ids, heartbeats and silence, request/response correlation, acks.
public struct AgentConnectionStateMachine: Sendable {
    public struct Settings: Sendable {
        /// The URLs, as shown in events; attempts rotate over them.
        public var endpoints: [String]
        public var backoff = BackoffPolicy()
        public var jitter: any JitterSource = SystemJitter()
        public var maxAttemptsWithoutSession: Int?
        public var stopOnRefusal: Set<String> = []
        public var stopOnTLSVerificationFailure = true
        /// nil: trust on first use.
        public var pinnedServerKey: [UInt8]?
        public var processedIDLifetime: Duration = .seconds(3600)
        public var maxProcessedIDs = 100_000
        public var maxInFlight = 1024
        public var stableSessionDuration: Duration = .seconds(30)
        public var authTimeout: Duration = .seconds(15)
        /// §5: silence for this many heartbeat intervals closes with 4006.
        public var silentIntervalsBeforeClose: Int64 = 3

        public init(endpoints: [String]) { self.endpoints = endpoints }

        public init(_ c: AgentConfiguration, pinnedServerKey: [UInt8]?) {
            endpoints = c.urls.map(\.description)
            backoff = c.backoff
            jitter = c.jitter
            maxAttemptsWithoutSession = c.maxAttemptsWithoutSession
            stopOnRefusal = c.stopOnRefusal
            stopOnTLSVerificationFailure = c.stopOnTLSVerificationFailure
            self.pinnedServerKey = pinnedServerKey
            processedIDLifetime = c.processedIDLifetime
            maxProcessedIDs = c.maxProcessedIDs
            maxInFlight = c.maxInFlight
            stableSessionDuration = c.stableSessionDuration
            authTimeout = c.authTimeout
        }
    }

    public enum Action: Sendable, Equatable {
        /// Open a WebSocket to the attempt's URL.
        case connect(ConnectionAttempt)
        /// Build a fresh auth request (new nonce and ephemeral key) and send it.
        case sendAuthRequest(ConnectionAttempt, timestamp: UInt64)
        /// Seal this message with the session's keys and send it.
        case send(ConnectionAttempt, MessageHeader, plaintext: [UInt8])
        case close(ConnectionAttempt, code: UInt16, reason: String)
        /// A request or an event for the application.
        case deliver(ReceivedMessage)
        case deliverResponse(requestID: String, ReceivedMessage)
        case failRequest(requestID: String, AgentError)
        /// These up messages left the outbox (acked by the gateway).
        case acknowledged([String])
        /// Trust on first use: remember this server key.
        case pinServerKey([UInt8])
        case report(AgentEvent)
        /// Terminal: no more actions follow except for late application calls.
        case stopped(AgentError?)
    }

    struct Established: Sendable, Equatable {
        var parameters: SessionParameters
        var heartbeatInterval: Duration
        var startedAt: Duration
        var lastHeardAt: Duration
        var nextHeartbeatAt: Duration
    }

    enum Phase: Sendable, Equatable {
        case idle
        case connecting(ConnectionAttempt)
        case authenticating(ConnectionAttempt, deadline: Duration)
        case established(ConnectionAttempt, Established)
        case waiting(until: Duration, endpoint: Int)
        case stopped(AgentError?)
    }

    public let settings: Settings
    private var jitter: any JitterSource
    private(set) var phase: Phase = .idle
    private var attempts: UInt64 = 0
    /// Attempts since the last session (or the start) that got no session.
    private var attemptsWithoutSession = 0
    /// n of the backoff for the next reconnect: retries since the last
    /// stable session (0: the first retry after it).
    private(set) var retries = 0
    private(set) var pinnedServerKey: [UInt8]?
    private var outbox = Outbox()
    private var processed: ProcessedIDWindow
    /// Requests waiting for their response, with their deadline.
    private var pendingRequests: [String: Duration] = [:]
    /// Ids to acknowledge at the next flush (coalesced, §5).
    private var pendingAcks: [String] = []

    /// A request deadline that never comes.
    static let forever = Duration.seconds(Int64(1) << 40)

    public init(settings: Settings) {
        self.settings = settings
        jitter = settings.jitter
        pinnedServerKey = settings.pinnedServerKey
        processed = ProcessedIDWindow(lifetime: settings.processedIDLifetime, capacity: settings.maxProcessedIDs)
    }

    // MARK: What the runtime and the tests may look at

    public var isStopped: Bool { if case .stopped = phase { true } else { false } }
    public var isEstablished: Bool { if case .established = phase { true } else { false } }
    public var currentAttempt: ConnectionAttempt? {
        switch phase {
        case .connecting(let a), .authenticating(let a, _), .established(let a, _): a
        default: nil
        }
    }
    public var sessionID: String? {
        if case .established(_, let s) = phase { s.parameters.sessionID } else { nil }
    }
    public var unacknowledgedIDs: [String] { outbox.pendingIDs }
    public func isUnacknowledged(_ id: String) -> Bool { outbox.contains(id) }
    public var inFlight: Int { outbox.inFlight }
    public var processedIDCount: Int { processed.count }
    public var processedIDEvictions: UInt64 { processed.evictions }
    public var pendingRequestCount: Int { pendingRequests.count }
    public var serverKey: [UInt8]? { pinnedServerKey }
    /// When the next reconnect is due, while waiting.
    public var reconnectAt: Duration? { if case .waiting(let t, _) = phase { t } else { nil } }

    // MARK: Application events

    public mutating func start(now: AgentInstant) -> [Action] {
        guard case .idle = phase else { return [] }
        return connect(endpoint: 0, now: now)
    }

    /// Queues an up message; it is sent now if a session is up and the
    /// window allows, else on a later session. `responseDeadline`: a
    /// request waits for its response until then.
    public mutating func enqueue(_ message: OutgoingMessage, responseDeadline: Duration? = nil,
                                 now: AgentInstant) -> [Action] {
        if case .stopped = phase {
            return message.type == .request ? [.failRequest(requestID: message.id, .stopped)] : []
        }
        guard outbox.append(message) else { return [] }
        if message.type == .request { pendingRequests[message.id] = responseDeadline ?? Self.forever }
        return pump(now: now)
    }

    /// The application stopped waiting for this request's response.
    public mutating func cancelRequest(_ id: String) -> [Action] {
        pendingRequests.removeValue(forKey: id) == nil ? [] : [.failRequest(requestID: id, .cancelled)]
    }

    public mutating func stop(now: AgentInstant) -> [Action] {
        if case .stopped = phase { return [] }
        var actions: [Action] = []
        if let a = currentAttempt { actions.append(.close(a, code: CloseCodes.normal, reason: "agent stopping")) }
        return actions + halt(nil)
    }

    // MARK: Connection events

    /// The WebSocket upgrade succeeded (101).
    public mutating func upgraded(_ a: ConnectionAttempt, now: AgentInstant) -> [Action] {
        guard case .connecting(a) = phase else { return [] }
        phase = .authenticating(a, deadline: now.monotonic + settings.authTimeout)
        return [.sendAuthRequest(a, timestamp: now.unixSeconds)]
    }

    public mutating func connectFailed(_ a: ConnectionAttempt, _ failure: ConnectFailure, now: AgentInstant) -> [Action] {
        switch phase {
        case .connecting(a), .authenticating(a, _): break
        default: return []
        }
        let url = endpointName(a.endpoint)
        switch failure {
        case .unreachable(let reason):
            return attemptFailed(a, .unreachable(url: url, reason: reason), now: now)
        case .tlsVerification:
            let error = AgentError.tlsVerificationFailed(url: url)
            return settings.stopOnTLSVerificationFailure ? halt(error) : attemptFailed(a, error, now: now)
        case .httpRefused(let status, let code, let message):
            let error = AgentError.refused(code: code, message: message.isEmpty ? "HTTP \(status)" : message)
            switch status {
            // The request itself is wrong (path, headers, agent id, version):
            // the same request will be refused again.
            case 400, 404, 405, 426: return halt(error)
            default:
                if settings.stopOnRefusal.contains(code) { return halt(error) }
                return attemptFailed(a, error, now: now)
            }
        case .closedBeforeAuth(let code):
            return attemptFailed(a, .closed(code: code), now: now)
        }
    }

    /// auth_ok passed the core's checks (§3.2); the server key is checked here.
    public mutating func authSucceeded(_ a: ConnectionAttempt, _ p: SessionParameters, now: AgentInstant) -> [Action] {
        guard case .authenticating(a, _) = phase else { return [] }
        var actions: [Action] = []
        if let pinned = pinnedServerKey {
            guard pinned == p.serverKey else {
                let error = AgentError.serverKeyMismatch(expected: Base64.encode(pinned), received: Base64.encode(p.serverKey))
                return [.close(a, code: CloseCodes.handshakeFailed, reason: "server key mismatch")] + halt(error)
            }
        } else {
            pinnedServerKey = p.serverKey
            actions += [.pinServerKey(p.serverKey), .report(.serverKeyPinned(Base64.encode(p.serverKey)))]
        }
        let interval = Duration.seconds(Int64(clamping: max(1, p.heartbeatInterval)))
        phase = .established(a, Established(parameters: p, heartbeatInterval: interval, startedAt: now.monotonic,
                                            lastHeardAt: now.monotonic, nextHeartbeatAt: now.monotonic + interval))
        attemptsWithoutSession = 0
        outbox.sessionEnded()  // everything unacked is sent afresh in this session
        let resending = outbox.count
        actions.append(.report(.connected(url: endpointName(a.endpoint), sessionID: p.sessionID,
                                          serverKey: Base64.encode(p.serverKey), resending: resending)))
        return actions + pump(now: now)
    }

    public mutating func authFailed(_ a: ConnectionAttempt, _ failure: AuthFailure, now: AgentInstant) -> [Action] {
        guard case .authenticating(a, _) = phase else { return [] }
        switch failure {
        case .refused(let code, let message):
            // The gateway closes after auth_error; closing here too frees the
            // connection should it not. auth_error is unauthenticated (§3.2):
            // it is reported and retried, never acted on destructively.
            let error = AgentError.refused(code: code, message: message)
            let close = Action.close(a, code: CloseCodes.normal, reason: "refused")
            if settings.stopOnRefusal.contains(code) { return [close] + halt(error) }
            return [close] + attemptFailed(a, error, now: now)
        case .invalid(let reason):
            return [.close(a, code: CloseCodes.handshakeFailed, reason: "bad auth_ok")]
                + attemptFailed(a, .protocolViolation("auth_ok: \(reason)"), now: now)
        }
    }

    /// A down message that the core opened (syntax, clock, AEAD, signature).
    public mutating func messageReceived(_ a: ConnectionAttempt, _ m: ReceivedMessage, now: AgentInstant) -> [Action] {
        guard case .established(a, var s) = phase else { return [] }
        s.lastHeardAt = max(s.lastHeardAt, now.monotonic)
        phase = .established(a, s)
        switch m.type {
        case .heartbeat:
            // The gateway answers ours (ref set). One it starts itself is
            // answered once, like the gateway answers the agent's.
            guard m.ref == nil, !m.isDuplicate else { return [] }
            return [.send(a, MessageHeader(id: MessageIDs.make(), type: .heartbeat, channel: "aegis.heartbeat",
                                           ref: m.id, timestamp: now.unixSeconds), plaintext: [])]
        case .ack:
            guard !m.isDuplicate else { return [] }
            guard let ids = try? AckPlaintext.ids(from: m.payload) else {
                return closeSession(a, code: CloseCodes.badMessage, reason: "bad ack",
                                    error: .protocolViolation("ack plaintext"), now: now)
            }
            var acked: [String] = []
            for id in ids where outbox.acknowledge(id) != nil { acked.append(id) }
            guard !acked.isEmpty else { return [] }
            return [.acknowledged(acked), .report(.acknowledged(acked))] + pump(now: now)
        case .request, .response, .event:
            queueAck(m.id)
            // Duplicates (this session's, per the core, or an earlier
            // session's, per the window) are acked again, never processed again.
            guard !m.isDuplicate, processed.insert(m.id, now: now.monotonic) else {
                return flushIfFull(a, now: now) + [.report(.duplicateDropped(id: m.id))]
            }
            var actions = flushIfFull(a, now: now)
            if m.type == .response {
                if let ref = m.ref, pendingRequests.removeValue(forKey: ref) != nil {
                    actions.append(.deliverResponse(requestID: ref, m))
                } else {
                    actions.append(.report(.unmatchedResponse(id: m.id, ref: m.ref)))
                }
            } else {
                actions.append(.deliver(m))
            }
            return actions
        }
    }

    /// A down message failed the core's checks: §4 closes with 4004.
    public mutating func messageRejected(_ a: ConnectionAttempt, reason: String, now: AgentInstant) -> [Action] {
        guard case .established = phase, currentAttempt == a else { return [] }
        return closeSession(a, code: CloseCodes.badMessage, reason: reason,
                            error: .protocolViolation("message failed \(reason)"), now: now)
    }

    /// A WebSocket pong (or other sign of life) from the gateway.
    public mutating func peerActivity(_ a: ConnectionAttempt, now: AgentInstant) -> [Action] {
        guard case .established(a, var s) = phase else { return [] }
        s.lastHeardAt = max(s.lastHeardAt, now.monotonic)
        phase = .established(a, s)
        return []
    }

    /// The connection ended with this close code (1006 when it just broke).
    public mutating func closed(_ a: ConnectionAttempt, code: UInt16, now: AgentInstant) -> [Action] {
        switch phase {
        case .connecting(a), .authenticating(a, _):
            return connectFailed(a, .closedBeforeAuth(code: code), now: now)
        case .established(a, _):
            return sessionEnded(a, error: .closed(code: code), now: now)
        default:
            return []
        }
    }

    /// Sends the acks gathered since the last flush: the runtime calls it
    /// after each batch of network events, so one ack names every message
    /// of the batch (§5 allows holding acks up to 20 ms).
    public mutating func flush(now: AgentInstant) -> [Action] {
        guard case .established(let a, _) = phase, !pendingAcks.isEmpty else { return [] }
        return ackFrames(a, now: now)
    }

    /// Time passed: reconnect when due, the auth timeout, heartbeats,
    /// silence (4006), request deadlines, the processed-id window.
    public mutating func tick(now: AgentInstant) -> [Action] {
        var actions: [Action] = []
        for (id, deadline) in pendingRequests where deadline <= now.monotonic {
            pendingRequests[id] = nil
            actions.append(.failRequest(requestID: id, .timeout))
        }
        processed.expire(now: now.monotonic)
        switch phase {
        case .waiting(let until, let endpoint) where now.monotonic >= until:
            actions += connect(endpoint: endpoint, now: now)
        case .authenticating(let a, let deadline) where now.monotonic >= deadline:
            actions.append(.close(a, code: CloseCodes.normal, reason: "no auth answer"))
            actions += attemptFailed(a, .timeout, now: now)
        case .established(let a, var s):
            if now.monotonic >= s.lastHeardAt + s.heartbeatInterval * settings.silentIntervalsBeforeClose {
                actions += closeSession(a, code: CloseCodes.heartbeatTimeout, reason: "heartbeat timeout",
                                        error: .heartbeatTimeout, now: now)
            } else if now.monotonic >= s.nextHeartbeatAt {
                s.nextHeartbeatAt = now.monotonic + s.heartbeatInterval
                phase = .established(a, s)
                actions.append(.send(a, MessageHeader(id: MessageIDs.make(), type: .heartbeat,
                                                      channel: "aegis.heartbeat", timestamp: now.unixSeconds),
                                     plaintext: []))
            }
        default:
            break
        }
        return actions
    }

    // MARK: Internals

    private func endpointName(_ i: Int) -> String {
        settings.endpoints.indices.contains(i) ? settings.endpoints[i] : "endpoint \(i)"
    }

    private mutating func connect(endpoint: Int, now: AgentInstant) -> [Action] {
        attempts += 1
        attemptsWithoutSession += 1
        let a = ConnectionAttempt(number: attempts, endpoint: endpoint)
        phase = .connecting(a)
        return [.report(.connecting(url: endpointName(endpoint))), .connect(a)]
    }

    /// An attempt got no session: back off further and try the next URL,
    /// unless the attempts allowed without a session are used up.
    private mutating func attemptFailed(_ a: ConnectionAttempt, _ error: AgentError, now: AgentInstant) -> [Action] {
        if let max = settings.maxAttemptsWithoutSession, attemptsWithoutSession >= max { return halt(error) }
        let next = settings.endpoints.isEmpty ? 0 : (a.endpoint + 1) % settings.endpoints.count
        return scheduleReconnect(endpoint: next, url: endpointName(a.endpoint), error: error, now: now)
    }

    /// An established session is over: unacked messages wait for the next
    /// one; the backoff restarts only if this session lived long enough,
    /// so a session that keeps being dropped at once (4009 between two
    /// copies of one agent, a gateway that crashes) still backs off.
    private mutating func sessionEnded(_ a: ConnectionAttempt, error: AgentError, now: AgentInstant) -> [Action] {
        guard case .established(_, let s) = phase else { return [] }
        outbox.sessionEnded()
        pendingAcks.removeAll()
        var endpoint = a.endpoint
        if case .closed(let code) = error, code == CloseCodes.sessionExpired {
            retries = 0  // a normal end: the session lived its lifetime
        } else if now.monotonic - s.startedAt >= settings.stableSessionDuration {
            retries = 0
        }
        if case .closed(let code) = error, code == CloseCodes.goingAway, !settings.endpoints.isEmpty {
            endpoint = (a.endpoint + 1) % settings.endpoints.count  // this node is shutting down
        }
        return scheduleReconnect(endpoint: endpoint, url: endpointName(a.endpoint), error: error, now: now)
    }

    private mutating func closeSession(_ a: ConnectionAttempt, code: UInt16, reason: String, error: AgentError,
                                       now: AgentInstant) -> [Action] {
        [.close(a, code: code, reason: reason)] + sessionEnded(a, error: error, now: now)
    }

    private mutating func scheduleReconnect(endpoint: Int, url: String, error: AgentError, now: AgentInstant) -> [Action] {
        let delay = settings.backoff.delay(retry: retries, unit: jitter.nextUnit())
        retries += 1
        phase = .waiting(until: now.monotonic + delay, endpoint: endpoint)
        return [.report(.disconnected(url: url, error: error, retryIn: delay))]
    }

    private mutating func halt(_ error: AgentError?) -> [Action] {
        phase = .stopped(error)
        pendingAcks.removeAll()
        pendingRequests.removeAll()
        return [.report(.stopped(error)), .stopped(error)]
    }

    /// Sends what the window allows.
    private mutating func pump(now: AgentInstant) -> [Action] {
        guard case .established(let a, _) = phase else { return [] }
        return outbox.takeSendable(limit: settings.maxInFlight).map { m in
            .send(a, MessageHeader(id: m.id, type: m.type, channel: m.channel, ref: m.ref, timestamp: now.unixSeconds),
                  plaintext: m.payload)
        }
    }

    private mutating func queueAck(_ id: String) { pendingAcks.append(id) }

    private mutating func flushIfFull(_ a: ConnectionAttempt, now: AgentInstant) -> [Action] {
        pendingAcks.count >= AckPlaintext.maxIDs ? ackFrames(a, now: now) : []
    }

    private mutating func ackFrames(_ a: ConnectionAttempt, now: AgentInstant) -> [Action] {
        var actions: [Action] = []
        var start = 0
        while start < pendingAcks.count {
            let ids = Array(pendingAcks[start..<min(start + AckPlaintext.maxIDs, pendingAcks.count)])
            start += ids.count
            guard let plaintext = try? AckPlaintext.build(ids: ids) else { continue }
            actions.append(.send(a, MessageHeader(id: MessageIDs.make(), type: .ack, channel: "aegis.ack", ref: ids[0],
                                                  timestamp: now.unixSeconds), plaintext: plaintext))
        }
        pendingAcks.removeAll(keepingCapacity: true)
        return actions
    }
}
