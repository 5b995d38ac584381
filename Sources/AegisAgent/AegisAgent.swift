import AegisProtocol
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// An agent: one WebSocket session with a gateway at a time, re-established
/// with backoff whenever it drops, and at-least-once delivery both ways.
///
/// ```swift
/// let agent = try AegisAgent(configuration)
/// try await agent.start()
/// let id = try await agent.send(event: Array("hello".utf8), channel: "telemetry")
/// try await agent.waitForAck(id)
/// let answer = try await agent.request(payload, channel: "inventory", timeout: .seconds(10))
/// for await incoming in agent.incoming {
///     if incoming.kind == .request { _ = try await incoming.respond(result) }
/// }
/// await agent.stop()
/// ```
///
/// Up messages (`send`, `request`, `respond`) are queued in memory and
/// resent with their ids on every new session until the gateway acks them
/// (it acks only what it stored durably). Down messages are acked once
/// handed to `incoming`, and an id processed before is acked again but not
/// delivered again for `processedIDLifetime` (§5). Nothing is persisted:
/// what is queued when the process dies is lost, and a down message
/// processed just before a crash may be processed again after it.
public final class AegisAgent: Sendable {
    public let configuration: AgentConfiguration
    /// Requests and events from the gateway, each once.
    public let incoming: AsyncStream<IncomingMessage>
    /// Connection changes, acks, pins and drops, for logs and monitoring.
    /// Holds the newest 4096 when nobody reads it.
    public let events: AsyncStream<AgentEvent>
    let runtime: AgentRuntime

    public init(_ configuration: AgentConfiguration, logger: Logger = Logger(label: "aegis.agent")) throws(AgentError) {
        try configuration.validate()
        if case .caFile(let path) = configuration.tls, access(path, R_OK) != 0 {
            throw .invalidConfiguration("CA file \(path): cannot read it (\(String(cString: strerror(errno))))")
        }
        var pinned: [UInt8]?
        var pinFile: String?
        switch configuration.serverKey {
        case .pinned(let key):
            pinned = key
        case .trustOnFirstUse(let file):
            if let file {
                pinned = try AgentKeyFile.readServerKey(path: file)
                if pinned == nil { pinFile = file }
            }
        }
        var logger = logger
        logger[metadataKey: "agent_id"] = "\(configuration.agentID)"
        let (incoming, incomingContinuation) = AsyncStream<IncomingMessage>.makeStream(bufferingPolicy: .unbounded)
        let (events, eventsContinuation) = AsyncStream<AgentEvent>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        self.configuration = configuration
        self.incoming = incoming
        self.events = events
        self.runtime = AgentRuntime(configuration: configuration, pinnedServerKey: pinned, pinFile: pinFile,
                                    logger: logger, incoming: incomingContinuation, events: eventsContinuation)
    }

    /// An agent dropped without `stop()` stops too (its thread would
    /// otherwise keep the session up with nobody listening).
    deinit { _ = runtime.post(.stop) }

    /// The largest payload one message can carry.
    public var maxPayloadBytes: Int { runtime.maxPayloadBytes }

    /// Starts connecting. With `waitForSession`, returns once the first
    /// session is established, or throws the error that stopped the agent
    /// (a server key mismatch, a refusal it was told to stop on, attempts
    /// used up …). Messages sent before that are queued.
    public func start(waitForSession: Bool = true) async throws(AgentError) {
        try runtime.launch()
        if waitForSession { try await waitUntilConnected() }
    }

    /// Returns when a session is established (at once if one is).
    public func waitUntilConnected() async throws(AgentError) {
        let result = await withCheckedContinuation { (c: SessionWaiter) in
            if !runtime.post(.waitForSession(c)) {
                c.resume(returning: .failure((runtime.finishedError ?? nil) ?? .notRunning))
            }
        }
        try result.get()
    }

    /// Queues an event; returns its id once it is queued (not yet acked).
    @discardableResult
    public func send(event payload: [UInt8], channel: String) async throws(AgentError) -> String {
        try await runtime.enqueue(type: .event, channel: channel, ref: nil, payload: payload, waitForAck: false)
    }

    /// Queues an event and returns once the gateway acked it (stored it).
    @discardableResult
    public func sendAndWaitForAck(event payload: [UInt8], channel: String) async throws(AgentError) -> String {
        try await runtime.enqueue(type: .event, channel: channel, ref: nil, payload: payload, waitForAck: true)
    }

    /// Returns once this up message is acked (at once if it was already).
    public func waitForAck(_ id: String) async throws(AgentError) {
        let result = await withCheckedContinuation { (c: AckWaiter) in
            if !runtime.postEvenBeforeStart(.waitForAck(id, c)) { c.resume(returning: .failure(.notRunning)) }
        }
        try result.get()
    }

