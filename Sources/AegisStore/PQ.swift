import AegisPQ
import Foundation

// The Swift side of aegis_pq.h, for this module only: a connection class
// used by one thread at a time (the store's, or a listener's), results that
// free themselves, and the binary encoding of the parameter types the store
// uses. Everything is sent and received in binary format: no text parsing,
// bytea without hex, timestamps to the microsecond.

/// One failed libpq call, before the store turns it into a `StoreError`.
struct PQFailure: Error, CustomStringConvertible {
    let status: aegis_pq_status
    /// Five characters from the server ("23505"), or "" for client-side failures.
    let sqlstate: String
    let constraint: String
    let message: String

    var description: String {
        sqlstate.isEmpty ? message : "\(message) (SQLSTATE \(sqlstate))"
    }

    var isConnectionLoss: Bool {
        status == AEGIS_PQ_E_CONNECT || status == AEGIS_PQ_E_CONNECTION
    }
}

/// A statement the store prepares once per connection.
struct Statement: Sendable {
    let name: String
    let sql: String
    /// Parameter type OIDs (AEGIS_PQ_OID_*), one per $n.
    let types: [UInt32]
}

/// One parameter, sent in binary format.
enum PQParam {
    case null
    case text(String)
    case bytes([UInt8])
    case int32(Int32)
    case int64(Int64)
    case bool(Bool)
    case timestamp(Date)
    case uuid(UUID)
    /// A one-dimensional array of already encoded elements (nil = NULL).
    /// A one-dimensional array, already in PostgreSQL's binary form.
    case array([UInt8])

    static func optionalText(_ s: String?) -> PQParam { s.map { .text($0) } ?? .null }
    static func optionalBytes(_ b: [UInt8]?) -> PQParam { b.map { .bytes($0) } ?? .null }
    static func optionalTimestamp(_ d: Date?) -> PQParam { d.map { .timestamp($0) } ?? .null }
    static func optionalUUID(_ u: UUID?) -> PQParam { u.map { .uuid($0) } ?? .null }

    // Arrays are encoded straight into one buffer: an up batch sends
    // eleven of them with one element per message, so a temporary per
    // element would cost a dozen allocations per message.
    static func textArray(_ xs: [String?]) -> PQParam {
        .array(Binary.array(element: UInt32(AEGIS_PQ_OID_TEXT), xs, bytes: { $0.utf8.count }) { out, s in
            out.append(contentsOf: s.utf8)
        })
    }
    static func byteaArray(_ xs: [[UInt8]?]) -> PQParam {
        .array(Binary.array(element: UInt32(AEGIS_PQ_OID_BYTEA), xs, bytes: { $0.count }) { out, b in out.append(contentsOf: b) })
    }
    static func int64Array(_ xs: [Int64?]) -> PQParam {
        .array(Binary.array(element: UInt32(AEGIS_PQ_OID_INT8), xs, bytes: { _ in 8 }) { out, v in Binary.append(v, to: &out) })
    }
    static func timestampArray(_ xs: [Date?]) -> PQParam {
        .array(Binary.array(element: UInt32(AEGIS_PQ_OID_TIMESTAMPTZ), xs, bytes: { _ in 8 }) { out, d in
            out.append(contentsOf: Binary.timestamp(d))
        })
    }
    static func uuidArray(_ xs: [UUID?]) -> PQParam {
        .array(Binary.array(element: UInt32(AEGIS_PQ_OID_UUID), xs, bytes: { _ in 16 }) { out, u in
            withUnsafeBytes(of: u.uuid) { out.append(contentsOf: $0) }
        })
    }

    /// The binary form, nil for NULL.
    var encoded: [UInt8]? {
        switch self {
        case .null: return nil
        case .text(let s): return Array(s.utf8)
        case .bytes(let b): return b
        case .int32(let v): return Binary.int32(v)
        case .int64(let v): return Binary.int64(v)
        case .bool(let v): return [v ? 1 : 0]
        case .timestamp(let d): return Binary.timestamp(d)
        case .uuid(let u): return Binary.uuid(u)
        case .array(let encoded): return encoded
        }
    }
}

/// PostgreSQL's binary formats (src/backend/utils/adt/*send/recv).
enum Binary {
    /// 2000-01-01 00:00:00 UTC, PostgreSQL's epoch, in Unix seconds.
    static let postgresEpoch: Double = 946_684_800

