import AegisServer
import AegisStore
import Foundation
import HTTPTypes
import Hummingbird

/// Every error the admin API returns: one JSON shape,
/// `{"error": {"code", "message"[, "field"]}}`, with its HTTP status.
/// The codes are part of the API (docs/admin-api.md).
public struct APIError: Error, Sendable, Equatable, HTTPResponseError {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// The request field at fault (422, some 400s).
    public var field: String?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
    }

    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, "bad_request", message) }
    public static func invalidQuery(_ field: String, _ message: String) -> APIError {
        APIError(.badRequest, "invalid_query", message, field: field)
    }
    public static func invalidField(_ field: String, _ message: String) -> APIError {
        APIError(.unprocessableContent, "invalid_field", message, field: field)
    }
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, "not_found", message) }
    public static let unauthorized = APIError(.unauthorized, "unauthorized", "a valid bearer token is required")
    public static func forbidden(_ needed: Scope) -> APIError {
        APIError(.forbidden, "forbidden", "this token lacks the '\(needed.rawValue)' scope")
    }
    public static let tooLarge = APIError(.contentTooLarge, "payload_too_large", "the request body exceeds 1 MiB")
    public static let unsupportedMediaType = APIError(.unsupportedMediaType, "unsupported_media_type",
                                                      "the request body must be application/json")
    public static func unavailable(_ message: String) -> APIError {
        APIError(.serviceUnavailable, "unavailable", message)
    }

    /// The error of a refused gateway operation.
    init(_ error: OperationError, agentID: String? = nil) {
        switch error {
        case .unknownAgent:
            self = .notFound("no agent \(agentID.map { "'\($0)'" } ?? "with that id")")
        case .agentRevoked:
            self = APIError(.conflict, "agent_revoked", "the agent is revoked")
        case .queueFull(let limit):
            self = APIError(.tooManyRequests, "queue_full", "the agent has \(limit) down messages not yet delivered")
        case .idempotencyConflict:
            self = APIError(.conflict, "idempotency_conflict",
                            "this Idempotency-Key was used for a different request to this agent")
        case .store(let e):
            self = APIError(e)
        }
    }

    /// A store failure: the database is away (503) or something unexpected
    /// (500, logged; the message does not leak SQL).
    init(_ error: StoreError) {
        switch error {
        case .unavailable: self = .unavailable("the database is unavailable; try again")
        case .conflict: self = .unavailable("a concurrent change conflicted; try again")
        default: self = APIError(.internalServerError, "internal", "the gateway could not complete the request")
        }
    }

    public var body: String {
        var w = JSONWriter()
        w.object { o in
            o.key("error")
            o.writer.object { e in
                e.field("code", code)
                e.field("message", message)
                if let field { e.field("field", field) }
            }
        }
        return w.text
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}
