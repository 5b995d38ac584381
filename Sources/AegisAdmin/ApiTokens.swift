import AegisProtocol
import AegisStore
import Foundation

/// Bearer tokens of the admin API: made here, stored by their SHA-256,
/// looked up with a short cache so that a busy client does not cost a
/// query per request. A revocation through this node takes effect at
/// once; through another node, within `cacheLifetime`.
public actor ApiTokens {
    private let store: Store
    private let cacheLifetime: Duration
    private var cache: [[UInt8]: (ApiTokenRecord, ContinuousClock.Instant)] = [:]
    /// last_used_at is written at most once a minute per token.
    private var lastTouched: [UUID: ContinuousClock.Instant] = [:]

    public init(store: Store, cacheLifetime: Duration = .seconds(5)) {
        self.store = store
        self.cacheLifetime = cacheLifetime
    }

    /// A new token's text: a recognisable prefix and 256 random bits.
    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        return "aegis_" + Base64.encodeURL(bytes)
    }

    public static func hash(_ token: String) -> [UInt8] { SHA256.hash(Array(token.utf8)) }

    /// The live token with this text, or nil.
    public func authenticate(_ token: String) async throws(StoreError) -> ApiTokenRecord? {
        let hash = Self.hash(token)
        let now = ContinuousClock.now
        if let (record, until) = cache[hash], now < until { return record }
        guard let record = try await store.apiToken(hash: hash) else {
            cache[hash] = nil
            return nil
        }
        if cache.count > 10_000 { cache.removeAll() }
        cache[hash] = (record, now + cacheLifetime)
        if lastTouched[record.id].map({ now - $0 > .seconds(60) }) ?? true {
            lastTouched[record.id] = now
            try? await store.touchApiToken(id: record.id, at: Date())
        }
        return record
    }

    /// Creates a token; returns its record and its text (shown once).
    public func create(name: String, scopes: [Scope]) async throws(StoreError) -> (ApiTokenRecord, String) {
        let text = Self.generate()
        return (try await store.createApiToken(name: name, scopes: scopes, hash: Self.hash(text)), text)
    }

    public func revoke(id: UUID) async throws(StoreError) -> Bool {
        let revoked = try await store.revokeApiToken(id: id)
        cache.removeAll()
        return revoked
    }

    /// On the first start (no token at all), an admin token written to
    /// `path` (0600). Returns whether it wrote one. The file is written
    /// before the row, so that a token is never stored that nobody holds.
    public func bootstrap(path: String) async throws -> Bool {
        let text = Self.generate()
        let temporary = path + ".new"
        try writeSecret(text + "\n", to: temporary)
        do {
            guard try await store.bootstrapApiToken(name: "bootstrap", hash: Self.hash(text)) != nil else {
                unlink(temporary)
                return false
            }
        } catch {
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            throw BootstrapError(message: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return true
    }

    private func writeSecret(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw BootstrapError(message: "cannot write \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        fchmod(fd, 0o600)
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count, fsync(fd) == 0 else {
            throw BootstrapError(message: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    public struct BootstrapError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }
}