    static func int32(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
    static func int64(_ v: Int64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }

    /// Microseconds since PostgreSQL's epoch. Whole microseconds of Unix
    /// time first, so that a Date read back (decodeTimestamp) encodes to the
    /// same value and compares equal.
    static func timestamp(_ d: Date) -> [UInt8] {
        let unixMicros = (d.timeIntervalSince1970 * 1_000_000).rounded()
        let micros = (Int64(exactly: unixMicros) ?? (unixMicros < 0 ? Int64.min / 2 : Int64.max / 2))
            - Int64(postgresEpoch) * 1_000_000
        return int64(micros)
    }

    static func decodeTimestamp(_ micros: Int64) -> Date {
        let (unix, overflow) = micros.addingReportingOverflow(Int64(postgresEpoch) * 1_000_000)
        return Date(timeIntervalSince1970: overflow ? Double(micros) / 1_000_000 + postgresEpoch
                                                    : Double(unix) / 1_000_000)
    }

    static func uuid(_ u: UUID) -> [UInt8] { withUnsafeBytes(of: u.uuid) { Array($0) } }

    /// Appends a big-endian integer without a temporary array.
    static func append<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
    }

    /// A one-dimensional array in binary form: `bytes` gives an element's
    /// encoded length (written before it), `write` appends the element.
    static func array<T>(element oid: UInt32, _ elements: [T?], bytes: (T) -> Int,
                         write: (inout [UInt8], T) -> Void) -> [UInt8] {
        var out: [UInt8] = []
        var total = 20
        for e in elements { total += 4 + (e.map(bytes) ?? 0) }
        out.reserveCapacity(total)
        append(Int32(elements.isEmpty ? 0 : 1), to: &out)                  // dimensions
        append(Int32(elements.contains { $0 == nil } ? 1 : 0), to: &out)   // has NULLs
        append(Int32(bitPattern: oid), to: &out)
        if !elements.isEmpty {
            append(Int32(elements.count), to: &out)                         // size
            append(Int32(1), to: &out)                                      // lower bound
        }
        for e in elements {
            if let e {
                append(Int32(bytes(e)), to: &out)
                write(&out, e)
            } else {
                append(Int32(-1), to: &out)
            }
        }
        return out
    }

    static func readInt64(_ p: UnsafeRawBufferPointer) -> Int64? {
        guard p.count == 8 else { return nil }
        var v: Int64 = 0
        for b in p { v = (v << 8) | Int64(b) }
        return v
    }

    static func readInt32(_ p: UnsafeRawBufferPointer) -> Int32? {
        guard p.count == 4 else { return nil }
        var v: UInt32 = 0
        for b in p { v = (v << 8) | UInt32(b) }
        return Int32(bitPattern: v)
    }
}

/// A statement's answer. Binary-format columns are decoded by type.
final class PQResult {
    private let handle: OpaquePointer

    init(_ handle: OpaquePointer) { self.handle = handle }
    deinit { aegis_pq_result_free(handle) }

    var rows: Int { Int(aegis_pq_result_rows(handle)) }
    var columns: Int { Int(aegis_pq_result_columns(handle)) }
    var affected: Int { Int(clamping: aegis_pq_result_affected(handle)) }

    func isNull(_ row: Int, _ column: Int) -> Bool {
        aegis_pq_result_is_null(handle, Int32(row), Int32(column))
    }

    private func raw(_ row: Int, _ column: Int) -> UnsafeRawBufferPointer? {
        guard let p = aegis_pq_result_value(handle, Int32(row), Int32(column)) else { return nil }
        let n = aegis_pq_result_length(handle, Int32(row), Int32(column))
        return UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: n)
    }

    func bytes(_ row: Int, _ column: Int) -> [UInt8]? { raw(row, column).map { Array($0) } }

    func text(_ row: Int, _ column: Int) -> String? {
        raw(row, column).map { String(decoding: $0, as: UTF8.self) }
    }

    func int64(_ row: Int, _ column: Int) -> Int64? { raw(row, column).flatMap(Binary.readInt64) }
    func int32(_ row: Int, _ column: Int) -> Int32? { raw(row, column).flatMap(Binary.readInt32) }

    func bool(_ row: Int, _ column: Int) -> Bool? {
        raw(row, column).flatMap { $0.count == 1 ? $0[0] != 0 : nil }
    }

    func date(_ row: Int, _ column: Int) -> Date? {
        int64(row, column).map(Binary.decodeTimestamp)
    }

    func uuid(_ row: Int, _ column: Int) -> UUID? {
        guard let b = raw(row, column), b.count == 16 else { return nil }
        return UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                           b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]))
    }

    var sqlstate: String { String(cString: aegis_pq_result_sqlstate(handle)) }
    var message: String { String(cString: aegis_pq_result_message(handle)) }
    var constraint: String { String(cString: aegis_pq_result_constraint(handle)) }
}

