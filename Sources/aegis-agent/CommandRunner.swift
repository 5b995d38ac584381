import Foundation

/// Runs the configured command for a request: `/bin/sh -c COMMAND`, the
/// request's payload on stdin, the response from stdout. A command that
/// fails, outlives its timeout or prints too much gets an error response
/// instead (see `ExecOutcome.responsePayload`).
struct CommandRunner: Sendable {
    let command: String
    let timeout: Duration
    let maxOutput: Int

    enum Outcome: Sendable {
        case output([UInt8])
        case failed(status: Int32, stderr: String)
        case timedOut
        case tooLarge
        case cannotStart(String)

        /// What goes back to the gateway.
        var responsePayload: [UInt8] {
            func error(_ code: String, _ message: String) -> [UInt8] {
                let object: [String: Any] = ["error": ["code": code, "message": message]]
                return Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
            }
            switch self {
            case .output(let bytes): return bytes
            case .failed(let status, let stderr):
                return error("exec_failed", "exit status \(status)\(stderr.isEmpty ? "" : ": \(stderr)")")
            case .timedOut: return error("exec_timeout", "the command did not finish in time")
            case .tooLarge: return error("response_too_large", "the command's output does not fit in one message")
            case .cannotStart(let why): return error("exec_failed", why)
            }
        }
    }

    func run(input: [UInt8]) async -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        let exited = AsyncStream<Void>.makeStream()
        process.terminationHandler = { _ in
            exited.continuation.yield()
            exited.continuation.finish()
        }
        do {
            try process.run()
        } catch {
            return .cannotStart("cannot run /bin/sh: \(error.localizedDescription)")
        }
        // Pipes are fed and drained on their own threads: a child that
        // writes before it reads must not deadlock against us.
        let writer = Thread {
            // A command that exits without reading gives EPIPE here (SIGPIPE
            // is ignored by the command line), which is its business.
            try? stdin.fileHandleForWriting.write(contentsOf: Data(input))
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let out = PipeReader(stdout.fileHandleForReading, limit: maxOutput + 1)
        let err = PipeReader(stderr.fileHandleForReading, limit: 2048)

        let finished = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in exited.stream {}
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !finished {
            process.terminate()
            let pid = process.processIdentifier
            try? await Task.sleep(for: .seconds(1))
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
            return .timedOut
        }
        let output = await out.result()
        let errText = String(decoding: await err.result(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if process.terminationStatus != 0 || process.terminationReason != .exit {
            return .failed(status: process.terminationStatus, stderr: errText)
        }
        if output.count > maxOutput { return .tooLarge }
        return .output(output)
    }
}

/// Reads a pipe to its end on a thread of its own, keeping at most `limit` bytes.
final class PipeReader: Sendable {
    private let done = AsyncStream<[UInt8]>.makeStream()

    init(_ handle: FileHandle, limit: Int) {
        let continuation = done.continuation
        let thread = Thread {
            var kept: [UInt8] = []
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                if kept.count < limit { kept += chunk.prefix(limit - kept.count) }
            }
            continuation.yield(kept)
            continuation.finish()
        }
        thread.start()
    }

    func result() async -> [UInt8] {
        for await bytes in done.stream { return bytes }
        return []
    }
}
