import AegisStore
import Foundation
import Testing

@Suite("Migrations and the embedded cluster")
struct MigrationTests {
    @Test("migrations apply once and are idempotent")
    func idempotent() async throws {
        let (store, conninfo) = try await SharedCluster.instance.freshStore(migrate: false)
        let first = try await store.migrate()
        #expect(first.applied == Migrations.all.map(\.version))
        #expect(first.current == Migrations.latest)
        let second = try await store.migrate()
        #expect(second.applied.isEmpty)
        #expect(second.current == Migrations.latest)
        // A second gateway starting on the same database finds nothing to do.
        let other = try await Store.open(conninfo: conninfo, log: Fixture.log)
        try await other.ping()
        #expect(try await other.migrate().applied.isEmpty)
    }

    @Test("gateways starting together on one database do not race (advisory lock)")
    func concurrentStart() async throws {
        let (_, conninfo) = try await SharedCluster.instance.freshStore(migrate: false)
        var options = Store.Options()
        options.migrate = false
        let stores = (0..<4).map { _ in Store(conninfo: conninfo, options: options, log: Fixture.log) }
        let reports = try await withThrowingTaskGroup(of: MigrationReport.self) { group in
            for s in stores { group.addTask { try await s.migrate() } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(reports.flatMap(\.applied).sorted() == Migrations.all.map(\.version))
        #expect(reports.allSatisfy { $0.current == Migrations.latest })
    }

    @Test("the cluster runs on a Unix socket only, with fsync and synchronous_commit on")
    func clusterSettings() async throws {
        let cluster = try await SharedCluster.instance.cluster()
        #expect(cluster.isRunning)
        #expect(cluster.conninfo.contains("host='/"))
        let conf = try String(contentsOfFile: cluster.clusterDirectory + "/aegis.conf", encoding: .utf8)
        #expect(conf.contains("listen_addresses = ''"))
        let cmdline = try String(contentsOfFile: "/proc/\(cluster.postmasterPID!)/cmdline", encoding: .utf8)
        #expect(cmdline.contains("fsync=on") && cmdline.contains("synchronous_commit=on"))
        if geteuid() == 0 {
            #expect(cluster.account?.name == "postgres")
            var st = stat()
            #expect(stat(cluster.clusterDirectory, &st) == 0 && st.st_uid == cluster.account!.uid)
        }
    }

    @Test("paths: long data directories get a short socket directory; as root, closed parents a fallback")
    func pathChoices() throws {
        let long = Fixture.base + "/" + String(repeating: "d", count: 100)
        let p = try EmbeddedPostgres(EmbeddedPostgres.Configuration(dataDirectory: long), log: Fixture.log)
        #expect(p.clusterDirectory == long + "/pg")
        #expect(p.socketDirectory.hasPrefix("/tmp/aegis-pg-"))
        #expect((p.socketDirectory + "/.s.PGSQL.5432").utf8.count <= 107)

        let short = try EmbeddedPostgres(EmbeddedPostgres.Configuration(dataDirectory: Fixture.base + "/s"), log: Fixture.log)
        #expect(short.socketDirectory == short.clusterDirectory)

        if geteuid() == 0 {
            let closed = Fixture.base + "/closed"
            mkdir(closed, 0o700)
            _ = chmod(closed, 0o700)
            var config = EmbeddedPostgres.Configuration(dataDirectory: closed + "/data")
            config.fallbackRoot = Fixture.base + "/fallback"
            let f = try EmbeddedPostgres(config, log: Fixture.log)
            #expect(f.clusterDirectory.hasPrefix(Fixture.base + "/fallback/pg-"))
        }
    }
}

@Suite("The embedded cluster as root, under a directory closed to postgres")
struct FallbackTests {
    @Test("the cluster goes to the fallback, linked from <data>/pg, and is found again",
          .enabled(if: geteuid() == 0, "only root runs the cluster under another account"))
    func fallback() async throws {
        // /tmp/…/closed is 0700 root, like /root.
        let closed = Fixture.base + "/closed-fallback"
        mkdir(closed, 0o700)
        _ = chmod(closed, 0o700)
        var config = EmbeddedPostgres.Configuration(dataDirectory: closed + "/data")
        config.fallbackRoot = Fixture.base + "/fallback"
        let cluster = try await Fixture.startCluster(config)
        #expect(cluster.clusterDirectory.hasPrefix(Fixture.base + "/fallback/pg-"))
        let link = try FileManager.default.destinationOfSymbolicLink(atPath: closed + "/data/pg")
        #expect(link == cluster.clusterDirectory)
        let store = try await Store.open(conninfo: cluster.conninfo, log: Fixture.log)
        try await store.ping()
        // The next gateway follows the link (and adopts the running server).
        let again = try EmbeddedPostgres(config, log: Fixture.log)
        #expect(again.clusterDirectory == cluster.clusterDirectory)
        try await again.start()
        #expect(again.postmasterPID == cluster.postmasterPID)
        try await cluster.stop()
        #expect(!cluster.isRunning)
    }
}

@Suite("Agents")
struct AgentTests {
    @Test("TOFU: the first key is pinned, later pins return the existing record")
    func tofu() async throws {
        let store = try await SharedCluster.instance.store()
        let id = agentID("tofu")
        let first = try await store.pinAgent(id: id, publicKey: bytes(32, 1), enrollment: .active)
        #expect(first.isNew)
        #expect(first.record.publicKey == bytes(32, 1))
        let second = try await store.pinAgent(id: id, publicKey: bytes(32, 2), enrollment: .pending)
        #expect(!second.isNew)
        #expect(second.record == first.record)
        #expect(try await store.agent(id: id) == first.record)
        #expect(try await store.agent(id: agentID("nobody")) == nil)
    }

    @Test("approve and revoke; revoke sets revoked_at; delete")
    func enrollment() async throws {
        let store = try await SharedCluster.instance.store()
        let id = agentID("enroll")
        _ = try await store.pinAgent(id: id, publicKey: bytes(32), enrollment: .pending)
        let approved = try #require(try await store.setEnrollment(id: id, .active))
        #expect(approved.enrollment == .active && approved.revokedAt == nil)
        let t = now()
        let revoked = try #require(try await store.setEnrollment(id: id, .revoked, at: t))
        #expect(revoked.enrollment == .revoked)
        #expect(same(revoked.revokedAt, t))
        let again = try #require(try await store.setEnrollment(id: id, .revoked, at: t.addingTimeInterval(60)))
        #expect(again.revokedAt == revoked.revokedAt)   // the first revocation counts
        let back = try #require(try await store.setEnrollment(id: id, .active))
        #expect(back.revokedAt == nil)
        #expect(try await store.setEnrollment(id: agentID("ghost"), .active) == nil)
        #expect(try await store.deleteAgent(id: id))
        #expect(try await store.agent(id: id) == nil)
        #expect(!(try await store.deleteAgent(id: id)))
    }

    @Test("listAgents pages by id and filters")
    func list() async throws {
        let store = try await SharedCluster.instance.store()
        let prefix = agentID("list")
        for i in 0..<5 {
            _ = try await store.pinAgent(id: "\(prefix)-\(i)", publicKey: bytes(32, UInt8(i)),
                                         enrollment: i % 2 == 0 ? .active : .pending)
        }
        // Page through from just before our prefix.
        var seen: [String] = []
        var after: String? = prefix
        while true {
            let page = try await store.listAgents(after: after, limit: 2)
            let ours = page.filter { $0.agentID.hasPrefix(prefix) }
            seen += ours.map(\.agentID)
            if ours.count < page.count || page.count < 2 { break }
            after = page.last!.agentID
        }
        #expect(seen == (0..<5).map { "\(prefix)-\($0)" })
        let pending = try await store.listAgents(after: prefix, limit: 1000, filter: AgentFilter(enrollment: .pending))
            .filter { $0.agentID.hasPrefix(prefix) }
        #expect(pending.map(\.agentID) == ["\(prefix)-1", "\(prefix)-3"])
    }
}

@Suite("Nonces and enrollment tokens")
struct NonceTokenTests {
    @Test("a nonce is accepted once; the replay is refused; prune removes expired ones")
    func nonces() async throws {
        let (store, _) = try await SharedCluster.instance.freshStore()
        let id = agentID("nonce")
        let t = now()
        let n1 = bytes(32, 1), n2 = bytes(32, 2)
        #expect(!(try await store.nonceSeen(agentID: id, nonce: n1)))
        #expect(try await store.recordNonce(agentID: id, nonce: n1, expiresAt: t.addingTimeInterval(-1)))
        #expect(!(try await store.recordNonce(agentID: id, nonce: n1, expiresAt: t.addingTimeInterval(120))))
        #expect(try await store.nonceSeen(agentID: id, nonce: n1))
        // Another agent may use the same bytes.
        #expect(try await store.recordNonce(agentID: agentID("other"), nonce: n1, expiresAt: t.addingTimeInterval(120)))
        #expect(try await store.recordNonce(agentID: id, nonce: n2, expiresAt: t.addingTimeInterval(120)))
        #expect(try await store.pruneNonces(now: t) == 1)
        #expect(!(try await store.nonceSeen(agentID: id, nonce: n1)))
        #expect(try await store.nonceSeen(agentID: id, nonce: n2))
    }

    @Test("the handshake's lookups in one round trip agree with the single ones")
    func handshakeLookup() async throws {
        let store = try await SharedCluster.instance.store()
        let id = agentID("lookup"), t = now()
        let nonce = bytes(32, 7), token = Array(UUID().uuidString.utf8)
        var found = try await store.handshakeLookup(agentID: id, nonce: nonce, tokenHash: token, now: t)
        #expect(found == HandshakeLookup(replaySeen: false, agent: nil, tokenValid: false))
        #expect(try await store.recordNonce(agentID: id, nonce: nonce, expiresAt: t.addingTimeInterval(120)))
        let pinned = try await store.pinAgent(id: id, publicKey: bytes(32, 9), enrollment: .active).record
        try await store.createEnrollmentToken(hash: token, expiresAt: t.addingTimeInterval(3600), uses: 1)
        found = try await store.handshakeLookup(agentID: id, nonce: nonce, tokenHash: token, now: t)
        #expect(found == HandshakeLookup(replaySeen: true, agent: pinned, tokenValid: true))
        // Without a token the third statement is not sent.
        found = try await store.handshakeLookup(agentID: id, nonce: bytes(32, 8), tokenHash: nil, now: t)
        #expect(found == HandshakeLookup(replaySeen: false, agent: pinned, tokenValid: false))
        #expect(try await store.consumeEnrollmentToken(hash: token, now: t))
        #expect(!(try await store.handshakeLookup(agentID: id, nonce: nonce, tokenHash: token, now: t).tokenValid))
    }

    @Test("tokens: single use, N uses, expired, revoked")
    func tokens() async throws {
        let store = try await SharedCluster.instance.store()
        let t = now()
        let single = Array(UUID().uuidString.utf8), multi = Array(UUID().uuidString.utf8)
        let expired = Array(UUID().uuidString.utf8), revoked = Array(UUID().uuidString.utf8)
        try await store.createEnrollmentToken(hash: single, expiresAt: t.addingTimeInterval(3600), uses: 1)
        try await store.createEnrollmentToken(hash: multi, expiresAt: t.addingTimeInterval(3600), uses: 3)
        try await store.createEnrollmentToken(hash: expired, expiresAt: t.addingTimeInterval(-1), uses: 5)
        try await store.createEnrollmentToken(hash: revoked, expiresAt: t.addingTimeInterval(3600), uses: 5)
        #expect(try await store.consumeEnrollmentToken(hash: single, now: t))
        #expect(!(try await store.consumeEnrollmentToken(hash: single, now: t)))
        for _ in 0..<3 { #expect(try await store.consumeEnrollmentToken(hash: multi, now: t)) }
        #expect(!(try await store.consumeEnrollmentToken(hash: multi, now: t)))
        #expect(!(try await store.consumeEnrollmentToken(hash: expired, now: t)))
        #expect(try await store.revokeEnrollmentToken(hash: revoked, at: t))
        #expect(!(try await store.consumeEnrollmentToken(hash: revoked, now: t)))
        #expect(!(try await store.consumeEnrollmentToken(hash: Array("unknown".utf8), now: t)))
        // The same hash twice is a constraint violation, named.
        await #expect {
            try await store.createEnrollmentToken(hash: single, expiresAt: t, uses: 1)
        } throws: { error in
            guard case .constraint(let name, let state, _) = error as? StoreError else { return false }
            return state == "23505" && name == "enrollment_tokens_token_hash_key"
        }
    }

    @Test("concurrent consumers of a 5-use token get exactly 5 uses")
    func concurrentConsume() async throws {
        let cluster = try await SharedCluster.instance.cluster()
        var stores: [Store] = []
        for _ in 0..<4 { stores.append(try await Store.open(conninfo: cluster.conninfo, log: Fixture.log)) }
        let hash = Array(UUID().uuidString.utf8)
        let t = now()
        try await stores[0].createEnrollmentToken(hash: hash, expiresAt: t.addingTimeInterval(60), uses: 5)
        let wins = try await withThrowingTaskGroup(of: Int.self) { group in
            for s in stores {
                group.addTask {
                    var n = 0
                    for _ in 0..<5 where try await s.consumeEnrollmentToken(hash: hash, now: t) { n += 1 }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(wins == 5)
    }
}

@Suite("Sessions")
struct SessionTests {
    @Test("session start and end; a newer session is left alone")
    func sessions() async throws {
        let store = try await SharedCluster.instance.store()
        let id = agentID("session")
        _ = try await store.pinAgent(id: id, publicKey: bytes(32), enrollment: .active)
        let s1 = UUID(), s2 = UUID()
        let t = now()
        #expect(try await store.sessionStarted(agentID: id, sessionID: s1, tokenHash: bytes(32, 3), nodeID: "node-a", at: t))
        var r = try #require(try await store.agent(id: id))
        #expect(r.isActive && r.sessionID == s1 && r.nodeID == "node-a" && r.sessionTokenHash == bytes(32, 3))
        #expect(r.connectedAt == r.lastSeen)
        // The agent reconnects elsewhere before the old connection's end is recorded.
        #expect(try await store.sessionStarted(agentID: id, sessionID: s2, tokenHash: bytes(32, 4), nodeID: "node-b",
                                               at: t.addingTimeInterval(1)))
        #expect(!(try await store.sessionEnded(agentID: id, sessionID: s1, at: t.addingTimeInterval(2))))
        r = try #require(try await store.agent(id: id))
        #expect(r.isActive && r.sessionID == s2)
        #expect(try await store.sessionEnded(agentID: id, sessionID: s2, at: t.addingTimeInterval(3)))
        r = try #require(try await store.agent(id: id))
        #expect(!r.isActive)
        #expect(!(try await store.sessionStarted(agentID: agentID("ghost"), sessionID: s1, tokenHash: [], nodeID: "x", at: t)))
    }

    @Test("touchAgents updates many agents in one call and never moves last_seen back")
    func touch() async throws {
        let store = try await SharedCluster.instance.store()
        let prefix = agentID("touch")
        let ids = (0..<50).map { "\(prefix)-\($0)" }
        for id in ids { _ = try await store.pinAgent(id: id, publicKey: bytes(32), enrollment: .active) }
        let t = now()
        var seen: [String: Date] = [:]
        for (i, id) in ids.enumerated() { seen[id] = t.addingTimeInterval(Double(i)) }
        seen[agentID("unknown")] = t
        #expect(try await store.touchAgents(seen) == 50)
        for (i, id) in ids.enumerated() {
            #expect(same(try await store.agent(id: id)?.lastSeen, t.addingTimeInterval(Double(i))))
        }
        #expect(try await store.touchAgents([ids[0]: t.addingTimeInterval(-100)]) == 1)
        #expect(same(try await store.agent(id: ids[0])?.lastSeen, t))
        #expect(try await store.touchAgents([:]) == 0)
    }

    @Test("deactivateNode ends the node's sessions")
    func deactivate() async throws {
        let store = try await SharedCluster.instance.store()
        let node = "node-" + UUID().uuidString
        let ids = (0..<3).map { _ in agentID("node") }
        for id in ids {
            _ = try await store.pinAgent(id: id, publicKey: bytes(32), enrollment: .active)
            try await store.sessionStarted(agentID: id, sessionID: UUID(), tokenHash: bytes(32), nodeID: node, at: now())
        }
        #expect(try await store.deactivateNode(node, at: now()) == 3)
        for id in ids { #expect(try await store.agent(id: id)?.isActive == false) }
    }
}

@Suite("Up messages")
struct UpMessageTests {
    @Test("a batch with a duplicate inside and across batches: reported, stored once, first copy kept")
    func duplicates() async throws {
        let store = try await SharedCluster.instance.store()
        let a = agentID("up"), b = agentID("up")
        let session = UUID()
        let batch1 = [
            upMessage(a, "m1", payload: "one", session: session, timestamp: 11),
            upMessage(a, "m2", payload: "two", session: session, timestamp: 12),
            upMessage(b, "m1", payload: "b-one", session: session, timestamp: 13),  // same id, other agent
            upMessage(a, "m1", payload: "one-again", session: session, timestamp: 14),  // duplicate in batch
        ]
        let r1 = try await store.storeUpMessages(batch1)
        #expect(r1.map(\.outcome) == [.stored, .stored, .stored, .duplicate])
        #expect(r1.map(\.msgID) == ["m1", "m2", "m1", "m1"])

        let batch2 = [
            upMessage(a, "m2", payload: "two-again", session: UUID(), timestamp: 99),   // duplicate across batches
            upMessage(a, "m3", payload: "three", session: session, timestamp: 15),
        ]
        let r2 = try await store.storeUpMessages(batch2)
        #expect(r2.map(\.outcome) == [.duplicate, .stored])

        let rows = try await store.messages(agentID: a, direction: .up)
        #expect(rows.map(\.msgID) == ["m1", "m2", "m3"])
        #expect(rows.map { String(decoding: $0.payload, as: UTF8.self) } == ["one", "two", "three"])
        let m1 = rows[0]
        let original = batch1[0]
        #expect(m1.encryptedPayload == original.ciphertext)
        #expect(m1.nonce == original.nonce)
        #expect(m1.signature == original.signature)
        #expect(m1.envelopeTimestamp == 11)
        #expect(m1.sessionID == session)
        #expect(m1.type == "event" && m1.channel == "telemetry/cpu" && m1.ref == nil)
        #expect(m1.status == .received)
        #expect(rows[1].envelopeTimestamp == 12)   // not the duplicate's 99
        #expect(try await store.messages(agentID: b, direction: .up).count == 1)
        #expect(try await store.storeUpMessages([]).isEmpty)
    }

    @Test("2,000 messages of several agents in one transaction")
    func largeBatch() async throws {
        let store = try await SharedCluster.instance.store()
        let agents = (0..<8).map { _ in agentID("bulk") }
        let batch = (0..<2000).map { i in
            upMessage(agents[i % agents.count], "id-\(i)", payload: String(repeating: "x", count: i % 300))
        }
        let results = try await store.storeUpMessages(batch)
        #expect(results.count == 2000 && results.allSatisfy { $0.outcome == .stored })
        let again = try await store.storeUpMessages(Array(batch[0..<10]))
        #expect(again.allSatisfy { $0.outcome == .duplicate })
        #expect(try await store.messages(agentID: agents[3], direction: .up, limit: 1000).count == 250)
    }

    @Test("text the database cannot take is .invalid and stores nothing")
    func invalid() async throws {
        let store = try await SharedCluster.instance.store()
        let a = agentID("bad")
        var bad = upMessage(a, "ok")
        bad.channel = "nul\u{0}inside"
        await #expect {
            try await store.storeUpMessages([upMessage(a, "fine"), bad])
        } throws: { error in
            if case .invalid = error as? StoreError { return true }
            return false
        }
        #expect(try await store.messages(agentID: a, direction: .up).isEmpty)
        // The connection is usable afterwards (the transaction was rolled back).
        #expect(try await store.storeUpMessages([upMessage(a, "fine")]).first?.outcome == .stored)
    }
}

@Suite("Down queue")
struct DownQueueTests {
    @Test("a claim takes each due message once, oldest first, until its claim runs out")
    func claims() async throws {
        let store = try await SharedCluster.instance.store()
        let a = agentID("claim"), t = now()
        for i in 0..<5 {
            try await store.enqueueDown(DownMessage(agentID: a, msgID: "c\(i)", type: "event", channel: "c",
                                                    payload: [UInt8(i)], expiresAt: nil), at: t)
        }
        // Two claimers at once (two nodes, or two passes) never share a row.
        async let first = store.claimDueDown(agentID: a, now: t, claimUntil: t.addingTimeInterval(30), limit: 3)
        async let second = store.claimDueDown(agentID: a, now: t, claimUntil: t.addingTimeInterval(30), limit: 3)
        let (x, y) = try await (first, second)
        #expect(Set(x.map(\.msgID)).isDisjoint(with: y.map(\.msgID)))
        #expect((x + y).map(\.msgID).sorted() == ["c0", "c1", "c2", "c3", "c4"])
        #expect(x.map(\.msgID) == x.map(\.msgID).sorted())
        // Claimed rows are not due again before the claim runs out …
        #expect(try await store.claimDueDown(agentID: a, now: t.addingTimeInterval(10), claimUntil: t, limit: 10).isEmpty)
        // … and are after it, unless a send was recorded meanwhile.
        try await store.markSent(ids: [x[0].id], at: t, nextAttemptAt: t.addingTimeInterval(3600))
        let again = try await store.claimDueDown(agentID: a, now: t.addingTimeInterval(31),
                                                 claimUntil: t.addingTimeInterval(60), limit: 10)
        #expect(again.count == 4 && !again.contains { $0.msgID == x[0].msgID })
    }

    @Test("enqueue, due, sent with retries, delivered, failed by TTL and by retries")
    func lifecycle() async throws {
        let (store, _) = try await SharedCluster.instance.freshStore()
        let a = agentID("down")
        let t0 = now()
        func down(_ id: String, ttl: Double? = 3600) -> DownMessage {
            DownMessage(agentID: a, msgID: id, type: "request", channel: "cmd/run", ref: nil,
                        payload: Array("do \(id)".utf8), expiresAt: ttl.map { t0.addingTimeInterval($0) })
        }
        let id1 = try await store.enqueueDown(down("d1"), at: t0)
        let id2 = try await store.enqueueDown(down("d2", ttl: 30), at: t0)
        let id3 = try await store.enqueueDown(down("d3", ttl: nil), at: t0)
        #expect(try await store.enqueueDown(down("d1"), at: t0.addingTimeInterval(5)) == id1)   // idempotent

        var due = try await store.dueDown(agentID: a, now: t0)
        #expect(due.map(\.id) == [id1, id2, id3])
        #expect(due.allSatisfy { $0.status == .queued && $0.retryCount == 0 })
        #expect(due[0].payload == Array("do d1".utf8) && due[2].expiresAt == nil)
        #expect(try await store.dueDown(agentID: a, now: t0, limit: 1).map(\.id) == [id1])

        // Sent: not due until the ack deadline passes.
        #expect(try await store.markSent(ids: [id1, id2, id3], at: t0, nextAttemptAt: t0.addingTimeInterval(10)) == 3)
        #expect(try await store.dueDown(agentID: a, now: t0.addingTimeInterval(5)).isEmpty)
        due = try await store.dueDown(agentID: a, now: t0.addingTimeInterval(10))
        #expect(due.map(\.id) == [id1, id2, id3])
        #expect(due.allSatisfy { $0.status == .sent && $0.retryCount == 1 && same($0.lastAttemptAt, t0) })

        // d1 is acked.
        #expect(try await store.markDelivered(agentID: a, msgIDs: ["d1", "nope"], at: t0.addingTimeInterval(11)) == 1)
        #expect(try await store.markDelivered(agentID: a, msgIDs: ["d1"], at: t0.addingTimeInterval(12)) == 0)

        // Resent: retry 2.
        #expect(try await store.markSent(ids: [id1, id2, id3], at: t0.addingTimeInterval(12),
                                         nextAttemptAt: t0.addingTimeInterval(20)) == 2)
        due = try await store.dueDown(agentID: a, now: t0.addingTimeInterval(20))
        #expect(due.map(\.id) == [id2, id3] && due.allSatisfy { $0.retryCount == 2 })
        #expect(try await store.dueDown(agentID: a, now: t0.addingTimeInterval(20), maxRetries: 2).isEmpty)

        // d2 expires at t0+30; d3 has had 2 sends and its ack window ended at t0+20.
        #expect(try await store.failExpired(now: t0.addingTimeInterval(15), maxRetries: 2) == 0)
        #expect(try await store.failExpired(now: t0.addingTimeInterval(25), maxRetries: 3) == 0)
        #expect(try await store.failExpired(now: t0.addingTimeInterval(25), maxRetries: 2) == 2)
        #expect(try await store.dueDown(agentID: a, now: t0.addingTimeInterval(25)).isEmpty)
        // A late ack of a failed message changes nothing.
        #expect(try await store.markDelivered(agentID: a, msgIDs: ["d2", "d3"], at: t0.addingTimeInterval(26)) == 0)

        let rows = try await store.messages(agentID: a, direction: .down)
        #expect(rows.map(\.status) == [.delivered, .failed, .failed])
        #expect(same(rows[0].deliveredAt, t0.addingTimeInterval(11)))
        #expect(try await store.markSent(ids: [], at: t0, nextAttemptAt: t0) == 0)
    }

    @Test("expiry alone fails queued messages that were never sent")
    func ttl() async throws {
        let (store, _) = try await SharedCluster.instance.freshStore()
        let a = agentID("ttl")
        let t0 = now()
        let id = try await store.enqueueDown(DownMessage(agentID: a, msgID: "x", type: "event", channel: "c",
                                                         payload: [], expiresAt: t0.addingTimeInterval(1)), at: t0)
        #expect(try await store.dueDown(agentID: a, now: t0).map(\.id) == [id])
        #expect(try await store.dueDown(agentID: a, now: t0.addingTimeInterval(1)).isEmpty)
        #expect(try await store.failExpired(now: t0.addingTimeInterval(1), maxRetries: 5) == 1)
        #expect(try await store.messages(agentID: a, direction: .down).first?.status == .failed)
    }
}

@Suite("LISTEN / NOTIFY")
struct NotifyTests {
    @Test("a NOTIFY reaches the listener")
    func roundTrip() async throws {
        let store = try await SharedCluster.instance.store()
        let channel = "aegis_test_" + UUID().uuidString.prefix(8).lowercased()
        let sub = try await store.listen(channel: channel)
        try await store.notify(channel: channel, payload: "hello")
        try await store.notify(channel: channel, payload: "")
        var iterator = sub.events.makeAsyncIterator()
        #expect(await iterator.next() == .notification(channel: channel, payload: "hello"))
        #expect(await iterator.next() == .notification(channel: channel, payload: ""))
        sub.cancel()
        #expect(await iterator.next() == nil)
    }

    @Test("channel names are checked")
    func badChannel() async throws {
        let store = try await SharedCluster.instance.store()
        await #expect(throws: StoreError.self) { try await store.listen(channel: "") }
        await #expect(throws: StoreError.self) { try await store.listen(channel: String(repeating: "c", count: 64)) }
    }
}
