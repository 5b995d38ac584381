import AegisStore
import HTTPTypes

/// Every operation of the admin API: its method, path and the scope it
/// needs. openapi.json documents exactly these (a test keeps the two
/// equal), and `AdminAPI` registers a handler for each (the switch in
/// `AdminAPI.handler(for:)` is exhaustive).
public enum Operation: String, CaseIterable, Sendable {
    case healthz, readyz, metrics, openapi
    case listAgents, agentStatus, sendToAgent, broadcast, approveAgent, revokeAgent, deleteAgent
    case createEnrollmentToken, revokeEnrollmentToken
    case listTokens, createToken, revokeToken
    case listMessages, messageState, streamMessages

    public var method: HTTPRequest.Method {
        switch self {
        case .sendToAgent, .broadcast, .approveAgent, .revokeAgent, .createEnrollmentToken, .createToken: .post
        case .deleteAgent, .revokeEnrollmentToken, .revokeToken: .delete
        default: .get
        }
    }

    /// The path, with {parameters} as in the OpenAPI document.
    public var path: String {
        switch self {
        case .healthz: "/healthz"
        case .readyz: "/readyz"
        case .metrics: "/metrics"
        case .openapi: "/api/v1/openapi.json"
        case .listAgents: "/api/v1/agents"
        case .agentStatus: "/api/v1/agents/{agent_id}/status"
        case .sendToAgent: "/api/v1/agents/{agent_id}/send"
        case .broadcast: "/api/v1/agents/broadcast"
        case .approveAgent: "/api/v1/agents/{agent_id}/approve"
        case .revokeAgent: "/api/v1/agents/{agent_id}/revoke"
        case .deleteAgent: "/api/v1/agents/{agent_id}"
        case .createEnrollmentToken: "/api/v1/enrollment-tokens"
        case .revokeEnrollmentToken: "/api/v1/enrollment-tokens/{token_id}"
        case .listTokens, .createToken: "/api/v1/tokens"
        case .revokeToken: "/api/v1/tokens/{token_id}"
        case .listMessages: "/api/v1/messages"
        case .messageState: "/api/v1/messages/{message_id}"
        case .streamMessages: "/api/v1/stream"
        }
    }

    /// nil: no token needed (probes and metrics, outside /api).
    public var scope: Scope? {
        switch self {
        case .healthz, .readyz, .metrics: nil
        case .openapi, .listAgents, .agentStatus, .listMessages, .messageState, .streamMessages: .read
        case .sendToAgent, .broadcast: .send
        case .approveAgent, .revokeAgent, .deleteAgent, .createEnrollmentToken, .revokeEnrollmentToken,
             .listTokens, .createToken, .revokeToken: .admin
        }
    }
}
