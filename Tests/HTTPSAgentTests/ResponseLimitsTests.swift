import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

/// Bad and odd responses from a server that scripts its bytes: each failure is a clear ``AgentError``
/// naming the host and the phase, with the request's timing, and its connection is closed, so the next
/// request succeeds on a new one.
@Suite("Response limits and malformed responses", .timeLimit(.minutes(5)))
struct ResponseLimitsTests {
    static let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    /// A server that answers `/ok` with a keep-alive "ok" and `/bad` with `bad`.
    static func server(_ bad: ScriptedAnswer) async throws -> ScriptedTCPServer {
        try await ScriptedTCPServer.start(
            .answer { path in
                switch path {
                case "/ok": ScriptedAnswer(Self.ok)
                case "/bad": bad
                default: nil
                }
            }
        )
    }

    static func url(_ server: ScriptedTCPServer, _ path: String = "/bad") -> String {
        "http://127.0.0.1:\(server.port)\(path)"
    }

    /// The error `work` throws, if it throws an ``AgentError``.
    static func failure(_ work: () async throws -> Void) async -> AgentError? {
        do {
            try await work()
            return nil
        } catch {
            return error as? AgentError
        }
    }

    /// Checks what every failure must carry: the code, the phase, the host and port, and the timing.
    static func expect(
        _ error: AgentError?,
        _ code: AgentError.Code,
        _ phase: AgentError.Phase,
        server: ScriptedTCPServer,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(error?.code == code, "\(String(describing: error))", sourceLocation: sourceLocation)
        #expect(error?.phase == phase, "\(String(describing: error))", sourceLocation: sourceLocation)
        #expect(error?.host == "127.0.0.1", sourceLocation: sourceLocation)
        #expect(error?.port == server.port, sourceLocation: sourceLocation)
        #expect(error?.timing != nil, sourceLocation: sourceLocation)
        #expect(error?.timing?.firstByte != nil, sourceLocation: sourceLocation)
    }

