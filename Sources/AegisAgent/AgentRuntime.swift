import AegisCore
import AegisIO
import AegisProtocol
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

typealias AckWaiter = CheckedContinuation<Result<Void, AgentError>, Never>
typealias ResponseWaiter = CheckedContinuation<Result<AgentResponse, AgentError>, Never>
typealias SessionWaiter = CheckedContinuation<Result<Void, AgentError>, Never>
typealias StopWaiter = CheckedContinuation<Void, Never>

/// What the application asks of the I/O thread.
enum AgentCommand: Sendable {
    case enqueue(OutgoingMessage, responseTimeout: Duration?, ackWaiter: AckWaiter?, responseWaiter: ResponseWaiter?)
    case waitForAck(String, AckWaiter)
    case waitForSession(SessionWaiter)
    case cancelRequest(String)
    case stop
}

/// The wall and monotonic clocks, read together.
enum AgentClock {
    static func now() -> AgentInstant {
        var mono = timespec(), wall = timespec()
        clock_gettime(CLOCK_MONOTONIC, &mono)
        clock_gettime(CLOCK_REALTIME, &wall)
        return AgentInstant(monotonic: .seconds(Int64(mono.tv_sec)) + .nanoseconds(Int64(mono.tv_nsec)),
                            unixSeconds: UInt64(max(0, wall.tv_sec)))
    }
}

/// The I/O side of an agent: one thread that owns the state machine, the
/// `aegis_wsc` endpoint (single-threaded: only this thread calls it), the
/// handshake and the session keys. It runs the endpoint, turns its events
/// into the machine's events, and carries out the machine's actions.
/// Application calls reach it as commands through a locked inbox.
///
/// `@unchecked Sendable`: the fields below `// Thread-owned` are touched
/// only by the I/O thread; `shared` is the only state other threads use.
final class AgentRuntime: @unchecked Sendable {
    enum Lifecycle { case created, running, finished(AgentError?) }

    struct Shared {
        var commands: [AgentCommand] = []
        var lifecycle = Lifecycle.created
        var queuedMessages = 0
        var queuedBytes = 0
        var stopWaiters: [StopWaiter] = []
    }

    let configuration: AgentConfiguration
    let logger: Logger
    let shared = Mutex(Shared())
    private let incomingContinuation: AsyncStream<IncomingMessage>.Continuation
    private let eventsContinuation: AsyncStream<AgentEvent>.Continuation
    private let pinFile: String?
    private let maxPlaintext: Int

    // Thread-owned
    private var machine: AgentConnectionStateMachine
    private var endpoint: WSCEndpoint?
    private var link: Link?
    /// A connection we closed whose close handshake may still be running.
    private var closing: UInt64?
    private var ackWaiters: [String: [AckWaiter]] = [:]
    private var responseWaiters: [String: ResponseWaiter] = [:]
    private var sessionWaiters: [SessionWaiter] = []
    private var queuedSizes: [String: Int] = [:]
    private var finalError: AgentError?

    /// The live connection: which attempt it is, and its handshake or session.
    struct Link {
        var conn: UInt64
        var attempt: ConnectionAttempt
        var opened = false
        var handshake: AgentHandshake?
        var session: SessionKeys?
    }

