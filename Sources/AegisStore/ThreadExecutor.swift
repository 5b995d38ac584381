import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A serial executor that runs every job on one thread of its own.
///
/// The store's actor runs on it, so the blocking libpq calls (a COMMIT
/// waiting for the WAL flush, a reconnect waiting for a timeout) occupy this
/// thread and never one of the cooperative pool's few threads.
final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    private struct State {
        var jobs: [UnownedJob] = []
        var stopping = false
    }

    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)
    /// Set once by the thread itself before it runs any job.
    private let threadID = Atomic<UInt>(0)

    init() {
        let box = Unmanaged.passRetained(StartBox(executor: self)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let box = Unmanaged<StartBox>.fromOpaque(arg!).takeRetainedValue()
            box.executor.run()
            return nil
        }, box)
        precondition(rc == 0, "cannot start the store's thread: \(String(cString: strerror(rc)))")
        pthread_detach(t)
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        state.withLock { $0.jobs.append(unowned) }
        wakeup.signal()
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    func checkIsolated() {
        precondition(isCurrent, "not on the store's thread")
    }

    var isCurrent: Bool {
        threadID.load(ordering: .acquiring) == UInt(pthread_self())
    }

    /// Lets the thread end once the queued jobs have run. The thread holds
    /// the executor until then.
    func shutdown() {
        state.withLock { $0.stopping = true }
        wakeup.signal()
    }

    private func run() {
        threadID.store(UInt(pthread_self()), ordering: .releasing)
        let me = asUnownedSerialExecutor()
        while true {
            wakeup.wait()
            let (batch, stop) = state.withLock { s -> ([UnownedJob], Bool) in
                let b = s.jobs
                s.jobs.removeAll(keepingCapacity: true)
                return (b, s.stopping)
            }
            for job in batch { job.runSynchronously(on: me) }
            if stop && state.withLock({ $0.jobs.isEmpty }) { return }
        }
    }
}

private final class StartBox {
    let executor: ThreadExecutor
    init(executor: ThreadExecutor) { self.executor = executor }
}
