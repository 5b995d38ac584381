/// Why an agent operation failed or why a session ended. Every public
/// entry point of the SDK throws exactly this type.
public enum AgentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A setting is unusable (bad URL, agent id, token, ws:// without consent …).
    case invalidConfiguration(String)
    /// An argument of a call is unusable (a reserved or malformed channel …).
    case invalidArgument(String)
    /// The agent's key file or the pinned server key file is missing,
    /// unreadable, malformed or too open.
    case keyFile(path: String, problem: String)
    /// No TCP connection, TLS handshake or WebSocket upgrade with this URL.
    case unreachable(url: String, reason: String)
    /// The gateway's certificate is not trusted by the CA file, or its
    /// SHA-256 differs from the pinned one.
    case tlsVerificationFailed(url: String)
    /// `auth_ok` was signed by another server key than the configured or
    /// pinned one (b64 of both). The agent stops: retrying cannot help.
    case serverKeyMismatch(expected: String, received: String)
    /// The gateway refused the handshake: an `auth_error` (§3.2) or an HTTP
    /// refusal before the upgrade (§2), with its code and message.
    case refused(code: String, message: String)
    /// The gateway sent something that fails the protocol's checks.
    case protocolViolation(String)
    /// The session ended with this WebSocket close code.
    case closed(code: UInt16)
    /// No message or pong from the gateway for three heartbeat intervals.
    case heartbeatTimeout
    /// A request got no response in time.
    case timeout
    /// The payload does not fit in one message (1 MiB sealed).
    case payloadTooLarge(bytes: Int, limit: Int)
    /// The in-memory queue of unacknowledged up messages is full.
    case queueFull
    /// The agent is not running (never started, or stopped).
    case notRunning
    /// The agent was stopped while this operation waited.
    case stopped
    /// The waiting task was cancelled.
    case cancelled

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): "invalid configuration: \(why)"
        case .invalidArgument(let why): "invalid argument: \(why)"
        case .keyFile(let path, let problem): "key file \(path): \(problem)"
        case .unreachable(let url, let reason): "gateway unreachable at \(url): \(reason)"
        case .tlsVerificationFailed(let url):
            "TLS verification failed for \(url): the certificate is not trusted by the CA file or does not match the pinned SHA-256"
        case .serverKeyMismatch(let expected, let received):
            "server key mismatch: the gateway signed auth_ok with \(received), expected \(expected)"
        case .refused(let code, let message): "gateway refused the agent: \(code)\(message.isEmpty ? "" : " (\(message))")"
        case .protocolViolation(let why): "protocol violation by the gateway: \(why)"
        case .closed(let code): "session closed with \(code) (\(CloseCodes.meaning(code)))"
        case .heartbeatTimeout: "no message from the gateway for three heartbeat intervals"
        case .timeout: "timed out"
        case .payloadTooLarge(let bytes, let limit): "payload of \(bytes) bytes is over the limit of \(limit)"
        case .queueFull: "the queue of unacknowledged messages is full"
        case .notRunning: "the agent is not running"
        case .stopped: "the agent stopped"
        case .cancelled: "cancelled"
        }
    }

    /// A handshake refusal whose code says this agent is not admitted
    /// (§3.2's 4003 group); retrying only helps after an operator acts.
    public var isEnrollmentRefusal: Bool {
        if case .refused(let code, _) = self {
            return ["key_mismatch", "revoked", "pending_approval", "unknown_agent"].contains(code)
        }
        return false
    }
}

/// The close codes of RFC 6455 and §5 that the agent sends or interprets.
public enum CloseCodes {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let unsupportedData: UInt16 = 1003
    public static let abnormal: UInt16 = 1006
    public static let tryAgainLater: UInt16 = 1013
    public static let handshakeFailed: UInt16 = 4001
    public static let authTimeout: UInt16 = 4002
    public static let notAdmitted: UInt16 = 4003
    public static let badMessage: UInt16 = 4004
    public static let heartbeatTimeout: UInt16 = 4006
    public static let policy: UInt16 = 4008
    public static let replaced: UInt16 = 4009
    public static let sessionExpired: UInt16 = 4010
    public static let rateLimited: UInt16 = 4029

    static func meaning(_ code: UInt16) -> String {
        switch code {
        case normal: "normal closure"
        case goingAway: "gateway shutting down"
        case unsupportedData: "unsupported data"
        case abnormal: "connection lost"
        case 1009: "message too big"
        case tryAgainLater: "try again later"
        case handshakeFailed: "handshake failed"
        case authTimeout: "auth timeout"
        case notAdmitted: "not admitted or revoked"
        case badMessage: "bad message"
        case heartbeatTimeout: "heartbeat timeout"
        case policy: "rate limit or policy violation"
        case replaced: "replaced by a newer session of this agent"
        case sessionExpired: "session expired"
        case rateLimited: "rate limited"
        default: "unexpected"
        }
    }
}
