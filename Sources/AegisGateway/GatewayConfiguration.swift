#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every setting of the gateway, resolved once at start.
///
/// Sources, later ones winning: the defaults below ← a configuration file
/// ← the environment ← flags (a `[String: String]` the executable passes).
///
/// - The file is named by the flag `config` or by `AEGIS_CONFIG`. Format:
///   one `key = value` per line; blank lines and lines whose first
///   non-blank character is `#` are ignored (a `#` later in a line is part
///   of the value, since passwords and URLs may contain one); a value may
///   be wrapped in double quotes, which are removed (no escapes). An
///   unknown key or a key given twice is an error naming the line.
/// - Environment: `AEGIS_` + the key in capitals (`AEGIS_DATA_DIR`).
///   Unknown `AEGIS_*` variables are ignored (other parts of the system
///   use some); an empty variable counts as unset.
/// - Flags: the key, with `-` or `_` (`data-dir`, `--data-dir`, `data_dir`).
///   An unknown flag is an error.
///
/// Values: durations are an integer with a unit, `ms`, `s`, `m`, `h` or
/// `d` (`20ms`, `30s`, `24h`), a bare integer meaning seconds; booleans
/// are `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`; rates are tokens
/// per second with up to three decimals (`0.2`).
///
/// Each value is checked when it is read and the combination at the end;
/// the first problem is thrown as a `GatewayConfigurationError` naming the
/// setting and where its value came from. A database URL is never repeated
/// in a message (it may hold a password).
public struct GatewayConfiguration: Sendable, Equatable {
    /// The agent listener (`listen`).
    public var listen = ListenAddress(host: "0.0.0.0", port: 8443)
    /// The operators' REST listener (`admin_listen`). `off` disables it.
    public var adminListen: ListenAddress? = ListenAddress(host: "127.0.0.1", port: 8081)
    /// The admin listener's own certificate and key (`admin_tls_cert`,
    /// `admin_tls_key`, PEM); without them it serves plain HTTP.
    public var adminTLSCertificate: String?
    public var adminTLSKey: String?
    /// Certificate, keys and the embedded database (`data_dir`).
    public var dataDirectory = ".aegis"
    /// PostgreSQL (`database_url`); nil runs the embedded cluster in
    /// `<data_dir>/pg`.
    public var databaseURL: DatabaseURL?
    /// How unknown agents are admitted (`enrollment`). Default `token`: an
    /// agent enrolls only with a token an operator issued.
    public var enrollment = EnrollmentPolicy.token
    /// Accepted clock skew of the auth request and messages (`skew`).
    public var clockSkew: Duration = .seconds(60)
    /// From the 101 to the auth request (`auth_timeout`).
    public var authTimeout: Duration = .seconds(10)
    /// Announced in auth_ok (`heartbeat_interval`).
    public var heartbeatInterval: Duration = .seconds(30)
    /// From auth_ok to expires_at (`session_lifetime`).
    public var sessionLifetime: Duration = .seconds(86_400)
    /// Wait for an ack after the first send of a down message (`ack_timeout`).
    public var ackTimeout: Duration = .seconds(30)
    /// Longest wait of a stored id for its ack (`ack_coalescing_delay`, ≤ 20 ms).
    public var ackCoalescingDelay: Duration = .milliseconds(20)
    /// Resends of a down message before it fails (`retries`).
    public var downRetries = 5
    /// A down message's time to live, from creation (`down_ttl`).
    public var downTimeToLive: Duration = .seconds(3600)
    /// The longest wait between two sends of a down message (`down_backoff_cap`).
    public var downBackoffCap: Duration = .seconds(600)
    /// Handshakes per source IP (`rate_limit_ip_rate`, `rate_limit_ip_burst`):
    /// generous, since a fleet behind one NAT reconnects at once after a restart.
    public var sourceRateLimit = RateLimiter.Rule(tokensPerSecond: 20, burst: 200)
    /// Handshakes per agent id (`rate_limit_agent_rate`, `rate_limit_agent_burst`).
    public var agentRateLimit = RateLimiter.Rule(tokensPerSecond: 0.2, burst: 5)
    /// Buckets kept per family (`rate_limit_max_tracked`).
    public var rateLimitMaxTrackedKeys = 100_000
    /// Refuse auth requests without `ephemeral_key` (`require_ephemeral`).
    public var requireEphemeral = false
    /// This node's name among the gateways sharing a database (`node_id`);
    /// defaults to the host name.
    public var nodeID = "aegis"

