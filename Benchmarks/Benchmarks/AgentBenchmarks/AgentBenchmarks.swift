import Benchmark
import HTTPSAgent
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

// What the observer hooks cost on the hot path, a GET on a reused keep-alive connection: with no
// observer, with Agent-wide observers that implement nothing, and with a per-request one. All four
// benchmarks run the same loop of sequential GETs against an in-process plain-HTTP server; they
// differ only in the observers.
//
// The benchmark tool runs each benchmark in a process of its own, so `Benchmark.setup` (the server)
// and each benchmark's own setup (its Agent, warmed so that its connection is open and pooled) run
// once per benchmark. An iteration is 1,000 requests; the tool's tables show each metric per request
// (marked `*`), `--scale` shows it per iteration.
let benchmarks: @Sendable () -> Void = {
    Benchmark.setup = { try await Fixture.startServer() }
    Benchmark.teardown = { try await Fixture.stopServer() }

    Benchmark(
        "GET reused connection, no observer",
        configuration: configuration(agentObservers: [])
    ) { benchmark in
        try await getLoop(iterations: benchmark.scaledIterations)
    }

    Benchmark(
        "GET reused connection, 1 no-op observer",
        configuration: configuration(agentObservers: [NoOpObserver()])
    ) { benchmark in
        try await getLoop(iterations: benchmark.scaledIterations)
    }

    Benchmark(
        "GET reused connection, 4 no-op observers",
        configuration: configuration(agentObservers: Array(repeating: NoOpObserver(), count: 4))
    ) { benchmark in
        try await getLoop(iterations: benchmark.scaledIterations)
    }

    Benchmark(
        "GET reused connection, per-request no-op observer",
        configuration: configuration(agentObservers: [])
    ) { benchmark in
        let (agent, url, executor) = Fixture.client
        let observer = NoOpObserver()
        try await withTaskExecutorPreference(executor) {
            for _ in benchmark.scaledIterations {
                // The same work as `agent.get(url)`, plus the observer.
                let response = try await agent.execute(HTTPRequest(method: .get, url: url), observer: observer)
                blackHole(try await response.body.collect(upTo: 1024))
            }
        }
    }

    hotPathBenchmarks()
}

/// An observer that implements nothing: every event goes to the protocol's empty defaults.
struct NoOpObserver: AgentObserver {}

/// Short runs, so that the whole suite measures for well under a minute on two cores.
///
/// Each iteration is 1,000 sequential GETs (`scalingFactor: .kilo`), long enough to smooth out the
/// noise of single loopback round trips. The metrics count the whole process, so the server's
/// share (its allocations and CPU) is in every number, the same in each benchmark.
private func configuration(agentObservers: [any AgentObserver]) -> Benchmark.Configuration {
    Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .cpuTotal],
        warmupIterations: 2,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 200,
        setup: { try await Fixture.startAgent(observers: agentObservers) },
        teardown: { try await Fixture.stopAgent() }
    )
}

/// Sends one GET per iteration through the benchmark's Agent and reads each body to its end, which
/// hands the connection back to the pool for the next request.
private func getLoop(iterations: Range<Int>) async throws {
    let (agent, url, executor) = Fixture.client
    try await withTaskExecutorPreference(executor) {
        for _ in iterations {
            let response = try await agent.get(url)
            blackHole(try await response.body.collect(upTo: 1024))
        }
    }
}

/// The server and the Agent of the benchmark that this process runs, on one event-loop thread.
enum Fixture {
    private struct State {
        var group: MultiThreadedEventLoopGroup?
        var executor: EventLoopTaskExecutor?
        var server: KeepAliveServer?
        var agent: Agent?
    }

    private static let state = NIOLockedValueBox(State())

    /// The benchmark's Agent, the server's URL, and the executor to send requests from.
    static var client: (agent: Agent, url: String, executor: EventLoopTaskExecutor) {
        self.state.withLockedValue { state in
            guard let agent = state.agent, let server = state.server, let executor = state.executor else {
                preconditionFailure("the benchmark runs before its setup")
            }
            return (agent, server.url, executor)
        }
    }

    /// The server, its URL and event-loop thread, and the executor that runs tasks on that thread.
    static var server:
        (url: String, group: any EventLoopGroup, executor: EventLoopTaskExecutor, connectionsAccepted: Int)
    {
        get throws {
            try self.state.withLockedValue { state in
                guard let server = state.server, let group = state.group, let executor = state.executor else {
                    throw BenchmarkSetupError("the server did not start")
                }
                return (server.url, group, executor, server.connectionsAccepted)
            }
        }
    }

    /// Starts the event-loop thread and the server on it.
    static func startServer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server: KeepAliveServer
        do {
            server = try await KeepAliveServer.start(on: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        self.state.withLockedValue { state in
            state.group = group
            state.executor = EventLoopTaskExecutor(group.next())
            state.server = server
        }
    }

    static func stopServer() async throws {
        let (server, group) = self.state.withLockedValue { state in
            defer { state = State() }
            return (state.server, state.group)
        }
        await server?.stop()
        try await group?.shutdownGracefully()
    }

    /// Creates the Agent on the server's thread and warms it up: the first request opens the
    /// connection, the rest reuse it.
    static func startAgent(observers: [any AgentObserver]) async throws {
        let (group, server) = self.state.withLockedValue { ($0.group, $0.server) }
        guard let group, let server else {
            throw BenchmarkSetupError("the server did not start")
        }
        let agent = Agent(eventLoopGroup: group, observers: observers)
        self.state.withLockedValue { $0.agent = agent }
        for _ in 0..<100 {
            let response = try await agent.get(server.url)
            guard response.status == .ok else {
                throw BenchmarkSetupError("the server answered \(response.status)")
            }
            blackHole(try await response.body.collect(upTo: 1024))
        }
        let response = try await agent.get(server.url)
        _ = try await response.body.collect(upTo: 1024)
        guard response.connection.isReused else {
            throw BenchmarkSetupError("the warm-up requests did not reuse their connection")
        }
    }

    /// Checks that every request of the run shared the warm-up's connection, then shuts the Agent down.
    static func stopAgent() async throws {
        let (agent, server) = self.state.withLockedValue { state in
            defer { state.agent = nil }
            return (state.agent, state.server)
        }
        let connections = server?.connectionsAccepted ?? 0
        await agent?.shutdown()
        guard connections == 1 else {
            throw BenchmarkSetupError("the server accepted \(connections) connections, expected 1")
        }
    }
}

/// A setup or teardown step failed; the benchmark tool reports the message.
struct BenchmarkSetupError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}