/// One step of a pipeline.
enum PipelineStep {
    case prepared(Statement, [PQParam])
    case sql(String)
}

/// A connection, used by one thread at a time.
final class PQConnection {
    private let handle: OpaquePointer
    private var prepared: Set<String> = []
    private var err = [CChar](repeating: 0, count: 1024)

    init(conninfo: String) throws(PQFailure) {
        var h: OpaquePointer?
        var err = [CChar](repeating: 0, count: 1024)
        let s = aegis_pq_connect(conninfo, &h, &err, err.count)
        guard s == AEGIS_PQ_OK, let h else {
            throw PQFailure(status: s, sqlstate: "", constraint: "", message: cText(err))
        }
        handle = h
    }

    deinit { aegis_pq_close(handle) }

    /// Not blocking: reads what the server sent while idle (an EOF after a
    /// shutdown, for one) and says whether the connection is still usable.
    var isAlive: Bool { aegis_pq_alive(handle) }
    var serverVersion: Int { Int(aegis_pq_server_version(handle)) }
    var transactionStatus: aegis_pq_transaction { aegis_pq_transaction_status(handle) }
    var socket: Int32 { aegis_pq_socket(handle) }

    /// The failure of the last call; with the server's result, its primary
    /// message (without libpq's "ERROR:" and statement excerpt).
    private func failure(_ s: aegis_pq_status, _ result: OpaquePointer?) -> PQFailure {
        let r = result.map(PQResult.init)
        let primary = r?.message ?? ""
        return PQFailure(status: s, sqlstate: r?.sqlstate ?? "", constraint: r?.constraint ?? "",
                         message: primary.isEmpty ? cText(err) : primary)
    }

    private func finish(_ s: aegis_pq_status, _ out: OpaquePointer?) throws(PQFailure) -> PQResult {
        guard s == AEGIS_PQ_OK, let out else {
            throw failure(s == AEGIS_PQ_OK ? AEGIS_PQ_E_UNEXPECTED : s, out)
        }
        return PQResult(out)
    }

    /// SQL text through the simple protocol (several statements allowed).
    @discardableResult
    func exec(_ sql: String) throws(PQFailure) -> PQResult {
        var out: OpaquePointer?
        let s = aegis_pq_exec(handle, sql, &out, &err, err.count)
        return try finish(s, out)
    }

    func prepareIfNeeded(_ st: Statement) throws(PQFailure) {
        if prepared.contains(st.name) { return }
        var out: OpaquePointer?
        let s = st.types.withUnsafeBufferPointer { types in
            aegis_pq_prepare(handle, st.name, st.sql, Int32(st.types.count), types.baseAddress, &out, &err, err.count)
        }
        if s == AEGIS_PQ_OK {
            if let out { aegis_pq_result_free(out) }
        } else {
            let f = failure(s, out)
            // 42P05: already prepared on this session (the set is out of step).
            if f.sqlstate != "42P05" { throw f }
        }
        prepared.insert(st.name)
    }

    /// Executes a prepared statement (preparing it first on this connection).
    @discardableResult
    func execute(_ st: Statement, _ params: [PQParam]) throws(PQFailure) -> PQResult {
        precondition(params.count == st.types.count, "\(st.name): \(params.count) parameters for \(st.types.count)")
        try prepareIfNeeded(st)
        var out: OpaquePointer?
        let s = withParams(params) { p, n in
            aegis_pq_execute(handle, st.name, n, p, AEGIS_PQ_BINARY, &out, &err, err.count)
        }
        return try finish(s, out)
    }

    /// A one-off statement with parameters (not prepared).
    @discardableResult
    func query(_ sql: String, types: [UInt32], _ params: [PQParam]) throws(PQFailure) -> PQResult {
        var out: OpaquePointer?
        let s = types.withUnsafeBufferPointer { t in
            withParams(params) { p, n in
                aegis_pq_execute_sql(handle, sql, n, t.baseAddress, p, AEGIS_PQ_BINARY, &out, &err, err.count)
            }
        }
        return try finish(s, out)
    }

