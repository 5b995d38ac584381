import AegisGateway
import Testing

@Suite struct GatewayConfigurationTests {
    struct NoFile: Error {}

    func load(flags: [String: String] = [:], environment: [String: String] = [:], file: String? = nil,
              hostName: String? = nil) throws(GatewayConfigurationError) -> GatewayConfiguration {
        try GatewayConfiguration.load(flags: flags, environment: environment, hostName: hostName) { path in
            guard let file, path == "/etc/aegis.conf" else { throw NoFile() }
            return file
        }
    }

    /// The error `load` throws, or nil.
    func failure(flags: [String: String] = [:], environment: [String: String] = [:],
                 file: String? = nil) -> GatewayConfigurationError? {
        do {
            _ = try load(flags: flags, environment: environment, file: file)
            return nil
        } catch {
            return error
        }
    }

    @Test func defaultsFollowTheProtocol() throws {
        let c = try load()
        #expect(c.listen == ListenAddress(host: "0.0.0.0", port: 8443))
        #expect(c.adminListen == ListenAddress(host: "127.0.0.1", port: 8081))
        #expect(c.dataDirectory == ".aegis")
        #expect(c.databaseURL == nil)
        #expect(c.enrollment == .token)
        #expect(c.clockSkew == .seconds(60))
        #expect(c.authTimeout == .seconds(10))
        #expect(c.heartbeatInterval == .seconds(30))
        #expect(c.sessionLifetime == .seconds(86_400))
        #expect(c.ackTimeout == .seconds(30))
        #expect(c.ackCoalescingDelay == .milliseconds(20))
        #expect(c.downRetries == 5)
        #expect(c.downTimeToLive == .seconds(3600))
        #expect(c.requireEphemeral == false)
        #expect(c.nodeID == "aegis")
        #expect(c == GatewayConfiguration())
    }

