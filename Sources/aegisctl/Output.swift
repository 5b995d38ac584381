import AegisAdminClient
import Foundation

/// How aegisctl prints: aligned tables for lists, `key: value` lines for one
/// object, the API's own JSON with `--json`.
enum Output {
    /// Columns as wide as their widest cell, two spaces apart; the last column is not padded.
    static func table(_ headers: [String], _ rows: [[String]]) {
        let all = [headers] + rows
        let widths = headers.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        for row in all {
            let cells = row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : padded(cell, to: widths[column])
            }
            print(cells.joined(separator: "  "))
        }
    }

    /// `key: value` lines with the values aligned.
    static func fields(_ pairs: [(String, String)]) {
        let width = (pairs.map { $0.0.count }.max() ?? 0) + 1
        for (key, value) in pairs {
            print(padded(key + ":", to: width) + " " + value)
        }
    }

    private static func padded(_ text: String, to width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }

    /// A response body as the gateway wrote it, on its own line; nothing for an empty body (204).
    static func raw(_ body: String) {
        guard !body.isEmpty else { return }
        print(body.hasSuffix("\n") ? String(body.dropLast()) : body)
    }

    /// Lines of `tail` must reach a pipe at once, not when a buffer fills.
    static func flush() {
        fflush(nil)
    }

    /// Notes about the output (more pages, a secret shown once) go to stderr so that stdout stays data.
    static func note(_ text: String) {
        FileHandle.standardError.write(Data("aegisctl: \(text)\n".utf8))
    }
}

// MARK: - Cells

func cell(_ text: String?) -> String {
    guard let text, !text.isEmpty else { return "-" }
    return text
}

func yesNo(_ flag: Bool) -> String { flag ? "yes" : "no" }

/// JSON payloads print as compact JSON, others as `base64:…`.
func payloadText(_ payload: JSONValue?, base64: String?) -> String {
    if let payload { return payload.description }
    if let base64 { return "base64:" + base64 }
    return "-"
}

/// Long cells (payloads) are cut in tables; `show` and `--json` print them whole.
func truncated(_ text: String, to length: Int = 60) -> String {
    text.count <= length ? text : String(text.prefix(length - 1)) + "…"
}

// MARK: - Objects

func agentFields(_ agent: Agent) -> [(String, String)] {
    [
        ("agent_id", agent.agentID), ("enrollment", agent.enrollment.rawValue), ("connected", yesNo(agent.connected)),
        ("is_active", yesNo(agent.isActive)), ("node", cell(agent.node)), ("session_id", cell(agent.sessionID)),
        ("connected_at", cell(agent.connectedAt)), ("last_seen", cell(agent.lastSeen)),
        ("public_key", agent.publicKey), ("created_at", agent.createdAt), ("revoked_at", cell(agent.revokedAt)),
    ]
}

func responseFields(_ response: AgentResponse?) -> [(String, String)] {
    guard let response else { return [("response", "-")] }
    return [
        ("response_id", response.id), ("response_timestamp", String(response.timestamp)),
        ("response_payload", payloadText(response.payload, base64: response.payloadBase64)),
    ]
}
