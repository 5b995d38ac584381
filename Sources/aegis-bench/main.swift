import AegisBench
import ArgumentParser
import Foundation

/// The performance harness: simulated agents against a gateway it starts
/// (or one it is pointed at), the gateway's CPU per operation against the
/// bare crypto cost, reports in JSON and CSV.
@main
struct AegisBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegis-bench",
        abstract: "Measure a gateway: handshakes, up and down messages, broadcast, request/response.",
        discussion: """
            By default it starts its own aegisd (--aegisd, with a private PostgreSQL in a temporary \
            directory, open enrollment, rate limits raised) and stops it at the end. With --attach-pid \
            it measures a running gateway instead. Ratios divide the gateway's CPU per operation (from \
            /proc/PID/stat) by the bare libsodium cost of the crypto the protocol requires for it, \
            measured in this process in the same run.
            """)

    @Option(help: "aegisd to start (default .build/release/aegisd).")
    var aegisd = ".build/release/aegisd"
    @Option(help: "Measure a running gateway with this PID instead of starting one.")
    var attachPid: Int32?
    @Option(help: "With --attach-pid: agent listener HOST:PORT.")
    var agentAddress = "127.0.0.1:8443"
    @Option(help: "With --attach-pid: admin API URL.")
    var adminURL: String?
    @Option(help: "With --attach-pid: admin token file.")
    var adminTokenFile: String?
    @Option(help: "With --attach-pid: the PostgreSQL data directory whose processes count as the gateway's database.")
    var postgresData: String?
    @Option(help: "Gateway worker threads when started here.")
    var workers = 1
    @Option(help: "Gateway nodes to start on one database (agents spread over them; CPU summed).")
    var nodes = 1

    @Option(help: "Simulated agents.")
    var agents = 1000
    @Option(help: "Processes holding the agents (about 19,000 connections fit in one here).")
    var processes = 1
    @Option(help: "Source addresses 127.0.0.1 … 127.0.0.N to spread connections over.")
    var sources = 50
    @Flag(help: "wss:// (TLS, pinned certificate) instead of ws://.")
    var tls = false
    @Option(help: "Up message plaintext bytes.")
    var payloadBytes = 256
    @Option(help: "Fraction of up messages that are requests (0…1).")
    var requestFraction = 0.0
    @Option(help: "New connections per second during the ramp (0: as fast as answered).")
    var rampRate = 0.0
    @Option(help: "Connect-and-close rounds of every agent (handshake phase).")
    var handshakeRounds = 2
    @Option(help: "Seconds of each up phase.")
    var duration = 10.0
    @Option(help: "Messages in flight per agent, one up phase each (comma-separated).")
    var inFlight = "1,16"
    @Option(help: "Total up messages per second (0: as fast as acks allow).")
    var rate = 0.0
    @Flag(help: "Seal the whole up workload before each timed phase.")
    var precomputed = false
    @Option(help: "With --precomputed: messages sealed per agent.")
    var presealPerAgent = 400
    @Option(help: "Down messages sent through the REST API (0: skip).")
    var downMessages = 2000
    @Option(help: "Broadcasts to every agent (0: skip).")
    var broadcasts = 3
    @Option(help: "Request/response round trips through the REST API (0: skip).")
    var roundTrips = 200

    // A fleet worker process (started by --processes): serves commands on
    // stdin for its share of the agents.
    @Flag(help: .hidden) var fleetWorker = false
    @Option(help: .hidden) var agentHost = "127.0.0.1"
    @Option(help: .hidden) var agentPort: UInt16 = 0
    @Option(help: .hidden) var agentPrefix = "bench-"
    @Option(help: .hidden) var agentPorts = ""
    @Option(help: .hidden) var sourceOffset = 0
    @Option(help: .hidden) var serverKey: String?
    @Option(help: .hidden) var pinSha256: String?

    @Option(help: "Write the JSON report here.")
    var json: String?
    @Option(help: "Write the per-second CSV here.")
    var csv: String?

    func run() async throws {
        if fleetWorker {
            var config = SimulatedFleet.Configuration()
            config.host = agentHost
            config.port = agentPort
            config.ports = agentPorts.split(separator: ",").compactMap { UInt16($0) }
            config.agents = agents
            config.agentPrefix = agentPrefix
            config.sourceAddresses = (0..<max(1, sources)).map { "127.0.\(1 + (sourceOffset + $0) / 254).\(1 + (sourceOffset + $0) % 254)" }
            config.tls = tls
            config.pinSHA256 = pinSha256
            config.serverKey = serverKey.flatMap { Data(base64Encoded: $0) }.map { Array($0) }
            config.payloadBytes = payloadBytes
            config.requestFraction = requestFraction
            try await FleetWorker.serve(config)
            return
        }
        var options = BenchOptions()
        options.processes = processes
        options.fleet.agents = agents
        options.fleet.sourceAddresses = (1...max(1, min(sources, 254))).map { "127.0.0.\($0)" }
        options.fleet.tls = tls
        options.fleet.payloadBytes = payloadBytes
        options.fleet.requestFraction = requestFraction
        options.rampRate = rampRate
        options.handshakeRounds = handshakeRounds
        options.upDuration = .milliseconds(Int64(duration * 1000))
        options.inFlight = inFlight.split(separator: ",").compactMap { Int($0) }
        options.upRate = rate
        options.precomputed = precomputed
        options.presealPerAgent = presealPerAgent
        options.downMessages = downMessages
        options.broadcasts = broadcasts
        options.roundTrips = roundTrips

        let gateway: GatewayUnderTest
        if let attachPid {
            let parts = agentAddress.split(separator: ":")
            guard parts.count == 2, let port = UInt16(parts[1]) else {
                throw ValidationError("--agent-address must be HOST:PORT")
            }
            let token = try adminTokenFile.map { try String(contentsOfFile: $0, encoding: .utf8) }?
                .trimmingCharacters(in: .whitespacesAndNewlines)
            gateway = GatewayUnderTest(pid: attachPid, host: String(parts[0]), agentPort: port, adminURL: adminURL,
                                       adminToken: token, serverKey: nil, tlsFingerprint: nil,
                                       postgresDataDirectory: postgresData)
        } else {
            gateway = try GatewayUnderTest.spawnCluster(aegisd: aegisd, nodes: max(1, nodes), tls: tls, workers: workers)
        }
        defer { gateway.stop() }
        let report = try await BenchRun.make(options: options, gateway: gateway).run()
        print("\n" + report.summary)
        if let json { try report.json().write(to: URL(fileURLWithPath: json)) }
        if let csv { try report.csv.write(toFile: csv, atomically: true, encoding: .utf8) }
    }
}
