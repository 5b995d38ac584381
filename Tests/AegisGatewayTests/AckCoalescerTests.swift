import AegisGateway
import Testing

@Suite struct AckCoalescerTests {
    typealias Coalescer = AckCoalescer<Int>

    func ids(_ range: Range<Int>, prefix: String = "m") -> [String] { range.map { "\(prefix)\($0)" } }

    @Test func windowClosesExactly20msAfterTheFirstID() {
        var c = Coalescer()
        #expect(c.stored(1, ids: ["a"], now: at(0)).isEmpty)
        #expect(c.nextDeadline == at(0, ms: 20))
        #expect(c.stored(1, ids: ["b"], now: at(0, ms: 10)).isEmpty)
        #expect(c.stored(1, ids: ["c", "d"], now: at(0, ms: 19)).isEmpty)
        #expect(c.tick(now: at(0, ms: 19)).isEmpty)
        #expect(c.tick(now: at(0, ms: 20)) == [.sendAck(1, ids: ["a", "b", "c", "d"])])
        #expect(c.nextDeadline == nil)
        #expect(c.tick(now: at(0, ms: 40)).isEmpty)
    }

    @Test func theNextIDOpensANewWindow() {
        var c = Coalescer()
        _ = c.stored(1, ids: ["a"], now: at(0))
        _ = c.tick(now: at(0, ms: 20))
        #expect(c.stored(1, ids: ["b"], now: at(0, ms: 25)).isEmpty)
        #expect(c.tick(now: at(0, ms: 44)).isEmpty)
        #expect(c.tick(now: at(0, ms: 45)) == [.sendAck(1, ids: ["b"])])
    }

    @Test func anIDStoredWhenTheWindowIsDueLeavesWithIt() {
        var c = Coalescer()
        _ = c.stored(1, ids: ["a"], now: at(0))
        // The tick was late; the store finished exactly at the deadline.
        #expect(c.stored(1, ids: ["b"], now: at(0, ms: 20)) == [.sendAck(1, ids: ["a", "b"])])
        #expect(c.pendingCount == 0)
    }

    @Test func a1024thIDSendsAtOnce() {
        var c = Coalescer()
        #expect(c.stored(1, ids: ids(0..<1023), now: at(0)).isEmpty)
        #expect(c.stored(1, ids: ["last"], now: at(0, ms: 5)) == [.sendAck(1, ids: ids(0..<1023) + ["last"])])
        #expect(c.pendingCount == 0)
    }

    @Test func moreThan1024AreSplitInOrder() {
        var c = Coalescer()
        let all = ids(0..<3000)
        let actions = c.stored(7, ids: all, now: at(0))
        #expect(actions == [.sendAck(7, ids: Array(all[0..<1024])), .sendAck(7, ids: Array(all[1024..<2048]))])
        // The rest waits for the same window, not a new one.
        #expect(c.pendingCount == 952)
        #expect(c.tick(now: at(0, ms: 19)).isEmpty)
        #expect(c.tick(now: at(0, ms: 20)) == [.sendAck(7, ids: Array(all[2048..<3000]))])
    }

    @Test func everyAckHoldsOneTo1024IDs() {
        var c = Coalescer()
        var acked: [String] = []
        var t: UInt64 = 0
        for batch in 0..<50 {
            let batchIDs = ids(batch * 97..<(batch + 1) * 97)
            for action in c.stored(1, ids: batchIDs, now: at(0, ms: t)) + c.tick(now: at(0, ms: t)) {
                guard case .sendAck(_, let ackIDs) = action else { continue }
                #expect((1...1024).contains(ackIDs.count))
                acked += ackIDs
            }
            t += 3
        }
        for action in c.tick(now: at(10)) {
            if case .sendAck(_, let ackIDs) = action { acked += ackIDs }
        }
        #expect(acked == ids(0..<4850))
    }

    @Test func connectionsHaveTheirOwnWindows() {
        var c = Coalescer()
        _ = c.stored(1, ids: ["a1"], now: at(0))
        _ = c.stored(2, ids: ["b1"], now: at(0, ms: 10))
        _ = c.stored(1, ids: ["a2"], now: at(0, ms: 15))
        #expect(c.nextDeadline == at(0, ms: 20))
        #expect(c.tick(now: at(0, ms: 20)) == [.sendAck(1, ids: ["a1", "a2"])])
        #expect(c.nextDeadline == at(0, ms: 30))
        #expect(c.tick(now: at(0, ms: 30)) == [.sendAck(2, ids: ["b1"])])
        // Both due at once: oldest window first.
        _ = c.stored(1, ids: ["a3"], now: at(1, ms: 5))
        _ = c.stored(2, ids: ["b2"], now: at(1))
        #expect(c.tick(now: at(2)) == [.sendAck(2, ids: ["b2"]), .sendAck(1, ids: ["a3"])])
    }

    @Test func anIDStoredTwiceInAWindowIsAckedOnce() {
        var c = Coalescer()
        _ = c.stored(1, ids: ["a", "b"], now: at(0))
        _ = c.stored(1, ids: ["a", "c"], now: at(0, ms: 1))
        #expect(c.tick(now: at(0, ms: 20)) == [.sendAck(1, ids: ["a", "b", "c"])])
    }

    @Test func configurableDelay() {
        var immediate = Coalescer(delay: .zero)
        #expect(immediate.stored(1, ids: ["a"], now: at(0)) == [.sendAck(1, ids: ["a"])])
        #expect(immediate.nextDeadline == nil)

        var five = Coalescer(delay: .milliseconds(5))
        _ = five.stored(1, ids: ["a"], now: at(0))
        #expect(five.tick(now: at(0, ms: 4)).isEmpty)
        #expect(five.tick(now: at(0, ms: 5)) == [.sendAck(1, ids: ["a"])])

        var small = Coalescer(maxIDsPerAck: 2)
        #expect(small.stored(1, ids: ["a", "b", "c"], now: at(0)) == [.sendAck(1, ids: ["a", "b"])])
        // The protocol's limit cannot be exceeded.
        #expect(Coalescer(maxIDsPerAck: 5000).maxIDsPerAck == 1024)
    }

    @Test func aClosedConnectionsIDsAreDropped() {
        var c = Coalescer()
        _ = c.stored(1, ids: ["a"], now: at(0))
        c.connectionClosed(1)
        #expect(c.tick(now: at(1)).isEmpty)
        #expect(c.nextDeadline == nil)
        #expect(c.stored(1, ids: [], now: at(1)).isEmpty)
    }
}
