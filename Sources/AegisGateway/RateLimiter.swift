/// Token buckets for handshake attempts, one family keyed by source IP and
/// one keyed by agent id, each with its own rate and burst. The gateway
/// calls `admit` once per upgraded connection, before any store lookup or
/// signature check, so a flood costs a dictionary lookup per attempt.
///
/// An attempt is allowed only when both its source's bucket and its agent's
/// bucket hold a token; then one token is taken from each. A refused attempt
/// takes nothing.
///
/// Memory bound. Each family keeps at most `maxTrackedKeys` buckets, in two
/// generations of length `burst / rate` (the time an idle bucket needs to
/// refill completely). Every `burst / rate` the older generation is dropped:
/// its buckets have been idle for at least that long, so they are full, and
/// a full bucket behaves exactly like no bucket (forgetting it is exact, not
/// an approximation). A bucket used again is moved into the current
/// generation. When a family is at `maxTrackedKeys` and a new key arrives
/// (more distinct sources within two generations than the bound), the new
/// key shares one overflow bucket with the family's rate and burst: tracked
/// keys keep their own buckets, and a spray of new sources is limited as a
/// whole. So memory is at most `2 × maxTrackedKeys` buckets plus the keys'
/// text, whatever the traffic.
public struct RateLimiter: Sendable {
    /// A refill rate in tokens per second and a bucket size.
    public struct Rule: Sendable, Equatable {
        public var tokensPerSecond: Double
        public var burst: Int

        /// `tokensPerSecond` is used to a thousandth (at least 0.001);
        /// `burst` is at least 1.
        public init(tokensPerSecond: Double, burst: Int) {
            self.tokensPerSecond = tokensPerSecond
            self.burst = burst
        }
    }

    public enum Decision: Sendable, Equatable {
        case allowed
        /// Refused; the next attempt can succeed after this many whole
        /// seconds (at least 1, for `Retry-After` and the `auth_error` text).
        case retryAfter(seconds: UInt64)
    }

    private var bySource: BucketFamily
    private var byAgent: BucketFamily

    /// - Parameter maxTrackedKeys: the bound of each family (see above).
    public init(perSource: Rule, perAgent: Rule, maxTrackedKeys: Int = 100_000) {
        bySource = BucketFamily(rule: perSource, maxKeys: max(1, maxTrackedKeys))
        byAgent = BucketFamily(rule: perAgent, maxKeys: max(1, maxTrackedKeys))
    }

    /// One handshake attempt from `source` (the peer's IP address, without
    /// the port) for `agentID` at `now`.
    public mutating func admit(source: String, agentID: String, now: UnixTime) -> Decision {
        let sourceWait = bySource.wait(for: source, now: now)
        let agentWait = byAgent.wait(for: agentID, now: now)
        guard sourceWait == nil, agentWait == nil else {
            let wait = max(sourceWait ?? 0, agentWait ?? 0)
            return .retryAfter(seconds: max(1, UInt64(wait.rounded(.up))))
        }
        bySource.take(for: source)
        byAgent.take(for: agentID)
        return .allowed
    }

    /// Buckets held now, per family (for metrics and the memory-bound test).
    public var trackedSources: Int { bySource.count }
    public var trackedAgents: Int { byAgent.count }
}

/// One family of buckets with the two-generation eviction described above.
/// Tokens are counted in millionths and time in milliseconds, in integers,
/// so the arithmetic is exact (rates have a resolution of 0.001 per second).
struct BucketFamily: Sendable {
    struct Bucket: Sendable {
        var microTokens: Int64
        var updatedAt: UnixTime
    }

    static let oneToken: Int64 = 1_000_000

    let capacity: Int64
    /// Millionths of a token added per millisecond (= tokens per second × 1000).
    let refillPerMillisecond: Int64
    /// How long an empty bucket needs to fill up: the generation length.
    let generationSpan: Duration
    let maxKeys: Int
    private var current: [String: Bucket] = [:]
    private var previous: [String: Bucket] = [:]
    private var generationStartedAt: UnixTime?
    private var overflow: Bucket?

    init(rule: RateLimiter.Rule, maxKeys: Int) {
        capacity = Int64(min(max(1, rule.burst), 1_000_000_000)) * Self.oneToken
        let perMillisecond = rule.tokensPerSecond.isFinite ? (rule.tokensPerSecond * 1000).rounded() : 1
        refillPerMillisecond = Int64(min(max(perMillisecond, 1), 1e15))
        let fill = (capacity + refillPerMillisecond - 1) / refillPerMillisecond
        generationSpan = .milliseconds(fill)
        self.maxKeys = maxKeys
    }

    var count: Int { current.count + previous.count }

    /// Refreshes the key's bucket to `now` and returns nil when it holds a
    /// token, else the seconds until it will.
    mutating func wait(for key: String, now: UnixTime) -> Double? {
        rotate(now: now)
        let tracked: Bucket? = current[key] ?? previous.removeValue(forKey: key)
        let isOverflow = tracked == nil && count >= maxKeys
        var bucket = tracked ?? (isOverflow ? overflow : nil) ?? Bucket(microTokens: capacity, updatedAt: now)
        let elapsed = now.elapsed(since: bucket.updatedAt).wholeMilliseconds
        let (refill, overflowed) = elapsed.multipliedReportingOverflow(by: refillPerMillisecond)
        bucket.microTokens = overflowed ? capacity : min(capacity, bucket.microTokens + refill)
        bucket.updatedAt = max(bucket.updatedAt, now)
        if isOverflow { overflow = bucket } else { current[key] = bucket }
        guard bucket.microTokens < Self.oneToken else { return nil }
        let missing = Self.oneToken - bucket.microTokens
        let milliseconds = (missing + refillPerMillisecond - 1) / refillPerMillisecond
        return Double(milliseconds) / 1000
    }

    /// Takes a token from the key's bucket, which `wait` just refreshed:
    /// its own when tracked, else the overflow bucket.
    mutating func take(for key: String) {
        if current[key] != nil {
            current[key]?.microTokens -= Self.oneToken
        } else {
            overflow?.microTokens -= Self.oneToken
        }
    }

    private mutating func rotate(now: UnixTime) {
        guard let started = generationStartedAt else {
            generationStartedAt = now
            return
        }
        // Every key in `current` was touched less than one span after
        // `started` (a later touch would have rotated first), so after one
        // span the older generation is full, and after two both are.
        let elapsed = now.elapsed(since: started)
        guard elapsed >= generationSpan else { return }
        previous = elapsed >= generationSpan * 2 ? [:] : current
        current = [:]
        generationStartedAt = now
        if let o = overflow, now.elapsed(since: o.updatedAt) >= generationSpan { overflow = nil }
    }
}
