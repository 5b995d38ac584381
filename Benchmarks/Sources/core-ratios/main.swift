// core-ratios — our seal() / open() / handshake ÷ the bare libsodium calls
// they must make, measured interleaved in one process.
//
// For each case, every round times K calls of ours then K of bare (the order
// alternates between rounds) with CLOCK_MONOTONIC; the per-message figures
// are the medians over the rounds and the ratio is the median of the rounds'
// paired ratios (robust to load that drifts during the run). Each ratio is
// marked against the target (≤ 1.10); the exit status is 0 whatever they
// are: this is a report, not a test. The last line is the same data as JSON.
//
//   swift run -c release --package-path Benchmarks core-ratios [--rounds N] [--ms M] [--filter TEXT]
//
// --rounds: rounds per case (default 15); --ms: target milliseconds per side
// per round (default 25); --filter: only cases whose name contains TEXT.
import CoreFixtures
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let target = 1.10

/// To stderr, without touching the C global `stderr` (not concurrency-safe).
func complain(_ text: String) {
    var bytes = Array((text + "\n").utf8)
    _ = write(2, &bytes, bytes.count)
}

/// A debug build gives meaningless ratios (our C at -O0, libsodium optimised).
func refuseDebugBuild() {
    #if DEBUG
    complain("core-ratios: a debug build gives meaningless ratios; run it with -c release")
    exit(1)
    #endif
}
refuseDebugBuild()

// MARK: - Options

struct Options {
    var rounds = 15
    var targetMs = 25.0
    var filter: String?
}

func parseOptions() -> Options {
    var o = Options()
    var argv = CommandLine.arguments.dropFirst()
    while let arg = argv.popFirst() {
        switch arg {
        case "--rounds": o.rounds = max(3, Int(argv.popFirst() ?? "") ?? o.rounds)
        case "--ms": o.targetMs = max(1, Double(argv.popFirst() ?? "") ?? o.targetMs)
        case "--filter": o.filter = argv.popFirst()
        case "-h", "--help":
            print("usage: core-ratios [--rounds N] [--ms M] [--filter TEXT]")
            exit(0)
        default:
            complain("core-ratios: unknown argument \(arg)")
            exit(2)
        }
    }
    return o
}

let options = parseOptions()
let rounds = options.rounds
let targetMs = options.targetMs
let filter = options.filter

// MARK: - Timing

@inline(__always)
func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// A case: two closures doing the same work `perCall` messages at a time;
/// each returns 0 when every message passed.
struct Case {
    let name: String
    let op: String
    let payload: Int
    let perCall: Int
    let ours: () -> UInt32
    let bare: () -> UInt32
}

struct Result {
    let c: Case
    let oursNs: Double
    let bareNs: Double
    let ratio: Double
    let ratioLow: Double
    let ratioHigh: Double
    var pass: Bool { ratio <= target }
}

func timed(_ f: () -> UInt32, _ k: Int, _ name: String) -> Double {
    var bad: UInt32 = 0
    let t0 = monotonicNs()
    for _ in 0..<k { bad |= f() }
    let t1 = monotonicNs()
    precondition(bad == 0, "\(name): a call failed (status bits \(bad))")
    return Double(t1 - t0)
}

func median(_ xs: [Double]) -> Double { quantile(xs, 0.5) }

func quantile(_ xs: [Double], _ q: Double) -> Double {
    let s = xs.sorted()
    let pos = q * Double(s.count - 1)
    let lo = Int(pos.rounded(.down)), hi = Int(pos.rounded(.up))
    return s[lo] + (s[hi] - s[lo]) * (pos - Double(lo))
}

func measure(_ c: Case) -> Result {
    // Warm up both, then size K so that one side takes about targetMs.
    _ = timed(c.ours, 2, c.name)
    _ = timed(c.bare, 2, c.name)
    var k = 1
    var spent = timed(c.ours, k, c.name)
    while spent < 2_000_000 {  // 2 ms of calibration at least
        k *= 2
        spent = timed(c.ours, k, c.name)
    }
    k = max(1, Int(Double(k) * targetMs * 1_000_000 / spent))

    var ours: [Double] = [], bare: [Double] = [], ratios: [Double] = []
    let div = Double(k * c.perCall)
    for r in 0..<rounds {
        let o: Double, b: Double
        if r % 2 == 0 {
            o = timed(c.ours, k, c.name)
            b = timed(c.bare, k, c.name)
        } else {
            b = timed(c.bare, k, c.name)
            o = timed(c.ours, k, c.name)
        }
        ours.append(o / div)
        bare.append(b / div)
        ratios.append(o / b)
    }
    return Result(c: c, oursNs: median(ours), bareNs: median(bare), ratio: median(ratios),
                  ratioLow: quantile(ratios, 0.25), ratioHigh: quantile(ratios, 0.75))
}

// MARK: - Cases

