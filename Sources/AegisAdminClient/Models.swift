// The schemas of the OpenAPI document (Sources/AegisAdmin/Resources/openapi.json),
// under their domain names. Times stay the RFC 3339 text the gateway wrote, so
// that any precision decodes and prints unchanged.

// MARK: - Enumerations

/// Which agents `listAgents` returns: `connected` (a live session) or by enrollment.
public enum AgentStatusFilter: String, Sendable, CaseIterable {
    case connected, active, pending, revoked
}

/// Where an agent stands in enrollment.
public enum AgentEnrollment: String, Sendable, Codable, CaseIterable {
    case active, pending, revoked
}

/// What the gateway sends an agent: a request (the agent answers) or an event.
public enum MessageType: String, Sendable, Codable, CaseIterable {
    case request, event
}

/// `up`: an agent sent it; `down`: the gateway sent it to an agent.
public enum MessageDirection: String, Sendable, Codable, CaseIterable {
    case up, down
}

/// Where a down message is in delivery.
public enum DeliveryStatus: String, Sendable, Codable, CaseIterable {
    case queued, sent, delivered, failed
}

/// A stored message's status: `received` for up messages, a delivery status for down ones.
public enum MessageStatus: String, Sendable, Codable, CaseIterable {
    case received, queued, sent, delivered, failed
}

/// What an API token may do; `admin` includes `send`, `send` includes `read`.
public enum APIScope: String, Sendable, Codable, CaseIterable {
    case read, send, admin
}

// MARK: - Health

/// `/healthz`: the process answers.
public struct Health: Sendable, Equatable, Decodable {
    public var status: String
}

/// `/readyz`: whether the database answers and the listeners are up.
public struct Readiness: Sendable, Equatable, Decodable {
    public enum Status: String, Sendable, Codable { case ready, notReady = "not_ready" }
    public enum Database: String, Sendable, Codable { case ok, unreachable }
    public enum Listeners: String, Sendable, Codable { case ok, draining }

    public var status: Status
    public var database: Database
    public var listeners: Listeners
}

// MARK: - Agents

public struct Agent: Sendable, Equatable, Decodable {
    public var agentID: String
    /// A live session now.
    public var connected: Bool
    /// The stored session flag: a node recorded a session and has not ended it.
    public var isActive: Bool
    /// The node of the latest session.
    public var node: String?
    public var sessionID: String?
    public var connectedAt: String?
    public var lastSeen: String?
    /// The pinned Ed25519 public key, base64.
    public var publicKey: String
    public var enrollment: AgentEnrollment
    public var createdAt: String
    public var revokedAt: String?

    enum CodingKeys: String, CodingKey {
        case agentID = "agent_id", connected, isActive = "is_active", node, sessionID = "session_id"
        case connectedAt = "connected_at", lastSeen = "last_seen", publicKey = "public_key"
        case enrollment, createdAt = "created_at", revokedAt = "revoked_at"
    }
}

/// An agent's down queue by delivery status.
public struct QueueCounts: Sendable, Equatable, Decodable {
    /// Queued, not sent yet.
    public var pending: Int
    /// Sent, ack awaited.
    public var sent: Int
    public var delivered: Int
    public var failed: Int
}

/// One agent with its down queue (`AgentStatus`: `Agent` plus `queue`).
public struct AgentStatus: Sendable, Equatable, Decodable {
    public var agent: Agent
    public var queue: QueueCounts

    enum CodingKeys: String, CodingKey { case queue }

    public init(from decoder: any Decoder) throws {
        agent = try Agent(from: decoder)
        queue = try decoder.container(keyedBy: CodingKeys.self).decode(QueueCounts.self, forKey: .queue)
    }
}

public struct AgentPage: Sendable, Equatable, Decodable {
    public var agents: [Agent]
    /// Pass it as `cursor` for the next page; nil on the last one.
    public var nextCursor: String?

    enum CodingKeys: String, CodingKey { case agents, nextCursor = "next_cursor" }
}

