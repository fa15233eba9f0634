import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

/// gzip and deflate bodies decoded as they stream, against a real TLS server that compresses them.
@Suite("Decompression")
struct DecompressionTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// The server's uncompressed payload: the alphabet over and over.
    static func payload(_ count: Int) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz")
        return String((0..<count).map { alphabet[$0 % 26] })
    }

    @Test(arguments: ["gzip", "zlib", "rawdeflate"])
    func bodiesAreDecodedAsTheyStream(route: String) async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let response = try await agent.get(server.url("/\(route)/300000"))
            #expect(response.headerFields[.contentEncoding] == nil, "the encoding no longer applies")
            #expect(response.headerFields[.contentLength] == nil)
            #expect(response.decodedContentEncoding == (route == "gzip" ? "gzip" : "deflate"))
            #expect(response.headerFields[HTTPField.Name("X-Request-Accept-Encoding")!] == "gzip, deflate")
            var pieces = 0
            var text = ""
            for try await chunk in response.body {
                pieces += 1
                text += String(buffer: chunk)
            }
            #expect(text == Self.payload(300_000))
            #expect(pieces > 1, "decoded piece by piece, not buffered whole")
            let timing = response.timing
            #expect(timing.decodedBodyBytes == 300_000)
            #expect(timing.bodyBytesReceived > 0 && timing.bodyBytesReceived < 10_000, "wire bytes are compressed")
        }
    }

    @Test func severalGzipMembersDecodeOneAfterTheOther() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let text = try await agent.get(server.url("/gzip2/1000")).text()
            #expect(text == Self.payload(1000) + Self.payload(1000))
        }
    }

    @Test func aCallerThatAsksForAnEncodingGetsTheBytesAsSent() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            var request = try HTTPRequest(method: .get, url: server.url("/gzip/5000"))
            request.headerFields[.acceptEncoding] = "gzip"
            let response = try await agent.execute(request)
            #expect(response.headerFields[.contentEncoding] == "gzip")
            #expect(response.decodedContentEncoding == nil)
            let bytes = try await response.body.collect(upTo: 1 << 20)
            #expect(bytes.getBytes(at: bytes.readerIndex, length: 2) == [0x1F, 0x8B], "the gzip magic")
            #expect(response.timing.decodedBodyBytes == nil)
        }
    }

    @Test func disabledSendsNoAcceptEncoding() async throws {
        var configuration = environment.configuration()
        configuration.decompression = .disabled
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            let headers = try await agent.get(server.url("/headers")).text().lowercased()
            #expect(!headers.contains("accept-encoding"))
            let response = try await agent.get(server.url("/gzip/100"))
            #expect(response.headerFields[.contentEncoding] == "gzip")
            #expect(try await response.body.collect(upTo: 1 << 20).readableBytes < 100)
        }
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let headers = try await agent.get(server.url("/headers")).text().lowercased()
            #expect(headers.contains("accept-encoding: gzip, deflate\n"), "on by default")
        }
    }

    @Test func headHasNothingToDecode() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let response = try await agent.execute(HTTPRequest(method: .head, url: server.url("/gzip/1000")))
            #expect(try await response.body.collect(upTo: 0).readableBytes == 0)
            #expect(response.headerFields[.contentEncoding] == "gzip", "left alone: no body was decoded")
            #expect(try await agent.get(server.url("/hello")).connection.isReused)
        }
    }

    @Test func aDecompressionBombIsStoppedAndItsConnectionClosed() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // 16 GB of zeros in 1,600 gzip members, about 16 MB on the wire: a ratio near 1,000.
            let response = try await agent.get(server.url("/bomb/1600"))
            var delivered = 0
            let error = await agentError {
                for try await chunk in response.body { delivered += chunk.readableBytes }
            }
            #expect(error?.code == .decompressionLimitExceeded)
            #expect(error?.phase == .responseBody)
            #expect(error?.host == "localhost")
            #expect(error?.description.contains("100 times") == true, "\(String(describing: error))")
            #expect(delivered < 100 << 20, "stopped near the limit, not at 16 GB: \(delivered)")
            #expect(error?.timing?.decodedBodyBytes.map { $0 > 1 << 20 } == true)
            // The rest of the bomb is not read: the next request gets a new connection.
            let next = try await agent.get(server.url("/hello"))
            #expect(try await next.text() == "hello")
            #expect(!next.connection.isReused)
            #expect(server.stats.accepted == 2)
        }
    }

    @Test func aFixedCapStopsALargeBody() async throws {
        var configuration = environment.configuration()
        configuration.decompression = Decompression(isEnabled: true, maxDecodedBytes: 50_000, maxRatio: nil)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            let error = await agentError { _ = try await agent.get(server.url("/gzip/60000")).text() }
            #expect(error?.code == .decompressionLimitExceeded)
            #expect(error?.message.contains("50000 bytes") == true)
            let fits = try await agent.get(server.url("/gzip/40000")).text()
            #expect(fits == Self.payload(40000))
        }
    }

    @Test(arguments: [("gzip-cut", "ends early"), ("gzip-junk", "corrupt")])
    func brokenStreamsFailWithTheirReason(route: String, reason: String) async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let error = await agentError { _ = try await agent.get(server.url("/\(route)/5000")).text() }
            #expect(error?.code == .decompressionFailed)
            #expect(error?.phase == .responseBody)
            #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
            // The HTTP exchange itself was complete; the pool stays healthy.
            let next = try await agent.get(server.url("/hello")).text()
            #expect(next == "hello")
        }
    }

    @Test func aZlibHeaderSplitAfterItsFirstByteIsStillRecognised() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let text = try await agent.get(server.url("/zlib-split/5000")).text()
            #expect(text == Self.payload(5000))
        }
    }

    @Test func aRangeRequestDoesNotAskForCompression() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            var request = try HTTPRequest(method: .get, url: server.url("/headers"))
            request.headerFields[.range] = "bytes=0-10"
            let headers = try await agent.execute(request).text().lowercased()
            #expect(headers.contains("range: bytes=0-10"))
            #expect(!headers.contains("accept-encoding"), "a piece of a gzip stream cannot be decoded alone")
        }
    }

    @Test func aRatioBelowOneCountsAsOne() async throws {
        var configuration = environment.configuration()
        configuration.decompression = Decompression(isEnabled: true, maxRatio: 0)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            // Under the 1 MiB floor: no limit applies.
            let small = try await agent.get(server.url("/gzip/500000")).text()
            #expect(small.utf8.count == 500_000)
            // Past it, the alphabet's ratio of well over 1 stops it, without dividing by zero.
            let error = await agentError { _ = try await agent.get(server.url("/gzip/3000000")).text() }
            #expect(error?.code == .decompressionLimitExceeded)
        }
    }
}
