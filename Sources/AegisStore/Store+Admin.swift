import AegisPQ
import Foundation

// The admin API's store calls: API tokens, queue counts, idempotent sends,
// broadcasts, message listings. Same rules as Store.swift: one statement or
// one pipelined transaction per call, times passed in by the caller.

extension Store {
    // MARK: API tokens

    /// Stores a token by its hash; returns its record.
    public func createApiToken(name: String, scopes: [Scope], hash: [UInt8], at: Date = Date()) throws(StoreError) -> ApiTokenRecord {
        try withConnection { c in
            let r = try c.execute(SQL.createApiToken, [.text(name), .bytes(hash), .text(scopeText(scopes)), .timestamp(at)])
            return try apiTokenRecord(r, 0)
        }
    }

    /// The first start's admin token: stored only while no token exists at
    /// all. nil when there was one already.
    public func bootstrapApiToken(name: String, hash: [UInt8], at: Date = Date()) throws(StoreError) -> ApiTokenRecord? {
        try withConnection { c in
            let r = try c.execute(SQL.bootstrapApiToken, [.text(name), .bytes(hash), .timestamp(at)])
            return r.rows == 0 ? nil : try apiTokenRecord(r, 0)
        }
    }

    /// The live (not revoked) token with this hash.
    public func apiToken(hash: [UInt8]) throws(StoreError) -> ApiTokenRecord? {
        try withConnection { c in
            let r = try c.execute(SQL.apiTokenByHash, [.bytes(hash)])
            return r.rows == 0 ? nil : try apiTokenRecord(r, 0)
        }
    }

    public func listApiTokens() throws(StoreError) -> [ApiTokenRecord] {
        try withConnection { c in
            let r = try c.execute(SQL.listApiTokens, [])
            return try (0..<r.rows).map { i throws(StoreError) in try apiTokenRecord(r, i) }
        }
    }

    /// false when no live token has this id.
    @discardableResult
    public func revokeApiToken(id: UUID, at: Date = Date()) throws(StoreError) -> Bool {
        try withConnection { c in try c.execute(SQL.revokeApiToken, [.uuid(id), .timestamp(at)]).affected == 1 }
    }

    public func touchApiToken(id: UUID, at: Date) throws(StoreError) {
        _ = try withConnection { c in try c.execute(SQL.touchApiToken, [.uuid(id), .timestamp(at)]) }
    }

    /// Revokes an enrollment token by its id; false when none is live.
    @discardableResult
    public func revokeEnrollmentToken(id: UUID, at: Date = Date()) throws(StoreError) -> Bool {
        try withConnection { c in try c.execute(SQL.revokeTokenByID, [.uuid(id), .timestamp(at)]).affected == 1 }
    }

    // MARK: Down messages for the admin API

    /// The agent's down messages counted by status.
    public func queueCounts(agentID: String) throws(StoreError) -> QueueCounts {
        try withConnection { c in
            let r = try c.execute(SQL.queueCounts, [.text(agentID)])
            var q = QueueCounts()
            for i in 0..<r.rows {
                let n = Int(r.int64(i, 1) ?? 0)
                switch r.text(i, 0).flatMap(MessageStatus.init(rawValue:)) {
                case .queued: q.queued = n
                case .sent: q.sent = n
                case .delivered: q.delivered = n
                case .failed: q.failed = n
                case .received, nil: break
                }
            }
            return q
        }
    }

    /// The agents with a down message due at `now` (the gateway's periodic
    /// delivery pass asks once, not once per live agent).
    public func agentsWithDueDown(now: Date) throws(StoreError) -> Set<String> {
        try withConnection { c in
            let r = try c.execute(SQL.agentsWithDueDown, [.timestamp(now)])
            var out = Set<String>()
            for i in 0..<r.rows { if let a = r.text(i, 0) { out.insert(a) } }
            return out
        }
    }

    /// Queued and sent down messages of every agent (the queue-depth gauge).
    public func downQueueDepth() throws(StoreError) -> QueueCounts {
        try withConnection { c in
            let r = try c.execute(SQL.downQueueDepth, [])
            return QueueCounts(queued: Int(r.int64(0, 0) ?? 0), sent: Int(r.int64(0, 1) ?? 0))
        }
    }

