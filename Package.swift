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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
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
        // Swift value types over AegisCore; secrets stay on the C side.
        .target(
            name: "AegisProtocol",
            dependencies: ["AegisCore"],
            path: "Sources/AegisProtocol"
        ),
        .executableTarget(
            name: "aegisd",
            dependencies: [
                "AegisProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/aegisd"
        ),
        .testTarget(
            name: "AegisProtocolTests",
            dependencies: ["AegisProtocol", "AegisCore"],
            path: "Tests/AegisProtocolTests",
            resources: [.copy("Fixtures")]
        ),
    ]
)
