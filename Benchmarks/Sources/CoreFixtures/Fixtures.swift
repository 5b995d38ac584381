// CoreFixtures — the workloads both benchmark executables time: our C core's
// seal / open / handshake, and the bare libsodium calls they must make.
//
// Everything is allocated and prepared in the initialisers; the run methods
// only call C (no Swift allocation, no copies), so what a benchmark measures
// is the C call. Run methods return the C status (or an OR of them) and the
// caller checks it after timing.
import AegisCore
import BareCrypto

/// The payload sizes of the issue: 64 B, 1 KiB, 16 KiB.
public let payloadSizes: [(name: String, bytes: Int)] = [("64B", 64), ("1KiB", 1024), ("16KiB", 16384)]
/// Messages per batch call.
public let batchSize = 64
/// Distinct messages (distinct ids) cycled through by every workload.
public let ringSize = 256
/// The timestamp of every message and handshake, and the receiver's `now`.
public let benchNow: UInt64 = 1_764_211_200

let agentIDText = "agent-7"
let sessionIDText = "5f0c3d3e-8a4b-4c2e-9d1f-2b3a4c5d6e7f"
let channelText = "agent.telemetry"
let typeText = "event" // AEGIS_MSG_EVENT: no ref, no plaintext rules

@inline(__always)
func check(_ st: aegis_status, _ what: String) {
    precondition(st == AEGIS_OK, "\(what): \(String(cString: aegis_status_name(st)))")
}

/// A C string / byte buffer that lives as long as the process (fixtures are
/// created once per benchmark process).
func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
    let utf8 = Array(s.utf8CString)
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: utf8.count)
    p.initialize(from: utf8, count: utf8.count)
    return p
}

func bytes(_ n: Int) -> UnsafeMutablePointer<UInt8> {
    let p = UnsafeMutableRawPointer.allocate(byteCount: max(n, 1), alignment: 64)
    p.initializeMemory(as: UInt8.self, repeating: 0, count: max(n, 1))
    return p.assumingMemoryBound(to: UInt8.self)
}

func chars(_ n: Int) -> UnsafeMutablePointer<CChar> {
    UnsafeMutableRawPointer(bytes(n)).assumingMemoryBound(to: CChar.self)
}

func struct1<T>(_ value: T) -> UnsafeMutablePointer<T> {
    let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
    p.initialize(to: value)
    return p
}

/// The value of "name":"…" in one of our compact JSON texts (setup only).
func jsonStringField(_ json: UnsafePointer<CChar>, _ len: Int, _ name: String) -> (UnsafePointer<CChar>, Int) {
    let text = UnsafeBufferPointer(start: UnsafeRawPointer(json).assumingMemoryBound(to: UInt8.self), count: len)
    let key = Array("\"\(name)\":\"".utf8)
    var i = 0
    while i + key.count <= len {
        if text[i] == key[0] && Array(text[i..<(i + key.count)]) == key {
            let start = i + key.count
            var end = start
            while text[end] != UInt8(ascii: "\"") { end += 1 }
            return (json + start, end - start)
        }
        i += 1
    }
    preconditionFailure("field \(name) not found")
}

func b64Decode(_ text: (UnsafePointer<CChar>, Int)) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: aegis_b64_decoded_max(text.1))
    var n = 0
    check(aegis_b64_decode(text.0, text.1, &out, out.count, &n), "b64 decode")
    return Array(out[..<n])
}

// MARK: - Handshake

/// A real handshake through the C API, both sides, with every buffer and
/// struct allocated once.
public final class HandshakeWorkload: @unchecked Sendable {
    public let server: OpaquePointer
    public let agent: OpaquePointer
    let serverKey = bytes(32)
    let agentKey = bytes(32)
    let agentID = cString(agentIDText)
    let sessionID = cString(sessionIDText)
    let requestJSON: UnsafeMutablePointer<CChar>
    let requestCap: Int
    let requestLen = struct1(0)
    let okJSON: UnsafeMutablePointer<CChar>
    let okCap: Int
    let okLen = struct1(0)
    let request = struct1(aegis_auth_request())
    let requestParams: UnsafeMutablePointer<aegis_auth_request_params>
    let context: UnsafeMutablePointer<aegis_auth_context>
    let okParams: UnsafeMutablePointer<aegis_auth_ok_params>
    let ok = struct1(aegis_auth_ok())
    let error = struct1(aegis_auth_error())
    let tokenHash = bytes(32)
    let hs = struct1(OpaquePointer?.none)
    let gatewaySession = struct1(OpaquePointer?.none)
    let agentSession = struct1(OpaquePointer?.none)
    // bare
    let bareInputs = struct1(bare_handshake_inputs())
    let okmGateway = bytes(64)
    let okmAgent = bytes(64)