    init(configuration: AgentConfiguration, pinnedServerKey: [UInt8]?, pinFile: String?, logger: Logger,
         incoming: AsyncStream<IncomingMessage>.Continuation, events: AsyncStream<AgentEvent>.Continuation) {
        self.configuration = configuration
        self.logger = logger
        self.pinFile = pinFile
        self.incomingContinuation = incoming
        self.eventsContinuation = events
        self.machine = AgentConnectionStateMachine(settings: .init(configuration, pinnedServerKey: pinnedServerKey))
        // The largest plaintext whose sealed message fits the limit.
        var lo = 0, hi = configuration.maxMessageBytes
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if aegis_seal_json_max(mid) <= configuration.maxMessageBytes { lo = mid } else { hi = mid - 1 }
        }
        maxPlaintext = lo
    }

    var maxPayloadBytes: Int { maxPlaintext }

    // MARK: Calls from any thread

    /// Starts the I/O thread once.
    func launch() throws(AgentError) {
        let first = shared.withLock { s -> Bool in
            guard case .created = s.lifecycle else { return false }
            s.lifecycle = .running
            return true
        }
        guard first else { throw .notRunning }
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            guard let arg else { return nil }
            let runtime = Unmanaged<AgentRuntime>.fromOpaque(arg).takeRetainedValue()
            runtime.run()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<AgentRuntime>.fromOpaque(box).release()
            shared.withLock { $0.lifecycle = .finished(.notRunning) }
            throw .invalidConfiguration("cannot start the agent's I/O thread (\(rc))")
        }
        pthread_detach(thread)
    }

    /// Hands a command to the I/O thread; false once it has finished (or
    /// before it started).
    func post(_ command: AgentCommand) -> Bool {
        shared.withLock { s in
            guard case .running = s.lifecycle else { return false }
            s.commands.append(command)
            return true
        }
    }

    /// Reserves room in the queue of unacknowledged messages.
    func reserve(bytes: Int) throws(AgentError) {
        let result: AgentError? = shared.withLock { s in
            switch s.lifecycle {
            case .running, .created: break
            case .finished: return .notRunning
            }
            if s.queuedMessages >= configuration.maxQueuedMessages || s.queuedBytes + bytes > configuration.maxQueuedBytes {
                return .queueFull
            }
            s.queuedMessages += 1
            s.queuedBytes += bytes
            return nil
        }
        if let result { throw result }
    }

    func release(bytes: Int, count: Int = 1) {
        shared.withLock { s in
            s.queuedMessages -= count
            s.queuedBytes -= bytes
        }
    }

    /// Enqueues before `launch` are kept: a `send` while offline is fine.
    func postEvenBeforeStart(_ command: AgentCommand) -> Bool {
        shared.withLock { s in
            switch s.lifecycle {
            case .created, .running:
                s.commands.append(command)
                return true
            case .finished:
                return false
            }
        }
    }

    func waitUntilFinished() async {
        await withCheckedContinuation { (c: StopWaiter) in
            let done = shared.withLock { s -> Bool in
                switch s.lifecycle {
                case .finished, .created: return true
                case .running:
                    s.stopWaiters.append(c)
                    return false
                }
            }
            if done { c.resume() }
        }
    }

    var finishedError: AgentError?? {
        shared.withLock { s in
            if case .finished(let e) = s.lifecycle { return .some(e) }
            return nil
        }
    }

    // MARK: The I/O thread

    private func run() {
        var buffer = [aegis_wsc_event](repeating: aegis_wsc_event(), count: 64)
        let poll = Int32(clamping: max(1, configuration.pollInterval.milliseconds))
        var lastTick = Duration.zero
        apply(machine.start(now: AgentClock.now()))
        while !machine.isStopped {
            let commands = shared.withLock { s -> [AgentCommand] in
                let c = s.commands
                s.commands.removeAll()
                return c
            }
            for command in commands where !machine.isStopped { handle(command) }
            if machine.isStopped { break }
            let wait = commands.isEmpty ? poll : 0
            if let wsc = endpoint?.handle {
                let n = aegis_wsc_run(wsc, &buffer, buffer.count, wait)
                if n < 0 {
                    logger.error("client loop failed", metadata: ["error": "\(errnoText(-n))"])
                    usleep(UInt32(wait) * 1000)
                }
                for i in 0..<Int(max(0, n)) { handle(buffer[i]) }
            } else {
                usleep(UInt32(wait) * 1000)
            }
            let now = AgentClock.now()
            apply(machine.flush(now: now))
            if now.monotonic - lastTick >= .milliseconds(50) {
                lastTick = now.monotonic
                apply(machine.tick(now: now))
            }
        }
        lingerForClose(buffer: &buffer)
        finish()
    }

    /// Our close frame (stop) gets up to a second to go out.
    private func lingerForClose(buffer: inout [aegis_wsc_event]) {
        guard let handle = endpoint?.handle, let conn = closing else { return }
        let deadline = AgentClock.now().monotonic + .seconds(1)
        while AgentClock.now().monotonic < deadline {
            let n = aegis_wsc_run(handle, &buffer, buffer.count, 50)
            if n < 0 { break }
            if buffer[0..<Int(n)].contains(where: {
                $0.conn == conn && ($0.kind == AEGIS_WSC_EV_CLOSED || $0.kind == AEGIS_WSC_EV_ERROR)
            }) { break }
        }
    }

    private func finish() {
        let error = finalError
        endpoint = nil
        link = nil
        for waiters in ackWaiters.values { waiters.forEach { $0.resume(returning: .failure(.stopped)) } }
        ackWaiters.removeAll()
        for w in responseWaiters.values { w.resume(returning: .failure(.stopped)) }
        responseWaiters.removeAll()
        for w in sessionWaiters { w.resume(returning: .failure(error ?? .stopped)) }
        sessionWaiters.removeAll()
        let (left, stopWaiters) = shared.withLock { s in
            s.lifecycle = .finished(error)
            let out = (s.commands, s.stopWaiters)
            s.commands.removeAll()
            s.stopWaiters.removeAll()
            return out
        }
        for command in left { fail(command, error ?? .stopped) }
        incomingContinuation.finish()
        eventsContinuation.finish()
        for w in stopWaiters { w.resume() }
    }

    func fail(_ command: AgentCommand, _ error: AgentError) {
        switch command {
        case .enqueue(_, _, let ack, let response):
            ack?.resume(returning: .failure(error))
            response?.resume(returning: .failure(error))
        case .waitForAck(_, let w): w.resume(returning: .failure(error))
        case .waitForSession(let w): w.resume(returning: .failure(error))
        case .cancelRequest, .stop: break
        }
    }

    // MARK: Commands

    private func handle(_ command: AgentCommand) {
        let now = AgentClock.now()
        switch command {
        case .enqueue(let message, let timeout, let ackWaiter, let responseWaiter):
            if let ackWaiter { ackWaiters[message.id, default: []].append(ackWaiter) }
            if let responseWaiter { responseWaiters[message.id] = responseWaiter }
            queuedSizes[message.id] = message.payload.count
            apply(machine.enqueue(message, responseDeadline: timeout.map { now.monotonic + $0 }, now: now))
        case .waitForAck(let id, let waiter):
            if machine.isUnacknowledged(id) {
                ackWaiters[id, default: []].append(waiter)
            } else {
                waiter.resume(returning: .success(()))
            }
        case .waitForSession(let waiter):
            if machine.isEstablished { waiter.resume(returning: .success(())) } else { sessionWaiters.append(waiter) }
        case .cancelRequest(let id):
            apply(machine.cancelRequest(id))
        case .stop:
            apply(machine.stop(now: now))
        }
    }

    // MARK: Network events

    private func handle(_ e: aegis_wsc_event) {
        guard var current = link, current.conn == e.conn else { return }  // an older connection's
        let now = AgentClock.now()
        let a = current.attempt
        switch e.kind {
        case AEGIS_WSC_EV_OPEN:
            current.opened = true
            link = current
            apply(machine.upgraded(a, now: now))
        case AEGIS_WSC_EV_REFUSED:
            link = nil
            let body = e.data.map { Array(UnsafeBufferPointer(start: $0, count: e.len)) } ?? []
            let (code, message) = HTTPRefusalBody.parse(body)
            apply(machine.connectFailed(a, .httpRefused(status: Int(e.status), code: code ?? "http_\(e.status)",
                                                        message: message ?? ""), now: now))
        case AEGIS_WSC_EV_MESSAGE:
            let bytes = e.data.map { Array(UnsafeBufferPointer(start: $0, count: e.len)) } ?? []
            guard e.text else {
                apply(machine.messageRejected(a, reason: "binary message", now: now))
                return
            }
            if let session = current.session {
                do {
                    let m = try session.open(bytes, now: now.unixSeconds)
                    apply(machine.messageReceived(a, ReceivedMessage(m), now: now))
                } catch {
                    apply(machine.messageRejected(a, reason: error.messageReason ?? error.name, now: now))
                }
            } else if let handshake = current.handshake {
                finishHandshake(handshake, bytes, current, now: now)
            }
        case AEGIS_WSC_EV_PONG:
            apply(machine.peerActivity(a, now: now))
        case AEGIS_WSC_EV_CLOSED:
            link = nil
            apply(machine.closed(a, code: e.close_code, now: now))
        default:  // AEGIS_WSC_EV_ERROR
            link = nil
            if current.opened {
                apply(machine.closed(a, code: e.close_code != 0 ? e.close_code : CloseCodes.abnormal, now: now))
            } else {
                apply(machine.connectFailed(a, connectFailure(e.error), now: now))
            }
        }
    }

    private func finishHandshake(_ handshake: AgentHandshake, _ bytes: [UInt8], _ current: Link, now: AgentInstant) {
        var current = current
        do {
            // The server key is compared by the machine, so that it can tell
            // a mismatch (stop) from a bad auth_ok (retry), and pin on first use.
            let (ok, session) = try handshake.finish(bytes, expectedServerKey: nil)
            current.handshake = nil
            current.session = session
            link = current
            apply(machine.authSucceeded(current.attempt, SessionParameters(
                sessionID: ok.sessionID, serverKey: ok.serverKey, heartbeatInterval: ok.heartbeatInterval,
                expiresAt: ok.expiresAt), now: now))
        } catch .authRefused {
            let refusal = handshake.refusal ?? ("unknown", "")
            apply(machine.authFailed(current.attempt, .refused(code: refusal.code, message: refusal.message), now: now))
        } catch {
            apply(machine.authFailed(current.attempt, .invalid(reason: error.authCode ?? error.name), now: now))
        }
    }

    /// The C client reports −errno, or a TLS_ERR_* (−1 … −6) on wss://.
    private func connectFailure(_ error: Int32) -> ConnectFailure {
        let tls = endpoint?.tls ?? false
        if tls && error < 0 && error >= -6 {
            switch error {
            case -5: return .tlsVerification
            case -2: return .unreachable(reason: "TLS handshake failed")
            case -3: return .unreachable(reason: "TLS protocol error")
            case -4: return .unreachable(reason: "TLS closed by the peer")
            case -1: return .unreachable(reason: "TLS configuration error")
            default: return .unreachable(reason: "out of memory")
            }
        }
        switch -error {
        case ETIMEDOUT: return .unreachable(reason: "timed out")
        case EPROTO: return .unreachable(reason: "not a WebSocket upgrade answer")
        default: return .unreachable(reason: errnoText(-error))
        }
    }

    // MARK: Actions

    private func apply(_ actions: [AgentConnectionStateMachine.Action]) {
        for action in actions { perform(action) }
    }

    private func perform(_ action: AgentConnectionStateMachine.Action) {
        switch action {
        case .connect(let a):
            connect(a)
        case .sendAuthRequest(let a, let timestamp):
            guard var current = link, current.attempt == a else { return }
            do {
                let handshake = try AgentHandshake(identity: configuration.identity, agentID: configuration.agentID,
                                                   timestamp: timestamp, ephemeral: true)
                current.handshake = handshake
                link = current
                sendText(current.conn, handshake.authRequest)
            } catch {
                apply(machine.authFailed(a, .invalid(reason: "cannot build the auth request: \(error.name)"),
                                         now: AgentClock.now()))
            }
        case .send(let a, let header, let plaintext):
            guard let current = link, current.attempt == a, let session = current.session else { return }
            do {
                sendText(current.conn, try session.seal(header, plaintext: plaintext))
            } catch {
                logger.error("cannot seal a message", metadata: ["id": "\(header.id)", "error": "\(error.name)"])
            }
        case .close(let a, let code, let reason):
            guard let current = link, current.attempt == a, let handle = endpoint?.handle else { return }
            _ = aegis_wsc_close(handle, current.conn, code, reason)
            closing = current.conn
            link = nil
        case .deliver(let m):
            incomingContinuation.yield(IncomingMessage(m, runtime: self))
        case .deliverResponse(let id, let m):
            responseWaiters.removeValue(forKey: id)?.resume(returning: .success(AgentResponse(m)))
        case .failRequest(let id, let error):
            responseWaiters.removeValue(forKey: id)?.resume(returning: .failure(error))
        case .acknowledged(let ids):
            var bytes = 0
            for id in ids {
                ackWaiters.removeValue(forKey: id)?.forEach { $0.resume(returning: .success(())) }
                bytes += queuedSizes.removeValue(forKey: id) ?? 0
            }
            release(bytes: bytes, count: ids.count)
        case .pinServerKey(let key):
            guard let pinFile else { return }
            do {
                try AgentKeyFile.writeServerKey(key, path: pinFile)
                logger.notice("server key pinned (trust on first use)", metadata: ["file": "\(pinFile)"])
            } catch {
                // The pin still holds for this process.
                logger.error("cannot save the server key pin", metadata: ["error": "\(error)"])
            }
        case .report(let event):
            log(event)
            eventsContinuation.yield(event)
            if case .connected = event {
                sessionWaiters.forEach { $0.resume(returning: .success(())) }
                sessionWaiters.removeAll()
            }
        case .stopped(let error):
            finalError = error
        }
    }

    private func connect(_ a: ConnectionAttempt) {
        let url = configuration.urls[a.endpoint]
        let handle: OpaquePointer
        switch endpointHandle(for: url) {
        case .success(let h): handle = h
        case .failure(let why):
            apply(machine.connectFailed(a, .unreachable(reason: why.message), now: AgentClock.now()))
            return
        }
        var headers = ["X-Agent-ID: \(configuration.agentID)",
                       "X-Agent-Public-Key: \(configuration.identity.publicKeyBase64)",
                       "User-Agent: Aegis-Agent/1.0 \(configuration.userAgentComment)"]
        if let token = configuration.enrollmentToken { headers.append("X-Enrollment-Token: \(token)") }
        var conn: UInt64 = 0
        let rc = withCStringArray(headers) { list in
            aegis_wsc_connect(handle, url.host, url.port, url.path, list, headers.count, nil, &conn)
        }
        guard rc == 0 else {
            apply(machine.connectFailed(a, .unreachable(reason: errnoText(-rc)), now: AgentClock.now()))
            return
        }
        link = Link(conn: conn, attempt: a)
    }

    /// One endpoint at a time; a URL with other TLS settings or another
    /// host name (SNI and the name check) gets a new one.
    private func endpointHandle(for url: GatewayURL) -> Result<OpaquePointer, WSCEndpoint.Failure> {
        if let endpoint, endpoint.tls == url.secure, endpoint.serverName == url.host { return .success(endpoint.handle) }
        endpoint = nil
        closing = nil
        let created = WSCEndpoint.create(tls: url.secure, serverName: url.host, trust: configuration.tls,
                                         maxMessage: configuration.maxMessageBytes)
        return created.map { e in
            endpoint = e
            logger.debug("client endpoint", metadata: ["backend": "\(e.backendName)", "tls": "\(e.tls)"])
            return e.handle
        }
    }

    private func sendText(_ conn: UInt64, _ bytes: [UInt8]) {
        guard let handle = endpoint?.handle else { return }
        let rc = bytes.withUnsafeBytes { aegis_wsc_send(handle, conn, true, $0.baseAddress, $0.count) }
        if rc != 0 && rc != -ENOTCONN {
            logger.warning("send failed", metadata: ["error": "\(errnoText(-rc))"])
        }
    }

    private func log(_ event: AgentEvent) {
        switch event {
        case .connecting(let url):
            logger.debug("connecting", metadata: ["url": "\(url)"])
        case .connected(let url, let sid, _, let resending):
            logger.info("session established", metadata: ["url": "\(url)", "session_id": "\(sid)",
                                                          "resending": "\(resending)"])
        case .disconnected(let url, let error, let retryIn):
            logger.warning("\(error)", metadata: ["url": "\(url)", "retry_in": "\(retryIn.secondsText)"])
        case .serverKeyPinned(let key):
            logger.notice("server key pinned on first use", metadata: ["server_key": "\(key)"])
        case .acknowledged(let ids):
            logger.trace("acknowledged", metadata: ["count": "\(ids.count)"])
        case .duplicateDropped(let id):
            logger.debug("duplicate down message dropped", metadata: ["id": "\(id)"])
        case .unmatchedResponse(let id, let ref):
            logger.notice("response to no pending request dropped", metadata: ["id": "\(id)", "ref": "\(ref ?? "-")"])
        case .stopped(let error):
            // The application reports why; this is the SDK's trace of it.
            logger.notice("agent stopped", metadata: ["error": "\(error.map { "\($0)" } ?? "-")"])
        }
    }
}

