import AegisAdminClient
import ArgumentParser
import Foundation

extension MessageType: ExpressibleByArgument {}
extension MessageDirection: ExpressibleByArgument {}

/// Exactly one way to give a message's payload.
struct PayloadOptions: ParsableArguments {
    @Option(help: "The payload as JSON text ('-': read it from stdin).")
    var payload: String?

    @Option(name: .customLong("payload-base64"), help: "The payload as base64 of raw bytes.")
    var payloadBase64: String?

    @Option(help: "A file whose raw bytes are the payload, sent as payload_base64 ('-': stdin).")
    var payloadFile: String?

    func validate() throws {
        let given = [payload, payloadBase64, payloadFile].compactMap { $0 }.count
        guard given == 1 else {
            throw ValidationError("give exactly one of --payload, --payload-base64 and --payload-file")
        }
    }

    func load() throws -> MessagePayload {
        if let payload {
            guard payload == "-" else { return .json(payload) }
            guard let text = String(data: FileHandle.standardInput.readDataToEndOfFile(), encoding: .utf8) else {
                throw ValidationError("the payload on stdin is not UTF-8 text")
            }
            return .json(text)
        }
        if let payloadBase64 {
            guard let bytes = Data(base64Encoded: payloadBase64) else {
                throw ValidationError("--payload-base64 is not base64")
            }
            return .bytes(Array(bytes))
        }
        guard let payloadFile, payloadFile != "-" else {
            return .bytes(Array(FileHandle.standardInput.readDataToEndOfFile()))
        }
        do {
            return .bytes(Array(try Data(contentsOf: URL(fileURLWithPath: payloadFile))))
        } catch {
            throw ValidationError("cannot read --payload-file \(payloadFile): \(error.localizedDescription)")
        }
    }
}

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Queue an event or a request for one agent; with --wait, wait for its response.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The agent's id.")
    var agentID: String

    @Option(help: "The channel (aegis.* is reserved).")
    var channel: String

    @Option(help: "event or request (default: event; request with --wait).")
    var type: MessageType?

    @OptionGroup var payload: PayloadOptions

    @Option(help: "Time to live in seconds (default: the gateway's down_ttl).")
    var ttl: Int?

    @Option(help: "Wait up to this many seconds (0-60) for the agent's response.")
    var wait: Double?

    @Option(help: "Makes retries safe: the same key returns the first call's message.")
    var idempotencyKey: String?

    func validate() throws {
        if let wait {
            guard (0...60).contains(wait) else { throw ValidationError("--wait must be 0 to 60 seconds") }
            guard type != .event else { throw ValidationError("--wait is for requests, not events") }
        }
    }

    func run() async throws {
        let payload = try payload.load()
        try await global.withClient { client in
            let request = try AdminRequest.send(
                to: agentID, channel: channel, type: type ?? (wait == nil ? .event : .request), payload: payload,
                ttl: ttl.map { .seconds($0) }, idempotencyKey: idempotencyKey, wait: wait.map { .seconds($0) })
            let (outcome, body) = try await client.performReturningBody(request)
            if global.json { return Output.raw(body) }
            switch outcome {
            case .accepted(let accepted):
                Output.fields([("id", accepted.id), ("status", accepted.status.rawValue)])
                if let wait { Output.note("no response within \(wait) s") }
            case .responded(let responded):
                Output.fields([("id", responded.id), ("status", "responded")] + responseFields(responded.response))
            }
        }
    }
}

struct Broadcast: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One message to every active agent, or to the listed ones.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "The channel (aegis.* is reserved).")
    var channel: String

    @Option(help: "event or request.")
    var type: MessageType = .event

    @OptionGroup var payload: PayloadOptions

    @Option(help: "Time to live in seconds (default: the gateway's down_ttl).")
    var ttl: Int?

    @Flag(help: "Only agents with a live session; nothing is queued for the others.")
    var connectedOnly = false

    @Option(name: .customLong("agent"), help: "Only this agent (repeatable).")
    var agentIDs: [String] = []

    func run() async throws {
        let payload = try payload.load()
        try await global.withClient { client in
            let request = try AdminRequest.broadcast(
                channel: channel, type: type, payload: payload, ttl: ttl.map { .seconds($0) },
                connectedOnly: connectedOnly, agentIDs: agentIDs.isEmpty ? nil : agentIDs)
            let (accepted, body) = try await client.performReturningBody(request)
            if global.json { return Output.raw(body) }
            Output.fields([
                ("id", accepted.id), ("recipients", String(accepted.recipients)), ("sent", String(accepted.sent)),
                ("skipped", accepted.skipped.isEmpty ? "-" : accepted.skipped.joined(separator: ", ")),
            ])
        }
    }
}

