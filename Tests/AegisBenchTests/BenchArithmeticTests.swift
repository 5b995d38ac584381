@testable import AegisBench
import Foundation
import Testing

/// The harness's own figures, checked on workloads whose answer is known.
struct ProcFSTests {
    @Test func statFieldsAreCountedFromTheLastParenthesis() throws {
        // A command name with spaces and parentheses, as /proc allows.
        let line = "4242 (aegis (d) x) S 17 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 5 0 100 1000000 2000"
        let (ppid, ticks) = try #require(ProcFS.parseStat(line))
        #expect(ppid == 17)
        #expect(ticks == 325)
        #expect(ProcFS.parseStat("garbage") == nil)
        #expect(ProcFS.parseResident("Name:\tx\nVmRSS:\t   2048 kB\nVmSwap:\t0 kB\n") == 2048 * 1024)
    }

    /// A child process of known behaviour (other tests run beside this
    /// one, so this process's own CPU would not be a known workload).
    @Test func cpuOfABusyProcessIsCountedAndSleepIsNot() throws {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // Sleeps 0.5 s, burns 0.5 s of its own CPU time, then sleeps again.
        child.arguments = ["python3", "-c", """
            import time
            time.sleep(0.5)
            t = time.process_time()
            while time.process_time() - t < 0.5:
                pass
            time.sleep(30)
            """]
        try child.run()
        defer { child.terminate() }
        let pid = child.processIdentifier
        Thread.sleep(forTimeInterval: 0.3)
        let asleep = try #require(ProcFS.usage(of: pid))
        // Python's start-up only.
        #expect(asleep.cpuSeconds < 0.2, "\(asleep.cpuSeconds) s before the busy part")
        var after = asleep
        let deadline = Date().addingTimeInterval(20)
        while after.cpuSeconds - asleep.cpuSeconds < 0.5 && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
            after = try #require(ProcFS.usage(of: pid))
        }
        Thread.sleep(forTimeInterval: 0.3)
        let done = try #require(ProcFS.usage(of: pid))
        let counted = done.cpuSeconds - asleep.cpuSeconds
        // 0.5 s of work, in 10 ms ticks, plus a little start-up left over.
        #expect(counted >= 0.48 && counted < 0.7, "counted \(counted) s for 0.5 s of work")
        #expect(done.residentBytes > 1 << 20)
    }

    @Test func aProcessTreeIncludesItsChildren() throws {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["5"]
        try child.run()
        defer { child.terminate() }
        let tree = ProcFS.tree(of: getpid())
        #expect(tree.contains(getpid()))
        #expect(tree.contains(child.processIdentifier))
    }
}

struct LatencyTests {
    @Test func percentilesOfAUniformWorkload() {
        var h = LatencyHistogram()
        for v in 1...10_000 { h.record(microseconds: UInt64(v)) }
        let s = h.summary
        #expect(s.count == 10_000)
        // HdrHistogram with 3 significant digits: within 0.1 %.
        #expect(abs(Double(s.p50) - 5000) <= 5)
        #expect(abs(Double(s.p99) - 9900) <= 10)
        #expect(abs(Double(s.max) - 10_000) <= 10)
        #expect(abs(s.mean - 5000.5) < 5)
    }

    @Test func mergingHalvesGivesTheWhole() {
        var a = LatencyHistogram(), b = LatencyHistogram(), whole = LatencyHistogram()
        for v in 1...5000 { a.record(microseconds: UInt64(v)); whole.record(microseconds: UInt64(v)) }
        for v in 5001...10_000 { b.record(microseconds: UInt64(v)); whole.record(microseconds: UInt64(v)) }
        a.merge(b)
        #expect(a.summary == whole.summary)
        #expect(LatencyHistogram().summary.p99 == 0)
    }
}

struct RatioTests {
    func phase(_ name: String, cpuMicros: Double, idsPerAck: Int) -> BenchReport.Phase {
        var c = SimulatedFleet.Counters()
        c.acks = 100
        c.ackedIDs = 100 * idsPerAck
        return BenchReport.Phase(name: name, seconds: 1, operations: 1000, throughput: 1000, latency: nil,
                                 gatewayCPUSeconds: cpuMicros * 1000 / 1e6, postgresCPUSeconds: 0,
                                 gatewayMicrosecondsPerOperation: cpuMicros, postgresMicrosecondsPerOperation: 0,
                                 counters: c)
    }

    @Test func eachPhaseIsDividedByItsOwnBareCost() throws {
        var report = BenchReport(agents: 10, payloadBytes: 256, tls: false, precomputed: false,
                                 gatewayResidentBytes: 0, residentBytesPerConnection: 0)
        report.phases = [phase("up-inflight-16", cpuMicros: 60, idsPerAck: 16), phase("up-inflight-1", cpuMicros: 80, idsPerAck: 1),
                         phase("down", cpuMicros: 100, idsPerAck: 1), phase("handshake", cpuMicros: 300, idsPerAck: 1),
                         phase("request-response", cpuMicros: 900, idsPerAck: 1)]
        let bare = BareCosts(openSeconds: 40e-6, sealSeconds: 15e-6, ackSealSeconds: 16e-6, ackOpenSeconds: 40e-6,
                             handshakeSeconds: 120e-6, payloadBytes: 256, ackIDs: 16)
        report.attach(bare)
        // 40 + 16/16 = 41 µs; 40 + 16/1 = 56 µs; 15 + 40 = 55 µs; 120 µs.
        #expect(abs(try #require(report.phase("up-inflight-16")?.ratio) - 60.0 / 41) < 1e-9)
        #expect(abs(try #require(report.phase("up-inflight-1")?.ratio) - 80.0 / 56) < 1e-9)
        #expect(abs(try #require(report.phase("down")?.ratio) - 100.0 / 55) < 1e-9)
        #expect(abs(try #require(report.phase("handshake")?.ratio) - 2.5) < 1e-9)
        #expect(report.phase("request-response")?.ratio == nil)
        #expect(abs(bare.upMessageSeconds - 41e-6) < 1e-12)
        #expect(report.summary.contains("headline up message (up-inflight-16): gateway CPU 60.0 µs ÷ bare crypto 41.0 µs = 1.46"))
    }

    @Test func bareCostsAreMeasuredAndPlausible() {
        let bare = BareCosts.measure(payloadBytes: 256, ackIDs: 4, rounds: 3, iterations: 20)
        // Ed25519 verification dominates opening; signing, sealing.
        #expect(bare.openSeconds > bare.sealSeconds)
        #expect(bare.handshakeSeconds > bare.openSeconds)
        #expect(bare.openSeconds > 1e-6 && bare.openSeconds < 5e-3)
    }

    @Test func theCSVHasOneRowPerSample() {
        var report = BenchReport(agents: 1, payloadBytes: 1, tls: false, precomputed: false,
                                 gatewayResidentBytes: 0, residentBytesPerConnection: 0)
        report.samples = [.init(seconds: 1.5, phase: "up-inflight-1", sent: 10, acked: 9, downReceived: 0,
                                gatewayCPUPercent: 50, postgresCPUPercent: 12.25)]
        let lines = report.csv.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines[1] == "1.50,up-inflight-1,10,9,0,50.0,12.2" || lines[1] == "1.50,up-inflight-1,10,9,0,50.0,12.3")
    }
}
