import AegisCore

/// Strict base64 of PROTOCOL.md §1: `b64` (standard, padded) and `b64u`
/// (URL alphabet, unpadded). Decoding refuses whitespace, wrong padding and
/// non-zero trailing bits.
public enum Base64 {
    public static func encode(_ bytes: [UInt8]) -> String {
        let n = aegis_b64_encoded_len(bytes.count)
        return String(unsafeUninitializedCapacity: n) { out in
            bytes.withUnsafeBufferPointer { aegis_b64_encode($0.baseAddress, $0.count, out.baseAddress) }
            return n
        }
    }

    public static func encodeURL(_ bytes: [UInt8]) -> String {
        let n = aegis_b64u_encoded_len(bytes.count)
        return String(unsafeUninitializedCapacity: n) { out in
            bytes.withUnsafeBufferPointer { aegis_b64u_encode($0.baseAddress, $0.count, out.baseAddress) }
            return n
        }
    }

    public static func decode(_ text: String) throws(AegisError) -> [UInt8] {
        try decode(Array(text.utf8), url: false)
    }

    public static func decodeURL(_ text: String) throws(AegisError) -> [UInt8] {
        try decode(Array(text.utf8), url: true)
    }

    static func decode(_ text: [UInt8], url: Bool) throws(AegisError) -> [UInt8] {
        let cap = aegis_b64_decoded_max(text.count)
        var status = AEGIS_OK
        let out = [UInt8](unsafeUninitializedCapacity: max(cap, 1)) { buf, count in
            var n = 0
            status = text.withUnsafeBufferPointer { t in
                t.withMemoryRebound(to: CChar.self) { t in
                    url ? aegis_b64u_decode(t.baseAddress, t.count, buf.baseAddress, cap, &n)
                        : aegis_b64_decode(t.baseAddress, t.count, buf.baseAddress, cap, &n)
                }
            }
            count = status == AEGIS_OK ? n : 0
        }
        try ensureOK(status)
        return out
    }
}

/// Field syntax of §1.
public enum FieldSyntax {
    public static func isValidID(_ s: String) -> Bool { valid(s, aegis_is_valid_id) }
    public static func isValidAgentID(_ s: String) -> Bool { valid(s, aegis_is_valid_agent_id) }
    public static func isValidChannel(_ s: String) -> Bool { valid(s, aegis_is_valid_channel) }

    /// A canonical prime-order Ed25519 point (§2).
    public static func isValidPublicKey(_ key: [UInt8]) -> Bool {
        _ = CoreLibrary.ready
        guard key.count == Int(AEGIS_PUBLIC_KEY_BYTES) else { return false }
        return key.withUnsafeBufferPointer { aegis_is_valid_public_key($0.baseAddress) }
    }

    private static func valid(_ s: String, _ f: (UnsafePointer<CChar>?, Int) -> Bool) -> Bool {
        var s = s
        return s.withUTF8 { u in u.withMemoryRebound(to: CChar.self) { f($0.baseAddress, $0.count) } }
    }
}

/// SHA-256 of public or hashed-for-storage data (enrollment tokens).
public enum SHA256 {
    public static func hash(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(AEGIS_SHA256_BYTES))
        aegis_sha256(bytes, bytes.count, &out)
        return out
    }
}
