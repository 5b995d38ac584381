import Synchronization

/// A doorbell for "new messages are stored": each listener holds a stream
/// that yields once per ring, coalesced (a listener that is busy when the
/// bell rings several times sees one ring), so a slow listener never
/// builds a backlog. Listeners re-read the store after each ring.
public final class MessageSignal: Sendable {
    private let listeners = Mutex<[UInt64: AsyncStream<Void>.Continuation]>([:])
    private let nextID = Atomic<UInt64>(0)

    public init() {}

    /// Rings every listener.
    public func ring() {
        listeners.withLock { for c in $0.values { c.yield() } }
    }

    /// A stream of rings; it ends when the task iterating it is cancelled.
    public func listen() -> AsyncStream<Void> {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        continuation.onTermination = { [weak self] _ in
            _ = self?.listeners.withLock { $0.removeValue(forKey: id) }
        }
        listeners.withLock { $0[id] = continuation }
        return stream
    }
}
