import AegisPQ
import Foundation

/// The gateway's PostgreSQL store: every SQL statement of the gateway is in
/// this module — the gateway's here, the admin API's in Store+Admin.swift,
/// the schema in Migrations.swift.
///
/// An actor whose executor is a thread of its own, so that libpq's blocking
/// calls never hold a thread of the cooperative pool. It keeps one
/// connection; when the connection is lost the call that notices fails
/// with `.unavailable`, and a later call connects again (at once after a
/// loss, then with exponential backoff between failed attempts). Writes
/// commit before they return, with `synchronous_commit` on (the store sets
/// it for its session if the server has it off), so a returned write is on
/// disk.
///
/// Values in and out are Sendable structs (Records.swift). Times are passed
/// in by the caller (`at:`, `now:`) so that one clock, the gateway's,
/// decides what is due or expired.
public actor Store {
    public struct Options: Sendable {
        /// Apply the migrations in `start()`.
        public var migrate = true
        /// Wait before the second reconnect attempt; doubles per failed
        /// attempt up to `maxBackoff`. The first attempt after a loss is
        /// immediate.
        public var minBackoff: Duration = .milliseconds(100)
        public var maxBackoff: Duration = .seconds(2)

        public init() {}
    }

    private let executor: ThreadExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    /// Kept private: it may carry a password.
    private let conninfo: String
    private let options: Options
    private let log: StoreLogger
    private var connection: PQConnection?
    private var failedAttempts = 0
    private var retryAt: ContinuousClock.Instant?
    private var lastConnectError = ""
    private var everConnected = false
    private var checkedSettings = false

    /// A store for the server `conninfo` (a libpq connection string or
    /// postgresql:// URI). Nothing connects until `start()` or a call.
    public init(conninfo: String, options: Options = Options(), log: @escaping StoreLogger = printStoreLog) {
        self.executor = ThreadExecutor()
        self.conninfo = conninfo
        self.options = options
        self.log = log
    }

    deinit {
        executor.shutdown()
    }

    /// Creates a store, connects and applies the migrations.
    public static func open(conninfo: String, options: Options = Options(),
                            log: @escaping StoreLogger = printStoreLog) async throws(StoreError) -> Store {
        let store = Store(conninfo: conninfo, options: options, log: log)
        try await store.start()
        return store
    }

    /// Connects and, with `options.migrate`, brings the schema up to date.
    @discardableResult
    public func start() throws(StoreError) -> MigrationReport? {
        _ = try connected()
        return options.migrate ? try migrate() : nil
    }

    /// Applies the migrations not yet in the database (idempotent).
    @discardableResult
    public func migrate() throws(StoreError) -> MigrationReport {
        let c = try connected()
        do {
            return try Migrations.apply(c, log: log)
        } catch {
            if !c.isAlive { connection = nil }
            throw error
        }
    }

    /// Closes the connection; a later call opens a new one.
    public func close() {
        connection = nil
    }

    /// SELECT 1: whether the database answers (readiness).
    public func ping() throws(StoreError) {
        _ = try withConnection { c in try c.execute(SQL.ping, []) }
    }

    // MARK: Connection

    private func connected() throws(StoreError) -> PQConnection {
        if let c = connection {
            if c.isAlive { return c }
            connection = nil
            log("the connection to PostgreSQL was lost; reconnecting")
        }
        let now = ContinuousClock.now
        if let retryAt, now < retryAt {
            let ms = (retryAt - now).components.attoseconds / 1_000_000_000_000_000
                + (retryAt - now).components.seconds * 1000
            throw .unavailable("PostgreSQL is unreachable (\(lastConnectError)); next attempt in \(ms) ms")
        }
        do {
            let c = try PQConnection(conninfo: conninfo)
            try configure(c)
            connection = c
            if failedAttempts > 0 || everConnected { log("connected to PostgreSQL again") }
            failedAttempts = 0
            retryAt = nil
            everConnected = true
            return c
        } catch {
            failedAttempts += 1
            let factor = 1 << min(failedAttempts - 1, 16)
            retryAt = now + min(options.maxBackoff, options.minBackoff * factor)
            lastConnectError = describe(error)
            if failedAttempts == 1 { log("cannot connect to PostgreSQL: \(lastConnectError)") }
            throw .unavailable(lastConnectError)
        }
    }

    /// Per session: synchronous_commit must not be off (an ack follows the
    /// commit; off would ack before the WAL is flushed).
    private func configure(_ c: PQConnection) throws(PQFailure) {
        let r = try c.query("SELECT current_setting('synchronous_commit'), current_setting('fsync')", types: [], [])
        if r.text(0, 0) == "off" {
            try c.exec("SET synchronous_commit = on")
            if !checkedSettings { log("the server has synchronous_commit = off; this session sets it on") }
        }
        if r.text(0, 1) == "off" && !checkedSettings {
            log("WARNING: the server runs with fsync = off: a crash of its machine can lose acked messages")
        }
        checkedSettings = true
    }

    /// Runs `body` on a live connection; maps failures, forgets a broken
    /// connection, and rolls back a transaction a failure left open.
    func withConnection<T>(_ body: (PQConnection) throws -> T) throws(StoreError) -> T {
        let c = try connected()
        do {
            return try body(c)
        } catch {
            let e: StoreError
            switch error {
            case let f as PQFailure: e = StoreError(f)
            case let s as StoreError: e = s
            default: e = .server(sqlstate: "", message: "\(error)")
            }
            if !c.isAlive {
                connection = nil
                log("the connection to PostgreSQL was lost: \(e)")
            } else {
                let tx = c.transactionStatus
                if tx == AEGIS_PQ_TX_OPEN || tx == AEGIS_PQ_TX_FAILED { _ = try? c.exec("ROLLBACK") }
            }
            throw e
        }
    }

    // MARK: Agents

    public func agent(id: String) throws(StoreError) -> AgentRecord? {
        try withConnection { c in
            let r = try c.execute(SQL.agentByID, [.text(id)])
            return r.rows == 0 ? nil : try agentRecord(r, 0)
        }
    }

    /// Trust on first use: records the agent with this key if it is
    /// unknown; if it is known, returns its record unchanged (the caller
    /// compares keys).
    public func pinAgent(id: String, publicKey: [UInt8], enrollment: Enrollment) throws(StoreError) -> PinOutcome {
        try withConnection { c in
            for _ in 0..<3 {
                let ins = try c.execute(SQL.pinAgent, [.text(id), .bytes(publicKey), .text(enrollment.rawValue)])
                if ins.rows == 1 { return .pinned(try agentRecord(ins, 0)) }
                let r = try c.execute(SQL.agentByID, [.text(id)])
                if r.rows == 1 { return .existing(try agentRecord(r, 0)) }
                // Deleted between the two statements: try again.
            }
            throw StoreError.conflict(sqlstate: "", message: "agent \(id) changed during pinAgent")
        }
    }

    /// Approves (.active), holds (.pending) or revokes (.revoked: sets
    /// revoked_at; leaving revoked clears it). nil when the agent is unknown.
    @discardableResult
    public func setEnrollment(id: String, _ enrollment: Enrollment, at: Date = Date()) throws(StoreError) -> AgentRecord? {
        try withConnection { c in
            let r = try c.execute(SQL.setEnrollment, [.text(id), .text(enrollment.rawValue), .timestamp(at)])
            return r.rows == 0 ? nil : try agentRecord(r, 0)
        }
    }

    /// Forgets the agent (its key pin with it); false when unknown. Its
    /// messages stay in the queue.
    @discardableResult
    public func deleteAgent(id: String) throws(StoreError) -> Bool {
        try withConnection { c in try c.execute(SQL.deleteAgent, [.text(id)]).affected == 1 }
    }

    /// Agents ordered by id, after `after` (exclusive; nil: from the start).
    public func listAgents(after: String? = nil, limit: Int = 100, filter: AgentFilter = .all) throws(StoreError) -> [AgentRecord] {
        try withConnection { c in
            let r = try c.execute(SQL.listAgents, [.optionalText(after), .optionalText(filter.enrollment?.rawValue),
                                                    .bool(filter.activeOnly), .int64(Int64(max(0, limit)))])
            return try (0..<r.rows).map { i throws(StoreError) in try agentRecord(r, i) }
        }
    }

    // MARK: Auth nonces (the replay cache)

    /// Records an auth nonce; false when (agent, nonce) was recorded before:
    /// a replay. Shared by every gateway on the database.
    public func recordNonce(agentID: String, nonce: [UInt8], expiresAt: Date) throws(StoreError) -> Bool {
        try withConnection { c in
            try c.execute(SQL.recordNonce, [.text(agentID), .bytes(nonce), .timestamp(expiresAt)]).affected == 1
        }
    }

    /// Steps 3 and 4 of a handshake's checks in one round trip: whether the
    /// nonce was recorded (a replay), the agent's record, and, with a
    /// token hash, whether that enrollment token would be accepted at `now`.
    public func handshakeLookup(agentID: String, nonce: [UInt8], tokenHash: [UInt8]?,
                                now: Date) throws(StoreError) -> HandshakeLookup {
        try withConnection { c in
            var steps: [PipelineStep] = [.prepared(SQL.nonceSeen, [.text(agentID), .bytes(nonce)]),
                                         .prepared(SQL.agentByID, [.text(agentID)])]
            if let tokenHash { steps.append(.prepared(SQL.tokenValid, [.bytes(tokenHash), .timestamp(now)])) }
            let r = try c.pipeline(steps)
            return HandshakeLookup(replaySeen: r[0].rows > 0, agent: r[1].rows == 0 ? nil : try agentRecord(r[1], 0),
                                   tokenValid: tokenHash != nil && r[2].rows > 0)
        }
    }

    /// Whether the nonce was recorded (read-only, for the replay check
    /// before the signature is verified).
    public func nonceSeen(agentID: String, nonce: [UInt8]) throws(StoreError) -> Bool {
        try withConnection { c in try c.execute(SQL.nonceSeen, [.text(agentID), .bytes(nonce)]).rows > 0 }
    }

    /// Deletes the nonces that expired at or before `now`; returns how many.
    @discardableResult
    public func pruneNonces(now: Date) throws(StoreError) -> Int {
        try withConnection { c in try c.execute(SQL.pruneNonces, [.timestamp(now)]).affected }
    }

    // MARK: Enrollment tokens

    /// Stores a token by its hash (the token itself is never stored).
    @discardableResult
    public func createEnrollmentToken(hash: [UInt8], expiresAt: Date, uses: Int) throws(StoreError) -> UUID {
        guard let uses32 = Int32(exactly: uses), uses32 >= 0 else { throw .invalid("uses \(uses) out of range") }
        return try withConnection { c in
            let r = try c.execute(SQL.createToken, [.bytes(hash), .timestamp(expiresAt), .int32(uses32)])
            guard let id = r.uuid(0, 0) else { throw StoreError.server(sqlstate: "", message: "no id returned") }
            return id
        }
    }

    /// Uses the token once: true when it existed, was not revoked, had not
    /// expired at `now` and had a use left (atomically decremented).
    public func consumeEnrollmentToken(hash: [UInt8], now: Date) throws(StoreError) -> Bool {
        try withConnection { c in try c.execute(SQL.consumeToken, [.bytes(hash), .timestamp(now)]).affected == 1 }
    }

    /// Step 4 only reads: would the token be accepted at `now`? (It is
    /// consumed with the handshake's other writes.)
    public func enrollmentTokenValid(hash: [UInt8], now: Date) throws(StoreError) -> Bool {
        try withConnection { c in try c.execute(SQL.tokenValid, [.bytes(hash), .timestamp(now)]).rows > 0 }
    }

    @discardableResult
    public func revokeEnrollmentToken(hash: [UInt8], at: Date = Date()) throws(StoreError) -> Bool {
        try withConnection { c in try c.execute(SQL.revokeToken, [.bytes(hash), .timestamp(at)]).affected == 1 }
    }

    // MARK: Sessions

    /// Records the agent's new session on this node; false when the agent
    /// is unknown.
    @discardableResult
    /// With `notification`, that text is sent on `clusterChannel` in the
    /// same round trip.
    public func sessionStarted(agentID: String, sessionID: UUID, tokenHash: [UInt8], nodeID: String, at: Date,
                               notification: String? = nil) throws(StoreError) -> Bool {
        try withConnection { c in
            let started = PipelineStep.prepared(SQL.sessionStarted, [.text(agentID), .uuid(sessionID), .bytes(tokenHash),
                                                                     .text(nodeID), .timestamp(at)])
            guard let notification else { return try c.pipeline([started])[0].affected == 1 }
            let r = try c.pipeline([started, .prepared(SQL.notify, [.text(Store.clusterChannel), .text(notification)])])
            return r[0].affected == 1
        }
    }

    /// Marks the session ended, if it is still the agent's active one
    /// (a newer session elsewhere is left alone).
    @discardableResult
    public func sessionEnded(agentID: String, sessionID: UUID, at: Date) throws(StoreError) -> Bool {
        try withConnection { c in
            try c.execute(SQL.sessionEnded, [.text(agentID), .uuid(sessionID), .timestamp(at)]).affected == 1
        }
    }

    /// Moves last_seen forward for many agents in one statement; returns
    /// how many rows were updated.
    @discardableResult
    public func touchAgents(_ lastSeen: [String: Date]) throws(StoreError) -> Int {
        if lastSeen.isEmpty { return 0 }
        let ids = Array(lastSeen.keys)
        return try withConnection { c in
            try c.execute(SQL.touchAgents, [.textArray(ids), .timestampArray(ids.map { lastSeen[$0] })]).affected
        }
    }

    /// Ends every session recorded as active on `nodeID` (a node starting
    /// after a crash); returns how many.
    @discardableResult
    public func deactivateNode(_ nodeID: String, at: Date) throws(StoreError) -> Int {
        try withConnection { c in try c.execute(SQL.deactivateNode, [.text(nodeID), .timestamp(at)]).affected }
    }

    // MARK: Up messages

    /// Stores a batch in one transaction (BEGIN, one multi-row INSERT …
    /// ON CONFLICT DO NOTHING, COMMIT, pipelined in one round trip) and
    /// returns after the COMMIT: every result, stored or duplicate, may be
    /// acked. Results are in input order. A repeated (agent, id) — from an
    /// earlier call or earlier in this batch — is a duplicate and the first
    /// copy is kept unchanged. On `.unavailable` nothing may be acked (the
    /// batch may or may not have committed; storing it again is safe).
    ///
    /// `notifications` are sent on `clusterChannel` in the same transaction
    /// (delivered at its commit, at no extra round trip).
    public func storeUpMessages(_ messages: [UpMessage], notifications: [String] = []) throws(StoreError) -> [UpStoreResult] {
        if messages.isEmpty { return [] }
        struct Key: Hashable { let agent: String, msg: String }
        var firstIndex: [Key: Int] = [:]
        firstIndex.reserveCapacity(messages.count)
        var unique: [UpMessage] = []
        unique.reserveCapacity(messages.count)
        for (i, m) in messages.enumerated() where firstIndex.updateValue(i, forKey: Key(agent: m.agentID, msg: m.msgID)) == nil {
            unique.append(m)
        }
        // updateValue kept the last index of a repeated key: point it back
        // at the first, which is the one stored.
        if unique.count < messages.count {
            firstIndex.removeAll(keepingCapacity: true)
            for (i, m) in messages.enumerated() where firstIndex[Key(agent: m.agentID, msg: m.msgID)] == nil {
                firstIndex[Key(agent: m.agentID, msg: m.msgID)] = i
            }
        }
        var timestamps: [Int64?] = []
        timestamps.reserveCapacity(unique.count)
        for m in unique {
            guard let t = Int64(exactly: m.envelopeTimestamp) else {
                throw .invalid("message \(m.msgID) of \(m.agentID): timestamp \(m.envelopeTimestamp) exceeds 2^63-1")
            }
            timestamps.append(t)
        }
        let params: [PQParam] = [
            .textArray(unique.map { $0.agentID }), .textArray(unique.map { $0.msgID }),
            .textArray(unique.map { $0.type }), .textArray(unique.map { $0.channel }), .textArray(unique.map { $0.ref }),
            .byteaArray(unique.map { $0.plaintext }), .byteaArray(unique.map { $0.ciphertext }),
            .byteaArray(unique.map { $0.nonce }), .byteaArray(unique.map { $0.signature }),
            .int64Array(timestamps), .uuidArray(unique.map { $0.sessionID }),
        ]
        // nil: every unique row was inserted (the common case: no set to build).
        let stored: Set<Key>? = try withConnection { c in
            let notify = notifications.map { PipelineStep.prepared(SQL.notify, [.text(Store.clusterChannel), .text($0)]) }
            let results = try c.pipeline([.sql("BEGIN"), .prepared(SQL.storeUp, params)] + notify + [.sql("COMMIT")])
            let r = results[1]
            if r.rows == unique.count { return nil }
            var keys = Set<Key>()
            for i in 0..<r.rows {
                if let a = r.text(i, 0), let m = r.text(i, 1) { keys.insert(Key(agent: a, msg: m)) }
            }
            return keys
        }
        if stored == nil && unique.count == messages.count {
            return messages.map { UpStoreResult(agentID: $0.agentID, msgID: $0.msgID, outcome: .stored) }
        }
        return messages.enumerated().map { i, m in
            let k = Key(agent: m.agentID, msg: m.msgID)
            let isStored = firstIndex[k] == i && (stored?.contains(k) ?? true)
            return UpStoreResult(agentID: m.agentID, msgID: m.msgID, outcome: isStored ? .stored : .duplicate)
        }
    }

    // MARK: Down messages

    /// Queues a message for the agent (status queued, due now) and returns
    /// its row id. Idempotent: enqueueing (agent, msg id) again returns the
    /// existing row's id and changes nothing.
    @discardableResult
    public func enqueueDown(_ m: DownMessage, at: Date = Date()) throws(StoreError) -> UUID {
        try withConnection { c in
            for _ in 0..<3 {
                let r = try c.execute(SQL.enqueueDown, [.text(m.agentID), .text(m.msgID), .text(m.type), .text(m.channel),
                                                         .optionalText(m.ref), .bytes(m.payload), .timestamp(at),
                                                         .optionalTimestamp(m.expiresAt)])
                if r.rows > 0, let id = r.uuid(0, 0) { return id }
                // Inserted concurrently and invisible to this statement's snapshot: again.
            }
            throw StoreError.conflict(sqlstate: "", message: "message \(m.msgID) changed during enqueueDown")
        }
    }

    /// The agent's down messages to send now, oldest first: queued ones and
    /// sent ones whose ack did not come by their next_attempt_at, not
    /// expired at `now`; with `maxRetries`, only those sent fewer times.
    public func dueDown(agentID: String, now: Date, limit: Int = 100, maxRetries: Int? = nil) throws(StoreError) -> [DownRecord] {
        try withConnection { c in
            let r = try c.execute(SQL.dueDown, [.text(agentID), .timestamp(now), .int64(Int64(max(0, limit))),
                                                 maxRetries.map { .int32(Int32(clamping: $0)) } ?? .null])
            return try (0..<r.rows).map { i throws(StoreError) in try downRecord(r, i) }
        }
    }

    /// `dueDown`, claimed: the rows are locked with SKIP LOCKED and marked
    /// sent until `claimUntil` in the same statement, so that two nodes (or
    /// two passes) never take the same message at the same time; the caller
    /// then records each send with `markSent`. Oldest first.
    public func claimDueDown(agentID: String, now: Date, claimUntil: Date, limit: Int = 100,
                             maxRetries: Int? = nil) throws(StoreError) -> [DownRecord] {
        try withConnection { c in
            let r = try c.execute(SQL.claimDueDown, [.text(agentID), .timestamp(now), .int64(Int64(max(0, limit))),
                                                      maxRetries.map { .int32(Int32(clamping: $0)) } ?? .null,
                                                      .timestamp(claimUntil)])
            return try (0..<r.rows).map { i throws(StoreError) in try downRecord(r, i) }
        }
    }

    /// Records a send: status sent, retry_count + 1, and the time by which
    /// an ack must come before the message is due again. Returns how many
    /// rows changed (delivered and failed rows do not).
    @discardableResult
    public func markSent(ids: [UUID], at: Date, nextAttemptAt: Date) throws(StoreError) -> Int {
        if ids.isEmpty { return 0 }
        return try withConnection { c in
            try c.execute(SQL.markSent, [.uuidArray(ids), .timestamp(at), .timestamp(nextAttemptAt)]).affected
        }
    }

    /// The agent acked these ids: queued or sent rows become delivered.
    /// Failed rows stay failed and rows delivered before are not counted.
    @discardableResult
    public func markDelivered(agentID: String, msgIDs: [String], at: Date) throws(StoreError) -> Int {
        if msgIDs.isEmpty { return 0 }
        return try withConnection { c in
            try c.execute(SQL.markDelivered, [.text(agentID), .textArray(msgIDs), .timestamp(at)]).affected
        }
    }

    /// A new session of the agent: unacked down messages are due again now
    /// (§5), except those already sent `maxSends` times, which fail (another
    /// send would be needed). Returns (due again, failed).
    @discardableResult
    public func downForNewSession(agentID: String, now: Date, maxSends: Int) throws(StoreError) -> (Int, Int) {
        guard let max32 = Int32(exactly: maxSends) else { throw .invalid("maxSends \(maxSends) out of range") }
        return try withConnection { c in
            // One round trip, one implicit transaction.
            let r = try c.pipeline([.prepared(SQL.failOnNewSession, [.text(agentID), .int32(max32)]),
                                    .prepared(SQL.dueOnNewSession, [.text(agentID), .timestamp(now)])])
            return (r[1].affected, r[0].affected)
        }
    }

    /// Fails the down messages that expired at `now`, and those sent
    /// `maxRetries` times whose last ack window has passed. Returns how many.
    @discardableResult
    public func failExpired(now: Date, maxRetries: Int) throws(StoreError) -> Int {
        try withConnection { c in
            try c.execute(SQL.failExpired, [.timestamp(now), .int32(Int32(clamping: maxRetries))]).affected
        }
    }

    /// An agent's messages of one direction in insertion order, after
    /// `afterSeq` (exclusive), for consumers and paging.
    public func messages(agentID: String, direction: MessageDirection, afterSeq: Int64 = 0,
                         limit: Int = 100) throws(StoreError) -> [MessageRecord] {
        try withConnection { c in
            let r = try c.execute(SQL.messages, [.text(agentID), .text(direction.rawValue), .int64(afterSeq),
                                                  .int64(Int64(max(0, limit)))])
            return try (0..<r.rows).map { i throws(StoreError) in try messageRecord(r, i) }
        }
    }

    // MARK: LISTEN / NOTIFY

    /// The channel the nodes of one gateway tell each other on (see
    /// GatewayServer+Cluster.swift for the messages).
    public static let clusterChannel = "aegis_cluster"

    /// NOTIFY on `channel` (delivered to listeners when this commits, i.e.
    /// at once).
    public func notify(channel: String, payload: String = "") throws(StoreError) {
        _ = try withConnection { c in try c.execute(SQL.notify, [.text(channel), .text(payload)]) }
    }

    /// LISTENs on `channel` over a connection and thread of its own, and
    /// returns once the LISTEN is in place: every NOTIFY committed after
    /// this returns is delivered. The listener reconnects by itself and
    /// then yields `.resumed`. Ends with `cancel()` or when the stream's
    /// consumer goes away.
    public nonisolated func listen(channel: String) async throws(StoreError) -> StoreSubscription {
        guard !channel.isEmpty, channel.utf8.count < Int(AEGIS_PQ_CHANNEL_CAP) else {
            throw .invalid("a channel name is 1 to \(AEGIS_PQ_CHANNEL_CAP - 1) bytes")
        }
        return try await Listener.start(conninfo: conninfo, channel: channel, options: options, log: log)
    }
}

