import AegisAdminClient
import Foundation

/// One aegis-bench run: the phases in order against one gateway, each
/// measured by the gateway's CPU (from /proc) beside the fleet's counts,
/// and the bare crypto costs measured in the same process at the end, so
/// that every ratio divides figures of the same run on the same machine.
public struct BenchOptions: Sendable {
    public var fleet = SimulatedFleet.Configuration()
    public var rampRate = 0.0
    public var rampConcurrency = 256
    public var handshakeRounds = 2
    public var upDuration: Duration = .seconds(10)
    /// One up phase per value: messages in flight per agent.
    public var inFlight = [1, 16]
    /// 0: as fast as acks allow.
    public var upRate = 0.0
    /// Seal the up workload before the timed phase.
    public var precomputed = false
    public var presealPerAgent = 400
    public var downMessages = 2000
    public var downConcurrency = 32
    public var broadcasts = 3
    public var roundTrips = 200
    public var roundTripConcurrency = 16
    /// Processes holding the agents (this one and processes - 1 workers).
    public var processes = 1

    public init() {}
}

/// Everything a run measured (the JSON report).
public struct BenchReport: Sendable, Codable {
    public struct Phase: Sendable, Codable {
        public var name: String
        public var seconds: Double
        public var operations: Int
        /// Operations per second.
        public var throughput: Double
        public var latency: LatencySummary?
        public var gatewayCPUSeconds: Double
        public var postgresCPUSeconds: Double
        /// Gateway CPU per operation, µs (and per 1,000 operations, ms).
        public var gatewayMicrosecondsPerOperation: Double
        public var postgresMicrosecondsPerOperation: Double
        /// Bare crypto per operation, µs, and gateway ÷ bare.
        public var bareMicrosecondsPerOperation: Double?
        public var ratio: Double?
        /// The bare costs sampled during the phase, on a thread of the
        /// bench, under the load the gateway ran under (a few calls every
        /// 100 ms, about 1 % of a core); `ratio` divides by these when
        /// present, `quietRatio` by the quiet machine's.
        public var bareUnderLoad: BareCosts?
        public var quietRatio: Double?
        public var counters: SimulatedFleet.Counters
        public var notes: [String: Double] = [:]
    }

    public var date = Date()
    public var agents: Int
    public var payloadBytes: Int
    public var tls: Bool
    public var precomputed: Bool
    public var gatewayResidentBytes: Int
    public var residentBytesPerConnection: Double
    public var bare: BareCosts?
    public var phases: [Phase] = []
    /// One row a second: the CSV.
    public var samples: [Sample] = []

    public struct Sample: Sendable, Codable {
        public var seconds: Double
        public var phase: String
        public var sent: Int
        public var acked: Int
        public var downReceived: Int
        public var gatewayCPUPercent: Double
        public var postgresCPUPercent: Double
    }

    public func phase(_ name: String) -> Phase? { phases.first { $0.name == name } }

    /// Divides each phase's gateway CPU per operation by the bare crypto
    /// that operation requires: a handshake's gateway share; an up message's
    /// open plus its share of the ack that covered it (the ids per ack the
    /// phase saw); a down message's seal plus the open of the agent's ack
    /// (the bench acks each down message on its own).
    public mutating func attach(_ bare: BareCosts) {
        self.bare = bare
        func bareSeconds(_ p: Phase, _ bare: BareCosts) -> Double? {
            switch p.name {
            case "handshake": bare.handshakeSeconds
            case let n where n.hasPrefix("up-"): bare.openSeconds + bare.ackSealSeconds / max(p.counters.idsPerAck, 1)
            case "down", "broadcast": bare.sealSeconds + bare.ackOpenSeconds
            default: nil
            }
        }
        for i in phases.indices {
            let p = phases[i]
            guard let quiet = bareSeconds(p, bare) else { continue }
            let used = p.bareUnderLoad.flatMap { bareSeconds(p, $0) } ?? quiet
            phases[i].bareMicrosecondsPerOperation = used * 1e6
            phases[i].ratio = p.gatewayMicrosecondsPerOperation / (used * 1e6)
            phases[i].quietRatio = p.gatewayMicrosecondsPerOperation / (quiet * 1e6)
        }
    }
}

