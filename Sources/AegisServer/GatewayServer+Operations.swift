import AegisGateway
import AegisProtocol
import AegisStore
import Foundation

// What operators ask of the running gateway (the admin API calls these):
// send to one agent and wait for its response, broadcast, approve, revoke,
// delete. Reads that need no live state go to the store directly.

/// A down message an operator sends to one agent.
public struct DownSend: Sendable {
    public var agentID: String
    public var type: MessageType
    public var channel: String
    public var payload: [UInt8]
    /// nil: the gateway's `down_ttl`.
    public var timeToLive: Duration?
    public var idempotency: IdempotencyKey?
    /// Wait this long for the agent's response (requests only).
    public var wait: Duration?

    public init(agentID: String, type: MessageType, channel: String, payload: [UInt8], timeToLive: Duration? = nil,
                idempotency: IdempotencyKey? = nil, wait: Duration? = nil) {
        self.agentID = agentID
        self.type = type
        self.channel = channel
        self.payload = payload
        self.timeToLive = timeToLive
        self.idempotency = idempotency
        self.wait = wait
    }
}

/// An agent's response to a down request, as stored.
public struct AgentResponse: Sendable, Equatable {
    public var id: String
    public var payload: [UInt8]
    /// The envelope's Unix seconds.
    public var timestamp: UInt64

    init?(_ r: MessageRecord) {
        guard r.direction == .up, r.type == MessageType.response.rawValue else { return nil }
        self.init(id: r.msgID, payload: r.payload, timestamp: r.envelopeTimestamp ?? 0)
    }

    public init(id: String, payload: [UInt8], timestamp: UInt64) {
        self.id = id
        self.payload = payload
        self.timestamp = timestamp
    }
}

public enum SendOutcome: Sendable, Equatable {
    /// Queued, or already sent to the agent's live session (status .sent),
    /// or — a retried idempotent send — whatever its state is now.
    case accepted(id: String, status: MessageStatus)
    case responded(id: String, AgentResponse)
}

public struct BroadcastOutcome: Sendable, Equatable {
    public var id: String
    /// Agents the message was queued for.
    public var recipients: Int
    /// Of those, sent at once to a live session on this node.
    public var sent: Int
    /// Listed agents that are unknown, pending or revoked.
    public var skipped: [String]
}

/// Why an operation was refused.
public enum OperationError: Error, Sendable, Equatable {
    case unknownAgent
    case agentRevoked
    /// The agent has `limit` down messages not yet delivered.
    case queueFull(limit: Int)
    /// The Idempotency-Key was used before for another request.
    case idempotencyConflict
    case store(StoreError)
}

extension GatewayServer {
    /// This node's name (agent_connections.node_id).
    public nonisolated var nodeID: String { configuration.nodeID }

    /// A down message's time to live when the sender gives none.
    public nonisolated var defaultDownTimeToLive: Duration { configuration.downTimeToLive }

    /// Whether the agent has a live session: on this node, the session in
    /// memory decides; on another node, its stored record.
    public func isConnected(_ record: AegisStore.AgentRecord) -> Bool {
        if record.nodeID == configuration.nodeID { return sessionOf[record.agentID] != nil }
        return record.isActive
    }

    /// `isConnected` for a page of agents, in one call.
    public func connected(_ records: [AegisStore.AgentRecord]) -> [Bool] {
        records.map(isConnected)
    }