    public init() {}

    /// The configuration of the defaults ← file ← environment ← flags.
    ///
    /// - Parameters:
    ///   - hostName: the default node id (made to fit the id syntax); nil
    ///     leaves `aegis`.
    ///   - readFile: reads the configuration file (injected for tests).
    public static func load(
        flags: [String: String] = [:], environment: [String: String] = [:], hostName: String? = nil,
        readFile: (String) throws -> String = GatewayConfiguration.readTextFile
    ) throws(GatewayConfigurationError) -> GatewayConfiguration {
        var config = GatewayConfiguration()
        if let hostName, let id = nodeID(fromHostName: hostName) { config.nodeID = id }

        var values: [String: (value: String, source: SettingSource)] = [:]

        // Flags: normalize, and find the file's name.
        var flagValues: [String: (String, SettingSource)] = [:]
        var filePath: (String, SettingSource)?
        for (rawName, value) in flags {
            var name = rawName
            while name.hasPrefix("-") { name.removeFirst() }
            name = name.replacingDashes()
            let source = SettingSource.flag(rawName)
            if name == "config" {
                filePath = (value, source)
            } else if Setting.named(name) != nil {
                flagValues[name] = (value, source)
            } else {
                throw .unknownSetting(rawName, source: source)
            }
        }
        if filePath == nil, let path = environment["AEGIS_CONFIG"], !path.isEmpty {
            filePath = (path, .environment("AEGIS_CONFIG"))
        }

        if let (path, _) = filePath {
            let text: String
            do { text = try readFile(path) } catch {
                throw .unreadableFile(path: path, reason: String(describing: error))
            }
            for (name, entry) in try parseFile(text, path: path) { values[name] = entry }
        }
        for setting in Setting.all {
            let variable = "AEGIS_" + setting.name.uppercased()
            if let value = environment[variable], !value.isEmpty {
                values[setting.name] = (value, .environment(variable))
            }
        }
        for (name, entry) in flagValues { values[name] = (entry.0, entry.1) }

        // Apply in the table's order, so the first error is predictable.
        var sources: [String: SettingSource] = [:]
        for setting in Setting.all {
            guard let (value, source) = values[setting.name] else { continue }
            if let problem = setting.apply(&config, value) {
                throw .invalidValue(setting: setting.name, message: problem, source: source)
            }
            sources[setting.name] = source
        }
        try config.validateCombination(sources: sources)
        return config
    }

    /// The checks that involve more than one setting.
    func validateCombination(sources: [String: SettingSource]) throws(GatewayConfigurationError) {
        func source(_ name: String) -> SettingSource { sources[name] ?? .defaults }
        if sessionLifetime <= heartbeatInterval * 3 {
            throw .invalidValue(
                setting: "session_lifetime",
                message: "must be longer than three heartbeat intervals (\(Self.format(heartbeatInterval * 3))), got \(Self.format(sessionLifetime))",
                source: source("session_lifetime"))
        }
        if downBackoffCap < ackTimeout {
            throw .invalidValue(
                setting: "down_backoff_cap",
                message: "must be at least ack_timeout (\(Self.format(ackTimeout))), got \(Self.format(downBackoffCap))",
                source: source("down_backoff_cap"))
        }
        if let admin = adminListen, admin == listen {
            throw .invalidValue(setting: "admin_listen", message: "must differ from listen (\(listen))",
                                source: source("admin_listen"))
        }
        if (adminTLSCertificate == nil) != (adminTLSKey == nil) {
            let missing = adminTLSCertificate == nil ? "admin_tls_cert" : "admin_tls_key"
            throw .invalidValue(setting: missing, message: "admin_tls_cert and admin_tls_key go together",
                                source: source(missing))
        }
    }

