import AegisCore
import AegisIO
import AegisProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Which event loop the workers use.
public enum IOBackend: String, Sendable, CaseIterable {
    case auto, uring = "io_uring", epoll

    var c: aegis_io_backend {
        switch self {
        case .auto: AEGIS_IO_AUTO
        case .uring: AEGIS_IO_URING
        case .epoll: AEGIS_IO_EPOLL
        }
    }
}

/// How the transport listens. Zero values take the defaults of aegis_io.h.
public struct TransportConfiguration: Sendable {
    public var host = "0.0.0.0"
    public var port: UInt16 = 8443
    public var workers: UInt32 = 0
    public var backend = IOBackend.auto
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var dataDirectory = ".aegis"
    /// ws:// instead of wss://: only behind a TLS-terminating proxy.
    public var plaintext = false
    /// Conformance echo mode: echo every message on any path, no auth.
    public var echo = false
    public var maxMessage: UInt32 = 0
    public var writeQueueLimit: UInt32 = 0
    public var headTimeoutMilliseconds: UInt32 = 0
    public var authTimeoutMilliseconds: UInt32 = 0
    public var idleTimeoutMilliseconds: UInt32 = 0
    public var skewSeconds: UInt64 = 0
    public var requireEphemeral = false
    public var maxConnectionsPerWorker: UInt32 = 0

    public init() {}
}

/// A connection, as the workers name it (worker, slot and generation).
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public var description: String { "c\(raw >> 56)-\((raw >> 24) & 0xffff_ffff)-\(raw & 0xff_ffff)" }
}

/// What the workers report to the control plane.
public enum TransportEvent: Sendable {
    case upgraded(ConnectionID, agentID: String, publicKey: [UInt8], enrollmentToken: String?, peer: String)
    case authRequest(ConnectionID, AuthRequest)
    case message(ConnectionID, SecureMessage)
    case closed(ConnectionID, code: UInt16, byPeer: Bool)
}

public struct TransportError: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public let message: String
    public var description: String { message }
}

/// The C transport (aegis_io.h): worker threads with their own loops, fed
/// and drained through bounded queues. `events` delivers what the workers
/// report; the command methods hand work back to them.
public final class Transport: @unchecked Sendable {
    // The handle is used by the event pump (one thread) and by commands,
    // which the C side makes safe for any number of callers.
    private let handle: OpaquePointer
    private let identity: Identity?
    /// The workers' events in the bursts they come in (one poll of the C
    /// queue each): a consumer can act once per burst — the gateway stores
    /// a burst's up messages in one transaction.
    public let events: AsyncStream<[TransportEvent]>
    private let pump: EventPump

    public init(_ config: TransportConfiguration, serverIdentity: Identity?) throws(TransportError) {
        var err = [CChar](repeating: 0, count: 512)
        var io: OpaquePointer?
        let rc = config.host.withCString { host in
            withOptionalCString(config.tlsCertificate) { cert in
                withOptionalCString(config.tlsKey) { key in
                    config.dataDirectory.withCString { dir in
                        var c = aegis_io_config()
                        c.host = host
                        c.port = config.port
                        c.workers = config.workers
                        c.backend = config.backend.c
                        c.tls_cert = cert
                        c.tls_key = key
                        c.data_dir = dir
                        c.plaintext = config.plaintext
                        c.echo = config.echo
                        c.server_identity = serverIdentity?.cHandle
                        c.max_message = config.maxMessage
                        c.write_queue_limit = config.writeQueueLimit
                        c.head_timeout_ms = config.headTimeoutMilliseconds
                        c.auth_timeout_ms = config.authTimeoutMilliseconds
                        c.idle_timeout_ms = config.idleTimeoutMilliseconds
                        c.skew = config.skewSeconds
                        c.require_ephemeral = config.requireEphemeral
                        c.max_connections = config.maxConnectionsPerWorker
                        return aegis_io_start(&c, &io, &err, err.count)
                    }
                }
            }
        }
        guard rc == 0, let io else {
            throw TransportError(code: rc, message: text(err))
        }
        handle = io
        identity = serverIdentity
        (events, pump) = EventPump.start(io)
    }

    deinit {
        pump.stop()
        aegis_io_stop(handle)
    }

    public var port: UInt16 { aegis_io_port(handle) }
    public var backendName: String { String(cString: aegis_io_backend_name(handle)) }
    /// SHA-256 of the certificate in use, "" for plaintext.
    public var tlsFingerprint: String { String(cString: aegis_io_tls_fingerprint(handle)) }
    public var isIdle: Bool { aegis_io_idle(handle) }
    public var isDraining: Bool { aegis_io_draining(handle) }

    /// The workers' counters (for /metrics).
    public var statistics: TransportStatistics {
        var s = aegis_io_stats()
        aegis_io_get_stats(handle, &s)
        return TransportStatistics(open: .init(s.open), seal: .init(s.seal), connections: Int(s.connections))
    }

    public func drain() { aegis_io_drain(handle) }

    public func reloadTLS() throws(TransportError) {
        var err = [CChar](repeating: 0, count: 512)
        let rc = aegis_io_reload_tls(handle, &err, err.count)
        if rc != 0 { throw TransportError(code: rc, message: text(err)) }
    }

