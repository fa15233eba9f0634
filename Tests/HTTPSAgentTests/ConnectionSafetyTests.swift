import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

/// Connections whose framing state is unknown are never reused, and odd servers cannot make the
/// client crash, hang or resend what it must not.
@Suite("Connection safety against odd servers", .timeLimit(.minutes(2)))
struct ConnectionSafetyTests {
    static let keepAliveResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    @Test func bytesOnAnIdleConnectionGetItClosedBeforeReuse() async throws {
        // "HTTP/1.1 40" is no complete head: left in the decoder it would prefix the next response.
        let server = try await ScriptedTCPServer.start(
            .answerThenSendUnsolicited(response: Self.keepAliveResponse, unsolicited: "HTTP/1.1 40")
        )
        let agent = Agent()
        let url = "http://127.0.0.1:\(server.port)/"
        #expect(try await agent.get(url).text() == "ok")
        // The unsolicited bytes (sent 50 ms after the answer) get the idle connection closed.
        #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
        let second = try await agent.get(url)
        #expect(try await second.text() == "ok")
        #expect(second.connection.isReused == false)
        #expect(server.accepted == 2)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func aCloseInTheMiddleOfAResponseHeadIsNotRetried() async throws {
        let server = try await ScriptedTCPServer.start(
            .answerFirstThenDropSecond(response: Self.keepAliveResponse, partial: "HTTP/1.1 20")
        )
        let agent = Agent()
        let url = "http://127.0.0.1:\(server.port)/"
        #expect(try await agent.get(url).text() == "ok")
        #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.free == 1 })
        await #expect {
            _ = try await agent.get(url)
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .malformedResponse && error.phase == .responseHead && error.requestMayHaveBeenSent
        }
        // Response bytes had arrived, so the GET was not sent a second time.
        #expect(server.requestsReceived == 2)
        #expect(server.accepted == 1)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func switchingProtocolsLeavesTheConnectionOutOfThePool() async throws {
        let server = try await ScriptedTCPServer.start(
            .reply("HTTP/1.1 101 Switching Protocols\r\nUpgrade: example\r\nConnection: Upgrade\r\n\r\n", close: false)
        )
        let agent = Agent()
        let url = "http://127.0.0.1:\(server.port)/"
        for _ in 0..<2 {
            let response = try await agent.get(url)
            #expect(response.status.code == 101)
            #expect(response.connection.isReused == false)
        }
        #expect(server.accepted == 2)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func connectIsRefused() async throws {
        let agent = Agent()
        await #expect {
            _ = try await agent.execute(HTTPRequest(method: .connect, url: "https://example.com:443/"))
        } throws: { error in
            (error as? AgentError)?.code == .invalidRequest
        }
        await agent.shutdown()
    }

    @Test func hugeDeclaredLengthDoesNotMakeCollectAllocateIt() async throws {
        let server = try await ScriptedTCPServer.start(
            .reply("HTTP/1.1 200 OK\r\nContent-Length: 5000000000\r\n\r\nonly this", close: true)
        )
        let agent = Agent()
        let response = try await agent.get("http://127.0.0.1:\(server.port)/")
        #expect(response.body.expectedLength == 5_000_000_000)
        await #expect {
            _ = try await response.body.collect(upTo: .max)
        } throws: { error in
            (error as? AgentError)?.code == .responseBodyTooLarge
        }
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func uploadAndDownloadStreamAtTheSameTime() async throws {
        let environment = try TestEnvironment()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // 16 MiB each way: far beyond the socket buffers and the body's 256 KiB read-ahead, so
            // this only finishes if the response is read while the upload still runs.
            let chunkCount = 256
            let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
            let request = try HTTPRequest(method: .post, url: server.url("/stream-echo"))
            let response = try await agent.execute(
                request,
                body: .stream(RepeatedChunks(chunk: chunk, count: chunkCount), length: nil)
            )
            var received = 0
            for try await part in response.body {
                received += part.readableBytes
            }
            #expect(received == chunkCount * chunk.readableBytes)
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(next.connection.isReused)
        }
    }

    @Test func anEarlyRefusalOfAnUploadIsDeliveredAsAResponse() async throws {
        let environment = try TestEnvironment()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let chunk = ByteBuffer(repeating: UInt8(ascii: "y"), count: 64 * 1024)
            let request = try HTTPRequest(method: .post, url: server.url("/reject-upload"))
            let response = try await agent.execute(
                request,
                body: .stream(RepeatedChunks(chunk: chunk, count: 256), length: 256 * 64 * 1024)
            )
            #expect(response.status == .contentTooLarge)
            #expect(try await response.text() == "too large")
            #expect(await server.waitUntil { $0.open == 0 })
            #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
        }
    }
}

/// `count` copies of `chunk`, produced lazily.
struct RepeatedChunks: AsyncSequence, Sendable {
    let chunk: ByteBuffer
    let count: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let chunk: ByteBuffer
        var remaining: Int

        mutating func next() async throws -> ByteBuffer? {
            guard self.remaining > 0 else { return nil }
            self.remaining -= 1
            return self.chunk
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(chunk: self.chunk, remaining: self.count) }
}
