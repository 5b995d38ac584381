/// Why a call to the admin API failed. Every public call throws only this.
public enum AdminClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No HTTP response: connection refused, DNS, TLS, a timeout, or a
    /// stream that broke off.
    case unreachable(String)
    /// The gateway answered with an error status and its
    /// `{"error": {code, message, field}}` body (or, from something that is
    /// not the gateway, such as a proxy, `http_<status>` and the status text).
    case api(status: Int, code: String, message: String, field: String?)
    /// The gateway answered, but not as the OpenAPI document says.
    case badResponse(String)
    /// The call cannot be made as given (a base URL without http(s), an
    /// unreadable CA file, a payload that is not JSON); nothing was sent.
    case invalidArgument(String)

    /// A short machine-readable name: the API's error code, or the case's name.
    public var code: String {
        switch self {
        case .unreachable: "unreachable"
        case .api(_, let code, _, _): code
        case .badResponse: "bad_response"
        case .invalidArgument: "invalid_argument"
        }
    }

    public var message: String {
        switch self {
        case .unreachable(let message), .badResponse(let message), .invalidArgument(let message): message
        case .api(_, _, let message, _): message
        }
    }

    public var description: String {
        if case .api(_, _, _, let field?) = self {
            return "\(code): \(message) (field: \(field))"
        }
        return "\(code): \(message)"
    }
}
