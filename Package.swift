// swift-tools-version: 6.1
// Aegis Gateway: a Swift control plane over a C data plane.
// The layout is the architecture (docs/architecture.md): C targets under
// CSources/, Swift modules under Sources/, one test target per module.
import PackageDescription

let package = Package(
    name: "aegis-gateway",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "AegisProtocol", targets: ["AegisProtocol"]),
        .library(name: "AegisCore", targets: ["AegisCore"]),
        .executable(name: "aegisd", targets: ["aegisd"]),
        .executable(name: "aegisctl", targets: ["aegisctl"]),
        .executable(name: "aegis-agent", targets: ["aegis-agent"]),
        .library(name: "AegisAgent", targets: ["AegisAgent"]),
        .executable(name: "aegis-bench", targets: ["aegis-bench"]),
        // The bare libsodium calls benchmarks divide by (also used by Benchmarks/).
        .library(name: "BareCrypto", targets: ["BareCrypto"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
    ],
    targets: [
        // The protocol core in C: strict base64 and JSON, handshake, seal/open.
        .target(
            name: "AegisCore",
            path: "CSources/AegisCore",
            sources: ["src"],
            publicHeadersPath: "include",
            cSettings: [
                .headerSearchPath("src"),
                .define("_GNU_SOURCE"),
            ],
            linkerSettings: [.linkedLibrary("sodium")]
        ),
        // The transport in C: io_uring/epoll loops, TLS, HTTP upgrade, RFC 6455,
        // the worker threads and their queues to the control plane.
        .target(
            name: "AegisIO",
            dependencies: ["AegisCore"],
            path: "CSources/AegisIO",
            sources: ["src"],
            publicHeadersPath: "include",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [
                .linkedLibrary("ssl"), .linkedLibrary("crypto"), .linkedLibrary("uring"),
                .linkedLibrary("pthread"),
            ]
        ),
        // libpq's header and library, found with pkg-config (libpq-dev).
        .systemLibrary(
            name: "CLibPQ",
            path: "CSources/CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // The narrow C interface to libpq (aegis_pq.h): prepared statements,
        // pipeline mode, LISTEN/NOTIFY. Only AegisStore uses it.
        .target(
            name: "AegisPQ",
            dependencies: ["CLibPQ"],
            path: "CSources/AegisPQ",
            sources: ["src"],
            publicHeadersPath: "include",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("pq")]
        ),
        // Swift value types over AegisCore; secrets stay on the C side.
        .target(
            name: "AegisProtocol",
            dependencies: ["AegisCore"],
            path: "Sources/AegisProtocol"
        ),
        // The Swift side of AegisIO: configuration, the event pump, commands.
        .target(
            name: "AegisTransport",
            dependencies: ["AegisIO", "AegisProtocol"],
            path: "Sources/AegisTransport"
        ),
        // The control plane's sans-IO core: connection state machine, enrollment,
        // rate limits, ack coalescing, down delivery rules, configuration.
        .target(
            name: "AegisGateway",
            dependencies: ["AegisProtocol"],
            path: "Sources/AegisGateway"
        ),
        // PostgreSQL: the Store actor (the only code that writes SQL), its
        // migrations and the embedded cluster (docs/gateway-design.md).
        .target(
            name: "AegisStore",
            dependencies: ["AegisPQ"],
            path: "Sources/AegisStore"
        ),
        // The running gateway: carries out the AegisGateway machines' actions
        // against the transport and the store.
        .target(
            name: "AegisServer",
            dependencies: [
                "AegisGateway", "AegisStore", "AegisTransport", "AegisProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "Sources/AegisServer"
        ),
        // The operators' REST API on Hummingbird: routes, bearer tokens and
        // scopes, errors, Server-Sent Events, /metrics, and the OpenAPI
        // document it serves (embedded from Resources/openapi.json).
        .target(
            name: "AegisAdmin",
            dependencies: [
                "AegisServer", "AegisStore", "AegisProtocol", "AegisGateway",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/AegisAdmin",
            resources: [.embedInCode("Resources/openapi.json")]
        ),
        // A typed client of the admin API (async-http-client), for aegisctl
        // and the bench harness.
        .target(
            name: "AegisAdminClient",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Sources/AegisAdminClient"
        ),
        // The agent SDK: the other side of the wire, on the same C core and
        // the transport's client (aegis_wsc.h).
        .target(
            name: "AegisAgent",
            dependencies: [
                "AegisProtocol", "AegisIO",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/AegisAgent"
        ),
        .executableTarget(
            name: "aegis-agent",
            dependencies: [
                "AegisAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/aegis-agent"
        ),
        // Exactly the unavoidable libsodium calls of the protocol, on
        // caller-prepared inputs: the baseline of every performance ratio.
        .target(
            name: "BareCrypto",
            path: "CSources/BareCrypto",
            publicHeadersPath: "include",
            linkerSettings: [.linkedLibrary("sodium")]
        ),
        // aegis-bench's engine: simulated agents on the transport's client,
        // the gateway's CPU from /proc, latency histograms, reports.
        .target(
            name: "AegisBench",
            dependencies: [
                "AegisProtocol", "AegisIO", "BareCrypto", "AegisAdminClient",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/AegisBench"
        ),
        .executableTarget(
            name: "aegis-bench",
            dependencies: [
                "AegisBench",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/aegis-bench"
        ),
        .executableTarget(
            name: "aegisctl",
            dependencies: [
                "AegisAdminClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/aegisctl"
        ),
        .executableTarget(
            name: "aegisd",
            dependencies: [
                "AegisProtocol",
                "AegisTransport",
                "AegisGateway",
                "AegisStore",
                "AegisServer",
                "AegisAdmin",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "Sources/aegisd"
        ),
        .testTarget(
            name: "AegisProtocolTests",
            dependencies: ["AegisProtocol", "AegisCore"],
            path: "Tests/AegisProtocolTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "AegisStoreTests",
            dependencies: ["AegisStore"],
            path: "Tests/AegisStoreTests"
        ),
        .testTarget(
            name: "AegisAgentTests",
            dependencies: ["AegisAgent", "AegisProtocol"],
            path: "Tests/AegisAgentTests"
        ),
        .testTarget(
            name: "AegisBenchTests",
            dependencies: ["AegisBench"],
            path: "Tests/AegisBenchTests"
        ),
        .testTarget(
            name: "AegisAdminTests",
            dependencies: ["AegisAdmin"],
            path: "Tests/AegisAdminTests"
        ),
        .testTarget(
            name: "AegisGatewayTests",
            dependencies: ["AegisGateway", "AegisProtocol"],
            path: "Tests/AegisGatewayTests"
        ),
    ]
)
