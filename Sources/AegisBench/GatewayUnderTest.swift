import Foundation

/// The gateway being measured: spawned by the bench (a fresh data
/// directory, its private PostgreSQL, limits raised so that the bench is
/// not rate limited) or attached to by PID.
public final class GatewayUnderTest: @unchecked Sendable {
    public let pid: Int32
    public let host: String
    public let agentPort: UInt16
    public let adminURL: String?
    public let adminToken: String?
    public let serverKey: [UInt8]?
    public let tlsFingerprint: String?
    /// The cluster whose processes count as the gateway's PostgreSQL.
    public let postgresDataDirectory: String?
    private let process: Process?
    public let dataDirectory: String?
    /// The other nodes of a cluster (`spawnCluster`), sharing this one's
    /// database and server key.
    public private(set) var otherNodes: [GatewayUnderTest] = []

    /// Every node's agent port, this one's first.
    public var agentPorts: [UInt16] { [agentPort] + otherNodes.map(\.agentPort) }

    public init(pid: Int32, host: String, agentPort: UInt16, adminURL: String?, adminToken: String?,
                serverKey: [UInt8]?, tlsFingerprint: String?, postgresDataDirectory: String?) {
        self.pid = pid
        self.host = host
        self.agentPort = agentPort
        self.adminURL = adminURL
        self.adminToken = adminToken
        self.serverKey = serverKey
        self.tlsFingerprint = tlsFingerprint
        self.postgresDataDirectory = postgresDataDirectory
        self.process = nil
        self.dataDirectory = nil
    }

    private init(process: Process, agentPort: UInt16, adminURL: String, adminToken: String?, serverKey: [UInt8]?,
                 tlsFingerprint: String?, dataDirectory: String) {
        self.pid = process.processIdentifier
        self.host = "127.0.0.1"
        self.agentPort = agentPort
        self.adminURL = adminURL
        self.adminToken = adminToken
        self.serverKey = serverKey
        self.tlsFingerprint = tlsFingerprint
        self.postgresDataDirectory = dataDirectory + "/pg"
        self.process = process
        self.dataDirectory = dataDirectory
    }

    /// Starts `aegisd` on free loopback ports with a new data directory and
    /// waits until both listeners are up.
    /// `nodes` aegisd processes on one database (the first one's private
    /// cluster), all signing with the first one's server key.
    public static func spawnCluster(aegisd: String, nodes: Int, tls: Bool, workers: Int) throws(BenchError) -> GatewayUnderTest {
        let first = try spawn(aegisd: aegisd, tls: tls, workers: workers, arguments: ["--node-id", "node-1"])
        guard nodes > 1, let dir = first.dataDirectory else { return first }
        let socketDir = (dir + "/pg").addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? dir + "/pg"
        for i in 2...nodes {
            let node = try spawn(aegisd: aegisd, tls: tls, workers: workers,
                                 environment: ["AEGIS_SERVER_KEY_FILE": dir + "/server.key"],
                                 arguments: ["--node-id", "node-\(i)",
                                             "--database-url", "postgresql://aegis@/aegis?host=\(socketDir)"])
            first.otherNodes.append(node)
        }
        return first
    }

    public static func spawn(aegisd: String, tls: Bool, workers: Int, environment: [String: String] = [:],
                             arguments extra: [String] = [],
                             timeout: Duration = .seconds(120)) throws(BenchError) -> GatewayUnderTest {
        let dir = NSTemporaryDirectory() + "aegis-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(dir, 0o755) == 0 else { throw .gateway("cannot create \(dir)") }
        let port = freePort(), adminPort = freePort()
        let log = dir + "/aegisd.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: aegisd)
        var args = ["--data-dir", dir, "--listen", "127.0.0.1:\(port)", "--admin-listen", "127.0.0.1:\(adminPort)",
                    "--enrollment", "open", "--workers", String(workers)]
        if !tls { args.append("--plaintext") }
        process.arguments = args + extra
        var env = ProcessInfo.processInfo.environment
        // The bench opens thousands of sessions from a few addresses and
        // reconnects agents in rounds: the per-node limits would refuse it.
        env["AEGIS_RATE_LIMIT_IP_RATE"] = "1000000"
        env["AEGIS_RATE_LIMIT_IP_BURST"] = "1000000"
        env["AEGIS_RATE_LIMIT_AGENT_RATE"] = "1000"
        env["AEGIS_RATE_LIMIT_AGENT_BURST"] = "1000"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        do {
            try process.run()
        } catch {
            throw .gateway("cannot start \(aegisd): \(error)")
        }
        let end = ContinuousClock.now + timeout
        var text = ""
        while ContinuousClock.now < end && process.isRunning {
            text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if text.contains("admin API: listening on") { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        guard process.isRunning, text.contains("admin API: listening on") || text.contains("admin API: off") else {
            process.terminate()
            throw .gateway("aegisd did not start:\n\(text)")
        }
        let serverKey = firstMatch(text, after: "server key: ", until: " ").flatMap { Data(base64Encoded: $0) }.map { Array($0) }
        let fingerprint = firstMatch(text, after: "TLS certificate SHA-256 fingerprint: ", until: "\n")
        let token = (try? String(contentsOfFile: dir + "/admin.token", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return GatewayUnderTest(process: process, agentPort: port, adminURL: "http://127.0.0.1:\(adminPort)",
                                adminToken: token, serverKey: serverKey, tlsFingerprint: fingerprint,
                                dataDirectory: dir)
    }

    /// The gateway process alone, and its PostgreSQL's process tree.
    public func usage() -> (gateway: ProcessUsage, postgres: ProcessUsage) {
        // Every node's process: "the gateway" is all of them.
        let gateway = ([pid] + otherNodes.map(\.pid)).compactMap(ProcFS.usage(of:))
            .reduce(ProcessUsage(cpuSeconds: 0, residentBytes: 0), +)
        let postgres = postgresDataDirectory.flatMap(ProcFS.postmaster(dataDirectory:)).map(ProcFS.treeUsage(of:))
            ?? ProcessUsage(cpuSeconds: 0, residentBytes: 0)
        return (gateway, postgres)
    }

    /// Stops a spawned gateway (SIGTERM: it drains and stops its database)
    /// and removes its data directory.
    public func stop() {
        for node in otherNodes { node.stop() }
        guard let process, process.isRunning else { return }
        process.terminate()
        let end = ContinuousClock.now + .seconds(30)
        while process.isRunning && ContinuousClock.now < end { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        if let dataDirectory { try? FileManager.default.removeItem(atPath: dataDirectory) }
    }
}

private func firstMatch(_ text: String, after prefix: String, until end: Character) -> String? {
    guard let r = text.range(of: prefix) else { return nil }
    let rest = text[r.upperBound...]
    return String(rest.prefix { $0 != end })
}

/// A loopback port nobody listens on now (the OS picks it).
func freePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return UInt16(bigEndian: addr.sin_port)
}
