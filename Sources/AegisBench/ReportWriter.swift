import Foundation

extension BenchReport {
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return try encoder.encode(self)
    }

    /// One row per second of the run, for plotting (`make bench-report`).
    public var csv: String {
        var text = "seconds,phase,sent,acked,down_received,gateway_cpu_percent,postgres_cpu_percent\n"
        for s in samples {
            text += String(format: "%.2f,%@,%d,%d,%d,%.1f,%.1f\n", s.seconds, s.phase, s.sent, s.acked, s.downReceived,
                           s.gatewayCPUPercent, s.postgresCPUPercent)
        }
        return text
    }

    /// The summary for people, headline ratios first.
    public var summary: String {
        var lines: [String] = []
        func headline(_ label: String, _ p: Phase?) {
            guard let p, p.operations > 0, let ratio = p.ratio, let bare = p.bareMicrosecondsPerOperation else { return }
            let how = p.bareUnderLoad == nil ? "bare on the quiet machine"
                : String(format: "bare sampled under the same load; %.2f against the quiet machine's", p.quietRatio ?? 0)
            lines.append(String(format: "headline %@: gateway CPU %.1f µs ÷ bare crypto %.1f µs = %.2f (%@); PostgreSQL beside: %.1f µs",
                                label, p.gatewayMicrosecondsPerOperation, bare, ratio, how, p.postgresMicrosecondsPerOperation))
        }
        let ups = phases.filter { $0.name.hasPrefix("up-") }
        for p in ups { headline("up message (\(p.name))", p) }
        headline("down message (REST send)", phase("down"))
        headline("down message (broadcast)", phase("broadcast"))
        headline("handshake", phase("handshake"))
        lines.append("")
        lines.append(String(format: "%d agents, %d-byte payloads, %@, %@; gateway RSS %.1f MiB, %.1f KiB per connection",
                            agents, payloadBytes, tls ? "wss" : "ws", precomputed ? "precomputed" : "sealed live",
                            Double(gatewayResidentBytes) / 1048576, residentBytesPerConnection / 1024))
        lines.append("phase                 ops      seconds   ops/s     p50 µs   p99 µs   gw CPU ms/1000  pg CPU ms/1000")
        for p in phases {
            let l = p.latency
            lines.append(String(format: "%-20@ %8d %8.2f %9.0f %9@ %8@ %14.2f %15.2f", p.name, p.operations, p.seconds,
                                p.throughput, l.map { String($0.p50) } ?? "-", l.map { String($0.p99) } ?? "-",
                                p.gatewayMicrosecondsPerOperation, p.postgresMicrosecondsPerOperation))
        }
        for p in phases {
            for (k, v) in p.notes.sorted(by: { $0.key < $1.key }) {
                lines.append(String(format: "%@ %@: %.0f", p.name, k.replacingOccurrences(of: "_", with: " "), v))
            }
            let c = p.counters
            if !c.closes.isEmpty || !c.refusals.isEmpty || c.errors > 0 {
                lines.append("\(p.name): closes \(c.closes), refusals \(c.refusals), errors \(c.errors)")
            }
        }
        if let bare {
            lines.append(String(format: "bare (same run): open %.1f µs, seal %.1f µs, ack seal %.1f µs (%d ids), ack open %.1f µs, handshake %.1f µs",
                                bare.openSeconds * 1e6, bare.sealSeconds * 1e6, bare.ackSealSeconds * 1e6, bare.ackIDs,
                                bare.ackOpenSeconds * 1e6, bare.handshakeSeconds * 1e6))
        }
        return lines.joined(separator: "\n")
    }
}