public final class BenchRun: @unchecked Sendable {
    let options: BenchOptions
    let gateway: GatewayUnderTest
    let fleet: SimulatedFleet
    let admin: AdminClient?
    let fleetThread: FleetThread
    let workers: FleetWorkers
    private let startNs = monotonicNs()
    private var report: BenchReport
    private var lastSample: (ns: UInt64, gateway: Double, postgres: Double)?
    /// Lines for people, as the run goes.
    public var log: @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }

    public static func make(options: BenchOptions, gateway: GatewayUnderTest) async throws -> BenchRun {
        let thread = FleetThread()
        return try await thread.run { try BenchRun(options: options, gateway: gateway, thread: thread) }
    }

    private init(options: BenchOptions, gateway: GatewayUnderTest, thread: FleetThread) throws {
        self.fleetThread = thread
        // The agents split evenly; this process keeps the first share.
        let processes = max(1, options.processes)
        let share = options.fleet.agents / processes
        var workerArguments: [[String]] = []
        for i in 1..<processes {
            var args = ["--agent-host", gateway.host, "--agent-port", String(gateway.agentPort),
                        "--agent-ports", gateway.agentPorts.map(String.init).joined(separator: ","),
                        "--agents", String(share), "--agent-prefix", "bench-w\(i)-",
                        "--source-offset", String(i * 50), "--sources", "50",
                        "--payload-bytes", String(options.fleet.payloadBytes),
                        "--request-fraction", String(options.fleet.requestFraction)]
            if options.fleet.tls { args.append("--tls") }
            if let key = options.fleet.serverKey ?? gateway.serverKey {
                args += ["--server-key", Data(key).base64EncodedString()]
            }
            if let pin = options.fleet.pinSHA256 ?? gateway.tlsFingerprint { args += ["--pin-sha256", pin] }
            workerArguments.append(args)
        }
        self.workers = try FleetWorkers(arguments: workerArguments)
        var fleetConfig = options.fleet
        fleetConfig.agents = options.fleet.agents - share * (processes - 1)
        fleetConfig.host = gateway.host
        fleetConfig.port = gateway.agentPort
        fleetConfig.ports = gateway.agentPorts
        fleetConfig.serverKey = fleetConfig.serverKey ?? gateway.serverKey
        if fleetConfig.tls { fleetConfig.pinSHA256 = fleetConfig.pinSHA256 ?? gateway.tlsFingerprint }
        self.options = options
        self.gateway = gateway
        self.fleet = try SimulatedFleet(fleetConfig)
        self.admin = try gateway.adminURL.map { url throws(AdminClientError) in
            try AdminClient(baseURL: url, token: gateway.adminToken)
        }
        report = BenchReport(agents: options.fleet.agents, payloadBytes: fleetConfig.payloadBytes, tls: fleetConfig.tls,
                             precomputed: options.precomputed, gatewayResidentBytes: 0, residentBytesPerConnection: 0)
    }

    public func run() async throws -> BenchReport {
        defer { Task { [admin] in await admin?.shutdown() } }
        let idle = gateway.usage().gateway.residentBytes
        // The denominators: measured before the load and again after it,
        // the smaller kept (BareCosts.minimum). Acks are sized for the
        // largest window, which is where acks carry the most ids.
        let ackIDs = max(1, options.inFlight.max() ?? 1)
        let bareBefore = BareCosts.measure(payloadBytes: options.fleet.payloadBytes, ackIDs: ackIDs)

        // Connection ramp and handshakes: connect, close, reconnect.
        let connect = FleetCommand.connect(rounds: options.handshakeRounds, rate: options.rampRate,
                                           concurrency: options.rampConcurrency)
        let hs = try await measure("handshake", workers: connect) { $0.handshakes } latency: { $1 }

        guard fleet.readyAgents > 0 else { throw BenchError.gateway("no agent could connect: \(hs.counters)") }
        let connected = gateway.usage().gateway.residentBytes
        report.gatewayResidentBytes = connected
        report.residentBytesPerConnection = Double(connected - idle) / Double(max(fleet.readyAgents, 1))

        // Steady up traffic, durable before acked.
        for window in options.inFlight {
            if options.precomputed {
                // Before the timed phase, in every process.
                let preseal = FleetCommand.preseal(perAgent: options.presealPerAgent)
                async let remote = runWorkers(preseal)
                _ = try await fleetThread.run { try self.fleet.perform(preseal) }
                _ = try await remote
            }
            let up = FleetCommand.up(window: window, seconds: options.upDuration.seconds,
                                     rate: options.upRate / Double(max(1, options.processes)))
            try await measure("up-inflight-\(window)", workers: up) { $0.acked } latency: { up, _ in up }
        }

        if let admin {
            try await downPhase(admin)
            try await broadcastPhase(admin)
            try await roundTripPhase(admin)
        }
        _ = try await workers.run(.close)
        workers.stop()
        await fleetThread.run { self.fleet.closeAll() }

        let bare = bareBefore.minimum(BareCosts.measure(payloadBytes: options.fleet.payloadBytes, ackIDs: ackIDs))
        report.attach(bare)
        return report
    }

    // MARK: Phases through the admin API

    /// Down messages sent one per REST call to agents in turn; done when
    /// every one was received.
    private func downPhase(_ admin: AdminClient) async throws {
        let ids = fleet.agentIDs
        let total = options.downMessages
        let sentAt = SendTimes()
        _ = try await measure("down", concurrent: {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<self.options.downConcurrency {
                    group.addTask {
                        var i = worker
                        while i < total {
                            let start = monotonicNs()
                            if case .accepted(let a) = try await admin.send(
                                to: ids[i % ids.count], channel: "bench.down", payload: .json(#"{"n":\#(i)}"#)) {
                                sentAt.set(a.id, start)
                            }
                            i += self.options.downConcurrency
                        }
                    }
                }
                try await group.waitForAll()
            }
        }) { () -> (Int, LatencySummary?) in
            self.fleet.receive(timeout: .seconds(120)) { $0.downReceived >= total }
            return (self.fleet.counters.downReceived, nil)
        }
        var latency = LatencyHistogram()
        for (id, start) in sentAt.all() {
            if let got = fleet.downReceivedAt[id], got >= start { latency.record(microseconds: (got - start) / 1000) }
        }
        report.phases[report.phases.count - 1].latency = latency.summary
    }

    /// Broadcasts to every agent; a broadcast is done when every agent got it.
    private func broadcastPhase(_ admin: AdminClient) async throws {
        var reach: [Double] = []
        let agents = fleet.readyAgents
        var phase: BenchReport.Phase?
        for b in 0..<options.broadcasts {
            let start = monotonicNs()
            // measure() starts the counters at zero.
            // Every process's agents receive it; the workers count theirs.
            let share = options.fleet.agents / max(1, options.processes)
            var p = try await measure("broadcast", concurrent: {
                _ = try await admin.broadcast(channel: "bench.broadcast", payload: .json(#"{"b":\#(b)}"#))
            }, workers: .receive(seconds: 60, expected: share)) { () -> (Int, LatencySummary?) in
                self.fleet.receive(timeout: .seconds(60)) { $0.downReceived >= agents }
                return (0, nil)
            }
            p.operations = p.counters.downReceived
            finish(&p)
            reach.append(Double(p.operations) / (Double(monotonicNs() - start) / 1e9))
            if phase == nil {
                phase = p
            } else if var merged = phase {
                merged.seconds += p.seconds
                merged.operations += p.operations
                merged.gatewayCPUSeconds += p.gatewayCPUSeconds
                merged.postgresCPUSeconds += p.postgresCPUSeconds
                phase = merged
            }
            report.phases.removeLast()
        }
        if var merged = phase {
            merged.throughput = Double(merged.operations) / max(merged.seconds, 1e-9)
            merged.gatewayMicrosecondsPerOperation = merged.gatewayCPUSeconds * 1e6 / Double(max(merged.operations, 1))
            merged.postgresMicrosecondsPerOperation = merged.postgresCPUSeconds * 1e6 / Double(max(merged.operations, 1))
            merged.notes["agents_reached_per_second_median"] = reach.sorted()[reach.count / 2]
            report.phases.append(merged)
        }
    }

    /// Requests through the admin API with a wait: REST in, agent's
    /// response out.
    private func roundTripPhase(_ admin: AdminClient) async throws {
        let ids = fleet.agentIDs
        let total = options.roundTrips
        let latencies = LatencyBox()
        let stop = StopFlag()
        _ = try await measure("request-response", concurrent: {
            defer { stop.set() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<self.options.roundTripConcurrency {
                    group.addTask {
                        var i = worker
                        while i < total {
                            let start = monotonicNs()
                            let outcome = try await admin.send(to: ids[i % ids.count], channel: "bench.rr", type: .request,
                                                               payload: .json(#"{"q":\#(i)}"#), wait: .seconds(10))
                            if case .responded = outcome { latencies.record((monotonicNs() - start) / 1000) }
                            i += self.options.roundTripConcurrency
                        }
                    }
                }
                try await group.waitForAll()
            }
        }) { () -> (Int, LatencySummary?) in
            self.fleet.receive(timeout: .seconds(120)) { _ in stop.isSet }
            return (Int(latencies.histogram.count), nil)
        }
        report.phases[report.phases.count - 1].latency = latencies.histogram.summary
    }

    // MARK: Measuring

    /// A phase that every process runs: `command` on this process's fleet
    /// and on the workers'; operations and latencies summed over all.
    @discardableResult
    private func measure(_ name: String, workers command: FleetCommand,
                         _ operations: @escaping @Sendable (SimulatedFleet.Counters) -> Int,
                         latency: @escaping @Sendable (LatencyHistogram, LatencyHistogram) -> LatencyHistogram)
        async throws -> BenchReport.Phase {
        let fleet = self.fleet
        return try await measure(name, workers: command, own: { _ = try? fleet.perform(command) },
                                 operations: operations, latency: latency)
    }

    /// A phase run by this process's fleet (`body`), with `concurrent`
    /// beside it (REST calls); workers, if any, receive meanwhile.
    @discardableResult
    private func measure(_ name: String, concurrent: @escaping @Sendable () async throws -> Void = {},
                         workers command: FleetCommand? = nil,
                         _ body: @escaping @Sendable () -> (Int, LatencySummary?)) async throws -> BenchReport.Phase {
        let own = Own()
        var phase = try await measure(name, workers: command, concurrent: concurrent, own: { own.set(body()) },
                                      operations: { _ in 0 }, latency: { _, _ in LatencyHistogram() })
        let (ops, summary) = own.value
        phase.operations = ops + (phase.operations)
        phase.latency = summary
        // With workers, the caller totals their counts and logs.
        finish(&phase, log: command == nil)
        report.phases[report.phases.count - 1] = phase
        return phase
    }

    /// Runs `own` on the fleet's thread, the workers' command and
    /// `concurrent` beside it, with the gateway's and PostgreSQL's CPU
    /// sampled before and after.
    private func measure(_ name: String, workers command: FleetCommand?,
                         concurrent: @escaping @Sendable () async throws -> Void = {},
                         own: @escaping @Sendable () -> Void,
                         operations: @escaping @Sendable (SimulatedFleet.Counters) -> Int,
                         latency: @escaping @Sendable (LatencyHistogram, LatencyHistogram) -> LatencyHistogram)
        async throws -> BenchReport.Phase {
        fleet.resetCounters()
        fleet.progress = { [self] counters in sample(name, counters) }
        let sampler = BareSampler(payloadBytes: options.fleet.payloadBytes, ackIDs: max(1, options.inFlight.max() ?? 1))
        let before = gateway.usage()
        let start = monotonicNs()
        async let side: Void = concurrent()
        async let remote = runWorkers(command)
        await fleetThread.run(own)
        try await side
        let results = try await remote
        let underLoad = sampler.stop()
        let seconds = Double(monotonicNs() - start) / 1e9
        let after = gateway.usage()
        var counters = fleet.counters
        var up = fleet.upLatency, handshakes = fleet.handshakeLatency
        for r in results {
            counters.add(r.counters)
            up.merge(r.upLatency)
            handshakes.merge(r.handshakeLatency)
        }
        let merged = latency(up, handshakes)
        var phase = BenchReport.Phase(
            name: name, seconds: seconds, operations: operations(counters), throughput: 0,
            latency: merged.count > 0 ? merged.summary : nil,
            gatewayCPUSeconds: after.gateway.cpuSeconds - before.gateway.cpuSeconds,
            postgresCPUSeconds: max(0, after.postgres.cpuSeconds - before.postgres.cpuSeconds),
            gatewayMicrosecondsPerOperation: 0, postgresMicrosecondsPerOperation: 0, counters: counters)
        phase.bareUnderLoad = underLoad
        finish(&phase, log: command != nil && operations(counters) > 0)
        report.phases.append(phase)
        return phase
    }

    private func runWorkers(_ command: FleetCommand?) async throws -> [FleetResult] {
        guard let command, !workers.isEmpty else { return [] }
        return try await workers.run(command)
    }

    /// Rates and per-operation figures from the totals; logs the phase.
    private func finish(_ phase: inout BenchReport.Phase, log announce: Bool = true) {
        let n = Double(max(phase.operations, 1))
        phase.throughput = Double(phase.operations) / max(phase.seconds, 1e-9)
        phase.gatewayMicrosecondsPerOperation = phase.gatewayCPUSeconds * 1e6 / n
        phase.postgresMicrosecondsPerOperation = phase.postgresCPUSeconds * 1e6 / n
        guard announce else { return }
        log(String(format: "%@: %d in %.2f s (%.0f/s), gateway %.1f µs/op, PostgreSQL %.1f µs/op",
                   phase.name, phase.operations, phase.seconds, phase.throughput, phase.gatewayMicrosecondsPerOperation,
                   phase.postgresMicrosecondsPerOperation))
    }

    private func sample(_ phase: String, _ c: SimulatedFleet.Counters) {
        let now = monotonicNs()
        let u = gateway.usage()
        defer { lastSample = (now, u.gateway.cpuSeconds, u.postgres.cpuSeconds) }
        guard let last = lastSample, now > last.ns else { return }
        let dt = Double(now - last.ns) / 1e9
        let s = BenchReport.Sample(seconds: Double(now - startNs) / 1e9, phase: phase, sent: c.sent, acked: c.acked,
                                   downReceived: c.downReceived,
                                   gatewayCPUPercent: (u.gateway.cpuSeconds - last.gateway) / dt * 100,
                                   postgresCPUPercent: (u.postgres.cpuSeconds - last.postgres) / dt * 100)
        report.samples.append(s)
        log(String(format: "\r[%@] %6.1fs sent %d acked %d down %d gateway %.0f%% PostgreSQL %.0f%%",
                   phase, s.seconds, c.sent, c.acked, c.downReceived, s.gatewayCPUPercent, s.postgresCPUPercent))
    }
}

/// The fleet's one thread: io_uring wants every submission from the
/// thread that set the ring up, and blocking loops stay off Swift's pool.
final class FleetThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = "aegis-bench fleet"
        thread.start()
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { c in enqueue { c.resume(with: Result { try body() }) } }
    }

    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in enqueue { c.resume(returning: body()) } }
    }

    private func enqueue(_ job: @escaping () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }
}

