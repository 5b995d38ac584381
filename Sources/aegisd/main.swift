import AegisProtocol
import AegisTransport
import ArgumentParser
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// The gateway daemon. Flags and environment are parsed here; the work is
/// in the libraries.
@main
struct Aegisd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegisd",
        abstract: "Aegis Gateway: agents over wss://, operators over REST.")

    @Flag(help: "Print the version and exit.")
    var version = false

    @Flag(help: "Run the protocol self-test (a full in-process handshake and message exchange) and exit.")
    var selfTest = false

    @Option(help: "Agent listener, HOST:PORT. Environment: AEGIS_LISTEN.")
    var listen: String = ProcessEnvironment["AEGIS_LISTEN"] ?? "0.0.0.0:8443"

    @Option(help: "Data directory (certificate, keys, private database). Environment: AEGIS_DATA_DIR.")
    var dataDir: String = ProcessEnvironment["AEGIS_DATA_DIR"] ?? ".aegis"

    @Option(help: "TLS certificate (PEM). Without one, a self-signed certificate for localhost is made in the data directory.")
    var tlsCert: String?

    @Option(help: "TLS private key (PEM), with --tls-cert.")
    var tlsKey: String?

    @Flag(help: "Serve ws:// without TLS (only behind a TLS-terminating proxy).")
    var plaintext = false

    @Flag(help: "Conformance echo mode: echo every message on any path, no auth.")
    var echo = false

    @Option(help: "Event loop: auto, io_uring or epoll. Environment: AEGIS_IO_BACKEND.")
    var ioBackend: String = ProcessEnvironment["AEGIS_IO_BACKEND"] ?? "auto"

    @Option(help: "Worker threads (0: one per core).")
    var workers: UInt32 = 0

    func validate() throws {
        guard IOBackend(rawValue: ioBackend) != nil else {
            throw ValidationError("--io-backend must be auto, io_uring or epoll (got '\(ioBackend)')")
        }
        guard ListenAddress(listen) != nil else {
            throw ValidationError("--listen must be HOST:PORT with a port 0-65535 (got '\(listen)')")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if plaintext && tlsCert != nil {
            throw ValidationError("--plaintext and --tls-cert exclude each other")
        }
    }

    func run() throws {
        print("aegisd \(AegisCoreInfo.version)")
        if version { return }
        if selfTest || !echo {
            print("protocol self-test: \(try SelfTest.run())")
            if !echo && !selfTest {
                // The authenticated gateway (enrollment, sessions, PostgreSQL)
                // is the next piece of work; say so rather than pretend.
                print("the authenticated gateway is not in this build yet; --echo serves the transport's conformance mode")
            }
            return
        }
        let address = ListenAddress(listen)!
        var config = TransportConfiguration()
        config.host = address.host
        config.port = address.port
        config.workers = workers
        config.backend = IOBackend(rawValue: ioBackend)!
        config.tlsCertificate = tlsCert
        config.tlsKey = tlsKey
        config.dataDirectory = dataDir
        config.plaintext = plaintext
        config.echo = echo
        try makeDirectory(dataDir)
        let transport = try Transport(config, serverIdentity: nil)
        // Signals are handled before the first line says we listen, so that
        // a supervisor that reacts to that line cannot lose a SIGTERM.
        let lifecycle = ServiceLifecycle.install(transport)
        let scheme = plaintext ? "ws" : "wss"
        print("listening on \(scheme)://\(address.host):\(transport.port) (echo mode), I/O backend \(transport.backendName)")
        if config.backend == .auto && transport.backendName != IOBackend.uring.rawValue {
            print("io_uring is not available here (kernel.io_uring_disabled, seccomp or AEGIS_DISABLE_IO_URING): using epoll")
        }
        if !plaintext { print("TLS certificate SHA-256 fingerprint: \(transport.tlsFingerprint)") }
        flushOutput()
        withExtendedLifetime(lifecycle) { dispatchMain() }
    }
}

/// HOST:PORT, with [v6]:PORT for IPv6.
struct ListenAddress {
    let host: String
    let port: UInt16

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
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

/// Signals: SIGTERM/SIGINT drain (stop accepting, close sessions with 1001,
/// flush) and exit; SIGHUP rereads the TLS certificate.
enum ServiceLifecycle {
    static func install(_ transport: Transport) -> [DispatchSourceSignal] {
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