    /// Sends a request and waits for the gateway's response (§5: it may
    /// come before or after the request's ack, and in a later session).
    public func request(_ payload: [UInt8], channel: String,
                        timeout: Duration = .seconds(30)) async throws(AgentError) -> AgentResponse {
        try await runtime.request(payload, channel: channel, timeout: timeout)
    }

    /// Closes the session (1000) and stops; waiters get `.stopped`, and
    /// `incoming` and `events` finish.
    public func stop() async {
        if !runtime.post(.stop) { runtime.markStoppedBeforeStart() }
        await runtime.waitUntilFinished()
    }

    /// Waits until the agent stops, and returns the error that stopped it
    /// (nil after `stop()`).
    public func waitUntilStopped() async -> AgentError? {
        await runtime.waitUntilFinished()
        return runtime.finishedError ?? nil
    }
}

/// A request or event from the gateway.
public struct IncomingMessage: Sendable {
    public enum Kind: Sendable, Equatable { case request, event }

    public let id: String
    public let kind: Kind
    public let channel: String
    public let payload: [UInt8]
    /// The gateway's timestamp of this transmission (Unix seconds).
    public let timestamp: UInt64
    let runtime: AgentRuntime

    init(_ m: ReceivedMessage, runtime: AgentRuntime) {
        id = m.id
        kind = m.type == .request ? .request : .event
        channel = m.channel
        payload = m.payload
        timestamp = m.timestamp
        self.runtime = runtime
    }

    /// Answers a request (on its channel, `ref` = its id); the response is
    /// queued and resent like any up message. Returns the response's id.
    @discardableResult
    public func respond(_ payload: [UInt8]) async throws(AgentError) -> String {
        guard kind == .request else { throw .invalidArgument("only a request takes a response") }
        return try await runtime.enqueue(type: .response, channel: channel, ref: id, payload: payload, waitForAck: false)
    }
}

/// The gateway's response to a request of the agent.
public struct AgentResponse: Sendable, Equatable {
    public let id: String
    public let requestID: String
    public let channel: String
    public let payload: [UInt8]
    public let timestamp: UInt64

    init(_ m: ReceivedMessage) {
        id = m.id
        requestID = m.ref ?? ""
        channel = m.channel
        payload = m.payload
        timestamp = m.timestamp
    }
}

extension AgentRuntime {
    func validate(channel: String, payload: [UInt8]) throws(AgentError) {
        guard FieldSyntax.isValidChannel(channel) else {
            throw .invalidArgument("channel \"\(channel)\": want 1–255 of [A-Za-z0-9._/:-]")
        }
        guard !channel.hasPrefix("aegis.") else { throw .invalidArgument("channel \(channel) is reserved (aegis.*)") }
        guard payload.count <= maxPayloadBytes else {
            throw .payloadTooLarge(bytes: payload.count, limit: maxPayloadBytes)
        }
    }

    func enqueue(type: MessageType, channel: String, ref: String?, payload: [UInt8],
                 waitForAck: Bool) async throws(AgentError) -> String {
        try validate(channel: channel, payload: payload)
        let message = OutgoingMessage(id: MessageIDs.make(), type: type, channel: channel, ref: ref, payload: payload)
        try reserve(bytes: payload.count)
        guard waitForAck else {
            guard postEvenBeforeStart(.enqueue(message, responseTimeout: nil, ackWaiter: nil, responseWaiter: nil)) else {
                release(bytes: payload.count)
                throw .notRunning
            }
            return message.id
        }
        let result = await withCheckedContinuation { (c: AckWaiter) in
            if !postEvenBeforeStart(.enqueue(message, responseTimeout: nil, ackWaiter: c, responseWaiter: nil)) {
                release(bytes: payload.count)
                c.resume(returning: .failure(.notRunning))
            }
        }
        try result.get()
        return message.id
    }

    func request(_ payload: [UInt8], channel: String, timeout: Duration) async throws(AgentError) -> AgentResponse {
        try validate(channel: channel, payload: payload)
        if Task.isCancelled { throw .cancelled }
        let message = OutgoingMessage(id: MessageIDs.make(), type: .request, channel: channel, payload: payload)
        try reserve(bytes: payload.count)
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (c: ResponseWaiter) in
                if !postEvenBeforeStart(.enqueue(message, responseTimeout: timeout, ackWaiter: nil, responseWaiter: c)) {
                    release(bytes: payload.count)
                    c.resume(returning: .failure(.notRunning))
                }
            }
        } onCancel: {
            _ = post(.cancelRequest(message.id))
        }
        return try result.get()
    }

    func markStoppedBeforeStart() {
        let left = shared.withLock { s -> [AgentCommand] in
            guard case .created = s.lifecycle else { return [] }
            s.lifecycle = .finished(nil)
            defer { s.commands.removeAll() }
            return s.commands
        }
        for command in left { fail(command, .stopped) }
    }
}
