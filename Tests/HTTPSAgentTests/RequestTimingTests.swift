import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

/// Checks every record against the rules that hold for any request: milestones in order, phases that
/// add up to the total, and curl's cumulative values never going backwards among those reached.
func expectConsistent(_ timing: RequestTiming, sourceLocation: SourceLocation = #_sourceLocation) {
    let ordered: [(String, Duration?)] = [
        ("queueEnd", timing.queueEnd), ("dnsEnd", timing.dnsEnd), ("connectEnd", timing.connectEnd),
        ("tlsEnd", timing.tlsEnd), ("requestStart", timing.requestStart), ("firstByte", timing.firstByte),
        ("responseHead", timing.responseHead), ("end", timing.end),
    ]
    var previous: (String, Duration) = ("start", .zero)
    for (name, value) in ordered {
        guard let value else { continue }
        #expect(
            value >= previous.1,
            "\(name) (\(value)) before \(previous.0) (\(previous.1))",
            sourceLocation: sourceLocation
        )
        previous = (name, value)
    }
    if let start = timing.requestStart, let end = timing.requestEnd {
        #expect(end >= start, sourceLocation: sourceLocation)
    }
    let phases = [
        timing.queueWait, timing.dns, timing.connect, timing.tlsHandshake, timing.requestWrite,
        timing.timeToFirstByte, timing.transfer,
    ]
    for phase in phases {
        #expect(phase >= .zero, sourceLocation: sourceLocation)
    }
    // After redirects the earlier hops' time comes first.
    #expect(
        phases.reduce(timing.redirectTime, +) == timing.total,
        "phases \(phases) after \(timing.redirectTime) vs total \(timing.total)",
        sourceLocation: sourceLocation
    )
    if let end = timing.end {
        #expect(timing.total == end, sourceLocation: sourceLocation)
    }
    if timing.reusedConnection {
        #expect(
            timing.dns == .zero && timing.connect == .zero && timing.tlsHandshake == .zero,
            sourceLocation: sourceLocation
        )
        #expect(
            timing.dnsEnd == nil && timing.connectEnd == nil && timing.tlsEnd == nil,
            sourceLocation: sourceLocation
        )
    }
    // After redirects curl's variables add up the hops' own milestones, and a reused hop adds to
    // time_queue but not to time_namelookup: check the hops one by one instead.
    var lastCurl = 0.0
    for name in RequestTiming.curlVariableNames
    where name != "time_posttransfer" && name != "time_redirect" && timing.hops.isEmpty {
        let value = timing.curlVariable(name) ?? -1
        #expect(value >= 0, sourceLocation: sourceLocation)
        if value > 0 {
            #expect(value >= lastCurl, "\(name) = \(value) < \(lastCurl)", sourceLocation: sourceLocation)
            lastCurl = value
        }
    }
}