// MARK: - Decoding rows

/// A NOT NULL column came back NULL or mis-sized: the schema is not ours.
func missing(_ column: String) -> StoreError {
    .server(sqlstate: "", message: "unexpected NULL or malformed value in column \(column)")
}

func agentRecord(_ r: PQResult, _ i: Int) throws(StoreError) -> AgentRecord {
    guard let id = r.uuid(i, 0) else { throw missing("id") }
    guard let agentID = r.text(i, 1) else { throw missing("agent_id") }
    guard let key = r.bytes(i, 2) else { throw missing("public_key") }
    guard let enrollment = r.text(i, 3).flatMap(Enrollment.init(rawValue:)) else { throw missing("enrollment") }
    guard let active = r.bool(i, 8) else { throw missing("is_active") }
    guard let created = r.date(i, 11) else { throw missing("created_at") }
    return AgentRecord(id: id, agentID: agentID, publicKey: key, enrollment: enrollment,
                       sessionID: r.uuid(i, 4), sessionTokenHash: r.bytes(i, 5), connectedAt: r.date(i, 6),
                       lastSeen: r.date(i, 7), isActive: active, nodeID: r.text(i, 9), revokedAt: r.date(i, 10),
                       createdAt: created)
}

func downRecord(_ r: PQResult, _ i: Int) throws(StoreError) -> DownRecord {
    guard let id = r.uuid(i, 0) else { throw missing("id") }
    guard let agentID = r.text(i, 1), let msgID = r.text(i, 2) else { throw missing("agent_id/msg_id") }
    guard let type = r.text(i, 3), let channel = r.text(i, 4) else { throw missing("message_type/channel") }
    guard let payload = r.bytes(i, 6) else { throw missing("payload") }
    guard let status = r.text(i, 7).flatMap(MessageStatus.init(rawValue:)) else { throw missing("status") }
    guard let retries = r.int32(i, 8), let created = r.date(i, 9) else { throw missing("retry_count/created_at") }
    return DownRecord(id: id, agentID: agentID, msgID: msgID, type: type, channel: channel, ref: r.text(i, 5),
                      payload: payload, status: status, retryCount: Int(retries), createdAt: created,
                      expiresAt: r.date(i, 10), nextAttemptAt: r.date(i, 11), lastAttemptAt: r.date(i, 12))
}

