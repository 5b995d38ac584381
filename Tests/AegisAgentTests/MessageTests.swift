@testable import AegisAgent
import AegisProtocol
import Testing

/// Up messages (resend, window, acks), down messages (dedupe, acks),
/// heartbeats and requests.
@Suite struct MessageTests {
    @Test func unackedMessagesAreResentOnTheNextSessionWithTheirIDs() {
        var h = Harness(settings())
        // Queued while offline: nothing goes out.
        #expect(h.enqueue("m1").isEmpty)
        #expect(h.enqueue("m2").isEmpty)
        h.now = 1
        let first = h.establish()
        #expect(first.sends.map(\.id) == ["m1", "m2"])
        #expect(first.events.contains { if case .connected(_, _, _, 2) = $0 { true } else { false } })
        #expect(h.enqueue("m3").sends.map(\.id) == ["m3"])

        let acked = h.ack(["m2", "unknown"])
        #expect(acked.contains(.acknowledged(["m2"])))
        #expect(acked.events.contains(.acknowledged(["m2"])))
        #expect(h.machine.unacknowledgedIDs == ["m1", "m3"])

        h.now = 5
        _ = h.drop()
        let second = h.establish()
        // Same ids, same order, sealed afresh: the current timestamp.
        #expect(second.sends.map(\.id) == ["m1", "m3"])
        #expect(second.sends.allSatisfy { $0.timestamp == at(h.now).unixSeconds && $0.type == .event })
        #expect(second.sentPlaintexts == [Array("m1".utf8), Array("m3".utf8)])
        _ = h.ack(["m1", "m3"])
        #expect(h.machine.unacknowledgedIDs.isEmpty)
        _ = h.drop()
        #expect(h.establish().sends.isEmpty)
    }

    @Test func theInFlightWindowHoldsBackTheRest() {
        var h = Harness(settings { $0.maxInFlight = 2 })
        h.establish()
        let sent = (1...5).flatMap { h.enqueue("m\($0)").sends.map(\.id) }
        #expect(sent == ["m1", "m2"])
        #expect(h.machine.inFlight == 2)
        #expect(h.ack(["m1"]).sends.map(\.id) == ["m3"])
        #expect(h.ack(["m2", "m3"]).sends.map(\.id) == ["m4", "m5"])
        // After a reconnect the window starts over from the oldest unacked.
        _ = h.drop()
        #expect(h.establish().sends.map(\.id) == ["m4", "m5"])
    }

    @Test func aLongBacklogGoesOutOnceInOrderThroughTheWindowAcrossSessions() {
        var rng = SystemRandomNumberGenerator()
        var h = Harness(settings { $0.maxInFlight = 100 })
        let ids = (0..<3000).map { "m\($0)" }
        for id in ids { _ = h.enqueue(id) }
        var sentThisSession = h.establish().sends.map(\.id)
        var acked = Set<String>()
        var round = 0
        while acked.count < ids.count && round < 1000 {
            round += 1
            // Ack a random part of what is in flight, sometimes drop the session.
            let inFlight = sentThisSession.filter { !acked.contains($0) }
            let batch = inFlight.filter { _ in Bool.random(using: &rng) }
            acked.formUnion(batch)
            var more = batch.isEmpty ? [] : h.ack(batch).sends.map(\.id)
            if round % 50 == 0 {
                _ = h.drop()
                more = h.establish().sends.map(\.id)
                // A new session starts again from the oldest unacked, in order.
                let expected = ids.filter { !acked.contains($0) }.prefix(100)
                #expect(more == Array(expected))
                sentThisSession = []
            }
            #expect(Set(more).isDisjoint(with: acked))
            #expect(Set(more).isDisjoint(with: Set(sentThisSession)))  // never twice in one session
            sentThisSession += more
            #expect(h.machine.inFlight <= 100)
        }
        #expect(acked.count == ids.count)
        #expect(h.machine.unacknowledgedIDs.isEmpty)
    }

