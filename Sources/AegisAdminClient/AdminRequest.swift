import Foundation
import NIOCore
import NIOHTTP1

/// One call of the admin API: what goes out, and what a success decodes to.
///
/// `AdminClient` has a typed method per operation; these values exist so that
/// a caller can also get the response body as the gateway wrote it
/// (`AdminClient.performReturningBody(_:)`, which `aegisctl --json` prints).
public struct AdminRequest<Success: Sendable>: Sendable {
    let method: HTTPMethod
    let path: String
    var query: [(name: String, value: String)] = []
    var headers: [(name: String, value: String)] = []
    var body: [UInt8]? = nil
    /// Until the response head; a send that waits for a response gets its wait on top.
    var timeout: TimeAmount = .seconds(30)
    /// Error statuses whose body is still the documented answer (`/readyz`'s 503).
    var alsoAnswers: Set<Int> = []
    let decode: @Sendable ([UInt8]) throws -> Success

    /// Path and query string, percent-encoded.
    var target: String {
        let pairs = query.map { "\(Self.percentEncoded($0.name))=\(Self.percentEncoded($0.value))" }
        return pairs.isEmpty ? path : path + "?" + pairs.joined(separator: "&")
    }

    var summary: String { "\(method.rawValue) \(path)" }

    /// For path segments and query values: RFC 3986 unreserved characters
    /// and `:` `@` (legal in both, common in agent ids) pass; everything else,
    /// `/` included, is %XX.
    static func percentEncoded(_ text: String) -> String {
        var encoded = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ":"), UInt8(ascii: "@"):
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                encoded += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return encoded
    }
}

extension AdminRequest where Success: Decodable {
    init(_ method: HTTPMethod, _ path: String) {
        self.init(method: method, path: path) { bytes in
            try JSONDecoder().decode(Success.self, from: Data(bytes))
        }
    }
}

extension AdminRequest where Success == NoContent {
    init(_ method: HTTPMethod, _ path: String) {
        self.init(method: method, path: path) { _ in NoContent() }
    }
}

// MARK: - The operations of the OpenAPI document

extension AdminRequest where Success == Health {
    public static var healthz: Self { Self(.GET, "/healthz") }
}

extension AdminRequest where Success == Readiness {
    public static var readyz: Self {
        var request = Self(.GET, "/readyz")
        request.alsoAnswers = [503]
        return request
    }
}

extension AdminRequest where Success == JSONValue {
    public static var openapi: Self { Self(.GET, "/api/v1/openapi.json") }
}

extension AdminRequest where Success == AgentPage {
    public static func listAgents(status: AgentStatusFilter? = nil, cursor: String? = nil, limit: Int? = nil) -> Self {
        var request = Self(.GET, "/api/v1/agents")
        request.query = compactQuery([("status", status?.rawValue), ("cursor", cursor), ("limit", limit.map(String.init))])
        return request
    }
}

extension AdminRequest where Success == AgentStatus {
    public static func agentStatus(_ agentID: String) -> Self {
        Self(.GET, "/api/v1/agents/\(percentEncoded(agentID))/status")
    }
}

extension AdminRequest where Success == Agent {
    public static func approveAgent(_ agentID: String) -> Self {
        Self(.POST, "/api/v1/agents/\(percentEncoded(agentID))/approve")
    }

    public static func revokeAgent(_ agentID: String) -> Self {
        Self(.POST, "/api/v1/agents/\(percentEncoded(agentID))/revoke")
    }
}

extension AdminRequest where Success == NoContent {
    public static func deleteAgent(_ agentID: String) -> Self {
        Self(.DELETE, "/api/v1/agents/\(percentEncoded(agentID))")
    }

    public static func revokeEnrollmentToken(id: String) -> Self {
        Self(.DELETE, "/api/v1/enrollment-tokens/\(percentEncoded(id))")
    }

    public static func revokeToken(id: String) -> Self {
        Self(.DELETE, "/api/v1/tokens/\(percentEncoded(id))")
    }
}

extension AdminRequest where Success == SendOutcome {
    /// `wait` (up to 60 s) only for requests: how long the gateway holds the
    /// call open for the agent's response.
    public static func send(
        to agentID: String, channel: String, type: MessageType = .event, payload: MessagePayload,
        ttl: Duration? = nil, idempotencyKey: String? = nil, wait: Duration? = nil
    ) throws(AdminClientError) -> Self {
        var request = Self(.POST, "/api/v1/agents/\(percentEncoded(agentID))/send")
        let fields = OutgoingMessage(
            type: type, channel: channel, payloadBase64: payload.base64, ttlSeconds: ttl?.wholeSecondsRoundedUp,
            waitSeconds: wait?.fractionalSeconds, connectedOnly: nil, agentIDs: nil)
        request.body = try fields.body(with: payload)
        if let idempotencyKey { request.headers.append(("Idempotency-Key", idempotencyKey)) }
        if let wait { request.timeout = request.timeout + .nanoseconds(wait.nanoseconds) }
        return request
    }
}

extension AdminRequest where Success == BroadcastAccepted {
    /// To every active agent, or only to `agentIDs`; `connectedOnly` skips
    /// agents without a live session instead of queueing for them.
    public static func broadcast(
        channel: String, type: MessageType = .event, payload: MessagePayload, ttl: Duration? = nil,
        connectedOnly: Bool = false, agentIDs: [String]? = nil
    ) throws(AdminClientError) -> Self {
        var request = Self(.POST, "/api/v1/agents/broadcast")
        let fields = OutgoingMessage(
            type: type, channel: channel, payloadBase64: payload.base64, ttlSeconds: ttl?.wholeSecondsRoundedUp,
            waitSeconds: nil, connectedOnly: connectedOnly ? true : nil, agentIDs: agentIDs)
        request.body = try fields.body(with: payload)
        return request
    }
}

