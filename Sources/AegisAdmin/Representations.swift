import AegisProtocol
import AegisServer
import AegisStore
import Foundation

// How the API shows the store's records (the schemas of openapi.json).

extension JSONWriter.ObjectWriter {
    mutating func agent(_ a: AgentRecord, connected: Bool) {
        field("agent_id", a.agentID)
        field("connected", connected)
        field("is_active", a.isActive)
        field("node", a.nodeID)
        field("session_id", a.sessionID.map { $0.uuidString.lowercased() })
        field("connected_at", date: a.connectedAt)
        field("last_seen", date: a.lastSeen)
        field("public_key", Base64.encode(a.publicKey))
        field("enrollment", a.enrollment.rawValue)
        field("created_at", date: a.createdAt)
        field("revoked_at", date: a.revokedAt)
    }

    mutating func queue(_ q: QueueCounts) {
        key("queue")
        writer.object { o in
            o.field("pending", q.queued)
            o.field("sent", q.sent)
            o.field("delivered", q.delivered)
            o.field("failed", q.failed)
        }
    }

    /// `payload` when the bytes are JSON text, else `payload_base64`.
    mutating func payload(_ bytes: [UInt8]) {
        if isJSONText(bytes) {
            key("payload")
            writer.raw(bytes)
        } else {
            field("payload_base64", Base64.encode(bytes))
        }
    }

    mutating func response(_ r: AgentResponse) {
        writer.object { o in
            o.field("id", r.id)
            o.payload(r.payload)
            o.key("timestamp")
            o.writer.int(Int64(clamping: r.timestamp))
        }
    }

    mutating func message(_ m: MessageRecord) {
        field("id", m.msgID)
        key("seq")
        writer.int(m.seq)
        field("agent_id", m.agentID)
        field("direction", m.direction.rawValue)
        field("type", m.type)
        field("channel", m.channel)
        field("ref", m.ref)
        payload(m.payload)
        key("timestamp")
        if let t = m.envelopeTimestamp { writer.int(Int64(clamping: t)) } else { writer.null() }
        field("received_at", date: m.createdAt)
        field("status", m.status.rawValue)
    }

    mutating func apiToken(_ t: ApiTokenRecord) {
        field("id", t.id.uuidString.lowercased())
        field("name", t.name)
        key("scopes")
        writer.array(t.scopes) { w, s in w.string(s.rawValue) }
        field("created_at", date: t.createdAt)
        field("last_used_at", date: t.lastUsedAt)
        field("revoked_at", date: t.revokedAt)
    }
}

/// Whether `bytes` is one JSON text (RFC 8259, any value), so that it can
/// be embedded as it is.
func isJSONText(_ bytes: [UInt8]) -> Bool {
    guard !bytes.isEmpty, String(validating: bytes, as: UTF8.self) != nil else { return false }
    return (try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed)) != nil
}
