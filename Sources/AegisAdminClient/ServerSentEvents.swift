import AsyncHTTPClient
import Foundation
import NIOCore

/// One event of a `text/event-stream`, as the SSE specification
/// (WHATWG HTML, "Server-sent events") dispatches it.
public struct ServerSentEvent: Sendable, Equatable {
    /// The last event id seen on the stream (an event without `id:` keeps the
    /// previous one); nil when none was set. Resume with it as `lastEventID`.
    public var id: String?
    /// `event:`, default `message`.
    public var event: String
    /// The `data:` lines joined with newlines.
    public var data: String

    public init(id: String?, event: String, data: String) {
        self.id = id
        self.event = event
        self.data = data
    }

    /// The gateway's `message` events carry a `Message` as JSON.
    public func message() throws(AdminClientError) -> Message {
        do {
            return try JSONDecoder().decode(Message.self, from: Data(data.utf8))
        } catch {
            throw .badResponse("stream event \(id ?? "without id"): \(describe(error))")
        }
    }
}

/// Turns the bytes of an event stream, in chunks cut anywhere, into events.
/// Lines end with CRLF, LF or CR; `:` lines are comments (keepalives);
/// `retry:` is ignored, since reconnecting is the caller's business.
struct ServerSentEventParser: Sendable {
    private var line: [UInt8] = []
    /// A CR ended the last line; an LF right after it belongs to that line end.
    private var afterCR = false
    private var atStreamStart = true
    private var eventType = ""
    private var data = ""
    private var lastEventID = ""
    private var ready: [ServerSentEvent] = []

    mutating func append(_ bytes: some Sequence<UInt8>) {
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\n") where afterCR:
                afterCR = false
            case UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                afterCR = byte == UInt8(ascii: "\r")
                finishLine()
            default:
                afterCR = false
                line.append(byte)
            }
        }
    }

    mutating func nextEvent() -> ServerSentEvent? {
        ready.isEmpty ? nil : ready.removeFirst()
    }

    private mutating func finishLine() {
        var text = line[...]
        line.removeAll(keepingCapacity: true)
        if atStreamStart {
            atStreamStart = false
            if text.starts(with: [0xEF, 0xBB, 0xBF]) { text = text.dropFirst(3) }
        }
        guard let first = text.first else { return dispatch() }
        if first == UInt8(ascii: ":") { return }
        let field: String
        let value: String
        if let colon = text.firstIndex(of: UInt8(ascii: ":")) {
            field = String(decoding: text[..<colon], as: UTF8.self)
            let rest = text[text.index(after: colon)...]
            value = String(decoding: rest.first == UInt8(ascii: " ") ? rest.dropFirst() : rest, as: UTF8.self)
        } else {
            field = String(decoding: text, as: UTF8.self)
            value = ""
        }
        switch field {
        case "event": eventType = value
        case "data": data += value + "\n"
        case "id" where !value.contains("\0"): lastEventID = value
        default: break
        }
    }

    private mutating func dispatch() {
        defer {
            data = ""
            eventType = ""
        }
        guard !data.isEmpty else { return }
        data.removeLast()
        ready.append(
            ServerSentEvent(
                id: lastEventID.isEmpty ? nil : lastEventID, event: eventType.isEmpty ? "message" : eventType,
                data: data))
    }
}

/// Pulls the response body only as fast as the consumer takes events, in
/// the consumer's task (the stream is made with `unfolding`).
actor ServerSentEventReader {
    private var body: HTTPClientResponse.Body.AsyncIterator
    private var parser = ServerSentEventParser()

    init(_ body: HTTPClientResponse.Body) {
        self.body = body.makeAsyncIterator()
    }

    /// nil when the gateway ends the stream; an event cut off by the end is dropped, as the spec says.
    func next() async throws(AdminClientError) -> ServerSentEvent? {
        while true {
            if let event = parser.nextEvent() { return event }
            var iterator = body
            let chunk: ByteBuffer?
            do {
                chunk = try await iterator.next(isolation: self)
            } catch {
                throw .unreachable("the event stream broke off: \(error)")
            }
            body = iterator
            guard let chunk else { return nil }
            parser.append(chunk.readableBytesView)
        }
    }
}