    public init() {
        check(aegis_core_init(), "aegis_core_init")
        precondition(bare_init() == 0, "sodium_init")
        var s: OpaquePointer?, a: OpaquePointer?
        check(aegis_identity_generate(&s), "server identity")
        check(aegis_identity_generate(&a), "agent identity")
        server = s!
        agent = a!
        aegis_identity_public_key(server, serverKey)
        aegis_identity_public_key(agent, agentKey)
        requestCap = aegis_auth_request_json_max()
        requestJSON = chars(requestCap)
        okCap = aegis_auth_ok_json_max()
        okJSON = chars(okCap)

        var rp = aegis_auth_request_params()
        rp.agent_id = UnsafePointer(agentID)
        rp.agent_id_len = agentIDText.utf8.count
        rp.timestamp = benchNow
        rp.with_ephemeral_key = true
        requestParams = struct1(rp)
        var ctx = aegis_auth_context()
        ctx.header_agent_id = UnsafePointer(agentID)
        ctx.header_agent_id_len = agentIDText.utf8.count
        ctx.header_public_key = UnsafePointer(agentKey)
        ctx.now = benchNow
        ctx.require_ephemeral = true
        context = struct1(ctx)
        var op = aegis_auth_ok_params()
        op.session_id = UnsafePointer(sessionID)
        op.timestamp = benchNow
        op.expires_at = benchNow + 86_400
        op.heartbeat_interval = 30
        okParams = struct1(op)

        bare_handshake_prepare(bareInputs, agentIDText.utf8.count)
        precondition(bare() == 0, "bare handshake")
    }

    /// Both sides of one handshake; on success the two sessions are left in
    /// gatewaySession / agentSession for the caller to keep or free.
    @inline(__always)
    func handshake() -> aegis_status {
        var st = aegis_agent_handshake_begin(agent, requestParams, hs, requestJSON, requestCap, requestLen)
        if st != AEGIS_OK { return st }
        defer { aegis_agent_handshake_free(hs.pointee) }
        st = aegis_auth_request_check(requestJSON, requestLen.pointee, context, request)
        if st != AEGIS_OK { return st }
        st = aegis_auth_request_verify(request)
        if st != AEGIS_OK { return st }
        st = aegis_gateway_accept(server, request, okParams, gatewaySession, tokenHash, okJSON, okCap, okLen)
        if st != AEGIS_OK { return st }
        st = aegis_agent_handshake_finish(hs.pointee, okJSON, okLen.pointee, serverKey, ok, error, agentSession)
        if st != AEGIS_OK { aegis_session_free(gatewaySession.pointee) }
        return st
    }

    /// One full handshake, both sides, sessions freed: what we time.
    public func ours() -> aegis_status {
        let st = handshake()
        if st == AEGIS_OK {
            aegis_session_free(gatewaySession.pointee)
            aegis_session_free(agentSession.pointee)
        }
        return st
    }

    /// The same handshake's bare crypto (bare_handshake in bare_crypto.h).
    public func bare() -> Int32 {
        bare_handshake(bareInputs, okmGateway, okmAgent)
    }

    /// A session pair made by a real handshake (gateway, agent).
    public func makeSessions() -> (gateway: OpaquePointer, agent: OpaquePointer) {
        check(handshake(), "handshake")
        return (gatewaySession.pointee!, agentSession.pointee!)
    }
}

// MARK: - Messages

/// The ids "msg-000000" … and one header per id: type event on channel
/// agent.telemetry, no ref, timestamp benchNow.
final class Headers {
    let ids: UnsafeMutablePointer<CChar>
    let idLen = 10
    let channel = cString(channelText)
    let headers: UnsafeMutablePointer<aegis_message_header>