    /// Queues `m` unless the agent already has a message under this key;
    /// then that message is returned (and whether the request matched).
    public func enqueueDown(_ m: DownMessage, idempotency: IdempotencyKey, at: Date = Date()) throws(StoreError) -> IdempotentEnqueue {
        try withConnection { c in
            for _ in 0..<3 {
                let ins = try c.execute(SQL.enqueueIdempotent, [
                    .text(m.agentID), .text(m.msgID), .text(m.type), .text(m.channel), .optionalText(m.ref),
                    .bytes(m.payload), .timestamp(at), .optionalTimestamp(m.expiresAt),
                    .text(idempotency.key), .bytes(idempotency.requestHash)])
                if ins.rows == 1, let id = ins.uuid(0, 0) { return .queued(rowID: id, msgID: m.msgID) }
                let r = try c.execute(SQL.byIdempotencyKey, [.text(m.agentID), .text(idempotency.key)])
                if r.rows == 1, let msgID = r.text(0, 0), let status = r.text(0, 1).flatMap(MessageStatus.init(rawValue:)) {
                    return .existing(msgID: msgID, status: status, sameRequest: r.bytes(0, 2) == idempotency.requestHash)
                }
                // The first row was inserted concurrently and is not visible yet: again.
            }
            throw StoreError.conflict(sqlstate: "", message: "idempotency key of \(m.agentID) changed during enqueue")
        }
    }

    /// Every down row with this message id (one per agent; a broadcast's
    /// id names one row per recipient).
    public func downMessages(msgID: String) throws(StoreError) -> [DownState] {
        try withConnection { c in
            let r = try c.execute(SQL.downByMsgID, [.text(msgID)])
            return try (0..<r.rows).map { i throws(StoreError) in try downState(r, i) }
        }
    }

    /// The agent's response to the down request `msgID`, if one was stored.
    public func response(agentID: String, to msgID: String) throws(StoreError) -> MessageRecord? {
        try withConnection { c in
            let r = try c.execute(SQL.responseTo, [.text(agentID), .text(msgID)])
            return r.rows == 0 ? nil : try messageRecord(r, 0)
        }
    }

    /// Records the broadcast and queues its message for every recipient in
    /// one statement; returns (row id, agent id) per recipient. The rows of
    /// `sendingNow` (agents live on the caller's node, to whom it sends at
    /// once) are recorded as sent, once, due again at `nextAttemptAt`: no
    /// delivery pass can take them in between.
    public func enqueueBroadcast(_ b: BroadcastMessage, sendingNow: [String] = [], nextAttemptAt: Date? = nil,
                                 at: Date = Date()) throws(StoreError) -> [(UUID, String)] {
        try withConnection { c in
            let r = try c.execute(SQL.enqueueBroadcast, [
                .uuid(b.id), .text(b.msgID), .text(b.type), .text(b.channel), .bytes(b.payload),
                .optionalTimestamp(b.expiresAt), .timestamp(at), .bool(b.connectedOnly),
                b.agentIDs.map { .textArray($0) } ?? .null, .textArray(sendingNow),
                .timestamp(nextAttemptAt ?? at)])
            var out: [(UUID, String)] = []
            out.reserveCapacity(r.rows)
            for i in 0..<r.rows {
                if let id = r.uuid(i, 0), let agent = r.text(i, 1) { out.append((id, agent)) }
            }
            return out
        }
    }

    public func broadcast(id: UUID) throws(StoreError) -> BroadcastRecord? {
        try withConnection { c in
            let head = try c.execute(SQL.broadcastByID, [.uuid(id)])
            guard head.rows == 1 else { return nil }
            guard let type = head.text(0, 0), let channel = head.text(0, 1), let created = head.date(0, 2) else {
                throw missing("broadcasts")
            }
            let r = try c.execute(SQL.broadcastRecipients, [.uuid(id)])
            let recipients = try (0..<r.rows).map { i throws(StoreError) in try downState(r, i) }
            return BroadcastRecord(id: id, type: type, channel: channel, createdAt: created, recipients: recipients)
        }
    }

