import AegisPQ
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct EmbeddedPostgresError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }
    init(_ message: String) { self.message = message }
}

/// A private PostgreSQL cluster in the gateway's data directory, for when no
/// `--database-url` is given: `make run` works on a fresh machine.
///
/// Layout and life cycle:
///  - The cluster (PGDATA) is `<data dir>/pg`, made by initdb on first
///    start (into `pg.initdb`, renamed when complete, so a killed initdb
///    never leaves a half cluster behind). Superuser `aegis`, UTF8, locale
///    C, local connections trusted (the socket directory is private, mode
///    0700), TCP off (`listen_addresses = ''`).
///  - `start()` starts it with pg_ctl on a Unix socket only, or adopts the
///    server a killed gateway left running, waits until it accepts
///    connections and creates the database. `stop()` is pg_ctl stop -m fast.
///  - fsync, synchronous_commit and full_page_writes are forced on, on the
///    postgres command line (which beats postgresql.conf and ALTER SYSTEM).
///  - Settings that depend on paths are in `aegis.conf`, rewritten at every
///    start and included last from postgresql.conf. Server logs rotate
///    daily in `pg/log/` (a week kept); pg_ctl's own output is
///    `pg/startup.log`.
///
/// Running as root (CI, containers): initdb and postgres refuse root, so
/// the cluster runs as `systemUser` (the `postgres` account of the Debian
/// package) through runuser, and the cluster directory belongs to it. That
/// account must be able to traverse the path to the cluster: if the data
/// directory itself is not traversable (it is created 0700), its group
/// becomes the account's group with g+x (or o+x when the directory already
/// has a group of its own) — search only, no listing. If a directory
/// above it is closed (`/root` is 0700), nothing there is changed: the
/// cluster goes to `<fallbackRoot>/pg-<hash of the data dir>`
/// (/var/lib/aegis/…) and `<data dir>/pg` becomes a symlink to it, so the
/// next start finds it again. The log says which and why.
///
/// The socket: a Unix socket path holds at most 107 bytes. The socket
/// lives in the cluster directory when `<cluster>/.s.PGSQL.<port>` fits,
/// otherwise in `/tmp/aegis-pg-<hash of the cluster path>/` (created 0700
/// for the account; refused if someone else owns it).
///
/// Crashes: after a kill -9 of the gateway the server keeps running and the
/// next `start()` adopts it (its postmaster.pid names a live postgres whose
/// working directory is this cluster). After a kill -9 of the postmaster,
/// `start()` waits for the old server's processes to leave the cluster,
/// clears lock files naming dead or foreign processes, and starts it:
/// PostgreSQL's crash recovery replays the WAL, so every commit is there.
///
/// The methods block (they run initdb and pg_ctl): call them before the
/// event loop, or use the async variants, which run on a thread of their own.
public final class EmbeddedPostgres: Sendable {
    public struct Configuration: Sendable {
        public var dataDirectory: String
        /// The database the gateway uses (created on start).
        public var database = "aegis"
        /// Where initdb, pg_ctl and postgres are. nil: $AEGIS_PG_BIN, the
        /// newest /usr/lib/postgresql/<version>/bin, then $PATH.
        public var binDirectory: String?
        /// The account the cluster runs under when the gateway runs as root.
        public var systemUser = "postgres"
        /// Names the socket file (.s.PGSQL.<port>); there is no TCP.
        public var port: UInt16 = 5432
        /// Where the cluster goes, as root, when the data directory's path is
        /// closed to `systemUser`.
        public var fallbackRoot = "/var/lib/aegis"
        /// For initdb, start, stop and the first connection.
        public var timeoutSeconds = 60

        public init(dataDirectory: String) {
            self.dataDirectory = dataDirectory
        }
    }

    /// The cluster's superuser, made by initdb.
    public static let superuser = "aegis"

    public let configuration: Configuration
    /// The data directory, absolute.
    public let dataDirectory: String
    /// PGDATA: `<data dir>/pg`, or the fallback it links to.
    public let clusterDirectory: String
    /// The socket directory a server started by us uses.
    public let socketDirectory: String
    public let binDirectory: String
    /// The account the server runs under: nil when the gateway is not root
    /// (it runs as the gateway's own user).
    public let account: Account?
    private let useFallback: Bool
    private let log: StoreLogger
    /// The socket directory and port of the running server (adopted servers
    /// may use other values than ours).
    private let endpoint: Mutex<(socket: String, port: UInt16)>

