// CoreBenchmarks — package-benchmark suite for the C core's hot paths.
//
// For 64 B, 1 KiB and 16 KiB payloads, single and in batches of 64:
//   "open …" / "seal …"            aegis_open / aegis_seal (and the _batch calls)
//   "bare open …" / "bare seal …"  the libsodium calls they must make, on
//                                  inputs of the same sizes (BareCrypto)
// and "handshake (both sides)" against "bare handshake".
//
// One benchmark iteration is one call: one message, one batch of 64, or one
// handshake. wallClock is per call; the custom metric "ns/msg" is the time
// per message (the batch's time ÷ 64), the figure to compare across rows.
// The ratios ours ÷ bare, measured interleaved, come from the core-ratios
// executable (`make bench` runs both).
//
//   swift package --package-path Benchmarks benchmark [--filter "open.*"]
import Benchmark
import CoreFixtures
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Time per message, measured inside the iteration (batch time ÷ 64).
let nsPerMessage = BenchmarkMetric.custom("ns/msg", polarity: .prefersSmaller, useScalingFactor: false)

/// A fixture built by the benchmark's setup hook, outside the measurement
/// (and only in the process that runs that benchmark).
final class Lazy<T>: @unchecked Sendable {
    private let make: () -> T
    private var value: T?
    init(_ make: @escaping () -> T) { self.make = make }
    var get: T {
        if let value { return value }
        let v = make()
        value = v
        return v
    }
}

@inline(__always)
func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

let benchmarks: @Sendable () -> Void = {
    // ~1 s per benchmark (about a minute for the suite), fewer iterations
    // for the slow ones.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, nsPerMessage],
        warmupIterations: 5,
        maxDuration: .seconds(1),
        maxIterations: 20_000
    )

    let handshake = Lazy { HandshakeWorkload() }

    /// One benchmark: `body` does `perCall` messages and returns 0 when all passed.
    func register<T>(_ name: String, _ fixture: Lazy<T>, perCall: Int, _ body: @escaping (T) -> UInt32) {
        Benchmark(name) { benchmark in
            let w = fixture.get
            for _ in benchmark.scaledIterations {
                let t0 = monotonicNs()
                let bad = body(w)
                let t1 = monotonicNs()
                benchmark.measurement(nsPerMessage, Int(t1 - t0) / perCall)
                if bad != 0 { benchmark.error("\(name): a call failed (status bits \(bad))") }
            }
        } setup: {
            _ = fixture.get
        }
    }

    for (name, bytes) in payloadSizes {
        let open = Lazy { OpenWorkload(payloadBytes: bytes, handshake: handshake.get) }
        register("open \(name)", open, perCall: 1) { $0.ours().rawValue }
        register("bare open \(name)", open, perCall: 1) { UInt32(bitPattern: $0.bare()) }
        register("open \(name) batch\(batchSize)", open, perCall: batchSize) { $0.oursBatch() }
        register("bare open \(name) batch\(batchSize)", open, perCall: batchSize) {
            UInt32(bitPattern: $0.bareBatch())
        }
    }
    for (name, bytes) in payloadSizes {
        let seal = Lazy { SealWorkload(payloadBytes: bytes, handshake: handshake.get) }
        register("seal \(name)", seal, perCall: 1) { $0.ours().rawValue }
        register("bare seal \(name)", seal, perCall: 1) { UInt32(bitPattern: $0.bare()) }
        register("seal \(name) batch\(batchSize)", seal, perCall: batchSize) { $0.oursBatch() }
        register("bare seal \(name) batch\(batchSize)", seal, perCall: batchSize) {
            UInt32(bitPattern: $0.bareBatch())
        }
    }
    register("handshake (both sides)", handshake, perCall: 1) { $0.ours().rawValue }
    register("bare handshake", handshake, perCall: 1) { UInt32(bitPattern: $0.bare()) }
}
