import HTTPSAgent
import HTTPSAgentMetrics
import HTTPTypes
import MetricsTestKit
import NIOCore
import Testing

/// The metrics observer fed with events by hand, for cases a live Agent does not produce on demand.
@Suite("MetricsObserver with synthetic events")
struct MetricsObserverEventTests {
    static let request = ObservedRequest(
        id: 1,
        method: .get,
        scheme: "https",
        host: "example.com",
        port: 443,
        path: "/a?token=secret"
    )

    /// A record with every milestone a millisecond after the previous one.
    static func timing(reused: Bool, status: Int? = nil) -> RequestTiming {
        var timing = RequestTiming(startedAt: .now())
        timing.statusCode = status
        timing.reusedConnection = reused
        timing.queueEnd = .milliseconds(1)
        if !reused {
            timing.dnsEnd = .milliseconds(2)
            timing.connectEnd = .milliseconds(3)
            timing.tlsEnd = .milliseconds(4)
        }
        timing.requestStart = .milliseconds(5)
        timing.requestEnd = .milliseconds(6)
        timing.firstByte = .milliseconds(7)
        timing.responseHead = .milliseconds(7)
        timing.end = .milliseconds(8)
        return timing
    }

    @Test func phasesOfANewConnectionAddUpToTheTotal() throws {
        let metrics = TestMetrics()
        let observer = MetricsObserver(factory: metrics)
        observer.requestFinished(Self.request, timing: Self.timing(reused: false, status: 201))

        func value(_ phase: String) throws -> Int64 {
            let timer = try metrics.expectTimer(
                "https_agent_request_phase_duration",
                [
                    ("phase", phase), ("host", "example.com"), ("reused", "false"), ("resumed", "false"),
                    ("status_class", "2xx"),
                ]
            )
            return try #require(timer.lastValue)
        }
        let phases = ["queue", "dns", "connect", "tls", "request_write", "ttfb", "transfer"]
        let values = try phases.map(value)
        #expect(values == [1, 1, 1, 1, 2, 1, 1].map { Int64($0) * 1_000_000 })
        #expect(try value("total") == values.reduce(0, +))
    }

    @Test func aReusedConnectionRecordsNoDialPhases() {
        let metrics = TestMetrics()
        let observer = MetricsObserver(factory: metrics)
        observer.requestFinished(Self.request, timing: Self.timing(reused: true, status: 503))

        let timers = metrics.timers(label: "https_agent_request_phase_duration")
        let phases = Set(timers.flatMap(\.dimensions).filter { $0.0 == "phase" }.map(\.1))
        #expect(phases == ["queue", "request_write", "ttfb", "transfer", "total"])
        #expect(timers.allSatisfy { $0.dimensions.contains { $0 == ("status_class", "5xx") } })
        #expect(timers.allSatisfy { $0.dimensions.contains { $0 == ("reused", "true") } })
    }

    @Test func aFailedRequestRecordsOnlyItsTotalAsAnError() {
        let metrics = TestMetrics()
        let observer = MetricsObserver(factory: metrics)
        var failed = Self.timing(reused: true, status: 404)
        failed.firstByte = nil
        let error = AgentError.Code.responseBodyTruncated
        observer.requestFailed(Self.request, error: Self.error(error), timing: failed)

        let label = "https_agent_request_phase_duration"
        #expect(metrics.timers(label: label, dimensions: [("status_class", "4xx")]).isEmpty)
        #expect(metrics.timers(label: label, dimensions: [("status_class", "error")]).count == 1)
        #expect(metrics.timers(label: label, dimensions: [("phase", "total")]).count == 1)
        #expect(
            metrics.counterTotal(label: "https_agent_errors_total", dimensions: [("code", "responseBodyTruncated")])
                == 1
        )
    }

    @Test func poolMetersSumTheOriginsOfAHost() throws {
        let metrics = TestMetrics()
        let observer = MetricsObserver(factory: metrics)
        observer.poolChanged(.init(origin: "https://example.com:443", active: 2, free: 1))
        observer.poolChanged(.init(origin: "https://example.com:8443", connecting: 1, active: 1, waiting: 3))
        observer.poolChanged(.init(origin: "https://[::1]:8443", free: 4))

        func meter(_ state: String, _ host: String) throws -> Double? {
            try metrics.expectMeter("https_agent_pool_connections", [("state", state), ("host", host)]).lastValue
        }
        #expect(try meter("active", "example.com") == 3)
        #expect(try meter("free", "example.com") == 1)
        #expect(try meter("connecting", "example.com") == 1)
        #expect(try meter("free", "::1") == 4)
        #expect(try metrics.expectMeter("https_agent_pool_waiting_requests", [("host", "example.com")]).lastValue == 3)

        // An origin's pool emptying takes its share out of the sum.
        observer.poolChanged(.init(origin: "https://example.com:8443"))
        #expect(try meter("active", "example.com") == 2)
        #expect(try metrics.expectMeter("https_agent_pool_waiting_requests", [("host", "example.com")]).lastValue == 0)
    }

    @Test func withoutTheHostPoolMetersSumEveryOrigin() throws {
        let metrics = TestMetrics()
        let observer = MetricsObserver(includeHost: false, factory: metrics)
        observer.poolChanged(.init(origin: "https://a.example:443", active: 2))
        observer.poolChanged(.init(origin: "http://b.example:80", active: 1, free: 5))
        observer.poolChanged(.init(origin: "https://a.example:443", active: 1, free: 1))

        #expect(try metrics.expectMeter("https_agent_pool_connections", [("state", "active")]).lastValue == 2)
        #expect(try metrics.expectMeter("https_agent_pool_connections", [("state", "free")]).lastValue == 6)
    }

    @Test func connectionEventsAreCounted() throws {
        let metrics = TestMetrics()
        let observer = MetricsObserver(factory: metrics)
        let connection = ObservedConnection(id: 7, scheme: "https", host: "example.com", port: 443)
        observer.tlsFinished(connection, tls: TLSInfo(version: "TLSv1.3", cipher: "X", sessionResumed: true))
        observer.connectionClosed(connection, reason: .idleTimeout)
        observer.connectionFailed(connection, error: Self.error(.certificateVerificationFailed))

        let host = ("host", "example.com")
        #expect(
            try metrics.expectCounter("https_agent_tls_handshakes_total", [("resumed", "true"), host]).totalValue == 1
        )
        #expect(
            try metrics.expectCounter("https_agent_connections_closed_total", [("reason", "idleTimeout"), host])
                .totalValue == 1
        )
        #expect(
            try metrics.expectCounter(
                "https_agent_connections_failed_total",
                [("code", "certificateVerificationFailed"), host]
            ).totalValue == 1
        )
    }

    static func error(_ code: AgentError.Code) -> AgentError {
        AgentError(code: code, phase: .responseBody, host: "example.com", port: 443, message: "test")
    }
}
