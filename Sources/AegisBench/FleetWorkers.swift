import Foundation

// Large runs spread the simulated agents over several processes (each
// process may hold about 20,000 open files here). The first process runs
// the phases and measures; the others are fleet workers that take one
// command per line on stdin and answer one JSON line on stdout, so that
// every process runs each phase at the same time.

/// What the measuring process asks a worker to do.
public enum FleetCommand: Codable, Sendable {
    case connect(rounds: Int, rate: Double, concurrency: Int)
    case up(window: Int, seconds: Double, rate: Double)
    /// Seal this many up messages per agent now, for the next `up`.
    case preseal(perAgent: Int)
    case receive(seconds: Double, expected: Int)
    case close
}

/// A worker's answer: what its agents counted during the command.
public struct FleetResult: Codable, Sendable {
    public var counters: SimulatedFleet.Counters
    public var upLatency: LatencyHistogram
    public var handshakeLatency: LatencyHistogram
    public var readyAgents: Int
}

extension SimulatedFleet {
    /// Runs one command (on the fleet's thread) and reports.
    public func perform(_ command: FleetCommand) throws(BenchError) -> FleetResult {
        resetCounters()
        switch command {
        case .connect(let rounds, let rate, let concurrency):
            for round in 0..<max(1, rounds) {
                if round > 0 { closeAll() }
                connectAll(rate: rate, concurrency: concurrency, timeout: .seconds(120))
            }
        case .up(let window, let seconds, let rate):
            runUp(duration: .milliseconds(Int64(seconds * 1000)), inFlight: window, rate: rate)
        case .preseal(let perAgent):
            try preseal(perAgent: perAgent, ahead: .seconds(30))
        case .receive(let seconds, let expected):
            receive(timeout: .milliseconds(Int64(seconds * 1000))) { $0.downReceived >= expected }
        case .close:
            closeAll()
        }
        return FleetResult(counters: counters, upLatency: upLatency, handshakeLatency: handshakeLatency,
                           readyAgents: readyAgents)
    }
}

extension SimulatedFleet.Counters {
    public mutating func add(_ o: SimulatedFleet.Counters) {
        sent += o.sent
        acked += o.acked
        acks += o.acks
        ackedIDs += o.ackedIDs
        downReceived += o.downReceived
        downDuplicates += o.downDuplicates
        responsesSent += o.responsesSent
        handshakes += o.handshakes
        errors += o.errors
        for (k, v) in o.refusals { refusals[k, default: 0] += v }
        for (k, v) in o.closes { closes[k, default: 0] += v }
    }
}

/// The worker side: serve commands from stdin until it closes.
public enum FleetWorker {
    public static func serve(_ configuration: SimulatedFleet.Configuration) async throws {
        let thread = FleetThread()
        let fleet = try await thread.run { try SimulatedFleet(configuration) }
        let decoder = JSONDecoder(), encoder = JSONEncoder()
        while let line = readLine() {
            guard let command = try? decoder.decode(FleetCommand.self, from: Data(line.utf8)) else { continue }
            let result = try await thread.run { try fleet.perform(command) }
            FileHandle.standardOutput.write(try encoder.encode(result) + Data("\n".utf8))
        }
    }
}

/// The measuring side: the worker processes and their pipes.
final class FleetWorkers: @unchecked Sendable {
    private struct Worker {
        let process: Process
        let input: FileHandle
        let output: FileHandle
    }

    private let workers: [Worker]

    /// Starts `count` workers of this executable, each with `arguments`
    /// (its own agent prefix and source addresses) plus `--fleet-worker`.
    init(arguments: [[String]]) throws {
        var started: [Worker] = []
        for args in arguments {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            process.arguments = ["--fleet-worker"] + args
            let stdin = Pipe(), stdout = Pipe()
            process.standardInput = stdin
            process.standardOutput = stdout
            try process.run()
            started.append(Worker(process: process, input: stdin.fileHandleForWriting, output: stdout.fileHandleForReading))
        }
        workers = started
    }

    var isEmpty: Bool { workers.isEmpty }

    /// Sends the command to every worker and waits for all their answers.
    func run(_ command: FleetCommand) async throws -> [FleetResult] {
        let line = try JSONEncoder().encode(command) + Data("\n".utf8)
        for w in workers { w.input.write(line) }
        return try await withThrowingTaskGroup(of: FleetResult.self) { group in
            for w in workers {
                group.addTask {
                    // A blocking read, so on a thread of its own, not the pool's.
                    let buffer: Data = await withCheckedContinuation { c in
                        Thread {
                            var buffer = Data()
                            while !buffer.contains(UInt8(ascii: "\n")) {
                                let chunk = w.output.availableData
                                if chunk.isEmpty { break }
                                buffer += chunk
                            }
                            c.resume(returning: buffer)
                        }.start()
                    }
                    guard buffer.contains(UInt8(ascii: "\n")) else { throw BenchError.setup("a fleet worker exited") }
                    return try JSONDecoder().decode(FleetResult.self, from: buffer)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }

    func stop() {
        for w in workers {
            try? w.input.close()
            w.process.waitUntilExit()
        }
    }
}