func messageRecord(_ r: PQResult, _ i: Int) throws(StoreError) -> MessageRecord {
    guard let id = r.uuid(i, 0), let seq = r.int64(i, 1) else { throw missing("id/seq") }
    guard let agentID = r.text(i, 2), let msgID = r.text(i, 4) else { throw missing("agent_id/msg_id") }
    guard let direction = r.text(i, 3).flatMap(MessageDirection.init(rawValue:)) else { throw missing("direction") }
    guard let type = r.text(i, 5), let channel = r.text(i, 6) else { throw missing("message_type/channel") }
    guard let payload = r.bytes(i, 8) else { throw missing("payload") }
    guard let status = r.text(i, 14).flatMap(MessageStatus.init(rawValue:)) else { throw missing("status") }
    guard let retries = r.int32(i, 15), let created = r.date(i, 16) else { throw missing("retry_count/created_at") }
    return MessageRecord(id: id, seq: seq, agentID: agentID, direction: direction, msgID: msgID, type: type,
                         channel: channel, ref: r.text(i, 7), payload: payload, encryptedPayload: r.bytes(i, 9),
                         nonce: r.bytes(i, 10), signature: r.bytes(i, 11),
                         envelopeTimestamp: r.int64(i, 12).map { UInt64($0) }, sessionID: r.uuid(i, 13),
                         status: status, retryCount: Int(retries), createdAt: created, expiresAt: r.date(i, 17),
                         nextAttemptAt: r.date(i, 18), lastAttemptAt: r.date(i, 19), deliveredAt: r.date(i, 20))
}