    /// The failed connection left the pool, and the next request succeeds on a new connection.
    static func expectAFreshConnectionNext(
        _ agent: Agent,
        _ server: ScriptedTCPServer,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let accepted = server.accepted
        #expect(
            await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 },
            "the failed connection is still open",
            sourceLocation: sourceLocation
        )
        let next = try await agent.get(Self.url(server, "/ok"))
        #expect(try await next.text() == "ok", sourceLocation: sourceLocation)
        #expect(next.connection.isReused == false, sourceLocation: sourceLocation)
        #expect(server.accepted == accepted + 1, sourceLocation: sourceLocation)
    }

    /// Runs `body` with an Agent and a server answering `/bad` with `bad`, then shuts both down.
    static func withServer(
        _ bad: ScriptedAnswer,
        configuration: Agent.Configuration = Agent.Configuration(),
        _ body: (Agent, ScriptedTCPServer) async throws -> Void
    ) async throws {
        let server = try await Self.server(bad)
        // No idle timeout: it would close in time a connection the Agent failed to close itself.
        var configuration = configuration
        configuration.idleTimeout = nil
        let agent = Agent(configuration: configuration)
        do {
            try await body(agent, server)
        } catch {
            await agent.shutdown()
            try await server.shutdown()
            throw error
        }
        await agent.shutdown()
        try await server.shutdown()
    }

    // MARK: - Malformed heads

    @Test(
        arguments: [
            "HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
            // Three digits, but below 100: the parser would read a body we would not expect (found by fuzzing).
            "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 000 Zero\r\n\r\nok",
            "HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "<html>not HTTP at all</html>\r\n\r\n",
        ]
    )
    func malformedStatusLineFailsTheHead(response: String) async throws {
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .malformedResponse, .responseHead, server: server)
            #expect(error?.description.contains("127.0.0.1:\(server.port): reading the response head:") == true)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test(
        arguments: [
            "No colon in this line",
            "X-Control: a\u{01}b",
            "Bad Name: value",
            "X-Bare-CR: a\rb",
            ": no name",
        ]
    )
    func invalidHeaderLineFailsTheHead(line: String) async throws {
        let response = "HTTP/1.1 200 OK\r\n\(line)\r\nContent-Length: 2\r\n\r\nok"
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .malformedResponse, .responseHead, server: server)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test(
        arguments: [
            "Content-Length: 2\r\nContent-Length: 3",
            "Content-Length: 2, 3",
            "Content-Length: -2",
            "Content-Length: 2\r\nTransfer-Encoding: chunked",
        ]
    )
    func conflictingOrInvalidFramingFailsTheHead(fields: String) async throws {
        let response = "HTTP/1.1 200 OK\r\n\(fields)\r\n\r\nok"
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .malformedResponse, .responseHead, server: server)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    // MARK: - Bodies

    @Test(arguments: ["zz\r\nok\r\n0\r\n\r\n", "2\r\nok\r\nzz\r\n", "2\r\nokXY0\r\n\r\n"])
    func badChunkFramingFailsTheBody(body: String) async throws {
        let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\(body)"
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let error = await Self.failure {
                let response = try await agent.get(Self.url(server))
                _ = try await response.body.collect(upTo: 1000)
            }
            Self.expect(error, .malformedResponse, .responseBody, server: server)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test(
        arguments: [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        ]
    )
    func aBodyCutShortByACloseIsTruncated(response: String) async throws {
        try await Self.withServer(ScriptedAnswer(response, close: true)) { agent, server in
            let error = await Self.failure {
                let response = try await agent.get(Self.url(server))
                _ = try await response.body.collect(upTo: 1000)
            }
            Self.expect(error, .responseBodyTruncated, .responseBody, server: server)
            #expect(error?.timing?.bodyBytesReceived == 5 || error?.timing?.bodyBytesReceived == 3)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    /// Bytes after a complete response are never taken for the next one: the response stands, and its
    /// connection is closed instead of pooled. Each case has them arrive together with the response.
    @Test(
        arguments: [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 2",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nX: ",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 2",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\r\n",
        ]
    )
    func bytesBeyondTheDeclaredLengthCloseTheConnection(response: String) async throws {
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let response = try await agent.get(Self.url(server))
            #expect(try await response.text() == "ok")
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test func bytesBeyondTheDeclaredLengthInALaterPacketCloseTheConnection() async throws {
        let answer = ScriptedAnswer(pieces: ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 2"])
        try await Self.withServer(answer) { agent, server in
            let response = try await agent.get(Self.url(server))
            #expect(try await response.text() == "ok")
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    /// A body over the limit of `collect(upTo:)`, of which the end never comes: the connection is in
    /// the middle of it when collecting gives up. (A body that arrived whole before would leave its
    /// connection reusable.)
    @Test(
        arguments: [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nhelloworld",
        ]
    )
    func collectUpToALimitFailsAndDropsTheConnection(response: String) async throws {
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let error = await Self.failure {
                let response = try await agent.get(Self.url(server))
                _ = try await response.body.collect(upTo: 7)
            }
            Self.expect(error, .responseBodyTooLarge, .responseBody, server: server)
            #expect(error?.message.contains("7 bytes") == true)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    // MARK: - Head limits

    /// `count` fields of `size` bytes each ("X-Field-0001: aaa…\r\n").
    static func fields(_ count: Int, size: Int) -> String {
        (0..<count).map { index in
            let name = "X-Field-" + String(String(index + 10_000).suffix(4))
            let value = String(repeating: "a", count: size - name.utf8.count - 4)
            return "\(name): \(value)\r\n"
        }.joined()
    }

    @Test func aHeadLargerThanTheLimitFails() async throws {
        // 100 fields of 100 bytes: about 10 KB.
        let response = "HTTP/1.1 200 OK\r\n\(Self.fields(100, size: 100))Content-Length: 2\r\n\r\nok"
        var configuration = Agent.Configuration()
        configuration.maxResponseHeadSize = 8192
        try await Self.withServer(ScriptedAnswer(response), configuration: configuration) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
            #expect(error?.message.contains("8192 bytes") == true)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test func aHeadExactlyAtTheLimitPassesAndOneByteMoreFails() async throws {
        let head = "HTTP/1.1 200 OK\r\n\(Self.fields(20, size: 50))Content-Length: 2\r\n\r\n"
        for (limit, passes) in [(head.utf8.count, true), (head.utf8.count - 1, false)] {
            var configuration = Agent.Configuration()
            configuration.maxResponseHeadSize = limit
            try await Self.withServer(ScriptedAnswer(head + "ok"), configuration: configuration) { agent, server in
                let error = await Self.failure {
                    let response = try await agent.get(Self.url(server))
                    #expect(try await response.text() == "ok")
                    #expect(response.headerFields.count == 21)
                }
                if passes {
                    #expect(error == nil, "limit \(limit): \(String(describing: error))")
                } else {
                    Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
                }
            }
        }
    }

    @Test(
        arguments: [
            "HTTP/1.1 200 OK\r\nX-Huge: \(String(repeating: "a", count: 100_000))\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 200 \(String(repeating: "O", count: 100_000))\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\n\(Self.fields(1000, size: 100))Content-Length: 2\r\n\r\nok",
        ]
    )
    func aHugeHeadFailsWithTheDefaultLimit(response: String) async throws {
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
            #expect(error?.message.contains("\(64 * 1024) bytes") == true)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test func aHeadThatNeverEndsFailsOnceItPassesTheLimit() async throws {
        // The head keeps coming in pieces, each within the limit; together they exceed it.
        let piece = "X-More: \(String(repeating: "b", count: 1000))\r\n"
        let answer = ScriptedAnswer(pieces: ["HTTP/1.1 200 OK\r\n"] + Array(repeating: piece, count: 20))
        var configuration = Agent.Configuration()
        configuration.maxResponseHeadSize = 4096
        try await Self.withServer(answer, configuration: configuration) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test func informationalHeadsCountTowardTheLimit() async throws {
        let final = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        let hints = "HTTP/1.1 103 Early Hints\r\n\(Self.fields(30, size: 100))\r\n"
        var configuration = Agent.Configuration()
        configuration.maxResponseHeadSize = 2048
        #expect(final.utf8.count < 2048 && hints.utf8.count > 2048)
        try await Self.withServer(ScriptedAnswer(hints + final + "ok"), configuration: configuration) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test func theParsersOwnLimitFailsWithTheSameCode() async throws {
        // Above 80 KiB of fields NIO's parser stops first, whatever maxResponseHeadSize allows.
        let response =
            "HTTP/1.1 200 OK\r\nX-Huge: \(String(repeating: "a", count: 100_000))\r\nContent-Length: 2\r\n\r\nok"
        var configuration = Agent.Configuration()
        configuration.maxResponseHeadSize = 1 << 20
        try await Self.withServer(ScriptedAnswer(response), configuration: configuration) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
            #expect(error?.message.contains("80 KiB") == true)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    @Test func tooManyHeaderFieldsFail() async throws {
        var configuration = Agent.Configuration()
        configuration.maxResponseHeaderCount = 10
        for (count, passes) in [(10, true), (11, false)] {
            // `count` fields in all, Content-Length included.
            let response = "HTTP/1.1 200 OK\r\n\(Self.fields(count - 1, size: 20))Content-Length: 2\r\n\r\nok"
            try await Self.withServer(ScriptedAnswer(response), configuration: configuration) { agent, server in
                let error = await Self.failure {
                    let response = try await agent.get(Self.url(server))
                    #expect(try await response.text() == "ok")
                }
                if passes {
                    #expect(error == nil, "\(count) fields: \(String(describing: error))")
                } else {
                    Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
                    #expect(error?.message.contains("11 header fields") == true)
                    try await Self.expectAFreshConnectionNext(agent, server)
                }
            }
        }
    }

    @Test func theDefaultFieldCountLimitIsAHundred() async throws {
        let response = "HTTP/1.1 200 OK\r\n\(Self.fields(100, size: 20))Content-Length: 2\r\n\r\nok"
        #expect(Agent.Configuration().maxResponseHeaderCount == 100)
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let error = await Self.failure { _ = try await agent.get(Self.url(server)) }
            Self.expect(error, .responseHeadTooLarge, .responseHead, server: server)
            #expect(error?.message.contains("101 header fields") == true)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }

    // MARK: - Responses without bodies, informational responses, trailers

    static let informational =
        "HTTP/1.1 100 Continue\r\n\r\n"
        + "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"

    @Test(arguments: [false, true])
    func informationalResponsesAreSkipped(inPieces: Bool) async throws {
        let final = "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\nfinal"
        let answer =
            inPieces
            ? ScriptedAnswer(pieces: ["HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 103 Early Hints\r\n", "\r\n", final])
            : ScriptedAnswer(Self.informational + final)
        try await Self.withServer(answer) { agent, server in
            let response = try await agent.get(Self.url(server))
            #expect(response.status.code == 200)
            #expect(response.headerFields[HTTPField.Name("X-Final")!] == "yes")
            #expect(response.headerFields[HTTPField.Name("Link")!] == nil)
            #expect(try await response.text() == "final")
            let next = try await agent.get(Self.url(server, "/ok"))
            #expect(try await next.text() == "ok")
            #expect(next.connection.isReused)
            #expect(server.accepted == 1)
        }
    }

    @Test func trailersAfterAChunkedBodyAreTolerated() async throws {
        let response =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            + "2\r\nok\r\n0\r\nX-Checksum: abc\r\nX-Other: def\r\n\r\n"
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            for _ in 0..<2 {
                let response = try await agent.get(Self.url(server))
                #expect(try await response.text() == "ok")
            }
            let next = try await agent.get(Self.url(server, "/ok"))
            #expect(try await next.text() == "ok")
            #expect(next.connection.isReused)
            #expect(server.accepted == 1)
        }
    }

    @Test(arguments: [204, 304])
    func aStatusWithoutABodyIgnoresItsContentLength(code: Int) async throws {
        let response = "HTTP/1.1 \(code) Whatever\r\nContent-Length: 5\r\n\r\n"
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let response = try await agent.get(Self.url(server))
            #expect(response.status.code == code)
            #expect(try await response.body.collect(upTo: 100).readableBytes == 0)
            let next = try await agent.get(Self.url(server, "/ok"))
            #expect(try await next.text() == "ok")
            #expect(next.connection.isReused)
            #expect(server.accepted == 1)
        }
    }

    @Test(arguments: [204, 304])
    func aBodySentWithAStatusWithoutOneIsNotTakenForTheNextResponse(code: Int) async throws {
        for body in ["hello", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", "HTTP/1.1 2"] {
            let response = "HTTP/1.1 \(code) Whatever\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            try await Self.withServer(ScriptedAnswer(response)) { agent, server in
                let response = try await agent.get(Self.url(server))
                #expect(response.status.code == code)
                #expect(try await response.body.collect(upTo: 100).readableBytes == 0)
                try await Self.expectAFreshConnectionNext(agent, server)
            }
        }
    }

    @Test func aHeadResponseWithABodyIsNotTakenForTheNextResponse() async throws {
        let response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        try await Self.withServer(ScriptedAnswer(response)) { agent, server in
            let head = try await agent.execute(HTTPRequest(method: .head, url: Self.url(server)))
            #expect(head.headerFields[.contentLength] == "5")
            #expect(try await head.body.collect(upTo: 100).readableBytes == 0)
            try await Self.expectAFreshConnectionNext(agent, server)
        }
    }
}