    // MARK: The file

    static func parseFile(_ text: String, path: String) throws(GatewayConfigurationError) -> [String: (value: String, source: SettingSource)] {
        var out: [String: (value: String, source: SettingSource)] = [:]
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw .fileSyntax(path: path, line: lineNumber, message: "expected key = value")
            }
            let key = line[..<eq].trimmingWhitespace()
            var value = line[line.index(after: eq)...].trimmingWhitespace()
            if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
            }
            let name = key.replacingDashes()
            guard !key.isEmpty else {
                throw .fileSyntax(path: path, line: lineNumber, message: "expected key = value")
            }
            guard Setting.named(name) != nil else {
                throw .fileSyntax(path: path, line: lineNumber, message: "unknown setting '\(key)'")
            }
            guard out[name] == nil else {
                throw .fileSyntax(path: path, line: lineNumber, message: "'\(key)' is set twice")
            }
            out[name] = (value, .file(path: path, line: lineNumber))
        }
        return out
    }

    /// Reads a UTF-8 text file.
    public static func readTextFile(_ path: String) throws -> String {
        guard let file = fopen(path, "rb") else { throw SystemError(errno: errno) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n > 0 { bytes += chunk[0..<n] }
            if n < chunk.count {
                if ferror(file) != 0 { throw SystemError(errno: errno) }
                break
            }
            if bytes.count > 1_048_576 { throw SystemError(message: "larger than 1 MiB") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The system's host name, for the default node id.
    public static func systemHostName() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A host name made to fit the id syntax (1–64 of `[A-Za-z0-9._:-]`).
    static func nodeID(fromHostName name: String) -> String? {
        let kept = String(name.unicodeScalars.filter { isIDCharacter($0) }.prefix(64))
        return kept.isEmpty ? nil : kept
    }

    static func isIDCharacter(_ c: Unicode.Scalar) -> Bool {
        c.isASCII && (("A"..."Z").contains(c) || ("a"..."z").contains(c) || ("0"..."9").contains(c) || ".-_:".unicodeScalars.contains(c))
    }

    static func format(_ d: Duration) -> String {
        let ms = d.wholeMilliseconds
        if ms % 1000 != 0 { return "\(ms)ms" }
        let s = ms / 1000
        if s != 0 && s % 86_400 == 0 { return "\(s / 86_400)d" }
        if s != 0 && s % 3600 == 0 { return "\(s / 3600)h" }
        if s != 0 && s % 60 == 0 { return "\(s / 60)m" }
        return "\(s)s"
    }
}

// MARK: - Value types

/// `HOST:PORT`, or `[IPv6]:PORT`.
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public init?(_ text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }  // IPv6 needs brackets
        }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }),
              (1...5).contains(portText.count), portText.allSatisfy(\.isASCIIDigit),
              let port = UInt16(portText) else { return nil }
        self.host = String(host)
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A PostgreSQL connection URL. Its description hides it: it may carry a
/// password.
public struct DatabaseURL: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    public let text: String

    public init?(_ text: String) {
        guard text.hasPrefix("postgres://") || text.hasPrefix("postgresql://"),
              text.count > (text.hasPrefix("postgres://") ? 11 : 13),
              !text.contains(where: { $0.isWhitespace }) else { return nil }
        self.text = text
    }

    public var description: String { "<database url>" }
    public var debugDescription: String { description }
}

// MARK: - Errors

/// Where a setting's value came from.
public enum SettingSource: Sendable, Equatable, CustomStringConvertible {
    case defaults
    case file(path: String, line: Int)
    case environment(String)
    case flag(String)

    public var description: String {
        switch self {
        case .defaults: "the defaults"
        case .file(let path, let line): "\(path):\(line)"
        case .environment(let variable): variable
        case .flag(let name): name.hasPrefix("-") ? name : "--\(name)"
        }
    }
}