// MARK: - The statements

enum SQL {
    static let text = UInt32(AEGIS_PQ_OID_TEXT)
    static let bytea = UInt32(AEGIS_PQ_OID_BYTEA)
    static let int4 = UInt32(AEGIS_PQ_OID_INT4)
    static let int8 = UInt32(AEGIS_PQ_OID_INT8)
    static let bool = UInt32(AEGIS_PQ_OID_BOOL)
    static let timestamptz = UInt32(AEGIS_PQ_OID_TIMESTAMPTZ)
    static let uuid = UInt32(AEGIS_PQ_OID_UUID)
    static let textArray = UInt32(AEGIS_PQ_OID_TEXT_ARRAY)
    static let byteaArray = UInt32(AEGIS_PQ_OID_BYTEA_ARRAY)
    static let int8Array = UInt32(AEGIS_PQ_OID_INT8_ARRAY)
    static let timestamptzArray = UInt32(AEGIS_PQ_OID_TIMESTAMPTZ_ARRAY)
    static let uuidArray = UInt32(AEGIS_PQ_OID_UUID_ARRAY)

    /// The column order agentRecord() reads.
    static let agentColumns = """
        id, agent_id, public_key, enrollment, session_id, session_token_hash, connected_at, last_seen, \
        is_active, node_id, revoked_at, created_at
        """
    /// The column order downRecord() reads.
    static let downColumns = """
        id, agent_id, msg_id, message_type, channel, ref, payload, status, retry_count, created_at, \
        expires_at, next_attempt_at, last_attempt_at
        """
    /// The column order messageRecord() reads.
    static let messageColumns = """
        id, seq, agent_id, direction, msg_id, message_type, channel, ref, payload, encrypted_payload, nonce, \
        signature, envelope_timestamp, session_id, status, retry_count, created_at, expires_at, \
        next_attempt_at, last_attempt_at, delivered_at
        """

