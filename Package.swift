// swift-tools-version:6.1
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "swift-https-agent",
    products: [
        .library(name: "HTTPSAgent", targets: ["HTTPSAgent"]),
        .library(name: "HTTPSAgentMetrics", targets: ["HTTPSAgentMetrics"]),
        .executable(name: "fetch", targets: ["fetch"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // Only for Examples/metrics-service.
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "HTTPSAgentTLS",
            dependencies: [
                "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "HTTPSAgent",
            dependencies: [
                "HTTPSAgentTLS",
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "HTTPSAgentMetrics",
            dependencies: [
                "HTTPSAgent",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "HTTPSAgentTestSupport",
            dependencies: [
                "HTTPSAgentTLS",
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "fetch",
            dependencies: [
                "HTTPSAgent",
                "HTTPSAgentTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/fetch",
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "metrics-service",
            dependencies: [
                "HTTPSAgent",
                "HTTPSAgentMetrics",
                "HTTPSAgentTestSupport",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Examples/metrics-service",
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "soak",
            dependencies: [
                "HTTPSAgent",
                "HTTPSAgentTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Examples/soak",
            swiftSettings: strictSettings
        ),
        // The response-path fuzz harness (see .ci/fuzz): a library the fuzz target and the regression test
        // share. It needs the library's internal types, so it only has content in debug builds.
        .target(
            name: "HTTPSAgentFuzzing",
            dependencies: [
                "HTTPSAgent",
                "HTTPSAgentTestSupport",  // compresses the seed corpus's bodies
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Tests/Fuzz/Harness",
            swiftSettings: strictSettings
        ),
        // libFuzzer entry point when built by .ci/fuzz (-sanitize=fuzzer, -D HTTPSAGENT_FUZZING); otherwise
        // a command that replays inputs: `swift run fuzz-response Tests/Fuzz/corpus`.
        .executableTarget(
            name: "fuzz-response",
            dependencies: ["HTTPSAgentFuzzing"],
            path: "Tests/Fuzz/ResponseFuzz",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "HTTPSAgentTLSTests",
            dependencies: [
                "HTTPSAgentTLS",
                "HTTPSAgentTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "HTTPSAgentTests",
            dependencies: [
                "HTTPSAgent",
                "fetch",  // built for the CLI tests, which run the binary
                "soak",  // built for the soak test, which runs the binary
                "HTTPSAgentFuzzing",
                "HTTPSAgentTLS",
                "HTTPSAgentTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "HTTPSAgentMetricsTests",
            dependencies: [
                "HTTPSAgentMetrics",
                "HTTPSAgent",
                "HTTPSAgentTestSupport",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
