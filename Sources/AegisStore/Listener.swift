import AegisPQ
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A LISTEN subscription: `events` yields the notifications of its channel.
/// It has a connection and a thread of its own, which wait on the socket,
/// so the store's thread is never tied up by it.
public final class StoreSubscription: Sendable {
    public let channel: String
    public let events: AsyncStream<ListenEvent>
    private let listener: Listener

    init(channel: String, events: AsyncStream<ListenEvent>, listener: Listener) {
        self.channel = channel
        self.events = events
        self.listener = listener
    }

    /// Stops listening and ends `events`.
    public func cancel() { listener.stop() }
}

/// The thread behind a subscription: connect, LISTEN, then poll the socket
/// (and a pipe that says stop), drain notifications, and on a lost
/// connection reconnect with backoff, LISTEN again and yield `.resumed`.
final class Listener: @unchecked Sendable {
    // Immutable after init, or owned by the listener thread.
    private let conninfo: String
    private let channel: String
    private let options: Store.Options
    private let log: StoreLogger
    private let continuation: AsyncStream<ListenEvent>.Continuation
    private let stopped = Atomic<Bool>(false)
    /// Writing to stopPipe[1] wakes the thread to stop. Closed in deinit,
    /// when neither the thread nor a subscription can write to it.
    private var stopPipe: [Int32] = [-1, -1]

    private init(conninfo: String, channel: String, options: Store.Options, log: @escaping StoreLogger,
                 continuation: AsyncStream<ListenEvent>.Continuation) {
        self.conninfo = conninfo
        self.channel = channel
        self.options = options
        self.log = log
        self.continuation = continuation
        if pipe(&stopPipe) == 0 {
            for fd in stopPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
    }

    deinit {
        for fd in stopPipe where fd >= 0 { Glibc.close(fd) }
    }

    static func start(conninfo: String, channel: String, options: Store.Options,
                      log: @escaping StoreLogger) async throws(StoreError) -> StoreSubscription {
        let (stream, continuation) = AsyncStream.makeStream(of: ListenEvent.self, bufferingPolicy: .unbounded)
        let listener = Listener(conninfo: conninfo, channel: channel, options: options, log: log,
                                continuation: continuation)
        continuation.onTermination = { [weak listener] _ in listener?.stop() }
        let ready: Result<Void, StoreError> = await withCheckedContinuation { done in
            listener.spawn { result in done.resume(returning: result) }
        }
        switch ready {
        case .success: return StoreSubscription(channel: channel, events: stream, listener: listener)
        case .failure(let e): throw e
        }
    }

    func stop() {
        if stopped.exchange(true, ordering: .acquiringAndReleasing) { return }
        var one: UInt8 = 1
        _ = write(stopPipe[1], &one, 1)
    }

    private func spawn(ready: @escaping @Sendable (Result<Void, StoreError>) -> Void) {
        let box = Unmanaged.passRetained(ListenerStart(listener: self, ready: ready)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let start = Unmanaged<ListenerStart>.fromOpaque(arg!).takeRetainedValue()
            start.listener.run(ready: start.ready)
            return nil
        }, box)
        if rc != 0 {
            Unmanaged<ListenerStart>.fromOpaque(box).release()
            ready(.failure(.server(sqlstate: "", message: "cannot start the listener thread")))
            return
        }
        pthread_detach(t)
    }

    /// Connects and LISTENs; nil (and the error) on failure.
    private func open() -> (PQConnection?, StoreError?) {
        do throws(PQFailure) {
            let c = try PQConnection(conninfo: conninfo)
            try c.exec("LISTEN \(try c.escapeIdentifier(channel))")
            return (c, nil)
        } catch {
            return (nil, StoreError(error))
        }
    }

    /// Waits for the stop pipe or the timeout; true when told to stop.
    private func sleep(_ d: Duration) -> Bool {
        let ms = Int32(clamping: d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
        var p = pollfd(fd: stopPipe[0], events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, ms)
        return stopped.load(ordering: .acquiring)
    }

    private func run(ready: (Result<Void, StoreError>) -> Void) {
        defer { continuation.finish() }
        var (conn, error) = open()
        if let error {
            ready(.failure(error))
            return
        }
        ready(.success(()))
        var failures = 0
        while !stopped.load(ordering: .acquiring) {
            guard let c = conn else {
                let delay = min(options.maxBackoff, options.minBackoff * (1 << min(failures, 16)))
                if failures > 0, sleep(delay) { return }
                (conn, error) = open()
                if conn != nil {
                    log("listener on \(channel): connected again")
                    failures = 0
                    continuation.yield(.resumed)
                } else {
                    if failures == 0 { log("listener on \(channel): \(error!)") }
                    failures += 1
                }
                continue
            }
            var fds = [pollfd(fd: c.socket, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stopPipe[0], events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, -1)
            if n < 0 && errno == EINTR { continue }
            if fds[1].revents != 0 || stopped.load(ordering: .acquiring) { return }
            if fds[0].revents != 0 {
                do throws(PQFailure) {
                    try c.consumeInput()
                } catch {
                    log("listener on \(channel): connection lost (\(error)); reconnecting")
                    conn = nil
                    failures = 0
                    continue
                }
            }
            while let note = c.nextNotification() {
                continuation.yield(.notification(channel: note.channel, payload: note.payload))
            }
        }
    }
}

private final class ListenerStart {
    let listener: Listener
    let ready: @Sendable (Result<Void, StoreError>) -> Void
    init(listener: Listener, ready: @escaping @Sendable (Result<Void, StoreError>) -> Void) {
        self.listener = listener
        self.ready = ready
    }
}