    static let ping = Statement(name: "aegis_ping", sql: "SELECT 1", types: [])

    static let agentByID = Statement(
        name: "aegis_agent_by_id",
        sql: "SELECT \(agentColumns) FROM agent_connections WHERE agent_id = $1",
        types: [text])

    static let pinAgent = Statement(
        name: "aegis_pin_agent",
        sql: """
            INSERT INTO agent_connections (agent_id, public_key, enrollment) VALUES ($1, $2, $3)
            ON CONFLICT (agent_id) DO NOTHING
            RETURNING \(agentColumns)
            """,
        types: [text, bytea, text])

    static let setEnrollment = Statement(
        name: "aegis_set_enrollment",
        sql: """
            UPDATE agent_connections
            SET enrollment = $2,
                revoked_at = CASE WHEN $2 = 'revoked' THEN coalesce(revoked_at, $3) END
            WHERE agent_id = $1
            RETURNING \(agentColumns)
            """,
        types: [text, text, timestamptz])

    static let deleteAgent = Statement(
        name: "aegis_delete_agent",
        sql: "DELETE FROM agent_connections WHERE agent_id = $1",
        types: [text])

    static let listAgents = Statement(
        name: "aegis_list_agents",
        sql: """
            SELECT \(agentColumns) FROM agent_connections
            WHERE ($1::text IS NULL OR agent_id > $1)
              AND ($2::text IS NULL OR enrollment = $2)
              AND (NOT $3 OR is_active)
            ORDER BY agent_id
            LIMIT $4
            """,
        types: [text, text, bool, int8])

