import AegisProtocol

/// One gateway endpoint: `wss://host[:port][/path]` or `ws://…`. The path
/// defaults to `/ws/agent` (§2), the port to 443 / 80.
public struct GatewayURL: Sendable, Hashable, CustomStringConvertible {
    public var secure: Bool
    public var host: String
    public var port: UInt16
    public var path: String

    public init(secure: Bool, host: String, port: UInt16, path: String = "/ws/agent") {
        self.secure = secure
        self.host = host
        self.port = port
        self.path = path
    }

    public init(_ text: String) throws(AgentError) {
        let rest: Substring
        if text.hasPrefix("wss://") {
            secure = true
            rest = text.dropFirst(6)
        } else if text.hasPrefix("ws://") {
            secure = false
            rest = text.dropFirst(5)
        } else {
            throw .invalidConfiguration("gateway URL \(text): want wss://host:port/ws/agent (or ws:// with plaintext allowed)")
        }
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        let p = String(rest[slash...])
        path = p.isEmpty ? "/ws/agent" : p
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw .invalidConfiguration("gateway URL \(text): unclosed [ in the host")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw .invalidConfiguration("gateway URL \(text): bad port") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        if let portText {
            guard let n = UInt16(portText), n > 0 else {
                throw .invalidConfiguration("gateway URL \(text): bad port \(portText)")
            }
            port = n
        } else {
            port = secure ? 443 : 80
        }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "@" || $0 == "/" }) else {
            throw .invalidConfiguration("gateway URL \(text): bad host")
        }
        guard !path.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" }) else {
            throw .invalidConfiguration("gateway URL \(text): bad path")
        }
    }

    public var description: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return "\(secure ? "wss" : "ws")://\(h):\(port)\(path)"
    }
}

/// How the gateway's TLS certificate is checked (wss:// only).
public enum TLSTrust: Sendable, Equatable {
    /// The system's CA store, with the URL's host name checked.
    case system
    /// This CA (PEM), with the URL's host name checked.
    case caFile(String)
    /// Exactly the certificate whose DER SHA-256 is this (64 hex digits;
    /// colons allowed). Name and dates are not checked: the pin decides.
    case pinnedSHA256(String)
}

/// How the gateway's long-term Ed25519 key (`server_key` in auth_ok) is
/// checked.
public enum ServerKeyTrust: Sendable, Equatable {
    /// The key the agent was configured with (32 bytes).
    case pinned([UInt8])
    /// Trust on first use: the first auth_ok whose signature verifies pins
    /// its key. With a file, the pin is read from it when it exists and
    /// written to it when it is learnt, so it survives restarts; without,
    /// it lasts for this process.
    case trustOnFirstUse(pinFile: String?)
}

/// Reconnect delays: full jitter, i.e. uniform in
/// [0, min(cap, initial × 2^n)] for the n-th retry since the last stable
/// session (n = 0 first). Agents of a fleet that lost the same gateway at
/// the same instant thus come back spread over the window, and spread
/// further each time the gateway is still not back.
public struct BackoffPolicy: Sendable, Equatable {
    public var initial: Duration
    public var cap: Duration

    public init(initial: Duration = .seconds(2), cap: Duration = .seconds(60)) {
        self.initial = initial
        self.cap = cap
    }

    /// The upper bound of the n-th retry's delay.
    public func ceiling(retry n: Int) -> Duration {
        var d = initial
        for _ in 0..<min(max(n, 0), 62) {
            if d >= cap { break }
            d = d * 2
        }
        return min(d, cap)
    }

    /// `unit` is a uniform random number in [0, 1].
    public func delay(retry n: Int, unit: Double) -> Duration {
        ceiling(retry: n) * min(max(unit, 0), 1)
    }
}

/// A source of uniform random numbers in [0, 1] for the backoff's jitter;
/// tests inject a fixed sequence.
public protocol JitterSource: Sendable {
    mutating func nextUnit() -> Double
}

public struct SystemJitter: JitterSource {
    private var generator = SystemRandomNumberGenerator()
    public init() {}
    public mutating func nextUnit() -> Double { Double.random(in: 0...1, using: &generator) }
}

