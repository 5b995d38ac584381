import Foundation

// The values the admin API's store calls take and return (Store+Admin.swift).

/// What an API token may do. Scopes nest: `admin` includes `send`, `send`
/// includes `read`; a token's power is its highest scope.
public enum Scope: String, Sendable, CaseIterable, Comparable {
    case read, send, admin

    private var rank: Int {
        switch self {
        case .read: 0
        case .send: 1
        case .admin: 2
        }
    }

    public static func < (a: Scope, b: Scope) -> Bool { a.rank < b.rank }
}

/// One row of admin_tokens (never the token text: only its hash is stored).
public struct ApiTokenRecord: Sendable, Equatable {
    public var id: UUID
    public var name: String
    public var scopes: [Scope]
    public var createdAt: Date
    public var lastUsedAt: Date?
    public var revokedAt: Date?

    public init(id: UUID, name: String, scopes: [Scope], createdAt: Date, lastUsedAt: Date? = nil, revokedAt: Date? = nil) {
        self.id = id
        self.name = name
        self.scopes = scopes
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
    }

    /// The highest scope the token carries.
    public var power: Scope { scopes.max() ?? .read }
}

/// An agent's down messages by status (the admin API's `queue`).
public struct QueueCounts: Sendable, Equatable {
    public var queued = 0
    public var sent = 0
    public var delivered = 0
    public var failed = 0

    public init(queued: Int = 0, sent: Int = 0, delivered: Int = 0, failed: Int = 0) {
        self.queued = queued
        self.sent = sent
        self.delivered = delivered
        self.failed = failed
    }

    /// Not yet delivered nor failed: what counts against a queue limit.
    public var open: Int { queued + sent }
}

/// A send's idempotency: the caller's key and a hash of what it asked.
public struct IdempotencyKey: Sendable, Equatable {
    public var key: String
    public var requestHash: [UInt8]

    public init(key: String, requestHash: [UInt8]) {
        self.key = key
        self.requestHash = requestHash
    }
}

/// What `enqueueDown(_:idempotency:)` did.
public enum IdempotentEnqueue: Sendable, Equatable {
    /// Queued now: the row's id and the message's id.
    case queued(rowID: UUID, msgID: String)
    /// The key was used before for this agent: the first message, its
    /// status, and whether the request matched the first one.
    case existing(msgID: String, status: MessageStatus, sameRequest: Bool)
}

/// One down message's delivery state (`downMessages(msgID:)`).
public struct DownState: Sendable, Equatable {
    public var agentID: String
    public var msgID: String
    public var type: String
    public var channel: String
    public var ref: String?
    public var status: MessageStatus
    public var sendCount: Int
    public var createdAt: Date
    public var expiresAt: Date?
    public var lastAttemptAt: Date?
    public var deliveredAt: Date?
    public var broadcastID: UUID?
}

/// A broadcast to queue: the message, and who gets it.
public struct BroadcastMessage: Sendable, Equatable {
    public var id: UUID
    public var type: String
    public var channel: String
    public var payload: [UInt8]
    public var expiresAt: Date?
    /// Only agents whose session is recorded active.
    public var connectedOnly: Bool
    /// Only these agents (nil: every active agent).
    public var agentIDs: [String]?

    public init(id: UUID, type: String, channel: String, payload: [UInt8], expiresAt: Date?,
                connectedOnly: Bool, agentIDs: [String]?) {
        self.id = id
        self.type = type
        self.channel = channel
        self.payload = payload
        self.expiresAt = expiresAt
        self.connectedOnly = connectedOnly
        self.agentIDs = agentIDs
    }

    /// The down message id every recipient sees.
    public var msgID: String { id.uuidString.lowercased() }
}

/// A broadcast as stored: the message and each recipient's state.
public struct BroadcastRecord: Sendable, Equatable {
    public var id: UUID
    public var type: String
    public var channel: String
    public var createdAt: Date
    public var recipients: [DownState]
}

/// Filters of `listMessages`.
public struct MessageQuery: Sendable, Equatable {
    public var agentID: String?
    public var channel: String?
    public var direction: MessageDirection
    public var afterSeq: Int64
    public var limit: Int

    public init(agentID: String? = nil, channel: String? = nil, direction: MessageDirection = .up,
                afterSeq: Int64 = 0, limit: Int = 100) {
        self.agentID = agentID
        self.channel = channel
        self.direction = direction
        self.afterSeq = afterSeq
        self.limit = limit
    }
}