    @Test func aDownMessageIsDeliveredOnceAndAckedEveryTime() {
        var h = Harness(settings())
        h.establish()
        #expect(h.receive(event("d1")).delivered.map(\.id) == ["d1"])
        let ack = h.machine.flush(now: at(h.now))
        #expect(ack.sends.map(\.type) == [.ack])
        #expect(ack.sends.first?.ref == "d1")
        #expect(ack.sends.first?.channel == "aegis.ack")
        #expect(ack.sentPlaintexts.first.flatMap { try? AckPlaintext.ids(from: $0) } == ["d1"])

        // Again in the same session (the core flags it) …
        let again = h.receive(event("d1", duplicate: true))
        #expect(again.delivered.isEmpty)
        #expect(again.events == [.duplicateDropped(id: "d1")])
        #expect(h.machine.flush(now: at(h.now)).sends.count == 1)

        // … and in a later session, after the gateway restarted: the core's
        // window is per session, the machine's is not.
        _ = h.drop()
        h.establish()
        let later = h.receive(event("d1"))
        #expect(later.delivered.isEmpty)
        #expect(later.events == [.duplicateDropped(id: "d1")])
        #expect(h.machine.flush(now: at(h.now)).sentPlaintexts.first.flatMap { try? AckPlaintext.ids(from: $0) } == ["d1"])
    }

    @Test func processedIDsAreKeptForTheDownTTLAndBounded() {
        var h = Harness(settings { $0.processedIDLifetime = .seconds(3600) })
        h.establish(params(heartbeat: 100_000))
        _ = h.receive(event("d1"))
        _ = h.advance(to: 3599)
        #expect(h.receive(event("d1")).delivered.isEmpty)
        // Past the TTL the gateway would not send it any more; if it is
        // sent anyway it is new again.
        _ = h.advance(to: 3600)
        #expect(h.receive(event("d1")).delivered.map(\.id) == ["d1"])

        var w = ProcessedIDWindow(lifetime: .seconds(60), capacity: 3)
        for id in ["a", "b", "c", "d"] {
            let new = w.insert(id, now: .zero)
            #expect(new)
        }
        #expect(w.count == 3)
        #expect(w.evictions == 1)
        #expect(!w.contains("a"))
        let again = w.insert("d", now: .seconds(1))
        #expect(!again)
        w.expire(now: .seconds(60))
        #expect(w.count == 0)
    }

    @Test func acksAreCoalescedUpTo1024IDs() {
        var h = Harness(settings())
        h.establish()
        var sent: [MessageHeader] = []
        for i in 0..<1030 { sent += h.receive(event("d\(i)")).sends }
        // The 1024th id sends an ack at once; the rest wait for the flush.
        #expect(sent.count == 1)
        #expect(sent.first?.ref == "d0")
        let rest = h.machine.flush(now: at(h.now))
        #expect(rest.sentPlaintexts.first.flatMap { try? AckPlaintext.ids(from: $0) } == (1024..<1030).map { "d\($0)" })
        #expect(h.machine.flush(now: at(h.now)).isEmpty)
    }

    @Test func heartbeatsGoEveryIntervalAndSilenceCloses4006() {
        var h = Harness(settings())
        h.establish(params(heartbeat: 30))
        #expect(h.advance(to: 29.9).isEmpty)
        let beat = h.advance(to: 30)
        #expect(beat.sends.map(\.type) == [.heartbeat])
        #expect(beat.sends.first?.channel == "aegis.heartbeat")
        #expect(beat.sends.first?.ref == nil)
        #expect(beat.sentPlaintexts == [[]])
        // The gateway answers: heard; the answer is not answered.
        let answer = h.receive(ReceivedMessage(id: "hb-1", type: .heartbeat, channel: "aegis.heartbeat",
                                               ref: beat.sends.first?.id, payload: [], timestamp: 0))
        #expect(answer.isEmpty)
        #expect(h.advance(to: 59).isEmpty)
        #expect(h.advance(to: 60).sends.map(\.type) == [.heartbeat])
        #expect(h.advance(to: 90).sends.map(\.type) == [.heartbeat])
        // Last heard at 30: three intervals later, 4006.
        let silent = h.advance(to: 120)
        #expect(silent.closes == [CloseCodes.heartbeatTimeout])
        #expect(silent.events.contains { if case .disconnected(_, .heartbeatTimeout, _) = $0 { true } else { false } })
        #expect(!h.machine.isEstablished)
    }