    public struct Account: Sendable, Equatable {
        public let name: String
        public let uid: uid_t
        public let gid: gid_t
        public let groups: [gid_t]
    }

    /// Resolves the paths and the account; starts nothing and changes no file.
    public init(_ configuration: Configuration, log: @escaping StoreLogger = printStoreLog) throws(EmbeddedPostgresError) {
        self.configuration = configuration
        self.log = log
        binDirectory = try Self.findBinDirectory(configuration.binDirectory)
        account = geteuid() == 0 ? try Self.lookUpAccount(configuration.systemUser) : nil
        let data = absolutePath(configuration.dataDirectory)
        dataDirectory = data
        let link = data + "/pg"
        var st = stat()
        var fallback = false
        if lstat(link, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFLNK {
                guard let target = realPath(link) else {
                    throw EmbeddedPostgresError("\(link) is a symlink to a directory that does not exist; remove it to start afresh")
                }
                clusterDirectory = target
            } else {
                clusterDirectory = link
            }
        } else if let account, let closed = blockedAncestor(of: data, for: account) {
            fallback = true
            clusterDirectory = configuration.fallbackRoot + "/pg-" + fnv1a(data, hexDigits: 16)
            _ = closed
        } else {
            clusterDirectory = link
        }
        useFallback = fallback
        for c in ["\"", "$", "`", "\\", "\n"] where clusterDirectory.contains(c) {
            throw EmbeddedPostgresError("the cluster path \(clusterDirectory) contains \(c.debugDescription), which pg_ctl cannot quote")
        }
        let socketFile = clusterDirectory + "/.s.PGSQL.\(configuration.port)"
        socketDirectory = socketFile.utf8.count <= 107
            ? clusterDirectory : "/tmp/aegis-pg-" + fnv1a(clusterDirectory, hexDigits: 8)
        endpoint = Mutex((socketDirectory, configuration.port))
    }

    // MARK: Public

    /// libpq conninfo of the gateway's database (no password: trust on a
    /// private socket).
    public var conninfo: String { conninfo(database: configuration.database) }

    public func conninfo(database: String) -> String {
        let (socket, port) = endpoint.withLock { $0 }
        return "host=\(quote(socket)) port=\(port) user=\(Self.superuser) dbname=\(quote(database))"
    }

    /// The postmaster's pid when the cluster's server is running.
    public var postmasterPID: Int32? { runningPostmaster()?.pid }

    public var isRunning: Bool { postmasterPID != nil }

    /// Makes the cluster if needed, starts (or adopts) the server, waits
    /// until it accepts connections and creates the database.
    public func start() throws(EmbeddedPostgresError) {
        try prepareDirectories()
        if !FileManager.default.fileExists(atPath: clusterDirectory + "/PG_VERSION") {
            try initialize()
        }
        try writeSettings()
        try prepareSocketDirectory()
        if let running = runningPostmaster() {
            adopt(running)
        } else {
            try startServer()
        }
        try createDatabase(configuration.database)
        let (socket, _) = endpoint.withLock { $0 }
        log("PostgreSQL is running (pid \(postmasterPID.map(String.init) ?? "?")), cluster \(clusterDirectory), socket in \(socket)")
    }

    /// pg_ctl stop -m fast: sessions are closed, a checkpoint is written.
    public func stop() throws(EmbeddedPostgresError) {
        guard runningPostmaster() != nil else { return }
        let (status, output) = try run("pg_ctl", ["stop", "-D", clusterDirectory, "-m", "fast", "-w",
                                                   "-t", String(configuration.timeoutSeconds), "-s"])
        if status != 0 && runningPostmaster() != nil {
            throw EmbeddedPostgresError("pg_ctl stop failed (\(status)): \(output.trimmed)")
        }
        log("PostgreSQL stopped")
    }

