import AegisStore
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The clusters of a test run. One shared cluster serves every test that
// does not stop or kill its server; tests keep apart by unique agent ids, or
// by a database of their own when they use statements that touch every row
// (pruneNonces, failExpired, migrations). The failure tests get a cluster of
// their own. All live under /tmp/aegis-store-tests-<pid>/ and are stopped
// at exit; a run that crashed is cleaned up by the next one.

enum Fixture {
    /// /tmp/aegis-store-tests-<pid>
    static let base: String = {
        cleanUpAbandonedRuns()
        let dir = "/tmp/aegis-store-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        mkdir(dir, 0o755)
        _ = chmod(dir, 0o755)
        atexit { Fixture.stopAll() }
        return dir
    }()

    private static let started = Mutex<[EmbeddedPostgres]>([])

    /// Lines the clusters log, kept quiet unless AEGIS_TEST_VERBOSE is set.
    static let log: StoreLogger = { line in
        if ProcessInfo.processInfo.environment["AEGIS_TEST_VERBOSE"] != nil { print("[pg] \(line)") }
    }

    /// Makes and starts a cluster in base/<name>/data.
    static func startCluster(_ name: String) async throws -> EmbeddedPostgres {
        try await startCluster(EmbeddedPostgres.Configuration(dataDirectory: "\(base)/\(name)/data"))
    }

    static func startCluster(_ configuration: EmbeddedPostgres.Configuration) async throws -> EmbeddedPostgres {
        let cluster = try EmbeddedPostgres(configuration, log: log)
        started.withLock { $0.append(cluster) }
        try await cluster.start()
        return cluster
    }

    /// SIGINT (fast shutdown) to every cluster started by this run, then the
    /// directory goes. Plain syscalls only: this runs in atexit.
    static func stopAll() {
        let clusters = started.withLock { $0 }
        var pids: [Int32] = []
        for c in clusters { if let pid = c.postmasterPID { kill(pid, SIGINT); pids.append(pid) } }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && clusters.contains(where: { $0.isRunning }) { usleep(50_000) }
        try? FileManager.default.removeItem(atPath: base)
    }

    /// Directories of earlier runs whose process is gone: stop their
    /// servers (the postmaster pid each cluster recorded) and remove them.
    private static func cleanUpAbandonedRuns() {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        for e in entries where e.hasPrefix("aegis-store-tests-") {
            guard let pid = Int32(e.dropFirst("aegis-store-tests-".count)), pid != getpid() else { continue }
            if kill(pid, 0) == 0 { continue }   // that run is still going
            let dir = "/tmp/\(e)"
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            for name in names {
                let pidFile = "\(dir)/\(name)/data/pg/postmaster.pid"
                if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                   let pm = text.split(separator: "\n").first.flatMap({ Int32($0) }),
                   (try? String(contentsOfFile: "/proc/\(pm)/comm", encoding: .utf8))?.hasPrefix("postgres") == true {
                    kill(pm, SIGQUIT)   // immediate shutdown: nothing there is worth a checkpoint
                }
            }
            usleep(300_000)
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}

/// The shared cluster, started once.
actor SharedCluster {
    static let instance = SharedCluster()
    private var task: Task<EmbeddedPostgres, any Error>?

    func cluster() async throws -> EmbeddedPostgres {
        if task == nil { task = Task { try await Fixture.startCluster("shared") } }
        return try await task!.value
    }

    /// A store on the shared cluster's gateway database (migrated).
    func store() async throws -> Store {
        let c = try await cluster()
        return try await Store.open(conninfo: c.conninfo, log: Fixture.log)
    }

    /// A store on a new database of its own (migrated unless told not to).
    func freshStore(migrate: Bool = true) async throws -> (Store, String) {
        let c = try await cluster()
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12)
        try await c.createDatabase(String(name))
        var options = Store.Options()
        options.migrate = migrate
        let store = try await Store.open(conninfo: c.conninfo(database: String(name)), options: options, log: Fixture.log)
        return (store, c.conninfo(database: String(name)))
    }
}

/// A unique agent id for one test.
func agentID(_ label: String) -> String {
    "\(label)-\(UUID().uuidString.lowercased())"
}

/// Now, to the millisecond (PostgreSQL keeps microseconds; Date has more).
func now() -> Date {
    Date(timeIntervalSince1970: (Date().timeIntervalSince1970 * 1000).rounded() / 1000)
}

/// Equal to the microsecond (what PostgreSQL keeps).
func same(_ a: Date?, _ b: Date?) -> Bool {
    guard let a, let b else { return a == nil && b == nil }
    return abs(a.timeIntervalSince(b)) < 0.000_001
}

func bytes(_ n: Int, _ seed: UInt8 = 0) -> [UInt8] {
    (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

func upMessage(_ agent: String, _ id: String, payload: String = "hello", session: UUID = UUID(),
               timestamp: UInt64 = 1_700_000_000) -> UpMessage {
    UpMessage(agentID: agent, msgID: id, type: "event", channel: "telemetry/cpu", ref: nil,
              plaintext: Array(payload.utf8), ciphertext: Array(("sealed:" + payload).utf8) + bytes(16),
              nonce: bytes(12, 7), signature: bytes(64, 9), envelopeTimestamp: timestamp, sessionID: session)
}

/// Waits until `body` stops throwing, up to `seconds`.
func eventually<T>(seconds: Double = 10, _ body: () async throws -> T) async throws -> T {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        do {
            return try await body()
        } catch {
            if Date() > deadline { throw error }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
