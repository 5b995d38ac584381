// swift-tools-version: 6.1
// Aegis Gateway benchmarks: the core's seal/open/handshake against the bare
// libsodium calls they must make (see README.md in this directory).
import PackageDescription

let package = Package(
    name: "aegis-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "aegis-gateway", path: ".."),
        .package(url: "https://github.com/ordo-one/package-benchmark", from: "1.38.0",
                 traits: ["MallocInterposer"]),
    ],
    targets: [
        // The workloads (sessions by a real handshake, pre-sealed messages,
        // bare inputs of the same sizes), shared by both executables.
        .target(
            name: "CoreFixtures",
            dependencies: [
                .product(name: "BareCrypto", package: "aegis-gateway"),
                .product(name: "AegisCore", package: "aegis-gateway"),
            ],
            path: "Sources/CoreFixtures"
        ),
        // package-benchmark suite: `swift package benchmark`.
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                "CoreFixtures",
                .product(name: "Benchmark", package: "package-benchmark"),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
        ),
        // Interleaved ours-vs-bare ratios: `swift run -c release core-ratios`.
        .executableTarget(
            name: "core-ratios",
            dependencies: ["CoreFixtures"],
            path: "Sources/core-ratios"
        ),
    ]
)