/// REST send times by message id, from many tasks.
final class SendTimes: @unchecked Sendable {
    private let lock = NSLock()
    private var times: [String: UInt64] = [:]
    func set(_ id: String, _ ns: UInt64) { lock.withLock { times[id] = ns } }
    func all() -> [String: UInt64] { lock.withLock { times } }
}

final class LatencyBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = LatencyHistogram()
    func record(_ us: UInt64) { lock.withLock { value.record(microseconds: us) } }
    var histogram: LatencyHistogram { lock.withLock { value } }
}

/// Samples the bare costs during a phase: a few calls of each kind every
/// 100 ms on a thread of its own, timed in thread CPU time.
final class BareSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var samples: [BareCosts] = []
    private var running = true

    init(payloadBytes: Int, ackIDs: Int) {
        Thread { [self] in
            while lock.withLock({ running }) {
                let s = BareCosts.measure(payloadBytes: payloadBytes, ackIDs: ackIDs, rounds: 1, iterations: 4)
                lock.withLock { samples.append(s) }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }.start()
    }

    /// The median of what was sampled (nil for a phase too short to sample).
    func stop() -> BareCosts? {
        lock.withLock {
            running = false
            return samples.count >= 5 ? BareCosts.median(samples) : nil
        }
    }
}

/// What a phase body on the fleet thread hands back.
final class Own: @unchecked Sendable {
    private let lock = NSLock()
    private var result: (Int, LatencySummary?) = (0, nil)
    func set(_ r: (Int, LatencySummary?)) { lock.withLock { result = r } }
    var value: (Int, LatencySummary?) { lock.withLock { result } }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    func set() { lock.withLock { flag = true } }
    var isSet: Bool { lock.withLock { flag } }
}