    init() {
        ids = chars(ringSize * idLen)
        headers = .allocate(capacity: ringSize)
        for i in 0..<ringSize {
            let id = Array("msg-\(String(repeating: "0", count: 6 - String(i).count))\(i)".utf8)
            precondition(id.count == idLen)
            for (k, c) in id.enumerated() { ids[i * idLen + k] = CChar(bitPattern: c) }
            var h = aegis_message_header()
            h.id = UnsafePointer(ids + i * idLen)
            h.id_len = idLen
            h.type = AEGIS_MSG_EVENT
            h.channel = UnsafePointer(channel)
            h.channel_len = channelText.utf8.count
            h.timestamp = benchNow
            headers[i] = h
        }
    }
}

/// The signature-input prefix our core builds for header h, via the bare
/// replica (bare_sig_prefix), with its aad position.
struct Prefix {
    var length = 0, aadAt = 0, aadLen = 0
}

func buildPrefix(_ out: UnsafeMutablePointer<UInt8>, _ h: aegis_message_header, sessionID: UnsafePointer<CChar>,
                 dir: String, nonce: UnsafePointer<UInt8>, ctLen: Int) -> Prefix {
    var p = Prefix()
    p.length = bare_sig_prefix(out, sessionID, 36, dir, h.id, h.id_len, typeText, h.channel, h.channel_len,
                               nil, 0, h.timestamp, nonce, ctLen, &p.aadAt, &p.aadLen)
    return p
}

/// Checks that a JSON text sealed by our core is signed over exactly the
/// bytes the bare workload signs: the replica prefix ‖ the ciphertext,
/// verified with the sender's public key. Returns the signed length.
func checkLayout(json: UnsafePointer<CChar>, len: Int, header: aegis_message_header,
                 sessionID: UnsafePointer<CChar>, dir: String, signerKey: UnsafePointer<UInt8>) -> Int {
    let ct = b64Decode(jsonStringField(json, len, "payload"))
    let nonce = b64Decode(jsonStringField(json, len, "nonce"))
    let sig = b64Decode(jsonStringField(json, len, "signature"))
    let buf = bytes(bare_sig_prefix_max() + ct.count)
    defer { buf.deallocate() }
    let p = nonce.withUnsafeBufferPointer {
        buildPrefix(buf, header, sessionID: sessionID, dir: dir, nonce: $0.baseAddress!, ctLen: ct.count)
    }
    (buf + p.length).update(from: ct, count: ct.count)
    precondition(bare_verify(sig, buf, p.length + ct.count, signerKey) == 0,
                 "our signature input differs from the bare layout (\(dir))")
    return p.length + ct.count
}

/// open(): the gateway opens up-messages the agent sealed.
public final class OpenWorkload: @unchecked Sendable {
    public let payloadBytes: Int
    /// Bytes hashed by Ed25519 per message (prefix + ciphertext), ours = bare.
    public let signedBytes: Int
    public let aadBytes: Int
    let gateway: OpaquePointer
    // ours
    let json: UnsafeMutablePointer<UnsafeMutablePointer<CChar>>
    let jsonLen: UnsafeMutablePointer<Int>
    let buf: UnsafeMutablePointer<UInt8>
    let bufCap: Int
    let msg = struct1(aegis_message())
    let jobs: UnsafeMutablePointer<aegis_open_job>
    // bare: the same prefix + ciphertext sizes, our own keys
    let sigInput: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>>
    let prefix: UnsafeMutablePointer<Prefix>
    let nonces = bytes(ringSize * 12)
    let sigs = bytes(ringSize * 64)
    let key = bytes(32)
    let peerKey = bytes(32)
    let bareOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>>
    var next = 0