    /// Creates a database if it does not exist (the gateway's at start; tests
    /// make their own).
    public func createDatabase(_ name: String) throws(EmbeddedPostgresError) {
        let deadline = ContinuousClock.now + .seconds(configuration.timeoutSeconds)
        var conn: PQConnection?
        while conn == nil {
            do throws(PQFailure) {
                conn = try PQConnection(conninfo: conninfo(database: "postgres"))
            } catch {
                // 57P03: still starting (recovery after a crash can take a while).
                if ContinuousClock.now > deadline {
                    throw EmbeddedPostgresError("cannot connect to the cluster: \(error)")
                }
                usleep(100_000)
            }
        }
        guard let c = conn else { return }
        do throws(PQFailure) {
            let r = try c.query("SELECT 1 FROM pg_database WHERE datname = $1", types: [UInt32(AEGIS_PQ_OID_TEXT)], [.text(name)])
            if r.rows == 0 {
                do throws(PQFailure) {
                    try c.exec("CREATE DATABASE \(try c.escapeIdentifier(name))")
                    log("created database \(name)")
                } catch {
                    // 42P04: created meanwhile by another gateway.
                    if error.sqlstate != "42P04" { throw error }
                }
            }
        } catch {
            throw EmbeddedPostgresError("cannot create database \(name): \(error)")
        }
    }

    public func start() async throws(EmbeddedPostgresError) {
        try await offThread { () throws(EmbeddedPostgresError) in try self.start() }
    }

    public func stop() async throws(EmbeddedPostgresError) {
        try await offThread { () throws(EmbeddedPostgresError) in try self.stop() }
    }

    public func createDatabase(_ name: String) async throws(EmbeddedPostgresError) {
        try await offThread { () throws(EmbeddedPostgresError) in try self.createDatabase(name) }
    }

    // MARK: Directories

    private func prepareDirectories() throws(EmbeddedPostgresError) {
        try makeDirectories(dataDirectory, mode: 0o700)
        guard let account else { return }
        if useFallback {
            let closed = blockedAncestor(of: dataDirectory, for: account) ?? "a directory above it"
            log("""
                the data directory \(dataDirectory) is not reachable by the \(account.name) account \
                (\(closed) is closed to it), and initdb/postgres refuse to run as root: the cluster lives in \
                \(clusterDirectory) instead, linked from \(dataDirectory)/pg. To keep it in the data directory, \
                use a data directory the \(account.name) account can traverse, or run aegisd as a non-root user.
                """)
            try makeDirectories(configuration.fallbackRoot, mode: 0o755)
        } else if clusterDirectory.hasPrefix(dataDirectory + "/") && !searchable(dataDirectory, by: account) {
            // Search permission only (no listing) for the account, on the
            // data directory itself, which this gateway owns.
            var st = stat()
            guard stat(dataDirectory, &st) == 0 else { throw posixError("stat \(dataDirectory)") }
            if st.st_gid == 0 || st.st_gid == getegid() {
                guard chown(dataDirectory, uid_t.max, account.gid) == 0,
                      chmod(dataDirectory, (st.st_mode & 0o7777) | S_IXGRP) == 0 else {
                    throw posixError("granting \(account.name) search on \(dataDirectory)")
                }
                log("\(dataDirectory): group \(account.name), g+x, so that PostgreSQL (running as \(account.name)) can reach \(clusterDirectory)")
            } else {
                guard chmod(dataDirectory, (st.st_mode & 0o7777) | S_IXOTH) == 0 else {
                    throw posixError("granting search on \(dataDirectory)")
                }
                log("\(dataDirectory): o+x, so that PostgreSQL (running as \(account.name)) can reach \(clusterDirectory)")
            }
        }
    }

