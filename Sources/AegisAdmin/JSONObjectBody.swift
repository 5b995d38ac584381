import Foundation

/// A request body that must be one JSON object, read strictly: valid
/// UTF-8 JSON, no duplicate member names, each member kept as its raw text
/// so that a JSON payload reaches the agent byte for byte and integers are
/// told from `1.0` as the protocol does. Unknown members are ignored.
/// Accessors throw `invalid_field` (422) naming the member.
struct JSONObjectBody {
    enum Kind: Equatable { case string, number, bool, null, object, array }

    struct Member {
        let kind: Kind
        let raw: [UInt8]
    }

    private(set) var members: [String: Member] = [:]

    /// An empty body reads as `{}` (bodies that are all optional).
    static func parse(_ bytes: [UInt8]) throws(APIError) -> JSONObjectBody {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return JSONObjectBody() }
        guard (try? JSONSerialization.jsonObject(with: Data(bytes))) is [String: Any] else {
            throw .badRequest("the body is not a JSON object")
        }
        // Valid JSON now; one pass finds the top-level members' spans.
        var body = JSONObjectBody()
        var i = skipSpace(bytes, 1)
        while i < bytes.count, bytes[i] != UInt8(ascii: "}") {
            let keyEnd = endOfValue(bytes, i)
            guard let name = decodeString(Array(bytes[i..<keyEnd])) else { throw .badRequest("a member name is invalid") }
            i = skipSpace(bytes, skipSpace(bytes, keyEnd) + 1)  // past ':'
            let valueEnd = endOfValue(bytes, i)
            let raw = Array(bytes[i..<valueEnd])
            guard body.members[name] == nil else { throw .badRequest("the member '\(name)' appears twice") }
            body.members[name] = Member(kind: kind(of: raw[0]), raw: raw)
            i = skipSpace(bytes, valueEnd)
            if i < bytes.count, bytes[i] == UInt8(ascii: ",") { i = skipSpace(bytes, i + 1) }
        }
        return body
    }

    func has(_ name: String) -> Bool { members[name] != nil }

    func raw(_ name: String) -> [UInt8]? { members[name]?.raw }

    func string(_ name: String, minBytes: Int = 1, maxBytes: Int = 1 << 20) throws(APIError) -> String? {
        guard let m = members[name] else { return nil }
        guard m.kind == .string, let s = decodeString(m.raw) else { throw .invalidField(name, "\(name) must be a string") }
        guard s.utf8.count >= minBytes, s.utf8.count <= maxBytes else {
            throw .invalidField(name, "\(name) must be \(minBytes) to \(maxBytes) bytes")
        }
        return s
    }

    /// A JSON integer (no fraction, no exponent) within `range`.
    func integer(_ name: String, _ range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let m = members[name] else { return nil }
        let digits = m.raw.first == UInt8(ascii: "-") ? m.raw.dropFirst() : m.raw[...]
        guard m.kind == .number, !digits.isEmpty, digits.allSatisfy({ (48...57).contains($0) }) else {
            throw .invalidField(name, "\(name) must be an integer")
        }
        guard let v = Int(String(decoding: m.raw, as: UTF8.self)), range.contains(v) else {
            throw .invalidField(name, "\(name) must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return v
    }

    func number(_ name: String, _ range: ClosedRange<Double>) throws(APIError) -> Double? {
        guard let m = members[name] else { return nil }
        guard m.kind == .number, let v = Double(String(decoding: m.raw, as: UTF8.self)), v.isFinite else {
            throw .invalidField(name, "\(name) must be a number")
        }
        guard range.contains(v) else {
            throw .invalidField(name, "\(name) must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return v
    }

    func bool(_ name: String) throws(APIError) -> Bool? {
        guard let m = members[name] else { return nil }
        guard m.kind == .bool else { throw .invalidField(name, "\(name) must be true or false") }
        return m.raw.first == UInt8(ascii: "t")
    }

    /// An array of strings, each checked by `valid`.
    func strings(_ name: String, count: ClosedRange<Int>, valid: (String) -> Bool,
                 what: String) throws(APIError) -> [String]? {
        guard let m = members[name] else { return nil }
        guard m.kind == .array, let items = try? JSONSerialization.jsonObject(with: Data(m.raw)) as? [Any] else {
            throw .invalidField(name, "\(name) must be an array of strings")
        }
        guard count.contains(items.count) else {
            throw .invalidField(name, "\(name) must have \(count.lowerBound) to \(count.upperBound) items")
        }
        var out: [String] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            guard let s = item as? String, valid(s) else { throw .invalidField("\(name)[\(i)]", "\(name)[\(i)] is not \(what)") }
            out.append(s)
        }
        return out
    }
}

private func kind(of first: UInt8) -> JSONObjectBody.Kind {
    switch first {
    case UInt8(ascii: "\""): .string
    case UInt8(ascii: "t"), UInt8(ascii: "f"): .bool
    case UInt8(ascii: "n"): .null
    case UInt8(ascii: "{"): .object
    case UInt8(ascii: "["): .array
    default: .number
    }
}

private func skipSpace(_ b: [UInt8], _ from: Int) -> Int {
    var i = from
    while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    return i
}

/// The end of the (valid) JSON value starting at `from`.
private func endOfValue(_ b: [UInt8], _ from: Int) -> Int {
    var i = from
    var depth = 0
    var inString = false
    while i < b.count {
        let c = b[i]
        if inString {
            if c == UInt8(ascii: "\\") {
                i += 1
            } else if c == UInt8(ascii: "\"") {
                inString = false
                if depth == 0 { return i + 1 }
            }
        } else {
            switch c {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 0 { return i }
                depth -= 1
                if depth == 0 { return i + 1 }
            case UInt8(ascii: ","), 0x20, 0x0A, 0x0D, 0x09, UInt8(ascii: ":"):
                if depth == 0 { return i }
            default: break
            }
        }
        i += 1
    }
    return i
}

/// A JSON string literal's value (escapes resolved).
private func decodeString(_ raw: [UInt8]) -> String? {
    guard raw.count >= 2, raw.first == UInt8(ascii: "\""), raw.last == UInt8(ascii: "\"") else { return nil }
    if !raw.contains(UInt8(ascii: "\\")) { return String(validating: raw[1..<(raw.count - 1)], as: UTF8.self) }
    return (try? JSONSerialization.jsonObject(with: Data(raw), options: .fragmentsAllowed)) as? String
}
