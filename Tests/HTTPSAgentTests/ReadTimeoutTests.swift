import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

/// `readIdleTimeout`: a server that goes quiet fails the request with `readTimeout`, and its
/// connection is closed, never reused.
@Suite("Read-idle timeout")
struct ReadTimeoutTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    private func configuration(_ timeout: Duration?) -> Agent.Configuration {
        var configuration = environment.configuration()
        configuration.readIdleTimeout = timeout
        return configuration
    }

    @Test func aServerThatNeverAnswersTimesOutBeforeTheHead() async throws {
        // 3 s, not less: the same bound applies to the request that follows, whose head a loaded machine (the
        // whole suite runs in parallel on two cores) can take more than a second to send.
        try await withAgent(configuration(.seconds(3)), server: environment.tlsServer()) { agent, server in
            let error = await agentError { _ = try await agent.get(server.url("/delay/30000")) }
            #expect(error?.code == .readTimeout)
            #expect(error?.phase == .responseHead)
            #expect(error?.host == "localhost")
            #expect(
                error?.message.contains("no data from the server for 3.0 s") == true,
                "\(String(describing: error))"
            )
            #expect(error?.requestMayHaveBeenSent == true)
            let timing = try #require(error?.timing)
            #expect(timing.timeToFirstByte >= .seconds(3))
            // The timed-out connection is closed: the next request gets a new one.
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(!next.connection.isReused)
            #expect(server.stats.accepted == 2)
        }
    }

    @Test func aBodyThatStallsTimesOut() async throws {
        // 6 s is long enough for the head to come on a loaded machine (the whole suite runs in parallel on
        // two cores), and shorter than the gaps.
        try await withAgent(configuration(.seconds(6)), server: environment.tlsServer()) { agent, server in
            // The head at once, then a tenth of the body every 10 s.
            let response = try await agent.get(server.url("/slow/1000/100000"))
            let error = await agentError { _ = try await response.body.collect(upTo: 1 << 20) }
            #expect(error?.code == .readTimeout)
            #expect(error?.phase == .responseBody)
            #expect(error?.message.contains("in the middle of the body") == true)
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(!next.connection.isReused)
        }
    }

    @Test func eachByteStartsTheWaitAgain() async throws {
        // 5 s leaves a loaded machine time to send the head; the body takes 10 s, a piece every second.
        try await withAgent(configuration(.seconds(5)), server: environment.tlsServer()) { agent, server in
            let response = try await agent.get(server.url("/slow/1000/10000"))
            #expect(try await response.body.collect(upTo: 1 << 20).readableBytes == 1000)
            #expect(response.timing.timeToFirstByte + response.timing.transfer >= .seconds(8))
        }
    }

    @Test func aReusedConnectionStartsTheWaitAfresh() async throws {
        // The check left pending by the first exchange comes due while the second waits; it must count the
        // second's silence from when its request went out, neither from the first exchange nor never.
        // 5 s, and gaps that leave a loaded machine 1.5 s either side.
        try await withAgent(configuration(.seconds(5)), server: environment.tlsServer()) { agent, server in
            let first = try await agent.get(server.url("/hello"))
            #expect(try await first.text() == "hello")
            try await Task.sleep(for: .milliseconds(3500))
            // Answers after 3 s: past the first exchange's 5 s mark, within the second's.
            let second = try await agent.get(server.url("/delay/3000"))
            #expect(try await second.text() == "delayed")
            #expect(second.connection.isReused)
            // Silent for good: fails, and not before a whole timeout.
            let error = await agentError { _ = try await agent.get(server.url("/delay/30000")) }
            #expect(error?.code == .readTimeout)
            let timing = try #require(error?.timing)
            #expect(timing.timeToFirstByte >= .seconds(5))
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func aSlowReaderIsNotASilentServer() async throws {
        // 5 s: the server builds the 20 MB body before it sends the head, slowly on a loaded machine.
        try await withAgent(configuration(.seconds(5)), server: environment.tlsServer()) { agent, server in
            // 20 MB: more than the body buffer and the sockets hold, so reading really stops while we wait.
            let response = try await agent.get(server.url("/bytes/20000000"))
            var received = 0
            var paused = false
            for try await chunk in response.body {
                received += chunk.readableBytes
                if !paused {
                    paused = true
                    try await Task.sleep(for: .seconds(8))
                }
            }
            #expect(received == 20_000_000)
            #expect(try await agent.get(server.url("/hello")).connection.isReused)
        }
    }

    @Test func nilWaitsAsLongAsItTakes() async throws {
        try await withAgent(configuration(nil), server: environment.tlsServer()) { agent, server in
            let response = try await agent.get(server.url("/delay/600"))
            #expect(try await response.text() == "delayed")
        }
        #expect(Agent.Configuration().readIdleTimeout == .seconds(60), "the default")
    }

    @Test func aSlowUploadIsNotASilentServer() async throws {
        try await withAgent(configuration(.seconds(3)), server: environment.tlsServer()) { agent, server in
            // Our own body source pauses 4 s between pieces: the server is waiting for us, not silent.
            let pieces = AsyncStream<ByteBuffer> { continuation in
                Task {
                    for index in 0..<3 {
                        if index > 0 { try? await Task.sleep(for: .milliseconds(4000)) }
                        continuation.yield(ByteBuffer(string: "piece \(index);"))
                    }
                    continuation.finish()
                }
            }
            let request = try HTTPRequest(method: .post, url: server.url("/echo"))
            let response = try await agent.execute(request, body: .stream(pieces, length: nil))
            #expect(try await response.text() == "piece 0;piece 1;piece 2;")
        }
    }
}