    /// initdb into a fresh `<cluster>.initdb`, then rename.
    private func initialize() throws(EmbeddedPostgresError) {
        let fm = FileManager.default
        if fm.fileExists(atPath: clusterDirectory) {
            let entries = (try? fm.contentsOfDirectory(atPath: clusterDirectory)) ?? ["?"]
            guard entries.isEmpty else {
                throw EmbeddedPostgresError("\(clusterDirectory) exists but is not a PostgreSQL cluster (no PG_VERSION); move it away")
            }
            try? fm.removeItem(atPath: clusterDirectory)
        }
        let staging = clusterDirectory + ".initdb"
        if fm.fileExists(atPath: staging) {
            log("removing \(staging), left by an initdb that did not finish")
            do { try fm.removeItem(atPath: staging) } catch {
                throw EmbeddedPostgresError("cannot remove \(staging): \(error)")
            }
        }
        try makeOwnedDirectory(staging)
        log("initializing a PostgreSQL cluster in \(clusterDirectory)\(account.map { " (as \($0.name))" } ?? "")")
        let (status, output) = try run("initdb", [
            "-D", staging, "--username=\(Self.superuser)", "--auth-local=trust", "--auth-host=reject",
            "--encoding=UTF8", "--locale=C", "--no-instructions",
        ])
        guard status == 0 else {
            throw EmbeddedPostgresError("initdb failed (\(status)): \(output.trimmed)")
        }
        let include = """

            # Aegis Gateway: aegis.conf (rewritten at every start) comes last.
            include_if_exists = 'aegis.conf'

            """
        guard let h = FileHandle(forWritingAtPath: staging + "/postgresql.conf") else {
            throw EmbeddedPostgresError("cannot open \(staging)/postgresql.conf")
        }
        h.seekToEndOfFile()
        h.write(Data(include.utf8))
        try? h.close()
        guard rename(staging, clusterDirectory) == 0 else { throw posixError("rename \(staging)") }
        if useFallback {
            guard symlink(clusterDirectory, dataDirectory + "/pg") == 0 else {
                throw posixError("symlink \(dataDirectory)/pg -> \(clusterDirectory)")
            }
        }
    }

