import AegisProtocol

/// The `code` of an `auth_error` (§3.2), with the close code that follows it.
public enum AuthErrorCode: String, Sendable, CaseIterable, CustomStringConvertible {
    case malformed
    case ephemeralRequired = "ephemeral_required"
    case clockSkew = "clock_skew"
    case replay
    case invalidSignature = "invalid_signature"
    case keyMismatch = "key_mismatch"
    case revoked
    case pendingApproval = "pending_approval"
    case unknownAgent = "unknown_agent"
    case rateLimited = "rate_limited"

    /// The §3.2 table: 4001 for a bad request, 4003 for a refused agent,
    /// 4029 for a rate limit.
    public var closeCode: CloseCode {
        switch self {
        case .malformed, .ephemeralRequired, .clockSkew, .replay, .invalidSignature: .authFailed
        case .keyMismatch, .revoked, .pendingApproval, .unknownAgent: .agentRefused
        case .rateLimited: .handshakeRateLimited
        }
    }

    /// The code the protocol core gives a failed handshake step; `malformed`
    /// for a failure the core has no handshake code for (it never happens
    /// for the errors of verification and key derivation).
    public init(_ error: AegisError) {
        self = error.authCode.flatMap(AuthErrorCode.init(rawValue:)) ?? .malformed
    }

    public var description: String { rawValue }
}

/// A WebSocket close code the gateway sends (§3.2, §5).
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// 1001: the gateway is shutting down.
    public static let goingAway = CloseCode(rawValue: 1001)
    /// 1013: try again later (the store is unavailable or behind).
    public static let tryAgainLater = CloseCode(rawValue: 1013)
    /// 4001: the auth request failed a check (§3.2).
    public static let authFailed = CloseCode(rawValue: 4001)
    /// 4002: no auth request within the auth timeout; no `auth_error` is sent.
    public static let authTimeout = CloseCode(rawValue: 4002)
    /// 4003: the agent is refused by enrollment, or revoked during its session.
    public static let agentRefused = CloseCode(rawValue: 4003)
    /// 4004: a bad message after `auth_ok`.
    public static let badMessage = CloseCode(rawValue: 4004)
    /// 4006: nothing heard for three heartbeat intervals.
    public static let heartbeatTimeout = CloseCode(rawValue: 4006)
    /// 4008: rate limit or policy violation after `auth_ok`.
    public static let policyViolation = CloseCode(rawValue: 4008)
    /// 4009: replaced by a newer session of the same agent.
    public static let replaced = CloseCode(rawValue: 4009)
    /// 4010: the session reached its `expires_at`.
    public static let sessionExpired = CloseCode(rawValue: 4010)
    /// 4029: the handshake was rate limited.
    public static let handshakeRateLimited = CloseCode(rawValue: 4029)

    public var description: String { String(rawValue) }
}
