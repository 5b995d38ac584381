@testable import AegisAdmin
import Foundation
import Testing

/// The served document and the routes the API registers say the same.
struct OpenAPIDocumentTests {
    let document: [String: Any]

    init() throws {
        document = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.bytes)) as? [String: Any])
    }

    var operations: [String: [String: Any]] {
        var out: [String: [String: Any]] = [:]
        for (path, item) in (document["paths"] as? [String: [String: Any]]) ?? [:] {
            for (method, op) in item {
                if let op = op as? [String: Any] { out["\(method.uppercased()) \(path)"] = op }
            }
        }
        return out
    }

    @Test func everyOperationIsDocumentedAndNothingElse() {
        let routes = Set(Operation.allCases.map { "\($0.method) \($0.path)" })
        #expect(Set(operations.keys) == routes)
    }

    @Test func operationIDsAndScopesMatch() throws {
        for op in Operation.allCases {
            let doc = try #require(operations["\(op.method) \(op.path)"])
            #expect(doc["operationId"] as? String == op.rawValue)
            #expect(doc["x-aegis-scope"] as? String == (op.scope?.rawValue ?? "none"), "\(op)")
            // Unauthenticated operations say so; the others inherit bearer.
            let security = doc["security"] as? [Any]
            #expect((security?.isEmpty ?? false) == (op.scope == nil), "\(op)")
            let responses = try #require(doc["responses"] as? [String: Any])
            if op.scope != nil { #expect(responses["401"] != nil, "\(op) documents 401") }
            if let s = op.scope, s != .read || op != .openapi { #expect(responses["403"] != nil, "\(op) documents 403") }
        }
    }

    @Test func everyReferenceResolves() throws {
        let text = String(decoding: OpenAPIDocument.bytes, as: UTF8.self)
        let components = try #require(document["components"] as? [String: [String: Any]])
        let refs = text.matches(of: /"\$ref": "#\/components\/(\w+)\/(\w+)"/)
        #expect(!refs.isEmpty)
        for r in refs {
            #expect(components[String(r.1)]?[String(r.2)] != nil, "\(r.0)")
        }
    }
}
