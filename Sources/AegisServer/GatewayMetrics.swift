import AegisProtocol
import Metrics

/// The gateway's metrics, through swift-metrics (whatever backend the
/// process bootstrapped; aegisd uses Prometheus). Handles are made once:
/// making one per event would cost a registry lookup on the hot path.
struct GatewayMetrics: Sendable {
    /// Live sessions on this node.
    let sessions = Gauge(label: "aegis_sessions")
    /// Upgrade to auth_ok, for handshakes that succeed.
    let handshakeDuration = Timer(label: "aegis_handshake_duration_seconds", preferredDisplayUnit: .seconds)
    /// One up batch's transaction, BEGIN to COMMIT (what an ack waits for).
    let upStoreDuration = Timer(label: "aegis_up_store_duration_seconds", preferredDisplayUnit: .seconds)
    /// Up messages per stored transaction.
    let upStoreBatch = Recorder(label: "aegis_up_store_batch_size")
    /// Ids per ack sent (the ack coalescer's effect).
    let ackSize = Recorder(label: "aegis_ack_ids")
    /// Down messages not yet delivered nor failed, all agents (sampled).
    let downQueued = Gauge(label: "aegis_down_queue_depth", dimensions: [("status", "queued")])
    let downSent = Gauge(label: "aegis_down_queue_depth", dimensions: [("status", "sent")])
    /// Down messages sent at once by a broadcast.
    let broadcastRecipients = Recorder(label: "aegis_broadcast_recipients")

    /// By direction (up, down), then type: an index, not a keyed lookup.
    private let messages: [[Counter]]

    init() {
        messages = ["up", "down"].map { direction in
            MessageType.allCases.map { type in
                Counter(label: "aegis_messages_total", dimensions: [("direction", direction), ("type", type.rawValue)])
            }
        }
    }

    func message(up: Bool, _ type: MessageType, count: Int = 1) {
        guard let i = MessageType.allCases.firstIndex(of: type) else { return }
        messages[up ? 0 : 1][i].increment(by: count)
    }

    /// `result` is "ok" or the auth_error code of the refusal.
    func handshake(_ result: String) {
        Counter(label: "aegis_handshakes_total", dimensions: [("result", result)]).increment()
    }
}
