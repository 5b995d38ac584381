import AegisCore

/// The outcome of the request-only checks of the upgrade (§2).
public enum UpgradeDecision: Sendable, Equatable {
    /// Every check passed; the gateway goes on with its rate limit and policy.
    case accepted(agentID: String, publicKey: [UInt8], enrollmentToken: String?, webSocketKey: String)
    /// Answer with this HTTP status and `{"error":{"code":…}}`.
    case refused(status: Int, code: String)
}

public enum UpgradeRequest {
    /// Headers as (name, value) pairs in arrival order; repeats matter.
    public static func check(method: String, path: String, headers: [(String, String)],
                             draining: Bool) -> UpgradeDecision {
        _ = CoreLibrary.ready
        // Keep every name and value alive in one contiguous byte array.
        var storage: [UInt8] = []
        var spans: [(Int, Int, Int, Int)] = []
        for (name, value) in headers {
            let n = storage.count
            storage += Array(name.utf8)
            let v = storage.count
            storage += Array(value.utf8)
            spans.append((n, v - n, v, storage.count - v))
        }
        let m = Array(method.utf8), p = Array(path.utf8)
        var out = aegis_upgrade()
        let status: Int32 = storage.withUnsafeBufferPointer { s in
            s.withMemoryRebound(to: CChar.self) { base in
                let hs = spans.map { span in
                    aegis_http_header(name: base.baseAddress.map { $0 + span.0 }, name_len: span.1,
                                      value: base.baseAddress.map { $0 + span.2 }, value_len: span.3)
                }
                return m.withUnsafeBufferPointer { mp in
                    p.withUnsafeBufferPointer { pp in
                        mp.withMemoryRebound(to: CChar.self) { mc in
                            pp.withMemoryRebound(to: CChar.self) { pc in
                                aegis_upgrade_check(mc.baseAddress, mc.count, pc.baseAddress, pc.count,
                                                    hs, hs.count, draining, &out)
                            }
                        }
                    }
                }
            }
        }
        if status != 0 {
            return .refused(status: Int(status), code: String(cString: out.error_code))
        }
        // The C spans pointed into `storage`; each checked header occurs once,
        // so the first (only) value of each name is the one it validated.
        let id = headerValue(headers, "X-Agent-ID") ?? ""
        let token = out.enrollment_token == nil ? nil : headerValue(headers, "X-Enrollment-Token")
        let key = headerValue(headers, "Sec-WebSocket-Key") ?? ""
        return .accepted(agentID: id, publicKey: withUnsafeBytes(of: out.public_key) { Array($0) },
                         enrollmentToken: token, webSocketKey: key)
    }

    private static func headerValue(_ headers: [(String, String)], _ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}
