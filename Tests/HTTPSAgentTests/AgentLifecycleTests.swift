import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

@Suite("Queueing, cancellation, shutdown and stats")
struct AgentLifecycleTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func poolWaitTimeoutFailsTheWaiterWithItsOwnError() async throws {
        let configuration = environment.configuration(maxSocketsPerHost: 1, poolWaitTimeout: .milliseconds(50))
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            // Long enough that the waiter times out first even when a loaded machine runs the test late.
            async let slow = agent.get(server.url("/delay/5000"))
            #expect(await Self.waitFor { agent.stats.origins.first?.active == 1 })
            await #expect {
                _ = try await agent.get(server.url("/hello"))
            } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.code == .poolWaitTimeout && error.phase == .poolWait && error.host == "localhost"
            }
            let slowText = try await slow.text()
            #expect(slowText == "delayed")
            #expect(agent.stats.origins.first?.waiting ?? 0 == 0)
        }
    }

    @Test func cancellingAWaitingRequestRemovesItFromTheQueue() async throws {
        let configuration = environment.configuration(maxSocketsPerHost: 1)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            // Long enough that a loaded machine still sees the second request waiting.
            async let slow = agent.get(server.url("/delay/3000"))
            #expect(await Self.waitFor { agent.stats.origins.first?.active == 1 })
            let waiter = Task { try await agent.get(server.url("/hello")) }
            #expect(await Self.waitFor { agent.stats.origins.first?.waiting == 1 })
            waiter.cancel()
            await #expect {
                _ = try await waiter.value
            } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.code == .cancelled && error.phase == .poolWait
            }
            #expect(agent.stats.origins.first?.waiting == 0)
            let slowText = try await slow.text()
            #expect(slowText == "delayed")
            // The queue still works, and the one connection serves the next request.
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(next.connection.isReused)
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func cancellingARunningRequestClosesItsConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let running = Task { try await agent.get(server.url("/delay/5000")) }
            #expect(await server.waitUntil { $0.requests == 1 && $0.open == 1 })
            #expect(await Self.waitFor { agent.stats.origins.first?.active == 1 })
            running.cancel()
            await #expect {
                _ = try await running.value
            } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.code == .cancelled && error.phase == .responseHead
            }
            #expect(await server.waitUntil { $0.open == 0 })
            #expect(await Self.waitFor { agent.stats.totalConnections == 0 })
        }
    }

    @Test(.timeLimit(.minutes(1))) func cancellingTheTaskReadingABodyClosesTheConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // 100 s: the cancel below can come seconds late on a loaded machine; the body must still be coming.
            let response = try await agent.get(server.url("/slow/100000/100000"))
            let reader = Task {
                var received = 0
                for try await chunk in response.body { received += chunk.readableBytes }
                return received
            }
            try await Task.sleep(for: .milliseconds(100))
            reader.cancel()
            await #expect {
                _ = try await reader.value
            } throws: { error in
                (error as? AgentError)?.code == .cancelled
            }
            #expect(await server.waitUntil { $0.open == 0 })
        }
    }

    @Test func droppingAnUnreadBodyClosesItsConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            do {
                let response = try await agent.get(server.url("/bytes/\(10 << 20)"))
                var iterator = response.body.makeAsyncIterator()
                _ = try await iterator.next()
            }  // response and iterator dropped here, body unread
            #expect(await server.waitUntil { $0.open == 0 })
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(next.connection.isReused == false)
        }
    }

    @Test func droppingAFullyReceivedBodyKeepsTheConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            _ = try await agent.get(server.url("/hello"))  // body never read
            #expect(await Self.waitFor { agent.stats.origins.first?.free == 1 })
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(next.connection.isReused)
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func shutdownFailsRunningAndWaitingRequestsAndClosesEverything() async throws {
        let server = try await environment.tlsServer()
        let agent = Agent(configuration: environment.configuration(maxSocketsPerHost: 1))
        let running = Task { try await agent.get(server.url("/delay/5000")) }
        #expect(await Self.waitFor { agent.stats.origins.first?.active == 1 })
        let waiting = Task { try await agent.get(server.url("/hello")) }
        #expect(await Self.waitFor { agent.stats.origins.first?.waiting == 1 })

        await agent.shutdown()

        for (task, phase) in [(running, AgentError.Phase.responseHead), (waiting, .poolWait)] {
            await #expect {
                _ = try await task.value
            } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.code == .shutdown && error.phase == phase
            }
        }
        #expect(agent.stats.totalConnections == 0)
        #expect(await server.waitUntil { $0.open == 0 })
        await #expect {
            _ = try await agent.get(server.url("/hello"))
        } throws: { error in
            (error as? AgentError)?.code == .shutdown
        }
        await agent.shutdown()  // a second shutdown returns at once
        try await server.shutdown()
    }

    @Test func statsShowActiveFreeAndWaiting() async throws {
        let configuration = environment.configuration(maxSocketsPerHost: 1)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            #expect(agent.stats.origins.isEmpty)
            // Long enough that a loaded machine still sees the second request waiting.
            async let first = agent.get(server.url("/delay/2000"))
            #expect(await Self.waitFor { agent.stats.origins.first?.active == 1 })
            async let second = agent.get(server.url("/hello"))
            #expect(await Self.waitFor { agent.stats.origins.first?.waiting == 1 })
            let origin = try #require(agent.stats["https://localhost:\(server.port)"])
            #expect(origin.active == 1 && origin.waiting == 1 && origin.free == 0)
            _ = try await first.text()
            _ = try await second.text()
            #expect(await Self.waitFor { agent.stats.origins.first?.free == 1 })
            #expect(agent.stats.totalConnections == 1)
        }
    }

    @Test(arguments: [FreeSocketScheduling.lifo, .fifo])
    func freeSocketSchedulingPicksTheNewestOrOldestFreeConnection(scheduling: FreeSocketScheduling) async throws {
        let configuration = environment.configuration(freeSocketScheduling: scheduling)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            // Two connections released in a known order: the one held by a slow response goes last, even
            // when a loaded machine takes several seconds to open the quick one.
            async let slow = agent.get(server.url("/delay/8000"))
            #expect(await server.waitUntil { $0.requests == 1 })
            let quick = try await agent.get(server.url("/hello"))
            _ = try await quick.text()
            // At least the quick one is free (on a loaded machine the slow one may be too by now).
            #expect(await Self.waitFor { (agent.stats.origins.first?.free ?? 0) >= 1 })
            let slowResponse = try await slow
            _ = try await slowResponse.text()
            #expect(await Self.waitFor { agent.stats.origins.first?.free == 2 })
            // Released in the order the two requests ended (the record ends just before the release). That
            // is the quick one first, unless a very slow machine (a sanitizer build) took longer over it
            // than the 8 s the slow one takes.
            func ended(_ response: AgentResponse) throws -> Int64 {
                let (seconds, attoseconds) = try #require(response.timing.end).components
                return Int64(response.timing.startedAt.uptimeNanoseconds) + seconds * 1_000_000_000
                    + attoseconds / 1_000_000_000
            }
            let (older, newer) =
                try ended(quick) < ended(slowResponse) ? (quick, slowResponse) : (slowResponse, quick)
            let next = try await agent.get(server.url("/hello"))
            let expected = scheduling == .lifo ? newer.serverConnectionID : older.serverConnectionID
            #expect(next.serverConnectionID == expected)
        }
    }

    @Test func maxTotalSocketsClosesAnIdleConnectionOfAnotherOrigin() async throws {
        let first = try await environment.tlsServer()
        let second = try await environment.tlsServer()
        let agent = Agent(configuration: environment.configuration(maxTotalSockets: 1))
        _ = try await agent.get(first.url("/hello")).text()
        #expect(await Self.waitFor { agent.stats.totalConnections == 1 })
        let response = try await agent.get(second.url("/hello"))
        #expect(try await response.text() == "hello")
        #expect(await first.waitUntil { $0.open == 0 })
        #expect(second.stats.open == 1)
        #expect(agent.stats.totalConnections == 1)
        await agent.shutdown()
        try await first.shutdown()
        try await second.shutdown()
    }

    @Test func hostNamesAreNormalisedForTheKeyAndVerification() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            for host in ["localhost", "LOCALHOST", "localhost."] {
                let response = try await agent.get("https://\(host):\(server.port)/hello")
                #expect(try await response.text() == "hello")
            }
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func ipv6LiteralIsVerifiedAgainstTheCertificateIPAddress() async throws {
        let server: TestHTTPServer
        do {
            server = try await TestHTTPServer.start(.init(tls: environment.certificates.serverOptions(), host: "::1"))
        } catch {
            // No IPv6 loopback on this machine: nothing to test here.
            return
        }
        try await withAgent(environment.configuration(), server: server) { agent, server in
            let response = try await agent.get("https://[::1]:\(server.port)/hello")
            #expect(try await response.text() == "hello")
            #expect(response.connection.remoteAddress == "::1")
        }
    }

    /// Polls `condition` every 5 ms for up to 30 seconds (a bound for failing runs only).
    static func waitFor(_ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return condition()
    }
}
