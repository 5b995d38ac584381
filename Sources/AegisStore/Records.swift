import AegisPQ
import Foundation

// The values that go in and out of the store: Sendable structs, nothing
// that refers to a connection. Times are `Date`s (PostgreSQL keeps
// microseconds); ids of rows are `UUID`s; byte strings are `[UInt8]`.

/// What the store reports when a call fails.
public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// PostgreSQL cannot be reached, or the connection broke during the call
    /// (server stopped, restarting, out of connections). Retryable: the
    /// store reconnects by itself on a later call, with backoff. The outcome
    /// of a write in flight is unknown (it may have committed), which is
    /// why the writes are idempotent (up messages, down enqueue) or
    /// harmless to repeat.
    case unavailable(String)
    /// A constraint refused the row (SQLSTATE class 23): `constraint` names it.
    case constraint(constraint: String, sqlstate: String, message: String)
    /// An argument the database cannot take: an over-long or NUL-containing
    /// text, a value out of range (checked here, or SQLSTATE class 22).
    case invalid(String)
    /// A serialization failure or deadlock (class 40): retry the call.
    case conflict(sqlstate: String, message: String)
    /// The schema could not be brought to this version (Migrations).
    case migration(String)
    /// Any other server error.
    case server(sqlstate: String, message: String)

    /// Whether trying the same call again later can succeed.
    public var isRetryable: Bool {
        switch self {
        case .unavailable, .conflict: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .unavailable(let m): "database unavailable: \(m)"
        case .constraint(let c, let s, let m): "constraint \(c) violated (SQLSTATE \(s)): \(m)"
        case .invalid(let m): "invalid argument: \(m)"
        case .conflict(let s, let m): "transaction conflict (SQLSTATE \(s)): \(m)"
        case .migration(let m): "migration failed: \(m)"
        case .server(let s, let m): "database error (SQLSTATE \(s)): \(m)"
        }
    }

    init(_ f: PQFailure) {
        if f.isConnectionLoss {
            self = .unavailable(f.message)
            return
        }
        let state = f.sqlstate
        switch state == "57014" ? "57014" : state.prefix(2) {
        case "08", "53", "57":
            // Connection exceptions, insufficient resources, operator
            // intervention (shutdown, crash, starting up) — but 57014 is a
            // cancelled statement.
            self = .unavailable(f.description)
        case "23":
            self = .constraint(constraint: f.constraint, sqlstate: state, message: f.message)
        case "22":
            self = .invalid(f.description)
        case "40":
            self = .conflict(sqlstate: state, message: f.message)
        case "":
            self = f.status == AEGIS_PQ_E_INVALID_ARGUMENT ? .invalid(f.message) : .server(sqlstate: "", message: f.message)
        default:
            self = .server(sqlstate: state, message: f.message)
        }
    }
}

/// A log line from the store or the embedded cluster (no secrets in them:
/// no conninfo passwords, no payloads).
public typealias StoreLogger = @Sendable (String) -> Void

/// Prints "store: …" lines to standard output.
public let printStoreLog: StoreLogger = { line in print("store: \(line)") }

// MARK: - Agents

/// An agent's enrollment state (agent_connections.enrollment).
public enum Enrollment: String, Sendable, CaseIterable {
    case active, pending, revoked
}

/// One row of agent_connections.
public struct AgentRecord: Sendable, Equatable {
    public var id: UUID
    public var agentID: String
    public var publicKey: [UInt8]
    public var enrollment: Enrollment
    public var sessionID: UUID?
    public var sessionTokenHash: [UInt8]?
    public var connectedAt: Date?
    public var lastSeen: Date?
    public var isActive: Bool
    public var nodeID: String?
    public var revokedAt: Date?
    public var createdAt: Date
}

/// The answer of `pinAgent`: trust on first use.
public enum PinOutcome: Sendable, Equatable {
    /// The key was recorded now.
    case pinned(AgentRecord)
    /// The agent was known already; its record (and key) are unchanged.
    case existing(AgentRecord)

    public var record: AgentRecord {
        switch self {
        case .pinned(let r), .existing(let r): r
        }
    }

    public var isNew: Bool {
        if case .pinned = self { return true }
        return false
    }
}

/// What `handshakeLookup` found.
public struct HandshakeLookup: Sendable, Equatable {
    public var replaySeen: Bool
    public var agent: AgentRecord?
    public var tokenValid: Bool

    public init(replaySeen: Bool, agent: AgentRecord?, tokenValid: Bool) {
        self.replaySeen = replaySeen
        self.agent = agent
        self.tokenValid = tokenValid
    }
}

/// Which agents `listAgents` returns.
public struct AgentFilter: Sendable, Equatable {
    public var enrollment: Enrollment?
    public var activeOnly: Bool

    public init(enrollment: Enrollment? = nil, activeOnly: Bool = false) {
        self.enrollment = enrollment
        self.activeOnly = activeOnly
    }

