import AegisCore

/// The five message types of §4.
public enum MessageType: String, Sendable, CaseIterable {
    case request, response, event, heartbeat, ack

    var c: aegis_message_type {
        switch self {
        case .request: AEGIS_MSG_REQUEST
        case .response: AEGIS_MSG_RESPONSE
        case .event: AEGIS_MSG_EVENT
        case .heartbeat: AEGIS_MSG_HEARTBEAT
        case .ack: AEGIS_MSG_ACK
        }
    }

    init?(_ t: aegis_message_type) {
        switch t {
        case AEGIS_MSG_REQUEST: self = .request
        case AEGIS_MSG_RESPONSE: self = .response
        case AEGIS_MSG_EVENT: self = .event
        case AEGIS_MSG_HEARTBEAT: self = .heartbeat
        case AEGIS_MSG_ACK: self = .ack
        default: return nil
        }
    }

    /// request, response and event are acknowledged; heartbeats and acks never (§5).
    public var needsAck: Bool { self == .request || self == .response || self == .event }
}

/// What a sender names for a message: everything but the payload.
public struct MessageHeader: Sendable, Equatable {
    public var id: String
    public var type: MessageType
    public var channel: String
    public var ref: String?
    public var timestamp: UInt64

    public init(id: String, type: MessageType, channel: String, ref: String? = nil, timestamp: UInt64) {
        self.id = id
        self.type = type
        self.channel = channel
        self.ref = ref
        self.timestamp = timestamp
    }
}

extension MessageHeader {
    /// The header as the C core takes it; its text points into storage
    /// that lives only for the duration of `body`.
    package func withCHeader<R>(_ body: (inout aegis_message_header) -> R) -> R {
        let id = Array(self.id.utf8), channel = Array(self.channel.utf8)
        let ref = self.ref.map { Array($0.utf8) } ?? []
        return id.withUnsafeBufferPointer { idp in
            channel.withUnsafeBufferPointer { chp in
                ref.withUnsafeBufferPointer { refp in
                    idp.withMemoryRebound(to: CChar.self) { idc in
                        chp.withMemoryRebound(to: CChar.self) { chc in
                            refp.withMemoryRebound(to: CChar.self) { refc in
                                var h = aegis_message_header(
                                    id: idc.baseAddress, id_len: idc.count, type: type.c,
                                    channel: chc.baseAddress, channel_len: chc.count,
                                    ref: self.ref == nil ? nil : refc.baseAddress, ref_len: refc.count,
                                    timestamp: timestamp)
                                return body(&h)
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A message that passed every check of §4 and §5.
public struct SecureMessage: Sendable, Equatable {
    public var header: MessageHeader
    public var plaintext: [UInt8]
    /// The id was received before in this session (§4): ack again, do not process.
    public var isDuplicate: Bool
    /// The envelope's ciphertext (with its tag), nonce and signature exactly
    /// as received: with the header and the session id, everything needed
    /// to verify the message again later.
    public var ciphertext: [UInt8] = []
    public var nonce: [UInt8] = []
    public var signature: [UInt8] = []

    public var id: String { header.id }
    public var type: MessageType { header.type }
    public var channel: String { header.channel }
    public var ref: String? { header.ref }
    public var timestamp: UInt64 { header.timestamp }
}

/// The ack plaintext of §5: `{"ids":[…]}`, 1 to 1024 ids.
public enum AckPlaintext {
    public static let maxIDs = Int(AEGIS_ACK_IDS_MAX)

    public static func build(ids: [String]) throws(AegisError) -> [UInt8] {
        guard !ids.isEmpty, ids.count <= maxIDs else { throw .invalidArgument }
        var cids = [aegis_id]()
        cids.reserveCapacity(ids.count)
        for id in ids {
            let u = Array(id.utf8)
            guard u.count <= Int(AEGIS_ID_MAX) else { throw .invalidArgument }
            var c = aegis_id()
            c.len = UInt8(u.count)
            withUnsafeMutableBytes(of: &c.bytes) { dst in dst.copyBytes(from: u) }
            cids.append(c)
        }
        let cap = aegis_ack_plaintext_max(ids.count)
        var status = AEGIS_OK
        let out = [UInt8](unsafeUninitializedCapacity: cap) { buf, count in
            var n = 0
            status = aegis_ack_plaintext_build(cids, cids.count, buf.baseAddress, cap, &n)
            count = status == AEGIS_OK ? n : 0
        }
        try ensureOK(status)
        return out
    }

    public static func ids(from plaintext: [UInt8]) throws(AegisError) -> [String] {
        var ids = [aegis_id](repeating: aegis_id(), count: maxIDs)
        var n = 0
        try ensureOK(aegis_ack_plaintext_parse(plaintext, plaintext.count, &ids, ids.count, &n))
        return ids[..<n].map { id in
            withUnsafeBytes(of: id.bytes) { String(decoding: $0.prefix(Int(id.len)), as: UTF8.self) }
        }
    }
}
