import AegisServer
import AegisStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// GET /api/v1/stream: up messages as Server-Sent Events. Each event's id
/// is the message's sequence number; a client that reconnects with
/// `Last-Event-ID` gets everything stored after it, from the database, and
/// then the live ones. The stream re-reads the store whenever the gateway
/// rings `upMessagesStored`, so resumed and live events come the same way
/// and in the same order.
extension AdminAPI {
    static let streamPage = 500
    static let keepaliveInterval: Duration = .seconds(15)

    func stream(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let agentID = try agentIDQuery(query)
        let channel = try channelQuery(query)
        let first: Int64
        if let name = HTTPField.Name("Last-Event-ID"), let last = request.headers[name] {
            first = try sequenceNumber(last, field: "Last-Event-ID")
        } else {
            first = try await storeCall { try await self.store.lastSeq(direction: .up) }
        }
        let wakes = WakeUps(signal: gateway.upMessagesStored, keepalive: Self.keepaliveInterval)
        let messages = self.store
        var headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache"]
        // nginx would otherwise hold events back in its buffer.
        if let name = HTTPField.Name("X-Accel-Buffering") { headers[name] = "no" }
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            defer { wakes.stop() }
            var start = first
            try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
            var iterator = wakes.stream.makeAsyncIterator()
            while !Task.isCancelled {
                let rows: [MessageRecord]
                do {
                    rows = try await messages.listMessages(MessageQuery(agentID: agentID, channel: channel, direction: .up,
                                                                     afterSeq: start, limit: Self.streamPage))
                } catch {
                    // The database is away: keep the stream, try again.
                    try await writer.write(ByteBuffer(string: ": database unavailable\n\n"))
                    try await Task.sleep(for: .seconds(1))
                    continue
                }
                if !rows.isEmpty {
                    var text = ""
                    for m in rows {
                        var w = JSONWriter()
                        w.object { $0.message(m) }
                        text += "id: \(m.seq)\nevent: message\ndata: \(w.text)\n\n"
                        start = m.seq
                    }
                    try await writer.write(ByteBuffer(string: text))
                }
                if rows.count == Self.streamPage { continue }
                guard let wake = await iterator.next() else { break }
                if wake == .keepalive { try await writer.write(ByteBuffer(string: ": keepalive\n\n")) }
            }
            try await writer.finish(nil)
        })
    }
}

/// The stream's reasons to look again: a ring of the gateway's signal, or
/// the keepalive timer. Coalesced: a busy stream sees one wake-up.
final class WakeUps: Sendable {
    enum Reason: Sendable { case stored, keepalive }

    let stream: AsyncStream<Reason>
    private let tasks: [Task<Void, Never>]

    init(signal: MessageSignal, keepalive: Duration) {
        let (stream, continuation) = AsyncStream<Reason>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.stream = stream
        let rings = signal.listen()
        tasks = [
            Task {
                for await _ in rings { continuation.yield(.stored) }
            },
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: keepalive)
                    continuation.yield(.keepalive)
                }
            },
        ]
    }

    func stop() {
        for t in tasks { t.cancel() }
    }
}
