/// Coalesces the acks of stored up messages, per connection (§5, and the
/// durability rules of docs/gateway-design.md).
///
/// The first id stored for a connection opens a window of `delay` (at most
/// 20 ms). Every id stored for that connection while the window is open
/// joins it. The window's ids leave as one ack when the window closes
/// (`now ≥ opened + delay`, so exactly `delay` after opening), and earlier
/// in full acks of `maxIDsPerAck` (1024) as soon as that many are waiting;
/// what is left after a full ack stays in the same window, so no id ever
/// waits longer than `delay`. Ids keep the order in which they were stored;
/// an id stored twice in one window is acked once.
///
/// Generic over the connection identifier so that it needs no transport
/// type. `tick` and `nextDeadline` look at the open windows only, that is
/// the connections that stored something in the last `delay`; a clock that
/// steps back delays a window's close by the step, never loses an id.
public struct AckCoalescer<Connection: Hashable & Sendable>: Sendable {
    public enum Action: Sendable, Equatable {
        /// Send one ack listing these ids (1…1024, in order) on `aegis.ack`,
        /// with the first id as its `ref`.
        case sendAck(Connection, ids: [String])
    }

    public let delay: Duration
    public let maxIDsPerAck: Int

    private struct Window: Sendable {
        var ids: [String] = []
        var seen: Set<String> = []
        var closesAt: UnixTime
    }

    private var windows: [Connection: Window] = [:]

    /// - Parameters:
    ///   - delay: how long the first id of a window may wait; 0 acks at once.
    ///   - maxIDsPerAck: ids per ack, 1…1024 (the protocol's limit).
    public init(delay: Duration = .milliseconds(20), maxIDsPerAck: Int = 1024) {
        self.delay = max(delay, .zero)
        self.maxIDsPerAck = min(max(maxIDsPerAck, 1), 1024)
    }

    /// Ids of `connection` whose messages are now durably stored.
    public mutating func stored(_ connection: Connection, ids: [String], now: UnixTime) -> [Action] {
        guard !ids.isEmpty else { return [] }
        // Taken out of the dictionary, so that the appends below are in
        // place rather than copies of a still-shared buffer.
        var window = windows.removeValue(forKey: connection) ?? Window(closesAt: now + delay)
        var actions: [Action] = []
        for id in ids where window.seen.insert(id).inserted {
            window.ids.append(id)
            if window.ids.count == maxIDsPerAck {
                actions.append(.sendAck(connection, ids: window.ids))
                window.ids = []
                window.seen = []
            }
        }
        if now >= window.closesAt {
            if !window.ids.isEmpty { actions.append(.sendAck(connection, ids: window.ids)) }
        } else {
            windows[connection] = window
        }
        return actions
    }

    /// Sends the acks of every window that has closed by `now`.
    public mutating func tick(now: UnixTime) -> [Action] {
        // Called every few milliseconds: find the due windows without
        // copying the others.
        var due: [(Connection, UnixTime)] = []
        for (connection, window) in windows where now >= window.closesAt { due.append((connection, window.closesAt)) }
        guard !due.isEmpty else { return [] }
        var actions: [Action] = []
        // Oldest window first, so that acks leave in the order they were due.
        for (connection, _) in due.sorted(by: { $0.1 < $1.1 }) {
            if let window = windows.removeValue(forKey: connection), !window.ids.isEmpty {
                actions.append(.sendAck(connection, ids: window.ids))
            }
        }
        return actions
    }

    /// The connection is gone: its waiting ids are dropped (the agent resends
    /// those messages on its next session and they are acked as duplicates).
    public mutating func connectionClosed(_ connection: Connection) {
        windows[connection] = nil
    }

    /// When `tick` has work next, for the I/O layer's timer; nil when idle.
    public var nextDeadline: UnixTime? { windows.values.lazy.map(\.closesAt).min() }

    /// Ids waiting for their ack, all connections.
    public var pendingCount: Int { windows.values.reduce(0) { $0 + $1.ids.count } }
}