    @Test func flagsOverEnvironmentOverFileOverDefaults() throws {
        let file = """
            # the file
            enrollment = manual
            skew = 30s
            heartbeat_interval = 20
            data_dir = "/var/lib/aegis"
            """
        let env = ["AEGIS_CONFIG": "/etc/aegis.conf", "AEGIS_SKEW": "45", "AEGIS_ENROLLMENT": "open"]
        let flags = ["--enrollment": "token"]
        let c = try load(flags: flags, environment: env, file: file)
        #expect(c.enrollment == .token)            // flag
        #expect(c.clockSkew == .seconds(45))      // environment
        #expect(c.heartbeatInterval == .seconds(20))  // file
        #expect(c.dataDirectory == "/var/lib/aegis")  // file, quotes removed
        #expect(c.sessionLifetime == .seconds(86_400))  // default

        // Without the flag, the environment wins; without both, the file.
        #expect(try load(environment: env, file: file).enrollment == .open)
        #expect(try load(environment: ["AEGIS_CONFIG": "/etc/aegis.conf"], file: file).enrollment == .manual)
        // The flag `config` names the file too, and wins over AEGIS_CONFIG.
        #expect(try load(flags: ["config": "/etc/aegis.conf"], environment: ["AEGIS_CONFIG": "/nope"], file: file)
                .enrollment == .manual)
    }

    @Test func everySettingCanBeSet() throws {
        let flags = [
            "listen": "[::]:9443", "admin-listen": "off", "data-dir": "/data", "database-url": "postgres://u:p@db/aegis",
            "enrollment": "manual", "skew": "2m", "auth-timeout": "5s", "heartbeat-interval": "15s",
            "session-lifetime": "12h", "ack-timeout": "45s", "ack-coalescing-delay": "5ms", "retries": "3",
            "down-ttl": "2h", "down-backoff-cap": "5m", "rate-limit-ip-rate": "7.5", "rate-limit-ip-burst": "30",
            "rate-limit-agent-rate": "0.05", "rate-limit-agent-burst": "2", "rate-limit-max-tracked": "1000",
            "require-ephemeral": "yes", "node-id": "gw-2.eu:west",
        ]
        let c = try load(flags: flags)
        #expect(c.listen == ListenAddress(host: "::", port: 9443))
        #expect(c.listen.description == "[::]:9443")
        #expect(c.adminListen == nil)
        #expect(c.dataDirectory == "/data")
        #expect(c.databaseURL?.text == "postgres://u:p@db/aegis")
        #expect(c.enrollment == .manual)
        #expect(c.clockSkew == .seconds(120))
        #expect(c.authTimeout == .seconds(5))
        #expect(c.heartbeatInterval == .seconds(15))
        #expect(c.sessionLifetime == .seconds(43_200))
        #expect(c.ackTimeout == .seconds(45))
        #expect(c.ackCoalescingDelay == .milliseconds(5))
        #expect(c.downRetries == 3)
        #expect(c.downTimeToLive == .seconds(7200))
        #expect(c.downBackoffCap == .seconds(300))
        #expect(c.sourceRateLimit == RateLimiter.Rule(tokensPerSecond: 7.5, burst: 30))
        #expect(c.agentRateLimit == RateLimiter.Rule(tokensPerSecond: 0.05, burst: 2))
        #expect(c.rateLimitMaxTrackedKeys == 1000)
        #expect(c.requireEphemeral)
        #expect(c.nodeID == "gw-2.eu:west")
    }

    @Test func invalidEnrollmentNamesTheSettingAndTheSource() {
        let fromEnv = failure(environment: ["AEGIS_ENROLLMENT": "foo"])
        #expect(fromEnv?.summary == "enrollment: expected open, token or manual, got 'foo'")
        #expect(fromEnv?.description == "enrollment: expected open, token or manual, got 'foo' (from AEGIS_ENROLLMENT)")
        let fromFlag = failure(flags: ["enrollment": "foo"])
        #expect(fromFlag?.description == "enrollment: expected open, token or manual, got 'foo' (from --enrollment)")
        let fromFile = failure(environment: ["AEGIS_CONFIG": "/etc/aegis.conf"], file: "\n\nenrollment = foo\n")
        #expect(fromFile?.description == "enrollment: expected open, token or manual, got 'foo' (from /etc/aegis.conf:3)")
    }

    @Test func onlyTheWinningValueIsChecked() throws {
        // A bad value in the file that the environment overrides is not an error.
        let c = try load(environment: ["AEGIS_CONFIG": "/etc/aegis.conf", "AEGIS_ENROLLMENT": "open"],
                         file: "enrollment = foo")
        #expect(c.enrollment == .open)
    }

    @Test(arguments: [
        ("skew", "sixty", "skew: expected a duration such as 20ms, 30s, 10m or 24h (1s to 1h), got 'sixty'"),
        ("skew", "0", "skew: expected 1s to 1h, got '0'"),
        ("skew", "1500ms", "skew: expected whole seconds, got '1500ms'"),
        ("heartbeat_interval", "2h", "heartbeat_interval: expected 1s to 1h, got '2h'"),
        ("ack_coalescing_delay", "21ms", "ack_coalescing_delay: expected 0s to 20ms, got '21ms'"),
        ("ack_coalescing_delay", "20", "ack_coalescing_delay: expected 0s to 20ms, got '20'"),
        ("retries", "-1", "retries: expected an integer from 0 to 100, got '-1'"),
        ("retries", "101", "retries: expected an integer from 0 to 100, got '101'"),
        ("listen", "8443", "listen: expected HOST:PORT with a port 0-65535, got '8443'"),
        ("listen", "0.0.0.0:65536", "listen: expected HOST:PORT with a port 0-65535, got '0.0.0.0:65536'"),
        ("listen", "::1:80", "listen: expected HOST:PORT with a port 0-65535, got '::1:80'"),
        ("require_ephemeral", "maybe", "require_ephemeral: expected true or false, got 'maybe'"),
        ("node_id", "node 1", "node_id: expected 1-64 characters of A-Z a-z 0-9 . _ : -, got 'node 1'"),
        ("rate_limit_ip_rate", "0", "rate_limit_ip_rate: expected handshakes per second from 0.001 to 1000000 (up to 3 decimals), got '0'"),
        ("rate_limit_ip_rate", "1.2345", "rate_limit_ip_rate: expected handshakes per second from 0.001 to 1000000 (up to 3 decimals), got '1.2345'"),
        ("rate_limit_agent_burst", "0", "rate_limit_agent_burst: expected an integer from 1 to 1000000, got '0'"),
        ("data_dir", "", "data_dir: expected a directory, got ''"),
    ])
    func invalidValues(setting: String, value: String, message: String) {
        let error = failure(flags: [setting: value])
        #expect(error?.summary == message)
    }

    @Test func databaseURLIsNeverRepeated() {
        let error = failure(environment: ["AEGIS_DATABASE_URL": "mysql://root:hunter2@db"])
        #expect(error?.summary.hasPrefix("database_url: expected a postgres:// or postgresql:// URL") == true)
        #expect(error?.description.contains("hunter2") == false)
        let url = DatabaseURL("postgresql://aegis:hunter2@db:5432/aegis")
        #expect(url != nil)
        #expect(!"\(String(describing: url))".contains("hunter2"))
    }

    @Test func combinationsAreChecked() {
        #expect(failure(flags: ["heartbeat_interval": "30m", "session_lifetime": "1h"])?.summary
                == "session_lifetime: must be longer than three heartbeat intervals (90m), got 1h")
        #expect(failure(flags: ["ack_timeout": "2m", "down_backoff_cap": "1m"])?.summary
                == "down_backoff_cap: must be at least ack_timeout (2m), got 1m")
        #expect(failure(flags: ["listen": "127.0.0.1:8081"])?.summary
                == "admin_listen: must differ from listen (127.0.0.1:8081)")
    }

    @Test func fileSyntax() throws {
        let env = ["AEGIS_CONFIG": "/etc/aegis.conf"]
        let good = """
              # comment
            \t
            listen=127.0.0.1:9000
            database_url = postgres://a:b#c@db/x
            node-id = n1\r
            """
        let c = try load(environment: env, file: good)
        #expect(c.listen == ListenAddress(host: "127.0.0.1", port: 9000))
        // A # after the start of a line is part of the value.
        #expect(c.databaseURL?.text == "postgres://a:b#c@db/x")
        #expect(c.nodeID == "n1")

        #expect(failure(environment: env, file: "listen 127.0.0.1:9000")?.description
                == "/etc/aegis.conf:1: expected key = value")
        #expect(failure(environment: env, file: "\nlisten_addr = x")?.description
                == "/etc/aegis.conf:2: unknown setting 'listen_addr'")
        #expect(failure(environment: env, file: "skew = 10\nskew = 20")?.description
                == "/etc/aegis.conf:2: 'skew' is set twice")
        #expect(failure(environment: env, file: " = 3")?.description == "/etc/aegis.conf:1: expected key = value")
    }

    @Test func unreadableFile() {
        let error = failure(environment: ["AEGIS_CONFIG": "/missing.conf"])
        guard case .unreadableFile(let path, _) = error else {
            Issue.record("expected unreadableFile, got \(String(describing: error))")
            return
        }
        #expect(path == "/missing.conf")
        // The real reader reports the system's reason.
        #expect(throws: (any Error).self) { try GatewayConfiguration.readTextFile("/nonexistent/aegis.conf") }
    }

    @Test func environmentRules() throws {
        // Unknown AEGIS_* variables belong to others; empty ones count as unset.
        let c = try load(environment: ["AEGIS_IO_BACKEND": "epoll", "AEGIS_ENROLLMENT": "", "PATH": "/bin"])
        #expect(c.enrollment == .token)
        #expect(try load(environment: ["AEGIS_DATA_DIR": "/srv"]).dataDirectory == "/srv")
    }

    @Test func flagNames() throws {
        #expect(try load(flags: ["--data-dir": "/a"]).dataDirectory == "/a")
        #expect(try load(flags: ["data_dir": "/b"]).dataDirectory == "/b")
        #expect(try load(flags: ["data-dir": "/c"]).dataDirectory == "/c")
        let error = failure(flags: ["--colour": "blue"])
        #expect(error == .unknownSetting("--colour", source: .flag("--colour")))
        #expect(error?.description == "--colour: unknown setting (from --colour)")
    }

    @Test func nodeIDDefaultsToTheHostName() throws {
        #expect(try load(hostName: "gw-01.example.com").nodeID == "gw-01.example.com")
        #expect(try load(hostName: "höst name").nodeID == "hstname")
        #expect(try load(hostName: "").nodeID == "aegis")
        #expect(try load(flags: ["node_id": "explicit"], hostName: "gw-01").nodeID == "explicit")
    }

    @Test func listenAddresses() {
        #expect(ListenAddress("0.0.0.0:0") == ListenAddress(host: "0.0.0.0", port: 0))
        #expect(ListenAddress("localhost:8443") == ListenAddress(host: "localhost", port: 8443))
        #expect(ListenAddress("[::1]:443") == ListenAddress(host: "::1", port: 443))
        for bad in [":80", "host:", "host:http", "host:123456", "[::1]443", "a b:1", "host:+80"] {
            #expect(ListenAddress(bad) == nil, "\(bad)")
        }
    }
}