/// Why the configuration was refused; `description` is the message to print.
public enum GatewayConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A setting's value is wrong: `message` says what was expected.
    case invalidValue(setting: String, message: String, source: SettingSource)
    /// A flag that names no setting.
    case unknownSetting(String, source: SettingSource)
    /// The configuration file is not `key = value` lines of known keys.
    case fileSyntax(path: String, line: Int, message: String)
    case unreadableFile(path: String, reason: String)

    /// The problem without its source, e.g. `enrollment: expected open,
    /// token or manual, got 'foo'`.
    public var summary: String {
        switch self {
        case .invalidValue(let setting, let message, _): "\(setting): \(message)"
        case .unknownSetting(let name, _): "\(name): unknown setting"
        case .fileSyntax(_, _, let message): message
        case .unreadableFile(let path, let reason): "cannot read the configuration file \(path): \(reason)"
        }
    }

    public var description: String {
        switch self {
        case .invalidValue(_, _, let source), .unknownSetting(_, let source): "\(summary) (from \(source))"
        case .fileSyntax(let path, let line, let message): "\(path):\(line): \(message)"
        case .unreadableFile: summary
        }
    }
}

struct SystemError: Error, CustomStringConvertible {
    let description: String
    init(errno code: Int32) { description = String(cString: strerror(code)) }
    init(message: String) { description = message }
}

// MARK: - The table of settings

/// One setting: its key and how a text value is applied (nil: fine; else
/// the problem, phrased "expected …, got '…'").
struct Setting: Sendable {
    let name: String
    let apply: @Sendable (inout GatewayConfiguration, String) -> String?

    static func named(_ name: String) -> Setting? { all.first { $0.name == name } }

    static let all: [Setting] = [
        Setting(name: "listen") { c, v in
            guard let a = ListenAddress(v) else { return "expected HOST:PORT with a port 0-65535, got '\(v)'" }
            c.listen = a
            return nil
        },
        Setting(name: "admin_listen") { c, v in
            if v == "off" || v.isEmpty {
                c.adminListen = nil
                return nil
            }
            guard let a = ListenAddress(v) else { return "expected HOST:PORT with a port 0-65535 or off, got '\(v)'" }
            c.adminListen = a
            return nil
        },
        Setting(name: "admin_tls_cert") { c, v in
            c.adminTLSCertificate = v.isEmpty ? nil : v
            return nil
        },
        Setting(name: "admin_tls_key") { c, v in
            c.adminTLSKey = v.isEmpty ? nil : v
            return nil
        },
        Setting(name: "data_dir") { c, v in
            guard !v.isEmpty else { return "expected a directory, got ''" }
            c.dataDirectory = v
            return nil
        },
        Setting(name: "database_url") { c, v in
            if v.isEmpty {
                c.databaseURL = nil
                return nil
            }
            guard let url = DatabaseURL(v) else {
                return "expected a postgres:// or postgresql:// URL (the value is not shown: it may hold a password)"
            }
            c.databaseURL = url
            return nil
        },
        Setting(name: "enrollment") { c, v in
            guard let mode = EnrollmentPolicy(rawValue: v) else { return "expected open, token or manual, got '\(v)'" }
            c.enrollment = mode
            return nil
        },
        duration("skew", \.clockSkew, .seconds(1)...(.seconds(3600)), wholeSeconds: true),
        duration("auth_timeout", \.authTimeout, .seconds(1)...(.seconds(60)), wholeSeconds: false),
        duration("heartbeat_interval", \.heartbeatInterval, .seconds(1)...(.seconds(3600)), wholeSeconds: true),
        duration("session_lifetime", \.sessionLifetime, .seconds(60)...(.seconds(30 * 86_400)), wholeSeconds: true),
        duration("ack_timeout", \.ackTimeout, .seconds(1)...(.seconds(3600)), wholeSeconds: false),
        duration("ack_coalescing_delay", \.ackCoalescingDelay, .zero...(.milliseconds(20)), wholeSeconds: false),
        integer("retries", \.downRetries, 0...100),
        duration("down_ttl", \.downTimeToLive, .seconds(1)...(.seconds(7 * 86_400)), wholeSeconds: false),
        duration("down_backoff_cap", \.downBackoffCap, .seconds(1)...(.seconds(86_400)), wholeSeconds: false),
        rate("rate_limit_ip_rate", \.sourceRateLimit.tokensPerSecond),
        integer("rate_limit_ip_burst", \.sourceRateLimit.burst, 1...1_000_000),
        rate("rate_limit_agent_rate", \.agentRateLimit.tokensPerSecond),
        integer("rate_limit_agent_burst", \.agentRateLimit.burst, 1...1_000_000),
        integer("rate_limit_max_tracked", \.rateLimitMaxTrackedKeys, 1...10_000_000),
        Setting(name: "require_ephemeral") { c, v in
            switch v.lowercased() {
            case "true", "yes", "on", "1": c.requireEphemeral = true
            case "false", "no", "off", "0": c.requireEphemeral = false
            default: return "expected true or false, got '\(v)'"
            }
            return nil
        },
        Setting(name: "node_id") { c, v in
            guard (1...64).contains(v.utf8.count), v.unicodeScalars.allSatisfy(GatewayConfiguration.isIDCharacter) else {
                return "expected 1-64 characters of A-Z a-z 0-9 . _ : -, got '\(v)'"
            }
            c.nodeID = v
            return nil
        },
    ]

