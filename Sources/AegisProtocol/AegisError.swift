import AegisCore

/// A failure reported by the protocol core, one case per `aegis_status`.
///
/// The protocol's view of a failure — the `auth_error` code, the close code,
/// the failing check of a message — comes from the core's single table, so
/// Swift never keeps a second copy of it.
public enum AegisError: Int32, Error, Sendable, CaseIterable {
    case bufferTooSmall = 1
    case invalidArgument = 2
    case outOfMemory = 3
    case random = 4
    case io = 5
    case keyFilePermissions = 6
    case base64 = 10
    case jsonSyntax = 11
    case jsonNotObject = 12
    case jsonDuplicateKey = 13
    case jsonLimit = 14
    case fieldMissing = 15
    case fieldType = 16
    case fieldEmpty = 17
    case fieldSyntax = 18
    case fieldEncoding = 19
    case badPoint = 20
    case headerMismatch = 21
    case refRule = 22
    case channelRule = 23
    case integerRange = 24
    case ephemeralRequired = 30
    case clockSkew = 31
    case replay = 32
    case keyMismatch = 33
    case revoked = 34
    case pendingApproval = 35
    case unknownAgent = 36
    case rateLimited = 37
    case keyExchange = 38
    case signature = 39
    case decrypt = 40
    case plaintext = 41
    case authRefused = 50
    case authExpiry = 51
    case serverKey = 52
    /// A status this build of the Swift layer does not know (never expected).
    case unknown = -1

    init(_ status: aegis_status) {
        self = AegisError(rawValue: Int32(status.rawValue)) ?? .unknown
    }

    var status: aegis_status { aegis_status(rawValue: UInt32(bitPattern: rawValue)) }

    /// The C name, e.g. `AEGIS_E_DECRYPT`.
    public var name: String { String(cString: aegis_status_name(status)) }

    /// The §3.2 `auth_error` code when this failure ends a handshake.
    public var authCode: String? { aegis_status_auth_code(status).map { String(cString: $0) } }

    /// Close code for a failed handshake (4001, 4003, 4029), or nil.
    public var handshakeCloseCode: UInt16? {
        let c = aegis_status_handshake_close_code(status)
        return c == 0 ? nil : UInt16(c)
    }

    /// Close code for a failed secure message (4004), or nil.
    public var messageCloseCode: UInt16? {
        let c = aegis_status_message_close_code(status)
        return c == 0 ? nil : UInt16(c)
    }

    /// The failing check of a secure message: syntax, clock_skew, decrypt,
    /// signature or plaintext.
    public var messageReason: String? {
        aegis_status_message_reason(status).map { String(cString: $0) }
    }
}

@inline(__always)
func ensureOK(_ status: aegis_status) throws(AegisError) {
    if status != AEGIS_OK { throw AegisError(status) }
}

/// Starts the core once per process (libsodium). Every entry point calls it.
enum CoreLibrary {
    static let ready: Bool = aegis_core_init() == AEGIS_OK

    static func ensure() throws(AegisError) {
        if !ready { throw .outOfMemory }
    }

    public static var version: String { String(cString: aegis_core_version()) }
}

public enum AegisCoreInfo {
    /// "1.0.0 (protocol v1-r2, libsodium 1.0.18)".
    public static var version: String {
        _ = CoreLibrary.ready
        return String(cString: aegis_core_version())
    }
}
