import HTTPSAgent
import HTTPSAgentMetrics
import HTTPSAgentTestSupport
import HTTPTypes
import Metrics
import MetricsTestKit
import Testing

/// The metrics observer on a real Agent against the loopback servers. Each test has its own
/// `TestMetrics`, passed to the observer, so that tests running in parallel do not share metrics.
@Suite("MetricsObserver against loopback servers")
struct MetricsObserverTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    static let phases = "https_agent_request_phase_duration"

    @Test func sequentialRequestsOpenOneConnectionAndReuseIt() async throws {
        let metrics = TestMetrics()
        let observer = MetricsObserver(factory: metrics)
        let server = try await environment.tlsServer()
        try await withAgent(environment.configuration, observers: [observer], server: server) { agent, server in
            for _ in 0..<3 {
                #expect(try await agent.fetch(server.url("/bytes/100")).status == .ok)
            }
            // Pool changes are reported after the body's end reaches the caller: wait for the release.
            let host = [("host", "localhost")]
            let settled = try await eventually {
                let free = try metrics.expectMeter("https_agent_pool_connections", [("state", "free")] + host)
                let active = try metrics.expectMeter("https_agent_pool_connections", [("state", "active")] + host)
                return free.lastValue == 1 && active.lastValue == 0
            }
            #expect(settled)
            #expect(try metrics.expectMeter("https_agent_pool_waiting_requests", host).lastValue == 0)
        }

        let host = [("host", "localhost")]
        #expect(metrics.counterTotal(label: "https_agent_connections_opened_total", dimensions: host) == 1)
        #expect(metrics.counterTotal(label: "https_agent_connections_reused_total", dimensions: host) == 2)
        #expect(
            try metrics.expectCounter("https_agent_tls_handshakes_total", [("resumed", "false")] + host).totalValue == 1
        )
        #expect(metrics.counters(label: "https_agent_tls_handshakes_total", dimensions: [("resumed", "true")]).isEmpty)
        #expect(metrics.counters(label: "https_agent_errors_total").isEmpty)

        // One request on a new connection, two on the reused one, all 2xx and each taking some time.
        let fresh = Self.values(metrics, phase: "total", [("reused", "false"), ("status_class", "2xx")] + host)
        let reused = Self.values(metrics, phase: "total", [("reused", "true"), ("status_class", "2xx")] + host)
        #expect(fresh.count == 1)
        #expect(reused.count == 2)
        #expect((fresh + reused).allSatisfy { $0 > 0 })
        #expect(Self.values(metrics, phase: "total", []).count == 3)

        // DNS, connect and TLS only for the request that opened the connection.
        for phase in ["dns", "connect", "tls"] {
            #expect(Self.values(metrics, phase: phase, [("reused", "false")]).count == 1, "\(phase)")
            #expect(Self.values(metrics, phase: phase, [("reused", "true")]).isEmpty, "\(phase)")
        }
        for phase in ["queue", "request_write", "ttfb", "transfer"] {
            #expect(Self.values(metrics, phase: phase, []).count == 3, "\(phase)")
        }
        // Every series carries the same dimension names, and never the path.
        for timer in metrics.timers(label: Self.phases) {
            #expect(Set(timer.dimensions.map(\.0)) == ["phase", "host", "reused", "resumed", "status_class"])
        }
        // The shutdown closed the one connection.
        let closed = await eventually {
            metrics.counterTotal(label: "https_agent_connections_closed_total", dimensions: [("reason", "shutdown")])
                == 1
        }
        #expect(closed)
    }

    @Test func followedRedirectsAreCountedAndEachHopIsARequest() async throws {
        let metrics = TestMetrics()
        let observer = MetricsObserver(factory: metrics)
        let server = try await environment.tlsServer()
        try await withAgent(environment.configuration, observers: [observer], server: server) { agent, server in
            let status = try await agent.fetch(server.url("/chain/2")).status
            #expect(status == .ok)
        }
        let redirects = try metrics.expectCounter(
            "https_agent_redirects_total",
            [("status", "302"), ("host", "localhost")]
        )
        #expect(redirects.totalValue == 2)
        // Two 302 hops and the final 200, each timed as a request of its own.
        #expect(Self.values(metrics, phase: "total", [("status_class", "3xx")]).count == 2)
        #expect(Self.values(metrics, phase: "total", [("status_class", "2xx")]).count == 1)
    }

    @Test func aRefusedConnectCountsAnError() async throws {
        let metrics = TestMetrics()
        let agent = Agent(configuration: environment.configuration, observers: [MetricsObserver(factory: metrics)])
        let port = try await unusedLoopbackPort()
        let error = await #expect(throws: AgentError.self) {
            try await agent.fetch("http://127.0.0.1:\(port)/")
        }
        await agent.shutdown()
        #expect(error?.code == .connectFailed)

        let host = ("host", "127.0.0.1")
        let errors = try metrics.expectCounter(
            "https_agent_errors_total",
            [("code", "connectFailed"), ("phase", "connect"), host]
        )
        #expect(errors.totalValue == 1)
        #expect(
            try metrics.expectCounter("https_agent_connections_failed_total", [("code", "connectFailed"), host])
                .totalValue == 1
        )
        #expect(metrics.counters(label: "https_agent_connections_opened_total").isEmpty)
        // A failed request records its total time only, as an error.
        #expect(Self.values(metrics, phase: "total", [("status_class", "error"), host]).count == 1)
        #expect(
            Set(metrics.timers(label: Self.phases).flatMap(\.dimensions).filter { $0.0 == "phase" }.map(\.1)) == [
                "total"
            ]
        )
    }

    @Test func theTaskLocalFactoryAndOptionsApply() async throws {
        let metrics = TestMetrics()
        // No factory passed: the observer takes the one bound around its creation, not the global one.
        let observer = withMetricsFactory(metrics) {
            MetricsObserver(prefix: "client", includeHost: false)
        }
        let server = try await environment.plainServer()
        try await withAgent(environment.configuration, observers: [observer], server: server) { agent, server in
            let notFound = try await agent.fetch(server.url("/status/404"))
            let found = try await agent.fetch(server.url("/hello"))
            #expect(notFound.status == .notFound)
            #expect(found.status == .ok)
        }

        let label = "client_request_phase_duration"
        #expect(metrics.timers(label: label, dimensions: [("phase", "total"), ("status_class", "4xx")]).count == 1)
        #expect(metrics.timers(label: label, dimensions: [("phase", "total"), ("status_class", "2xx")]).count == 1)
        // Plain HTTP: a connect phase, no TLS phase and no handshake.
        #expect(!metrics.timers(label: label, dimensions: [("phase", "connect")]).isEmpty)
        #expect(metrics.timers(label: label, dimensions: [("phase", "tls")]).isEmpty)
        #expect(metrics.counters(label: "client_tls_handshakes_total").isEmpty)
        #expect(metrics.counterTotal(label: "client_connections_opened_total") == 1)

        let names = metrics.timers.map(\.label) + metrics.counters.map(\.label) + metrics.meters.map(\.label)
        #expect(!names.isEmpty)
        #expect(names.allSatisfy { $0.hasPrefix("client_") })
        let dimensions =
            metrics.timers.flatMap(\.dimensions) + metrics.counters.flatMap(\.dimensions)
            + metrics.meters.flatMap(\.dimensions)
        #expect(!dimensions.contains { $0.0 == "host" })
    }

    /// The values of every phase timer series for `phase` whose dimensions include `dimensions`.
    static func values(_ metrics: TestMetrics, phase: String, _ dimensions: [(String, String)]) -> [Int64] {
        metrics.timers(label: self.phases, dimensions: [("phase", phase)] + dimensions).flatMap(\.values)
    }
}
