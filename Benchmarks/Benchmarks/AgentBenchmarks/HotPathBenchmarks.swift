import Benchmark
@_spi(Benchmarking) import HTTPSAgent
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded

// Micro-benchmarks of the library's hot paths, one operation at a time, through the probes the
// library exposes for them (`@_spi(Benchmarking)`, Sources/HTTPSAgent/Benchmarking/): each probe runs
// the library's own code for one operation. No server and no socket is involved, except in the
// ConnectionPool benchmark, whose pool needs one open connection (to the benchmarks' server) to lease.
//
// An iteration is 1,000 operations (`scalingFactor: .kilo`); the tables show each metric per operation
// (marked `*`).
func hotPathBenchmarks() {
    Benchmark(
        "pool lease and release, PoolStateMachine",
        configuration: hotPathConfiguration()
    ) { benchmark in
        let probe = PoolStateMachineProbe()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            precondition(probe.leaseAndRelease(), "the request did not get the idle connection")
        }
    }

    Benchmark(
        "pool lease and release, ConnectionPool",
        configuration: hotPathConfiguration(
            setup: { try await Probes.startConnectionPool() },
            teardown: { try await Probes.stopConnectionPool() }
        )
    ) { benchmark in
        let (probe, executor) = try Probes.connectionPool
        // On the event loop of the connection, where its handler releases it, as in the GET benchmarks.
        try await withTaskExecutorPreference(executor) {
            for _ in benchmark.scaledIterations {
                let reused = try await probe.leaseAndRelease()
                precondition(reused, "the lease did not reuse the pooled connection")
            }
        }
    }

    sessionCacheTakeAndStore("TLS 1.3 tickets", .tls13Tickets)
    sessionCacheTakeAndStore("TLS 1.2 sessions", .tls12Sessions)

    Benchmark(
        "session cache miss, 100 servers",
        configuration: hotPathConfiguration(
            setup: { try Probes.startSessionCache(.tls13Tickets) }
        )
    ) { benchmark in
        let probe = try Probes.sessionCache
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            precondition(!probe.miss(), "a session for a server never connected to")
        }
    }

    Benchmark(
        "timing record, no observer",
        configuration: hotPathConfiguration()
    ) { benchmark in
        // The channel and the probe are made here, on the thread that runs the loop: an EmbeddedChannel
        // belongs to the thread that made it.
        let channel = EmbeddedChannel()
        channel.localAddress = try SocketAddress(ipAddress: "192.0.2.10", port: 50_000)
        channel.remoteAddress = try SocketAddress(ipAddress: "198.51.100.20", port: 443)
        let probe = try RequestTrackerProbe(channel: channel)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(probe.record())
        }
        benchmark.stopMeasurement()
        _ = try channel.finish()
    }

    Benchmark(
        "request head encoding, GET with 4 fields",
        configuration: hotPathConfiguration()
    ) { benchmark in
        let channel = EmbeddedChannel()
        let probe = try RequestHeadProbe(request: Probes.request, channel: channel)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try probe.write()
            // The head, then the end: an empty buffer, since the body is not chunked.
            while let bytes = try channel.readOutbound(as: ByteBuffer.self) {
                blackHole(bytes)
            }
        }
        benchmark.stopMeasurement()
        _ = try channel.finish()
    }
}

/// What a reconnect does with a session cache of 100 servers holding `sessions`.
private func sessionCacheTakeAndStore(_ name: String, _ sessions: SessionCacheProbe.Sessions) {
    Benchmark(
        "session cache take and store, \(name), 100 servers",
        configuration: hotPathConfiguration(
            setup: { try Probes.startSessionCache(sessions) }
        )
    ) { benchmark in
        let probe = try Probes.sessionCache
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            precondition(probe.reconnect(), "no session to offer")
        }
    }
}

/// 1,000 operations an iteration, metrics per operation; runs stop after 3 seconds or 1,000 iterations.
private func hotPathConfiguration(
    setup: Benchmark.BenchmarkSetupHook? = nil,
    teardown: Benchmark.BenchmarkTeardownHook? = nil
) -> Benchmark.Configuration {
    Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal],
        warmupIterations: 2,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000,
        setup: setup,
        teardown: teardown
    )
}

/// The probes of the benchmark that this process runs, made in its setup.
private enum Probes {
    private struct State {
        var connectionPool: ConnectionPoolProbe?
        var sessionCache: SessionCacheProbe?
    }

    private static let state = NIOLockedValueBox(State())

    /// A `GET` with the fields a service's request typically has.
    static let request = HTTPRequest(
        method: .get,
        scheme: "https",
        authority: "api.example.com",
        path: "/v1/items?page=2",
        headerFields: [
            .userAgent: "swift-https-agent-benchmark/1.0",
            .accept: "application/json",
            .authorization: "Bearer 0123456789abcdef0123456789abcdef",
            HTTPField.Name("X-Request-ID")!: "7f3c2a10-5b4e-4d2a-9c1f-2e8b6a0d4c3e",
        ]
    )

    /// The pool probe, and the executor that runs tasks on its connection's event loop.
    static var connectionPool: (ConnectionPoolProbe, EventLoopTaskExecutor) {
        get throws {
            guard let probe = self.state.withLockedValue({ $0.connectionPool }) else {
                throw BenchmarkSetupError("the benchmark runs before its setup")
            }
            return (probe, try Fixture.server.executor)
        }
    }

    static var sessionCache: SessionCacheProbe {
        get throws {
            guard let probe = self.state.withLockedValue({ $0.sessionCache }) else {
                throw BenchmarkSetupError("the benchmark runs before its setup")
            }
            return probe
        }
    }

    /// Opens the pool's connection to the benchmarks' server, on the server's event-loop thread.
    static func startConnectionPool() async throws {
        let server = try Fixture.server
        let probe = try await ConnectionPoolProbe(url: server.url, eventLoopGroup: server.group)
        self.state.withLockedValue { $0.connectionPool = probe }
    }

    /// Shuts the pool down, after checking that the server accepted exactly one connection: every lease
    /// got the one that the setup opened.
    static func stopConnectionPool() async throws {
        let probe = self.state.withLockedValue { state in
            defer { state.connectionPool = nil }
            return state.connectionPool
        }
        let connections = try Fixture.server.connectionsAccepted
        await probe?.shutdown()
        guard connections == 1 else {
            throw BenchmarkSetupError("the server accepted \(connections) connections, expected 1")
        }
    }

    static func startSessionCache(_ sessions: SessionCacheProbe.Sessions) throws {
        let probe = try SessionCacheProbe(servers: 100, sessions: sessions)
        self.state.withLockedValue { $0.sessionCache = probe }
    }
}