// MARK: - Sending

/// What a message carries.
public enum MessagePayload: Sendable, Equatable {
    /// JSON text, sent as `payload` byte for byte (checked to be one JSON value).
    case json(String)
    /// Raw bytes, sent as `payload_base64`.
    case bytes([UInt8])
}

/// A send's answer: queued or sent (202), or the agent's response within the wait (200).
public enum SendOutcome: Sendable, Equatable, Decodable {
    case accepted(SendAccepted)
    case responded(SendResponded)

    enum CodingKeys: String, CodingKey { case status }

    public init(from decoder: any Decoder) throws {
        let status = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .status)
        self = status == "responded" ? .responded(try SendResponded(from: decoder)) : .accepted(try SendAccepted(from: decoder))
    }

    /// The down message's id, for `message(id:)`.
    public var messageID: String {
        switch self {
        case .accepted(let accepted): accepted.id
        case .responded(let responded): responded.id
        }
    }
}

public struct SendAccepted: Sendable, Equatable, Decodable {
    public var id: String
    public var status: DeliveryStatus
}

public struct SendResponded: Sendable, Equatable, Decodable {
    public var id: String
    public var response: AgentResponse
}

/// An agent's response to a request: `payload` when its plaintext is JSON, else `payloadBase64`.
public struct AgentResponse: Sendable, Equatable, Decodable {
    public var id: String
    public var payload: JSONValue?
    public var payloadBase64: String?
    /// The envelope's Unix seconds.
    public var timestamp: Int64

    enum CodingKeys: String, CodingKey { case id, payload, payloadBase64 = "payload_base64", timestamp }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        payload = try container.decodePayload(forKey: .payload)
        payloadBase64 = try container.decodeIfPresent(String.self, forKey: .payloadBase64)
        timestamp = try container.decode(Int64.self, forKey: .timestamp)
    }
}

public struct BroadcastAccepted: Sendable, Equatable, Decodable {
    public var id: String
    /// Agents the message was queued for.
    public var recipients: Int
    /// Of those, sent at once to a live session on this node.
    public var sent: Int
    /// Listed agent ids that are unknown, pending or revoked.
    public var skipped: [String]
}

// MARK: - Message state

/// `GET /messages/{id}`: a down message, or a broadcast per recipient.
public enum MessageState: Sendable, Equatable, Decodable {
    case message(DownMessageState)
    case broadcast(BroadcastState)

    enum CodingKeys: String, CodingKey { case kind }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        switch try container.decode(String.self, forKey: .kind) {
        case "message": self = .message(try DownMessageState(from: decoder))
        case "broadcast": self = .broadcast(try BroadcastState(from: decoder))
        case let kind:
            throw DecodingError.dataCorruptedError(
                forKey: .kind, in: container, debugDescription: "unknown kind '\(kind)'")
        }
    }
}

public struct DownMessageState: Sendable, Equatable, Decodable {
    public var id: String
    public var agentID: String
    public var type: String
    public var channel: String
    public var status: DeliveryStatus
    public var sendCount: Int
    public var createdAt: String
    public var expiresAt: String?
    public var lastAttemptAt: String?
    public var deliveredAt: String?
    public var response: AgentResponse?

    enum CodingKeys: String, CodingKey {
        case id, agentID = "agent_id", type, channel, status, sendCount = "send_count"
        case createdAt = "created_at", expiresAt = "expires_at", lastAttemptAt = "last_attempt_at"
        case deliveredAt = "delivered_at", response
    }
}

public struct BroadcastState: Sendable, Equatable, Decodable {
    public struct Counts: Sendable, Equatable, Decodable {
        public var queued: Int
        public var sent: Int
        public var delivered: Int
        public var failed: Int
    }

    public struct Recipient: Sendable, Equatable, Decodable {
        public var agentID: String
        public var status: DeliveryStatus
        public var sendCount: Int
        public var deliveredAt: String?

