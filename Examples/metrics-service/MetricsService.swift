import HTTPSAgent
import HTTPSAgentMetrics
import HTTPSAgentTestSupport
import HTTPTypes
import Logging
import Metrics
import Prometheus

/// A service that calls an HTTPS upstream through one shared Agent and exports what the Agent saw in
/// Prometheus' text format.
///
/// `swift run metrics-service` starts a local HTTPS upstream (with a test CA made at start, so no
/// network is needed), sends it a burst of traffic — quick, slow and failing requests, more at once than
/// the pool allows — and prints the registry as a Prometheus scrape would read it. In a real service,
/// bootstrap the factory the same way and serve `registry.emitToString()` on `/metrics`.
///
/// Options: `--requests N` (default 40), `--log-level trace|debug|info` (default info: no request logs).
@main
struct MetricsService {
    static func main() async throws {
        let options = Options(CommandLine.arguments.dropFirst())

        // 1. The metrics backend, bootstrapped once at start as a service would.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var logger = Logger(label: "metrics-service")
        logger.logLevel = options.logLevel

        // 2. An upstream to call: a local HTTPS server.
        let certificates = try TestCertificates()
        let upstream = try await TestHTTPServer.start(.init(tls: certificates.serverOptions()))

        // 3. One Agent for the whole service, with the metrics and logging observers installed.
        let agent = Agent(
            configuration: .init(
                maxSocketsPerHost: 4,
                tls: TLSConfiguration(trustRoots: .pem(certificates.caPEM))
            ),
            observers: [MetricsObserver(), LoggingObserver(logger: logger)]
        )

        // 4. Traffic: more requests at once than the pool has sockets, so some queue.
        let paths = ["/hello", "/bytes/20000", "/delay/30", "/status/503", "/chunked/5000"]
        var failures = 0
        await withTaskGroup(of: Bool.self) { group in
            for index in 0..<options.requests {
                let url = upstream.url(paths[index % paths.count])
                group.addTask {
                    do {
                        let response = try await agent.get(url)
                        _ = try await response.body.collect(upTo: 1 << 20)
                        return true
                    } catch {
                        return false
                    }
                }
            }
            for await succeeded in group where !succeeded { failures += 1 }
        }
        // A request that fails: nothing listens on this port.
        let closed = try await unusedLoopbackPort()
        do {
            _ = try await agent.get("https://127.0.0.1:\(closed)/")
        } catch {
            failures += 1
        }
        await agent.shutdown()
        try await upstream.shutdown()

        // 5. What a scrape of /metrics would return.
        print("# \(options.requests + 1) requests, \(failures) failed; upstream \(upstream.url("/"))")
        print(registry.emitToString(), terminator: "")
    }
}

struct Options {
    var requests = 40
    var logLevel = Logger.Level.info

    init(_ arguments: ArraySlice<String>) {
        var arguments = arguments
        while let argument = arguments.popFirst() {
            switch argument {
            case "--requests":
                self.requests = arguments.popFirst().flatMap { Int($0) } ?? self.requests
            case "--log-level":
                self.logLevel = arguments.popFirst().flatMap { Logger.Level(rawValue: $0) } ?? self.logLevel
            default:
                print("unknown option \(argument); options: --requests N, --log-level LEVEL")
            }
        }
    }
}
