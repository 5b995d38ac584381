import Histogram

/// Latencies in microseconds (HdrHistogram, 3 significant digits, up to
/// 10 minutes), mergeable across phases and processes.
public struct LatencyHistogram: Sendable, Codable {
    private(set) var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)

    public init() {}

    public var count: UInt64 { histogram.totalCount }

    public mutating func record(microseconds: UInt64) {
        _ = histogram.record(min(microseconds, 600_000_000))
    }

    public mutating func merge(_ other: LatencyHistogram) {
        histogram.add(other.histogram)
    }

    /// The value at `percentile` (0–100) in microseconds; 0 when empty.
    public func percentile(_ percentile: Double) -> UInt64 {
        count == 0 ? 0 : histogram.valueAtPercentile(percentile)
    }

    public var summary: LatencySummary {
        LatencySummary(count: count, p50: percentile(50), p90: percentile(90), p99: percentile(99),
                       p999: percentile(99.9), max: count == 0 ? 0 : histogram.max,
                       mean: count == 0 ? 0 : histogram.mean)
    }
}

/// A histogram's figures for reports (microseconds).
public struct LatencySummary: Sendable, Codable, Equatable {
    public var count: UInt64
    public var p50: UInt64
    public var p90: UInt64
    public var p99: UInt64
    public var p999: UInt64
    public var max: UInt64
    public var mean: Double
}
