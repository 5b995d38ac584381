import AegisStore
import HTTPTypes
import Hummingbird
import Logging

/// Turns every error into the API's JSON error shape: `APIError`s as they
/// are, Hummingbird's own (no route: 404; a body too large: 413; …) by
/// their status, anything else a logged 500 that says nothing internal.
struct ErrorShaping: RouterMiddleware {
    typealias Context = AdminRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as HTTPResponseError {
            let shaped: APIError = switch error.status {
            case .notFound: .notFound("no such route: \(request.method) \(request.uri.path)")
            case .methodNotAllowed: APIError(.methodNotAllowed, "method_not_allowed", "\(request.method) is not allowed here")
            case .contentTooLarge: .tooLarge
            case .badRequest: .badRequest("the request is malformed")
            default: APIError(error.status, "http_\(error.status.code)", error.status.reasonPhrase)
            }
            return try shaped.response(from: request, context: context)
        } catch {
            logger.error("admin request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return try APIError(.internalServerError, "internal", "the gateway could not complete the request")
                .response(from: request, context: context)
        }
    }
}

/// Every /api request needs `Authorization: Bearer <token>` naming a live
/// token (401 otherwise); the route then checks the scope (403).
struct BearerAuthentication: RouterMiddleware {
    typealias Context = AdminRequestContext
    let tokens: ApiTokens

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/api/") || request.uri.path == "/api" else {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization], header.count > 7,
              header.prefix(7).lowercased() == "bearer " else { throw APIError.unauthorized }
        let text = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard (1...512).contains(text.utf8.count) else { throw APIError.unauthorized }
        let token: ApiTokenRecord?
        do {
            token = try await tokens.authenticate(text)
        } catch {
            throw APIError(error)
        }
        guard let token else { throw APIError.unauthorized }
        var context = context
        context.token = token
        return try await next(request, context)
    }
}
