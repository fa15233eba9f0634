import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

@Suite("Agent pooling against a real TLS server")
struct AgentPoolingTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func hundredSequentialGetsUseOneConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            for index in 0..<100 {
                let response = try await agent.get(server.url("/bytes/100"))
                #expect(response.status == .ok)
                #expect(try await response.body.collect(upTo: 1000).readableBytes == 100)
                #expect(response.connection.isReused == (index > 0))
                #expect(response.serverConnectionID == 1, "request \(index)")
                #expect(response.connection.tls?.version == "TLSv1.3")
            }
            #expect(server.stats.accepted == 1)
            #expect(server.stats.requests == 100)
            #expect(server.stats.fullHandshakes == 1)
        }
    }

    @Test func concurrentRequestsNeverExceedMaxSocketsPerHost() async throws {
        let configuration = environment.configuration(maxSocketsPerHost: 4)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for task in 0..<50 {
                    group.addTask {
                        var ok = 0
                        for request in 0..<4 {
                            let path = (task + request) % 3 == 0 ? "/delay/5" : "/bytes/512"
                            let response = try await agent.get(server.url(path))
                            _ = try await response.body.collect(upTo: 4096)
                            if response.status == .ok { ok += 1 }
                        }
                        return ok
                    }
                }
                let succeeded = try await group.reduce(0, +)
                #expect(succeeded == 200)
            }
            #expect(server.stats.requests == 200)
            #expect(server.stats.maxOpen <= 4)
            #expect(server.stats.accepted <= 4)
        }
    }

    @Test func maxFreeSocketsAndIdleTimeoutLimitWhatStaysOpen() async throws {
        let configuration = environment.configuration(
            maxSocketsPerHost: 8,
            maxFreeSocketsPerHost: 2,
            idleTimeout: .milliseconds(300)
        )
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        // 1 s: every request is on its way before the first ends, even on a loaded machine.
                        let response = try await agent.get(server.url("/delay/1000"))
                        _ = try await response.text()
                    }
                }
                try await group.waitForAll()
            }
            #expect(server.stats.maxOpen == 8)
            // The six sockets beyond maxFreeSocketsPerHost are closed as they are released.
            #expect(await server.waitUntil { $0.open <= 2 })
            #expect(agent.stats.origins.first?.free ?? 0 <= 2)
            // After the idle timeout none is left, on either side.
            #expect(await server.waitUntil { $0.open == 0 })
            #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
        }
    }

    @Test func theIdleTimeoutCountsFromTheLastRelease() async throws {
        // The first release's timer is left running across the next lease. When it comes, the connection
        // has been free for less than the timeout: it must stay, and close only a whole timeout after its
        // last release. Requests 1.2 s apart against a timeout of 3 s: the first timer comes while the
        // connection is free again after the third request.
        let timeout = Duration.seconds(3)
        let configuration = environment.configuration(idleTimeout: timeout)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            let clock = ContinuousClock()
            var previousStart: ContinuousClock.Instant?
            var lastStart = clock.now
            for _ in 0..<4 {
                lastStart = clock.now
                let response = try await agent.get(server.url("/hello"))
                _ = try await response.text()
                // The connection was free at most from the previous request's start to this one's end. On a
                // loaded machine the sleep can overrun the timeout; only below it must the connection stay.
                if let previousStart, clock.now - previousStart < timeout - .milliseconds(100) {
                    #expect(response.connection.isReused, "free for less than the idle timeout")
                }
                previousStart = lastStart
                try await Task.sleep(for: .milliseconds(1200))
            }
            // The last release came after `lastStart`, so the close comes a whole timeout after that.
            #expect(await server.waitUntil { $0.open == 0 })
            #expect(clock.now - lastStart >= timeout - .milliseconds(100))
            // The server can see the close before the Agent's event loop has reported it to the pool.
            #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
        }
    }

    @Test func serverClosingAnIdleConnectionDoesNotFailTheNextRequest() async throws {
        let server = try await environment.tlsServer(closeIdleAfter: .milliseconds(50))
        try await withAgent(environment.configuration(), server: server) { agent, server in
            let first = try await agent.get(server.url("/hello"))
            #expect(try await first.text() == "hello")
            #expect(await server.waitUntil { $0.open == 0 })
            let second = try await agent.get(server.url("/hello"))
            #expect(try await second.text() == "hello")
            #expect(second.connection.isReused == false)
            #expect(server.stats.accepted == 2)
        }
    }

    @Test func keepAliveOffOpensAConnectionPerRequest() async throws {
        try await withAgent(environment.configuration(keepAlive: false), server: environment.tlsServer()) {
            agent,
            server in
            for _ in 0..<5 {
                let response = try await agent.get(server.url("/hello"))
                #expect(try await response.text() == "hello")
                #expect(response.headerFields[HTTPField.Name("X-Request-Connection")!] == "close")
                #expect(response.connection.isReused == false)
            }
            #expect(server.stats.accepted == 5)
            #expect(await server.waitUntil { $0.open == 0 })
        }
    }
}

