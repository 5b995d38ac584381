import AegisCore

/// A long-term Ed25519 identity (an agent's key or the gateway's server
/// key). The secret lives in the core's secure memory and never enters
/// Swift; this object only holds the handle and the public key.
public final class Identity: Sendable {
    // The C object is immutable after creation and its refcount is atomic.
    nonisolated(unsafe) let handle: OpaquePointer
    public let publicKey: [UInt8]

    private init(handle: OpaquePointer) {
        self.handle = handle
        var pk = [UInt8](repeating: 0, count: Int(AEGIS_PUBLIC_KEY_BYTES))
        aegis_identity_public_key(handle, &pk)
        self.publicKey = pk
    }

    deinit { aegis_identity_free(handle) }

    /// For the transport, which hands the identity to the C workers.
    package var cHandle: OpaquePointer { handle }

    /// A fresh random identity.
    public static func generate() throws(AegisError) -> Identity {
        try CoreLibrary.ensure()
        var h: OpaquePointer?
        try ensureOK(aegis_identity_generate(&h))
        guard let h else { throw .outOfMemory }
        return Identity(handle: h)
    }

    /// From a 32-byte seed (test vectors; keys handed over by a secret store).
    public static func fromSeed(_ seed: [UInt8]) throws(AegisError) -> Identity {
        try CoreLibrary.ensure()
        guard seed.count == Int(AEGIS_SEED_BYTES) else { throw .invalidArgument }
        var h: OpaquePointer?
        try ensureOK(aegis_identity_from_seed(seed, &h))
        guard let h else { throw .outOfMemory }
        return Identity(handle: h)
    }

    /// From b64 of the seed, e.g. an environment variable.
    public static func fromSeedBase64(_ text: String) throws(AegisError) -> Identity {
        try CoreLibrary.ensure()
        var h: OpaquePointer?
        var text = text
        let status = text.withUTF8 { u in
            u.withMemoryRebound(to: CChar.self) { aegis_identity_from_seed_b64($0.baseAddress, $0.count, &h) }
        }
        try ensureOK(status)
        guard let h else { throw .outOfMemory }
        return Identity(handle: h)
    }

    /// Loads a key file; refuses one that group or others can read.
    public static func load(path: String) throws(AegisError) -> Identity {
        try CoreLibrary.ensure()
        var h: OpaquePointer?
        try ensureOK(aegis_identity_load(path, &h))
        guard let h else { throw .outOfMemory }
        return Identity(handle: h)
    }

    /// Writes a new key file with mode 0600; refuses to overwrite.
    public func save(path: String) throws(AegisError) {
        try ensureOK(aegis_identity_save(handle, path))
    }

    /// b64 of the public key, as sent in `X-Agent-Public-Key`.
    public var publicKeyBase64: String { Base64.encode(publicKey) }
}