    /// Completes a handshake; the worker owns the session from now on.
    public func accept(_ conn: ConnectionID, _ accepted: GatewayHandshake.Accepted) -> Int32 {
        let session = accepted.session.transferOwnership()
        let rc = accepted.authOK.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { aegis_io_accept(handle, conn.raw, session, $0.baseAddress, $0.count) }
        }
        if rc != 0 { aegis_session_free(session) }
        return rc
    }

    public func refuse(_ conn: ConnectionID, code: String, message: String, closeCode: UInt16) -> Int32 {
        aegis_io_refuse(handle, conn.raw, code, message, closeCode)
    }

    public func send(_ conn: ConnectionID, _ header: MessageHeader, plaintext: [UInt8]) -> Int32 {
        header.withCHeader { h in aegis_io_send(handle, conn.raw, &h, plaintext, plaintext.count) }
    }

    public func close(_ conn: ConnectionID, code: UInt16, reason: String) -> Int32 {
        aegis_io_close(handle, conn.raw, code, reason)
    }
}

/// A thread that waits on the transport's eventfd and turns C events into
/// Swift values. One consumer, as aegis_io_poll_events requires.
final class EventPump: @unchecked Sendable {
    private let io: OpaquePointer
    private let continuation: AsyncStream<[TransportEvent]>.Continuation
    /// A pipe: writing to [1] wakes the pump to stop.
    private var stopPipe: [Int32] = [-1, -1]
    private var thread: pthread_t?

    private init(io: OpaquePointer, continuation: AsyncStream<[TransportEvent]>.Continuation) {
        self.io = io
        self.continuation = continuation
        _ = pipe(&stopPipe)
    }

    static func start(_ io: OpaquePointer) -> (AsyncStream<[TransportEvent]>, EventPump) {
        var cont: AsyncStream<[TransportEvent]>.Continuation!
        let stream = AsyncStream<[TransportEvent]>(bufferingPolicy: .unbounded) { cont = $0 }
        let pump = EventPump(io: io, continuation: cont)
        let box = Unmanaged.passRetained(pump).toOpaque()
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            let pump = Unmanaged<EventPump>.fromOpaque(arg!).takeRetainedValue()
            pump.run()
            return nil
        }, box)
        pump.thread = t
        return (stream, pump)
    }

    func stop() {
        var one: UInt8 = 1
        _ = write(stopPipe[1], &one, 1)
        if let thread { pthread_join(thread, nil) }
        Glibc.close(stopPipe[0])
        Glibc.close(stopPipe[1])
        continuation.finish()
    }

    private func run() {
        var events = [aegis_io_event](repeating: aegis_io_event(), count: 256)
        let eventFD = aegis_io_event_fd(io)
        var fds = [pollfd(fd: eventFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: stopPipe[0], events: Int16(POLLIN), revents: 0)]
        while true {
            _ = poll(&fds, 2, -1)
            if fds[1].revents != 0 { return }
            let n = aegis_io_poll_events(io, &events, events.count)
            if n > 0 { continuation.yield((0..<n).map { TransportEvent(events[$0]) }) }
        }
    }
}

extension TransportEvent {
    init(_ e: aegis_io_event) {
        let conn = ConnectionID(raw: e.conn)
        switch e.kind {
        case AEGIS_IO_EV_UPGRADED:
            let token = cString(e.enrollment_token)
            self = .upgraded(conn, agentID: cString(e.agent_id),
                             publicKey: withUnsafeBytes(of: e.public_key) { Array($0) },
                             enrollmentToken: token.isEmpty ? nil : token, peer: cString(e.peer))
        case AEGIS_IO_EV_AUTH_REQUEST:
            self = .authRequest(conn, AuthRequest(checked: e.auth))
        case AEGIS_IO_EV_MESSAGE:
            self = .message(conn, SecureMessage(opened: e.message))
        default:
            self = .closed(conn, code: e.close_code, byPeer: e.closed_by_peer)
        }
    }
}

private func cString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        String(decoding: raw.prefix(raw.firstIndex(of: 0) ?? raw.count), as: UTF8.self)
    }
}

/// A NUL-terminated C buffer as text.
private func text(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}

/// What the transport counted since it started (`aegis_io_get_stats`).
public struct TransportStatistics: Sendable {
    /// Crypto batch sizes: batches, messages, and cumulative counts of
    /// batches of at most `bounds[i]` messages (the last bound is +Inf).
    public struct Batches: Sendable {
        public var batches: UInt64
        public var messages: UInt64
        public var cumulative: [UInt64]
        public static let bounds: [Double] = (0..<Int(AEGIS_IO_BATCH_BUCKETS - 1)).map { Double(1 << $0) } + [.infinity]

        init(_ s: aegis_io_batch_stats) {
            batches = s.batches
            messages = s.messages
            cumulative = withUnsafeBytes(of: s.le) { Array($0.bindMemory(to: UInt64.self)) }
        }
    }

    public var open: Batches
    public var seal: Batches
    /// Open now, authenticated or not.
    public var connections: Int
}
