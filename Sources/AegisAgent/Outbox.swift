import AegisProtocol

/// An up message the application asked to send: kept until acked (§5,
/// up delivery is at least once) and sent again, with the same id, on
/// every new session until then.
public struct OutgoingMessage: Sendable, Equatable {
    public var id: String
    public var type: MessageType
    public var channel: String
    public var ref: String?
    public var payload: [UInt8]

    public init(id: String, type: MessageType, channel: String, ref: String? = nil, payload: [UInt8]) {
        self.id = id
        self.type = type
        self.channel = channel
        self.ref = ref
        self.payload = payload
    }
}

/// The unacknowledged up messages in the order they were queued, and
/// which of them went out in the current session.
///
/// Sending is windowed (`limit` in flight) so that a long backlog after a
/// reconnect does not flood a gateway whose store is catching up (it closes
/// with 1013 past its buffer).
struct Outbox: Sendable {
    private var entries: [String: (message: OutgoingMessage, sent: Bool)] = [:]
    /// Ids in queue order; acked ones are skipped lazily and compacted.
    private var order: [String] = []
    private var head = 0
    /// The next position of `order` not yet sent in this session.
    private var cursor = 0
    private(set) var inFlight = 0

    var count: Int { entries.count }
    var isEmpty: Bool { entries.isEmpty }
    func contains(_ id: String) -> Bool { entries[id] != nil }

    /// Queue order of what is still unacknowledged.
    var pendingIDs: [String] { order[head...].filter { entries[$0] != nil } }

    /// False when the id is already queued (ids are unique per sender).
    mutating func append(_ message: OutgoingMessage) -> Bool {
        guard entries[message.id] == nil else { return false }
        entries[message.id] = (message, false)
        order.append(message.id)
        return true
    }

    /// Removes an acknowledged message; nil for an id not (or no longer) here.
    mutating func acknowledge(_ id: String) -> OutgoingMessage? {
        guard let entry = entries.removeValue(forKey: id) else { return nil }
        if entry.sent { inFlight -= 1 }
        while head < order.count, entries[order[head]] == nil { head += 1 }
        if cursor < head { cursor = head }
        if head > 1024, head * 2 > order.count { compact() }
        return entry.message
    }

    /// The next messages to put on the wire, at most up to `limit` in flight.
    mutating func takeSendable(limit: Int) -> [OutgoingMessage] {
        var out: [OutgoingMessage] = []
        while inFlight < limit, cursor < order.count {
            let id = order[cursor]
            cursor += 1
            guard var entry = entries[id], !entry.sent else { continue }
            entry.sent = true
            entries[id] = entry
            inFlight += 1
            out.append(entry.message)
        }
        return out
    }

    /// The session is gone: everything unacked goes again on the next one.
    mutating func sessionEnded() {
        compact()
        for id in order { entries[id]?.sent = false }
        inFlight = 0
        cursor = head
    }

    private mutating func compact() {
        order = order[head...].filter { entries[$0] != nil }
        head = 0
        cursor = 0
        var sentPrefix = 0
        // Keep the cursor after what was sent in this session.
        while sentPrefix < order.count, entries[order[sentPrefix]]?.sent == true { sentPrefix += 1 }
        cursor = sentPrefix
    }
}

/// Ids of down messages already processed, remembered at least `lifetime`
/// (the gateway stops resending a message once its time to live has
/// passed, §5) and at most `capacity` of them, oldest forgotten first.
struct ProcessedIDWindow: Sendable {
    let lifetime: Duration
    let capacity: Int
    private var expiry: [String: Duration] = [:]
    /// Insertion order; expiry times are non-decreasing along it because
    /// the lifetime is constant and time only moves forward.
    private var fifo: [(id: String, expires: Duration)] = []
    private var head = 0
    /// Ids forgotten before their lifetime because the window was full.
    private(set) var evictions: UInt64 = 0

    init(lifetime: Duration, capacity: Int) {
        self.lifetime = lifetime
        self.capacity = max(1, capacity)
    }

    var count: Int { expiry.count }
    func contains(_ id: String) -> Bool { expiry[id] != nil }

    /// Records an id; false if it was processed already.
    mutating func insert(_ id: String, now: Duration) -> Bool {
        expire(now: now)
        guard expiry[id] == nil else { return false }
        if expiry.count >= capacity {
            forgetOldest()
            evictions += 1
        }
        expiry[id] = now + lifetime
        fifo.append((id, now + lifetime))
        return true
    }

    mutating func expire(now: Duration) {
        while head < fifo.count, fifo[head].expires <= now { forgetOldest() }
    }

    private mutating func forgetOldest() {
        guard head < fifo.count else { return }
        expiry[fifo[head].id] = nil
        head += 1
        if head > 4096, head * 2 > fifo.count {
            fifo.removeFirst(head)
            head = 0
        }
    }
}

/// Message ids: UUID v4 text (128 random bits, §1's advice).
public enum MessageIDs {
    public static func make() -> String {
        var g = SystemRandomNumberGenerator()
        return make(using: &g)
    }

    public static func make<G: RandomNumberGenerator>(using g: inout G) -> String {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        bytes[6] = (bytes[6] & 0x0f) | 0x40
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        let hex = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(36)
        for (i, b) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { s.append("-") }
            s.append(hex[Int(b >> 4)])
            s.append(hex[Int(b & 0x0f)])
        }
        return s
    }
}
