import AegisProtocol
import Foundation
import Testing

/// Properties over random inputs (seeded: the seed is in each failure).
@Suite struct PropertyTests {
    /// seal → open is the identity, for payloads of 0 B to 1 MiB and random
    /// valid ids, channels, refs and types.
    @Test(arguments: [UInt64(1), 2, 3])
    func sealOpenIdentity(seed: UInt64) throws {
        var g = SeededGenerator(seed: seed)
        let p = try SessionPair.make()
        let sizes = [0, 1, 15, 16, 17, 63, 64, 65, 1023, 1024, 16384, 1_048_576] + (0..<12).map { _ in Int.random(in: 0...1_048_576, using: &g) }
        for (k, size) in sizes.enumerated() {
            let type = [MessageType.request, .response, .event].randomElement(using: &g)!
            let header = MessageHeader(
                id: randomText(idAlphabet, 1...64, using: &g), type: type,
                channel: "c" + randomText(channelAlphabet, 0...254, using: &g),
                ref: type == .response ? randomText(idAlphabet, 1...64, using: &g) : nil,
                timestamp: SessionPair.now + UInt64(k))
            let pt = randomBytes(size, using: &g)
            let up = k % 2 == 0
            let json = try (up ? p.agent : p.gateway).seal(header, plaintext: pt)
            let m = try (up ? p.gateway : p.agent).open(json, now: SessionPair.now + 30)
            #expect(m.header == header && m.plaintext == pt, "seed \(seed) size \(size)")
        }
    }

    /// Flipping any single bit anywhere in a sealed message is refused:
    /// every byte of the text is covered by the JSON grammar, the strict
    /// base64, the AEAD or the signature.
    @Test func everyBitFlipIsRejected() throws {
        let p = try SessionPair.make()
        let now = SessionPair.now
        let messages = [
            try p.agent.seal(MessageHeader(id: "r-1", type: .request, channel: "jobs/run", timestamp: now), plaintext: Array("{\"a\":1}".utf8)),
            try p.agent.seal(MessageHeader(id: "s-1", type: .response, channel: "jobs/run", ref: "q-9", timestamp: now), plaintext: []),
            try p.agent.seal(MessageHeader(id: "k-1", type: .ack, channel: "aegis.ack", ref: "d1", timestamp: now),
                             plaintext: try AckPlaintext.build(ids: ["d1", "d2"])),
        ]
        var rejected = 0
        for json in messages {
            for i in 0..<json.count {
                for bit in 0..<8 {
                    var t = json
                    t[i] ^= UInt8(1 << bit)
                    // A fresh receiver each time would be costly; ids differ per
                    // message, and a flip never yields the same id and a valid
                    // message, so one receiver suffices.
                    do {
                        let m = try p.gateway.open(t, now: now)
                        Issue.record("flip of bit \(bit) at \(i) accepted: \(m.header)")
                    } catch {
                        rejected += 1
                    }
                }
            }
            // The untouched message still opens.
            _ = try p.gateway.open(json, now: now)
        }
        #expect(rejected == messages.reduce(0) { $0 + $1.count * 8 })
    }

    /// Random flips in the ciphertext of large payloads.
    @Test func ciphertextFlipsAreRejected() throws {
        var g = SeededGenerator(seed: 99)
        let p = try SessionPair.make()
        let json = try p.agent.seal(MessageHeader(id: "big", type: .event, channel: "c", timestamp: SessionPair.now),
                                    plaintext: randomBytes(200_000, using: &g))
        let text = String(decoding: json, as: UTF8.self)
        let start = text.utf8.distance(from: text.utf8.startIndex, to: text.range(of: "\"payload\":\"")!.upperBound)
        for _ in 0..<64 {
            var t = json
            let i = Int.random(in: start..<(start + 260_000), using: &g)
            t[i] ^= UInt8(1 << Int.random(in: 0..<8, using: &g))
            #expect(throws: AegisError.self) { try p.gateway.open(t, now: SessionPair.now) }
        }
    }

    /// JSON is never signed: any member order and unknown members are
    /// accepted; a repeated member, at any depth, is not (§1).
    @Test func memberOrderUnknownAndDuplicateFields() throws {
        var g = SeededGenerator(seed: 7)
        let p = try SessionPair.make()
        for k in 0..<20 {
            let header = MessageHeader(id: "o-\(k)", type: .response, channel: "x", ref: "r", timestamp: SessionPair.now)
            let json = try p.agent.seal(header, plaintext: [UInt8(k)])
            let obj = try JSONSerialization.jsonObject(with: Data(json)) as! [String: Any]
            var members = obj.map { (k, v) in "\"\(k)\":" + (v is String ? "\"\(v)\"" : "\(v)") }
            members.shuffle(using: &g)
            members.insert("\"x-extra\":{\"deep\":[1,{\"k\":null}]}", at: Int.random(in: 0...members.count, using: &g))
            let shuffled = Array(("{ " + members.joined(separator: " ,\n") + " }").utf8)
            let m = try p.gateway.open(shuffled, now: SessionPair.now)
            #expect(m.header == header && m.plaintext == [UInt8(k)])

            // The same member twice, even with the same value.
            let dup = Array(("{" + (members + [members[0]]).joined(separator: ",") + "}").utf8)
            #expect(throws: AegisError.jsonDuplicateKey) { try p.gateway.open(dup, now: SessionPair.now) }
            // A repeated name inside an unknown member.
            let deep = Array(("{" + (members + ["\"z\":{\"a\":1,\"\\u0061\":2}"]).joined(separator: ",") + "}").utf8)
            #expect(throws: AegisError.jsonDuplicateKey) { try p.gateway.open(deep, now: SessionPair.now) }
        }
    }

    /// The duplicate window: remembered until timestamp + skew, bounded,
    /// never mistaking one id for another.
    @Test func duplicateWindow() throws {
        let p = try SessionPair.make()
        let now = SessionPair.now
        p.gateway.setDuplicateWindowLimit(64)
        func send(_ id: String, at t: UInt64) throws -> Bool {
            let json = try p.agent.seal(MessageHeader(id: id, type: .event, channel: "c", timestamp: t), plaintext: [])
            return try p.gateway.open(json, now: t).isDuplicate
        }
        #expect(try !send("a", at: now))
        #expect(try send("a", at: now + 60))       // within timestamp + skew
        #expect(try send("a", at: now + 119))      // the retransmission extended it
        for i in 0..<64 { #expect(try !send("n\(i)", at: now + 120)) }
        #expect(p.gateway.duplicateWindowEvictions >= 1)  // the bound held
        #expect(try !send("a", at: now + 300))     // expired (and evicted): processed again
        for i in 0..<2000 { #expect(try !send("v\(i)", at: now + 400)) }
        #expect(p.gateway.duplicateWindowEvictions > 1000)
    }
}
