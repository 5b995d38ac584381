import AegisAdminClient
import ArgumentParser

extension APIScope: ExpressibleByArgument {}

struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "API tokens: create, list, revoke.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A new API token; its secret is shown once.")

        @OptionGroup var global: GlobalOptions

        @Option(help: "What the token is for (1-100 characters).")
        var name: String

        @Option(name: .customLong("scope"), help: "read, send or admin (repeatable; admin includes send, send includes read).")
        var scopes: [APIScope] = []

        func validate() throws {
            guard !scopes.isEmpty else { throw ValidationError("give at least one --scope") }
        }

        func run() async throws {
            try await global.withClient { client in
                let (issued, body) = try await client.performReturningBody(.createToken(name: name, scopes: scopes))
                if global.json { return Output.raw(body) }
                Output.fields([
                    ("id", issued.token.id), ("name", issued.token.name),
                    ("scopes", issued.token.scopes.map(\.rawValue).joined(separator: ",")),
                    ("created_at", issued.token.createdAt), ("token", issued.secret),
                ])
                Output.note("the token is shown only now; it is stored hashed")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "API tokens (never their secret).")

        @OptionGroup var global: GlobalOptions

        func run() async throws {
            try await global.withClient { client in
                let (tokens, body) = try await client.performReturningBody(.listTokens)
                if global.json { return Output.raw(body) }
                Output.table(
                    ["ID", "NAME", "SCOPES", "CREATED_AT", "LAST_USED_AT", "REVOKED_AT"],
                    tokens.map {
                        [$0.id, $0.name, $0.scopes.map(\.rawValue).joined(separator: ","), $0.createdAt,
                         cell($0.lastUsedAt), cell($0.revokedAt)]
                    })
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API token.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The token's id.")
        var tokenID: String

        func run() async throws {
            try await global.withClient { client in
                try await client.revokeToken(id: tokenID)
                if !global.json { print("revoked token \(tokenID)") }
            }
        }
    }
}

struct EnrollmentTokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enrollment-tokens",
        abstract: "Tokens agents present to enroll (enrollment = token): create, revoke.",
        subcommands: [Create.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A new enrollment token; its secret is shown once.")

        @OptionGroup var global: GlobalOptions

        @Option(help: "Valid for this many seconds (the gateway's default: 86400).")
        var ttl: Int?

        @Option(help: "How many agents may enroll with it (the gateway's default: 1).")
        var uses: Int?

        func run() async throws {
            try await global.withClient { client in
                let (token, body) = try await client.performReturningBody(
                    .createEnrollmentToken(ttl: ttl.map { .seconds($0) }, uses: uses))
                if global.json { return Output.raw(body) }
                Output.fields([
                    ("id", token.id), ("token", token.secret), ("expires_at", token.expiresAt),
                    ("uses", String(token.uses)),
                ])
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an enrollment token; agents already enrolled stay.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The token's id.")
        var tokenID: String

        func run() async throws {
            try await global.withClient { client in
                try await client.revokeEnrollmentToken(id: tokenID)
                if !global.json { print("revoked enrollment token \(tokenID)") }
            }
        }
    }
}
