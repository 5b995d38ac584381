import AegisAdmin
import AegisGateway
import AegisProtocol
import AegisServer
import AegisStore
import AegisTransport
import ArgumentParser
import Dispatch
import Foundation
import Metrics

/// The gateway daemon. It parses flags, builds the pieces the libraries
/// provide, and wires them together; the work is in the libraries.
@main
struct Aegisd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegisd",
        abstract: "Aegis Gateway: agents over wss://, persisted in PostgreSQL.",
        discussion: """
            Settings come from defaults, then a config file (--config or AEGIS_CONFIG: key = value \
            lines), then AEGIS_* environment variables, then these flags.
            """)

    @Flag(help: "Print the version and exit.")
    var version = false

    @Flag(help: "Run the protocol self-test (a full in-process handshake and message exchange) and exit.")
    var selfTest = false

    @Flag(help: "Conformance echo mode: echo every message on any path, no auth, no database.")
    var echo = false

    @Option(help: "Agent listener, HOST:PORT (AEGIS_LISTEN; default 0.0.0.0:8443).")
    var listen: String?

    @Option(help: "Admin API listener, HOST:PORT or off (AEGIS_ADMIN_LISTEN; default 127.0.0.1:8081).")
    var adminListen: String?

    @Option(help: "Admin API TLS certificate (PEM; AEGIS_ADMIN_TLS_CERT). Without one the admin API is plain HTTP.")
    var adminTLSCert: String?

    @Option(help: "Admin API TLS private key (PEM), with --admin-tls-cert (AEGIS_ADMIN_TLS_KEY).")
    var adminTLSKey: String?

    @Option(help: "Data directory: certificate, keys, the private database (AEGIS_DATA_DIR; default .aegis).")
    var dataDir: String?

    @Option(help: "PostgreSQL URL (AEGIS_DATABASE_URL). Without one, a private cluster runs in the data directory.")
    var databaseURL: String?

    @Option(help: "Enrollment policy: open (trust on first use), token or manual (AEGIS_ENROLLMENT).")
    var enrollment: String?

    @Option(help: "A config file of key = value lines (AEGIS_CONFIG).")
    var config: String?

    @Option(help: "This node's name in the store (AEGIS_NODE_ID; default: the host name).")
    var nodeID: String?

    @Option(help: "TLS certificate (PEM). Without one, a self-signed certificate for localhost is made in the data directory.")
    var tlsCert: String?

    @Option(help: "TLS private key (PEM), with --tls-cert.")
    var tlsKey: String?

    @Flag(help: "Serve ws:// without TLS (only behind a TLS-terminating proxy).")
    var plaintext = false

    @Option(help: "Event loop: auto, io_uring or epoll (AEGIS_IO_BACKEND).")
    var ioBackend: String = ProcessEnvironment["AEGIS_IO_BACKEND"] ?? "auto"

    @Option(help: "Worker threads (0: one per core).")
    var workers: UInt32 = 0

    func validate() throws {
        guard IOBackend(rawValue: ioBackend) != nil else {
            throw ValidationError("--io-backend must be auto, io_uring or epoll (got '\(ioBackend)')")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if plaintext && tlsCert != nil {
            throw ValidationError("--plaintext and --tls-cert exclude each other")
        }
    }

    func run() async throws {
        print("aegisd \(AegisCoreInfo.version)")
        if version { return }
        if selfTest {
            print("protocol self-test: \(try SelfTest.run())")
            return
        }
        let settings = try loadConfiguration()
        try makeDirectory(settings.dataDirectory)
        var transportConfig = TransportConfiguration()
        transportConfig.host = settings.listen.host
        transportConfig.port = settings.listen.port
        transportConfig.workers = workers
        transportConfig.backend = IOBackend(rawValue: ioBackend) ?? .auto
        transportConfig.tlsCertificate = tlsCert
        transportConfig.tlsKey = tlsKey
        transportConfig.dataDirectory = settings.dataDirectory
        transportConfig.plaintext = plaintext
        transportConfig.echo = echo
        transportConfig.requireEphemeral = settings.requireEphemeral
        transportConfig.skewSeconds = UInt64(settings.clockSkew.components.seconds)
        transportConfig.authTimeoutMilliseconds = UInt32(clamping: settings.authTimeout.components.seconds * 1000)
        // The state machines close silent sessions (4006); the transport's own
        // idle timer is a backstop behind them.
        transportConfig.idleTimeoutMilliseconds =
            UInt32(clamping: (settings.heartbeatInterval.components.seconds * 3 + 30) * 1000)

        if echo {
            let transport = try Transport(transportConfig, serverIdentity: nil)
            let lifecycle = ServiceLifecycle.install(transport, database: nil)
            announce(transport, host: settings.listen.host, mode: "echo mode")
            await parkForever()
            withExtendedLifetime(lifecycle) {}
            return
        }

        let identity = try ServerIdentity.loadOrCreate(dataDirectory: settings.dataDirectory)
        let (store, cluster) = try await openDatabase(settings)
        _ = try? await store.deactivateNode(settings.nodeID, at: Date())
        // The lease first, so that a node killed before its first renewal
        // still leaves a row for the survivors to take over.
        try? await store.renewLease(nodeID: settings.nodeID, until: Date().addingTimeInterval(GatewayServer.leaseLength),
                                    now: Date())
        let transport = try Transport(transportConfig, serverIdentity: identity)
        // Before the gateway: its metric handles bind to the bootstrapped backend.
        let metrics = MetricsExposition.bootstrap(extra: { transportMetrics(transport) })
        Gauge(label: "aegis_io_backend", dimensions: [("backend", transport.backendName)]).record(1)
        let server = GatewayServer(configuration: settings, transport: transport, store: store, identity: identity)
        let lifecycle = ServiceLifecycle.install(transport, database: cluster)
        announce(transport, host: settings.listen.host, mode: "enrollment \(settings.enrollment)")
        let admin = try await adminAPI(settings, server: server, store: store, transport: transport, metrics: metrics)
        await withTaskGroup(of: Void.self) { group in
            if let admin {
                let tls = settings.adminTLSCertificate != nil
                group.addTask {
                    do {
                        try await admin.run { port in
                            print("admin API: listening on \(tls ? "https" : "http")://\(settings.adminListen?.host ?? ""):\(port)")
                            flushOutput()
                        }
                    } catch {
                        print("admin API: cannot serve: \(error)")
                        flushOutput()
                        Foundation.exit(1)
                    }
                }
            }
            await server.run()
            group.cancelAll()
        }
        withExtendedLifetime(lifecycle) {}
    }

    /// The admin API, unless admin_listen is off; on the first start it
    /// writes the bootstrap admin token.
    private func adminAPI(_ settings: GatewayConfiguration, server: GatewayServer, store: Store, transport: Transport,
                          metrics: MetricsExposition) async throws -> AdminAPI? {
        guard let listen = settings.adminListen else {
            print("admin API: off")
            return nil
        }
        let tokens = ApiTokens(store: store)
        let tokenPath = settings.dataDirectory + "/admin.token"
        if try await tokens.bootstrap(path: tokenPath) {
            print("admin API: bootstrap token written to \(tokenPath)")
        }
        var configuration = AdminAPI.Configuration()
        configuration.host = listen.host
        configuration.port = Int(listen.port)
        configuration.tlsCertificate = settings.adminTLSCertificate
        configuration.tlsKey = settings.adminTLSKey
        return AdminAPI(configuration: configuration, gateway: server, store: store, tokens: tokens, metrics: metrics,
                        listenersReady: { !transport.isDraining })
    }

    /// Flags given on the command line; the rest comes from the file and the environment.
    private func loadConfiguration() throws -> GatewayConfiguration {
        var flags: [String: String] = [:]
        if let listen { flags["listen"] = listen }
        if let dataDir { flags["data_dir"] = dataDir }
        if let databaseURL { flags["database_url"] = databaseURL }
        if let enrollment { flags["enrollment"] = enrollment }
        if let config { flags["config"] = config }
        if let nodeID { flags["node_id"] = nodeID }
        if let adminListen { flags["admin_listen"] = adminListen }
        if let adminTLSCert { flags["admin_tls_cert"] = adminTLSCert }
        if let adminTLSKey { flags["admin_tls_key"] = adminTLSKey }
        do {
            return try GatewayConfiguration.load(flags: flags, environment: ProcessInfo.processInfo.environment,
                                                 hostName: ProcessInfo.processInfo.hostName)
        } catch {
            throw ValidationError("configuration: \(error)")
        }
    }

    private func openDatabase(_ settings: GatewayConfiguration) async throws -> (Store, EmbeddedPostgres?) {
        if let url = settings.databaseURL {
            print("database: PostgreSQL at the configured URL")
            return (try await Store.open(conninfo: url.text), nil)
        }
        let cluster = try EmbeddedPostgres(EmbeddedPostgres.Configuration(dataDirectory: settings.dataDirectory))
        try await cluster.start()
        return (try await Store.open(conninfo: cluster.conninfo), cluster)
    }

    private func announce(_ transport: Transport, host: String, mode: String) {
        let scheme = plaintext ? "ws" : "wss"
        print("listening on \(scheme)://\(host):\(transport.port) (\(mode)), I/O backend \(transport.backendName)")
        if IOBackend(rawValue: ioBackend) == .auto && transport.backendName != IOBackend.uring.rawValue {
            print("io_uring is not available here (kernel.io_uring_disabled, seccomp or AEGIS_DISABLE_IO_URING): using epoll")
        }
        if !plaintext { print("TLS certificate SHA-256 fingerprint: \(transport.tlsFingerprint)") }
        flushOutput()
    }
}