    @Test func aHeartbeatTheGatewayStartsIsAnsweredOnce() {
        var h = Harness(settings())
        h.establish()
        let ping = ReceivedMessage(id: "gw-hb", type: .heartbeat, channel: "aegis.heartbeat", payload: [], timestamp: 0)
        let answer = h.receive(ping)
        #expect(answer.sends.map(\.ref) == ["gw-hb"])
        var repeated = ping
        repeated.isDuplicate = true
        #expect(h.receive(repeated).isEmpty)
    }

    @Test func responsesAreMatchedToRequestsAndRequestsTimeOut() {
        var h = Harness(settings())
        h.establish()
        #expect(h.enqueue("r1", type: .request, deadline: 10).sends.map(\.type) == [.request])
        _ = h.enqueue("r2", type: .request, deadline: 10)
        // The response may come before the ack (§5).
        let response = h.receive(event("resp-1", type: .response, ref: "r1"))
        #expect(response.contains(.deliverResponse(requestID: "r1", event("resp-1", type: .response, ref: "r1"))))
        #expect(h.machine.isUnacknowledged("r1"))
        // A response to nothing pending is acked and dropped.
        let stray = h.receive(event("resp-2", type: .response, ref: "nope"))
        #expect(stray.events == [.unmatchedResponse(id: "resp-2", ref: "nope")])
        #expect(h.advance(to: 9.9).failedRequests.isEmpty)
        #expect(h.advance(to: 10).failedRequests == ["r2": .timeout])
        #expect(h.machine.pendingRequestCount == 0)
        // Late: unmatched.
        #expect(h.receive(event("resp-3", type: .response, ref: "r2")).events == [.unmatchedResponse(id: "resp-3", ref: "r2")])
    }

    @Test func aRequestWaitsAcrossAReconnect() {
        var h = Harness(settings())
        h.establish()
        _ = h.enqueue("r1", type: .request, deadline: 100)
        _ = h.drop()
        h.establish()
        #expect(h.receive(event("resp", type: .response, ref: "r1")).contains { if case .deliverResponse("r1", _) = $0 { true } else { false } })
    }

    @Test func cancellingARequestFailsItOnce() {
        var h = Harness(settings())
        _ = h.enqueue("r1", type: .request)
        #expect(h.machine.cancelRequest("r1") == [.failRequest(requestID: "r1", .cancelled)])
        #expect(h.machine.cancelRequest("r1").isEmpty)
    }

    @Test func aBadAckClosesWith4004() {
        var h = Harness(settings())
        h.establish()
        let actions = h.receive(ReceivedMessage(id: "a1", type: .ack, channel: "aegis.ack", ref: "x",
                                                payload: Array("{}".utf8), timestamp: 0))
        #expect(actions.closes == [CloseCodes.badMessage])
        #expect(h.attempt == nil)
    }

    @Test func aMessageTheCoreRejectsCloses4004() {
        var h = Harness(settings())
        h.establish()
        guard let a = h.attempt else { return }
        let actions = h.machine.messageRejected(a, reason: "signature", now: at(1))
        #expect(actions.closes == [CloseCodes.badMessage])
        #expect(actions.events.contains { if case .disconnected(_, .protocolViolation, _) = $0 { true } else { false } })
    }
}
