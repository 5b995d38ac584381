import AegisStore
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Tests that stop, restart and kill a server: a cluster of their own, one
/// test at a time.
@Suite("PostgreSQL down, restarted, crashed", .serialized)
struct FailureTests {
    static let cluster = Task { try await Fixture.startCluster("failures") }

    @Test("stopped: calls fail with .unavailable; started again: the store reconnects by itself")
    func reconnect() async throws {
        let cluster = try await Self.cluster.value
        let store = try await Store.open(conninfo: cluster.conninfo, log: Fixture.log)
        let a = agentID("reconnect")
        _ = try await store.pinAgent(id: a, publicKey: bytes(32), enrollment: .active)
        let sub = try await store.listen(channel: "aegis_failover")

        try await cluster.stop()
        #expect(!cluster.isRunning)
        for _ in 0..<3 {
            await #expect {
                try await store.agent(id: a)
            } throws: { error in
                guard let e = error as? StoreError, case .unavailable = e else { return false }
                return e.isRetryable
            }
        }
        await #expect(throws: StoreError.self) { try await store.storeUpMessages([upMessage(a, "during-outage")]) }

        try await cluster.start()
        // The store retries on its own schedule (backoff at most 2 s).
        try await eventually { try await store.ping() }
        #expect(try await store.agent(id: a)?.agentID == a)
        #expect(try await store.storeUpMessages([upMessage(a, "after")]).first?.outcome == .stored)

        // The listener is back too: it says so, then delivers again.
        var events = sub.events.makeAsyncIterator()
        #expect(await events.next() == .resumed)
        try await store.notify(channel: "aegis_failover", payload: "back")
        #expect(await events.next() == .notification(channel: "aegis_failover", payload: "back"))
        sub.cancel()
    }

    @Test("kill -9 of the postmaster: after restart every committed batch is there")
    func crash() async throws {
        let cluster = try await Self.cluster.value
        let store = try await Store.open(conninfo: cluster.conninfo, log: Fixture.log)
        let a = agentID("crash")
        let batch = (0..<200).map { upMessage(a, "c\($0)", payload: "payload \($0)") }
        let results = try await store.storeUpMessages(batch)
        #expect(results.allSatisfy { $0.outcome == .stored })

        let pid = try #require(cluster.postmasterPID)
        #expect(kill(pid, SIGKILL) == 0)
        try await eventually { if cluster.isRunning { throw CancellationError() } }
        await #expect(throws: StoreError.self) { try await store.ping() }

        try await cluster.start()   // waits for the old processes, then crash recovery
        #expect(cluster.postmasterPID != pid)
        try await eventually { try await store.ping() }
        let rows = try await store.messages(agentID: a, direction: .up, limit: 1000)
        #expect(rows.count == 200)
        #expect(rows.last.map { String(decoding: $0.payload, as: UTF8.self) } == "payload 199")
        #expect(try await store.storeUpMessages(Array(batch[0..<5])).allSatisfy { $0.outcome == .duplicate })
    }

    @Test("a gateway killed with its server still running: the next one adopts the server")
    func adopt() async throws {
        let cluster = try await Self.cluster.value
        let pid = try #require(cluster.postmasterPID)
        // A new gateway process would make a new EmbeddedPostgres on the same data directory.
        let again = try EmbeddedPostgres(cluster.configuration, log: Fixture.log)
        try await again.start()
        #expect(again.postmasterPID == pid)
        #expect(again.conninfo == cluster.conninfo)
        let store = try await Store.open(conninfo: again.conninfo, log: Fixture.log)
        try await store.ping()
    }
}
