import AegisAdminClient
import ArgumentParser
import Foundation

// Not `Aegisctl.main()`: its exit codes are ArgumentParser's (64 for usage),
// and its error lines are not ours. Errors become 'aegisctl: <code>: <message>'
// and the exit codes of Aegisctl's discussion.

func fail(_ code: String, _ message: String, exitCode: Int32) -> Never {
    FileHandle.standardError.write(Data("aegisctl: \(code): \(message)\n".utf8))
    exit(exitCode)
}

func parseAndRun() async throws {
    var command = try Aegisctl.parseAsRoot()
    if var asyncCommand = command as? AsyncParsableCommand {
        try await asyncCommand.run()
    } else {
        try command.run()
    }
}

do {
    try await parseAndRun()
} catch let error as AdminClientError {
    let field = if case .api(_, _, _, let field?) = error { " (field: \(field))" } else { "" }
    fail(error.code, error.message + field, exitCode: error.exitCode)
} catch let failure as CommandFailure {
    fail(failure.code, failure.message, exitCode: failure.exitCode)
} catch {
    switch Aegisctl.exitCode(for: error) {
    case .success:
        // --help and the like.
        print(Aegisctl.fullMessage(for: error))
        exit(0)
    case .validationFailure:
        // The usage lines that ArgumentParser puts after its own error line.
        let usage = Aegisctl.fullMessage(for: error).split(separator: "\n").dropFirst().joined(separator: "\n")
        FileHandle.standardError.write(Data("aegisctl: usage: \(Aegisctl.message(for: error))\n\(usage)\n".utf8))
        exit(2)
    case let code:
        fail("error", Aegisctl.message(for: error), exitCode: code.rawValue == 0 ? 1 : code.rawValue)
    }
}
