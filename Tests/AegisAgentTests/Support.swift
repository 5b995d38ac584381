@testable import AegisAgent
import AegisProtocol
import Testing

typealias Machine = AgentConnectionStateMachine
typealias Action = AgentConnectionStateMachine.Action

/// `seconds` after an arbitrary origin, on both clocks.
func at(_ seconds: Double) -> AgentInstant {
    AgentInstant(monotonic: .milliseconds(Int64((seconds * 1000).rounded())),
                 unixSeconds: 1_764_211_200 + UInt64(seconds))
}

/// Jitter that returns the given values in turn, then repeats the last.
struct FixedJitter: JitterSource {
    var values: [Double]
    var index = 0
    init(_ values: Double...) { self.values = values }
    mutating func nextUnit() -> Double {
        defer { index += 1 }
        return values[min(index, values.count - 1)]
    }
}

let serverKeyA = (try? Identity.generate().publicKey) ?? []
let serverKeyB = (try? Identity.generate().publicKey) ?? []

func settings(endpoints: Int = 1, jitter: Double = 1.0, _ configure: (inout Machine.Settings) -> Void = { _ in })
    -> Machine.Settings {
    var s = Machine.Settings(endpoints: (0..<endpoints).map { "wss://gw\($0).example:8443/ws/agent" })
    s.jitter = FixedJitter(jitter)
    s.backoff = BackoffPolicy(initial: .seconds(1), cap: .seconds(60))
    configure(&s)
    return s
}

func params(_ key: [UInt8] = serverKeyA, session: String = "00000000-0000-4000-8000-000000000001",
            heartbeat: UInt64 = 30) -> SessionParameters {
    SessionParameters(sessionID: session, serverKey: key, heartbeatInterval: heartbeat, expiresAt: 1_764_297_600)
}

extension Array where Element == Action {
    var connects: [ConnectionAttempt] { compactMap { if case .connect(let a) = $0 { a } else { nil } } }
    var sends: [MessageHeader] { compactMap { if case .send(_, let h, _) = $0 { h } else { nil } } }
    var sentPlaintexts: [[UInt8]] { compactMap { if case .send(_, _, let p) = $0 { p } else { nil } } }
    var closes: [UInt16] { compactMap { if case .close(_, let code, _) = $0 { code } else { nil } } }
    var delivered: [ReceivedMessage] { compactMap { if case .deliver(let m) = $0 { m } else { nil } } }
    var events: [AgentEvent] { compactMap { if case .report(let e) = $0 { e } else { nil } } }
    var stopped: AgentError?? {
        for a in self { if case .stopped(let e) = a { return .some(e) } }
        return nil
    }
    var retryDelay: Duration? {
        for e in events { if case .disconnected(_, _, let d) = e { return d } }
        return nil
    }
    var failedRequests: [String: AgentError] {
        var out: [String: AgentError] = [:]
        for a in self { if case .failRequest(let id, let e) = a { out[id] = e } }
        return out
    }
}

/// A machine with helpers to walk it through connections.
struct Harness {
    var machine: Machine
    var now: Double = 0

    init(_ s: Machine.Settings) { machine = Machine(settings: s) }

    var attempt: ConnectionAttempt? { machine.currentAttempt }

    /// Start (or wait out the reconnect delay) and connect, upgrade and
    /// authenticate; returns the actions of the auth success.
    @discardableResult
    mutating func establish(_ p: SessionParameters = params()) -> [Action] {
        var actions = machine.start(now: at(now))
        if actions.isEmpty, let due = machine.reconnectAt {
            now = max(now, Double(due.components.seconds) + Double(due.components.attoseconds) / 1e18)
            actions = machine.tick(now: at(now))
        }
        guard let a = actions.connects.first else {
            Issue.record("no connect: \(actions)")
            return []
        }
        _ = machine.upgraded(a, now: at(now))
        return machine.authSucceeded(a, p, now: at(now))
    }

    mutating func advance(to t: Double) -> [Action] {
        now = t
        return machine.tick(now: at(t))
    }

    mutating func receive(_ m: ReceivedMessage) -> [Action] {
        guard let a = attempt else { return [] }
        return machine.messageReceived(a, m, now: at(now))
    }

    mutating func ack(_ ids: [String]) -> [Action] {
        let plaintext = (try? AckPlaintext.build(ids: ids)) ?? []
        return receive(ReceivedMessage(id: MessageIDs.make(), type: .ack, channel: "aegis.ack", ref: ids.first,
                                       payload: plaintext, timestamp: at(now).unixSeconds))
    }

    mutating func drop(code: UInt16 = CloseCodes.abnormal) -> [Action] {
        guard let a = attempt else { return [] }
        return machine.closed(a, code: code, now: at(now))
    }

    mutating func enqueue(_ id: String, type: MessageType = .event, channel: String = "telemetry",
                          deadline: Double? = nil) -> [Action] {
        machine.enqueue(OutgoingMessage(id: id, type: type, channel: channel, payload: Array(id.utf8)),
                        responseDeadline: deadline.map { at($0).monotonic }, now: at(now))
    }
}

func event(_ id: String, type: MessageType = .event, ref: String? = nil, duplicate: Bool = false) -> ReceivedMessage {
    ReceivedMessage(id: id, type: type, channel: "config/changed", ref: ref, payload: Array("{}".utf8),
                    timestamp: 1_764_211_200, isDuplicate: duplicate)
}