    static let recordNonce = Statement(
        name: "aegis_record_nonce",
        sql: """
            INSERT INTO auth_nonces (agent_id, nonce, expires_at) VALUES ($1, $2, $3)
            ON CONFLICT (agent_id, nonce) DO NOTHING
            """,
        types: [text, bytea, timestamptz])

    static let nonceSeen = Statement(
        name: "aegis_nonce_seen",
        sql: "SELECT 1 FROM auth_nonces WHERE agent_id = $1 AND nonce = $2",
        types: [text, bytea])

    static let pruneNonces = Statement(
        name: "aegis_prune_nonces",
        sql: "DELETE FROM auth_nonces WHERE expires_at <= $1",
        types: [timestamptz])

    static let createToken = Statement(
        name: "aegis_create_token",
        sql: "INSERT INTO enrollment_tokens (token_hash, expires_at, uses_left) VALUES ($1, $2, $3) RETURNING id",
        types: [bytea, timestamptz, int4])

    static let tokenValid = Statement(
        name: "aegis_token_valid",
        sql: """
            SELECT 1 FROM enrollment_tokens
            WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses_left > 0
            """,
        types: [bytea, timestamptz])
    static let consumeToken = Statement(
        name: "aegis_consume_token",
        sql: """
            UPDATE enrollment_tokens SET uses_left = uses_left - 1
            WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses_left > 0
            """,
        types: [bytea, timestamptz])

