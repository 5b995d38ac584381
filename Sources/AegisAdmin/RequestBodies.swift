import AegisProtocol
import AegisServer
import AegisStore
import Foundation

// The request bodies of the admin API, parsed and checked without any I/O
// (unit-tested in AegisAdminTests). Field syntax is the protocol's (§1).

/// The most plaintext a down message may carry: sealed and base64-encoded
/// inside its envelope it stays under the protocol's 1 MiB message limit.
let maxDownPayload = 768_000

/// JSON text without its insignificant whitespace; everything else —
/// numbers, string escapes, member order — stays as written (a re-encoding
/// would round numbers and reorder members).
func compactJSON(_ text: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(text.count)
    var inString = false
    var escaped = false
    for b in text {
        if inString {
            out.append(b)
            if escaped {
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "\"") {
                inString = false
            }
        } else if b == UInt8(ascii: "\"") {
            inString = true
            out.append(b)
        } else if b != 0x20 && b != 0x0A && b != 0x0D && b != 0x09 {
            out.append(b)
        }
    }
    return out
}

/// The message part shared by send and broadcast.
struct DownContent: Equatable {
    var type: MessageType
    var channel: String
    /// The plaintext: a JSON payload's compact text, or the decoded bytes of
    /// payload_base64.
    var payload: [UInt8]
    var timeToLive: Duration?

    init(_ body: JSONObjectBody) throws(APIError) {
        guard let typeText = try body.string("type") else { throw .invalidField("type", "type is required") }
        guard let type = MessageType(rawValue: typeText), type == .request || type == .event else {
            throw .invalidField("type", "type must be request or event")
        }
        guard let channel = try body.string("channel", maxBytes: 255) else {
            throw .invalidField("channel", "channel is required")
        }
        guard FieldSyntax.isValidChannel(channel), !channel.hasPrefix("aegis.") else {
            throw .invalidField("channel", "channel must be 1-255 bytes of [A-Za-z0-9._/:-], not aegis.*")
        }
        switch (body.raw("payload"), body.has("payload_base64")) {
        case (let raw?, false):
            payload = compactJSON(raw)
        case (nil, true):
            guard let text = try? body.string("payload_base64", minBytes: 0, maxBytes: 2 << 20),
                  let bytes = text.isEmpty ? [] : try? Base64.decode(text) else {
                throw .invalidField("payload_base64", "payload_base64 must be standard base64 with padding")
            }
            payload = bytes
        case (nil, false):
            throw .invalidField("payload", "one of payload and payload_base64 is required")
        case (_?, true):
            throw .invalidField("payload", "give payload or payload_base64, not both")
        }
        guard payload.count <= maxDownPayload else {
            throw .invalidField(body.has("payload") ? "payload" : "payload_base64",
                                "the payload exceeds \(maxDownPayload) bytes")
        }
        self.type = type
        self.channel = channel
        timeToLive = try body.integer("ttl_seconds", 1...2_592_000).map { .seconds($0) }
    }
}

/// POST /agents/{id}/send.
struct SendBody: Equatable {
    var content: DownContent
    var wait: Duration?

    init(_ bytes: [UInt8]) throws(APIError) {
        let body = try JSONObjectBody.parse(bytes)
        content = try DownContent(body)
        if let seconds = try body.number("wait_seconds", 0...60) {
            guard content.type == .request else {
                throw .invalidField("wait_seconds", "wait_seconds applies to requests only")
            }
            wait = .milliseconds(Int64(seconds * 1000))
        }
    }
}

/// POST /agents/broadcast.
struct BroadcastBody: Equatable {
    var content: DownContent
    var connectedOnly: Bool
    var agentIDs: [String]?

    init(_ bytes: [UInt8]) throws(APIError) {
        let body = try JSONObjectBody.parse(bytes)
        content = try DownContent(body)
        connectedOnly = try body.bool("connected_only") ?? false
        agentIDs = try body.strings("agent_ids", count: 1...100_000, valid: FieldSyntax.isValidAgentID,
                                    what: "an agent id")
    }
}

/// POST /tokens.
struct ApiTokenBody: Equatable {
    var name: String
    var scopes: [Scope]

    init(_ bytes: [UInt8]) throws(APIError) {
        let body = try JSONObjectBody.parse(bytes)
        guard let name = try body.string("name", maxBytes: 100) else { throw .invalidField("name", "name is required") }
        guard name.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
            throw .invalidField("name", "name must not contain control characters")
        }
        guard let texts = try body.strings("scopes", count: 1...3, valid: { Scope(rawValue: $0) != nil },
                                           what: "read, send or admin") else {
            throw .invalidField("scopes", "scopes is required")
        }
        guard Set(texts).count == texts.count else { throw .invalidField("scopes", "scopes must not repeat") }
        self.name = name
        self.scopes = texts.compactMap(Scope.init(rawValue:))
    }
}

/// POST /enrollment-tokens (every member optional; an empty body is fine).
struct EnrollmentTokenBody: Equatable {
    var timeToLive: Duration = .seconds(86_400)
    var uses = 1

    init(_ bytes: [UInt8]) throws(APIError) {
        let body = try JSONObjectBody.parse(bytes)
        if let ttl = try body.integer("ttl_seconds", 60...31_536_000) { timeToLive = .seconds(ttl) }
        if let uses = try body.integer("uses", 1...1_000_000) { self.uses = uses }
    }
}
