import AegisProtocol
#if canImport(Glibc)
import Glibc
#endif

/// The agent's key file (the core's format: b64 of the Ed25519 seed, mode
/// 0600) and the file that pins the gateway's server key (b64 of the
/// public key, one line).
public enum AgentKeyFile {
    /// Loads the key file, or creates it (0600) when absent. A key file
    /// that group or others may read is refused, never "fixed": someone
    /// else may have read it already.
    public static func loadOrCreate(path: String) throws(AgentError) -> (identity: Identity, created: Bool) {
        if !exists(path) {
            do {
                let identity = try Identity.generate()
                try identity.save(path: path)
                return (identity, true)
            } catch .io where exists(path) {
                // Another process created it in between: use that one.
            } catch {
                throw .keyFile(path: path, problem: "cannot create it (\(describe(error)))")
            }
        }
        return try load(path: path)
    }

    public static func load(path: String) throws(AgentError) -> (identity: Identity, created: Bool) {
        do {
            return (try Identity.load(path: path), false)
        } catch .keyFilePermissions {
            let mode = self.mode(path).map { String($0, radix: 8) } ?? "?"
            throw .keyFile(path: path, problem: "readable by group or others (mode 0\(mode)); refusing it. "
                           + "Restrict it with chmod 600 if nobody else could have read it, else make a new key")
        } catch .io {
            throw .keyFile(path: path, problem: exists(path) ? "cannot read it (\(systemError()))" : "no such file")
        } catch {
            throw .keyFile(path: path, problem: "not a key file (\(describe(error)))")
        }
    }

    /// The pinned server key, or nil when the file does not exist.
    public static func readServerKey(path: String) throws(AgentError) -> [UInt8]? {
        guard exists(path) else { return nil }
        guard let text = readSmallFile(path) else {
            throw .keyFile(path: path, problem: "cannot read the pinned server key (\(systemError()))")
        }
        let line = String(decoding: text, as: UTF8.self).trimmingTrailingNewlines
        guard let key = try? Base64.decode(line), FieldSyntax.isValidPublicKey(key) else {
            throw .keyFile(path: path, problem: "not a pinned server key (want b64 of 32 bytes on one line)")
        }
        return key
    }

    /// Writes the pin once: a temporary file, then link(2), which never
    /// replaces an existing pin.
    public static func writeServerKey(_ key: [UInt8], path: String) throws(AgentError) {
        let tmp = "\(path).tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .keyFile(path: path, problem: "cannot write the server key pin (\(systemError()))") }
        let text = Array((Base64.encode(key) + "\n").utf8)
        let ok = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == text.count && fsync(fd) == 0
        close(fd)
        defer { unlink(tmp) }
        guard ok else { throw .keyFile(path: path, problem: "cannot write the server key pin (\(systemError()))") }
        guard link(tmp, path) == 0 else {
            throw .keyFile(path: path, problem: "cannot create the server key pin (\(systemError()))")
        }
    }

    /// Where the server key is pinned by default: beside the key file.
    public static func defaultServerKeyPath(forKeyFile path: String) -> String { "\(path).server.pub" }

    // MARK: helpers

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func mode(_ path: String) -> UInt32? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt32(st.st_mode) & 0o7777 : nil
    }

    static func readSmallFile(_ path: String, limit: Int = 4096) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1024)
        while out.count <= limit {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return nil }
            if n == 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    static func systemError() -> String { String(cString: strerror(errno)) }

    static func describe(_ e: AegisError) -> String {
        switch e {
        case .io: systemError()
        case .base64, .invalidArgument: "malformed"
        default: e.name
        }
    }
}

extension String {
    var trimmingTrailingNewlines: String {
        var s = Substring(self)
        while let last = s.last, last == "\n" || last == "\r" { s = s.dropLast() }
        return String(s)
    }
}

/// The JSON body of an HTTP refusal (§2): `{"error":{"code":…,"message":…}}`.
enum HTTPRefusalBody {
    static func parse(_ body: [UInt8]) -> (code: String?, message: String?) {
        var reader = MiniJSON(body)
        guard case .object(let top)? = reader.value(), case .object(let error)? = top["error"] else { return (nil, nil) }
        var code: String?, message: String?
        if case .string(let c)? = error["code"] { code = c }
        if case .string(let m)? = error["message"] { message = m }
        return (code, message)
    }
}

/// Just enough JSON to read a refusal body: objects, arrays, strings,
/// and the other scalars skipped over.
struct MiniJSON {
    indirect enum Value { case object([String: Value]), array([Value]), string(String), scalar }
    private let bytes: [UInt8]
    private var i = 0
    private var depth = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func value() -> Value? {
        skipSpace()
        guard i < bytes.count, depth < 32 else { return nil }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            i += 1
            depth += 1
            defer { depth -= 1 }
            var members: [String: Value] = [:]
            skipSpace()
            if peek(UInt8(ascii: "}")) { i += 1; return .object(members) }
            while true {
                skipSpace()
                guard let key = string() else { return nil }
                skipSpace()
                guard peek(UInt8(ascii: ":")) else { return nil }
                i += 1
                guard let v = value() else { return nil }
                members[key] = v
                skipSpace()
                if peek(UInt8(ascii: ",")) { i += 1; continue }
                if peek(UInt8(ascii: "}")) { i += 1; return .object(members) }
                return nil
            }
        case UInt8(ascii: "["):
            i += 1
            depth += 1
            defer { depth -= 1 }
            var items: [Value] = []
            skipSpace()
            if peek(UInt8(ascii: "]")) { i += 1; return .array(items) }
            while true {
                guard let v = value() else { return nil }
                items.append(v)
                skipSpace()
                if peek(UInt8(ascii: ",")) { i += 1; continue }
                if peek(UInt8(ascii: "]")) { i += 1; return .array(items) }
                return nil
            }
        case UInt8(ascii: "\""):
            return string().map { .string($0) }
        default:
            let start = i
            while i < bytes.count, !",}] \t\r\n".utf8.contains(bytes[i]) { i += 1 }
            return i > start ? .scalar : nil
        }
    }

    private func peek(_ c: UInt8) -> Bool { i < bytes.count && bytes[i] == c }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0a || bytes[i] == 0x0d { i += 1 }
    }

    private mutating func string() -> String? {
        guard peek(UInt8(ascii: "\"")) else { return nil }
        i += 1
        var out: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { return nil }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "u"):
                    guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16)
                    else { return nil }
                    i += 4
                    // Surrogates are not paired up here: an error message is
                    // only shown, so U+FFFD in their place is good enough.
                    let scalar = Unicode.Scalar(v) ?? "\u{FFFD}"
                    out += Array(String(Character(scalar)).utf8)
                default: out.append(e)
                }
            default:
                out.append(c)
            }
        }
        return nil
    }
}