extension AdminRequest where Success == EnrollmentToken {
    /// Defaults (the gateway's): valid 24 h, one use.
    public static func createEnrollmentToken(ttl: Duration? = nil, uses: Int? = nil) throws(AdminClientError) -> Self {
        var request = Self(.POST, "/api/v1/enrollment-tokens")
        request.body = try jsonBody(EnrollmentTokenFields(ttlSeconds: ttl?.wholeSecondsRoundedUp, uses: uses))
        return request
    }
}

extension AdminRequest where Success == [APIToken] {
    public static var listTokens: Self {
        Self(method: .GET, path: "/api/v1/tokens") { bytes in
            try JSONDecoder().decode(APITokenList.self, from: Data(bytes)).tokens
        }
    }
}

extension AdminRequest where Success == IssuedAPIToken {
    public static func createToken(name: String, scopes: [APIScope]) throws(AdminClientError) -> Self {
        var request = Self(.POST, "/api/v1/tokens")
        request.body = try jsonBody(APITokenFields(name: name, scopes: scopes))
        return request
    }
}

extension AdminRequest where Success == MessageState {
    public static func message(id: String) -> Self {
        Self(.GET, "/api/v1/messages/\(percentEncoded(id))")
    }
}

extension AdminRequest where Success == MessagePage {
    public static func messages(
        agentID: String? = nil, channel: String? = nil, direction: MessageDirection? = nil,
        after: String? = nil, limit: Int? = nil
    ) -> Self {
        var request = Self(.GET, "/api/v1/messages")
        request.query = compactQuery([
            ("agent_id", agentID), ("channel", channel), ("direction", direction?.rawValue),
            ("after", after), ("limit", limit.map(String.init)),
        ])
        return request
    }
}

extension AdminRequest where Success == NoContent {
    /// The body is read as it comes (`AdminClient.stream`), never decoded whole.
    static func stream(channel: String?, agentID: String?, lastEventID: String?) -> Self {
        var request = Self(.GET, "/api/v1/stream")
        request.query = compactQuery([("channel", channel), ("agent_id", agentID)])
        request.headers = [("Accept", "text/event-stream"), ("Cache-Control", "no-cache")]
        if let lastEventID { request.headers.append(("Last-Event-ID", lastEventID)) }
        return request
    }
}

// MARK: - Bodies

private struct EnrollmentTokenFields: Encodable {
    var ttlSeconds: Int64?
    var uses: Int?

    enum CodingKeys: String, CodingKey { case ttlSeconds = "ttl_seconds", uses }
}

private struct APITokenFields: Encodable {
    var name: String
    var scopes: [APIScope]
}

/// The fields of `SendRequest` and `BroadcastRequest` other than a JSON payload.
private struct OutgoingMessage: Encodable {
    var type: MessageType
    var channel: String
    var payloadBase64: String?
    var ttlSeconds: Int64?
    var waitSeconds: Double?
    var connectedOnly: Bool?
    var agentIDs: [String]?

    enum CodingKeys: String, CodingKey {
        case type, channel, payloadBase64 = "payload_base64", ttlSeconds = "ttl_seconds"
        case waitSeconds = "wait_seconds", connectedOnly = "connected_only", agentIDs = "agent_ids"
    }

    /// A JSON payload is spliced in as the caller wrote it, so that it reaches
    /// the gateway unchanged (no reordered keys, no rounded numbers); it is
    /// checked first to be exactly one JSON value, so it cannot add fields.
    func body(with payload: MessagePayload) throws(AdminClientError) -> [UInt8] {
        let fields = try jsonBody(self)
        guard case .json(let text) = payload else { return fields }
        do {
            _ = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        } catch {
            throw .invalidArgument("the payload is not one JSON value: \(describe(error))")
        }
        // `fields` is `{"type":…,"channel":…}`: never empty, since both are required.
        return Array(#"{"payload":"#.utf8) + Array(text.utf8) + Array(",".utf8) + fields.dropFirst()
    }
}

private extension MessagePayload {
    var base64: String? {
        guard case .bytes(let bytes) = self else { return nil }
        return Data(bytes).base64EncodedString()
    }
}

private func jsonBody(_ value: some Encodable) throws(AdminClientError) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    do {
        return Array(try encoder.encode(value))
    } catch {
        throw .invalidArgument("cannot encode the request: \(describe(error))")
    }
}

private func compactQuery(_ pairs: [(String, String?)]) -> [(name: String, value: String)] {
    pairs.compactMap { name, value in value.map { (name, $0) } }
}

/// A decoding error in one line: where, then what.
func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.keyNotFound(let key, let context):
        return "missing '\(path(context.codingPath + [key]))'"
    case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
        DecodingError.dataCorrupted(let context):
        let location = context.codingPath.isEmpty ? "" : "at '\(path(context.codingPath))': "
        let cause = context.underlyingError.map { " (\($0))" } ?? ""
        return location + context.debugDescription + cause
    default:
        return String(describing: error)
    }
}

private func path(_ keys: [any CodingKey]) -> String {
    keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}

extension Duration {
    /// The API counts TTLs in whole seconds; a fraction rounds up rather than to zero.
    var wholeSecondsRoundedUp: Int64 {
        let (seconds, attoseconds) = components
        return attoseconds > 0 ? seconds + 1 : seconds
    }

    var fractionalSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : whole + attoseconds / 1_000_000_000
    }
}

private extension String {
    func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
