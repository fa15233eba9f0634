@_spi(Benchmarking) import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

/// The probes that the Benchmarks package times run the operations they are named for, so that a
/// change to the code under them cannot leave a benchmark quietly measuring something else.
@Suite("Hot-path probes")
struct HotPathProbesTests {
    @Test func thePoolStateMachineProbeLeasesTheIdleConnectionEveryTime() {
        let probe = PoolStateMachineProbe()
        for _ in 0..<3 {
            #expect(probe.leaseAndRelease())
        }
    }

    @Test func theConnectionPoolProbeLeasesItsOneConnectionEveryTime() async throws {
        let server = try await TestHTTPServer.start()
        let probe = try await ConnectionPoolProbe(
            url: server.url(),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton
        )
        for _ in 0..<3 {
            #expect(try await probe.leaseAndRelease())
        }
        await probe.shutdown()
        #expect(server.stats.accepted == 1)
        try await server.shutdown()
    }

    @Test(arguments: [SessionCacheProbe.Sessions.tls13Tickets, .tls12Sessions])
    func theSessionCacheProbeFindsASessionForEachServerAndNoneForAnUnknownOne(
        _ sessions: SessionCacheProbe.Sessions
    ) async throws {
        // Building the probe decodes over 4,000 sessions: seconds of CPU in a debug build. On a thread of
        // its own, so that it does not hold one of the few the parallel run's other tests share.
        let probe = try await runBlocking { try SessionCacheProbe(servers: 3, sessions: sessions) }
        for _ in 0..<6 {
            #expect(probe.reconnect())
        }
        #expect(!probe.miss())
    }

    @Test func theRequestTrackerProbeRecordsAWholeRequestOnAReusedConnection() throws {
        let channel = EmbeddedChannel()
        // Closed at the end: an open EmbeddedChannel and its pipeline keep each other alive (LeakSanitizer).
        defer { _ = try? channel.finish() }
        channel.localAddress = try SocketAddress(ipAddress: "192.0.2.10", port: 50_000)
        let timing = try RequestTrackerProbe(channel: channel).record()
        #expect(timing.isComplete)
        #expect(timing.reusedConnection)
        #expect(timing.idleTimeBeforeReuse != nil)
        #expect(timing.statusCode == 200)
        #expect(timing.localAddress == "192.0.2.10")
        #expect(timing.tlsVersion == "TLSv1.3")
        #expect(timing.bodyBytesReceived == 2_200)
    }

    @Test func theRequestHeadProbeWritesTheBytesAConnectionSends() throws {
        let channel = EmbeddedChannel()
        let request = HTTPRequest(
            method: .get,
            scheme: "https",
            authority: "api.example.com",
            path: "/items",
            headerFields: [.accept: "application/json"]
        )
        let probe = try RequestHeadProbe(request: request, channel: channel)
        for _ in 0..<2 {
            try probe.write()
            let head = try #require(try channel.readOutbound(as: ByteBuffer.self))
            #expect(
                String(buffer: head)
                    == "GET /items HTTP/1.1\r\nHost: api.example.com\r\nAccept: application/json\r\n"
                    + "Accept-Encoding: gzip, deflate\r\n\r\n"
            )
            // The end, written with a promise as the connection's handler writes it.
            #expect(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes == 0)
            #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        }
        _ = try channel.finish()
    }
}
