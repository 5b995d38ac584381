import Metrics
import Prometheus

/// GET /metrics: the Prometheus text of everything the process records
/// through swift-metrics, followed by what other parts count themselves
/// (the C transport's counters), rendered at scrape time.
public final class MetricsExposition: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let extra: @Sendable () -> String

    /// Bootstraps swift-metrics with a Prometheus registry (once per
    /// process). `extra` returns exposition lines appended on each scrape.
    public static func bootstrap(extra: @escaping @Sendable () -> String = { "" }) -> MetricsExposition {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Latencies of a LAN gateway: 100 µs to 10 s.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(10),
        ]
        // Sizes (ids per ack, messages per transaction, broadcast recipients).
        factory.defaultValueHistogramBuckets = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536]
        MetricsSystem.bootstrap(factory)
        return MetricsExposition(registry: registry, extra: extra)
    }

    init(registry: PrometheusCollectorRegistry, extra: @escaping @Sendable () -> String) {
        self.registry = registry
        self.extra = extra
    }

    public func render() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        buffer += Array(extra().utf8)
        return buffer
    }
}

extension MetricsExposition {
    /// A Prometheus histogram from counts kept elsewhere: cumulative counts
    /// per upper bound (+Inf last), their sum and count.
    public static func histogram(_ name: String, help: String, labels: String = "", bounds: [Double],
                                 cumulative: [UInt64], sum: UInt64, count: UInt64) -> String {
        var text = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        let sep = labels.isEmpty ? "" : ","
        for (bound, n) in zip(bounds, cumulative) {
            let le = bound.isInfinite ? "+Inf" : String(Int(bound))
            text += "\(name)_bucket{\(labels)\(sep)le=\"\(le)\"} \(n)\n"
        }
        let braces = labels.isEmpty ? "" : "{\(labels)}"
        text += "\(name)_sum\(braces) \(sum)\n\(name)_count\(braces) \(count)\n"
        return text
    }
}
