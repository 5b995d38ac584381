import AegisIO
import AegisProtocol
import Foundation

/// N simulated agents on one client endpoint of the transport
/// (aegis_wsc.h), driven by the thread that calls a phase method. Each
/// agent does what a real one must: the handshake with an ephemeral key,
/// sealing up messages, opening and counting acks, acking the down
/// messages it receives and answering requests. The crypto is the C core's
/// (the same as the SDK's), so the fleet is as cheap per message as an
/// agent can be, and what it measures is the gateway.
///
/// Not thread-safe: one phase at a time, from one thread.
public final class SimulatedFleet: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var host = "127.0.0.1"
        public var port: UInt16 = 8443
        /// Several nodes: agent i connects to ports[i % count] (else `port`).
        public var ports: [UInt16] = []
        public var tls = false
        /// The gateway's certificate, pinned by its SHA-256 (hex); nil with
        /// TLS: the system trust store.
        public var pinSHA256: String?
        /// The gateway's Ed25519 key; nil: accept the one in auth_ok.
        public var serverKey: [UInt8]?
        public var agents = 100
        /// Agent ids are prefix + index.
        public var agentPrefix = "bench-"
        /// Source addresses the connections spread over (127.0.0.x).
        public var sourceAddresses: [String] = ["127.0.0.1"]
        public var payloadBytes = 256
        public var channel = "bench.up"
        /// Up messages that are requests, the rest events (0…1).
        public var requestFraction = 0.0
        public var backend = AEGIS_IO_AUTO

        public init() {}
    }

    /// What a phase counted.
    public struct Counters: Sendable, Codable, Equatable {
        public var sent = 0
        public var acked = 0
        public var acks = 0
        public var ackedIDs = 0
        public var downReceived = 0
        public var downDuplicates = 0
        public var responsesSent = 0
        public var handshakes = 0
        public var refusals: [String: Int] = [:]
        public var closes: [String: Int] = [:]
        public var errors = 0

        public init() {}

        /// Ids per ack the gateway sent.
        public var idsPerAck: Double { acks == 0 ? 0 : Double(ackedIDs) / Double(acks) }
    }

    enum AgentState {
        case idle
        case connecting(startedAt: UInt64)
        case authenticating(AgentHandshake, startedAt: UInt64)
        case ready(SessionKeys)
        case closed
    }

    final class Agent {
        let index: Int
        let agentID: String
        let identity: Identity
        var conn: UInt64 = 0
        var state = AgentState.idle
        /// Up message id → when it was sent (ns), until its ack.
        var inFlight: [String: UInt64] = [:]
        var presealed: [(id: String, json: [UInt8])] = []
        var nextSeq = 0
        /// Down ids received since the last ack this agent sent.
        var toAck: [String] = []
        var seenDown: Set<String> = []
        var lastSentNs: UInt64 = 0

        init(index: Int, agentID: String, identity: Identity) {
            self.index = index
            self.agentID = agentID
            self.identity = identity
        }

        var session: SessionKeys? {
            if case .ready(let s) = state { return s }
            return nil
        }
    }

    public let configuration: Configuration
    private let client: OpaquePointer
    private var agents: [Agent] = []
    private var byConn: [UInt64: Agent] = [:]
    /// Connections started and not yet ready or failed.
    private var pendingConnections = 0
    private var events = [aegis_wsc_event](repeating: aegis_wsc_event(), count: 512)
    private let payload: [UInt8]
    public private(set) var counters = Counters()
    /// Up message latency, send to ack (µs).
    public private(set) var upLatency = LatencyHistogram()
    /// Connect to auth_ok (µs).
    public private(set) var handshakeLatency = LatencyHistogram()
    /// Down message id → when an agent first received it (ns).
    public private(set) var downReceivedAt: [String: UInt64] = [:]
    /// Called about once a second during a phase, with the counters so far.
    public var progress: ((Counters) -> Void)?

    public init(_ configuration: Configuration) throws(BenchError) {
        self.configuration = configuration
        var cfg = aegis_wsc_config()
        cfg.backend = configuration.backend
        cfg.tls = configuration.tls
        cfg.max_connections = UInt32(max(configuration.agents, 16) + 16)
        var err = [CChar](repeating: 0, count: 256)
        var handle: OpaquePointer?
        let rc = withOptionalCString(configuration.pinSHA256) { pin in
            cfg.pin_sha256 = pin
            return aegis_wsc_create(&cfg, &handle, &err, err.count)
        }
        guard rc == 0, let handle else {
            throw .setup("client endpoint: \(String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        client = handle
        payload = Array(String(repeating: "x", count: configuration.payloadBytes).utf8)
        do {
            for i in 0..<configuration.agents {
                agents.append(Agent(index: i, agentID: configuration.agentPrefix + String(i), identity: try Identity.generate()))
            }
        } catch {
            throw .setup("agent keys: \(error)")
        }
    }

    deinit { aegis_wsc_free(client) }

    public var readyAgents: Int { agents.count { $0.session != nil } }
    public var agentIDs: [String] { agents.map(\.agentID) }

    public func resetCounters() {
        counters = Counters()
        upLatency = LatencyHistogram()
        handshakeLatency = LatencyHistogram()
        downReceivedAt.removeAll(keepingCapacity: true)
    }

    // MARK: Phases

    /// Connects every idle agent, at most `rate` new connections a second
    /// (0: as fast as the gateway answers, `concurrency` at a time), and
    /// returns when all are ready or failed, or at `deadline`.
    public func connectAll(rate: Double, concurrency: Int, timeout: Duration) {
        let start = monotonicNs()
        let end = start + UInt64(timeout.seconds * 1e9)
        var next = 0
        while monotonicNs() < end {
            let now = monotonicNs()
            let allowedByRate = rate > 0 ? Int(Double(now - start) / 1e9 * rate) + 1 : Int.max
            var started = 0
            while next < agents.count, started < allowedByRate, pendingConnections < concurrency {
                switch agents[next].state {
                case .idle, .closed: connect(agents[next])
                default: break
                }
                next += 1
                started += 1
            }
            if next == agents.count && pendingConnections == 0 { break }
            pump(timeoutMs: 5)
        }
    }

    /// Steady up traffic for `duration`: each ready agent keeps `inFlight`
    /// messages unacked; `rate` > 0 caps the total per second. With
    /// presealed messages (`preseal`), those are sent first.
    public func runUp(duration: Duration, inFlight: Int, rate: Double) {
        let start = monotonicNs()
        let end = start + UInt64(duration.seconds * 1e9)
        var lastProgress = start
        var budget = 0.0
        var lastRefill = start
        while true {
            let now = monotonicNs()
            if now >= end { break }
            if rate > 0 {
                budget = min(budget + Double(now - lastRefill) / 1e9 * rate, max(rate / 10, 1))
                lastRefill = now
            }
            for agent in agents {
                guard let session = agent.session else { continue }
                while agent.inFlight.count < inFlight && (rate <= 0 || budget >= 1) {
                    sendUp(agent, session, now: now)
                    budget -= 1
                }
            }
            pump(timeoutMs: 1)
            if now - lastProgress >= 1_000_000_000 {
                lastProgress = now
                progress?(counters)
            }
        }
        // Let in-flight messages be acked, so that they count.
        let drainEnd = monotonicNs() + 2_000_000_000
        while monotonicNs() < drainEnd && agents.contains(where: { !$0.inFlight.isEmpty && $0.session != nil }) {
            pump(timeoutMs: 5)
        }
    }

    /// Seals `perAgent` up messages for every ready agent ahead of time,
    /// timestamped `ahead` in the future so that they stay within the
    /// gateway's clock skew for the phase that sends them.
    public func preseal(perAgent: Int, ahead: Duration) throws(BenchError) {
        let timestamp = UInt64(Date().timeIntervalSince1970) + UInt64(ahead.components.seconds)
        for agent in agents {
            guard let session = agent.session else { continue }
            agent.presealed.reserveCapacity(perAgent)
            for _ in 0..<perAgent {
                let (id, type) = nextMessage(agent)
                do {
                    let json = try session.seal(MessageHeader(id: id, type: type, channel: configuration.channel,
                                                              timestamp: timestamp), plaintext: payload)
                    agent.presealed.append((id, json))
                } catch {
                    throw .setup("preseal: \(error)")
                }
            }
        }
    }

    /// Receives (and acks, and answers) down messages until `done` says
    /// so or `timeout` passes.
    public func receive(timeout: Duration, until done: (Counters) -> Bool) {
        let end = monotonicNs() + UInt64(timeout.seconds * 1e9)
        var lastProgress = monotonicNs()
        while monotonicNs() < end && !done(counters) {
            pump(timeoutMs: 2)
            keepAlive()
            if monotonicNs() - lastProgress >= 1_000_000_000 {
                lastProgress = monotonicNs()
                progress?(counters)
            }
        }
    }

    /// Closes every agent's connection (1000) and waits for the closes.
    public func closeAll(timeout: Duration = .seconds(5)) {
        for agent in agents where agent.conn != 0 {
            _ = aegis_wsc_close(client, agent.conn, 1000, "bench done")
        }
        let end = monotonicNs() + UInt64(timeout.seconds * 1e9)
        while monotonicNs() < end && agents.contains(where: { $0.conn != 0 }) { pump(timeoutMs: 10) }
    }

    // MARK: Agents

    private func connect(_ agent: Agent) {
        let headers = ["X-Agent-ID: \(agent.agentID)", "X-Agent-Public-Key: \(agent.identity.publicKeyBase64)",
                       "User-Agent: Aegis-Agent/1.0 aegis-bench"]
        let source = configuration.sourceAddresses[agent.index % configuration.sourceAddresses.count]
        var conn: UInt64 = 0
        let rc = withCStrings(headers) { list in
            aegis_wsc_connect(client, configuration.host,
                              configuration.ports.isEmpty ? configuration.port
                                  : configuration.ports[agent.index % configuration.ports.count],
                              "/ws/agent", list, headers.count, source, &conn)
        }
        guard rc == 0 else {
            counters.errors += 1
            agent.state = .closed
            return
        }
        agent.conn = conn
        agent.state = .connecting(startedAt: monotonicNs())
        pendingConnections += 1
        byConn[conn] = agent
    }

    private func nextMessage(_ agent: Agent) -> (String, MessageType) {
        agent.nextSeq += 1
        let isRequest = configuration.requestFraction > 0
            && Double(agent.nextSeq % 1000) < configuration.requestFraction * 1000
        return ("m-\(agent.index)-\(agent.nextSeq)", isRequest ? .request : .event)
    }

    private func sendUp(_ agent: Agent, _ session: SessionKeys, now: UInt64) {
        let id: String
        let json: [UInt8]
        if !agent.presealed.isEmpty {
            (id, json) = agent.presealed.removeFirst()
        } else {
            let (nextID, type) = nextMessage(agent)
            do {
                json = try session.seal(
                    MessageHeader(id: nextID, type: type, channel: configuration.channel,
                                  timestamp: UInt64(Date().timeIntervalSince1970)), plaintext: payload)
            } catch {
                counters.errors += 1
                counters.refusals["seal: \(error)", default: 0] += 1
                return
            }
            id = nextID
        }
        guard send(agent, json) else { return }
        agent.inFlight[id] = now
        counters.sent += 1
    }

    private func send(_ agent: Agent, _ json: [UInt8]) -> Bool {
        let rc = json.withUnsafeBytes { aegis_wsc_send(client, agent.conn, true, $0.baseAddress, $0.count) }
        if rc != 0 { counters.errors += 1 }
        agent.lastSentNs = monotonicNs()
        return rc == 0
    }

    /// A heartbeat from agents silent for 20 s (the gateway closes after
    /// three 30 s intervals of silence).
    private func keepAlive() {
        let now = monotonicNs()
        for agent in agents where now - agent.lastSentNs > 20_000_000_000 {
            guard let session = agent.session,
                  let json = try? session.seal(MessageHeader(id: "hb-\(agent.index)-\(now)", type: .heartbeat,
                                                             channel: "aegis.heartbeat",
                                                             timestamp: UInt64(Date().timeIntervalSince1970)),
                                               plaintext: []) else { continue }
            _ = send(agent, json)
        }
    }

    // MARK: Events

    private func pump(timeoutMs: Int32) {
        let n = events.withUnsafeMutableBufferPointer { aegis_wsc_run(client, $0.baseAddress, $0.count, timeoutMs) }
        guard n > 0 else { return }
        var opened: [(Agent, SessionKeys, [UInt8])] = []
        for i in 0..<Int(n) {
            let e = events[i]
            guard let agent = byConn[e.conn] else { continue }
            switch e.kind {
            case AEGIS_WSC_EV_OPEN:
                let handshake: AgentHandshake
                do {
                    handshake = try AgentHandshake(identity: agent.identity, agentID: agent.agentID,
                                                   timestamp: UInt64(Date().timeIntervalSince1970), ephemeral: true)
                } catch {
                    counters.errors += 1
                    continue
                }
                if case .connecting(let started) = agent.state {
                    agent.state = .authenticating(handshake, startedAt: started)
                }
                _ = send(agent, handshake.authRequest)
            case AEGIS_WSC_EV_MESSAGE:
                let bytes = e.data.map { Array(UnsafeBufferPointer(start: $0, count: e.len)) } ?? []
                switch agent.state {
                case .authenticating(let handshake, let started):
                    do {
                        let (_, session) = try handshake.finish(bytes, expectedServerKey: configuration.serverKey)
                        agent.state = .ready(session)
                        pendingConnections -= 1
                        counters.handshakes += 1
                        handshakeLatency.record(microseconds: (monotonicNs() - started) / 1000)
                    } catch {
                        counters.refusals[handshake.refusal?.code ?? "\(error)", default: 0] += 1
                    }
                case .ready(let session):
                    opened.append((agent, session, bytes))
                default:
                    break
                }
            case AEGIS_WSC_EV_REFUSED:
                counters.refusals["http_\(e.status)", default: 0] += 1
                detach(agent)
            case AEGIS_WSC_EV_CLOSED:
                counters.closes[String(e.close_code), default: 0] += 1
                detach(agent)
            case AEGIS_WSC_EV_ERROR:
                counters.errors += 1
                detach(agent)
            default:
                break
            }
        }
        if !opened.isEmpty { handle(opened) }
    }

    private func detach(_ agent: Agent) {
        switch agent.state {
        case .connecting, .authenticating: pendingConnections -= 1
        default: break
        }
        byConn[agent.conn] = nil
        agent.conn = 0
        agent.state = .closed
        agent.inFlight.removeAll()
    }

    /// Opens what arrived in one batch (one C call), then acts on it.
    private func handle(_ received: [(Agent, SessionKeys, [UInt8])]) {
        let now = UInt64(Date().timeIntervalSince1970)
        let results = MessageBatch.open(received.map { ($0.1, $0.2) }, now: now)
        let nowNs = monotonicNs()
        var toAck: [ObjectIdentifier: Agent] = [:]
        for ((agent, session, _), result) in zip(received, results) {
            guard case .success(let m) = result else {
                counters.errors += 1
                continue
            }
            switch m.type {
            case .ack:
                guard let ids = try? AckPlaintext.ids(from: m.plaintext) else { continue }
                counters.acks += 1
                counters.ackedIDs += ids.count
                for id in ids {
                    if let sentAt = agent.inFlight.removeValue(forKey: id) {
                        counters.acked += 1
                        upLatency.record(microseconds: (nowNs - sentAt) / 1000)
                    }
                }
            case .event, .request:
                if agent.seenDown.insert(m.id).inserted {
                    counters.downReceived += 1
                    if downReceivedAt[m.id] == nil { downReceivedAt[m.id] = nowNs }
                    if m.type == .request { respond(agent, session, to: m) }
                } else {
                    counters.downDuplicates += 1
                }
                agent.toAck.append(m.id)
                toAck[ObjectIdentifier(agent)] = agent
            default:
                break
            }
        }
        for agent in toAck.values { sendAck(agent) }
    }

    private func respond(_ agent: Agent, _ session: SessionKeys, to request: SecureMessage) {
        agent.nextSeq += 1
        let header = MessageHeader(id: "r-\(agent.index)-\(agent.nextSeq)", type: .response, channel: request.channel,
                                   ref: request.id, timestamp: UInt64(Date().timeIntervalSince1970))
        guard let json = try? session.seal(header, plaintext: Array(#"{"ok":true}"#.utf8)) else { return }
        if send(agent, json) { counters.responsesSent += 1 }
    }

    private func sendAck(_ agent: Agent) {
        guard let session = agent.session, !agent.toAck.isEmpty else { return }
        while !agent.toAck.isEmpty {
            let ids = Array(agent.toAck.prefix(AckPlaintext.maxIDs))
            agent.toAck.removeFirst(ids.count)
            agent.nextSeq += 1
            guard let plaintext = try? AckPlaintext.build(ids: ids),
                  let json = try? session.seal(MessageHeader(id: "a-\(agent.index)-\(agent.nextSeq)", type: .ack,
                                                             channel: "aegis.ack", ref: ids[0],
                                                             timestamp: UInt64(Date().timeIntervalSince1970)),
                                               plaintext: plaintext) else { continue }
            _ = send(agent, json)
        }
    }
}

public enum BenchError: Error, Sendable, CustomStringConvertible {
    case setup(String)
    case gateway(String)

    public var description: String {
        switch self {
        case .setup(let m): "setup: \(m)"
        case .gateway(let m): "gateway: \(m)"
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for the fleet and the
/// orchestrator's REST calls.
public func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString(body)
}

/// A C array of C strings for the duration of `body`.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