    static func duration(_ name: String, _ path: WritableKeyPath<GatewayConfiguration, Duration> & Sendable,
                         _ range: ClosedRange<Duration>, wholeSeconds: Bool) -> Setting {
        Setting(name: name) { c, v in
            let bounds = "\(GatewayConfiguration.format(range.lowerBound)) to \(GatewayConfiguration.format(range.upperBound))"
            guard let d = parseDuration(v) else {
                return "expected a duration such as 20ms, 30s, 10m or 24h (\(bounds)), got '\(v)'"
            }
            guard range.contains(d) else { return "expected \(bounds), got '\(v)'" }
            if wholeSeconds && d.exactSeconds == nil { return "expected whole seconds, got '\(v)'" }
            c[keyPath: path] = d
            return nil
        }
    }

    static func integer(_ name: String, _ path: WritableKeyPath<GatewayConfiguration, Int> & Sendable,
                        _ range: ClosedRange<Int>) -> Setting {
        Setting(name: name) { c, v in
            guard v.allSatisfy(\.isASCIIDigit), let n = Int(v), range.contains(n) else {
                return "expected an integer from \(range.lowerBound) to \(range.upperBound), got '\(v)'"
            }
            c[keyPath: path] = n
            return nil
        }
    }

    static func rate(_ name: String, _ path: WritableKeyPath<GatewayConfiguration, Double> & Sendable) -> Setting {
        Setting(name: name) { c, v in
            guard let r = parseRate(v), r >= 0.001, r <= 1_000_000 else {
                return "expected handshakes per second from 0.001 to 1000000 (up to 3 decimals), got '\(v)'"
            }
            c[keyPath: path] = r
            return nil
        }
    }

    /// `20ms`, `30s`, `10m`, `24h`, `1d`, or a bare integer of seconds.
    static func parseDuration(_ text: String) -> Duration? {
        let digits = text.prefix { $0.isASCIIDigit }
        guard !digits.isEmpty, digits.count <= 12, let n = Int64(digits) else { return nil }
        switch text.dropFirst(digits.count) {
        case "ms": return .milliseconds(n)
        case "", "s": return .seconds(n)
        case "m": return .seconds(n * 60)
        case "h": return .seconds(n * 3600)
        case "d": return .seconds(n * 86_400)
        default: return nil
        }
    }

    /// Digits, optionally `.` and one to three digits.
    static func parseRate(_ text: String) -> Double? {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.count <= 7, whole.allSatisfy(\.isASCIIDigit) else { return nil }
        if parts.count == 2 {
            let fraction = parts[1]
            guard (1...3).contains(fraction.count), fraction.allSatisfy(\.isASCIIDigit) else { return nil }
        }
        return Double(text)
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        let text = String(self)
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let last = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(Substring(scalars[first...last]))
    }

    func replacingDashes() -> String {
        String(map { $0 == "-" ? "_" : $0 }).lowercased()
    }
}