@Suite("A pooled connection the server closed just as it is reused")
struct StaleConnectionTests {
    static let keepAliveResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    @Test func theSecondAttemptNeverTakesAnotherPooledConnection() async throws {
        // Two pooled connections, both of which the server will drop: the request is sent again once, on
        // a new connection, not on the other pooled one.
        let server = try await ScriptedTCPServer.start(.answerFirstThenDropSecond(response: Self.keepAliveResponse))
        let agent = Agent()
        let url = "http://127.0.0.1:\(server.port)/"
        async let first = agent.get(url).text()
        async let second = agent.get(url).text()
        #expect(try await [first, second] == ["ok", "ok"])
        #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.free == 2 })
        let response = try await agent.get(url)
        #expect(try await response.text() == "ok")
        #expect(response.timing.attempts == 2)
        #expect(!response.connection.isReused)
        #expect(server.accepted == 3)
        #expect(server.requestsReceived == 4)  // two first requests, the dropped one, and the resent one
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func idempotentRequestIsSentAgainOnANewConnection() async throws {
        let server = try await ScriptedTCPServer.start(.answerFirstThenDropSecond(response: Self.keepAliveResponse))
        let agent = Agent()
        let url = "http://127.0.0.1:\(server.port)/"
        #expect(try await agent.get(url).text() == "ok")
        #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.free == 1 })
        // The server reads this request on the pooled connection and closes it without a response.
        let second = try await agent.get(url)
        #expect(try await second.text() == "ok")
        #expect(second.connection.isReused == false)
        #expect(second.timing.attempts == 2)
        #expect(second.timing.reusedConnection == false)
        #expect(server.accepted == 2)
        #expect(server.requestsReceived == 3)  // first, the dropped one, and the resent one
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func nonIdempotentRequestIsNotSentAgainAndTheErrorSaysWhy() async throws {
        let server = try await ScriptedTCPServer.start(.answerFirstThenDropSecond(response: Self.keepAliveResponse))
        let agent = Agent()
        let url = "http://127.0.0.1:\(server.port)/"
        #expect(try await agent.get(url).text() == "ok")
        #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.free == 1 })
        await #expect {
            _ = try await agent.execute(HTTPRequest(method: .post, url: url), body: .string("x"))
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .connectionClosed && error.requestMayHaveBeenSent
                && error.message.contains("POST is not idempotent")
        }
        #expect(server.accepted == 1)
        #expect(server.requestsReceived == 2)

        // With an Idempotency-Key the caller vouches for it, and it is resent.
        #expect(try await agent.get(url).text() == "ok")  // a fresh pooled connection again
        #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.free == 1 })
        let keyed = try HTTPRequest(
            method: .post,
            url: url,
            headerFields: [HTTPField.Name("Idempotency-Key")!: "abc-123"]
        )
        let response = try await agent.execute(keyed, body: .string("x"))
        #expect(try await response.text() == "ok")
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func serverThatClosesIdleConnectionsRightAwayNeverFailsAGet() async throws {
        let environment = try TestEnvironment()
        let server = try await environment.tlsServer(closeIdleAfter: .milliseconds(1))
        try await withAgent(environment.configuration(), server: server) { agent, server in
            for index in 0..<40 {
                if index % 2 == 1 { try await Task.sleep(for: .milliseconds(1)) }
                let response = try await agent.get(server.url("/hello"))
                #expect(try await response.text() == "hello")
            }
        }
    }
}