    public init(payloadBytes: Int, handshake: HandshakeWorkload) {
        self.payloadBytes = payloadBytes
        let (gw, ag) = handshake.makeSessions()
        gateway = gw
        let headers = Headers()
        let pt = bytes(payloadBytes)
        bare_random(pt, payloadBytes)
        let sessionID = aegis_session_id(gw)!

        // ours: ringSize distinct messages sealed by the agent.
        let jsonCap = aegis_seal_json_max(payloadBytes)
        let scratchCap = aegis_seal_scratch_size(payloadBytes)
        let scratch = bytes(scratchCap)
        json = .allocate(capacity: ringSize)
        jsonLen = .allocate(capacity: ringSize)
        for i in 0..<ringSize {
            json[i] = chars(jsonCap)
            var n = 0
            check(aegis_seal(ag, headers.headers + i, pt, payloadBytes, nil, scratch, scratchCap, json[i], jsonCap, &n),
                  "seal")
            jsonLen[i] = n
        }
        signedBytes = checkLayout(json: json[0], len: jsonLen[0], header: headers.headers[0], sessionID: sessionID,
                                  dir: "up", signerKey: handshake.agentKey)
        bufCap = aegis_open_buffer_size(jsonLen[0])
        buf = bytes(bufCap)
        jobs = .allocate(capacity: batchSize)
        for j in 0..<batchSize {
            var job = aegis_open_job()
            job.session = gw
            job.buf = bytes(bufCap)
            job.buf_cap = bufCap
            jobs[j] = job
        }
        let ctLen = payloadBytes + 16
        check(aegis_open(gw, json[0], jsonLen[0], benchNow, buf, bufCap, msg), "open")
        precondition(msg.pointee.plaintext_len == payloadBytes)

        // bare: same headers, prefix layout and sizes; ciphertext made by bare_seal.
        let sk = bytes(64)
        bare_sign_keypair(peerKey, sk)
        bare_random(key, 32)
        bare_random(nonces, ringSize * 12)
        sigInput = .allocate(capacity: ringSize)
        prefix = .allocate(capacity: ringSize)
        for i in 0..<ringSize {
            sigInput[i] = bytes(bare_sig_prefix_max() + ctLen)
            prefix[i] = buildPrefix(sigInput[i], headers.headers[i], sessionID: sessionID, dir: "up",
                                    nonce: nonces + 12 * i, ctLen: ctLen)
            let p = prefix[i]
            bare_seal(sigInput[i], p.length, pt, payloadBytes, sigInput[i] + p.aadAt, p.aadLen, nonces + 12 * i,
                      key, sk, sigs + 64 * i)
        }
        aadBytes = prefix[0].aadLen
        precondition(prefix[0].length + ctLen == signedBytes)
        bareOut = .allocate(capacity: batchSize)
        for j in 0..<batchSize { bareOut[j] = bytes(payloadBytes) }
        precondition(bare() == 0, "bare open")
    }

    /// One aegis_open of the next message.
    public func ours() -> aegis_status {
        let i = next
        next = (i + 1) & (ringSize - 1)
        return aegis_open(gateway, json[i], jsonLen[i], benchNow, buf, bufCap, msg)
    }

    /// One aegis_open_batch of the next batchSize messages; returns the OR of
    /// their statuses' raw values (0 when all passed).
    public func oursBatch() -> UInt32 {
        let start = next
        next = (start + batchSize) & (ringSize - 1)
        for j in 0..<batchSize {
            let i = (start + j) & (ringSize - 1)
            jobs[j].json = UnsafePointer(json[i])
            jobs[j].json_len = jsonLen[i]
        }
        aegis_open_batch(jobs, batchSize, benchNow)
        var bad: UInt32 = 0
        for j in 0..<batchSize { bad |= jobs[j].status.rawValue }
        return bad
    }

    @inline(__always)
    func bareOne(_ i: Int, _ out: UnsafeMutablePointer<UInt8>) -> Int32 {
        let p = prefix[i]
        return bare_open(sigInput[i], p.length + payloadBytes + 16, p.length, payloadBytes + 16,
                         sigInput[i] + p.aadAt, p.aadLen, nonces + 12 * i, key, peerKey, sigs + 64 * i, out)
    }

    /// The bare crypto of one open of the next message.
    public func bare() -> Int32 {
        let i = next
        next = (i + 1) & (ringSize - 1)
        return bareOne(i, bareOut[0])
    }

    /// The bare crypto of batchSize opens (libsodium has no batch API).
    public func bareBatch() -> Int32 {
        let start = next
        next = (start + batchSize) & (ringSize - 1)
        var bad: Int32 = 0
        for j in 0..<batchSize { bad |= bareOne((start + j) & (ringSize - 1), bareOut[j]) }
        return bad
    }
}

