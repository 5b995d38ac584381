@testable import AegisAdmin
import AegisProtocol
import AegisStore
import Foundation
import Testing

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// The field (or, without one, the code) of the APIError `body` throws.
private func field(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch {
        guard let e = error as? APIError else { return "not an APIError: \(error)" }
        return e.field ?? e.code
    }
}

struct RequestBodyTests {
    @Test func aJSONPayloadReachesTheAgentCompactedOnly() throws {
        let text = #"{"type":"event","channel":"ops/cmd","payload": {"b" : [1, 2.50, "\u00e9 \" x"],\#n\#t"a": 1e3 } }"#
        let body = try SendBody(bytes(text))
        // Whitespace outside strings goes; numbers, escapes and order stay.
        #expect(body.content.payload == bytes(#"{"b":[1,2.50,"\u00e9 \" x"],"a":1e3}"#))
        #expect(body.content.type == .event)
        #expect(body.content.channel == "ops/cmd")
        #expect(body.wait == nil)
    }

    @Test func scalarAndNullPayloads() throws {
        #expect(try SendBody(bytes(#"{"type":"event","channel":"c","payload":null}"#)).content.payload == bytes("null"))
        #expect(try SendBody(bytes(#"{"payload":"x\"y","type":"event","channel":"c"}"#)).content.payload == bytes(#""x\"y""#))
        #expect(try SendBody(bytes(#"{"type":"event","channel":"c","payload":-12}"#)).content.payload == bytes("-12"))
    }

