import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// A typed client of the gateway's admin API (Sources/AegisAdmin/Resources/openapi.json).
///
/// One `HTTPClient` (and its connection pool) serves every call of a client;
/// call `shutdown()` when done with it.
public struct AdminClient: Sendable {
    /// `http(s)://host:port`, without a trailing slash.
    public let baseURL: String
    private let authorization: String?
    private let http: HTTPClient

    /// The largest response body read: a page of 1,000 messages of large payloads.
    private static let maximumResponseBytes = 256 << 20

    /// `token` is sent as a bearer token to every `/api` route; the health
    /// routes need none. `caCertificateFile` (PEM) replaces the system's
    /// trust roots for https.
    public init(baseURL: String, token: String?, caCertificateFile: String? = nil) throws(AdminClientError) {
        var trimmed = baseURL
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        guard let url = URL(string: trimmed), ["http", "https"].contains(url.scheme?.lowercased() ?? ""),
            url.host?.isEmpty == false
        else {
            throw .invalidArgument("the admin URL must be http(s)://host[:port], got '\(baseURL)'")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caCertificateFile {
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(caCertificateFile)
            } catch {
                throw .invalidArgument("cannot read the CA certificate \(caCertificateFile): \(error)")
            }
            guard !certificates.isEmpty else {
                throw .invalidArgument("no PEM certificate in \(caCertificateFile)")
            }
            tls.trustRoots = .certificates(certificates)
        }
        // The read timeout outlasts the longest wait for an agent's response
        // (60 s) and the stream's keepalives (15 s); no redirects, so that
        // the token goes nowhere else.
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls, redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: .seconds(90)))
        // A refused connection fails the call at once instead of being retried
        // until the connect timeout: callers decide about retries.
        configuration.connectionPool.retryConnectionEstablishment = false
        self.baseURL = trimmed
        self.authorization = token.map { "Bearer \($0)" }
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// Closes the connections. The client must not be used afterwards.
    public func shutdown() async {
        // It throws only when already shut down, which is not worth reporting.
        try? await http.shutdown()
    }

    // MARK: - Any operation

    /// Performs `request` and decodes its documented answer.
    public func perform<Success>(_ request: AdminRequest<Success>) async throws(AdminClientError) -> Success {
        try await performReturningBody(request).answer
    }

    /// Performs `request`, decodes its answer, and returns the body too, as the
    /// gateway wrote it (for printing it as is).
    public func performReturningBody<Success>(_ request: AdminRequest<Success>) async throws(AdminClientError)
        -> (answer: Success, body: String)
    {
        let (status, body) = try await exchange(request)
        let text = String(decoding: body, as: UTF8.self)
        if (200..<300).contains(status) {
            do {
                return (try request.decode(body), text)
            } catch {
                throw .badResponse("\(request.summary) \(status): \(describe(error))")
            }
        }
        if request.alsoAnswers.contains(status), let answer = try? request.decode(body) {
            return (answer, text)
        }
        throw Self.apiError(status: status, body: body)
    }

    // MARK: - One method per operation

    public func healthz() async throws(AdminClientError) -> Health {
        try await perform(.healthz)
    }

    /// A gateway that is not ready answers 503 with a `Readiness` too; that is returned, not thrown.
    public func readyz() async throws(AdminClientError) -> Readiness {
        try await perform(.readyz)
    }

    public func openapi() async throws(AdminClientError) -> JSONValue {
        try await perform(.openapi)
    }

    public func listAgents(status: AgentStatusFilter? = nil, cursor: String? = nil, limit: Int? = nil)
        async throws(AdminClientError) -> AgentPage
    {
        try await perform(.listAgents(status: status, cursor: cursor, limit: limit))
    }

    public func agentStatus(_ agentID: String) async throws(AdminClientError) -> AgentStatus {
        try await perform(.agentStatus(agentID))
    }

    public func send(
        to agentID: String, channel: String, type: MessageType = .event, payload: MessagePayload,
        ttl: Duration? = nil, idempotencyKey: String? = nil, wait: Duration? = nil
    ) async throws(AdminClientError) -> SendOutcome {
        try await perform(
            .send(
                to: agentID, channel: channel, type: type, payload: payload, ttl: ttl,
                idempotencyKey: idempotencyKey, wait: wait))
    }

    public func broadcast(
        channel: String, type: MessageType = .event, payload: MessagePayload, ttl: Duration? = nil,
        connectedOnly: Bool = false, agentIDs: [String]? = nil
    ) async throws(AdminClientError) -> BroadcastAccepted {
        try await perform(
            .broadcast(
                channel: channel, type: type, payload: payload, ttl: ttl, connectedOnly: connectedOnly,
                agentIDs: agentIDs))
    }

    public func approveAgent(_ agentID: String) async throws(AdminClientError) -> Agent {
        try await perform(.approveAgent(agentID))
    }

    public func revokeAgent(_ agentID: String) async throws(AdminClientError) -> Agent {
        try await perform(.revokeAgent(agentID))
    }

    public func deleteAgent(_ agentID: String) async throws(AdminClientError) {
        _ = try await perform(.deleteAgent(agentID))
    }

    public func createEnrollmentToken(ttl: Duration? = nil, uses: Int? = nil) async throws(AdminClientError)
        -> EnrollmentToken
    {
        try await perform(.createEnrollmentToken(ttl: ttl, uses: uses))
    }

    public func revokeEnrollmentToken(id: String) async throws(AdminClientError) {
        _ = try await perform(.revokeEnrollmentToken(id: id))
    }

    public func listTokens() async throws(AdminClientError) -> [APIToken] {
        try await perform(.listTokens)
    }

    public func createToken(name: String, scopes: [APIScope]) async throws(AdminClientError) -> IssuedAPIToken {
        try await perform(.createToken(name: name, scopes: scopes))
    }

    public func revokeToken(id: String) async throws(AdminClientError) {
        _ = try await perform(.revokeToken(id: id))
    }

    public func message(id: String) async throws(AdminClientError) -> MessageState {
        try await perform(.message(id: id))
    }

    public func messages(
        agentID: String? = nil, channel: String? = nil, direction: MessageDirection? = nil,
        after: String? = nil, limit: Int? = nil
    ) async throws(AdminClientError) -> MessagePage {
        try await perform(
            .messages(agentID: agentID, channel: channel, direction: direction, after: after, limit: limit))
    }

    /// Up messages as they are stored, as Server-Sent Events (`event: message`,
    /// `id: <seq>`, the `Message` as data; `ServerSentEvent.message()` decodes it).
    ///
    /// Connection and status errors throw here; once the stream is open, it
    /// ends when the gateway closes it and throws `AdminClientError.unreachable`
    /// when the connection breaks. It does not reconnect: resume with the last
    /// event's `id` as `lastEventID`.
    public func stream(channel: String? = nil, agentID: String? = nil, lastEventID: String? = nil)
        async throws(AdminClientError) -> AsyncThrowingStream<ServerSentEvent, any Error>
    {
        let response = try await start(AdminRequest.stream(channel: channel, agentID: agentID, lastEventID: lastEventID))
        let status = Int(response.status.code)
        guard status == 200 else {
            throw Self.apiError(status: status, body: try await collect(response.body))
        }
        let contentType = response.headers.first(name: "Content-Type") ?? ""
        guard contentType.lowercased().hasPrefix("text/event-stream") else {
            throw .badResponse("GET /api/v1/stream: Content-Type '\(contentType)', not text/event-stream")
        }
        let reader = ServerSentEventReader(response.body)
        return AsyncThrowingStream(unfolding: { try await reader.next() })
    }

    // MARK: - HTTP

    private func exchange<Success>(_ request: AdminRequest<Success>) async throws(AdminClientError)
        -> (status: Int, body: [UInt8])
    {
        let response = try await start(request)
        return (Int(response.status.code), try await collect(response.body))
    }

    private func start<Success>(_ request: AdminRequest<Success>) async throws(AdminClientError)
        -> HTTPClientResponse
    {
        var outgoing = HTTPClientRequest(url: baseURL + request.target)
        outgoing.method = request.method
        outgoing.headers.add(name: "User-Agent", value: "AegisAdminClient/1")
        if let authorization { outgoing.headers.add(name: "Authorization", value: authorization) }
        if !request.headers.contains(where: { $0.name == "Accept" }) {
            outgoing.headers.add(name: "Accept", value: "application/json")
        }
        for header in request.headers { outgoing.headers.add(name: header.name, value: header.value) }
        if let body = request.body {
            outgoing.headers.add(name: "Content-Type", value: "application/json")
            outgoing.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            return try await http.execute(outgoing, timeout: request.timeout)
        } catch {
            throw .unreachable("\(request.summary) at \(baseURL): \(Self.describeConnectionFailure(error))")
        }
    }

    private func collect(_ body: HTTPClientResponse.Body) async throws(AdminClientError) -> [UInt8] {
        do {
            return Array(try await body.collect(upTo: Self.maximumResponseBytes).readableBytesView)
        } catch is NIOTooManyBytesError {
            throw .badResponse("a response body over \(Self.maximumResponseBytes >> 20) MiB")
        } catch {
            throw .unreachable("the response broke off: \(Self.describeConnectionFailure(error))")
        }
    }

    /// The error body `{"error": {code, message, field}}`; anything else (a
    /// proxy's page, say) becomes `http_<status>` with the start of its text.
    private static func apiError(status: Int, body: [UInt8]) -> AdminClientError {
        struct Envelope: Decodable {
            struct Detail: Decodable {
                var code: String
                var message: String
                var field: String?
            }
            var error: Detail
        }
        if let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(body)) {
            let detail = envelope.error
            return .api(status: status, code: detail.code, message: detail.message, field: detail.field)
        }
        let text = String(decoding: body.prefix(200), as: UTF8.self)
            .split(whereSeparator: \.isNewline).first.map(String.init) ?? ""
        let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
        return .api(status: status, code: "http_\(status)", message: text.isEmpty ? reason : text, field: nil)
    }

    private static func describeConnectionFailure(_ error: any Error) -> String {
        switch error {
        case let error as HTTPClientError where error == .connectTimeout: "connection timed out"
        case let error as HTTPClientError where error == .deadlineExceeded: "no response in time"
        case let error as HTTPClientError where error == .readTimeout: "no data in time"
        case let error as IOError: String(cString: strerror(error.errnoCode))
        default: String(describing: error)
        }
    }
}
