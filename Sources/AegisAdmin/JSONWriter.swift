import Foundation

/// Writes JSON text directly: members in the order written, strings
/// escaped per RFC 8259, and raw JSON (an agent's JSON payload) embedded
/// byte for byte. Foundation's encoders can neither keep a payload's bytes
/// nor a member order, and this is cheaper than building dictionaries.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []

    var text: String { String(decoding: bytes, as: UTF8.self) }

    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes += [92, 34]
            case UInt8(ascii: "\\"): bytes += [92, 92]
            case 0x0A: bytes += [92, UInt8(ascii: "n")]
            case 0x0D: bytes += [92, UInt8(ascii: "r")]
            case 0x09: bytes += [92, UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += [92, UInt8(ascii: "u"), 48, 48, hex[Int(b >> 4)], hex[Int(b & 15)]]
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func int(_ v: Int64) { bytes += Array(String(v).utf8) }
    mutating func bool(_ v: Bool) { bytes += Array((v ? "true" : "false").utf8) }
    mutating func null() { bytes += Array("null".utf8) }
    /// Valid JSON text, embedded as it is.
    mutating func raw(_ json: [UInt8]) { bytes += json }

    mutating func date(_ d: Date?) {
        guard let d else { return null() }
        string(d.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
    }

    mutating func object(_ body: (inout ObjectWriter) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        var o = ObjectWriter(writer: self)
        bytes = []
        body(&o)
        self = o.writer
        bytes.append(UInt8(ascii: "}"))
    }

    mutating func array<S: Sequence>(_ items: S, _ each: (inout JSONWriter, S.Element) -> Void) {
        bytes.append(UInt8(ascii: "["))
        var first = true
        for item in items {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            each(&self, item)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    struct ObjectWriter {
        var writer: JSONWriter
        private var first = true

        init(writer: JSONWriter) { self.writer = writer }

        /// Starts a member; the caller writes its value through `writer`.
        mutating func key(_ name: String) {
            if !first { writer.bytes.append(UInt8(ascii: ",")) }
            first = false
            writer.string(name)
            writer.bytes.append(UInt8(ascii: ":"))
        }

        mutating func field(_ name: String, _ value: String?) {
            key(name)
            if let value { writer.string(value) } else { writer.null() }
        }

        mutating func field(_ name: String, _ value: Int) {
            key(name)
            writer.int(Int64(value))
        }

        mutating func field(_ name: String, _ value: Bool) {
            key(name)
            writer.bool(value)
        }

        mutating func field(_ name: String, date: Date?) {
            key(name)
            writer.date(date)
        }
    }
}