    @Test func base64Payloads() throws {
        let body = try SendBody(bytes(#"{"type":"request","channel":"c","payload_base64":"AAEC/w==","wait_seconds":2.5}"#))
        #expect(body.content.payload == [0, 1, 2, 255])
        #expect(body.wait == .milliseconds(2500))
        #expect(try SendBody(bytes(#"{"type":"event","channel":"c","payload_base64":""}"#)).content.payload == [])
        #expect(field { _ = try SendBody(bytes(#"{"type":"event","channel":"c","payload_base64":"AAE"}"#)) } == "payload_base64")
        #expect(field { _ = try SendBody(bytes(#"{"type":"event","channel":"c","payload_base64":7}"#)) } == "payload_base64")
    }

    @Test func eachBadFieldIsNamed() {
        let cases: [(String, String)] = [
            (#"{"channel":"c","payload":1}"#, "type"),
            (#"{"type":"ack","channel":"c","payload":1}"#, "type"),
            (#"{"type":"response","channel":"c","payload":1}"#, "type"),
            (#"{"type":1,"channel":"c","payload":1}"#, "type"),
            (#"{"type":"event","payload":1}"#, "channel"),
            (#"{"type":"event","channel":"","payload":1}"#, "channel"),
            (#"{"type":"event","channel":"a b","payload":1}"#, "channel"),
            (#"{"type":"event","channel":"aegis.ack","payload":1}"#, "channel"),
            (#"{"type":"event","channel":"c"}"#, "payload"),
            (#"{"type":"event","channel":"c","payload":1,"payload_base64":"AA=="}"#, "payload"),
            (#"{"type":"event","channel":"c","payload":1,"ttl_seconds":0}"#, "ttl_seconds"),
            (#"{"type":"event","channel":"c","payload":1,"ttl_seconds":1.0}"#, "ttl_seconds"),
            (#"{"type":"event","channel":"c","payload":1,"ttl_seconds":"5"}"#, "ttl_seconds"),
            (#"{"type":"event","channel":"c","payload":1,"wait_seconds":1}"#, "wait_seconds"),
            (#"{"type":"request","channel":"c","payload":1,"wait_seconds":61}"#, "wait_seconds"),
            (#"{"type":"request","channel":"c","payload":1,"wait_seconds":-1}"#, "wait_seconds"),
            (#"{"type":"request","channel":"c","payload":1,"wait_seconds":true}"#, "wait_seconds"),
        ]
        for (text, name) in cases {
            #expect(field { _ = try SendBody(bytes(text)) } == name, "\(text)")
        }
    }

    @Test func malformedBodiesAreBadRequests() {
        for text in ["", "[]", "1", "{", #"{"type":"event","type":"event"}"#, "{\"a\":\"\u{1}\"}", "{} {}"] {
            var code: String?
            do { _ = try SendBody(bytes(text)) } catch { code = error.code }
            #expect(code == "bad_request" || (text.isEmpty && code == "invalid_field"), "\(text.debugDescription)")
        }
        // Not UTF-8.
        var code: String?
        do { _ = try SendBody([0x7B, 0xFF, 0x7D]) } catch { code = error.code }
        #expect(code == "bad_request")
    }

    @Test func payloadSizeIsBounded() throws {
        let ok = #"{"type":"event","channel":"c","payload":""# + String(repeating: "a", count: maxDownPayload - 2) + #""}"#
        #expect(try SendBody(bytes(ok)).content.payload.count == maxDownPayload)
        let tooBig = #"{"type":"event","channel":"c","payload":""# + String(repeating: "a", count: maxDownPayload - 1) + #""}"#
        #expect(field { _ = try SendBody(bytes(tooBig)) } == "payload")
    }

    @Test func broadcastBodies() throws {
        let b = try BroadcastBody(bytes(#"{"type":"event","channel":"c","payload":{},"connected_only":true,"agent_ids":["a-1","b@x"]}"#))
        #expect(b.connectedOnly)
        #expect(b.agentIDs == ["a-1", "b@x"])
        #expect(try BroadcastBody(bytes(#"{"type":"event","channel":"c","payload":{}}"#)).agentIDs == nil)
        #expect(field { _ = try BroadcastBody(bytes(#"{"type":"event","channel":"c","payload":1,"agent_ids":[]}"#)) } == "agent_ids")
        #expect(field { _ = try BroadcastBody(bytes(#"{"type":"event","channel":"c","payload":1,"agent_ids":["ok","no way"]}"#)) } == "agent_ids[1]")
        #expect(field { _ = try BroadcastBody(bytes(#"{"type":"event","channel":"c","payload":1,"connected_only":1}"#)) } == "connected_only")
    }

    @Test func tokenBodies() throws {
        let t = try ApiTokenBody(bytes(#"{"name":"ci","scopes":["send","read"]}"#))
        #expect(t.scopes == [.send, .read])
        #expect(field { _ = try ApiTokenBody(bytes(#"{"scopes":["read"]}"#)) } == "name")
        #expect(field { _ = try ApiTokenBody(bytes(#"{"name":"x","scopes":[]}"#)) } == "scopes")
        #expect(field { _ = try ApiTokenBody(bytes(#"{"name":"x","scopes":["root"]}"#)) } == "scopes[0]")
        #expect(field { _ = try ApiTokenBody(bytes(#"{"name":"x","scopes":["read","read"]}"#)) } == "scopes")
        #expect(field { _ = try ApiTokenBody(bytes(#"{"name":"a\nb","scopes":["read"]}"#)) } == "name")

        let e = try EnrollmentTokenBody([])
        #expect(e.uses == 1 && e.timeToLive == .seconds(86_400))
        #expect(try EnrollmentTokenBody(bytes(#"{"uses":5,"ttl_seconds":3600}"#)).uses == 5)
        #expect(field { _ = try EnrollmentTokenBody(bytes(#"{"uses":0}"#)) } == "uses")
    }

    @Test func scopesNest() {
        #expect(Scope.admin > .send && Scope.send > .read)
        #expect(ApiTokenRecord(id: UUID(), name: "t", scopes: [.read, .send], createdAt: Date()).power == .send)
    }
}

struct JSONWriterTests {
    @Test func stringsRoundTripThroughAParser() throws {
        let samples = ["", "plain", "quote \" backslash \\ slash /", "\n\r\t\u{0}\u{1f}", "é 日本 🚀", "\u{7f}"]
        for s in samples {
            var w = JSONWriter()
            w.object { $0.field("s", s) }
            let parsed = try JSONSerialization.jsonObject(with: Data(w.bytes)) as? [String: String]
            #expect(parsed?["s"] == s)
        }
    }

    @Test func payloadsAreEmbeddedOrEncoded() throws {
        var w = JSONWriter()
        w.object { o in
            o.key("a")
            o.writer.object { $0.payload(Array(#"{"x": [1,2]}"#.utf8)) }
            o.key("b")
            o.writer.object { $0.payload([0xFF, 0x00]) }
        }
        #expect(w.text == #"{"a":{"payload":{"x": [1,2]}},"b":{"payload_base64":"/wA="}}"#)
    }
}