    /// The newest message's sequence number of one direction (0: none);
    /// a stream without a resume point starts after it.
    public func lastSeq(direction: MessageDirection) throws(StoreError) -> Int64 {
        try withConnection { c in try c.execute(SQL.lastSeq, [.text(direction.rawValue)]).int64(0, 0) ?? 0 }
    }

    /// Messages in insertion order after `query.afterSeq`, of one agent or
    /// of all, optionally of one channel.
    public func listMessages(_ query: MessageQuery) throws(StoreError) -> [MessageRecord] {
        try withConnection { c in
            // Two statements, so that each keeps its index in a generic plan.
            let common: [PQParam] = [.optionalText(query.channel), .text(query.direction.rawValue),
                                     .int64(query.afterSeq), .int64(Int64(max(0, query.limit)))]
            let r = try query.agentID.map { agent in try c.execute(SQL.listAgentMessages, [.text(agent)] + common) }
                ?? c.execute(SQL.listMessages, common)
            return try (0..<r.rows).map { i throws(StoreError) in try messageRecord(r, i) }
        }
    }
}

// MARK: - Nodes (several gateways on one database)

extension Store {
    /// Registers this node or renews its lease until `until`.
    public func renewLease(nodeID: String, until: Date, now: Date) throws(StoreError) {
        _ = try withConnection { c in
            try c.execute(SQL.renewLease, [.text(nodeID), .timestamp(now), .timestamp(until)])
        }
    }

    /// Claims the nodes whose lease ran out by `now` (their rows are
    /// deleted, so one survivor gets each) and takes each over: its active
    /// sessions end, and what it had sent and not seen acked is due again
    /// at once, for whichever node the agent reconnects to.
    /// `except` (the caller's own node) is never claimed: a node that was
    /// paused past its lease renews it rather than ending its own sessions.
    public func takeOverExpiredNodes(now: Date, except nodeID: String) throws(StoreError) -> [String] {
        try withConnection { c in
            let r = try c.execute(SQL.claimExpiredNodes, [.timestamp(now), .text(nodeID)])
            var nodes: [String] = []
            for i in 0..<r.rows { if let n = r.text(i, 0) { nodes.append(n) } }
            for node in nodes {
                _ = try c.pipeline([.prepared(SQL.dueAgainForNode, [.text(node), .timestamp(now)]),
                                    .prepared(SQL.deactivateNode, [.text(node), .timestamp(now)])])
            }
            return nodes
        }
    }

    /// Leaves the cluster (a clean stop).
    public func releaseLease(nodeID: String) throws(StoreError) {
        _ = try withConnection { c in try c.execute(SQL.releaseLease, [.text(nodeID)]) }
    }
}

// MARK: - Rows

private func scopeText(_ scopes: [Scope]) -> String {
    Set(scopes).sorted().map(\.rawValue).joined(separator: ",")
}

private func apiTokenRecord(_ r: PQResult, _ i: Int) throws(StoreError) -> ApiTokenRecord {
    guard let id = r.uuid(i, 0), let name = r.text(i, 1), let scopes = r.text(i, 2),
          let created = r.date(i, 3) else { throw missing("admin_tokens") }
    return ApiTokenRecord(id: id, name: name, scopes: scopes.split(separator: ",").compactMap { Scope(rawValue: String($0)) },
                          createdAt: created, lastUsedAt: r.date(i, 4), revokedAt: r.date(i, 5))
}

private func downState(_ r: PQResult, _ i: Int) throws(StoreError) -> DownState {
    guard let agentID = r.text(i, 0), let msgID = r.text(i, 1), let type = r.text(i, 2), let channel = r.text(i, 3),
          let status = r.text(i, 5).flatMap(MessageStatus.init(rawValue:)), let sends = r.int32(i, 6),
          let created = r.date(i, 7) else { throw missing("message_queue (down state)") }
    return DownState(agentID: agentID, msgID: msgID, type: type, channel: channel, ref: r.text(i, 4), status: status,
                     sendCount: Int(sends), createdAt: created, expiresAt: r.date(i, 8), lastAttemptAt: r.date(i, 9),
                     deliveredAt: r.date(i, 10), broadcastID: r.uuid(i, 11))
}

// MARK: - The statements

