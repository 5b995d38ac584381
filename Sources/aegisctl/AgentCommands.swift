import AegisAdminClient
import ArgumentParser

extension AgentStatusFilter: ExpressibleByArgument {}

struct Agents: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List agents, show one, approve, revoke or delete it.",
        subcommands: [List.self, Status.self, Approve.self, Revoke.self, Delete.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Agents ordered by id.")

        @OptionGroup var global: GlobalOptions

        @Option(help: "connected (a live session), or by enrollment: active, pending, revoked.")
        var status: AgentStatusFilter?

        @Option(help: "Agents per page, 1-1000 (the gateway's default: 100).")
        var limit: Int?

        @Option(help: "Start at this page (a next_cursor).")
        var cursor: String?

        @Flag(help: "Follow next_cursor to the last page.")
        var all = false

        func run() async throws {
            try await global.withClient { client in
                var agents: [Agent] = []
                var cursor = self.cursor
                repeat {
                    let (page, body) = try await client.performReturningBody(
                        .listAgents(status: status, cursor: cursor, limit: limit))
                    if global.json { Output.raw(body) }
                    agents += page.agents
                    cursor = page.nextCursor
                } while all && cursor != nil
                guard !global.json else { return }
                Output.table(
                    ["AGENT_ID", "ENROLLMENT", "CONNECTED", "NODE", "LAST_SEEN", "CREATED_AT"],
                    agents.map {
                        [$0.agentID, $0.enrollment.rawValue, yesNo($0.connected), cell($0.node), cell($0.lastSeen),
                         $0.createdAt]
                    })
                if let cursor { Output.note("more agents: --cursor \(cursor) (or --all)") }
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One agent: session, enrollment, down queue.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The agent's id.")
        var agentID: String

        func run() async throws {
            try await global.withClient { client in
                let (status, body) = try await client.performReturningBody(.agentStatus(agentID))
                guard !global.json else { return Output.raw(body) }
                let queue = status.queue
                Output.fields(
                    agentFields(status.agent) + [
                        ("queue", "pending \(queue.pending), sent \(queue.sent), delivered \(queue.delivered), failed \(queue.failed)")
                    ])
            }
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Admit a pending agent (manual enrollment).")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The agent's id.")
        var agentID: String

        func run() async throws {
            try await global.withClient { client in
                try await printAgent(client.performReturningBody(.approveAgent(agentID)), json: global.json)
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Refuse the agent from now on and close its live session.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The agent's id.")
        var agentID: String

        func run() async throws {
            try await global.withClient { client in
                try await printAgent(client.performReturningBody(.revokeAgent(agentID)), json: global.json)
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget the agent and its key pin (it may enroll again); its messages stay.")

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The agent's id.")
        var agentID: String

        func run() async throws {
            try await global.withClient { client in
                try await client.deleteAgent(agentID)
                if !global.json { print("deleted agent \(agentID)") }
            }
        }
    }
}

private func printAgent(_ answer: (answer: Agent, body: String), json: Bool) {
    json ? Output.raw(answer.body) : Output.fields(agentFields(answer.answer))
}
