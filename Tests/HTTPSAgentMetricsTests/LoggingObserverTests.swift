import HTTPSAgent
import HTTPSAgentMetrics
import HTTPSAgentTestSupport
import Logging
import Testing

@Suite("LoggingObserver against loopback servers")
struct LoggingObserverTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func eachRequestsEventsCarryItsID() async throws {
        let (logger, store) = RecordingLogHandler.logger(.trace)
        let server = try await environment.tlsServer()
        try await withAgent(
            environment.configuration,
            observers: [LoggingObserver(logger: logger)],
            server: server
        ) { agent, server in
            _ = try await agent.fetch(server.url("/bytes/10?token=secret"))
            _ = try await agent.fetch(server.url("/hello"))
        }
        // Bounded wait, not an assertion on timing: the close is reported on the event loop.
        #expect(await eventually { store.all.contains { $0.message == "connection closed" } })
        let records = store.all

        // Every key shares the prefix.
        #expect(records.allSatisfy { $0.metadata.keys.allSatisfy { $0.hasPrefix("https_agent.") } })

        // Each request: started, got a connection and finished at debug, all under its own id. Ids are
        // unique in the process, so find them by path.
        func id(of path: String) -> String? {
            records.first { $0.message == "request started" && $0["https_agent.path"] == path }?[
                "https_agent.request_id"
            ]
        }
        let first = try #require(id(of: "/bytes/10"))
        let second = try #require(id(of: "/hello"))
        #expect(first != second)
        let requestMessages = [
            first: ["request started", "connection opened", "request finished"],
            second: ["request started", "connection reused", "request finished"],
        ]
        for (id, messages) in requestMessages {
            let debug = records.filter { $0.level == .debug && $0["https_agent.request_id"] == id }
            #expect(debug.map(\.message) == messages, "request \(id)")
            #expect(debug.allSatisfy { $0["https_agent.connection_id"] ?? "1" == "1" })
            let trace = records.filter { $0.level == .trace && $0["https_agent.request_id"] == id }
            #expect(
                trace.map(\.message)
                    == [
                        "request head written", "request body written", "first response byte",
                        "response head received", "response body finished",
                    ],
                "request \(id)"
            )
        }
        let started = records.filter { $0.message == "request started" }
        #expect(started.map { $0["https_agent.path"] } == ["/bytes/10", "/hello"])
        #expect(started.allSatisfy { $0["https_agent.host"] == "localhost" && $0["https_agent.method"] == "GET" })
        let opened = try #require(records.first { $0.message == "connection opened" })
        #expect(opened["https_agent.reused"] == "false")
        #expect(opened["https_agent.address"] == "127.0.0.1")
        #expect(opened["https_agent.tls_version"] == "TLSv1.3")
        let reused = try #require(records.first { $0.message == "connection reused" })
        #expect(reused["https_agent.idle_time"] != nil)

        // The connection's own events carry its id: the dial at trace, the close at debug.
        let connection = records.filter { $0["https_agent.connection_id"] == "1" }.map(\.message)
        for message in ["DNS lookup started", "TCP connect finished", "TLS handshake finished", "connection closed"] {
            #expect(connection.contains(message), "\(message)")
        }
        let closed = try #require(records.first { $0.message == "connection closed" })
        #expect(closed.level == .debug)
        #expect(closed["https_agent.reason"] == "shutdown")
        #expect(records.contains { $0.message == "pool changed" && $0["https_agent.free"] == "1" })
    }

    @Test func atDebugOnlyMilestonesAreLogged() async throws {
        let (logger, store) = RecordingLogHandler.logger(.debug)
        let agent = Agent(configuration: environment.configuration, observers: [LoggingObserver(logger: logger)])
        let port = try await unusedLoopbackPort()
        await #expect(throws: AgentError.self) {
            try await agent.fetch("http://127.0.0.1:\(port)/")
        }
        await agent.shutdown()

        let records = store.all
        #expect(records.allSatisfy { $0.level == .debug })
        #expect(records.map(\.message) == ["request started", "connection failed", "request failed"])
        let failed = try #require(records.last)
        #expect(failed["https_agent.request_id"] != nil)
        #expect(failed["https_agent.request_id"] == records.first?["https_agent.request_id"])
        #expect(failed["https_agent.error_code"] == "connectFailed")
        #expect(failed["https_agent.error_phase"] == "connect")
        #expect((failed.error as? AgentError)?.code == .connectFailed)
    }

    @Test func aFollowedRedirectIsLoggedWithoutItsQuery() async throws {
        let (logger, store) = RecordingLogHandler.logger(.debug)
        let server = try await environment.tlsServer()
        try await withAgent(
            environment.configuration,
            observers: [LoggingObserver(logger: logger)],
            server: server
        ) { agent, server in
            _ = try await agent.fetch(server.url("/chain/1?token=secret"))
        }
        let redirected = store.all.filter { $0.message == "request redirected" }
        #expect(redirected.count == 1)
        #expect(redirected.first?["https_agent.status"] == "302")
        #expect(redirected.first?["https_agent.location"] == "https://localhost:\(server.port)/chain/0")
        #expect(!store.all.contains { record in record.metadata.values.contains { "\($0)".contains("secret") } })
    }
}