extension SQL {
    static let apiTokenColumns = "id, name, scopes, created_at, last_used_at, revoked_at"
    /// The column order downState() reads.
    static let downStateColumns = """
        agent_id, msg_id, message_type, channel, ref, status, retry_count, created_at, expires_at, \
        last_attempt_at, delivered_at, broadcast_id
        """

    static let createApiToken = Statement(
        name: "aegis_create_api_token",
        sql: """
            INSERT INTO admin_tokens (name, token_hash, scopes, created_at) VALUES ($1, $2, $3, $4)
            RETURNING \(apiTokenColumns)
            """,
        types: [text, bytea, text, timestamptz])

    static let bootstrapApiToken = Statement(
        name: "aegis_bootstrap_api_token",
        sql: """
            INSERT INTO admin_tokens (name, token_hash, scopes, created_at)
            SELECT $1, $2, 'admin', $3 WHERE NOT EXISTS (SELECT 1 FROM admin_tokens)
            RETURNING \(apiTokenColumns)
            """,
        types: [text, bytea, timestamptz])

    static let apiTokenByHash = Statement(
        name: "aegis_api_token_by_hash",
        sql: "SELECT \(apiTokenColumns) FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        types: [bytea])

    static let listApiTokens = Statement(
        name: "aegis_list_api_tokens",
        sql: "SELECT \(apiTokenColumns) FROM admin_tokens ORDER BY created_at, id",
        types: [])

    static let revokeApiToken = Statement(
        name: "aegis_revoke_api_token",
        sql: "UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        types: [uuid, timestamptz])

    static let touchApiToken = Statement(
        name: "aegis_touch_api_token",
        sql: "UPDATE admin_tokens SET last_used_at = greatest(last_used_at, $2) WHERE id = $1",
        types: [uuid, timestamptz])

    static let revokeTokenByID = Statement(
        name: "aegis_revoke_enrollment_token_by_id",
        sql: "UPDATE enrollment_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        types: [uuid, timestamptz])

    static let queueCounts = Statement(
        name: "aegis_queue_counts",
        sql: """
            SELECT status, count(*) FROM message_queue
            WHERE agent_id = $1 AND direction = 'down'
            GROUP BY status
            """,
        types: [text])

    static let renewLease = Statement(
        name: "aegis_renew_lease",
        sql: """
            INSERT INTO gateway_nodes (node_id, started_at, lease_until) VALUES ($1, $2, $3)
            ON CONFLICT (node_id) DO UPDATE SET lease_until = excluded.lease_until
            """,
        types: [text, timestamptz, timestamptz])

    static let claimExpiredNodes = Statement(
        name: "aegis_claim_expired_nodes",
        sql: "DELETE FROM gateway_nodes WHERE lease_until < $1 AND node_id <> $2 RETURNING node_id",
        types: [timestamptz, text])

    static let dueAgainForNode = Statement(
        name: "aegis_due_again_for_node",
        sql: """
            UPDATE message_queue SET next_attempt_at = $2
            WHERE direction = 'down' AND status = 'sent' AND next_attempt_at > $2
              AND agent_id IN (SELECT agent_id FROM agent_connections WHERE node_id = $1 AND is_active)
            """,
        types: [text, timestamptz])

    static let releaseLease = Statement(
        name: "aegis_release_lease",
        sql: "DELETE FROM gateway_nodes WHERE node_id = $1",
        types: [text])

    static let agentsWithDueDown = Statement(
        name: "aegis_agents_with_due_down",
        sql: """
            SELECT DISTINCT agent_id FROM message_queue
            WHERE direction = 'down' AND status IN ('queued', 'sent') AND next_attempt_at <= $1
              AND (expires_at IS NULL OR expires_at > $1)
            """,
        types: [timestamptz])

    static let downQueueDepth = Statement(
        name: "aegis_down_queue_depth",
        sql: """
            SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'sent')
            FROM message_queue WHERE direction = 'down' AND status IN ('queued', 'sent')
            """,
        types: [])

    static let enqueueIdempotent = Statement(
        name: "aegis_enqueue_idempotent",
        sql: """
            INSERT INTO message_queue (agent_id, direction, msg_id, message_type, channel, ref, payload,
                                       status, created_at, expires_at, next_attempt_at, idempotency_key, request_hash)
            VALUES ($1, 'down', $2, $3, $4, $5, $6, 'queued', $7, $8, $7, $9, $10)
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
        types: [text, text, text, text, text, bytea, timestamptz, timestamptz, text, bytea])

    static let byIdempotencyKey = Statement(
        name: "aegis_by_idempotency_key",
        sql: """
            SELECT msg_id, status, request_hash FROM message_queue
            WHERE agent_id = $1 AND direction = 'down' AND idempotency_key = $2
            """,
        types: [text, text])

    static let downByMsgID = Statement(
        name: "aegis_down_by_msg_id",
        sql: "SELECT \(downStateColumns) FROM message_queue WHERE direction = 'down' AND msg_id = $1 ORDER BY agent_id",
        types: [text])

    static let responseTo = Statement(
        name: "aegis_response_to",
        sql: """
            SELECT \(messageColumns) FROM message_queue
            WHERE agent_id = $1 AND direction = 'up' AND message_type = 'response' AND ref = $2
            ORDER BY seq LIMIT 1
            """,
        types: [text, text])

    /// The broadcast's row and its recipients' rows in one statement (a
    /// data-modifying WITH runs whether or not the rest reads it).
    static let enqueueBroadcast = Statement(
        name: "aegis_enqueue_broadcast",
        sql: """
            WITH b AS (
                INSERT INTO broadcasts (id, message_type, channel, created_at) VALUES ($1, $3, $4, $7)
            )
            INSERT INTO message_queue (agent_id, direction, msg_id, message_type, channel, payload, status,
                                       retry_count, created_at, expires_at, next_attempt_at, last_attempt_at,
                                       broadcast_id)
            SELECT a.agent_id, 'down', $2, $3, $4, $5,
                   CASE WHEN now_sending THEN 'sent' ELSE 'queued' END, CASE WHEN now_sending THEN 1 ELSE 0 END,
                   $7, $6, CASE WHEN now_sending THEN $11 ELSE $7 END, CASE WHEN now_sending THEN $7 END, $1
            FROM agent_connections a
            LEFT JOIN (SELECT DISTINCT unnest($10::text[]) AS agent_id) l USING (agent_id),
            LATERAL (SELECT l.agent_id IS NOT NULL AS now_sending) s
            WHERE a.enrollment = 'active'
              AND (NOT $8 OR a.is_active)
              AND ($9::text[] IS NULL OR a.agent_id = ANY($9))
            ORDER BY a.agent_id
            ON CONFLICT DO NOTHING
            RETURNING id, agent_id
            """,
        types: [uuid, text, text, text, bytea, timestamptz, timestamptz, bool, textArray, textArray, timestamptz])

    static let broadcastByID = Statement(
        name: "aegis_broadcast_by_id",
        sql: "SELECT message_type, channel, created_at FROM broadcasts WHERE id = $1",
        types: [uuid])

    static let broadcastRecipients = Statement(
        name: "aegis_broadcast_recipients",
        sql: """
            SELECT \(downStateColumns) FROM message_queue
            WHERE broadcast_id = $1 AND direction = 'down' ORDER BY agent_id
            """,
        types: [uuid])

    static let lastSeq = Statement(
        name: "aegis_last_seq",
        sql: "SELECT coalesce(max(seq), 0)::int8 FROM message_queue WHERE direction = $1",
        types: [text])

    /// By message_queue_listing.
    static let listAgentMessages = Statement(
        name: "aegis_list_agent_messages",
        sql: """
            SELECT \(messageColumns) FROM message_queue
            WHERE agent_id = $1 AND ($2::text IS NULL OR channel = $2) AND direction = $3 AND seq > $4
            ORDER BY seq
            LIMIT $5
            """,
        types: [text, text, text, int8, int8])

    /// By message_queue_stream.
    static let listMessages = Statement(
        name: "aegis_list_messages",
        sql: """
            SELECT \(messageColumns) FROM message_queue
            WHERE ($1::text IS NULL OR channel = $1) AND direction = $2 AND seq > $3
            ORDER BY seq
            LIMIT $4
            """,
        types: [text, text, int8, int8])
}