    static let revokeToken = Statement(
        name: "aegis_revoke_token",
        sql: "UPDATE enrollment_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        types: [bytea, timestamptz])

    static let sessionStarted = Statement(
        name: "aegis_session_started",
        sql: """
            UPDATE agent_connections
            SET session_id = $2, session_token_hash = $3, node_id = $4, connected_at = $5,
                last_seen = $5, is_active = true
            WHERE agent_id = $1
            """,
        types: [text, uuid, bytea, text, timestamptz])

    static let sessionEnded = Statement(
        name: "aegis_session_ended",
        sql: """
            UPDATE agent_connections SET is_active = false, last_seen = greatest(last_seen, $3)
            WHERE agent_id = $1 AND session_id = $2 AND is_active
            """,
        types: [text, uuid, timestamptz])

    static let touchAgents = Statement(
        name: "aegis_touch_agents",
        sql: """
            UPDATE agent_connections AS a SET last_seen = greatest(a.last_seen, t.seen)
            FROM unnest($1::text[], $2::timestamptz[]) AS t(agent_id, seen)
            WHERE a.agent_id = t.agent_id
            """,
        types: [textArray, timestamptzArray])

    static let deactivateNode = Statement(
        name: "aegis_deactivate_node",
        sql: """
            UPDATE agent_connections SET is_active = false, last_seen = greatest(last_seen, $2)
            WHERE node_id = $1 AND is_active
            """,
        types: [text, timestamptz])

    /// One INSERT for the whole batch: the columns arrive as arrays and
    /// unnest() turns them into rows, in input order.
    static let storeUp = Statement(
        name: "aegis_store_up",
        sql: """
            INSERT INTO message_queue (agent_id, direction, msg_id, message_type, channel, ref, payload,
                                       encrypted_payload, nonce, signature, envelope_timestamp, session_id, status)
            SELECT agent_id, 'up', msg_id, message_type, channel, ref, payload,
                   encrypted_payload, nonce, signature, envelope_timestamp, session_id, 'received'
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                        $6::bytea[], $7::bytea[], $8::bytea[], $9::bytea[], $10::int8[], $11::uuid[])
                 WITH ORDINALITY AS u(agent_id, msg_id, message_type, channel, ref, payload,
                                      encrypted_payload, nonce, signature, envelope_timestamp, session_id, ord)
            ORDER BY ord
            ON CONFLICT (agent_id, direction, msg_id) DO NOTHING
            RETURNING agent_id, msg_id
            """,
        types: [textArray, textArray, textArray, textArray, textArray,
                byteaArray, byteaArray, byteaArray, byteaArray, int8Array, uuidArray])

    static let enqueueDown = Statement(
        name: "aegis_enqueue_down",
        sql: """
            WITH ins AS (
                INSERT INTO message_queue (agent_id, direction, msg_id, message_type, channel, ref, payload,
                                           status, created_at, expires_at, next_attempt_at)
                VALUES ($1, 'down', $2, $3, $4, $5, $6, 'queued', $7, $8, $7)
                ON CONFLICT (agent_id, direction, msg_id) DO NOTHING
                RETURNING id
            )
            SELECT id FROM ins
            UNION ALL
            SELECT id FROM message_queue
            WHERE agent_id = $1 AND direction = 'down' AND msg_id = $2 AND NOT EXISTS (SELECT 1 FROM ins)
            """,
        types: [text, text, text, text, text, bytea, timestamptz, timestamptz])

    static let dueDown = Statement(
        name: "aegis_due_down",
        sql: """
            SELECT \(downColumns) FROM message_queue
            WHERE agent_id = $1 AND direction = 'down' AND status IN ('queued', 'sent')
              AND next_attempt_at <= $2
              AND (expires_at IS NULL OR expires_at > $2)
              AND ($4::int4 IS NULL OR retry_count < $4)
            ORDER BY seq
            LIMIT $3
            """,
        types: [text, timestamptz, int8, int4])

    static let claimDueDown = Statement(
        name: "aegis_claim_due_down",
        sql: """
            WITH claimed AS (
                UPDATE message_queue SET status = 'sent', next_attempt_at = $5
                WHERE id IN (
                    SELECT id FROM message_queue
                    WHERE agent_id = $1 AND direction = 'down' AND status IN ('queued', 'sent')
                      AND next_attempt_at <= $2
                      AND (expires_at IS NULL OR expires_at > $2)
                      AND ($4::int4 IS NULL OR retry_count < $4)
                    ORDER BY seq
                    LIMIT $3
                    FOR UPDATE SKIP LOCKED)
                RETURNING seq, \(downColumns)
            )
            SELECT \(downColumns) FROM claimed ORDER BY seq
            """,
        types: [text, timestamptz, int8, int4, timestamptz])

    static let markSent = Statement(
        name: "aegis_mark_sent",
        sql: """
            UPDATE message_queue
            SET status = 'sent', retry_count = retry_count + 1, last_attempt_at = $2, next_attempt_at = $3
            WHERE id = ANY($1) AND direction = 'down' AND status IN ('queued', 'sent')
            """,
        types: [uuidArray, timestamptz, timestamptz])

    static let markDelivered = Statement(
        name: "aegis_mark_delivered",
        sql: """
            UPDATE message_queue SET status = 'delivered', delivered_at = $3
            WHERE agent_id = $1 AND direction = 'down' AND msg_id = ANY($2) AND status IN ('queued', 'sent')
            """,
        types: [text, textArray, timestamptz])

    static let failOnNewSession = Statement(
        name: "aegis_fail_on_new_session",
        sql: """
            UPDATE message_queue SET status = 'failed'
            WHERE agent_id = $1 AND direction = 'down' AND status = 'sent' AND retry_count >= $2
            """,
        types: [text, int4])

    static let dueOnNewSession = Statement(
        name: "aegis_due_on_new_session",
        sql: """
            UPDATE message_queue SET next_attempt_at = $2
            WHERE agent_id = $1 AND direction = 'down' AND status = 'sent' AND next_attempt_at > $2
            """,
        types: [text, timestamptz])

    static let failExpired = Statement(
        name: "aegis_fail_expired",
        sql: """
            UPDATE message_queue SET status = 'failed'
            WHERE direction = 'down'
              AND ((status IN ('queued', 'sent') AND expires_at <= $1)
                   OR (status = 'sent' AND retry_count >= $2 AND next_attempt_at <= $1))
            """,
        types: [timestamptz, int4])

    static let messages = Statement(
        name: "aegis_messages",
        sql: """
            SELECT \(messageColumns) FROM message_queue
            WHERE agent_id = $1 AND direction = $2 AND seq > $3
            ORDER BY seq
            LIMIT $4
            """,
        types: [text, text, int8, int8])

    static let notify = Statement(
        name: "aegis_notify",
        sql: "SELECT pg_notify($1, $2)",
        types: [text, text])
}

/// The text of a failure, for logs and `.unavailable`.
private func describe(_ error: any Error) -> String {
    (error as? PQFailure)?.description ?? "\(error)"
}
