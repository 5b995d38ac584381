import AegisGateway
import Testing

@Suite struct DownDeliveryPolicyTests {
    let policy = DownDeliveryPolicy()  // 5 retries, 30 s ack timeout, 10 min cap
    let hour: Duration = .seconds(3600)

    /// Runs a message with no acks and the agent connected on one session;
    /// returns the send times and how it ended.
    func run(_ policy: DownDeliveryPolicy, ttl: Duration, session: String? = "s1",
             until end: UInt64 = 100_000) -> (sends: [UInt64], end: DownDeliveryFailure?, failedAt: UInt64?) {
        var message = DownDelivery(createdAt: at(0), timeToLive: ttl)
        var sends: [UInt64] = []
        var t: UInt64 = 0
        while t <= end {
            switch policy.nextStep(message, session: session, now: at(t)) {
            case .send(let attempt):
                #expect(attempt == sends.count + 1)
                sends.append(t)
                message.recordSend(session: session ?? "", at: at(t))
            case .waitUntil(let next):
                #expect(next > at(t))
                t = next.seconds - base
            case .awaitSession(let until):
                t = until.seconds - base
            case .fail(let reason):
                return (sends, reason, t)
            case .settled, .failed:
                return (sends, nil, nil)
            }
        }
        return (sends, nil, nil)
    }