        enum CodingKeys: String, CodingKey {
            case agentID = "agent_id", status, sendCount = "send_count", deliveredAt = "delivered_at"
        }
    }

    public var id: String
    public var type: String
    public var channel: String
    public var createdAt: String
    public var counts: Counts
    public var recipients: [Recipient]

    enum CodingKeys: String, CodingKey {
        case id, type, channel, createdAt = "created_at", counts, recipients
    }
}

// MARK: - Messages

/// A stored message: `payload` when its plaintext is JSON, else `payloadBase64`.
public struct Message: Sendable, Equatable, Decodable {
    public var id: String
    /// Arrival order; the stream's event id and the `after` cursor.
    public var seq: Int64
    public var agentID: String
    public var direction: MessageDirection
    public var type: String
    public var channel: String
    public var ref: String?
    public var payload: JSONValue?
    public var payloadBase64: String?
    /// The envelope's Unix seconds (up messages).
    public var timestamp: Int64?
    public var receivedAt: String
    public var status: MessageStatus

    enum CodingKeys: String, CodingKey {
        case id, seq, agentID = "agent_id", direction, type, channel, ref, payload
        case payloadBase64 = "payload_base64", timestamp, receivedAt = "received_at", status
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        seq = try container.decode(Int64.self, forKey: .seq)
        agentID = try container.decode(String.self, forKey: .agentID)
        direction = try container.decode(MessageDirection.self, forKey: .direction)
        type = try container.decode(String.self, forKey: .type)
        channel = try container.decode(String.self, forKey: .channel)
        ref = try container.decodeIfPresent(String.self, forKey: .ref)
        payload = try container.decodePayload(forKey: .payload)
        payloadBase64 = try container.decodeIfPresent(String.self, forKey: .payloadBase64)
        timestamp = try container.decodeIfPresent(Int64.self, forKey: .timestamp)
        receivedAt = try container.decode(String.self, forKey: .receivedAt)
        status = try container.decode(MessageStatus.self, forKey: .status)
    }
}

public struct MessagePage: Sendable, Equatable, Decodable {
    public var messages: [Message]
    /// Pass it as `after` for the next page; nil on the last one.
    public var nextCursor: String?

    enum CodingKeys: String, CodingKey { case messages, nextCursor = "next_cursor" }
}

// MARK: - Tokens

/// A token agents present to enroll; the secret is shown only here.
public struct EnrollmentToken: Sendable, Equatable, Decodable {
    public var id: String
    public var secret: String
    public var expiresAt: String
    public var uses: Int

    enum CodingKeys: String, CodingKey { case id, secret = "token", expiresAt = "expires_at", uses }
}

/// An API token as listed (never its secret).
public struct APIToken: Sendable, Equatable, Decodable {
    public var id: String
    public var name: String
    public var scopes: [APIScope]
    public var createdAt: String
    public var lastUsedAt: String?
    public var revokedAt: String?

    enum CodingKeys: String, CodingKey {
        case id, name, scopes, createdAt = "created_at", lastUsedAt = "last_used_at", revokedAt = "revoked_at"
    }
}

/// A new API token with its secret, which is shown only here (`ApiTokenCreated`).
public struct IssuedAPIToken: Sendable, Equatable, Decodable {
    public var token: APIToken
    public var secret: String

    enum CodingKeys: String, CodingKey { case secret = "token" }

    public init(from decoder: any Decoder) throws {
        token = try APIToken(from: decoder)
        secret = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .secret)
    }
}

struct APITokenList: Sendable, Decodable {
    var tokens: [APIToken]
}

/// A 204 answer.
public struct NoContent: Sendable, Equatable {}

extension KeyedDecodingContainer {
    /// A payload may be JSON `null`, which `decodeIfPresent` would read as absent.
    func decodePayload(forKey key: Key) throws -> JSONValue? {
        contains(key) ? try decode(JSONValue.self, forKey: key) : nil
    }
}