/// An `aegis_wsc` endpoint and the settings it was made with.
final class WSCEndpoint {
    let handle: OpaquePointer
    let tls: Bool
    let serverName: String

    struct Failure: Error { let message: String }

    private init(handle: OpaquePointer, tls: Bool, serverName: String) {
        self.handle = handle
        self.tls = tls
        self.serverName = serverName
    }

    deinit { aegis_wsc_free(handle) }

    var backendName: String { String(cString: aegis_wsc_backend_name(handle)) }

    static func create(tls: Bool, serverName: String, trust: TLSTrust, maxMessage: Int) -> Result<WSCEndpoint, Failure> {
        var caFile: String?, pin: String?
        switch trust {
        case .system: break
        case .caFile(let path): caFile = path
        case .pinnedSHA256(let hex): pin = TLSTrust.normalizedPin(hex)
        }
        var err = [CChar](repeating: 0, count: 512)
        var out: OpaquePointer?
        let rc = withOptionalCString(tls ? caFile : nil) { ca in
            withOptionalCString(tls ? pin : nil) { pinC in
                serverName.withCString { name in
                    var cfg = aegis_wsc_config()
                    cfg.backend = AEGIS_IO_AUTO
                    cfg.tls = tls
                    cfg.ca_file = ca
                    cfg.pin_sha256 = pinC
                    cfg.server_name = name
                    cfg.max_message = UInt32(clamping: maxMessage)
                    // One connection at a time, plus a few still closing.
                    cfg.max_connections = 16
                    return aegis_wsc_create(&cfg, &out, &err, err.count)
                }
            }
        }
        guard rc == 0, let out else {
            let text = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .failure(Failure(message: text.isEmpty ? errnoText(-rc) : text))
        }
        return .success(WSCEndpoint(handle: out, tls: tls, serverName: serverName))
    }
}

func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}

/// `const char *const *` for a list of strings, alive for `body`.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer<CChar>($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}

extension Duration {
    /// Whole milliseconds, for C timeouts.
    var milliseconds: Int64 {
        let (s, a) = components
        return s * 1000 + a / 1_000_000_000_000_000
    }

    /// Seconds with a fraction, for logs.
    var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) / 1e18
    }

    /// "1.25s".
    var secondsText: String {
        let centis = Int64((seconds * 100).rounded())
        let frac = centis % 100
        return "\(centis / 100).\(frac < 10 ? "0" : "")\(frac)s"
    }
}
