import AegisAgent
import Foundation
import Logging
import Synchronization

/// Every line the command prints: records of what happened (received
/// messages, acks, connection changes) and the SDK's log, in one format:
/// `--json` makes each line one JSON object, else `time level event k=v …`.
/// Message records go to stdout; logs and errors to stderr.
final class Output: Sendable {
    let json: Bool
    let minimumLevel: Logger.Level
    private let lock = Mutex(())

    init(json: Bool, minimumLevel: Logger.Level) {
        self.json = json
        self.minimumLevel = minimumLevel
    }

    enum Stream { case out, err }

    func record(_ event: String, level: Logger.Level = .info, to stream: Stream = .out, _ fields: [(String, Any)] = []) {
        guard level >= minimumLevel else { return }
        let line: String
        let ts = Self.timestamp()
        if json {
            var object: [String: Any] = ["ts": ts, "level": "\(level)", "event": event]
            for (k, v) in fields { object[k] = v }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
                ?? Data("{\"event\":\"unprintable\"}".utf8)
            line = String(decoding: data, as: UTF8.self)
        } else {
            var parts = [ts, "\(level)".uppercased(), event]
            for (k, v) in fields { parts.append("\(k)=\(Self.text(v))") }
            line = parts.joined(separator: " ")
        }
        // One write(2) per line, under the lock: lines never interleave.
        let bytes = Array((line + "\n").utf8)
        let fd: Int32 = stream == .out ? 1 : 2
        lock.withLock { _ in
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                off += n
            }
        }
    }

    private static func text(_ v: Any) -> String {
        switch v {
        case let s as String: s.contains(" ") || s.isEmpty ? "\"\(s)\"" : s
        case let a as [String]: a.joined(separator: ",")
        default: "\(v)"
        }
    }

    private static func timestamp() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        var t = time_t(tv.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(tv.tv_usec) / 1000)
    }

    /// A payload as text when it is UTF-8, else as b64 under another key.
    static func payloadFields(_ payload: [UInt8]) -> [(String, Any)] {
        if let s = String(validating: payload, as: UTF8.self) { return [("payload", s)] }
        return [("payload_b64", Data(payload).base64EncodedString())]
    }
}

/// swift-log through `Output`, to stderr.
struct OutputLogHandler: LogHandler {
    let label: String
    let output: Output
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [(String, Any)] = [("message", "\(event.message)")]
        for (k, v) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }).sorted(by: { $0.key < $1.key }) {
            fields.append((k, "\(v)"))
        }
        output.record("log", level: event.level, to: .err, fields)
    }
}
