import AegisGateway
import Testing

@Suite struct RateLimiterTests {
    static let ip = RateLimiter.Rule(tokensPerSecond: 2, burst: 4)
    static let agent = RateLimiter.Rule(tokensPerSecond: 0.2, burst: 2)

    @Test func burstThenRefusalWithRetryAfter() {
        var limiter = RateLimiter(perSource: Self.ip, perAgent: RateLimiter.Rule(tokensPerSecond: 100, burst: 100))
        for i in 0..<4 {
            #expect(limiter.admit(source: "10.0.0.1", agentID: "a\(i)", now: at(0)) == .allowed)
        }
        // Empty: one token takes 0.5 s, so retry after 1 s (whole seconds, rounded up).
        #expect(limiter.admit(source: "10.0.0.1", agentID: "a9", now: at(0)) == .retryAfter(seconds: 1))
        // Half a second later one token is back.
        #expect(limiter.admit(source: "10.0.0.1", agentID: "a9", now: at(0, ms: 499)) == .retryAfter(seconds: 1))
        #expect(limiter.admit(source: "10.0.0.1", agentID: "a9", now: at(0, ms: 500)) == .allowed)
        #expect(limiter.admit(source: "10.0.0.1", agentID: "a9", now: at(0, ms: 500)) == .retryAfter(seconds: 1))
        // Another source has its own bucket.
        #expect(limiter.admit(source: "10.0.0.2", agentID: "a9", now: at(0, ms: 500)) == .allowed)
    }