/// The gateway's long-term Ed25519 key: `<data dir>/server.key` (0600),
/// created on first start; or the b64 seed in AEGIS_SERVER_KEY, or a key
/// file named by AEGIS_SERVER_KEY_FILE (production).
enum ServerIdentity {
    static func loadOrCreate(dataDirectory: String) throws -> Identity {
        let identity: Identity
        if let seed = ProcessEnvironment["AEGIS_SERVER_KEY"], !seed.isEmpty {
            identity = try Identity.fromSeedBase64(seed)
            print("server key: from AEGIS_SERVER_KEY")
        } else if let file = ProcessEnvironment["AEGIS_SERVER_KEY_FILE"], !file.isEmpty {
            identity = try Identity.load(path: file)
            print("server key: from \(file)")
        } else {
            let path = dataDirectory + "/server.key"
            if FileManager.default.fileExists(atPath: path) {
                identity = try Identity.load(path: path)
            } else {
                identity = try Identity.generate()
                try identity.save(path: path)
                print("server key: created \(path)")
            }
        }
        let fingerprint = SHA256.hash(identity.publicKey).map { String(format: "%02x", $0) }.joined()
        print("server key: \(identity.publicKeyBase64) (SHA-256 \(fingerprint))")
        return identity
    }
}

enum ProcessEnvironment {
    static subscript(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

func makeDirectory(_ path: String) throws {
    if mkdir(path, 0o700) != 0 && errno != EEXIST {
        throw ValidationError("cannot create the data directory \(path): \(String(cString: strerror(errno)))")
    }
}

func parkForever() async {
    while true { try? await Task.sleep(for: .seconds(3600)) }
}

/// Signals: SIGTERM/SIGINT drain (new upgrades get 503, sessions 1001,
/// output flushed), stop the private database, exit; SIGHUP rereads the TLS
/// certificate. Installed before the first "listening" line, so that a
/// supervisor reacting to that line cannot lose a signal.
enum ServiceLifecycle {
    static func install(_ transport: Transport, database: EmbeddedPostgres?) -> [DispatchSourceSignal] {
        for s in [SIGTERM, SIGINT, SIGHUP] { signal(s, SIG_IGN) }
        let queue = DispatchQueue(label: "aegisd.signals")
        var sources: [DispatchSourceSignal] = []
        for s in [SIGTERM, SIGINT] {
            let src = DispatchSource.makeSignalSource(signal: s, queue: queue)
            src.setEventHandler {
                print("draining: closing sessions with 1001")
                flushOutput()
                transport.drain()
                let deadline = DispatchTime.now() + .seconds(10)
                while !transport.isIdle && DispatchTime.now() < deadline { usleep(20_000) }
                if let database { try? database.stop() }
                print("stopped")
                flushOutput()
                exit(0)
            }
            src.resume()
            sources.append(src)
        }
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: queue)
        hup.setEventHandler {
            do {
                try transport.reloadTLS()
                print("TLS certificate reloaded, SHA-256 \(transport.tlsFingerprint)")
            } catch {
                print("TLS reload failed, keeping the old certificate: \(error)")
            }
            flushOutput()
        }
        hup.resume()
        sources.append(hup)
        return sources
    }
}

/// Lines reach a pipe (tests, supervisors) as they are printed.
func flushOutput() {
    fflush(nil)
}

/// The transport's own counters in Prometheus text (appended to /metrics).
func transportMetrics(_ transport: Transport) -> String {
    let stats = transport.statistics
    var text = "# HELP aegis_connections Connections open now, authenticated or not.\n"
        + "# TYPE aegis_connections gauge\naegis_connections \(stats.connections)\n"
    for (name, batches) in [("open", stats.open), ("seal", stats.seal)] {
        text += MetricsExposition.histogram(
            "aegis_crypto_\(name)_batch_size", help: "Messages per aegis_\(name)_batch call of a worker.",
            bounds: TransportStatistics.Batches.bounds, cumulative: batches.cumulative,
            sum: batches.messages, count: batches.batches)
    }
    return text
}