    private func writeSettings() throws(EmbeddedPostgresError) {
        let settings = """
            # Written by aegisd at every start; edits are lost. fsync,
            # synchronous_commit and full_page_writes are forced on from the
            # command line.
            listen_addresses = ''
            port = \(configuration.port)
            unix_socket_directories = '\(socketDirectory.replacingOccurrences(of: "'", with: "''"))'
            unix_socket_permissions = 0700
            logging_collector = on
            log_directory = 'log'
            log_filename = 'postgresql-%a.log'
            log_rotation_age = 1d
            log_rotation_size = 0
            log_truncate_on_rotation = on
            log_line_prefix = '%m [%p] '

            """
        let path = clusterDirectory + "/aegis.conf"
        let staging = path + ".new"
        guard FileManager.default.createFile(atPath: staging, contents: Data(settings.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw EmbeddedPostgresError("cannot write \(staging)")
        }
        if let account, chown(staging, account.uid, account.gid) != 0 { throw posixError("chown \(staging)") }
        guard rename(staging, path) == 0 else { throw posixError("rename \(staging)") }
    }

    private func prepareSocketDirectory() throws(EmbeddedPostgresError) {
        guard socketDirectory != clusterDirectory else { return }
        var st = stat()
        if lstat(socketDirectory, &st) != 0 {
            try makeOwnedDirectory(socketDirectory)
            log("socket directory \(socketDirectory): \(clusterDirectory) is too long for a Unix socket path")
            return
        }
        let owner = account?.uid ?? geteuid()
        guard (st.st_mode & S_IFMT) == S_IFDIR, st.st_uid == owner, st.st_mode & 0o077 == 0 else {
            throw EmbeddedPostgresError("""
                \(socketDirectory) exists but is not a private directory of uid \(owner) (mode 0700); \
                remove it, or use a shorter data directory path
                """)
        }
    }

    private func makeOwnedDirectory(_ path: String) throws(EmbeddedPostgresError) {
        guard mkdir(path, 0o700) == 0 else { throw posixError("mkdir \(path)") }
        _ = chmod(path, 0o700)
        if let account, chown(path, account.uid, account.gid) != 0 { throw posixError("chown \(path)") }
    }

    // MARK: The server

    struct Postmaster {
        let pid: Int32
        let port: UInt16?
        let socketDirectory: String?
    }

    /// The live postmaster of this cluster, from postmaster.pid, checked
    /// against /proc: the pid must be a process working in this cluster
    /// (pids are reused, and a zombie's is not a server).
    func runningPostmaster() -> Postmaster? {
        guard let text = try? String(contentsOfFile: clusterDirectory + "/postmaster.pid", encoding: .utf8) else {
            return nil
        }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let pid = lines.first.flatMap({ Int32($0.trimmed) }), pid > 0 else { return nil }
        guard processWorks(in: clusterDirectory, pid: pid) else { return nil }
        return Postmaster(pid: pid, port: lines.count > 3 ? UInt16(lines[3].trimmed) : nil,
                          socketDirectory: lines.count > 4 && !lines[4].trimmed.isEmpty ? lines[4].trimmed : nil)
    }

    private func adopt(_ p: Postmaster) {
        endpoint.withLock {
            $0 = (p.socketDirectory ?? socketDirectory, p.port ?? configuration.port)
        }
        log("adopting the PostgreSQL server already running on this cluster (pid \(p.pid)), left by an earlier gateway")
    }

    private func startServer() throws(EmbeddedPostgresError) {
        let deadline = ContinuousClock.now + .seconds(configuration.timeoutSeconds)
        var attempts = 0
        var toldWaiting = false
        while true {
            let users = processes(in: clusterDirectory)
            if !users.isEmpty {
                if let p = runningPostmaster() {
                    adopt(p)
                    return
                }
                // The processes of a server whose postmaster was killed: a new
                // one must not start before they are gone.
                if ContinuousClock.now > deadline {
                    throw EmbeddedPostgresError("""
                        processes \(users.map(String.init).joined(separator: ", ")) of an earlier PostgreSQL \
                        server still use \(clusterDirectory); stop them
                        """)
                }
                if !toldWaiting {
                    log("waiting for \(users.count) process(es) of the previous PostgreSQL server to exit")
                    toldWaiting = true
                }
                usleep(100_000)
                continue
            }
            removeStaleLockFiles()
            let remaining = max(5, Int((deadline - ContinuousClock.now).components.seconds))
            let (status, output) = try run("pg_ctl", [
                "start", "-D", clusterDirectory, "-w", "-t", String(remaining), "-s",
                "-l", clusterDirectory + "/startup.log",
                "-o", "-c fsync=on -c synchronous_commit=on -c full_page_writes=on",
            ])
            if status == 0 {
                endpoint.withLock { $0 = (socketDirectory, configuration.port) }
                return
            }
            attempts += 1
            if attempts >= 3 || ContinuousClock.now > deadline {
                let tail = (try? String(contentsOfFile: clusterDirectory + "/startup.log", encoding: .utf8))
                    .map { $0.split(separator: "\n").suffix(8).joined(separator: "\n") } ?? ""
                throw EmbeddedPostgresError("pg_ctl start failed (\(status)): \(output.trimmed)\n\(tail)")
            }
            log("pg_ctl start failed (\(output.trimmed)); trying again")
            usleep(500_000)
        }
    }

    /// With no process left in the cluster, lock files naming a live pid can
    /// only name a reused or zombie pid, which would make postgres refuse
    /// to start. Called only when `processes(in:)` is empty.
    private func removeStaleLockFiles() {
        for path in [clusterDirectory + "/postmaster.pid",
                     socketDirectory + "/.s.PGSQL.\(configuration.port).lock"] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                  let pid = text.split(separator: "\n").first.flatMap({ Int32(String($0).trimmed) }) else { continue }
            if kill(pid, 0) == 0 || errno == EPERM {
                unlink(path)
                log("removed \(path): pid \(pid) is not this cluster's server")
            }
        }
    }

    // MARK: Running the tools