    @Test func backoffFormulaAndCap() {
        let waits = (1...8).map { policy.wait(afterSend: $0) }
        #expect(waits == [.seconds(30), .seconds(60), .seconds(120), .seconds(240), .seconds(480), .seconds(600),
                          .seconds(600), .seconds(600)])
        let uncapped = DownDeliveryPolicy(ackTimeout: .seconds(10), backoffCap: .seconds(86_400))
        #expect(uncapped.wait(afterSend: 4) == .seconds(80))
        #expect(uncapped.wait(afterSend: 200) == .seconds(86_400))
        #expect(policy.maxSends == 6)
    }

    @Test func defaultScheduleSendsSixTimesThenFailsOnRetries() {
        let result = run(policy, ttl: hour)
        #expect(result.sends == [0, 30, 90, 210, 450, 930])
        #expect(result.end == .retries)
        // Another send would be due 600 s (the cap) after the sixth.
        #expect(result.failedAt == 1530)
    }

    @Test func timeToLiveCutsTheScheduleShort() {
        let result = run(policy, ttl: .seconds(300))
        #expect(result.sends == [0, 30, 90, 210])
        #expect(result.end == .timeToLive)
        #expect(result.failedAt == 300)
    }

    @Test func noSendIsScheduledAtOrPastTheTimeToLive() {
        var message = DownDelivery(createdAt: at(0), timeToLive: .seconds(100))
        message.recordSend(session: "s1", at: at(0))
        message.recordSend(session: "s1", at: at(30))
        // The third send would be at 90; the one after at 210 > 100: wait for the end of the TTL, not for 210.
        message.recordSend(session: "s1", at: at(90))
        #expect(policy.nextStep(message, session: "s1", now: at(91)) == .waitUntil(at(100)))
        #expect(policy.nextStep(message, session: "s1", now: at(100)) == .fail(.timeToLive))
        // Exactly at the TTL even a fresh message fails.
        let fresh = DownDelivery(createdAt: at(0), timeToLive: .seconds(100))
        #expect(policy.nextStep(fresh, session: "s1", now: at(100)) == .fail(.timeToLive))
        #expect(policy.nextStep(fresh, session: "s1", now: at(99)) == .send(attempt: 1))
    }

    @Test func zeroRetriesMeansOneSend() {
        let once = DownDeliveryPolicy(maxRetries: 0)
        let result = run(once, ttl: hour)
        #expect(result.sends == [0])
        #expect(result.end == .retries)
        #expect(result.failedAt == 30)
    }

    @Test func waitsForASessionAndSendsOnTheNextOne() {
        var message = DownDelivery(createdAt: at(0), timeToLive: hour)
        #expect(policy.nextStep(message, session: nil, now: at(0)) == .awaitSession(until: at(3600)))
        #expect(policy.nextStep(message, session: "s1", now: at(5)) == .send(attempt: 1))
        message.recordSend(session: "s1", at: at(5))
        // The agent drops; the ack timeout passes while it is away.
        #expect(policy.nextStep(message, session: nil, now: at(10)) == .waitUntil(at(35)))
        #expect(policy.nextStep(message, session: nil, now: at(35)) == .awaitSession(until: at(3600)))
        // A new session: send at once, without waiting for the backoff.
        #expect(policy.nextStep(message, session: "s2", now: at(36)) == .send(attempt: 2))
        message.recordSend(session: "s2", at: at(36))
        // Reconnecting quickly also resends at once (§5: "and on the agent's next session").
        #expect(policy.nextStep(message, session: "s2", now: at(40)) == .waitUntil(at(96)))
        #expect(policy.nextStep(message, session: "s3", now: at(40)) == .send(attempt: 3))
    }

    @Test func aNewSessionAfterTheLastSendFailsTheMessage() {
        var message = DownDelivery(createdAt: at(0), timeToLive: hour)
        for (i, t) in [0, 30, 90, 210, 450, 930].enumerated() {
            message.recordSend(session: "s\(i)", at: at(UInt64(t)))
        }
        #expect(policy.nextStep(message, session: "s5", now: at(1000)) == .waitUntil(at(1530)))
        #expect(policy.nextStep(message, session: "s6", now: at(1000)) == .fail(.retries))
        // Even while the agent is away, the ack timeout of the last send ends it.
        #expect(policy.nextStep(message, session: nil, now: at(1530)) == .fail(.retries))
    }

    @Test func ackBeforeTheEndDelivers() {
        var message = DownDelivery(createdAt: at(0), timeToLive: hour)
        message.recordSend(session: "s1", at: at(0))
        #expect(policy.acknowledge(&message, session: "s1", now: at(29)) == .delivered)
        #expect(message.status == .delivered)
        #expect(policy.nextStep(message, session: "s1", now: at(31)) == .settled)
        #expect(policy.acknowledge(&message, session: "s1", now: at(40)) == .alreadyDelivered)
    }

    @Test func lateAckDoesNotReviveAFailedMessage() {
        var message = DownDelivery(createdAt: at(0), timeToLive: hour)
        for t in [0, 30, 90, 210, 450, 930] as [UInt64] { message.recordSend(session: "s1", at: at(t)) }
        #expect(policy.failIfDue(&message, session: "s1", now: at(1530)) == .retries)
        #expect(message.status == .failed(.retries))
        #expect(policy.acknowledge(&message, session: "s1", now: at(1531)) == .ignoredFailed(.retries))
        #expect(message.status == .failed(.retries))
        #expect(policy.nextStep(message, session: "s1", now: at(1532)) == .failed(.retries))
    }

    @Test func lateAckIsIgnoredEvenBeforeTheTimerFired() {
        // The caller had not yet marked it failed; the ack still comes too late.
        var expired = DownDelivery(createdAt: at(0), timeToLive: .seconds(60))
        expired.recordSend(session: "s1", at: at(0))
        #expect(policy.acknowledge(&expired, session: "s1", now: at(60)) == .ignoredFailed(.timeToLive))
        #expect(expired.status == .failed(.timeToLive))

        var exhausted = DownDelivery(createdAt: at(0), timeToLive: hour)
        for t in [0, 30, 90, 210, 450, 930] as [UInt64] { exhausted.recordSend(session: "s1", at: at(t)) }
        #expect(policy.acknowledge(&exhausted, session: "s1", now: at(1529)) == .delivered)
        var exhausted2 = DownDelivery(createdAt: at(0), timeToLive: hour)
        for t in [0, 30, 90, 210, 450, 930] as [UInt64] { exhausted2.recordSend(session: "s1", at: at(t)) }
        #expect(policy.acknowledge(&exhausted2, session: "s1", now: at(1530)) == .ignoredFailed(.retries))
    }

    @Test func failureReasonNames() {
        #expect(DownDeliveryFailure.timeToLive.rawValue == "ttl")
        #expect(DownDeliveryFailure.retries.rawValue == "retries")
    }
}
