/// The rules of §5 for one down message: when to send it (again), when to
/// give up, and what an ack does. Pure: the caller keeps a `DownDelivery`
/// per message (in the store: status, retry_count, next_attempt_at) and asks
/// `nextStep` whenever the message's timer fires or the agent's session
/// changes.
///
/// Schedule. The first send happens as soon as the agent has a session.
/// After send number n (n ≥ 1) without an ack, the next send is due
///
///     wait(n) = min(ackTimeout × 2^(n−1), backoffCap)
///
/// after it, or at once when the agent starts a new session (§5: "sent
/// again after the ack timeout and on the agent's next session"). With the
/// defaults (ack timeout 30 s, cap 10 min, 5 retries) the sends are at 0,
/// 30, 90, 210, 450 and 930 s, and an unacked message fails at 1530 s —
/// unless its time to live ends first.
///
/// Endings. A message fails with `.retries` when another send would be due
/// and it has already been sent 1 + maxRetries times; with `.timeToLive` at
/// `createdAt + timeToLive`, whatever its sends (a send is never scheduled
/// at or past that instant). An ack (or a response naming it) before either
/// moment delivers it; an ack after it is ignored — a failed message stays
/// failed, even when the caller learns of the failure only with the ack.
public struct DownDeliveryPolicy: Sendable, Equatable {
    public var maxRetries: Int
    public var ackTimeout: Duration
    public var backoffCap: Duration

    public init(maxRetries: Int = 5, ackTimeout: Duration = .seconds(30), backoffCap: Duration = .seconds(600)) {
        self.maxRetries = max(0, maxRetries)
        self.ackTimeout = max(ackTimeout, .milliseconds(1))
        self.backoffCap = max(backoffCap, self.ackTimeout)
    }

    /// At most this many sends: the first and `maxRetries` more.
    public var maxSends: Int { 1 + maxRetries }

    /// How long to wait for an ack after send number `sends` (≥ 1).
    public func wait(afterSend sends: Int) -> Duration {
        let doublings = max(0, sends - 1)
        guard doublings < 62 else { return backoffCap }
        let (scaled, overflow) = ackTimeout.wholeMilliseconds.multipliedReportingOverflow(by: Int64(1) << doublings)
        return overflow ? backoffCap : min(.milliseconds(scaled), backoffCap)
    }

    /// What to do with the message at `now`. `session` is the agent's
    /// current session (nil: not connected).
    public func nextStep(_ message: DownDelivery, session: String?, now: UnixTime) -> DownDeliveryStep {
        switch message.status {
        case .delivered: return .settled
        case .failed(let reason): return .failed(reason)
        case .pending: break
        }
        let expiresAt = message.expiresAt
        if now >= expiresAt { return .fail(.timeToLive) }
        guard message.sends > 0, let lastSentAt = message.lastSentAt else {
            return session == nil ? .awaitSession(until: expiresAt) : .send(attempt: 1)
        }
        let dueAt = lastSentAt + wait(afterSend: message.sends)
        let newSession = session != nil && session != message.lastSession
        guard newSession || now >= dueAt else {
            return .waitUntil(min(dueAt, expiresAt))
        }
        if message.sends >= maxSends { return .fail(.retries) }
        guard session != nil else { return .awaitSession(until: expiresAt) }
        return .send(attempt: message.sends + 1)
    }

    /// Applies `nextStep` when it ends the message: marks it failed and
    /// returns the reason; nil when the message is still pending or settled.
    public func failIfDue(_ message: inout DownDelivery, session: String?, now: UnixTime) -> DownDeliveryFailure? {
        guard case .fail(let reason) = nextStep(message, session: session, now: now) else { return nil }
        message.status = .failed(reason)
        return reason
    }

    /// An ack (or a response whose `ref` names the message) arrived at `now`
    /// on `session`. Delivers a pending message unless it had already failed
    /// by `now`.
    public func acknowledge(_ message: inout DownDelivery, session: String?, now: UnixTime) -> DownAckOutcome {
        switch message.status {
        case .delivered: return .alreadyDelivered
        case .failed(let reason): return .ignoredFailed(reason)
        case .pending: break
        }
        if let reason = failIfDue(&message, session: session, now: now) { return .ignoredFailed(reason) }
        message.status = .delivered
        return .delivered
    }
}

/// What the gateway knows about one down message's delivery.
public struct DownDelivery: Sendable, Equatable {
    public enum Status: Sendable, Equatable {
        case pending
        case delivered
        case failed(DownDeliveryFailure)
    }

    public var createdAt: UnixTime
    public var timeToLive: Duration
    /// Sends so far (retry_count = sends − 1 once sent).
    public var sends: Int
    public var lastSentAt: UnixTime?
    /// The session the last send went out on.
    public var lastSession: String?
    public var status: Status

    public init(createdAt: UnixTime, timeToLive: Duration, sends: Int = 0, lastSentAt: UnixTime? = nil,
                lastSession: String? = nil, status: Status = .pending) {
        self.createdAt = createdAt
        self.timeToLive = timeToLive
        self.sends = sends
        self.lastSentAt = lastSentAt
        self.lastSession = lastSession
        self.status = status
    }

    /// The end of the time to live, counted from creation.
    public var expiresAt: UnixTime { createdAt + timeToLive }

    /// Records a send (the caller does it when it hands the message to the
    /// transport, after `nextStep` said `.send`).
    public mutating func recordSend(session: String, at now: UnixTime) {
        sends += 1
        lastSentAt = now
        lastSession = session
    }
}

public enum DownDeliveryStep: Sendable, Equatable {
    /// Send now; `attempt` is 1 for the first send.
    case send(attempt: Int)
    /// Nothing to do before this instant (the next send, or the end of the
    /// time to live), unless the agent starts a new session first.
    case waitUntil(UnixTime)
    /// A send is due but the agent has no session: send when it connects;
    /// the message fails at `until` if it does not.
    case awaitSession(until: UnixTime)
    /// Give up now: mark the message failed.
    case fail(DownDeliveryFailure)
    /// Already delivered.
    case settled
    /// Already failed; nothing more happens to it.
    case failed(DownDeliveryFailure)
}

public enum DownDeliveryFailure: String, Sendable, Equatable {
    /// Its time to live passed before an ack.
    case timeToLive = "ttl"
    /// Sent 1 + retries times, and another send would be needed.
    case retries
}

public enum DownAckOutcome: Sendable, Equatable {
    case delivered
    case alreadyDelivered
    /// A late ack: the message had failed and stays failed.
    case ignoredFailed(DownDeliveryFailure)
}