@Suite("Per-request timing against real sockets")
struct RequestTimingTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func freshThenReusedConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let first = try await agent.get(server.url("/bytes/1000"))
            #expect(try await first.body.collect(upTo: 10_000).readableBytes == 1000)
            let fresh = first.timing
            expectConsistent(fresh)
            #expect(fresh.isComplete)
            #expect(fresh.reusedConnection == false)
            #expect(fresh.attempts == 1)
            #expect(fresh.idleTimeBeforeReuse == nil)
            for milestone in [fresh.queueEnd, fresh.dnsEnd, fresh.connectEnd, fresh.tlsEnd, fresh.requestStart] {
                #expect(milestone != nil)
            }
            #expect(fresh.requestEnd != nil && fresh.firstByte != nil && fresh.responseHead != nil)
            #expect(fresh.tlsHandshake > .zero)
            #expect(fresh.connectionID == first.connection.id)
            #expect(fresh.remoteAddress == "127.0.0.1" && fresh.remotePort == server.port)
            #expect(fresh.localAddress == "127.0.0.1" && (fresh.localPort ?? 0) > 0)
            #expect(fresh.tlsVersion == "TLSv1.3" && fresh.tlsCipher != nil && fresh.alpn == "http/1.1")
            #expect(fresh.resumedSession == false)
            #expect(fresh.statusCode == 200)
            #expect(fresh.bodyBytesReceived == 1000 && fresh.bodyBytesSent == 0)
            // The response went through TLS records: more bytes on the wire than in the body.
            #expect(fresh.wireBytesReceived > 1000)
            #expect(fresh.wireBytesSent > 0)
            #expect(fresh.curlVariable("time_appconnect")! > fresh.curlVariable("time_connect")!)
            #expect(fresh.curlVariable("time_bogus") == nil)

            let second = try await agent.get(server.url("/bytes/10"))
            _ = try await second.body.collect(upTo: 100)
            let reused = second.timing
            expectConsistent(reused)
            #expect(reused.reusedConnection)
            #expect(second.connection.isReused)
            #expect(reused.dns == .zero && reused.connect == .zero && reused.tlsHandshake == .zero)
            #expect(reused.curlVariable("time_namelookup") == 0)
            #expect(reused.curlVariable("time_connect") == 0)
            #expect(reused.curlVariable("time_appconnect") == 0)
            #expect(reused.curlVariable("time_pretransfer")! > 0)
            #expect(reused.idleTimeBeforeReuse != nil)
            #expect(reused.connectionID == fresh.connectionID)
            #expect(reused.tlsVersion == "TLSv1.3")
            #expect(reused.bodyBytesReceived == 10)
            // Wire bytes count this exchange only, not the handshake or the earlier response.
            #expect(reused.wireBytesReceived < fresh.wireBytesReceived)
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func firstByteDelayAndSlowBodyShowInTheirPhases() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // Warm the connection so that only the server's pacing is measured.
            _ = try await agent.get(server.url("/hello")).text()
            // 50 ms before the head, then the body in 10 pieces over 300 ms.
            let response = try await agent.get(server.url("/timed/50/2000/300"))
            #expect(try await response.body.collect(upTo: 10_000).readableBytes == 2000)
            let timing = response.timing
            expectConsistent(timing)
            #expect(timing.reusedConnection)
            // The server cannot answer sooner than this after reading the request...
            #expect(timing.timeToFirstByte >= .milliseconds(50))
            #expect(timing.curlVariable("time_starttransfer")! >= 0.05)
            // ...nor end the body sooner than this.
            #expect(timing.timeToFirstByte + timing.transfer >= .milliseconds(350))
            // The pieces span 300 ms; only a head read more than 270 ms late (a stalled event loop on a loaded
            // machine) could hide 30 ms of it, and then the split cannot be seen.
            #expect(
                timing.transfer >= .milliseconds(30) || timing.timeToFirstByte >= .milliseconds(320),
                "\(timing.timeToFirstByte) then \(timing.transfer)"
            )
            #expect(timing.total >= .milliseconds(350))
        }
    }

    @Test func resumedHandshakeIsReported() async throws {
        let server = try await environment.tlsServer(maxRequestsPerConnection: 1)
        try await withAgent(environment.configuration(), server: server) { agent, server in
            var timings: [RequestTiming] = []
            for _ in 0..<3 {
                let response = try await agent.get(server.url("/hello"))
                _ = try await response.text()
                timings.append(response.timing)
                // The server closes after each response; wait until the Agent has seen it.
                #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
            }
            for timing in timings {
                expectConsistent(timing)
                #expect(timing.reusedConnection == false)
                #expect(timing.dnsEnd != nil && timing.connectEnd != nil && timing.tlsEnd != nil)
                #expect(timing.tlsHandshake > .zero)
            }
            #expect(timings.map(\.resumedSession) == [false, true, true])
            #expect(server.stats.fullHandshakes == 1)
            #expect(server.stats.resumedHandshakes == 2)
        }
    }

    @Test func queueWaitCoversTheRequestAhead() async throws {
        let configuration = environment.configuration(maxSocketsPerHost: 1)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            let timings = try await withThrowingTaskGroup(of: RequestTiming.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        let response = try await agent.get(server.url("/delay/200"))
                        _ = try await response.text()
                        return response.timing
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let sorted = timings.sorted { $0.queueWait < $1.queueWait }
            for timing in sorted { expectConsistent(timing) }
            let (first, second) = (sorted[0], sorted[1])
            #expect(first.reusedConnection == false)
            #expect(second.reusedConnection)
            // The second waited while the first's 200 ms response was produced.
            #expect(second.queueWait >= .milliseconds(180))
            #expect(second.queueWait > first.queueWait)
            #expect(second.curlVariable("time_queue")! >= 0.18)
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func plainHTTPHasNoTLSPhase() async throws {
        try await withAgent(environment.configuration(), server: environment.plainServer()) { agent, server in
            let response = try await agent.execute(
                HTTPRequest(method: .post, url: server.url("/echo")),
                body: .bytes(ByteBuffer(repeating: 7, count: 100_000))
            )
            #expect(try await response.body.collect(upTo: 200_000).readableBytes == 100_000)
            let timing = response.timing
            expectConsistent(timing)
            #expect(timing.tlsEnd == nil && timing.tlsHandshake == .zero && timing.tlsVersion == nil)
            #expect(timing.connectEnd != nil && timing.dnsEnd != nil)
            #expect(timing.curlVariable("time_appconnect") == 0)
            #expect(timing.bodyBytesSent == 100_000 && timing.bodyBytesReceived == 100_000)
            #expect(timing.wireBytesSent > 100_000 && timing.wireBytesReceived > 100_000)
        }
    }
}

@Suite("Timing records of failed requests")
struct FailedRequestTimingTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func connectionRefusedReachesDNSOnly() async throws {
        let port = try await unusedLoopbackPort()
        let agent = Agent(configuration: environment.configuration())
        let error = await agentError { _ = try await agent.get("https://127.0.0.1:\(port)/") }
        await agent.shutdown()
        let timing = try #require(error?.timing)
        #expect(error?.code == .connectFailed)
        expectConsistent(timing)
        #expect(timing.queueEnd != nil && timing.dnsEnd != nil)
        #expect(timing.connectEnd == nil && timing.tlsEnd == nil && timing.requestStart == nil)
        #expect(timing.firstByte == nil && timing.end != nil && timing.isComplete)
        #expect(timing.curlVariable("time_connect") == 0)
        // The connect phase lasted until the refusal; nothing after it took time.
        #expect(timing.total == timing.queueWait + timing.dns + timing.connect)
    }

    @Test func certificateFailureReachesConnect() async throws {
        let server = try await environment.tlsServer()
        let agent = Agent()  // the system trust store does not know the test CA
        let error = await agentError { _ = try await agent.get(server.url("/hello")) }
        await agent.shutdown()
        try await server.shutdown()
        #expect(error?.code == .certificateVerificationFailed)
        let timing = try #require(error?.timing)
        expectConsistent(timing)
        #expect(timing.dnsEnd != nil && timing.connectEnd != nil)
        #expect(timing.tlsEnd == nil && timing.requestStart == nil && timing.end != nil)
        #expect(timing.total == timing.queueWait + timing.dns + timing.connect + timing.tlsHandshake)
    }

    @Test func handshakeTimeoutShowsTheTimeSpentInTLS() async throws {
        let server = try await ScriptedTCPServer.start(.acceptAndHang)
        var configuration = environment.configuration()
        configuration.tlsHandshakeTimeout = .milliseconds(200)
        let agent = Agent(configuration: configuration)
        let error = await agentError { _ = try await agent.get("https://127.0.0.1:\(server.port)/") }
        await agent.shutdown()
        try await server.shutdown()
        #expect(error?.code == .tlsHandshakeTimeout)
        let timing = try #require(error?.timing)
        expectConsistent(timing)
        #expect(timing.connectEnd != nil && timing.tlsEnd == nil)
        #expect(timing.tlsHandshake >= .milliseconds(200))
    }

    @Test func poolWaitTimeoutIsAllQueue() async throws {
        let configuration = environment.configuration(maxSocketsPerHost: 1, poolWaitTimeout: .milliseconds(100))
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            // Long enough that the wait timer fires first even when a loaded machine runs it late.
            let slow = Task { try await agent.get(server.url("/delay/5000")).text() }
            #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.active == 1 })
            let error = await agentError { _ = try await agent.get(server.url("/hello")) }
            #expect(error?.code == .poolWaitTimeout)
            let timing = try #require(error?.timing)
            expectConsistent(timing)
            #expect(timing.queueEnd == nil && timing.end != nil)
            #expect(timing.queueWait == timing.total)
            #expect(timing.total >= .milliseconds(100))
            _ = try await slow.value
        }
    }

    @Test func truncatedBodyCarriesTheResponseMilestones() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let response = try await agent.get(server.url("/truncate/1000"))
            let error = await agentError { _ = try await response.body.collect(upTo: 10_000) }
            #expect(error?.code == .responseBodyTruncated)
            let timing = try #require(error?.timing)
            expectConsistent(timing)
            #expect(timing.firstByte != nil && timing.responseHead != nil && timing.end != nil)
            #expect(timing.bodyBytesReceived == 500)
            #expect(response.timing == timing)
        }
    }

    @Test func invalidRequestHasNoTiming() async throws {
        let agent = Agent()
        let error = await agentError { _ = try await agent.get("ftp://127.0.0.1/") }
        await agent.shutdown()
        #expect(error?.code == .invalidRequest)
        #expect(error?.timing == nil)
    }
}
