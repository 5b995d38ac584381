@testable import AegisAgent
import AegisProtocol
import Testing

/// Connecting, authenticating, pinning, reconnecting: the machine's
/// connection life without sockets.
@Suite struct ConnectionTests {
    @Test func startConnectsToTheFirstURLAndSendsTheAuthRequestOnUpgrade() {
        var m = Machine(settings: settings(endpoints: 2))
        let actions = m.start(now: at(0))
        let a = ConnectionAttempt(number: 1, endpoint: 0)
        #expect(actions == [.report(.connecting(url: "wss://gw0.example:8443/ws/agent")), .connect(a)])
        #expect(m.start(now: at(0)).isEmpty)  // once
        #expect(m.upgraded(a, now: at(2)) == [.sendAuthRequest(a, timestamp: at(2).unixSeconds)])
    }

    @Test func trustOnFirstUsePinsTheFirstKeyAndStopsOnAnotherLater() {
        var h = Harness(settings())
        let first = h.establish(params(serverKeyA))
        #expect(first.contains(.pinServerKey(serverKeyA)))
        #expect(first.events.contains(.serverKeyPinned(Base64.encode(serverKeyA))))
        #expect(h.machine.isEstablished)

        _ = h.drop()
        let second = h.establish(params(serverKeyA))
        #expect(!second.contains(.pinServerKey(serverKeyA)))
        #expect(h.machine.isEstablished)

        _ = h.drop()
        let third = h.establish(params(serverKeyB))
        #expect(third.closes == [CloseCodes.handshakeFailed])
        #expect(third.stopped == .some(.serverKeyMismatch(expected: Base64.encode(serverKeyA),
                                                          received: Base64.encode(serverKeyB))))
        // Stopped for good: no retry storm.
        #expect(h.advance(to: 3600).isEmpty)
        #expect(h.machine.isStopped)
    }

    @Test func aConfiguredServerKeyIsNeverReplaced() {
        var h = Harness(settings { $0.pinnedServerKey = serverKeyA })
        let actions = h.establish(params(serverKeyB))
        #expect(!actions.contains(where: { if case .pinServerKey = $0 { true } else { false } }))
        #expect(actions.stopped != nil)
        #expect(h.machine.serverKey == serverKeyA)
    }

    @Test func backoffIsExponentialWithFullJitterAndACap() {
        let b = BackoffPolicy(initial: .seconds(1), cap: .seconds(60))
        #expect((0...8).map { b.ceiling(retry: $0) } == [1, 2, 4, 8, 16, 32, 60, 60, 60].map { Duration.seconds($0) })
        #expect(b.delay(retry: 3, unit: 0.25) == .seconds(2))
        #expect(b.delay(retry: 0, unit: 0) == .zero)
        #expect(b.delay(retry: 100, unit: 1) == .seconds(60))

        // The machine draws one jitter value per reconnect.
        var h = Harness(settings(endpoints: 1) { $0.jitter = FixedJitter(1.0, 0.5, 0.0, 1.0) })
        var delays: [Duration] = []
        var actions = h.machine.start(now: at(0))
        for _ in 0..<4 {
            guard let a = actions.connects.first else { break }
            let failed = h.machine.connectFailed(a, .unreachable(reason: "refused"), now: at(h.now))
            guard let d = failed.retryDelay else { break }
            delays.append(d)
            actions = h.advance(to: h.now + d.seconds)
        }
        #expect(delays == [.seconds(1), .seconds(1), .zero, .seconds(8)])
    }

    @Test func fullJitterSpreadsAFleetOverTheWindow() {
        // A thousand agents lose the same gateway at the same instant.
        var wakeups: [Double] = []
        for _ in 0..<1000 {
            var h = Harness(settings { $0.jitter = SystemJitter(); $0.backoff = BackoffPolicy(initial: .seconds(10)) })
            h.establish()
            h.now = 60
            wakeups.append(h.drop().retryDelay?.seconds ?? -1)
        }
        #expect(wakeups.allSatisfy { $0 >= 0 && $0 <= 10 })
        let perSecond = Dictionary(grouping: wakeups, by: { min(Int($0), 9) }).mapValues(\.count)
        #expect(perSecond.count == 10)
        #expect(perSecond.values.allSatisfy { $0 < 200 })  // ~100 each, never the whole fleet at once
    }

    @Test func failedAttemptsRotateOverTheURLsAndADropKeepsTheURL() {
        var h = Harness(settings(endpoints: 3))
        var endpoints: [Int] = []
        var actions = h.machine.start(now: at(0))
        for _ in 0..<4 {
            guard let a = actions.connects.first else { break }
            endpoints.append(a.endpoint)
            _ = h.machine.connectFailed(a, .unreachable(reason: "down"), now: at(h.now))
            actions = h.advance(to: h.now + 100)
        }
        #expect(endpoints == [0, 1, 2, 0])

        // Connected to URL 1; a drop comes back to URL 1 …
        guard let a = actions.connects.first else { Issue.record("no connect"); return }
        #expect(a.endpoint == 1)
        _ = h.machine.upgraded(a, now: at(h.now))
        _ = h.machine.authSucceeded(a, params(), now: at(h.now))
        _ = h.drop()
        #expect(h.advance(to: h.now + 100).connects.map(\.endpoint) == [1])
        // … but 1001 (that node is shutting down) moves on.
        guard let b = h.attempt else { Issue.record("no attempt"); return }
        _ = h.machine.upgraded(b, now: at(h.now))
        _ = h.machine.authSucceeded(b, params(), now: at(h.now))
        _ = h.drop(code: CloseCodes.goingAway)
        #expect(h.advance(to: h.now + 100).connects.map(\.endpoint) == [2])
    }

    @Test func aStableSessionResetsTheBackoffAndShortOnesKeepGrowingIt() {
        var h = Harness(settings { $0.stableSessionDuration = .seconds(30) })
        h.establish()
        h.now = 100
        #expect(h.drop().retryDelay == .seconds(1))
        h.establish()
        h.now += 1  // dropped at once (e.g. 4009 from another copy of this agent)
        #expect(h.drop(code: CloseCodes.replaced).retryDelay == .seconds(2))
        h.establish()
        h.now += 1
        #expect(h.drop(code: CloseCodes.replaced).retryDelay == .seconds(4))
        h.establish()
        h.now += 1
        // Session expiry (4010) is a normal end.
        #expect(h.drop(code: CloseCodes.sessionExpired).retryDelay == .seconds(1))
        h.establish()
        h.now += 40
        _ = h.drop()
        #expect(h.machine.retries == 1)
    }

    @Test func attemptsWithoutASessionCanBeBounded() {
        var h = Harness(settings { $0.maxAttemptsWithoutSession = 2 })
        guard let a = h.machine.start(now: at(0)).connects.first else { Issue.record("no connect"); return }
        let first = h.machine.connectFailed(a, .unreachable(reason: "Connection refused"), now: at(0))
        #expect(first.stopped == nil)
        guard let b = h.advance(to: 10).connects.first else { Issue.record("no second connect"); return }
        let second = h.machine.connectFailed(b, .unreachable(reason: "Connection refused"), now: at(10))
        #expect(second.stopped == .some(.unreachable(url: "wss://gw0.example:8443/ws/agent", reason: "Connection refused")))
    }

    @Test func refusalsAreRetriedUnlessConfiguredToStop() {
        var retrying = Harness(settings())
        guard let a = retrying.machine.start(now: at(0)).connects.first else { return }
        _ = retrying.machine.upgraded(a, now: at(0))
        let r = retrying.machine.authFailed(a, .refused(code: "pending_approval", message: "waiting"), now: at(0))
        #expect(r.stopped == nil)
        #expect(r.closes == [CloseCodes.normal])
        #expect(r.events.contains { if case .disconnected(_, .refused("pending_approval", "waiting"), _) = $0 { true } else { false } })

        var stopping = Harness(settings { $0.stopOnRefusal = ["unknown_agent"] })
        guard let b = stopping.machine.start(now: at(0)).connects.first else { return }
        _ = stopping.machine.upgraded(b, now: at(0))
        let s = stopping.machine.authFailed(b, .refused(code: "unknown_agent", message: "no such agent"), now: at(0))
        #expect(s.stopped == .some(.refused(code: "unknown_agent", message: "no such agent")))
    }

    @Test func httpRefusalsOfTheRequestItselfStopAndOthersRotate() {
        var h = Harness(settings(endpoints: 2))
        guard let a = h.machine.start(now: at(0)).connects.first else { return }
        let draining = h.machine.connectFailed(a, .httpRefused(status: 503, code: "draining", message: ""), now: at(0))
        #expect(draining.stopped == nil)
        #expect(h.advance(to: 10).connects.map(\.endpoint) == [1])
        guard let b = h.attempt else { return }
        let notFound = h.machine.connectFailed(b, .httpRefused(status: 404, code: "not_found", message: "no such path"),
                                               now: at(10))
        #expect(notFound.stopped == .some(.refused(code: "not_found", message: "no such path")))
    }

    @Test func aTLSVerificationFailureStopsByDefault() {
        var h = Harness(settings())
        guard let a = h.machine.start(now: at(0)).connects.first else { return }
        #expect(h.machine.connectFailed(a, .tlsVerification, now: at(0)).stopped
                == .some(.tlsVerificationFailed(url: "wss://gw0.example:8443/ws/agent")))
        var lenient = Harness(settings { $0.stopOnTLSVerificationFailure = false })
        guard let b = lenient.machine.start(now: at(0)).connects.first else { return }
        #expect(lenient.machine.connectFailed(b, .tlsVerification, now: at(0)).stopped == nil)
    }

    @Test func aBadAuthOKClosesWith4001AndRetries() {
        var h = Harness(settings())
        guard let a = h.machine.start(now: at(0)).connects.first else { return }
        _ = h.machine.upgraded(a, now: at(0))
        let actions = h.machine.authFailed(a, .invalid(reason: "invalid_signature"), now: at(0))
        #expect(actions.closes == [CloseCodes.handshakeFailed])
        #expect(actions.stopped == nil)
        #expect(h.machine.reconnectAt != nil)
    }

    @Test func noAuthAnswerInTimeClosesAndRetries() {
        var h = Harness(settings { $0.authTimeout = .seconds(15) })
        guard let a = h.machine.start(now: at(0)).connects.first else { return }
        _ = h.machine.upgraded(a, now: at(0))
        #expect(h.advance(to: 14.9).isEmpty)
        let actions = h.advance(to: 15)
        #expect(actions.closes == [CloseCodes.normal])
        #expect(actions.events.contains { if case .disconnected(_, .timeout, _) = $0 { true } else { false } })
    }

    @Test func eventsOfAnOlderAttemptAreIgnored() {
        var h = Harness(settings())
        guard let old = h.machine.start(now: at(0)).connects.first else { return }
        _ = h.machine.connectFailed(old, .unreachable(reason: "x"), now: at(0))
        guard let current = h.advance(to: 10).connects.first else { return }
        #expect(h.machine.upgraded(old, now: at(10)).isEmpty)
        #expect(h.machine.closed(old, code: 1006, now: at(10)).isEmpty)
        #expect(h.machine.currentAttempt == current)
    }

    @Test func stopClosesNormallyAndFailsLaterRequests() {
        var h = Harness(settings())
        h.establish()
        let actions = h.machine.stop(now: at(1))
        #expect(actions.closes == [CloseCodes.normal])
        #expect(actions.stopped == .some(nil))
        #expect(h.machine.stop(now: at(2)).isEmpty)
        #expect(h.enqueue("r1", type: .request).failedRequests == ["r1": .stopped])
    }
}
