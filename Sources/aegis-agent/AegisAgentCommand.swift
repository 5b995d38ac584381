import AegisAgent
import AegisProtocol
import ArgumentParser
import Foundation
import Logging

/// Exit codes, documented in --help.
enum Exit: Int32 {
    case ok = 0
    case failure = 1
    case usage = 2
    case keyFile = 3
    case unreachable = 4
    case tls = 5
    case serverKey = 6
    case refused = 7
    case closed = 8

    static func of(_ error: AgentError) -> Exit {
        switch error {
        case .invalidConfiguration, .invalidArgument: .usage
        case .keyFile: .keyFile
        case .unreachable, .timeout: .unreachable
        case .tlsVerificationFailed: .tls
        case .serverKeyMismatch: .serverKey
        case .refused: .refused
        default: .closed
        }
    }
}

@main
struct AegisAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegis-agent",
        abstract: "A reference Aegis agent: holds a session with a gateway, answers its requests, prints its events.",
        discussion: """
            The agent's Ed25519 key lives in --key-file (created with mode 0600 when absent; a key file \
            that group or others may read is refused). The gateway's server key is --server-key, or the \
            b64 line in --server-key-file; without either, the first auth_ok whose signature verifies \
            pins its key into <key-file>.server.pub (trust on first use) and every later session must \
            match it: a mismatch stops the agent.

            Requests are answered by --exec (run with /bin/sh -c; the request's payload on stdin, the \
            response from stdout; a non-zero exit, a timeout or too much output answers \
            {"error":{"code":"exec_failed"|"exec_timeout"|"response_too_large","message":…}}), else by \
            echoing the payload. Events are printed. Lost sessions are re-established with exponential \
            backoff and full jitter, over the --url list in turn; unacked messages are resent.

            Exit codes:
              0  stopped (SIGINT / SIGTERM, or --exit-when-acked done)
              1  unexpected failure
              2  usage or invalid setting
              3  key file problem (missing, unreadable, malformed, readable by group or others)
              4  gateway unreachable (--max-attempts used up)
              5  TLS verification failed (CA or certificate pin)
              6  server key mismatch (auth_ok signed by another key than the pinned one)
              7  refused by the gateway (unknown_agent, revoked, key_mismatch, …; HTTP 4xx)
              8  the session ended otherwise and the agent stopped
            """)

    @Option(name: .customLong("url"), help: ArgumentHelp(
        "Gateway URL, wss://host:port/ws/agent (ws:// needs --insecure-plaintext); repeat for fallbacks.",
        valueName: "url"))
    var urls: [String] = []

    @Option(help: "This agent's id (1–255 of [A-Za-z0-9._:@-]).")
    var agentID: String

    @Option(help: ArgumentHelp("The agent's key file (created 0600 when absent).", valueName: "path"))
    var keyFile = "aegis-agent.key"

    @Option(help: ArgumentHelp("The gateway's server key, b64 of its Ed25519 public key.", valueName: "b64"))
    var serverKey: String?

    @Option(help: ArgumentHelp("A file with the gateway's server key (b64, one line); written on first use when absent.",
                               valueName: "path"))
    var serverKeyFile: String?

    @Option(help: ArgumentHelp("Trust this CA (PEM) for wss://.", valueName: "path"))
    var caFile: String?

    @Option(name: .customLong("pin-sha256"), help: ArgumentHelp(
        "Trust exactly the certificate with this SHA-256 (64 hex digits).", valueName: "hex"))
    var pinSHA256: String?

    @Flag(help: "Allow ws:// URLs (no TLS): local development or behind a TLS-terminating proxy only.")
    var insecurePlaintext = false

    @Option(help: ArgumentHelp("Enrollment token (also AEGIS_ENROLLMENT_TOKEN, which keeps it out of ps).",
                               valueName: "token"))
    var enrollmentToken: String?

    @Option(help: ArgumentHelp("Answer requests with this command's stdout (payload on stdin).", valueName: "command"))
    var exec: String?

    @Option(help: ArgumentHelp("Seconds a request's command may run.", valueName: "seconds"))
    var execTimeout: Double = 30

    @Option(help: "Requests handled at once.")
    var execConcurrency = 4

    @Flag(help: "One JSON object per output line (records on stdout: connected, event, request, responded, acked, duplicate, …; logs and errors on stderr).")
    var json = false

    @Option(name: .customLong("send-event"), help: ArgumentHelp(
        "Send an event once connected (repeatable).", valueName: "channel:text"))
    var sendEvent: [String] = []

    @Option(help: ArgumentHelp("Send this many numbered events (testing).", valueName: "n"))
    var sendEvents = 0

    @Option(help: "The channel of --send-events.")
    var eventsChannel = "agent.test"

    @Option(help: ArgumentHelp("Seconds between --send-events events.", valueName: "seconds"))
    var sendInterval: Double = 0

    @Option(name: .customLong("send-request"), help: ArgumentHelp(
        "Send a request once connected and print its response (repeatable).", valueName: "channel:text"))
    var sendRequest: [String] = []

    @Option(help: ArgumentHelp("Seconds to wait for the response to a --send-request.", valueName: "seconds"))
    var requestTimeout: Double = 30

    @Flag(help: "Stop once every event of --send-event / --send-events is acked and every --send-request answered.")
    var exitWhenAcked = false

    @Option(help: "Stop after this many failed connection attempts in a row without a session (0: never).")
    var maxAttempts = 0

    @Option(help: ArgumentHelp("Ceiling of the first reconnect delay, seconds (full jitter: the delay is uniform below it).", valueName: "seconds"))
    var reconnectInitial: Double = 2

    @Option(help: ArgumentHelp("Largest reconnect delay, seconds.", valueName: "seconds"))
    var reconnectCap: Double = 60

    @Option(help: ArgumentHelp("Remember processed down ids this long, seconds (≥ the gateway's down TTL).",
                               valueName: "seconds"))
    var downTTL: Double = 3600

    @Flag(help: "Keep retrying when the gateway refuses enrollment (unknown_agent, revoked, key_mismatch); pending_approval is always waited out.")
    var retryRefused = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "info"

    static func main() async {
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if let command = command as? AegisAgentCommand {
                let code = await command.runAgent()
                Foundation.exit(code.rawValue)
            }
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                Swift.print(fullMessage(for: error))
                Foundation.exit(0)
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(Exit.usage.rawValue)
        }
    }

    mutating func validate() throws {
        if urls.isEmpty { throw ValidationError("give at least one --url") }
        if serverKey != nil && serverKeyFile != nil { throw ValidationError("--server-key and --server-key-file exclude each other") }
        if caFile != nil && pinSHA256 != nil { throw ValidationError("--ca-file and --pin-sha256 exclude each other") }
        if execTimeout <= 0 || reconnectInitial <= 0 || reconnectCap < reconnectInitial || downTTL <= 0 {
            throw ValidationError("timeouts and delays must be positive, and --reconnect-cap ≥ --reconnect-initial")
        }
        if maxAttempts < 0 || sendEvents < 0 || execConcurrency < 1 || sendInterval < 0 {
            throw ValidationError("counts must not be negative")
        }
        if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("unknown --log-level \(logLevel)") }
        for spec in sendEvent + sendRequest where !spec.contains(":") {
            throw ValidationError("--send-event and --send-request want CHANNEL:TEXT")
        }
        if requestTimeout <= 0 { throw ValidationError("--request-timeout must be positive") }
    }

    /// Runs the agent until it stops; returns the exit code.
    func runAgent() async -> Exit {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let output = Output(json: json, minimumLevel: level)
        // The SDK's own log repeats the events printed below; only its
        // errors are shown, unless debugging.
        let sdkLevel = level <= .debug ? level : .error
        LoggingSystem.bootstrap { label in OutputLogHandler(label: label, output: output, logLevel: sdkLevel) }

        let agent: AegisAgent
        do {
            agent = try AegisAgent(try makeConfiguration(output), logger: Logger(label: "aegis.agent"))
        } catch {
            return fatal(output, error)
        }

        // SIGINT / SIGTERM stop the agent cleanly (1000 to the gateway).
        let signals = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                output.record("signal", level: .notice, to: .err, [("signal", sig == SIGINT ? "SIGINT" : "SIGTERM")])
                Task { await agent.stop() }
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }

        let eventPrinter = Task { for await event in agent.events { report(event, output) } }
        let requestHandler = Task { await handleIncoming(agent, output) }

        do {
            try await agent.start(waitForSession: true)
        } catch .notRunning {
            // Stopped by a signal before the first session.
        } catch {
            // The agent stopped; its reason is reported below.
        }
        let sender = Task { await sendConfiguredEvents(agent, output) }

        let final = await agent.waitUntilStopped()
        sender.cancel()
        await eventPrinter.value
        await requestHandler.value
        guard let final else { return .ok }
        return fatal(output, final)
    }

    // MARK: Configuration

    private func makeConfiguration(_ output: Output) throws(AgentError) -> AgentConfiguration {
        var gatewayURLs: [GatewayURL] = []
        for u in urls { gatewayURLs.append(try GatewayURL(u)) }
        let (identity, created) = try AgentKeyFile.loadOrCreate(path: keyFile)
        let fingerprint = SHA256.hash(identity.publicKey).prefix(8).map { String(format: "%02x", $0) }.joined()
        output.record(created ? "key_created" : "key_loaded", level: .notice, to: .err,
                      [("key_file", keyFile), ("public_key", identity.publicKeyBase64), ("sha256_prefix", fingerprint)])

        let trust: ServerKeyTrust
        if let serverKey {
            guard let key = try? Base64.decode(serverKey), FieldSyntax.isValidPublicKey(key) else {
                throw .invalidConfiguration("--server-key: want b64 of a 32-byte Ed25519 public key")
            }
            trust = .pinned(key)
        } else {
            trust = .trustOnFirstUse(pinFile: serverKeyFile ?? AgentKeyFile.defaultServerKeyPath(forKeyFile: keyFile))
        }
        var c = AgentConfiguration(urls: gatewayURLs, agentID: agentID, identity: identity, serverKey: trust)
        if let caFile { c.tls = .caFile(caFile) } else if let pinSHA256 { c.tls = .pinnedSHA256(pinSHA256) }
        c.allowPlaintext = insecurePlaintext
        c.enrollmentToken = enrollmentToken ?? ProcessInfo.processInfo.environment["AEGIS_ENROLLMENT_TOKEN"]
        c.backoff = BackoffPolicy(initial: .seconds(reconnectInitial), cap: .seconds(reconnectCap))
        c.maxAttemptsWithoutSession = maxAttempts > 0 ? maxAttempts : nil
        c.stopOnRefusal = retryRefused ? [] : ["unknown_agent", "revoked", "key_mismatch"]
        c.processedIDLifetime = .seconds(downTTL)
        c.userAgentComment = "aegis-agent-cli"
        return c
    }

    // MARK: Work

    private func sendConfiguredEvents(_ agent: AegisAgent, _ output: Output) async {
        var ids: [String] = []
        do {
            for spec in sendEvent {
                let (channel, text) = Self.split(spec)
                let id = try await agent.send(event: Array(text.utf8), channel: channel)
                output.record("queued", [("id", id), ("channel", channel)])
                ids.append(id)
            }
            for n in 0..<sendEvents {
                let id = try await agent.send(event: Array("event \(n)".utf8), channel: eventsChannel)
                output.record("queued", [("id", id), ("channel", eventsChannel), ("n", n)])
                ids.append(id)
                if sendInterval > 0 { try? await Task.sleep(for: .seconds(sendInterval)) }
                if Task.isCancelled { return }
            }
            for spec in sendRequest {
                let (channel, text) = Self.split(spec)
                do {
                    let response = try await agent.request(Array(text.utf8), channel: channel,
                                                           timeout: .seconds(requestTimeout))
                    output.record("response", [("id", response.id), ("request_id", response.requestID),
                                               ("channel", response.channel)] + Output.payloadFields(response.payload))
                } catch .stopped {
                    return
                } catch {
                    output.record("request_failed", level: .warning, [("channel", channel), ("error", "\(error)")])
                }
            }
            guard exitWhenAcked else { return }
            for id in ids { try await agent.waitForAck(id) }
            output.record("all_acked", level: .notice, [("count", ids.count)])
            await agent.stop()
        } catch {
            if error != .stopped && error != .notRunning {
                output.record("send_failed", level: .error, to: .err, [("error", "\(error)")])
            }
        }
    }

    /// "channel:text" → ("channel", "text").
    static func split(_ spec: String) -> (String, String) {
        let colon = spec.firstIndex(of: ":") ?? spec.endIndex
        return (String(spec[..<colon]), colon < spec.endIndex ? String(spec[spec.index(after: colon)...]) : "")
    }

    private func handleIncoming(_ agent: AegisAgent, _ output: Output) async {
        let runner = exec.map {
            CommandRunner(command: $0, timeout: .seconds(execTimeout), maxOutput: agent.maxPayloadBytes)
        }
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for await message in agent.incoming {
                let kind = message.kind == .request ? "request" : "event"
                output.record(kind, [("id", message.id), ("channel", message.channel)] + Output.payloadFields(message.payload))
                guard message.kind == .request else { continue }
                if running >= execConcurrency {
                    await group.next()
                    running -= 1
                }
                running += 1
                group.addTask {
                    let answer: [UInt8]
                    if let runner {
                        let outcome = await runner.run(input: message.payload)
                        if case .output = outcome {} else {
                            output.record("exec_failed", level: .warning, to: .err,
                                          [("request_id", message.id), ("outcome", "\(outcome)")])
                        }
                        answer = outcome.responsePayload
                    } else {
                        answer = message.payload
                    }
                    do {
                        let id = try await message.respond(answer)
                        output.record("responded", [("id", id), ("request_id", message.id)])
                    } catch {
                        output.record("respond_failed", level: .error, to: .err,
                                      [("request_id", message.id), ("error", "\(error)")])
                    }
                }
            }
        }
    }

    private func report(_ event: AgentEvent, _ output: Output) {
        switch event {
        case .connecting(let url):
            output.record("connecting", level: .debug, to: .err, [("url", url)])
        case .connected(let url, let sid, let key, let resending):
            output.record("connected", level: .notice, [("url", url), ("session_id", sid), ("server_key", key),
                                                        ("resending", resending)])
        case .disconnected(let url, let error, let retryIn):
            output.record("disconnected", level: .warning, [("url", url), ("error", "\(error)"),
                                                           ("retry_in", Double(retryIn.components.seconds) + Double(retryIn.components.attoseconds) / 1e18)])
        case .serverKeyPinned(let key):
            output.record("server_key_pinned", level: .notice, [("server_key", key)])
        case .acknowledged(let ids):
            output.record("acked", [("ids", ids)])
        case .duplicateDropped(let id):
            output.record("duplicate", [("id", id)])
        case .unmatchedResponse(let id, let ref):
            output.record("unmatched_response", level: .warning, [("id", id), ("ref", ref ?? "")])
        case .stopped(let error):
            output.record("stopped", level: error == nil ? .notice : .error, [("error", error.map { "\($0)" } ?? "")])
        }
    }

    private func fatal(_ output: Output, _ error: AgentError) -> Exit {
        let code = Exit.of(error)
        output.record("fatal", level: .critical, to: .err, [("error", "\(error)"), ("exit_code", Int(code.rawValue))])
        if output.json {
            // Humans read stderr too: one plain line besides the JSON record.
            FileHandle.standardError.write(Data("aegis-agent: \(error)\n".utf8))
        }
        return code
    }
}