    public static let all = AgentFilter()
}

// MARK: - Messages

/// Where a message_queue row stands. Up rows are `received`; down rows go
/// queued → sent (→ sent again after an ack timeout) → delivered, or failed.
public enum MessageStatus: String, Sendable, CaseIterable {
    case received, queued, sent, delivered, failed
}

public enum MessageDirection: String, Sendable, CaseIterable {
    case up, down
}

/// An agent-to-gateway message as the gateway opened it: the plaintext for
/// consumers, and the ciphertext, nonce, signature, envelope timestamp and
/// session exactly as received, which is everything needed to verify it
/// again later.
public struct UpMessage: Sendable, Equatable {
    public var agentID: String
    public var msgID: String
    /// The protocol's message type ("event", "request", …).
    public var type: String
    public var channel: String
    public var ref: String?
    public var plaintext: [UInt8]
    public var ciphertext: [UInt8]
    public var nonce: [UInt8]
    public var signature: [UInt8]
    public var envelopeTimestamp: UInt64
    public var sessionID: UUID

    public init(agentID: String, msgID: String, type: String, channel: String, ref: String? = nil,
                plaintext: [UInt8], ciphertext: [UInt8], nonce: [UInt8], signature: [UInt8],
                envelopeTimestamp: UInt64, sessionID: UUID) {
        self.agentID = agentID
        self.msgID = msgID
        self.type = type
        self.channel = channel
        self.ref = ref
        self.plaintext = plaintext
        self.ciphertext = ciphertext
        self.nonce = nonce
        self.signature = signature
        self.envelopeTimestamp = envelopeTimestamp
        self.sessionID = sessionID
    }
}

/// What `storeUpMessages` did with one message. Both outcomes are durable
/// (committed) and both are acked.
public struct UpStoreResult: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        /// Stored by this call.
        case stored
        /// (agent, id) was stored before — by an earlier call, or earlier in
        /// the same batch; the first copy is kept unchanged.
        case duplicate
    }

    public var agentID: String
    public var msgID: String
    public var outcome: Outcome

    public init(agentID: String, msgID: String, outcome: Outcome) {
        self.agentID = agentID
        self.msgID = msgID
        self.outcome = outcome
    }
}

/// A gateway-to-agent message to queue. The gateway seals it per session
/// when it sends it; the queue keeps the plaintext.
public struct DownMessage: Sendable, Equatable {
    public var agentID: String
    public var msgID: String
    public var type: String
    public var channel: String
    public var ref: String?
    public var payload: [UInt8]
    /// After this the message is failed instead of sent; nil: never expires.
    public var expiresAt: Date?

    public init(agentID: String, msgID: String, type: String, channel: String, ref: String? = nil,
                payload: [UInt8], expiresAt: Date?) {
        self.agentID = agentID
        self.msgID = msgID
        self.type = type
        self.channel = channel
        self.ref = ref
        self.payload = payload
        self.expiresAt = expiresAt
    }
}

/// A queued down message, as `dueDown` returns it.
public struct DownRecord: Sendable, Equatable {
    public var id: UUID
    public var agentID: String
    public var msgID: String
    public var type: String
    public var channel: String
    public var ref: String?
    public var payload: [UInt8]
    public var status: MessageStatus
    /// How many times it was sent.
    public var retryCount: Int
    public var createdAt: Date
    public var expiresAt: Date?
    public var nextAttemptAt: Date?
    public var lastAttemptAt: Date?
}

/// A full message_queue row, either direction (`messages(agentID:…)`).
public struct MessageRecord: Sendable, Equatable {
    public var id: UUID
    /// Insertion order, for paging.
    public var seq: Int64
    public var agentID: String
    public var direction: MessageDirection
    public var msgID: String
    public var type: String
    public var channel: String
    public var ref: String?
    public var payload: [UInt8]
    public var encryptedPayload: [UInt8]?
    public var nonce: [UInt8]?
    public var signature: [UInt8]?
    public var envelopeTimestamp: UInt64?
    public var sessionID: UUID?
    public var status: MessageStatus
    public var retryCount: Int
    public var createdAt: Date
    public var expiresAt: Date?
    public var nextAttemptAt: Date?
    public var lastAttemptAt: Date?
    public var deliveredAt: Date?
}

// MARK: - Notifications

/// What a LISTEN subscription delivers.
public enum ListenEvent: Sendable, Equatable {
    case notification(channel: String, payload: String)
    /// The listening connection was lost and is back: notifications sent in
    /// between are gone (NOTIFY is not queued for absent listeners), so
    /// re-read whatever they would have announced.
    case resumed
}

/// The result of `Store.migrate()`.
public struct MigrationReport: Sendable, Equatable {
    /// Versions applied by this call, in order.
    public var applied: [Int]
    /// The highest version recorded in the database afterwards.
    public var current: Int
}
