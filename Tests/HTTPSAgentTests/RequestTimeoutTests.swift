import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

/// `requestTimeout`: one bound over the whole request, whatever phase it is in when time runs out.
@Suite("Request timeout")
struct RequestTimeoutTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    private func configuration(_ timeout: Duration) -> Agent.Configuration {
        var configuration = environment.configuration()
        configuration.requestTimeout = timeout
        configuration.readIdleTimeout = nil
        return configuration
    }

    // Each test first gets a connection into the pool, so that the phase that runs out is the one under
    // test. On a loaded machine a dial can outlast the bound; it then still joins the pool, so trying
    // again picks it up.
    private func warmUp(_ agent: Agent, _ server: TestHTTPServer) async throws {
        for _ in 0..<20 {
            if (try? await agent.get(server.url("/hello")).text()) == "hello" { return }
        }
        Issue.record("no connection came up in 20 tries")
    }

    @Test func waitingForTheHead() async throws {
        try await withAgent(configuration(.seconds(8)), server: environment.tlsServer()) { agent, server in
            try await self.warmUp(agent, server)
            let accepted = server.stats.accepted
            let error = await agentError { _ = try await agent.get(server.url("/delay/60000")) }
            #expect(error?.code == .requestTimeout)
            #expect(error?.phase == .responseHead)
            #expect(error?.host == "localhost")
            #expect(error?.message.contains("requestTimeout") == true)
            #expect((error?.timing?.total ?? .zero) >= .seconds(8))
            #expect(error?.timing?.reusedConnection == true)
            // The connection it used is closed: the next request opens another.
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(!next.connection.isReused)
            #expect(server.stats.accepted == accepted + 1)
        }
    }

    @Test func inTheMiddleOfTheBody() async throws {
        try await withAgent(configuration(.seconds(8)), server: environment.tlsServer()) { agent, server in
            try await self.warmUp(agent, server)
            // The head at once, then a tenth of the body every 10 s: only the overall bound stops it.
            let response = try await agent.get(server.url("/slow/1000/100000"))
            let error = await agentError { _ = try await response.body.collect(upTo: 1 << 20) }
            #expect(error?.code == .requestTimeout)
            #expect(error?.phase == .responseBody)
            let next = try await agent.get(server.url("/hello"))
            #expect(!next.connection.isReused)
        }
    }

    @Test func whileTheConnectionIsStillBeingOpened() async throws {
        let stuck = try StuckListener()
        var configuration = configuration(.milliseconds(500))
        configuration.connectTimeout = .seconds(30)
        let agent = Agent(configuration: configuration)
        let error = await agentError { _ = try await agent.get("https://127.0.0.1:\(stuck.port)/") }
        #expect(error?.code == .requestTimeout)
        #expect(error?.phase == .poolWait)
        #expect(error?.message.contains("while it waited for a connection") == true)
        #expect(agent.stats.origins.first?.waiting ?? 0 == 0, "the waiter is gone")
        await agent.shutdown()
        #expect(agent.stats.totalConnections == 0)
    }

    @Test func aQuickRequestIsNotTouched() async throws {
        // 5 s: a loaded machine (the whole suite runs in parallel) can take seconds over a quick request.
        try await withAgent(configuration(.seconds(5)), server: environment.tlsServer()) { agent, server in
            try await self.warmUp(agent, server)
            let accepted = server.stats.accepted
            for _ in 0..<3 {
                let text = try await agent.get(server.url("/hello")).text()
                #expect(text == "hello")
            }
            // Past every earlier request's deadline: their timers were cancelled with their exchanges, so
            // none closes the pooled connection now.
            try await Task.sleep(for: .milliseconds(5500))
            let last = try await agent.get(server.url("/hello"))
            #expect(try await last.text() == "hello")
            #expect(last.connection.isReused)
            #expect(server.stats.accepted == accepted, "the deadline timers never closed a healthy connection")
        }
        #expect(Agent.Configuration().requestTimeout == nil, "no overall bound by default")
    }
}
