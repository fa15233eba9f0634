// swift-tools-version:6.1
import PackageDescription

// A separate package so that the library's own build and tests never pull in package-benchmark.
// Run from this directory: `swift package --disable-sandbox benchmark` (see README.md).
let package = Package(
    name: "swift-https-agent-benchmarks",
    dependencies: [
        // Named, so that `package: "swift-https-agent"` works whatever the checkout's folder is called
        // (a path dependency's identity is otherwise its folder name).
        .package(name: "swift-https-agent", path: ".."),
        // The MallocInterposer trait alone: the default traits also pull swift-runtime-interposer,
        // which is not available here and not needed for the metrics these benchmarks report.
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        // Only for the `bench` comparison: the peer this library is measured against.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
    ],
    targets: [
        .executableTarget(
            name: "AgentBenchmarks",
            dependencies: [
                .product(name: "HTTPSAgent", package: "swift-https-agent"),
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Benchmarks/AgentBenchmarks",
            swiftSettings: [
                .enableUpcomingFeature("InternalImportsByDefault"),
                .enableUpcomingFeature("MemberImportVisibility"),
                .enableUpcomingFeature("ExistentialAny"),
            ],
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        ),
        // `swift run -c release --package-path Benchmarks bench`: this library, AsyncHTTPClient and
        // URLSession against nginx on loopback, one table (see README.md).
        .executableTarget(
            name: "bench",
            dependencies: [
                .product(name: "HTTPSAgent", package: "swift-https-agent"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/bench",
            swiftSettings: [
                .enableUpcomingFeature("InternalImportsByDefault"),
                .enableUpcomingFeature("MemberImportVisibility"),
                .enableUpcomingFeature("ExistentialAny"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
