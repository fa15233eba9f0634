import HTTPSAgent
import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import Testing

/// After the handshake: a TLS connection that ends without the server's `close_notify`, or in the middle
/// of a record. A body whose end only the connection's end marks cannot be told from one cut short, so
/// it fails as ``AgentError/Code/uncleanShutdown``; a body framed by Content-Length or chunked encoding
/// is complete or truncated by its framing, whatever the close. The connection is never used again.
/// (RELIABILITY.md C11.)
@Suite("TLS negative matrix: truncation and unclean shutdown", .timeLimit(.minutes(2)))
struct TLSTruncationMatrixTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// A response from a scripted TLS server, and how the client must take it.
    enum BodyRow: String, CaseIterable, Sendable {
        case endedByCloseWithoutCloseNotify = "ended by close, without close_notify"
        case endedByCloseWithCloseNotify = "ended by close, with close_notify"
        case lengthCompleteThenNoCloseNotify = "Content-Length complete, then closed without close_notify"
        case lengthShortWithoutCloseNotify = "Content-Length short, closed without close_notify"
        case lengthShortWithCloseNotify = "Content-Length short, closed with close_notify"
        case chunkedCompleteThenNoCloseNotify = "chunked complete, then closed without close_notify"
        case chunkedShortWithoutCloseNotify = "chunked short, closed without close_notify"

        static let body = "a body of twenty-six bytes"

        var answer: ScriptedAnswer {
            let body = Self.body
            switch self {
            case .endedByCloseWithoutCloseNotify:
                return .closingWithoutCloseNotify("HTTP/1.1 200 OK\r\n\r\n\(body)")
            case .endedByCloseWithCloseNotify:
                return ScriptedAnswer("HTTP/1.1 200 OK\r\n\r\n\(body)", close: true)
            case .lengthCompleteThenNoCloseNotify:
                return .closingWithoutCloseNotify("HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\n\(body)")
            case .lengthShortWithoutCloseNotify:
                return .closingWithoutCloseNotify("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\(body)")
            case .lengthShortWithCloseNotify:
                return ScriptedAnswer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n\(body)", close: true)
            case .chunkedCompleteThenNoCloseNotify:
                return .closingWithoutCloseNotify(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n\(body)\r\n0\r\n\r\n"
                )
            case .chunkedShortWithoutCloseNotify:
                return .closingWithoutCloseNotify(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n\(body)\r\n"
                )
            }
        }

        /// The error reading the body must end with; `nil` when it must succeed.
        var expected: AgentError.Code? {
            switch self {
            case .endedByCloseWithoutCloseNotify: .uncleanShutdown
            case .endedByCloseWithCloseNotify, .lengthCompleteThenNoCloseNotify, .chunkedCompleteThenNoCloseNotify: nil
            case .lengthShortWithoutCloseNotify, .lengthShortWithCloseNotify, .chunkedShortWithoutCloseNotify:
                .responseBodyTruncated
            }
        }
    }

    @Test(arguments: BodyRow.allCases)
    func aBodyIsCompleteOnlyByItsFraming(_ row: BodyRow) async throws {
        let server = try await ScriptedTCPServer.start(
            .answer { path in
                path == "/row" ? row.answer : ScriptedAnswer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            },
            tls: environment.certificates.serverOptions()
        )
        let agent = Agent(configuration: environment.configuration())
        let response = try await agent.get("https://localhost:\(server.port)/row")
        #expect(response.status == .ok)
        let read = await self.read(response)
        switch (row.expected, read) {
        case (nil, .success(let text)):
            #expect(text == BodyRow.body)
        case (let code?, .failure(let error)):
            #expect(error.code == code, "\(error)")
            #expect(error.phase == .responseBody, "\(error)")
            #expect(error.host == "localhost" && error.port == server.port, "\(error)")
            #expect(error.description.hasPrefix("localhost:\(server.port): reading the response body: "))
            if code == .uncleanShutdown {
                #expect(error.message.contains("close_notify"))
            }
        default:
            Issue.record("expected \(row.expected.map { "\($0)" } ?? "success"), got \(read)")
        }
        // The server closed the connection: it leaves the Agent, and the next request dials anew.
        #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
        let next = try await agent.get("https://localhost:\(server.port)/hello")
        #expect(try await next.text() == "hello")
        #expect(next.connection.isReused == false)
        #expect(server.accepted == 2)
        #expect(server.requestsReceived == 2)
        await agent.shutdown()
        try await server.shutdown()
    }

    /// A real server's response cut by a relay inside a record of application data (its header announces
    /// more bytes than come), then the connection closed: the record is lost, and with it the rest of
    /// the body.
    @Test(arguments: [
        ("/bytes/200000", AgentError.Code.responseBodyTruncated),
        ("/chunked/200000", .responseBodyTruncated),
        ("/eof/200000", .uncleanShutdown),
    ])
    func aRecordCutInTheMiddleOfABodyIsATruncation(path: String, expected: AgentError.Code) async throws {
        let server = try await TestHTTPServer.start(.init(tls: environment.certificates.serverOptions()))
        // Well past the handshake (a few kB) and the head: in the body.
        let relay = try await CuttingRelay.start(to: server.port, cut: .insideRecord(afterBytes: 50_000, keeping: 1000))
        try await withAgent(environment.configuration(), server: server) { agent, server in
            let response = try await agent.get("https://localhost:\(relay.port)\(path)")
            let read = await self.read(response)
            guard case .failure(let error) = read else {
                Issue.record("expected \(expected), got \(read)")
                return
            }
            #expect(error.code == expected, "\(error)")
            #expect(error.phase == .responseBody, "\(error)")
            #expect(error.host == "localhost" && error.port == relay.port, "\(error)")
            #expect(relay.cuts == 1)
            // Never used again: the next request, too short to be cut, goes on a new connection.
            #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
            let next = try await agent.get("https://localhost:\(relay.port)/hello")
            #expect(try await next.text() == "hello")
            #expect(next.connection.isReused == false)
            #expect(relay.accepted == 2)
            #expect(server.stats.accepted == 2)
        }
        try await relay.shutdown()
    }

    // MARK: - Helpers

    /// The body as text, or the error reading it ended with.
    func read(_ response: AgentResponse) async -> Result<String, AgentError> {
        do {
            return .success(try await response.text())
        } catch let error as AgentError {
            return .failure(error)
        } catch {
            return .failure(
                AgentError(code: .malformedResponse, phase: .request, message: "not an AgentError: \(error)")
            )
        }
    }
}