/// seal(): the gateway seals down-messages (fresh random nonce each, as in
/// production).
public final class SealWorkload: @unchecked Sendable {
    public let payloadBytes: Int
    public let signedBytes: Int
    public let aadBytes: Int
    let gateway: OpaquePointer
    let headers = Headers()
    let pt: UnsafeMutablePointer<UInt8>
    // ours
    let scratch: UnsafeMutablePointer<UInt8>
    let scratchCap: Int
    let json: UnsafeMutablePointer<CChar>
    let jsonCap: Int
    let jsonLen = struct1(0)
    let jobs: UnsafeMutablePointer<aegis_seal_job>
    // bare
    let sigInput: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>>
    let prefix: UnsafeMutablePointer<Prefix>
    let nonce = bytes(12)
    let key = bytes(32)
    let sk = bytes(64)
    let sig = bytes(64 * batchSize)
    var next = 0

    public init(payloadBytes: Int, handshake: HandshakeWorkload) {
        self.payloadBytes = payloadBytes
        let (gw, _) = handshake.makeSessions()
        gateway = gw
        pt = bytes(payloadBytes)
        bare_random(pt, payloadBytes)
        let sessionID = aegis_session_id(gw)!
        jsonCap = aegis_seal_json_max(payloadBytes)
        scratchCap = aegis_seal_scratch_size(payloadBytes)
        scratch = bytes(scratchCap)
        json = chars(jsonCap)
        check(aegis_seal(gw, headers.headers, pt, payloadBytes, nil, scratch, scratchCap, json, jsonCap, jsonLen),
              "seal")
        signedBytes = checkLayout(json: json, len: jsonLen.pointee, header: headers.headers[0], sessionID: sessionID,
                                  dir: "down", signerKey: handshake.serverKey)
        jobs = .allocate(capacity: batchSize)
        for j in 0..<batchSize {
            var job = aegis_seal_job()
            job.session = gw
            job.header = headers.headers[j]
            job.plaintext = UnsafePointer(pt)
            job.plaintext_len = payloadBytes
            job.scratch = bytes(scratchCap)
            job.scratch_cap = scratchCap
            job.json = chars(jsonCap)
            job.json_cap = jsonCap
            jobs[j] = job
        }

        let ctLen = payloadBytes + 16
        var pk = [UInt8](repeating: 0, count: 32)
        bare_sign_keypair(&pk, sk)
        bare_random(key, 32)
        bare_random(nonce, 12)
        sigInput = .allocate(capacity: batchSize)
        prefix = .allocate(capacity: batchSize)
        for j in 0..<batchSize {
            sigInput[j] = bytes(bare_sig_prefix_max() + ctLen)
            prefix[j] = buildPrefix(sigInput[j], headers.headers[j], sessionID: sessionID, dir: "down", nonce: nonce,
                                    ctLen: ctLen)
        }
        aadBytes = prefix[0].aadLen
        precondition(prefix[0].length + ctLen == signedBytes)
    }

    /// One aegis_seal of the next header.
    public func ours() -> aegis_status {
        let i = next
        next = (i + 1) & (ringSize - 1)
        return aegis_seal(gateway, headers.headers + i, pt, payloadBytes, nil, scratch, scratchCap, json, jsonCap,
                          jsonLen)
    }

    /// One aegis_seal_batch of batchSize messages (the next batchSize ids).
    public func oursBatch() -> UInt32 {
        let start = next
        next = (start + batchSize) & (ringSize - 1)
        for j in 0..<batchSize { jobs[j].header = headers.headers[(start + j) & (ringSize - 1)] }
        aegis_seal_batch(jobs, batchSize)
        var bad: UInt32 = 0
        for j in 0..<batchSize { bad |= jobs[j].status.rawValue }
        return bad
    }

    @inline(__always)
    func bareOne(_ j: Int) {
        let p = prefix[j]
        bare_seal(sigInput[j], p.length, pt, payloadBytes, sigInput[j] + p.aadAt, p.aadLen, nonce, key, sk,
                  sig + 64 * j)
    }

    /// The bare crypto of one seal.
    public func bare() -> Int32 {
        bareOne(0)
        return 0
    }

    /// The bare crypto of batchSize seals.
    public func bareBatch() -> Int32 {
        for j in 0..<batchSize { bareOne(j) }
        return 0
    }
}
