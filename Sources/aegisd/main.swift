import AegisProtocol
import ArgumentParser

/// The gateway daemon. For now it reports its version and proves the
/// protocol core works on this machine with a full in-process handshake and
/// a message round trip; later issues make it the gateway.
@main
struct Aegisd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aegisd",
        abstract: "Aegis Gateway daemon.")

    @Flag(help: "Print the version and exit.")
    var version = false

    func run() throws {
        print("aegisd \(AegisCoreInfo.version)")
        if version { return }
        let result = try SelfTest.run()
        print("protocol self-test: \(result)")
    }
}
