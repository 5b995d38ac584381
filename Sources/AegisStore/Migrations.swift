import AegisPQ

/// The schema, as versioned SQL applied in order at start.
///
/// Each migration runs in its own transaction together with its row in
/// `schema_migrations`, so a version is either fully there or not at all.
/// A session-level advisory lock serialises gateways that start together
/// on one database: the second waits, then finds nothing left to do.
/// Migrations are append-only: a released version is never edited; a
/// change is a new version.
public enum Migrations {
    public struct Migration: Sendable {
        public let version: Int
        public let name: String
        let sql: String
    }

    public static let all: [Migration] = [
        Migration(version: 1, name: "agents, message queue, nonces, enrollment tokens", sql: v1),
        Migration(version: 2, name: "admin API: tokens, broadcasts, idempotency keys", sql: v2),
        Migration(version: 3, name: "gateway nodes and their leases", sql: v3),
    ]

    /// The version this code expects.
    public static var latest: Int { all.last?.version ?? 0 }

    /// pg_advisory_lock key: "Aegis_mg" in ASCII.
    static let lockKey: Int64 = 0x4165_6769_735F_6D67

    static func apply(_ c: PQConnection, log: StoreLogger) throws(StoreError) -> MigrationReport {
        let int8 = [UInt32(AEGIS_PQ_OID_INT8)]
        try pq { try c.query("SELECT pg_advisory_lock($1)", types: int8, [.int64(lockKey)]) }
        defer { _ = try? c.query("SELECT pg_advisory_unlock($1)", types: int8, [.int64(lockKey)]) }
        try pq {
            try c.exec("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
        }
        let r = try pq { try c.query("SELECT version FROM schema_migrations ORDER BY version", types: [], []) }
        var done = Set<Int>()
        for i in 0..<r.rows { if let v = r.int32(i, 0) { done.insert(Int(v)) } }
        var current = done.max() ?? 0
        var applied: [Int] = []
        for m in all where !done.contains(m.version) {
            do throws(PQFailure) {
                try c.exec("BEGIN")
                try c.exec(m.sql)
                try c.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            types: [UInt32(AEGIS_PQ_OID_INT4), UInt32(AEGIS_PQ_OID_TEXT)],
                            [.int32(Int32(m.version)), .text(m.name)])
                try c.exec("COMMIT")
            } catch {
                if error.isConnectionLoss { throw StoreError(error) }
                _ = try? c.exec("ROLLBACK")
                throw StoreError.migration("version \(m.version) (\(m.name)): \(error)")
            }
            applied.append(m.version)
            current = max(current, m.version)
            log("schema: applied migration \(m.version) (\(m.name))")
        }
        if current > latest {
            log("schema: the database is at version \(current), newer than this gateway's \(latest); continuing")
        }
        return MigrationReport(applied: applied, current: current)
    }

    // Version 1: the tables of docs/gateway-design.md.
    //
    // message_queue.seq orders rows by insertion (created_at ties within a
    // transaction, and ids are random); last_attempt_at records the latest
    // send. Up rows are always 'received' and down rows never are.
    //
    // Indexes, by the query that needs them:
    //  - message_queue_due (agent_id, direction, status, next_attempt_at):
    //    an agent's due down messages (dueDown).
    //  - message_queue_listing (agent_id, direction, seq): an agent's
    //    messages in order, paged (messages(agentID:…)).
    //  - message_queue_expiry / _retry (partial, open down rows only):
    //    failExpired, by TTL and by retries.
    //  - auth_nonces_expires (expires_at): pruneNonces.
    //  - the unique (agent_id, direction, msg_id) key: duplicate detection
    //    (ON CONFLICT) and markDelivered.
    //  - agent_connections_node (node_id) WHERE is_active: a node's live
    //    sessions (deactivateNode).
    private static let v1 = """
        CREATE TABLE agent_connections (
            id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            agent_id           text NOT NULL UNIQUE CHECK (length(agent_id) BETWEEN 1 AND 255),
            public_key         bytea NOT NULL,
            enrollment         text NOT NULL CHECK (enrollment IN ('active', 'pending', 'revoked')),
            session_id         uuid,
            session_token_hash bytea,
            connected_at       timestamptz,
            last_seen          timestamptz,
            is_active          boolean NOT NULL DEFAULT false,
            node_id            text,
            revoked_at         timestamptz,
            created_at         timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX agent_connections_node ON agent_connections (node_id) WHERE is_active;

        CREATE TABLE message_queue (
            id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            seq                bigint GENERATED ALWAYS AS IDENTITY,
            agent_id           text NOT NULL,
            direction          text NOT NULL CHECK (direction IN ('up', 'down')),
            msg_id             text NOT NULL,
            message_type       text NOT NULL,
            channel            text NOT NULL,
            ref                text,
            payload            bytea NOT NULL,
            encrypted_payload  bytea,
            nonce              bytea,
            signature          bytea,
            envelope_timestamp bigint,
            session_id         uuid,
            status             text NOT NULL
                               CHECK (status IN ('received', 'queued', 'sent', 'delivered', 'failed')),
            retry_count        integer NOT NULL DEFAULT 0,
            created_at         timestamptz NOT NULL DEFAULT now(),
            expires_at         timestamptz,
            next_attempt_at    timestamptz,
            last_attempt_at    timestamptz,
            delivered_at       timestamptz,
            CONSTRAINT message_queue_agent_direction_msg UNIQUE (agent_id, direction, msg_id),
            CONSTRAINT message_queue_status_direction CHECK ((direction = 'up') = (status = 'received'))
        );
        CREATE INDEX message_queue_due ON message_queue (agent_id, direction, status, next_attempt_at);
        CREATE INDEX message_queue_listing ON message_queue (agent_id, direction, seq);
        CREATE INDEX message_queue_expiry ON message_queue (expires_at)
            WHERE direction = 'down' AND status IN ('queued', 'sent');
        CREATE INDEX message_queue_retry ON message_queue (next_attempt_at)
            WHERE direction = 'down' AND status = 'sent';

        CREATE TABLE auth_nonces (
            agent_id   text NOT NULL,
            nonce      bytea NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (agent_id, nonce)
        );
        CREATE INDEX auth_nonces_expires ON auth_nonces (expires_at);

        CREATE TABLE enrollment_tokens (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            token_hash bytea NOT NULL UNIQUE,
            expires_at timestamptz NOT NULL,
            uses_left  integer NOT NULL CHECK (uses_left >= 0),
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        );
        """
}