    /// Runs a PostgreSQL tool, as the account when we are root. Output
    /// (stdout and stderr) is returned; the environment loses PG* variables.
    private func run(_ tool: String, _ args: [String]) throws(EmbeddedPostgresError) -> (Int32, String) {
        let exe = binDirectory + "/" + tool
        var argv: [String]
        if let account {
            if FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser") {
                argv = ["/usr/sbin/runuser", "-u", account.name, "--", exe] + args
            } else if FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") {
                argv = ["/usr/bin/setpriv", "--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups", "--", exe] + args
            } else {
                throw EmbeddedPostgresError("running as root needs runuser or setpriv (util-linux) to run \(tool) as \(account.name)")
            }
        } else {
            argv = [exe] + args
        }
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("PG") }
        env["LC_ALL"] = "C"
        do throws(EmbeddedPostgresError) {
            return try spawnAndWait(argv, environment: env.map { "\($0.key)=\($0.value)" })
        } catch {
            throw EmbeddedPostgresError("cannot run \(exe): \(error.message)")
        }
    }

    private static func findBinDirectory(_ configured: String?) throws(EmbeddedPostgresError) -> String {
        func hasTools(_ dir: String) -> Bool {
            ["initdb", "pg_ctl", "postgres"].allSatisfy { FileManager.default.isExecutableFile(atPath: dir + "/" + $0) }
        }
        if let configured {
            guard hasTools(configured) else { throw EmbeddedPostgresError("no initdb, pg_ctl and postgres in \(configured)") }
            return configured
        }
        if let env = ProcessInfo.processInfo.environment["AEGIS_PG_BIN"], !env.isEmpty {
            guard hasTools(env) else { throw EmbeddedPostgresError("AEGIS_PG_BIN=\(env) has no initdb, pg_ctl and postgres") }
            return env
        }
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .compactMap(Int.init).sorted(by: >)
        for v in versions where hasTools("/usr/lib/postgresql/\(v)/bin") {
            return "/usr/lib/postgresql/\(v)/bin"
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        where hasTools(dir) {
            return dir
        }
        throw EmbeddedPostgresError("""
            PostgreSQL's server programs (initdb, pg_ctl, postgres) were not found: install the postgresql \
            package (scripts/install-deps.sh), set AEGIS_PG_BIN, or give --database-url
            """)
    }

    private static func lookUpAccount(_ name: String) throws(EmbeddedPostgresError) -> Account {
        guard let pw = getpwnam(name) else {
            throw EmbeddedPostgresError("""
                aegisd runs as root, and initdb and postgres refuse to; the private cluster runs as the \
                '\(name)' account, which does not exist. Install the postgresql package (it creates it), \
                run aegisd as another user, or give --database-url
                """)
        }
        let uid = pw.pointee.pw_uid, gid = pw.pointee.pw_gid
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            _ = getgrouplist(name, gid, &groups, &count)
        }
        return Account(name: name, uid: uid, gid: gid, groups: Array(groups.prefix(Int(max(0, count)))))
    }

    private func offThread(_ body: @escaping @Sendable () throws(EmbeddedPostgresError) -> Void) async throws(EmbeddedPostgresError) {
        let result: Result<Void, EmbeddedPostgresError> = await withCheckedContinuation { done in
            let thread = Thread {
                do throws(EmbeddedPostgresError) {
                    try body()
                    done.resume(returning: .success(()))
                } catch {
                    done.resume(returning: .failure(error))
                }
            }
            thread.start()
        }
        try result.get()
    }

    private func posixError(_ what: String) -> EmbeddedPostgresError {
        EmbeddedPostgresError("\(what): \(String(cString: strerror(errno)))")
    }
}

// MARK: - Helpers

private extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// A libpq conninfo value in single quotes.
private func quote(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
}

private func absolutePath(_ path: String) -> String {
    let url = URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
    let lexical = url.standardizedFileURL.path
    return realPath(lexical) ?? lexical
}

private func realPath(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
}

/// mkdir -p; the last component gets `mode`, missing parents 0755.
private func makeDirectories(_ path: String, mode: mode_t) throws(EmbeddedPostgresError) {
    var st = stat()
    if stat(path, &st) == 0 {
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw EmbeddedPostgresError("\(path) is not a directory") }
        return
    }
    let parent = (path as NSString).deletingLastPathComponent
    if !parent.isEmpty && parent != path { try makeDirectories(parent, mode: 0o755) }
    if mkdir(path, mode) != 0 && errno != EEXIST {
        throw EmbeddedPostgresError("cannot create \(path): \(String(cString: strerror(errno)))")
    }
    _ = chmod(path, mode)
}

/// Whether `account` may search (traverse) the directory `path`.
private func searchable(_ path: String, by account: EmbeddedPostgres.Account) -> Bool {
    var st = stat()
    guard stat(path, &st) == 0 else { return false }
    if account.uid == 0 { return true }
    if st.st_uid == account.uid { return st.st_mode & S_IXUSR != 0 }
    if account.groups.contains(st.st_gid) || st.st_gid == account.gid { return st.st_mode & S_IXGRP != 0 }
    return st.st_mode & S_IXOTH != 0
}

