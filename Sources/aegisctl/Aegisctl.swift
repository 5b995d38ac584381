import AegisAdminClient
import ArgumentParser
import Foundation

struct Aegisctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegisctl",
        abstract: "Drive an Aegis gateway through its admin API.",
        discussion: """
            The admin URL, token and CA certificate come from the flags, else from AEGIS_ADMIN_URL, \
            AEGIS_ADMIN_TOKEN and AEGIS_ADMIN_TOKEN_FILE; without a token, .aegis/admin.token (where \
            the gateway writes its bootstrap admin token) is read when it exists.

            Exit codes:
              0  ok
              1  unexpected or server error (5xx, a response not as documented, not ready)
              2  usage or invalid input (bad flags; the API's 400, 413, 415, 422)
              3  the gateway is unreachable
              4  unauthorized or forbidden (401, 403)
              5  not found (404)
              6  conflict (409)
              7  rate limited or the agent's queue is full (429)
            Errors go to stderr as 'aegisctl: <code>: <message>'.
            """,
        subcommands: [
            Agents.self, Send.self, Broadcast.self, Messages.self, Tokens.self, EnrollmentTokens.self, Health.self,
        ])
}

/// The options every command takes: where the gateway is, who we are, how to print.
struct GlobalOptions: ParsableArguments {
    @Option(help: "The admin API's base URL (AEGIS_ADMIN_URL; default http://127.0.0.1:8081).")
    var url: String?

    @Option(help: "An API token (AEGIS_ADMIN_TOKEN).")
    var token: String?

    @Option(help: "A file holding the API token (AEGIS_ADMIN_TOKEN_FILE; default .aegis/admin.token when it exists).")
    var tokenFile: String?

    @Option(help: ArgumentHelp("A PEM CA certificate to trust for https.", valueName: "path"))
    var cacert: String?

    @Flag(help: "Print the API's JSON response bodies as they are.")
    var json = false

    static let defaultURL = "http://127.0.0.1:8081"
    static let defaultTokenFile = ".aegis/admin.token"

    func validate() throws {
        if token != nil && tokenFile != nil {
            throw ValidationError("--token and --token-file exclude each other")
        }
    }

    /// Runs `body` with a client and shuts the client down however `body` ends.
    func withClient<Result>(_ body: (AdminClient) async throws -> Result) async throws -> Result {
        let client = try AdminClient(
            baseURL: url ?? environment("AEGIS_ADMIN_URL") ?? Self.defaultURL, token: try resolvedToken(),
            caCertificateFile: cacert)
        do {
            let result = try await body(client)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }

    /// Flags before the environment; the default file only when it exists,
    /// since the health routes need no token.
    private func resolvedToken() throws -> String? {
        if let token { return token }
        if let tokenFile { return try readToken(tokenFile) }
        if let token = environment("AEGIS_ADMIN_TOKEN") { return token }
        if let tokenFile = environment("AEGIS_ADMIN_TOKEN_FILE") { return try readToken(tokenFile) }
        if FileManager.default.fileExists(atPath: Self.defaultTokenFile) { return try readToken(Self.defaultTokenFile) }
        return nil
    }

    private func readToken(_ path: String) throws -> String {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ValidationError("cannot read the token file \(path): \(error.localizedDescription)")
        }
        let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw ValidationError("the token file \(path) is empty") }
        return token
    }
}

/// An unset or empty variable counts as absent.
func environment(_ name: String) -> String? {
    guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
    return value
}

/// A failure of aegisctl's own, with its exit code (an AdminClientError has its own mapping).
struct CommandFailure: Error {
    var exitCode: Int32
    var code: String
    var message: String
}

extension AdminClientError {
    /// The exit codes of the discussion above.
    var exitCode: Int32 {
        switch self {
        case .unreachable: 3
        case .invalidArgument: 2
        case .badResponse: 1
        case .api(let status, _, _, _):
            switch status {
            case 400, 413, 415, 422: 2
            case 401, 403: 4
            case 404: 5
            case 409: 6
            case 429: 7
            default: 1
            }
        }
    }
}

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Liveness and readiness (/healthz, /readyz); exit 1 when not ready.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await global.withClient { client in
            let (health, healthBody) = try await client.performReturningBody(.healthz)
            let (readiness, readinessBody) = try await client.performReturningBody(.readyz)
            if global.json {
                Output.raw(healthBody)
                Output.raw(readinessBody)
            } else {
                Output.fields([
                    ("healthz", health.status),
                    ("readyz", readiness.status.rawValue),
                    ("database", readiness.database.rawValue),
                    ("listeners", readiness.listeners.rawValue),
                ])
            }
            guard readiness.status == .ready else {
                throw CommandFailure(
                    exitCode: 1, code: "not_ready",
                    message: "database \(readiness.database.rawValue), listeners \(readiness.listeners.rawValue)")
            }
        }
    }
}
