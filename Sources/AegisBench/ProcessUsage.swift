import Foundation

/// CPU time and resident memory of processes, read from /proc: what the
/// gateway (and its PostgreSQL) spent during a phase.
public struct ProcessUsage: Sendable, Equatable, Codable {
    /// User + system CPU seconds since the process started.
    public var cpuSeconds: Double
    public var residentBytes: Int

    public init(cpuSeconds: Double, residentBytes: Int) {
        self.cpuSeconds = cpuSeconds
        self.residentBytes = residentBytes
    }

    public static func + (a: ProcessUsage, b: ProcessUsage) -> ProcessUsage {
        ProcessUsage(cpuSeconds: a.cpuSeconds + b.cpuSeconds, residentBytes: a.residentBytes + b.residentBytes)
    }
}

public enum ProcFS {
    /// Clock ticks per second of /proc/PID/stat's times.
    public static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// (ppid, utime + stime in ticks) from the text of /proc/PID/stat. The
    /// command name (field 2) may hold spaces and parentheses, so fields
    /// are counted from the last ')'.
    public static func parseStat(_ text: String) -> (ppid: Int32, ticks: UInt64)? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the name: state(3) ppid(4) … utime(14) stime(15).
        guard fields.count > 12, let ppid = Int32(fields[1]), let utime = UInt64(fields[11]),
              let stime = UInt64(fields[12]) else { return nil }
        return (ppid, utime + stime)
    }

    /// VmRSS in bytes from the text of /proc/PID/status.
    public static func parseResident(_ text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kib = Int(parts[1]) else { return nil }
            return kib * 1024
        }
        return nil
    }

    public static func usage(of pid: Int32) -> ProcessUsage? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let (_, ticks) = parseStat(stat) else { return nil }
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        return ProcessUsage(cpuSeconds: Double(ticks) / ticksPerSecond, residentBytes: parseResident(status) ?? 0)
    }

    /// The process and every descendant (PostgreSQL's postmaster and its
    /// backends, checkpointer, WAL writer …).
    public static func tree(of root: Int32) -> [Int32] {
        var parentOf: [Int32: Int32] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let (ppid, _) = parseStat(stat) else { continue }
            parentOf[pid] = ppid
        }
        var members: Set<Int32> = [root]
        var grew = true
        while grew {
            grew = false
            for (pid, ppid) in parentOf where members.contains(ppid) && !members.contains(pid) {
                members.insert(pid)
                grew = true
            }
        }
        return members.sorted()
    }

    /// The summed usage of a process tree. Processes that ended during a
    /// phase take their CPU with them, so phases sample long-lived trees.
    public static func treeUsage(of root: Int32) -> ProcessUsage {
        tree(of: root).compactMap(usage(of:)).reduce(ProcessUsage(cpuSeconds: 0, residentBytes: 0), +)
    }

    /// The postmaster of a cluster: the first line of postmaster.pid.
    public static func postmaster(dataDirectory: String) -> Int32? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8) else {
            return nil
        }
        return text.split(separator: "\n").first.flatMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    }
}