    /// Sends every step, one sync, and reads the answers: one round trip.
    /// Returns one result per step; throws the first failure after reading
    /// everything up to the sync (so the connection is ready for more).
    func pipeline(_ steps: [PipelineStep]) throws(PQFailure) -> [PQResult] {
        for case .prepared(let st, _) in steps { try prepareIfNeeded(st) }
        var s = aegis_pq_pipeline_enter(handle, &err, err.count)
        guard s == AEGIS_PQ_OK else { throw failure(s, nil) }
        var sendFailure: PQFailure?
        for step in steps {
            switch step {
            case .prepared(let st, let params):
                s = withParams(params) { p, n in
                    aegis_pq_pipeline_send(handle, st.name, n, p, AEGIS_PQ_BINARY, &err, err.count)
                }
            case .sql(let sql):
                s = aegis_pq_pipeline_send_sql(handle, sql, 0, nil, nil, AEGIS_PQ_BINARY, &err, err.count)
            }
            if s != AEGIS_PQ_OK {
                sendFailure = failure(s, nil)
                if s == AEGIS_PQ_E_CONNECTION { throw sendFailure! }
                break
            }
        }
        s = aegis_pq_pipeline_sync(handle, &err, err.count)
        guard s == AEGIS_PQ_OK else { throw failure(s, nil) }
        var results: [PQResult] = []
        var firstFailure = sendFailure
        reading: while true {
            var out: OpaquePointer?
            s = aegis_pq_pipeline_next(handle, &out, &err, err.count)
            switch s {
            case AEGIS_PQ_OK:
                results.append(PQResult(out!))
            case AEGIS_PQ_SYNC:
                break reading
            case AEGIS_PQ_E_ABORTED:
                continue
            case AEGIS_PQ_E_SERVER, AEGIS_PQ_E_UNEXPECTED:
                if firstFailure == nil { firstFailure = failure(s, out) } else if let out { aegis_pq_result_free(out) }
            default:
                // Broken connection, or nothing pending (state): stop here.
                let f = failure(s, out)
                if s == AEGIS_PQ_E_CONNECTION { throw f }
                if firstFailure == nil { firstFailure = f }
                break reading
            }
        }
        s = aegis_pq_pipeline_exit(handle, &err, err.count)
        if s != AEGIS_PQ_OK && firstFailure == nil { firstFailure = failure(s, nil) }
        if let firstFailure { throw firstFailure }
        return results
    }

    // LISTEN / NOTIFY

    func consumeInput() throws(PQFailure) {
        let s = aegis_pq_consume_input(handle, &err, err.count)
        if s != AEGIS_PQ_OK { throw failure(s, nil) }
    }

    func nextNotification() -> (channel: String, payload: String)? {
        var channel = [CChar](repeating: 0, count: Int(AEGIS_PQ_CHANNEL_CAP))
        var payload = [CChar](repeating: 0, count: Int(AEGIS_PQ_PAYLOAD_CAP))
        var length = 0
        let s = aegis_pq_next_notification(handle, &channel, channel.count, &payload, payload.count, &length, nil)
        guard s == AEGIS_PQ_OK || s == AEGIS_PQ_E_BUFFER_TOO_SMALL else { return nil }
        return (cText(channel), cText(payload))
    }

    func escapeIdentifier(_ s: String) throws(PQFailure) -> String {
        let bytes = Array(s.utf8)
        var out = [CChar](repeating: 0, count: 2 * bytes.count + 3)
        let st = bytes.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { c in
                aegis_pq_escape_identifier(handle, c.baseAddress, c.count, &out, out.count, &err, err.count)
            }
        }
        guard st == AEGIS_PQ_OK else { throw failure(st, nil) }
        return cText(out)
    }
}

/// Lays the parameters out in one buffer and hands libpq pointers into it.
/// A trailing byte keeps every non-NULL value's pointer non-NULL, even for
/// empty text and bytea.
private func withParams<R>(_ params: [PQParam], _ body: (UnsafePointer<aegis_pq_param>?, Int32) -> R) -> R {
    let encoded = params.map(\.encoded)
    var blob: [UInt8] = []
    blob.reserveCapacity(encoded.reduce(1) { $0 + ($1?.count ?? 0) })
    var offsets: [Int] = []
    for e in encoded {
        offsets.append(blob.count)
        if let e { blob += e }
    }
    blob.append(0)
    return blob.withUnsafeBufferPointer { buf in
        let base = UnsafeRawPointer(buf.baseAddress!)
        var cparams: [aegis_pq_param] = []
        cparams.reserveCapacity(encoded.count)
        for (i, e) in encoded.enumerated() {
            if let e {
                cparams.append(aegis_pq_param(value: base + offsets[i], length: e.count, format: AEGIS_PQ_BINARY))
            } else {
                cparams.append(aegis_pq_param(value: nil, length: 0, format: AEGIS_PQ_BINARY))
            }
        }
        return cparams.withUnsafeBufferPointer { body($0.baseAddress, Int32($0.count)) }
    }
}

/// A NUL-terminated C buffer as text.
func cText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
