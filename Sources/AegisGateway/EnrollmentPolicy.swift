/// How the gateway admits agents it has not seen before (§3.1 step 4).
///
/// - `open`: trust on first use. The first successful handshake of an agent
///   id pins its key; later handshakes must present the same key.
/// - `token`: an unknown agent must present a valid enrollment token
///   (`X-Enrollment-Token`); its first successful handshake pins its key
///   and consumes one use of the token. Known agents must match their key.
/// - `manual`: an unknown agent is recorded as pending (once its signature
///   verifies) and refused with `pending_approval` until an operator
///   approves it.
///
/// In every mode a revoked agent is refused and a known agent must present
/// its pinned key.
public enum EnrollmentPolicy: String, Sendable, CaseIterable, CustomStringConvertible {
    case open, token, manual

    public var description: String { rawValue }

    /// The pure rule of step 4. `record` is what the store holds for the
    /// agent id; `presentedTokenIsValid` is whether the request carried a
    /// well-formed token (see `EnrollmentToken`) that the store knows, has
    /// not expired and has uses left.
    ///
    /// Mode × record:
    ///
    /// | record | open | token | manual |
    /// |---|---|---|---|
    /// | none | admit, first use | valid token: admit, first use, consume; else `unknown_agent` | request approval (`pending_approval`) |
    /// | active, same key | admit | admit | admit |
    /// | active, other key | `key_mismatch` | `key_mismatch` | `key_mismatch` |
    /// | pending, same key | admit, first use | valid token: admit, first use, consume; else `pending_approval` | `pending_approval` |
    /// | pending, other key | `key_mismatch` | `key_mismatch` | `key_mismatch` |
    /// | revoked | `revoked` | `revoked` | `revoked` |
    ///
    /// A pending record exists only because the gateway ran in manual mode
    /// at some point; after a switch to open or token mode it is treated
    /// like an unknown agent whose key is already named.
    public func decide(record: AgentRecord?, presentedKey: [UInt8], presentedTokenIsValid: Bool) -> EnrollmentDecision {
        switch record {
        case .revoked:
            return .refuse(.revoked)
        case .active(let pinned):
            return pinned == presentedKey ? .admit(firstUse: false, consumesToken: false) : .refuse(.keyMismatch)
        case .pending(let named):
            guard named == presentedKey else { return .refuse(.keyMismatch) }
            switch self {
            case .open: return .admit(firstUse: true, consumesToken: false)
            case .token:
                return presentedTokenIsValid ? .admit(firstUse: true, consumesToken: true) : .refuse(.pendingApproval)
            case .manual: return .refuse(.pendingApproval)
            }
        case nil:
            switch self {
            case .open: return .admit(firstUse: true, consumesToken: false)
            case .token:
                return presentedTokenIsValid ? .admit(firstUse: true, consumesToken: true) : .refuse(.unknownAgent)
            case .manual: return .requestApproval
            }
        }
    }
}

/// What the store holds for an agent id.
public enum AgentRecord: Sendable, Equatable {
    /// Enrolled, with its pinned Ed25519 public key.
    case active(publicKey: [UInt8])
    /// Waiting for an operator's approval of this key (manual mode).
    case pending(publicKey: [UInt8])
    /// Revoked by an operator; refused whatever key it presents.
    case revoked
}

/// Why step 4 refuses an agent; every one closes with 4003 (§3.2).
public enum EnrollmentRefusal: Sendable, Equatable, CaseIterable {
    case keyMismatch, revoked, pendingApproval, unknownAgent

    public var code: AuthErrorCode {
        switch self {
        case .keyMismatch: .keyMismatch
        case .revoked: .revoked
        case .pendingApproval: .pendingApproval
        case .unknownAgent: .unknownAgent
        }
    }

    public var closeCode: CloseCode { code.closeCode }

    /// The `auth_error` message: says what the operator or agent can do,
    /// never repeats a key or token.
    public var message: String {
        switch self {
        case .keyMismatch: "this agent id is enrolled with another public key"
        case .revoked: "this agent has been revoked"
        case .pendingApproval: "this agent is waiting for an operator's approval"
        case .unknownAgent: "unknown agent: enroll it or present a valid enrollment token"
        }
    }
}

/// The outcome of step 4.
public enum EnrollmentDecision: Sendable, Equatable {
    /// Go on to the signature. `firstUse`: pin the key (and make the agent
    /// active) once the handshake succeeds. `consumesToken`: the admission
    /// rests on the enrollment token, which is consumed at the same time.
    case admit(firstUse: Bool, consumesToken: Bool)
    /// Refuse with the refusal's code and 4003.
    case refuse(EnrollmentRefusal)
    /// Manual mode, unknown agent: the answer is `pending_approval`, and the
    /// agent is recorded as pending, but only if its signature verifies, so
    /// that a stranger cannot fill the approval queue with keys it does not
    /// hold.
    case requestApproval
}

/// A syntactically valid enrollment token (§2): 16–256 characters of the
/// base64url alphabet. It is never printed: its description is redacted.
public struct EnrollmentToken: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The token as presented; hash it before looking it up.
    public let text: String

    public static let lengths = 16...256

    /// Nil for a token of the wrong length or alphabet; such a token is
    /// never looked up, and counts as invalid (→ `unknown_agent`).
    public init?(_ text: String) {
        guard EnrollmentToken.isWellFormed(text) else { return nil }
        self.text = text
    }

    public static func isWellFormed(_ text: String) -> Bool {
        let bytes = text.utf8
        guard lengths.contains(bytes.count) else { return false }
        return bytes.allSatisfy { b in
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x5F
        }
    }

    public var description: String { "<enrollment token>" }
    public var debugDescription: String { description }
}