    public func send(_ request: DownSend) async throws(OperationError) -> SendOutcome {
        let agent = try await storeCall { try await $0.agent(id: request.agentID) }
        guard let agent else { throw .unknownAgent }
        if agent.enrollment == .revoked { throw .agentRevoked }
        let counts = try await storeCall { try await $0.queueCounts(agentID: request.agentID) }
        if counts.open >= limits.maxOpenDownPerAgent { throw .queueFull(limit: limits.maxOpenDownPerAgent) }

        let now = Date()
        let ttl = request.timeToLive ?? configuration.downTimeToLive
        let message = DownMessage(agentID: request.agentID, msgID: UUID().uuidString.lowercased(),
                                  type: request.type.rawValue, channel: request.channel, payload: request.payload,
                                  expiresAt: now.addingTimeInterval(ttl.seconds))
        var id = message.msgID
        var status = MessageStatus.queued
        var isNew = true
        if let key = request.idempotency {
            switch try await storeCall({ try await $0.enqueueDown(message, idempotency: key, at: now) }) {
            case .queued:
                break
            case .existing(let existingID, let existingStatus, let sameRequest):
                guard sameRequest else { throw .idempotencyConflict }
                (id, status, isNew) = (existingID, existingStatus, false)
            }
        } else {
            _ = try await storeCall { try await $0.enqueueDown(message, at: now) }
        }

        let waits = request.type == .request && request.wait != nil
        let slot = request.agentID + "\u{0}" + id
        // Interest is registered before the message can go out, so that a
        // response arriving at once is kept for us.
        if waits { responseSlots[slot, default: ResponseSlot()].interest += 1 }
        defer { if waits { releaseInterest(slot) } }
        if isNew && sessionOf[request.agentID] == nil {
            // Maybe live on another node: wake it (the row is the truth).
            try? await store.notify(channel: Store.clusterChannel,
                                    payload: ClusterMessage.down(agentID: request.agentID, msgID: id).text)
        }
        if isNew && sessionOf[request.agentID] != nil {
            // The ack may be back before this call resumes, so the delivery
            // pass itself reports the send.
            watchedSends[slot] = false
            await deliverDue(agentID: request.agentID)
            if watchedSends.removeValue(forKey: slot) == true { status = .sent }
        }
        guard waits, let wait = request.wait else { return .accepted(id: id, status: status) }
        // A retried send may have been answered already, or on another node.
        if !isNew, let stored = try? await store.response(agentID: request.agentID, to: id),
           let response = AgentResponse(stored) {
            return .responded(id: id, response)
        }
        if let response = await waitForResponse(slot, timeout: wait) { return .responded(id: id, response) }
        // No response in time: say where the message stands now.
        if let now = try? await store.downMessages(msgID: id).first(where: { $0.agentID == request.agentID }) {
            status = now.status
        }
        return .accepted(id: id, status: status)
    }

    public func broadcast(_ b: BroadcastMessage) async throws(OperationError) -> BroadcastOutcome {
        let now = Date()
        guard let type = MessageType(rawValue: b.type) else { throw .store(.invalid("message type \(b.type)")) }
        // Agents live here, not in a delivery pass: sent at once, and their
        // rows stored as sent (no pass can take them meanwhile).
        let live = sessionOf.keys.filter { !delivering.contains($0) }
        let next = now.addingTimeInterval(delivery.wait(afterSend: 1).seconds)
        let rows = try await storeCall { try await $0.enqueueBroadcast(b, sendingNow: live, nextAttemptAt: next, at: now) }
        let liveSet = Set(live)
        var sent = 0
        for (_, agentID) in rows where liveSet.contains(agentID) {
            // Gone since: the row is due again on its next session (§5).
            guard let (conn, _) = sessionOf[agentID] else { continue }
            // Sealed per session by the transport, in batches per worker.
            update(conn) {
                $0.downMessageReady(.init(id: b.msgID, type: type, channel: b.channel, ref: nil, plaintext: b.payload))
            }
            awaitingAck[conn, default: []].insert(b.msgID)
            sent += 1
        }
        metrics.broadcastRecipients.record(rows.count)
        if rows.count > sent {
            // Recipients on other nodes, or in a delivery pass here.
            try? await store.notify(channel: Store.clusterChannel, payload: ClusterMessage.due.text)
        }
        let skipped = b.agentIDs.map { Set($0).subtracting(rows.map(\.1)).sorted() } ?? []
        return BroadcastOutcome(id: b.msgID, recipients: rows.count, sent: sent, skipped: skipped)
    }