let handshake = HandshakeWorkload()
let opens = payloadSizes.map { OpenWorkload(payloadBytes: $0.bytes, handshake: handshake) }
let seals = payloadSizes.map { SealWorkload(payloadBytes: $0.bytes, handshake: handshake) }
var cases: [Case] = []
var layout: [String] = []
for (i, (name, n)) in payloadSizes.enumerated() {
    let open = opens[i]
    layout.append("\(name): open and seal sign \(open.signedBytes) B (aad \(open.aadBytes) B) / "
                  + "\(seals[i].signedBytes) B (aad \(seals[i].aadBytes) B)")
    cases += [
        Case(name: "open \(name)", op: "open", payload: n, perCall: 1,
             ours: { open.ours().rawValue }, bare: { UInt32(bitPattern: open.bare()) }),
        Case(name: "open \(name) batch\(batchSize)", op: "open", payload: n, perCall: batchSize,
             ours: { open.oursBatch() }, bare: { UInt32(bitPattern: open.bareBatch()) }),
    ]
}
for (i, (name, n)) in payloadSizes.enumerated() {
    let seal = seals[i]
    cases += [
        Case(name: "seal \(name)", op: "seal", payload: n, perCall: 1,
             ours: { seal.ours().rawValue }, bare: { UInt32(bitPattern: seal.bare()) }),
        Case(name: "seal \(name) batch\(batchSize)", op: "seal", payload: n, perCall: batchSize,
             ours: { seal.oursBatch() }, bare: { UInt32(bitPattern: seal.bareBatch()) }),
    ]
}
cases.append(Case(name: "handshake (both sides)", op: "handshake", payload: 0, perCall: 1,
                  ours: { handshake.ours().rawValue }, bare: { UInt32(bitPattern: handshake.bare()) }))
if let filter { cases = cases.filter { $0.name.contains(filter) } }

// MARK: - Run and report

func pad(_ s: String, _ w: Int, right: Bool = false) -> String {
    let n = s.count
    if n >= w { return s }
    let fill = String(repeating: " ", count: w - n)
    return right ? fill + s : s + fill
}

func fixed(_ x: Double, _ digits: Int) -> String {
    var m = 1.0
    for _ in 0..<digits { m *= 10 }
    let v = (x * m).rounded() / m
    var s = digits == 0 ? String(Int64(v)) : String(v)
    if digits == 0 { return s }
    if let dot = s.firstIndex(of: ".") {
        let have = s.distance(from: dot, to: s.endIndex) - 1
        if have < digits { s += String(repeating: "0", count: digits - have) }
    } else {
        s += "." + String(repeating: "0", count: digits)
    }
    return s
}

print("core-ratios: ours ÷ bare libsodium, \(rounds) interleaved rounds of ~\(Int(targetMs)) ms a side per case,")
print("median ns per message (per handshake), ratio = median of the rounds' paired ratios [p25–p75]; target ≤ \(fixed(target, 2))")
for line in layout { print("  \(line)") }
print("")
let header = pad("case", 24) + " | " + pad("ours ns/msg", 12, right: true) + " | " + pad("bare ns/msg", 12, right: true)
    + " | " + pad("ratio", 6, right: true) + " | " + pad("p25–p75", 13) + " | vs \(fixed(target, 2))"
print(header)
print(String(repeating: "-", count: header.count))
var results: [Result] = []
for c in cases {
    let r = measure(c)
    results.append(r)
    print(pad(c.name, 24) + " | " + pad(fixed(r.oursNs, 0), 12, right: true) + " | "
          + pad(fixed(r.bareNs, 0), 12, right: true) + " | " + pad(fixed(r.ratio, 3), 6, right: true) + " | "
          + pad(fixed(r.ratioLow, 3) + "–" + fixed(r.ratioHigh, 3), 13) + " | " + (r.pass ? "PASS" : "OVER"))
}
let over = results.filter { !$0.pass }
print("")
print(over.isEmpty ? "all \(results.count) ratios ≤ \(fixed(target, 2))"
                   : "\(over.count) of \(results.count) ratios over \(fixed(target, 2)): " + over.map(\.c.name).joined(separator: ", "))

var json = "{\"tool\":\"core-ratios\",\"unit\":\"ns per message\",\"target\":\(target),\"rounds\":\(rounds),\"cases\":["
json += results.map { r in
    "{\"case\":\"\(r.c.name)\",\"op\":\"\(r.c.op)\",\"payload_bytes\":\(r.c.payload),\"batch\":\(r.c.perCall),"
        + "\"ours_ns\":\(fixed(r.oursNs, 1)),\"bare_ns\":\(fixed(r.bareNs, 1)),\"ratio\":\(fixed(r.ratio, 4)),"
        + "\"ratio_p25\":\(fixed(r.ratioLow, 4)),\"ratio_p75\":\(fixed(r.ratioHigh, 4)),\"pass\":\(r.pass)}"
}.joined(separator: ",")
json += "]}"
print(json)
exit(0)