/// Everything an agent needs to run. Defaults follow PROTOCOL.md §6.
public struct AgentConfiguration: Sendable {
    /// Tried in order; a failed attempt moves to the next.
    public var urls: [GatewayURL]
    public var agentID: String
    public var identity: Identity
    public var serverKey: ServerKeyTrust
    public var tls: TLSTrust = .system
    /// ws:// URLs are refused unless this is set (local development, or a
    /// TLS-terminating proxy on the same host).
    public var allowPlaintext = false
    /// `X-Enrollment-Token` for gateways that enroll by token.
    public var enrollmentToken: String?
    public var backoff = BackoffPolicy()
    public var jitter: any JitterSource = SystemJitter()
    /// Consecutive failed connection attempts (no session in between)
    /// after which the agent stops with the last error; nil: never.
    public var maxAttemptsWithoutSession: Int?
    /// Handshake refusals (auth_error / HTTP codes) that stop the agent
    /// instead of retrying. §3.2 says to retry later, so none by default.
    public var stopOnRefusal: Set<String> = []
    /// A certificate that fails verification stops the agent (a wrong pin
    /// or CA will not fix itself); false: keep retrying with backoff.
    public var stopOnTLSVerificationFailure = true
    /// Down ids already processed are remembered this long (at least the
    /// gateway's down time to live, §5) …
    public var processedIDLifetime: Duration = .seconds(3600)
    /// … and at most this many (the oldest are forgotten first).
    public var maxProcessedIDs = 100_000
    /// Up messages sent and not yet acked in one session; the rest wait.
    public var maxInFlight = 1024
    /// Unacknowledged up messages kept in memory; `send` fails past it.
    public var maxQueuedMessages = 100_000
    public var maxQueuedBytes = 256 << 20
    /// A session that lived this long resets the backoff.
    public var stableSessionDuration: Duration = .seconds(30)
    /// After the upgrade, how long to wait for auth_ok.
    public var authTimeout: Duration = .seconds(15)
    /// The C client has no wake-up call, so the I/O thread polls for the
    /// application's commands at this interval while the network is idle.
    public var pollInterval: Duration = .milliseconds(10)
    /// Appended to `User-Agent: Aegis-Agent/1.0`.
    public var userAgentComment = "aegis-agent-swift"
    /// WebSocket message limit (the gateway's default, §6).
    public var maxMessageBytes = 1 << 20

    public init(urls: [GatewayURL], agentID: String, identity: Identity, serverKey: ServerKeyTrust) {
        self.urls = urls
        self.agentID = agentID
        self.identity = identity
        self.serverKey = serverKey
    }

    /// Checks what can be checked before connecting.
    public func validate() throws(AgentError) {
        guard !urls.isEmpty else { throw .invalidConfiguration("no gateway URL") }
        for url in urls where !url.secure && !allowPlaintext {
            throw .invalidConfiguration("\(url) is plaintext: use wss://, or allow plaintext explicitly")
        }
        guard FieldSyntax.isValidAgentID(agentID) else {
            throw .invalidConfiguration("agent id \"\(agentID)\": want 1–255 of [A-Za-z0-9._:@-]")
        }
        if let token = enrollmentToken {
            let b64u = token.utf8.allSatisfy { c in
                (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2d || c == 0x5f
            }
            guard b64u, (16...256).contains(token.utf8.count) else {
                throw .invalidConfiguration("enrollment token: want 16–256 characters of the b64u alphabet")
            }
        }
        if case .pinned(let key) = serverKey, !FieldSyntax.isValidPublicKey(key) {
            throw .invalidConfiguration("server key: want b64 of a 32-byte Ed25519 public key")
        }
        if case .pinnedSHA256(let hex) = tls, TLSTrust.normalizedPin(hex) == nil {
            throw .invalidConfiguration("certificate pin: want 64 hex digits (SHA-256)")
        }
        guard backoff.initial > .zero, backoff.cap >= backoff.initial else {
            throw .invalidConfiguration("backoff: want 0 < initial ≤ cap")
        }
        guard maxInFlight > 0, maxQueuedMessages > 0, maxProcessedIDs > 0 else {
            throw .invalidConfiguration("limits must be positive")
        }
        if let n = maxAttemptsWithoutSession, n < 1 {
            throw .invalidConfiguration("max attempts: want at least 1")
        }
    }
}

extension TLSTrust {
    /// 64 lower-case hex digits, or nil.
    static func normalizedPin(_ text: String) -> String? {
        let hex = text.lowercased().filter { $0 != ":" }
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit }) else { return nil }
        return hex
    }
}
