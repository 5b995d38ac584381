import AegisProtocol
import AegisServer
import AegisStore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL

/// The operators' REST API (docs/admin-api.md, Resources/openapi.json):
/// Hummingbird on its own listener, separate from the agents'. Handlers
/// parse and check the request (RequestBodies.swift), ask the gateway or
/// the store, and write the answer (Representations.swift); every failure
/// is an `APIError`.
public struct AdminAPI: Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        public var port = 8081
        /// PEM files; both or neither.
        public var tlsCertificate: String?
        public var tlsKey: String?

        public init() {}
    }

    /// Request bodies past this are refused with 413.
    static let maxBody = 1 << 20

    let configuration: Configuration
    let gateway: GatewayServer
    let store: Store
    let tokens: ApiTokens
    let metrics: MetricsExposition
    /// Whether the agent listener is up and not draining (readiness).
    let listenersReady: @Sendable () -> Bool
    let logger: Logger

    public init(configuration: Configuration, gateway: GatewayServer, store: Store, tokens: ApiTokens,
                metrics: MetricsExposition, listenersReady: @escaping @Sendable () -> Bool,
                logger: Logger = Logger(label: "aegis.admin")) {
        self.configuration = configuration
        self.gateway = gateway
        self.store = store
        self.tokens = tokens
        self.metrics = metrics
        self.listenersReady = listenersReady
        self.logger = logger
    }

    /// Serves until the task is cancelled; `onListening` gets the bound port.
    public func run(onListening: @escaping @Sendable (Int) async -> Void) async throws {
        let server: HTTPServerBuilder
        if let cert = configuration.tlsCertificate, let key = configuration.tlsKey {
            let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
            let tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain,
                                                                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            server = try .tls(.http1(), tlsConfiguration: tls)
        } else {
            server = .http1()
        }
        let app = Application(
            router: router(),
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "aegisd"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        try await app.run()
    }

    /// The router: error shaping, then authentication, then the operations.
    public func router() -> Router<AdminRequestContext> {
        let router = Router(context: AdminRequestContext.self)
        router.add(middleware: ErrorShaping(logger: logger))
        router.add(middleware: BearerAuthentication(tokens: tokens))
        for operation in Operation.allCases {
            let handler = handler(for: operation)
            let scope = operation.scope
            router.on(RouterPath(operation.path), method: operation.method) { request, context in
                if let scope {
                    guard let token = context.token else { throw APIError.unauthorized }
                    guard token.power >= scope else { throw APIError.forbidden(scope) }
                }
                return try await handler(request, context)
            }
        }
        return router
    }

    typealias Handler = @Sendable (Request, AdminRequestContext) async throws -> Response

    func handler(for operation: Operation) -> Handler {
        switch operation {
        case .healthz: { _, _ in json(.ok) { $0.field("status", "ok") } }
        case .readyz: { _, _ in await readiness() }
        case .metrics: { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: metrics.render())))
        }
        case .openapi: { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: ResponseBody(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes)))
        }
        case .listAgents: listAgents
        case .agentStatus: agentStatus
        case .sendToAgent: send
        case .broadcast: broadcast
        case .approveAgent: { _, context in
            let id = try agentID(context)
            let agent = try await operate(id) { try await gateway.approve(agentID: id) }
            return await agentResponse(agent)
        }
        case .revokeAgent: { _, context in
            let id = try agentID(context)
            let agent = try await operate(id) { try await gateway.revoke(agentID: id) }
            return await agentResponse(agent)
        }
        case .deleteAgent: { _, context in
            let id = try agentID(context)
            try await operate(id) { try await gateway.delete(agentID: id) }
            return Response(status: .noContent)
        }
        case .createEnrollmentToken: createEnrollmentToken
        case .revokeEnrollmentToken: { _, context in
            let id = try uuidParameter(context, "token_id", what: "enrollment token")
            guard try await storeCall({ try await store.revokeEnrollmentToken(id: id) }) else {
                throw APIError.notFound("no live enrollment token with that id")
            }
            return Response(status: .noContent)
        }
        case .listTokens: { _, _ in
            let list = try await storeCall { try await store.listApiTokens() }
            return json(.ok) { o in
                o.key("tokens")
                o.writer.array(list) { w, t in w.object { $0.apiToken(t) } }
            }
        }
        case .createToken: { request, _ in
            let body = try ApiTokenBody(try await jsonBody(request))
            let (record, text) = try await storeCall { try await tokens.create(name: body.name, scopes: body.scopes) }
            return json(.created) { o in
                o.apiToken(record)
                o.field("token", text)
            }
        }
        case .revokeToken: { _, context in
            let id = try uuidParameter(context, "token_id", what: "token")
            guard try await storeCall({ try await tokens.revoke(id: id) }) else {
                throw APIError.notFound("no live token with that id")
            }
            return Response(status: .noContent)
        }
        case .listMessages: listMessages
        case .messageState: messageState
        case .streamMessages: { request, _ in try await stream(request) }
        }
    }

    // MARK: Agents

    private func listAgents(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        let limit = try limitParameter(query)
        var filter = AgentFilter.all
        switch query["status"].map(String.init) {
        case nil: break
        case "connected": filter.activeOnly = true
        case let s?:
            guard let e = Enrollment(rawValue: s) else {
                throw APIError.invalidQuery("status", "status must be connected, active, pending or revoked")
            }
            filter.enrollment = e
        }
        var after: String?
        if let cursor = query["cursor"] {
            guard let bytes = try? Base64.decodeURL(String(cursor)), let id = String(validating: bytes, as: UTF8.self),
                  FieldSyntax.isValidAgentID(id) else {
                throw APIError.invalidQuery("cursor", "cursor is not one this API returned")
            }
            after = id
        }
        let page = try await storeCall { try await store.listAgents(after: after, limit: limit + 1, filter: filter) }
        let agents = Array(page.prefix(limit))
        let shown = Array(zip(agents, await gateway.connected(agents)))
        let next = page.count > limit ? shown.last.map { Base64.encodeURL(Array($0.0.agentID.utf8)) } : nil
        return json(.ok) { o in
            o.key("agents")
            o.writer.array(shown) { w, a in w.object { $0.agent(a.0, connected: a.1) } }
            o.field("next_cursor", next)
        }
    }

    private func agentStatus(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let id = try agentID(context)
        guard let agent = try await storeCall({ try await store.agent(id: id) }) else {
            throw APIError.notFound("no agent '\(id)'")
        }
        let queue = try await storeCall { try await store.queueCounts(agentID: id) }
        let connected = await gateway.isConnected(agent)
        return json(.ok) { o in
            o.agent(agent, connected: connected)
            o.queue(queue)
        }
    }

    private func agentResponse(_ agent: AgentRecord) async -> Response {
        let connected = await gateway.isConnected(agent)
        return json(.ok) { $0.agent(agent, connected: connected) }
    }

    // MARK: Sending

    private func send(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let id = try agentID(context)
        let bytes = try await jsonBody(request)
        let body = try SendBody(bytes)
        var idempotency: IdempotencyKey?
        if let name = HTTPField.Name("Idempotency-Key"), let key = request.headers[name] {
            guard (1...255).contains(key.utf8.count), key.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else {
                throw APIError(.badRequest, "invalid_header", "Idempotency-Key must be 1-255 visible ASCII characters",
                               field: "Idempotency-Key")
            }
            idempotency = IdempotencyKey(key: key, requestHash: SHA256.hash(bytes))
        }
        let outcome = try await operate(id) {
            try await gateway.send(DownSend(agentID: id, type: body.content.type, channel: body.content.channel,
                                            payload: body.content.payload, timeToLive: body.content.timeToLive,
                                            idempotency: idempotency, wait: body.wait))
        }
        switch outcome {
        case .accepted(let msgID, let status):
            return json(.accepted) { o in
                o.field("id", msgID)
                o.field("status", status.rawValue)
            }
        case .responded(let msgID, let response):
            return json(.ok) { o in
                o.field("id", msgID)
                o.field("status", "responded")
                o.key("response")
                o.response(response)
            }
        }
    }

    private func broadcast(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let body = try BroadcastBody(try await jsonBody(request))
        let ttl = body.content.timeToLive ?? gateway.defaultDownTimeToLive
        let message = BroadcastMessage(id: UUID(), type: body.content.type.rawValue, channel: body.content.channel,
                                       payload: body.content.payload,
                                       expiresAt: Date().addingTimeInterval(Double(ttl.components.seconds)),
                                       connectedOnly: body.connectedOnly, agentIDs: body.agentIDs)
        let outcome = try await operate(nil) { try await gateway.broadcast(message) }
        return json(.accepted) { o in
            o.field("id", outcome.id)
            o.field("recipients", outcome.recipients)
            o.field("sent", outcome.sent)
            o.key("skipped")
            o.writer.array(outcome.skipped) { w, s in w.string(s) }
        }
    }

    private func createEnrollmentToken(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let body = try EnrollmentTokenBody(try await jsonBody(request, optional: true))
        var rng = SystemRandomNumberGenerator()
        let token = Base64.encodeURL((0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) })
        let expires = Date().addingTimeInterval(Double(body.timeToLive.components.seconds))
        let id = try await storeCall {
            try await store.createEnrollmentToken(hash: SHA256.hash(Array(token.utf8)), expiresAt: expires, uses: body.uses)
        }
        return json(.created) { o in
            o.field("id", id.uuidString.lowercased())
            o.field("token", token)
            o.field("expires_at", date: expires)
            o.field("uses", body.uses)
        }
    }

    // MARK: Messages

    private func listMessages(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        var q = MessageQuery(limit: try limitParameter(query))
        q.agentID = try agentIDQuery(query)
        q.channel = try channelQuery(query)
        if let d = query["direction"] {
            guard let direction = MessageDirection(rawValue: String(d)) else {
                throw APIError.invalidQuery("direction", "direction must be up or down")
            }
            q.direction = direction
        }
        if let after = query["after"] { q.afterSeq = try sequenceNumber(String(after), field: "after") }
        // One more than the page, so that the last page says so.
        var probe = q
        probe.limit += 1
        let fetched = try await storeCall { [probe] in try await store.listMessages(probe) }
        let rows = Array(fetched.prefix(q.limit))
        let next = fetched.count > q.limit ? rows.last.map { String($0.seq) } : nil
        return json(.ok) { o in
            o.key("messages")
            o.writer.array(rows) { w, m in w.object { $0.message(m) } }
            o.field("next_cursor", next)
        }
    }

    private func messageState(_ request: Request, _ context: AdminRequestContext) async throws -> Response {
        guard let id = context.parameters.get("message_id")?.removingPercentEncoding, FieldSyntax.isValidID(id) else {
            throw APIError.notFound("no message with that id")
        }
        if let uuid = UUID(uuidString: id), let b = try await storeCall({ try await store.broadcast(id: uuid) }) {
            return json(.ok) { o in
                o.field("id", id)
                o.field("kind", "broadcast")
                o.field("type", b.type)
                o.field("channel", b.channel)
                o.field("created_at", date: b.createdAt)
                o.key("counts")
                o.writer.object { c in
                    for status in [MessageStatus.queued, .sent, .delivered, .failed] {
                        c.field(status.rawValue, b.recipients.count { $0.status == status })
                    }
                }
                o.key("recipients")
                o.writer.array(b.recipients) { w, r in
                    w.object { o in
                        o.field("agent_id", r.agentID)
                        o.field("status", r.status.rawValue)
                        o.field("send_count", r.sendCount)
                        o.field("delivered_at", date: r.deliveredAt)
                    }
                }
            }
        }
        guard let m = try await storeCall({ try await store.downMessages(msgID: id) }).first else {
            throw APIError.notFound("no down message '\(id)'")
        }
        var response: AgentResponse?
        if m.type == MessageType.request.rawValue,
           let r = try await storeCall({ try await store.response(agentID: m.agentID, to: id) }) {
            response = AgentResponse(id: r.msgID, payload: r.payload, timestamp: r.envelopeTimestamp ?? 0)
        }
        return json(.ok) { o in
            o.field("id", m.msgID)
            o.field("kind", "message")
            o.field("agent_id", m.agentID)
            o.field("type", m.type)
            o.field("channel", m.channel)
            o.field("status", m.status.rawValue)
            o.field("send_count", m.sendCount)
            o.field("created_at", date: m.createdAt)
            o.field("expires_at", date: m.expiresAt)
            o.field("last_attempt_at", date: m.lastAttemptAt)
            o.field("delivered_at", date: m.deliveredAt)
            o.key("response")
            if let response { o.response(response) } else { o.writer.null() }
        }
    }

    // MARK: Health

    private func readiness() async -> Response {
        let database = (try? await store.ping()) != nil
        let listeners = listenersReady()
        return json(database && listeners ? .ok : .serviceUnavailable) { o in
            o.field("status", database && listeners ? "ready" : "not_ready")
            o.field("database", database ? "ok" : "unreachable")
            o.field("listeners", listeners ? "ok" : "draining")
        }
    }

    // MARK: Request parts

    /// The body of a JSON request: application/json, at most 1 MiB.
    func jsonBody(_ request: Request, optional: Bool = false) async throws -> [UInt8] {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maxBody {
            throw APIError.tooLarge
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: Self.maxBody)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw APIError.tooLarge
        }
        if buffer.readableBytes == 0 && optional { return [] }
        let type = request.headers[.contentType]?.split(separator: ";").first?
            .trimmingCharacters(in: .whitespaces).lowercased()
        guard type == "application/json" else { throw APIError.unsupportedMediaType }
        return Array(buffer.readableBytesView)
    }

    func agentID(_ context: AdminRequestContext) throws -> String {
        // An id outside the protocol's syntax names no agent.
        guard let id = context.parameters.get("agent_id")?.removingPercentEncoding, FieldSyntax.isValidAgentID(id) else {
            throw APIError.notFound("no agent with that id")
        }
        return id
    }

    func uuidParameter(_ context: AdminRequestContext, _ name: String, what: String) throws -> UUID {
        guard let text = context.parameters.get(name), let id = UUID(uuidString: text) else {
            throw APIError.notFound("no \(what) with that id")
        }
        return id
    }

    func limitParameter(_ query: FlatDictionary<Substring, Substring>) throws -> Int {
        guard let text = query["limit"] else { return 100 }
        guard let n = Int(text), (1...1000).contains(n) else {
            throw APIError.invalidQuery("limit", "limit must be an integer from 1 to 1000")
        }
        return n
    }

    func agentIDQuery(_ query: FlatDictionary<Substring, Substring>) throws -> String? {
        guard let text = query["agent_id"].map(String.init) else { return nil }
        guard FieldSyntax.isValidAgentID(text) else {
            throw APIError.invalidQuery("agent_id", "agent_id must be 1-255 bytes of [A-Za-z0-9._:@-]")
        }
        return text
    }

    func channelQuery(_ query: FlatDictionary<Substring, Substring>) throws -> String? {
        guard let text = query["channel"].map(String.init) else { return nil }
        guard FieldSyntax.isValidChannel(text) else {
            throw APIError.invalidQuery("channel", "channel must be 1-255 bytes of [A-Za-z0-9._/:-]")
        }
        return text
    }

    func sequenceNumber(_ text: String, field: String) throws -> Int64 {
        guard text.utf8.count <= 18, text.utf8.allSatisfy({ (48...57).contains($0) }), let n = Int64(text) else {
            throw APIError.invalidQuery(field, "\(field) must be a sequence number this API returned")
        }
        return n
    }

    // MARK: Calls

    func storeCall<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreError {
            if case .unavailable = error {} else { logger.error("store call failed", metadata: ["error": "\(error)"]) }
            throw APIError(error)
        }
    }

    func operate<T>(_ agentID: String?, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as OperationError {
            if case .store(let e) = error, !e.isRetryable {
                logger.error("gateway operation failed", metadata: ["error": "\(e)"])
            }
            throw APIError(error, agentID: agentID)
        }
    }
}

/// A JSON response written by `body`.
func json(_ status: HTTPResponse.Status, _ body: (inout JSONWriter.ObjectWriter) -> Void) -> Response {
    var w = JSONWriter()
    w.object(body)
    return Response(status: status, headers: [.contentType: "application/json"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: w.bytes)))
}
