#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The rate-limit key of a peer address as the transport reports it
/// (`"ip:port"`, IPv6 without brackets).
///
/// IPv4 addresses are keyed whole. IPv6 addresses are keyed by their /64
/// prefix, since one host commonly holds a whole /64 and could otherwise
/// rotate through addresses to get fresh buckets; IPv4-mapped IPv6
/// addresses are keyed as the IPv4 address. Text that is not an address is
/// keyed as it is.
public enum SourceAddress {
    public static func rateLimitKey(peer: String) -> String {
        let host = hostPart(of: peer)
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return host }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return host }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            return bytes[12..<16].map(String.init).joined(separator: ".")
        }
        let groups = stride(from: 0, to: 8, by: 2).map { i in
            String(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]), radix: 16)
        }
        return groups.joined(separator: ":") + "::/64"
    }

    /// `"1.2.3.4:5678"` → `"1.2.3.4"`, `"::1:5678"` → `"::1"`,
    /// `"[::1]:5678"` → `"::1"`; text without a port is returned unchanged.
    static func hostPart(of peer: String) -> String {
        if peer.hasPrefix("["), let close = peer.firstIndex(of: "]") {
            return String(peer[peer.index(after: peer.startIndex)..<close])
        }
        guard let colon = peer.lastIndex(of: ":") else { return peer }
        let port = peer[peer.index(after: colon)...]
        guard !port.isEmpty, port.allSatisfy(\.isASCIIDigit) else { return peer }
        let host = String(peer[..<colon])
        // "1.2.3.4:80" has one colon; an IPv6 host keeps its colons, so a
        // bare IPv6 address ("::1") must not lose its last group: only strip
        // when what remains is still an address or has no colon at all.
        if !host.contains(":") { return host }
        var v6 = in6_addr()
        return inet_pton(AF_INET6, host, &v6) == 1 ? host : peer
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
