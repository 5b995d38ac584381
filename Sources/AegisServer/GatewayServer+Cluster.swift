import AegisGateway
import AegisProtocol
import AegisStore
import Foundation

// Several aegisd nodes on one PostgreSQL behave as one gateway: the rows
// are the truth, and NOTIFY on Store.clusterChannel wakes the node that
// can act (docs/deploying.md). A lost notification costs at most the
// one-second delivery pass; leases let survivors take a dead node over.

/// What one node tells the others, as "kind arguments" text.
enum ClusterMessage: Equatable {
    /// Down messages were queued (a broadcast, a takeover): a delivery
    /// pass for the live agents here.
    case due
    /// A down message was queued for one agent: its node delivers it.
    case down(agentID: String, msgID: String)
    /// A session started at `startedAt` (ms): an older one of the same
    /// agent on another node is replaced (4009).
    case session(agentID: String, sessionID: String, startedAt: UInt64)
    /// Up messages were stored: wake the admin API's streams.
    case up
    /// The agent's response to the down request `ref` was stored.
    case response(agentID: String, ref: String)

    var text: String {
        switch self {
        case .due: "due"
        case .down(let a, let m): "down \(a) \(m)"
        case .session(let a, let s, let t): "session \(a) \(s) \(t)"
        case .up: "up"
        case .response(let a, let r): "response \(a) \(r)"
        }
    }

    /// Agent ids, session ids and message ids contain no space (§1).
    init?(_ text: String) {
        let parts = text.split(separator: " ").map(String.init)
        switch (parts.first, parts.count) {
        case ("due", 1): self = .due
        case ("up", 1): self = .up
        case ("down", 3): self = .down(agentID: parts[1], msgID: parts[2])
        case ("session", 4):
            guard let t = UInt64(parts[3]) else { return nil }
            self = .session(agentID: parts[1], sessionID: parts[2], startedAt: t)
        case ("response", 3): self = .response(agentID: parts[1], ref: parts[2])
        default: return nil
        }
    }

    /// What a stored batch announces: its responses, and (when `announceUp`)
    /// that up messages were stored.
    static func afterStoring(_ rows: [UpMessage], announceUp: Bool) -> [String] {
        var out = announceUp ? [ClusterMessage.up.text] : []
        for row in rows where row.type == MessageType.response.rawValue {
            if let ref = row.ref { out.append(ClusterMessage.response(agentID: row.agentID, ref: ref).text) }
        }
        // NOTIFY payloads are limited to 8,000 bytes each; a pathological
        // batch of responses is announced by its first 1,000 only (the
        // waiters of the others find their response when they time out).
        return Array(out.prefix(1001))
    }
}

extension GatewayServer {
    /// The lease this node renews (10 s), every 3 s.
    public static let leaseLength: TimeInterval = 10

    /// Listens on the cluster channel until cancelled.
    func listenToOtherNodes() async {
        guard let subscription = try? await store.listen(channel: Store.clusterChannel) else {
            logger.warning("cannot LISTEN on the cluster channel: other nodes' wake-ups are missed (the 1 s pass remains)")
            return
        }
        defer { subscription.cancel() }
        for await event in subscription.events {
            switch event {
            case .notification(_, let payload):
                if let message = ClusterMessage(payload) { await handle(message) }
            case .resumed:
                // Notifications sent while the connection was away are gone.
                upMessagesStored.ring()
                await deliverEverythingDue()
            }
        }
    }

    func handle(_ message: ClusterMessage) async {
        switch message {
        case .due:
            await deliverEverythingDue()
        case .down(let agentID, _):
            // The row is the truth: the pass reads (and claims) it.
            if sessionOf[agentID] != nil { await deliverDue(agentID: agentID) }
        case .up:
            upMessagesStored.ring()
        case .session(let agentID, let sessionID, let startedAt):
            guard let (conn, session) = sessionOf[agentID], session.sessionID != sessionID,
                  session.establishedAt.millisecondsSinceEpoch <= startedAt else { return }
            logger.info("session replaced by one on another node", metadata: [
                "conn": "\(conn)", "agent_id": "\(agentID)", "session_id": "\(session.sessionID)"])
            update(conn) { $0.replacedByNewerSession() }
        case .response(let agentID, let ref):
            let key = agentID + "\u{0}" + ref
            guard let slot = responseSlots[key], slot.response == nil, !slot.waiters.isEmpty,
                  let stored = try? await store.response(agentID: agentID, to: ref),
                  let response = AgentResponse(stored) else { return }
            resolveWaiters(key, response)
        }
    }

    /// Renews this node's lease and takes over nodes whose lease ran out.
    func keepLease() async {
        secondsUntilLease -= 1
        guard secondsUntilLease <= 0 else { return }
        secondsUntilLease = 3
        let now = Date()
        try? await store.renewLease(nodeID: configuration.nodeID, until: now.addingTimeInterval(Self.leaseLength), now: now)
        guard let taken = try? await store.takeOverExpiredNodes(now: now, except: configuration.nodeID),
              !taken.isEmpty else { return }
        logger.warning("took over nodes whose lease ran out", metadata: ["nodes": "\(taken.joined(separator: ","))"])
        try? await store.notify(channel: Store.clusterChannel, payload: ClusterMessage.due.text)
    }
}
