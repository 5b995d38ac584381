import AegisCore

/// An established session: its id, both ChaCha20-Poly1305 keys and the
/// signing identity, all held by the C core (the keys in secure memory),
/// plus the window of ids received for duplicate detection.
///
/// `open` updates that window, so a session is used by one task at a time;
/// the gateway and the SDK give each session a single owner. That is the
/// contract behind `@unchecked Sendable`: a session may move between tasks,
/// not be shared by them.
public final class SessionKeys: @unchecked Sendable {
    let handle: OpaquePointer
    private var owned = true

    init(handle: OpaquePointer) { self.handle = handle }
    deinit { if owned { aegis_session_free(handle) } }

    /// Gives the C session to a transport worker, which frees it at close.
    /// This object must not be used afterwards.
    package func transferOwnership() -> OpaquePointer {
        owned = false
        return handle
    }

    public var sessionID: String {
        let p = aegis_session_id(handle)!
        return p.withMemoryRebound(to: UInt8.self, capacity: Int(AEGIS_SESSION_ID_LEN)) {
            String(decoding: UnsafeBufferPointer(start: $0, count: Int(AEGIS_SESSION_ID_LEN)), as: UTF8.self)
        }
    }

    public var role: Role { aegis_session_role(handle) == AEGIS_ROLE_GATEWAY ? .gateway : .agent }

    public var peerPublicKey: [UInt8] {
        var pk = [UInt8](repeating: 0, count: Int(AEGIS_PUBLIC_KEY_BYTES))
        aegis_session_peer_key(handle, &pk)
        return pk
    }

    public func setSkew(seconds: UInt64) { aegis_session_set_skew(handle, seconds) }
    public func setDuplicateWindowLimit(_ entries: Int) { aegis_session_set_dedupe_limit(handle, entries) }
    public var duplicateWindowEvictions: UInt64 { aegis_session_dedupe_evictions(handle) }

    public enum Role: Sendable { case gateway, agent }

    /// Seals a message in this session's sending direction (§4).
    /// `testNonce` (12 bytes) reproduces vectors; production passes nil.
    public func seal(_ header: MessageHeader, plaintext: [UInt8], testNonce: [UInt8]? = nil) throws(AegisError) -> [UInt8] {
        if let testNonce, testNonce.count != Int(AEGIS_MSG_NONCE_BYTES) { throw .invalidArgument }
        let scratchCap = aegis_seal_scratch_size(plaintext.count)
        let cap = aegis_seal_json_max(plaintext.count)
        var scratch = [UInt8](repeating: 0, count: scratchCap)
        var status = AEGIS_OK
        let out = [UInt8](unsafeUninitializedCapacity: cap) { buf, count in
            var n = 0
            status = header.withCHeader { h in
                buf.withMemoryRebound(to: CChar.self) { jb in
                    aegis_seal(handle, &h, plaintext, plaintext.count, testNonce, &scratch, scratchCap,
                               jb.baseAddress, cap, &n)
                }
            }
            count = status == AEGIS_OK ? n : 0
        }
        try ensureOK(status)
        return out
    }

    /// Opens a received message: syntax, clock, AEAD, signature, plaintext
    /// rules, then duplicate detection (§4). Any error closes with 4004.
    public func open(_ json: [UInt8], now: UInt64) throws(AegisError) -> SecureMessage {
        let cap = aegis_open_buffer_size(json.count)
        let buf = UnsafeMutablePointer<UInt8>.allocate(capacity: cap)
        defer { buf.deallocate() }
        var m = aegis_message()
        let status = json.withUnsafeBufferPointer { j in
            j.withMemoryRebound(to: CChar.self) { jc in
                aegis_open(handle, jc.baseAddress, jc.count, now, buf, cap, &m)
            }
        }
        try ensureOK(status)
        return SecureMessage(m)
    }
}

extension SecureMessage {
    /// A message the transport opened; its plaintext must still be alive.
    package init(opened m: aegis_message) { self.init(m) }

    /// Copies a C message out; its plaintext buffer must still be alive.
    init(_ m: aegis_message) {
        func text<T>(_ tuple: T, _ len: Int) -> String {
            withUnsafeBytes(of: tuple) { String(decoding: $0.prefix(len), as: UTF8.self) }
        }
        var pt: [UInt8] = [], ct: [UInt8] = []
        if let p = m.plaintext, m.plaintext_len > 0 {
            pt = Array(UnsafeBufferPointer(start: p, count: m.plaintext_len))
        }
        if let p = m.ciphertext, m.ciphertext_len > 0 {
            ct = Array(UnsafeBufferPointer(start: p, count: m.ciphertext_len))
        }
        self.init(
            header: MessageHeader(
                id: text(m.id, m.id_len), type: MessageType(m.type) ?? .event,
                channel: text(m.channel, m.channel_len),
                ref: m.ref_len == 0 ? nil : text(m.ref, m.ref_len), timestamp: m.timestamp),
            plaintext: pt, isDuplicate: m.duplicate, ciphertext: ct,
            nonce: withUnsafeBytes(of: m.nonce) { Array($0) },
            signature: withUnsafeBytes(of: m.signature) { Array($0) })
    }
}

/// Batches of opens, one C call for all (see aegis_core.h for what
/// batching buys). The transport calls the C batch directly; this is the
/// same path for Swift callers and tests.
public enum MessageBatch {
    public static func open(_ items: [(session: SessionKeys, json: [UInt8])], now: UInt64) -> [Result<SecureMessage, AegisError>] {
        // Inputs and outputs must stay put for the one call: copy them into
        // manually managed memory rather than nesting a closure per item.
        var allocations: [UnsafeMutableRawPointer] = []
        defer { allocations.forEach { $0.deallocate() } }
        var jobs = items.map { item -> aegis_open_job in
            let json = UnsafeMutableRawPointer.allocate(byteCount: max(item.json.count, 1), alignment: 1)
            item.json.withUnsafeBytes { src in
                if let base = src.baseAddress { json.copyMemory(from: base, byteCount: src.count) }
            }
            let cap = aegis_open_buffer_size(item.json.count)
            let buf = UnsafeMutableRawPointer.allocate(byteCount: cap, alignment: 16)
            allocations += [json, buf]
            return aegis_open_job(
                session: item.session.handle, json: json.assumingMemoryBound(to: CChar.self),
                json_len: item.json.count, buf: buf.assumingMemoryBound(to: UInt8.self), buf_cap: cap,
                msg: aegis_message(), status: AEGIS_OK)
        }
        aegis_open_batch(&jobs, jobs.count, now)
        return withExtendedLifetime(items) {
            jobs.map { job -> Result<SecureMessage, AegisError> in
                job.status == AEGIS_OK ? .success(SecureMessage(job.msg)) : .failure(AegisError(job.status))
            }
        }
    }
}

extension SessionKeys {
    /// Marks an id as already received (e.g. restored from the store).
    public func rememberReceivedID(_ id: String, expiresAt: UInt64, now: UInt64) throws(AegisError) {
        let u = Array(id.utf8)
        let st = u.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { aegis_session_remember_id(handle, $0.baseAddress, $0.count, expiresAt, now) }
        }
        try ensureOK(st)
    }
}
