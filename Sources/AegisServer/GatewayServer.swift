import AegisGateway
import AegisProtocol
import AegisStore
import AegisTransport
import Foundation
import Logging

/// The running gateway: it carries out what the sans-IO parts decide
/// (`ConnectionStateMachine`, `RateLimiter`, `EnrollmentPolicy`,
/// `AckCoalescer`, `DownDeliveryPolicy`) against the transport and the
/// store. It owns no protocol rule itself: every decision comes back from a
/// state machine as an action, and every action's result goes back in as
/// an event.
///
/// Events are handled synchronously on the actor; whatever needs the store
/// runs in a task that re-enters the actor with the answer, so one slow
/// query never holds up other connections. Up messages are stored by group
/// commit: one transaction at a time, holding everything that arrived
/// while the previous one ran (so a lone message is stored at once and
/// batches grow with the load, with no timer), and acked only after that
/// transaction committed.
public actor GatewayServer {
    public struct Limits: Sendable {
        /// Up messages per transaction at most.
        public var batchMax = 2048
        /// Unstored up messages per connection before 1013 (§5).
        public var unstoredPerConnection = 4096
        /// Down messages queued or sent, not yet delivered, per agent: an
        /// operator's send past this is refused (the admin API's 429).
        public var maxOpenDownPerAgent = 10_000
        public init() {}
    }

    let configuration: GatewayConfiguration
    let transport: Transport
    let store: Store
    private let identity: Identity
    let limits: Limits
    private let settings: ConnectionStateMachine.Settings
    let delivery: DownDeliveryPolicy
    /// Lines carry the connection, agent and session ids; never a key, a
    /// token or a payload.
    let logger: Logger

    var machines: [ConnectionID: ConnectionStateMachine] = [:]
    /// Sessions derived but not yet handed to the transport.
    private var derived: [ConnectionID: GatewayHandshake.Accepted] = [:]
    private var sessionTokens: [ConnectionID: [UInt8]] = [:]
    /// The live, authenticated connection of each agent.
    var sessionOf: [String: (ConnectionID, ConnectionStateMachine.Session)] = [:]
    private var limiter: RateLimiter
    private var coalescer: AckCoalescer<ConnectionID>
    private var batch: [(ConnectionID, SecureMessage)] = []
    /// A transaction of up messages is in flight; new ones wait in `batch`.
    private var storing = false
    private var unstored: [ConnectionID: Int] = [:]
    /// Connections heard from since the last second's last_seen update
    /// (a set of ids per message is cheaper than agent id + time).
    private var heardFrom: Set<ConnectionID> = []
    /// Down messages sent and not yet acked, per connection: msg id → row.
    var awaitingAck: [ConnectionID: Set<String>] = [:]
    private var secondsUntilPrune = 60
    /// Agents whose due down messages are being read and sent: one pass at
    /// a time per agent, so a message is not sent twice by two passes.
    var delivering: Set<String> = []
    /// When each connection upgraded (the handshake-duration metric).
    private var upgradedAt: [ConnectionID: ContinuousClock.Instant] = [:]
    /// Each session's id as a UUID (the store's type), parsed once.
    private var sessionUUIDs: [ConnectionID: UUID] = [:]
    /// Operators waiting for an agent's response (`send` with a wait), by
    /// "agent\0request id".
    var responseSlots: [String: ResponseSlot] = [:]
    /// Agents with a message queued while their delivery pass ran: the pass
    /// goes again.
    var deliverAgain: Set<String> = []
    /// Operators' sends that want to know whether their message went out at
    /// once ("agent\0id" → sent yet); only these are tracked.
    var watchedSends: [String: Bool] = [:]
    /// Callers of `deliverDue` waiting for the pass that covers them.
    private var deliveryWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]
    private var secondsUntilQueueSample = 0
    var secondsUntilLease = 0
    private var lastUpAnnounced = ContinuousClock.now - .seconds(1)
    private var upAnnouncementScheduled = false
    let metrics = GatewayMetrics()
    /// Rung after every stored up batch: the admin API's streams wait on it.
    public nonisolated let upMessagesStored = MessageSignal()

    public init(configuration: GatewayConfiguration, transport: Transport, store: Store, identity: Identity,
                limits: Limits = Limits(), logger: Logger = Logger(label: "aegis.gateway")) {
        self.logger = logger
        self.configuration = configuration
        self.transport = transport
        self.store = store
        self.identity = identity
        self.limits = limits
        self.settings = ConnectionStateMachine.Settings(configuration)
        self.delivery = DownDeliveryPolicy(maxRetries: configuration.downRetries,
                                           ackTimeout: configuration.ackTimeout,
                                           backoffCap: configuration.downBackoffCap)
        self.limiter = RateLimiter(perSource: configuration.sourceRateLimit, perAgent: configuration.agentRateLimit,
                                   maxTrackedKeys: configuration.rateLimitMaxTrackedKeys)
        self.coalescer = AckCoalescer(delay: configuration.ackCoalescingDelay)
    }

    /// Handles the transport's events until its stream ends, with the
    /// timers (acks, deadlines, last-seen batches, down delivery) beside.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.timers() }
            group.addTask { await self.listenToOtherNodes() }
            for await burst in transport.events {
                for event in burst { handle(event) }
                flushBatch()
            }
            group.cancelAll()
        }
    }

    // MARK: Events from the transport

    private func handle(_ event: TransportEvent) {
        let now = UnixTime.now
        switch event {
        case .upgraded(let conn, let agentID, let publicKey, let token, let peer):
            logger.debug("upgraded", metadata: ["conn": "\(conn)", "agent_id": "\(agentID)", "peer": "\(peer)"])
            upgradedAt[conn] = .now
            var m = ConnectionStateMachine(settings: settings)
            let action = m.upgraded(agentID: agentID, publicKey: publicKey, enrollmentToken: token, peer: peer, now: now)
            machines[conn] = m
            perform(action, conn)
        case .authRequest(let conn, let request):
            update(conn) { $0.authRequestReceived(request, now: now) }
        case .message(let conn, let message):
            heardFrom.insert(conn)
            metrics.message(up: true, message.type)
            update(conn) { $0.messageReceived(message, now: now) }
        case .closed(let conn, let code, let byPeer):
            if let session = machines[conn]?.session {
                logger.info("session closed", metadata: [
                    "conn": "\(conn)", "agent_id": "\(session.agentID)", "session_id": "\(session.sessionID)",
                    "close_code": "\(code)", "by": "\(byPeer ? "agent" : "gateway")"])
            }
            update(conn) { $0.closed() }
            machines[conn] = nil
            derived[conn] = nil
            sessionTokens[conn] = nil
            unstored[conn] = nil
            awaitingAck[conn] = nil
            upgradedAt[conn] = nil
            sessionUUIDs[conn] = nil
            coalescer.connectionClosed(conn)
        }
    }

    /// Applies one event to a connection's machine and performs its action.
    func update(_ conn: ConnectionID, _ event: (inout ConnectionStateMachine) -> ConnectionStateMachine.Action) {
        // Mutated in place through the dictionary (optional chaining), not
        // copied out and back: a copy per event showed in profiles.
        guard let action = machines[conn]?.applying(event) else { return }
        perform(action, conn)
    }

    // MARK: Actions

    func perform(_ action: ConnectionStateMachine.Action, _ conn: ConnectionID) {
        switch action {
        case .none:
            return
        case .checkRateLimit(let source, let agentID):
            let decision = limiter.admit(source: source, agentID: agentID, now: .now)
            update(conn) { $0.rateLimitChecked(decision, now: .now) }
        case .checkStore(let query):
            Task { await self.checkStore(conn, query) }
        case .verifySignature(let request):
            let valid = (try? GatewayHandshake.verifySignature(request)) != nil
            update(conn) { $0.signatureChecked(valid: valid, now: .now) }
        case .deriveSessionKeys(let request, let terms):
            deriveKeys(conn, request, terms)
        case .recordNonceAndPin(let record):
            Task { await self.recordHandshake(conn, record) }
        case .completeHandshake(let session):
            completeHandshake(conn, session)
        case .refuse(let code, let message, let closeCode):
            metrics.handshake(code.rawValue)
            logger.info("handshake refused", metadata: [
                "conn": "\(conn)", "code": "\(code.rawValue)", "close_code": "\(closeCode.rawValue)"])
            _ = transport.refuse(conn, code: code.rawValue, message: message, closeCode: closeCode.rawValue)
        case .recordPendingAndRefuse(let agentID, let publicKey, let code, let message, let closeCode):
            metrics.handshake(code.rawValue)
            Task {
                _ = try? await self.store.pinAgent(id: agentID, publicKey: publicKey, enrollment: .pending)
                _ = self.transport.refuse(conn, code: code.rawValue, message: message, closeCode: closeCode.rawValue)
            }
        case .close(let code, let reason):
            _ = transport.close(conn, code: code.rawValue, reason: reason)
        case .store(let message, let answers):
            enqueueForStorage(conn, message)
            if let answers { markDelivered(conn, [answers]) }
        case .acknowledge(let ids):
            acknowledge(conn, ids)
        case .answerHeartbeat(let ref):
            let header = MessageHeader(id: UUID().uuidString.lowercased(), type: .heartbeat, channel: "aegis.heartbeat",
                                       ref: ref, timestamp: UInt64(Date().timeIntervalSince1970))
            _ = transport.send(conn, header, plaintext: [])
            metrics.message(up: false, .heartbeat)
        case .markDelivered(let ids):
            markDelivered(conn, ids)
        case .send(let down):
            let header = MessageHeader(id: down.id, type: down.type, channel: down.channel, ref: down.ref,
                                       timestamp: UInt64(Date().timeIntervalSince1970))
            _ = transport.send(conn, header, plaintext: down.plaintext)
            metrics.message(up: false, down.type)
        case .endSession(let agentID, let sessionID):
            if sessionOf[agentID]?.0 == conn { sessionOf[agentID] = nil }
            metrics.sessions.record(sessionOf.count)
            if let uuid = UUID(uuidString: sessionID) {
                Task { _ = try? await self.store.sessionEnded(agentID: agentID, sessionID: uuid, at: Date()) }
            }
        }
    }

    // MARK: The handshake's steps

    /// Steps 3 and 4: both only read the store.
    private func checkStore(_ conn: ConnectionID, _ q: ConnectionStateMachine.StoreQuery) async {
        do {
            let found = try await store.handshakeLookup(
                agentID: q.agentID, nonce: q.nonce,
                tokenHash: q.enrollmentToken.map { SHA256.hash(Array($0.text.utf8)) }, now: Date())
            let decision = configuration.enrollment.decide(record: found.agent.map(Self.enrollmentRecord),
                                                           presentedKey: q.publicKey,
                                                           presentedTokenIsValid: found.tokenValid)
            update(conn) { $0.storeAnswered(replaySeen: found.replaySeen, decision: decision) }
        } catch {
            update(conn) { $0.storeUnavailable() }
        }
    }

    private static func enrollmentRecord(_ r: AegisStore.AgentRecord) -> AegisGateway.AgentRecord {
        switch r.enrollment {
        case .active: .active(publicKey: r.publicKey)
        case .pending: .pending(publicKey: r.publicKey)
        case .revoked: .revoked
        }
    }

    /// §3.3: the keys, and auth_ok, signed; kept until the store has
    /// recorded the handshake.
    private func deriveKeys(_ conn: ConnectionID, _ request: AuthRequest, _ terms: ConnectionStateMachine.SessionTerms) {
        let sessionID = UUID().uuidString.lowercased()
        do {
            let accepted = try GatewayHandshake.accept(
                server: identity, request: request,
                parameters: AuthOKParameters(sessionID: sessionID, timestamp: terms.timestamp,
                                             expiresAt: terms.expiresAt, heartbeatInterval: terms.heartbeatInterval))
            derived[conn] = accepted
            update(conn) { $0.keysDerived(sessionID: sessionID) }
        } catch {
            update(conn) { $0.keyDerivationFailed(error) }
        }
    }

    /// The handshake's writes: the nonce (the replay guard shared by every
    /// node), the first-use pin, the token's use, the session.
    private func recordHandshake(_ conn: ConnectionID, _ r: ConnectionStateMachine.HandshakeRecord) async {
        let outcome: ConnectionStateMachine.HandshakeRecordOutcome
        do {
            let now = Date()
            if try await !store.recordNonce(agentID: r.agentID, nonce: r.nonce,
                                            expiresAt: Date(timeIntervalSince1970: Double(r.keepNonceUntil.seconds))) {
                outcome = .nonceAlreadyRecorded
            } else {
                let pin = try await store.pinAgent(id: r.agentID, publicKey: r.publicKey, enrollment: .active)
                if pin.record.enrollment == .revoked {
                    outcome = .revokedConcurrently
                } else if pin.record.publicKey != r.publicKey {
                    outcome = .keyPinnedConcurrently
                } else if let token = r.consumesToken,
                          try await !store.consumeEnrollmentToken(hash: SHA256.hash(Array(token.text.utf8)), now: now) {
                    outcome = .tokenNoLongerValid
                } else {
                    if pin.record.enrollment == .pending {
                        // An admitted pending agent (a policy switch) becomes active.
                        _ = try await store.setEnrollment(id: r.agentID, .active, at: now)
                    }
                    let hash = derived[conn]?.sessionTokenHash ?? []
                    if let uuid = UUID(uuidString: r.sessionID) {
                        // A session of this agent on another node ends (4009).
                        let started = ClusterMessage.session(agentID: r.agentID, sessionID: r.sessionID,
                                                             startedAt: UnixTime.now.millisecondsSinceEpoch)
                        _ = try await store.sessionStarted(agentID: r.agentID, sessionID: uuid, tokenHash: hash,
                                                           nodeID: configuration.nodeID, at: now,
                                                           notification: started.text)
                    }
                    outcome = .recorded
                }
            }
        } catch {
            update(conn) { $0.storeUnavailable() }
            return
        }
        update(conn) { $0.handshakeRecorded(outcome, now: .now) }
    }

    /// Sends auth_ok; a newer session replaces an older one (§5: 4009).
    func completeHandshake(_ conn: ConnectionID, _ session: ConnectionStateMachine.Session) {
        guard let accepted = derived.removeValue(forKey: conn) else {
            _ = transport.close(conn, code: CloseCode.tryAgainLater.rawValue, reason: "session lost")
            return
        }
        if let (older, _) = sessionOf[session.agentID], older != conn {
            update(older) { $0.replacedByNewerSession() }
        }
        sessionOf[session.agentID] = (conn, session)
        sessionUUIDs[conn] = UUID(uuidString: session.sessionID)
        _ = transport.accept(conn, accepted)
        metrics.handshake("ok")
        metrics.sessions.record(sessionOf.count)
        if let start = upgradedAt[conn] { metrics.handshakeDuration.record(duration: .now - start) }
        logger.info("session established", metadata: [
            "conn": "\(conn)", "agent_id": "\(session.agentID)", "session_id": "\(session.sessionID)"])
        let agentID = session.agentID, maxSends = configuration.downRetries + 1
        Task {
            // §5: what was sent and not acked goes again on the next session.
            _ = try? await self.store.downForNewSession(agentID: agentID, now: Date(), maxSends: maxSends)
            await self.deliverDue(agentID: agentID)
        }
    }

    // MARK: Up messages: durable before acked

    private func enqueueForStorage(_ conn: ConnectionID, _ message: SecureMessage) {
        let count = unstored[conn, default: 0] + 1
        if count > limits.unstoredPerConnection {
            update(conn) { $0.bufferLimitExceeded() }
            return
        }
        unstored[conn] = count
        batch.append((conn, message))
    }

    /// Starts a transaction with what waits, unless one is in flight (its
    /// end starts the next).
    private func flushBatch() {
        guard !storing, !batch.isEmpty else { return }
        storing = true
        let taken: [(ConnectionID, SecureMessage)]
        if batch.count <= limits.batchMax {
            // The common case: take the whole buffer, no element copies.
            taken = batch
            batch = []
        } else {
            taken = Array(batch.prefix(limits.batchMax))
            batch.removeFirst(taken.count)
        }
        var rows: [UpMessage] = []
        var owners: [ConnectionID] = []
        rows.reserveCapacity(taken.count)
        owners.reserveCapacity(taken.count)
        for (conn, m) in taken {
            guard let session = machines[conn]?.session, let sid = sessionUUIDs[conn] else { continue }
            rows.append(UpMessage(agentID: session.agentID, msgID: m.id, type: m.type.rawValue, channel: m.channel,
                                  ref: m.ref, plaintext: m.plaintext, ciphertext: m.ciphertext, nonce: m.nonce,
                                  signature: m.signature, envelopeTimestamp: m.timestamp, sessionID: sid))
            owners.append(conn)
        }
        Task { await self.store(rows, owners: owners, taken: taken) }
    }

    /// `owners[i]` is the connection of `rows[i]`.
    private func store(_ rows: [UpMessage], owners: [ConnectionID],
                       taken: [(ConnectionID, SecureMessage)]) async {
        for (conn, _) in taken { unstored[conn, default: 1] -= 1 }
        do {
            let start = ContinuousClock.now
            // "up" at most every 50 ms: streams on other nodes hear of a
            // busy node's batches in groups (this node's ring at once).
            let announce = ContinuousClock.now - lastUpAnnounced >= .milliseconds(50)
            if announce {
                lastUpAnnounced = .now
            } else if !upAnnouncementScheduled {
                // The batches left out are announced 50 ms later, once.
                upAnnouncementScheduled = true
                Task {
                    try? await Task.sleep(for: .milliseconds(50))
                    self.upAnnouncementScheduled = false
                    self.lastUpAnnounced = .now
                    try? await self.store.notify(channel: Store.clusterChannel, payload: ClusterMessage.up.text)
                }
            }
            let results = try await store.storeUpMessages(rows, notifications: ClusterMessage.afterStoring(rows, announceUp: announce))
            metrics.upStoreDuration.record(duration: .now - start)
            metrics.upStoreBatch.record(rows.count)
            answerWaiters(rows)
            upMessagesStored.ring()
            var stored: [ConnectionID: [String]] = [:]
            // Stored now or already stored before: either way durable, so acked.
            // Results come in input order.
            for (r, conn) in zip(results, owners) {
                stored[conn, default: []].append(r.msgID)
            }
            for (conn, ids) in stored { update(conn) { $0.ackStored(ids: ids) } }
            storing = false
            flushBatch()
        } catch {
            logger.warning("store unavailable: up messages held, not acked", metadata: [
                "messages": "\(taken.count)", "error": "\(error)"])
            // Not stored, so not acked (§5). The messages stay here and the
            // batch is retried while the store is away; a connection whose
            // unstored messages pass the buffer limit is closed with 1013,
            // and its agent resends after reconnecting.
            var kept: [(ConnectionID, SecureMessage)] = []
            for (conn, m) in taken where machines[conn]?.session != nil {
                let count = unstored[conn, default: 0] + 1
                if count > limits.unstoredPerConnection {
                    update(conn) { $0.bufferLimitExceeded() }
                } else {
                    unstored[conn] = count
                    kept.append((conn, m))
                }
            }
            batch.insert(contentsOf: kept, at: 0)
            Task {
                try? await Task.sleep(for: .milliseconds(250))
                self.storing = false
                self.flushBatch()
            }
        }
    }

    private func acknowledge(_ conn: ConnectionID, _ ids: [String]) {
        for action in coalescer.stored(conn, ids: ids, now: .now) { sendAck(action) }
    }

    private func sendAck(_ action: AckCoalescer<ConnectionID>.Action) {
        guard case .sendAck(let conn, let ids) = action, let first = ids.first,
              let plaintext = try? AckPlaintext.build(ids: ids) else { return }
        let header = MessageHeader(id: UUID().uuidString.lowercased(), type: .ack, channel: "aegis.ack", ref: first,
                                   timestamp: UInt64(Date().timeIntervalSince1970))
        _ = transport.send(conn, header, plaintext: plaintext)
        metrics.message(up: false, .ack)
        metrics.ackSize.record(ids.count)
    }

    // MARK: Down messages

    private func markDelivered(_ conn: ConnectionID, _ ids: [String]) {
        guard let agentID = machines[conn]?.session?.agentID else { return }
        awaitingAck[conn]?.subtract(ids)
        Task { _ = try? await self.store.markDelivered(agentID: agentID, msgIDs: ids, at: Date()) }
    }

    /// Sends what is due for one agent, and schedules the next attempt of
    /// each by the delivery policy's backoff.
    func deliverDue(agentID: String) async {
        guard sessionOf[agentID] != nil else { return }
        guard delivering.insert(agentID).inserted else {
            // A pass is running and may have read the queue already: it
            // goes again, and this call returns when that pass is done.
            deliverAgain.insert(agentID)
            await withCheckedContinuation { deliveryWaiters[agentID, default: []].append($0) }
            return
        }
        repeat {
            await deliverDuePass(agentID: agentID)
        } while deliverAgain.remove(agentID) != nil && sessionOf[agentID] != nil
        delivering.remove(agentID)
        for waiter in deliveryWaiters.removeValue(forKey: agentID) ?? [] { waiter.resume() }
    }

    private func deliverDuePass(agentID: String) async {
        guard let (conn, _) = sessionOf[agentID] else { return }
        let now = Date()
        // Claimed, not just read: another node (or a pass racing this one)
        // skips these rows until markSent below gives them their next time.
        guard let due = try? await store.claimDueDown(agentID: agentID, now: now,
                                                      claimUntil: now.addingTimeInterval(configuration.ackTimeout.seconds),
                                                      limit: 64, maxRetries: configuration.downRetries + 1) else { return }
        var sent: [(UUID, Int)] = []
        for record in due {
            guard sessionOf[agentID]?.0 == conn, let type = MessageType(rawValue: record.type) else { continue }
            update(conn) {
                $0.downMessageReady(.init(id: record.msgID, type: type, channel: record.channel, ref: record.ref,
                                          plaintext: record.payload))
            }
            awaitingAck[conn, default: []].insert(record.msgID)
            sent.append((record.id, record.retryCount + 1))
            let watched = agentID + "\u{0}" + record.msgID
            if watchedSends[watched] == false { watchedSends[watched] = true }
        }
        // One update per distinct wait (the backoff depends on the send count).
        for (sends, group) in Dictionary(grouping: sent, by: { $0.1 }) {
            let wait = delivery.wait(afterSend: sends)
            let next = now.addingTimeInterval(Double(wait.components.seconds))
            _ = try? await store.markSent(ids: group.map(\.0), at: now, nextAttemptAt: next)
        }
    }

    // MARK: Timers

    private func timers() async {
        var lastSecond = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(5))
            tickAcks()
            if ContinuousClock.now - lastSecond >= .seconds(1) {
                lastSecond = ContinuousClock.now
                await everySecond()
            }
        }
    }

    private func tickAcks() {
        for action in coalescer.tick(now: .now) { sendAck(action) }
    }

    private func everySecond() async {
        let now = UnixTime.now
        for conn in Array(machines.keys) { update(conn) { $0.tick(now: now) } }
        if !heardFrom.isEmpty {
            let at = Date()
            var seen: [String: Date] = [:]
            for conn in heardFrom { if let agent = machines[conn]?.session?.agentID { seen[agent] = at } }
            heardFrom.removeAll(keepingCapacity: true)
            _ = try? await store.touchAgents(seen)
        }
        // retries counts resends: 1 + retries sends in all (§5).
        _ = try? await store.failExpired(now: Date(), maxRetries: configuration.downRetries + 1)
        secondsUntilQueueSample -= 1
        if secondsUntilQueueSample <= 0, let depth = try? await store.downQueueDepth() {
            secondsUntilQueueSample = 5
            metrics.downQueued.record(depth.queued)
            metrics.downSent.record(depth.sent)
        }
        secondsUntilPrune -= 1
        if secondsUntilPrune <= 0 {
            secondsUntilPrune = 60
            _ = try? await store.pruneNonces(now: Date())
        }
        // Retries, and messages queued by other nodes whose wake-up was
        // lost: one query finds who has something due.
        await deliverEverythingDue()
        await keepLease()
    }

    /// A delivery pass for every live agent here with something due: one
    /// query, rather than one per live agent.
    func deliverEverythingDue() async {
        guard !sessionOf.isEmpty, let due = try? await store.agentsWithDueDown(now: Date()) else { return }
        for agentID in due where sessionOf[agentID] != nil { await deliverDue(agentID: agentID) }
    }
}

extension ConnectionStateMachine {
    var session: Session? { authenticatedSession }

    mutating func applying<R>(_ event: (inout ConnectionStateMachine) -> R) -> R { event(&self) }
}

extension UnixTime {
    /// The wall clock, for the machines' events.
    static var now: UnixTime {
        UnixTime(millisecondsSinceEpoch: UInt64(Date().timeIntervalSince1970 * 1000))
    }
}