    @Test func refillStopsAtTheBurst() {
        var limiter = RateLimiter(perSource: Self.ip, perAgent: RateLimiter.Rule(tokensPerSecond: 100, burst: 100))
        _ = limiter.admit(source: "s", agentID: "a", now: at(0))
        // An hour idle refills to 4, not to 7200.
        for _ in 0..<4 { #expect(limiter.admit(source: "s", agentID: "a", now: at(3600)) == .allowed) }
        #expect(limiter.admit(source: "s", agentID: "a", now: at(3600)) != .allowed)
    }

    @Test func agentLimitIsSeparateFromTheSourceLimit() {
        var limiter = RateLimiter(perSource: Self.ip, perAgent: Self.agent)
        #expect(limiter.admit(source: "10.0.0.1", agentID: "agent-7", now: at(0)) == .allowed)
        #expect(limiter.admit(source: "10.0.0.2", agentID: "agent-7", now: at(0)) == .allowed)
        // The agent's burst (2) is spent from two sources; 0.2/s means 5 s per token.
        #expect(limiter.admit(source: "10.0.0.3", agentID: "agent-7", now: at(0)) == .retryAfter(seconds: 5))
        #expect(limiter.admit(source: "10.0.0.3", agentID: "agent-7", now: at(3, ms: 200)) == .retryAfter(seconds: 2))
        #expect(limiter.admit(source: "10.0.0.3", agentID: "agent-7", now: at(5)) == .allowed)
        // Other agents from those sources are not affected.
        #expect(limiter.admit(source: "10.0.0.1", agentID: "agent-8", now: at(5)) == .allowed)
    }

    @Test func refusedAttemptTakesNoToken() {
        var limiter = RateLimiter(perSource: RateLimiter.Rule(tokensPerSecond: 1, burst: 1), perAgent: Self.agent)
        // The agent's bucket is spent; refused attempts must not drain the source's.
        #expect(limiter.admit(source: "s1", agentID: "x", now: at(0)) == .allowed)
        #expect(limiter.admit(source: "s2", agentID: "x", now: at(1)) == .allowed)
        // 0.2 tokens left: 0.8 more at 0.2/s is 4 s.
        #expect(limiter.admit(source: "s3", agentID: "x", now: at(1)) == .retryAfter(seconds: 4))
        #expect(limiter.admit(source: "s3", agentID: "y", now: at(1)) == .allowed)
    }

    @Test func retryAfterIsTheLongerWait() {
        var limiter = RateLimiter(perSource: RateLimiter.Rule(tokensPerSecond: 0.1, burst: 1),
                                  perAgent: RateLimiter.Rule(tokensPerSecond: 0.5, burst: 1))
        #expect(limiter.admit(source: "s", agentID: "a", now: at(0)) == .allowed)
        #expect(limiter.admit(source: "s", agentID: "a", now: at(0)) == .retryAfter(seconds: 10))
    }

    @Test func idleBucketsAreForgotten() {
        // Refill time: 4 / 2 = 2 s per generation.
        var limiter = RateLimiter(perSource: Self.ip, perAgent: Self.agent)
        for i in 0..<50 { _ = limiter.admit(source: "10.0.0.\(i)", agentID: "agent-\(i)", now: at(0)) }
        #expect(limiter.trackedSources == 50)
        #expect(limiter.trackedAgents == 50)
        // After two refill times of the source rule, every source bucket is gone.
        _ = limiter.admit(source: "10.9.9.9", agentID: "agent-0", now: at(2))
        #expect(limiter.trackedSources <= 51)
        _ = limiter.admit(source: "10.9.9.9", agentID: "agent-0", now: at(4))
        #expect(limiter.trackedSources == 1)
        // The agent rule's refill time is 10 s.
        _ = limiter.admit(source: "10.9.9.9", agentID: "agent-0", now: at(20))
        #expect(limiter.trackedAgents == 1)
    }

    @Test func forgettingIsExactForIdleBuckets() {
        // A bucket that is forgotten is full; a bucket still refilling is kept.
        var limiter = RateLimiter(perSource: Self.ip, perAgent: RateLimiter.Rule(tokensPerSecond: 100, burst: 100))
        for _ in 0..<4 { _ = limiter.admit(source: "busy", agentID: "a", now: at(0)) }
        #expect(limiter.admit(source: "busy", agentID: "a", now: at(1, ms: 999)) == .allowed)  // 3.998 tokens back
        // Still throttled correctly across the rotation at 2 s.
        for _ in 0..<3 { #expect(limiter.admit(source: "busy", agentID: "a", now: at(2)) == .allowed) }
        #expect(limiter.admit(source: "busy", agentID: "a", now: at(2)) != .allowed)
    }

    @Test func memoryIsBoundedByTheOverflowBucket() {
        var limiter = RateLimiter(perSource: Self.ip, perAgent: RateLimiter.Rule(tokensPerSecond: 1000, burst: 1000),
                                  maxTrackedKeys: 10)
        for i in 0..<10 { #expect(limiter.admit(source: "s\(i)", agentID: "a", now: at(0)) == .allowed) }
        #expect(limiter.trackedSources == 10)
        // New sources share one bucket of the same rule: 4 more, then refused.
        for i in 10..<14 { #expect(limiter.admit(source: "s\(i)", agentID: "a", now: at(0)) == .allowed) }
        #expect(limiter.admit(source: "s99", agentID: "a", now: at(0)) == .retryAfter(seconds: 1))
        #expect(limiter.trackedSources == 10)
        // Tracked sources keep their own buckets.
        #expect(limiter.admit(source: "s3", agentID: "a", now: at(0)) == .allowed)
        // Once the tracked buckets are idle and forgotten, new sources get their own again.
        #expect(limiter.admit(source: "fresh", agentID: "a", now: at(5)) == .allowed)
        #expect(limiter.trackedSources == 1)
    }

    @Test func sourceKeys() {
        #expect(SourceAddress.rateLimitKey(peer: "192.0.2.7:51234") == "192.0.2.7")
        #expect(SourceAddress.rateLimitKey(peer: "192.0.2.7") == "192.0.2.7")
        // IPv6: the /64, whatever the interface id and port.
        #expect(SourceAddress.rateLimitKey(peer: "2001:db8:1:2:aaaa::1:443") == "2001:db8:1:2::/64")
        #expect(SourceAddress.rateLimitKey(peer: "2001:db8:1:2:bbbb:cccc:dddd:eeee:443") == "2001:db8:1:2::/64")
        #expect(SourceAddress.rateLimitKey(peer: "[2001:db8:1:2::9]:443") == "2001:db8:1:2::/64")
        #expect(SourceAddress.rateLimitKey(peer: "::1:8443") == "0:0:0:0::/64")
        // IPv4-mapped: the IPv4 address.
        #expect(SourceAddress.rateLimitKey(peer: "::ffff:192.0.2.7:5000") == "192.0.2.7")
        #expect(SourceAddress.rateLimitKey(peer: "") == "")
    }
}
