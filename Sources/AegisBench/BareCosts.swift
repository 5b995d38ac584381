import BareCrypto
import Foundation

/// The bare cost of the crypto the protocol requires, measured in this
/// process with the same libsodium calls the gateway makes (BareCrypto):
/// the denominators of the headline ratios.
public struct BareCosts: Sendable, Codable, Equatable {
    /// Ed25519 verify + AEAD decrypt of one message of the measured size.
    public var openSeconds: Double
    /// AEAD encrypt + Ed25519 sign of one message of the measured size.
    public var sealSeconds: Double
    /// Sign + encrypt of an ack carrying `ackIDs` ids (its plaintext size).
    public var ackSealSeconds: Double
    /// Verify + decrypt of that ack.
    public var ackOpenSeconds: Double
    /// The gateway's handshake share: verify + X25519 ×2 + HKDF + sign.
    public var handshakeSeconds: Double
    public var payloadBytes: Int
    public var ackIDs: Int

    /// What one up message requires of the gateway: open it, and its share
    /// of the ack that covered it.
    public var upMessageSeconds: Double { openSeconds + ackSealSeconds / Double(max(ackIDs, 1)) }
    /// What one down message requires: seal it, and its share of the
    /// agent's ack the gateway opens.
    public var downMessageSeconds: Double { sealSeconds + ackOpenSeconds / Double(max(ackIDs, 1)) }

    /// The smaller of two measurements, cost by cost: the bare cost is what
    /// the calls take undisturbed (the other core of a two-core machine
    /// slows a measurement down when busy), which makes ratios conservative.
    public func minimum(_ other: BareCosts) -> BareCosts {
        BareCosts(openSeconds: min(openSeconds, other.openSeconds), sealSeconds: min(sealSeconds, other.sealSeconds),
                  ackSealSeconds: min(ackSealSeconds, other.ackSealSeconds),
                  ackOpenSeconds: min(ackOpenSeconds, other.ackOpenSeconds),
                  handshakeSeconds: min(handshakeSeconds, other.handshakeSeconds),
                  payloadBytes: payloadBytes, ackIDs: ackIDs)
    }

    /// The median of each cost over many samples.
    public static func median(_ samples: [BareCosts]) -> BareCosts? {
        guard let first = samples.first else { return nil }
        func mid(_ f: (BareCosts) -> Double) -> Double { samples.map(f).sorted()[samples.count / 2] }
        return BareCosts(openSeconds: mid(\.openSeconds), sealSeconds: mid(\.sealSeconds),
                         ackSealSeconds: mid(\.ackSealSeconds), ackOpenSeconds: mid(\.ackOpenSeconds),
                         handshakeSeconds: mid(\.handshakeSeconds), payloadBytes: first.payloadBytes,
                         ackIDs: first.ackIDs)
    }

    /// Measures each cost as the median of `rounds` timed loops of
    /// `iterations` calls (medians shrug off a descheduled round).
    public static func measure(payloadBytes: Int, ackIDs: Int, rounds: Int = 9, iterations: Int = 300) -> BareCosts {
        precondition(bare_init() == 0, "sodium_init failed")
        // {"ids":["<36-char uuid>",…]}: 9 + 39 per id (quotes and comma).
        let ackBytes = 9 + 39 * max(ackIDs, 1)
        let message = bare_message_new(payloadBytes, "bench.up")
        let ack = bare_message_new(ackBytes, "aegis.ack")
        let handshake = UnsafeMutablePointer<bare_gateway_handshake>.allocate(capacity: 1)
        defer {
            bare_message_free(message)
            bare_message_free(ack)
            handshake.deallocate()
        }
        precondition(bare_gateway_handshake_prepare(handshake, 12) == 0, "handshake setup")
        var okm = [UInt8](repeating: 0, count: 64)
        // Thread CPU time, like the gateway's /proc figures: a round that
        // is descheduled does not look slower (nor the ratio better).
        func median(_ body: () -> Void) -> Double {
            var samples: [Double] = []
            for _ in 0..<rounds {
                let start = threadCPUSeconds()
                for _ in 0..<iterations { body() }
                samples.append((threadCPUSeconds() - start) / Double(iterations))
            }
            return samples.sorted()[samples.count / 2]
        }
        var failures: Int32 = 0
        let costs = BareCosts(
            openSeconds: median { failures |= bare_message_open(message) },
            sealSeconds: median { bare_message_seal(message) },
            ackSealSeconds: median { bare_message_seal(ack) },
            ackOpenSeconds: median { failures |= bare_message_open(ack) },
            handshakeSeconds: median { failures |= bare_gateway_handshake_run(handshake, &okm) },
            payloadBytes: payloadBytes, ackIDs: ackIDs)
        precondition(failures == 0, "a bare check failed: the inputs are not what the calls expect")
        return costs
    }
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