extension Migrations {
    // Version 2: what the admin API needs.
    //
    //  - admin_tokens: bearer tokens by SHA-256 (the text is shown once);
    //    scopes as a comma-separated subset of read, send, admin.
    //  - broadcasts: one row per broadcast; each recipient's down message
    //    carries broadcast_id and uses the broadcast's id as its msg_id
    //    (msg ids are unique per agent, so one id serves every recipient).
    //  - idempotency_key / request_hash on down rows: a retried send with
    //    the same key finds the first row (unique per agent).
    //
    // Indexes, by the query that needs them:
    //  - message_queue_stream (direction, seq): listings across agents and
    //    the up-message stream.
    //  - message_queue_down_msg (msg_id), down only: GET /messages/{id}.
    //  - message_queue_responses (agent_id, ref), up responses only: the
    //    response to a down request.
    //  - message_queue_broadcast (broadcast_id): a broadcast's recipients.
    //  - message_queue_down_open (next_attempt_at), open down rows only:
    //    which agents have something due (agentsWithDueDown), the queue
    //    depth gauge.
    static let v2 = """
        CREATE TABLE admin_tokens (
            id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
            token_hash   bytea NOT NULL UNIQUE,
            scopes       text NOT NULL CHECK (scopes ~ '^(read|send|admin)(,(read|send|admin))*$'),
            created_at   timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at   timestamptz
        );

        CREATE TABLE broadcasts (
            id           uuid PRIMARY KEY,
            message_type text NOT NULL,
            channel      text NOT NULL,
            created_at   timestamptz NOT NULL
        );

        ALTER TABLE message_queue
            ADD COLUMN idempotency_key text,
            ADD COLUMN request_hash    bytea,
            ADD COLUMN broadcast_id    uuid;
        CREATE UNIQUE INDEX message_queue_idempotency ON message_queue (agent_id, idempotency_key)
            WHERE direction = 'down' AND idempotency_key IS NOT NULL;
        CREATE INDEX message_queue_stream ON message_queue (direction, seq);
        CREATE INDEX message_queue_down_msg ON message_queue (msg_id) WHERE direction = 'down';
        CREATE INDEX message_queue_responses ON message_queue (agent_id, ref)
            WHERE direction = 'up' AND message_type = 'response';
        CREATE INDEX message_queue_broadcast ON message_queue (broadcast_id) WHERE broadcast_id IS NOT NULL;
        CREATE INDEX message_queue_down_open ON message_queue (next_attempt_at)
            WHERE direction = 'down' AND status IN ('queued', 'sent');
        """
}

extension Migrations {
    // Version 3: the nodes of one gateway sharing this database. Each node
    // renews its lease; a survivor that finds a lease run out deletes the
    // row (exactly one survivor gets it) and takes the node's sessions and
    // down messages over.
    static let v3 = """
        CREATE TABLE gateway_nodes (
            node_id     text PRIMARY KEY CHECK (length(node_id) BETWEEN 1 AND 255),
            started_at  timestamptz NOT NULL,
            lease_until timestamptz NOT NULL
        );
        """
}

/// Runs libpq calls, turning their failures into `StoreError`s.
@discardableResult
func pq<T>(_ body: () throws -> T) throws(StoreError) -> T {
    do {
        return try body()
    } catch let e as PQFailure {
        throw StoreError(e)
    } catch let e as StoreError {
        throw e
    } catch {
        throw StoreError.server(sqlstate: "", message: "\(error)")
    }
}