    /// Admits a pending agent; an active one stays as it is.
    public func approve(agentID: String) async throws(OperationError) -> AegisStore.AgentRecord {
        guard let agent = try await storeCall({ try await $0.agent(id: agentID) }) else { throw .unknownAgent }
        switch agent.enrollment {
        case .active: return agent
        case .revoked: throw .agentRevoked
        case .pending:
            guard let updated = try await storeCall({ try await $0.setEnrollment(id: agentID, .active) }) else {
                throw .unknownAgent
            }
            return updated
        }
    }

    /// Refuses the agent from now on and closes its live session (4003).
    public func revoke(agentID: String) async throws(OperationError) -> AegisStore.AgentRecord {
        guard let agent = try await storeCall({ try await $0.setEnrollment(id: agentID, .revoked) }) else {
            throw .unknownAgent
        }
        closeSession(of: agentID, reason: "revoked")
        return agent
    }

    /// Forgets the agent (it may enroll again by the policy) and closes its
    /// live session (4003).
    public func delete(agentID: String) async throws(OperationError) {
        guard try await storeCall({ try await $0.deleteAgent(id: agentID) }) else { throw .unknownAgent }
        closeSession(of: agentID, reason: "deleted")
    }

    private func closeSession(of agentID: String, reason: String) {
        guard let (conn, _) = sessionOf[agentID] else { return }
        logger.info("session closed by an operator", metadata: ["conn": "\(conn)", "agent_id": "\(agentID)",
                                                                "reason": "\(reason)"])
        _ = transport.close(conn, code: CloseCode.agentRefused.rawValue, reason: reason)
    }

    // MARK: Responses awaited by operators

    /// Stored responses wake the operators waiting for them.
    func answerWaiters(_ rows: [UpMessage]) {
        guard !responseSlots.isEmpty else { return }
        for row in rows where row.type == MessageType.response.rawValue {
            guard let ref = row.ref else { continue }
            let key = row.agentID + "\u{0}" + ref
            guard responseSlots[key]?.response == nil else { continue }
            resolveWaiters(key, AgentResponse(id: row.msgID, payload: row.plaintext, timestamp: row.envelopeTimestamp))
        }
    }

    func resolveWaiters(_ key: String, _ response: AgentResponse) {
        guard var slot = responseSlots[key], slot.response == nil else { return }
        slot.response = response
        for (_, waiter) in slot.waiters { waiter.resume(returning: response) }
        slot.waiters.removeAll()
        responseSlots[key] = slot
    }

    private func waitForResponse(_ key: String, timeout: Duration) async -> AgentResponse? {
        if let response = responseSlots[key]?.response { return response }
        let token = UUID()
        return await withCheckedContinuation { continuation in
            responseSlots[key, default: ResponseSlot()].waiters.append((token, continuation))
            Task {
                try? await Task.sleep(for: timeout)
                self.expireWaiter(key, token)
            }
        }
    }

    private func expireWaiter(_ key: String, _ token: UUID) {
        guard let i = responseSlots[key]?.waiters.firstIndex(where: { $0.0 == token }),
              let (_, waiter) = responseSlots[key]?.waiters.remove(at: i) else { return }
        waiter.resume(returning: nil)
    }

    private func releaseInterest(_ key: String) {
        guard var slot = responseSlots[key] else { return }
        slot.interest -= 1
        responseSlots[key] = slot.interest <= 0 && slot.waiters.isEmpty ? nil : slot
    }

    private func storeCall<T: Sendable>(_ body: (Store) async throws -> T) async throws(OperationError) -> T {
        do {
            return try await body(store)
        } catch let error as StoreError {
            throw .store(error)
        } catch {
            throw .store(.server(sqlstate: "", message: "\(error)"))
        }
    }
}

/// Operators waiting for one request's response: registered before the
/// request is sent, so that an early response is not missed.
struct ResponseSlot {
    var interest = 0
    var response: AgentResponse?
    var waiters: [(UUID, CheckedContinuation<AgentResponse?, Never>)] = []
}

extension Duration {
    /// Whole and fractional seconds, for `Date` arithmetic.
    var seconds: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
