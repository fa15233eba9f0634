import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import NIOPosix
import Testing

@testable import HTTPSAgent

@Suite("Connecting across a host's addresses", .timeLimit(.minutes(1)))
struct ConnectorTests {
    func connector(connectTimeout: TimeAmount) -> Connector {
        Connector(
            group: MultiThreadedEventLoopGroup.singleton,
            resolver: SystemResolver(),
            contexts: SSLContextCache(),
            connectTimeout: connectTimeout,
            tlsHandshakeTimeout: .seconds(10),
            sessionCache: nil
        )
    }

    let origin = Origin(scheme: .http, host: "test.invalid", port: 80, tls: nil)

    @Test func anUnansweredAddressDoesNotHoldUpTheNextOne() async throws {
        let stuck = try StuckListener()
        let server = try await TestHTTPServer.start()
        // With attempts one after the other, this would wait out the 5-minute connect timeout first
        // (and hit the suite's time limit); with staggered attempts the second address wins.
        let channel = try await self.connector(connectTimeout: .minutes(5)).connectTCP(
            to: [
                try SocketAddress(ipAddress: "127.0.0.1", port: stuck.port),
                try SocketAddress(ipAddress: "127.0.0.1", port: server.port),
            ],
            origin: origin
        )
        #expect(channel.remoteAddress?.port == server.port)
        try await channel.close()
        #expect(await server.waitUntil { $0.accepted == 1 && $0.open == 0 })
        try await server.shutdown()
    }

    @Test func shutdownAbortsADialThatIsStillConnecting() async throws {
        let stuck = try StuckListener()
        let agent = Agent(configuration: .init(connectTimeout: .seconds(300)))
        let request = Task { try await agent.get("http://127.0.0.1:\(stuck.port)/") }
        #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.connecting == 1 })
        // Returns once the dial is aborted, not after the 5-minute connect timeout.
        await agent.shutdown()
        #expect(agent.stats.totalConnections == 0)
        await #expect {
            _ = try await request.value
        } throws: { error in
            (error as? AgentError)?.code == .shutdown
        }
    }

    @Test func everyAddressRefusingIsOneErrorListingThemAll() async throws {
        let first = try await unusedLoopbackPort()
        let second = try await unusedLoopbackPort()
        await #expect {
            _ = try await self.connector(connectTimeout: .seconds(10)).connectTCP(
                to: [
                    try SocketAddress(ipAddress: "127.0.0.1", port: first),
                    try SocketAddress(ipAddress: "127.0.0.1", port: second),
                ],
                origin: origin
            )
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .connectFailed && error.message.contains("any of 2 addresses")
                && error.message.contains("127.0.0.1:\(first) (connection refused)")
                && error.message.contains("127.0.0.1:\(second) (connection refused)")
        }
    }

    @Test func anAddressThatNeverAnswersTimesOut() async throws {
        let stuck = try StuckListener()
        await #expect {
            _ = try await self.connector(connectTimeout: .milliseconds(200)).connectTCP(
                to: [try SocketAddress(ipAddress: "127.0.0.1", port: stuck.port)],
                origin: origin
            )
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .connectTimeout && error.phase == .connect
        }
    }

    @Test func familiesAlternateStartingWithTheFirst() throws {
        let v6a = try SocketAddress(ipAddress: "::1", port: 1)
        let v6b = try SocketAddress(ipAddress: "::2", port: 1)
        let v4a = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        let v4b = try SocketAddress(ipAddress: "127.0.0.2", port: 1)
        #expect(Connector.interleaveFamilies([v6a, v6b, v4a, v4b]) == [v6a, v4a, v6b, v4b])
        #expect(Connector.interleaveFamilies([v4a, v6a, v6b]) == [v4a, v6a, v6b])
        #expect(Connector.interleaveFamilies([]) == [])
    }
}
