/// A point in time, in milliseconds since the Unix epoch.
///
/// Every sans-IO type of this module takes the current time as an argument
/// (`now`), so tests drive time by hand. The protocol counts whole seconds
/// (`timestamp`, `expires_at`); the ack coalescer and the rate limiter need
/// milliseconds, so one type with millisecond resolution serves both.
/// Callers pass wall-clock time; the coalescer and the rate limiter only
/// look at differences and tolerate a clock that stands still or steps back
/// (a negative difference counts as zero).
public struct UnixTime: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var millisecondsSinceEpoch: UInt64

    public init(millisecondsSinceEpoch: UInt64) {
        self.millisecondsSinceEpoch = millisecondsSinceEpoch
    }

    /// A whole number of seconds since the epoch, as the protocol's integers are.
    public init(seconds: UInt64) {
        let (ms, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        self.millisecondsSinceEpoch = overflow ? .max : ms
    }

    /// Whole seconds since the epoch, rounded down.
    public var seconds: UInt64 { millisecondsSinceEpoch / 1000 }

    public static func < (a: UnixTime, b: UnixTime) -> Bool {
        a.millisecondsSinceEpoch < b.millisecondsSinceEpoch
    }

    /// Saturating: a time past the representable range is the last instant.
    public static func + (t: UnixTime, d: Duration) -> UnixTime {
        let ms = d.wholeMilliseconds
        if ms >= 0 {
            let (sum, overflow) = t.millisecondsSinceEpoch.addingReportingOverflow(UInt64(ms))
            return UnixTime(millisecondsSinceEpoch: overflow ? .max : sum)
        }
        let back = UInt64(-ms)
        return UnixTime(millisecondsSinceEpoch: t.millisecondsSinceEpoch >= back ? t.millisecondsSinceEpoch - back : 0)
    }

    /// The time from `earlier` to `self`; zero when `earlier` is later.
    public func elapsed(since earlier: UnixTime) -> Duration {
        guard self > earlier else { return .zero }
        return .milliseconds(Int64(clamping: millisecondsSinceEpoch - earlier.millisecondsSinceEpoch))
    }

    public var description: String {
        let ms = millisecondsSinceEpoch % 1000
        return ms == 0 ? "\(seconds)s" : "\(seconds).\(String(ms + 1000).dropFirst())s"
    }
}

extension Duration {
    /// The duration in whole milliseconds, truncated toward zero.
    var wholeMilliseconds: Int64 {
        let (s, atto) = components
        let (ms, overflow) = s.multipliedReportingOverflow(by: 1000)
        if overflow { return s < 0 ? .min : .max }
        return ms &+ atto / 1_000_000_000_000_000
    }

    /// The duration in seconds, as a floating-point number.
    var inSeconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }

    /// Whole seconds, or nil when the duration is negative or has a fraction.
    var exactSeconds: UInt64? {
        let (s, atto) = components
        guard s >= 0, atto == 0 else { return nil }
        return UInt64(s)
    }
}