/// The first directory above `dir` (not `dir` itself) that `account` cannot
/// traverse, or nil.
private func blockedAncestor(of dir: String, for account: EmbeddedPostgres.Account) -> String? {
    var components = dir.split(separator: "/").map(String.init)
    guard !components.isEmpty else { return nil }
    components.removeLast()
    var path = "/"
    if !searchable(path, by: account) { return path }
    for c in components {
        path += (path == "/" ? "" : "/") + c
        // What does not exist yet is created 0755 by start().
        if access(path, F_OK) != 0 { return nil }
        if !searchable(path, by: account) { return path }
    }
    return nil
}

/// Whether process `pid` exists and works in `dir` (PostgreSQL's processes
/// chdir to PGDATA). Zombies and reused pids are not.
private func processWorks(in dir: String, pid: Int32) -> Bool {
    guard let cwd = realPath("/proc/\(pid)/cwd") else {
        // No /proc entry, a zombie, or not ours to see: only the last is
        // worth a second look.
        if errno == EACCES, let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) {
            return comm.hasPrefix("postgres")
        }
        return false
    }
    return cwd == (realPath(dir) ?? dir)
}

/// Every process working in `dir`.
private func processes(in dir: String) -> [Int32] {
    let target = realPath(dir) ?? dir
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { realPath("/proc/\($0)/cwd") == target }
}

/// Runs argv[0] with stdin from /dev/null and stdout + stderr into a pipe,
/// in /, with default signal handling and no other descriptor of ours:
/// pg_ctl start leaves a daemon behind, and a daemon holding one of our
/// descriptors (Foundation's Process leaks one it waits on) would keep us
/// waiting or keep our sockets open after we exit.
private func spawnAndWait(_ argv: [String], environment: [String]) throws(EmbeddedPostgresError) -> (Int32, String) {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { throw EmbeddedPostgresError("pipe: \(String(cString: strerror(errno)))") }
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    defer { if fds[0] >= 0 { Glibc.close(fds[0]) } }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    if let closeFrom = SpawnExtensions.addCloseFrom {
        _ = closeFrom(&actions, 3)
    } else {
        for fd in openDescriptors() where fd > 2 { posix_spawn_file_actions_addclose(&actions, fd) }
    }
    if let chdir = SpawnExtensions.addChdir { _ = chdir(&actions, "/") }

    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var none = sigset_t(), all = sigset_t()
    sigemptyset(&none)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &none)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

    let cArgv = argv.map { strdup($0) } + [nil]
    let cEnv = environment.map { strdup($0) } + [nil]
    defer {
        for p in cArgv { free(p) }
        for p in cEnv { free(p) }
    }
    var pid = pid_t()
    let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgv, cEnv)
    Glibc.close(fds[1])
    guard rc == 0 else { throw EmbeddedPostgresError(String(cString: strerror(rc))) }

    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fds[0], &buffer, buffer.count)
        if n > 0 { output += buffer[0..<n]; continue }
        if n < 0 && errno == EINTR { continue }
        break
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        if errno == EINTR { continue }
        // ECHILD: SIGCHLD is ignored in this process, so the status is gone.
        return (0, String(decoding: output, as: UTF8.self))
    }
    let exitCode: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (exitCode, String(decoding: output, as: UTF8.self))
}

/// glibc ≥ 2.34 and ≥ 2.29 extensions, looked up at run time (the Glibc
/// module does not declare them).
private enum SpawnExtensions {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    static let addCloseFrom: AddCloseFrom? = dlsym(UnsafeMutableRawPointer(bitPattern: 0),
                                                   "posix_spawn_file_actions_addclosefrom_np")
        .map { unsafeBitCast($0, to: AddCloseFrom.self) }
    static let addChdir: AddChdir? = dlsym(UnsafeMutableRawPointer(bitPattern: 0),
                                           "posix_spawn_file_actions_addchdir_np")
        .map { unsafeBitCast($0, to: AddChdir.self) }
}

private func openDescriptors() -> [Int32] {
    ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap(Int32.init)
}

/// FNV-1a, 64 bits, as hex (the first `hexDigits`).
private func fnv1a(_ s: String, hexDigits: Int) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 {
        h ^= UInt64(b)
        h = h &* 0x0000_0100_0000_01b3
    }
    let hex = String(h, radix: 16)
    return String((String(repeating: "0", count: 16 - hex.count) + hex).prefix(hexDigits))
}