struct Messages: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What agents sent and what was sent to them.",
        subcommands: [List.self, Show.self, Tail.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Messages in arrival order (default: what agents sent, direction up).")

        @OptionGroup var global: GlobalOptions

        @Option(name: .customLong("agent"), help: "Only this agent's messages.")
        var agentID: String?

        @Option(help: "Only this channel.")
        var channel: String?

        @Option(help: "up (from agents, the default) or down (to agents).")
        var direction: MessageDirection?

        @Option(help: "Start after this cursor (a next_cursor: a sequence number).")
        var after: String?

        @Option(help: "Messages per page, 1-1000 (the gateway's default: 100).")
        var limit: Int?

        func run() async throws {
            try await global.withClient { client in
                let (page, body) = try await client.performReturningBody(
                    .messages(agentID: agentID, channel: channel, direction: direction, after: after, limit: limit))
                if global.json { return Output.raw(body) }
                Output.table(
                    ["SEQ", "ID", "AGENT_ID", "DIRECTION", "TYPE", "CHANNEL", "STATUS", "RECEIVED_AT", "PAYLOAD"],
                    page.messages.map {
                        [String($0.seq), $0.id, $0.agentID, $0.direction.rawValue, $0.type, $0.channel,
                         $0.status.rawValue, $0.receivedAt, truncated(payloadText($0.payload, base64: $0.payloadBase64))]
                    })
                if let next = page.nextCursor { Output.note("more messages: --after \(next)") }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The state of a down message, or of a broadcast per recipient.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The message's id (from send or broadcast).")
        var messageID: String

        func run() async throws {
            try await global.withClient { client in
                let (state, body) = try await client.performReturningBody(.message(id: messageID))
                if global.json { return Output.raw(body) }
                switch state {
                case .message(let message):
                    Output.fields(
                        [
                            ("id", message.id), ("kind", "message"), ("agent_id", message.agentID),
                            ("type", message.type), ("channel", message.channel), ("status", message.status.rawValue),
                            ("send_count", String(message.sendCount)), ("created_at", message.createdAt),
                            ("expires_at", cell(message.expiresAt)), ("last_attempt_at", cell(message.lastAttemptAt)),
                            ("delivered_at", cell(message.deliveredAt)),
                        ] + responseFields(message.response))
                case .broadcast(let broadcast):
                    let counts = broadcast.counts
                    Output.fields([
                        ("id", broadcast.id), ("kind", "broadcast"), ("type", broadcast.type),
                        ("channel", broadcast.channel), ("created_at", broadcast.createdAt),
                        ("counts", "queued \(counts.queued), sent \(counts.sent), delivered \(counts.delivered), failed \(counts.failed)"),
                    ])
                    print()
                    Output.table(
                        ["AGENT_ID", "STATUS", "SEND_COUNT", "DELIVERED_AT"],
                        broadcast.recipients.map {
                            [$0.agentID, $0.status.rawValue, String($0.sendCount), cell($0.deliveredAt)]
                        })
                }
            }
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Follow what agents send, as it is stored, until interrupted.",
            discussion: """
                A dropped stream is resumed after the last message seen (Last-Event-ID), after a short \
                backoff. With --json, each message is one JSON document on its own line.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: "Only this channel.")
        var channel: String?

        @Option(name: .customLong("agent"), help: "Only this agent's messages.")
        var agentID: String?

        @Option(help: "Replay what was stored after this sequence number first (0: everything).")
        var from: UInt64?

        func run() async throws {
            try await global.withClient { client in
                var lastEventID = from.map(String.init)
                var connected = false
                var backoff = Self.firstBackoff
                while true {
                    do {
                        let events = try await client.stream(channel: channel, agentID: agentID, lastEventID: lastEventID)
                        connected = true
                        backoff = Self.firstBackoff
                        for try await event in events {
                            if let id = event.id { lastEventID = id }
                            guard event.event == "message" else { continue }
                            try printEvent(event)
                        }
                        Output.note("the gateway ended the stream; reconnecting")
                    } catch let error as AdminClientError {
                        // Only what a gateway restart or a network blip looks like is retried,
                        // and only once the stream has worked: a wrong URL or token fails at once.
                        guard connected, error.isTransient else { throw error }
                        Output.note("\(error); reconnecting in \(backoff)")
                    }
                    try await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, Self.lastBackoff)
                }
            }
        }

        private static let firstBackoff = Duration.milliseconds(500)
        private static let lastBackoff = Duration.seconds(5)

        private func printEvent(_ event: ServerSentEvent) throws {
            if global.json {
                // One document per line, even if the gateway's data spans lines.
                print(event.data.split(whereSeparator: \.isNewline).joined(separator: " "))
            } else {
                let message = try event.message()
                print(
                    [String(message.seq), message.receivedAt, message.agentID, message.channel, message.type,
                     payloadText(message.payload, base64: message.payloadBase64)].joined(separator: "  "))
            }
            Output.flush()
        }
    }
}

extension AdminClientError {
    /// Worth retrying: no connection, or the gateway failing for now.
    var isTransient: Bool {
        switch self {
        case .unreachable: true
        case .api(let status, _, _, _): status >= 500
        case .badResponse, .invalidArgument: false
        }
    }
}
