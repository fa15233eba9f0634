import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

@Suite("HTTP/1.1 semantics, over TLS and plain HTTP")
struct AgentHTTPTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    private func servers() async throws -> [TestHTTPServer] {
        [try await environment.tlsServer(), try await environment.plainServer()]
    }

    @Test(arguments: ["https", "http"])
    func contentLengthChunkedAndCloseDelimitedBodies(scheme: String) async throws {
        let server = scheme == "https" ? try await environment.tlsServer() : try await environment.plainServer()
        try await withAgent(environment.configuration(), server: server) { agent, server in
            let sized = try await agent.get(server.url("/bytes/70000"))
            #expect(sized.body.expectedLength == 70000)
            #expect(try await sized.text() == Self.alphabet(70000))

            let chunked = try await agent.get(server.url("/chunked/70000"))
            #expect(chunked.headerFields[.transferEncoding] == "chunked")
            #expect(try await chunked.text() == Self.alphabet(70000))
            #expect(chunked.connection.isReused)

            // Ended by close: the body is complete, and the connection is not reused.
            let delimited = try await agent.get(server.url("/eof/70000"))
            #expect(delimited.headerFields[.transferEncoding] == nil)
            #expect(delimited.body.expectedLength == nil)
            #expect(try await delimited.text() == Self.alphabet(70000))
            let after = try await agent.get(server.url("/hello"))
            #expect(try await after.text() == "hello")
            #expect(after.serverConnectionID == 2)
            #expect(server.stats.accepted == 2)
        }
    }

    @Test func headAnd204And304HaveNoBodyAndKeepTheConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let head = try await agent.execute(HTTPRequest(method: .head, url: server.url("/bytes/5000")))
            #expect(head.headerFields[.contentLength] == "5000")
            #expect(try await head.body.collect(upTo: 0).readableBytes == 0)
            for code in [204, 304] {
                let response = try await agent.get(server.url("/status/\(code)"))
                #expect(response.status.code == code)
                #expect(try await response.body.collect(upTo: 0).readableBytes == 0)
                #expect(response.connection.isReused)
            }
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func connectionCloseAndHTTP10ResponsesAreNotReused() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let close = try await agent.get(server.url("/close"))
            #expect(try await close.text() == "bye")
            let old = try await agent.get(server.url("/http10"))
            #expect(try await old.text() == "old")
            #expect(old.connection.isReused == false)
            let last = try await agent.get(server.url("/hello"))
            #expect(try await last.text() == "hello")
            #expect(last.connection.isReused == false)
            #expect(server.stats.accepted == 3)
        }
    }

    @Test func serverThatClosesAfterEachNthRequestNeverFailsARequest() async throws {
        let server = try await environment.tlsServer(maxRequestsPerConnection: 3)
        try await withAgent(environment.configuration(), server: server) { agent, server in
            for _ in 0..<30 {
                let response = try await agent.get(server.url("/hello"))
                #expect(try await response.text() == "hello")
            }
            #expect(server.stats.accepted == 10)
        }
    }

    @Test func uploadsInMemoryAndStreamedWithAndWithoutLength() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try HTTPRequest(method: .post, url: server.url("/echo"))
            let inMemory = try await agent.execute(request, body: .string("ping"))
            #expect(try await inMemory.text() == "ping")
            #expect(inMemory.headerFields[HTTPField.Name("X-Request-Method")!] == "POST")

            let chunks = (0..<50).map { ByteBuffer(string: "chunk \($0);") }
            let expected = chunks.map { String(buffer: $0) }.joined()
            let chunked = try await agent.execute(request, body: .stream(AsyncChunks(chunks), length: nil))
            #expect(try await chunked.text() == expected)
            #expect(chunked.headerFields[HTTPField.Name("X-Request-Transfer-Encoding")!] == "chunked")

            let sized = try await agent.execute(
                request,
                body: .stream(AsyncChunks(chunks), length: expected.utf8.count)
            )
            #expect(try await sized.text() == expected)
            #expect(sized.headerFields[HTTPField.Name("X-Request-Transfer-Encoding")!] == nil)

            let empty = try await agent.execute(request)
            #expect(try await empty.text() == "")
            #expect(
                server.stats.accepted == 1,
                "reused: \([inMemory, chunked, sized, empty].map { $0.connection.isReused })"
            )
        }
    }

    @Test func streamedUploadsWithALengthKeepTheirConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try HTTPRequest(method: .put, url: server.url("/echo"))
            for index in 0..<20 {
                let chunks = [ByteBuffer(string: "part one "), ByteBuffer(string: "of \(index)")]
                let length = chunks.reduce(0) { $0 + $1.readableBytes }
                let response = try await agent.execute(request, body: .stream(AsyncChunks(chunks), length: length))
                #expect(try await response.text() == "part one of \(index)")
            }
            // The server may answer as soon as the last declared byte arrives; that must not look like
            // an early response that makes the connection unusable.
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func streamedBodyWithWrongLengthFailsAndClosesTheConnection() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try HTTPRequest(method: .put, url: server.url("/echo"))
            let chunks = [ByteBuffer(string: "12345")]
            await #expect {
                _ = try await agent.execute(request, body: .stream(AsyncChunks(chunks), length: 10))
            } throws: { error in
                (error as? AgentError)?.code == .requestBodyLengthMismatch
            }
            await #expect {
                _ = try await agent.execute(request, body: .stream(AsyncChunks(chunks), length: 2))
            } throws: { error in
                (error as? AgentError)?.code == .requestBodyLengthMismatch
            }
            let after = try await agent.get(server.url("/hello"))
            #expect(try await after.text() == "hello")
            #expect(await server.waitUntil { $0.open == 1 })
        }
    }

    @Test func throwingBodySequenceFailsTheRequest() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try HTTPRequest(method: .post, url: server.url("/echo"))
            await #expect {
                _ = try await agent.execute(request, body: .stream(FailingChunks(), length: nil))
            } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.code == .requestBodyFailed && error.phase == .requestWrite
                    && error.underlying?.contains("disk on fire") == true
            }
        }
    }

    @Test func largeBodyIsStreamedWithBackpressure() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let size = 8 << 20
            let response = try await agent.get(server.url("/bytes/\(size)"))
            var received = 0
            var chunks = 0
            for try await chunk in response.body {
                received += chunk.readableBytes
                chunks += 1
                if chunks % 64 == 0 {
                    try await Task.sleep(for: .milliseconds(1))  // a slow consumer
                }
            }
            #expect(received == size)
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(next.connection.isReused)
        }
    }

    @Test func collectRefusesBodiesOverTheLimit() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let declared = try await agent.get(server.url("/bytes/5000"))
            await #expect {
                _ = try await declared.body.collect(upTo: 4999)
            } throws: { error in
                (error as? AgentError)?.code == .responseBodyTooLarge
            }
            let chunked = try await agent.get(server.url("/chunked/5000"))
            await #expect {
                _ = try await chunked.body.collect(upTo: 100)
            } throws: { error in
                (error as? AgentError)?.code == .responseBodyTooLarge
            }
        }
    }

    @Test func aBodyCanBeIteratedOnlyOnce() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let response = try await agent.get(server.url("/hello"))
            #expect(try await response.text() == "hello")
            await #expect {
                _ = try await response.body.collect(upTo: 100)
            } throws: { error in
                (error as? AgentError)?.code == .bodyAlreadyConsumed
            }
        }
    }

    @Test func closeWithoutCloseNotifyFailsABodyEndedByCloseButNotAFramedOne() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // Ended by close, and the close is not authenticated: the body may have been cut short.
            let delimited = try await agent.get(server.url("/eof-unclean/5000"))
            #expect(delimited.headerFields[.transferEncoding] == nil && delimited.body.expectedLength == nil)
            await #expect {
                _ = try await delimited.body.collect(upTo: 10_000)
            } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.code == .uncleanShutdown && error.phase == .responseBody
            }
            // Framed by Content-Length and complete: the close that follows does not matter.
            let framed = try await agent.get(server.url("/bytes-unclean/5000"))
            #expect(try await framed.text() == Self.alphabet(5000))
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(server.stats.accepted == 3)
        }
    }

    @Test func truncatedBodyIsAnErrorAndItsConnectionIsDropped() async throws {
        for server in try await self.servers() {
            try await withAgent(environment.configuration(), server: server) { agent, server in
                let response = try await agent.get(server.url("/truncate/1000"))
                await #expect {
                    _ = try await response.body.collect(upTo: 10_000)
                } throws: { error in
                    guard let error = error as? AgentError else { return false }
                    return error.code == .responseBodyTruncated && error.phase == .responseBody
                        && error.port == server.port
                }
                let next = try await agent.get(server.url("/hello"))
                #expect(try await next.text() == "hello")
                #expect(next.connection.isReused == false)
            }
        }
    }

    static func alphabet(_ count: Int) -> String {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        return String((0..<count).map { letters[$0 % 26] })
    }
}

/// Chunks from an array, as an async sequence.
struct AsyncChunks: AsyncSequence, Sendable {
    let chunks: [ByteBuffer]

    init(_ chunks: [ByteBuffer]) { self.chunks = chunks }

    struct AsyncIterator: AsyncIteratorProtocol {
        var remaining: ArraySlice<ByteBuffer>
        mutating func next() async throws -> ByteBuffer? { self.remaining.popFirst() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(remaining: self.chunks[...]) }
}

/// A body source that yields one chunk and then throws.
struct FailingChunks: AsyncSequence, Sendable {
    struct DiskOnFire: Error, CustomStringConvertible {
        var description: String { "disk on fire" }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        var yielded = false
        mutating func next() async throws -> ByteBuffer? {
            if self.yielded { throw DiskOnFire() }
            self.yielded = true
            return ByteBuffer(string: "first")
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator() }
}
