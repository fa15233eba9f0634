import Foundation
import HTTPSAgentTestSupport
import NIOCore
import Testing

/// `fetch`'s curl options for what to send and what to write, its pool flags, timeouts and exit codes,
/// run as a subprocess against local servers.
@Suite("fetch: requests, pool flags and exit codes")
struct FetchRequestTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    private func fetch(_ arguments: [String], directory: String? = nil) async throws -> FetchCLITests.Result {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        return try await FetchCLITests.fetch(["--cacert", files.caPath] + arguments, directory: directory)
    }

    // MARK: - What is sent

    @Test func methodHeadersAndFormData() async throws {
        let server = try await environment.tlsServer()
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "b=2\nc=3\r\n".write(toFile: directory + "/form.txt", atomically: true, encoding: .utf8)
        let echo = try await self.fetch(
            ["-X", "PUT", "-d", "a=1", "-d", "@\(directory)/form.txt", "-i", server.url("/echo")]
        )
        #expect(echo.status == 0, "\(echo.standardError)")
        // curl's rules: several -d join with "&"; @FILE loses its newlines.
        #expect(echo.standardOutput.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(echo.standardOutput.contains("X-Request-Method: PUT\r\n"))
        #expect(echo.standardOutput.hasSuffix("\r\n\r\na=1&b=2c=3"))

        let headers = try await self.fetch(
            [
                "-H", "X-Test: one two", "-H", "Accept: text/plain", "-H", "User-Agent:", "-H", "X-Empty;",
                "-d", "x", server.url("/headers"),
            ]
        )
        #expect(headers.status == 0, "\(headers.standardError)")
        let lines = headers.standardOutput.split(separator: "\n").map { $0.lowercased() }
        #expect(lines.first == "post /headers")
        #expect(lines.contains("x-test: one two"))
        #expect(lines.filter { $0.hasPrefix("accept:") } == ["accept: text/plain"])
        #expect(lines.contains("x-empty: "))
        #expect(lines.contains("content-type: application/x-www-form-urlencoded"))
        #expect(!lines.contains { $0.hasPrefix("user-agent") })

        let defaults = try await self.fetch([server.url("/headers")])
        #expect(defaults.standardOutput.lowercased().contains("user-agent: swift-https-agent-fetch/"))
        #expect(defaults.standardOutput.contains("GET /headers\n"))
        try await server.shutdown()
    }

    @Test func dataBinaryKeepsTheFileAsItIs() async throws {
        let server = try await environment.tlsServer()
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bytes = Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        try bytes.write(to: URL(fileURLWithPath: directory + "/blob"))
        let result = try await self.fetch(
            ["--data-binary", "@\(directory)/blob", "-o", directory + "/echoed", server.url("/echo")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/echoed")) == bytes)
        let missing = try await self.fetch(["-d", "@\(directory)/absent", server.url("/echo")])
        #expect(missing.status == 26)
        #expect(missing.standardError.contains("absent"))
        #expect(server.stats.requests == 1)
        try await server.shutdown()
    }

    @Test func headPrintsTheHeadOnly() async throws {
        let server = try await environment.tlsServer()
        let result = try await self.fetch(["-I", server.url("/bytes/5000")])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(result.standardOutput.contains("Content-Length: 5000\r\n"))
        #expect(result.standardOutput.hasSuffix("\r\n\r\n"))
        let invalid = try await self.fetch(["-I", "-d", "x", server.url("/")])
        #expect(invalid.status == 64)
        #expect(invalid.standardError.contains("-I"))
        try await server.shutdown()
    }

    @Test func compressedAsksForGzipAndDecodesIt() async throws {
        let server = try await environment.tlsServer()
        let decoded = try await self.fetch(["--compressed", "-v", "-w", "%{size_download}", server.url("/gzip/3000")])
        #expect(decoded.status == 0, "\(decoded.standardError)")
        #expect(decoded.standardOutput == String(Self.payload(3000).map { Character(UnicodeScalar($0)) }) + "3000")
        #expect(decoded.standardError.contains("> Accept-Encoding: gzip, deflate"))
        // Without --compressed, as in curl: nothing asked for, the bytes as sent.
        let raw = try await self.fetch(["-o", "-", "-i", server.url("/gzip/3000")])  // "-": standard output
        #expect(raw.status == 0)
        #expect(!raw.standardOutput.contains("X-Request-Accept-Encoding"))
        #expect(raw.standardOutput.contains("Content-Encoding: gzip"))
        try await server.shutdown()
    }

    // MARK: - What is written

    @Test func failFlagExits22WithoutTheBody() async throws {
        let server = try await environment.tlsServer()
        let plain = try await self.fetch(["-w", "%{http_code}", server.url("/status/404")])
        #expect(plain.status == 0)
        #expect(plain.standardOutput == "status 404404")
        let failed = try await self.fetch(
            ["-f", "-w", "%{http_code} %{exitcode}", server.url("/status/404"), server.url("/hello")]
        )
        #expect(failed.status == 22, "a later success does not hide the failure")
        #expect(failed.standardOutput == "404 22hello200 0")
        #expect(failed.standardError.contains("(22) localhost:\(server.port): the server answered 404 Not Found"))
        // One connection per run: the error page was read to its end, so its connection served the next URL.
        #expect(server.stats.accepted == 2)
        try await server.shutdown()
    }

    @Test func remoteNameWritesFilesNamedLikeTheURL() async throws {
        let server = try await environment.tlsServer()
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try await self.fetch(
            ["-O", server.url("/bytes/1234?x=1"), server.url("/hello")],
            directory: directory
        )
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.isEmpty)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/1234")).count == 1234)
        #expect(try String(contentsOfFile: directory + "/hello", encoding: .utf8) == "hello")
        let nameless = try await self.fetch(["-O", server.url("/")], directory: directory)
        #expect(nameless.status == 64)
        #expect(nameless.standardError.contains("no file name"))
        try await server.shutdown()
    }

    @Test func silentHidesErrorsUnlessShowError() async throws {
        let port = try await unusedLoopbackPort()
        let silent = try await self.fetch(["-s", "https://127.0.0.1:\(port)/"])
        #expect(silent.status == 7)
        #expect(silent.standardError.isEmpty)
        let shown = try await self.fetch(["-s", "-S", "https://127.0.0.1:\(port)/"])
        #expect(shown.status == 7)
        #expect(shown.standardError.contains("(7) 127.0.0.1:\(port): connect:"))
    }

    // MARK: - Pool flags

    @Test func parallelTransfersRespectMaxSockets() async throws {
        let server = try await environment.tlsServer()
        let limited = try await self.fetch(
            ["--repeat", "4", "--parallel", "4", "--max-sockets", "1", server.url("/delay/50")]
        )
        #expect(limited.status == 0, "\(limited.standardError)")
        #expect(limited.standardOutput == String(repeating: "delayed", count: 4))
        #expect(limited.standardError.contains("4 requests over 1 connection(s)"))
        #expect(server.stats.accepted == 1)
        #expect(server.stats.maxOpen == 1)

        // 1 s: all four are on their way before the first ends, even on a loaded machine.
        let wide = try await self.fetch(["--repeat", "4", "--parallel", "4", server.url("/delay/1000")])
        #expect(wide.status == 0, "\(wide.standardError)")
        #expect(server.stats.accepted == 5)
        #expect(server.stats.maxOpen == 4)
        // Bodies are written whole, never interleaved.
        let sizes = [3000, 5000, 7000]
        let mixed = try await self.fetch(["--parallel", "3"] + sizes.map { server.url("/chunked/\($0)") })
        #expect(mixed.status == 0)
        let expected = sizes.map { Self.payload($0) }
        let output = Array(mixed.standardOutput.utf8)
        let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]]
        #expect(orders.contains { order in order.flatMap { expected[$0] } == output }, "whole bodies, in any order")
        try await server.shutdown()
    }

    @Test func noKeepAliveAndNoFreeSocketsOpenAConnectionPerRequest() async throws {
        let server = try await environment.tlsServer()
        let closing = try await self.fetch(["--no-keepalive", "--repeat", "3", server.url("/hello")])
        #expect(closing.status == 0, "\(closing.standardError)")
        #expect(server.stats.accepted == 3)
        #expect(server.stats.fullHandshakes == 1)
        #expect(server.stats.resumedHandshakes == 2)
        let unpooled = try await self.fetch(["--max-free-sockets", "0", "--repeat", "2", server.url("/hello")])
        #expect(unpooled.status == 0)
        #expect(server.stats.accepted == 5)
        #expect(unpooled.standardError.contains("2 requests over 2 connection(s)"))
        try await server.shutdown()
    }

    // MARK: - Timeouts and exit codes

    @Test func maxTimeExits28NamingHostAndPhase() async throws {
        let server = try await environment.tlsServer()
        let result = try await self.fetch(
            ["-m", "4", "-w", "%{exitcode} %{http_code}", server.url("/delay/20000")]
        )
        #expect(result.status == 28, "\(result.standardError)")
        #expect(result.standardOutput == "28 000")
        #expect(
            result.standardError.contains(
                "(28) localhost:\(server.port): operation timed out after 4000.0 ms (-m) while reading the response head"
            ),
            "\(result.standardError)"
        )
        // The head comes at once, then a tenth of the body every 2 s: -m cuts the body short. The bounds leave
        // a loaded machine seconds to start the process and shake hands.
        let body = try await self.fetch(["-m", "6", server.url("/slow/1000/20000")])
        #expect(body.status == 28)
        #expect(body.standardError.contains("while reading the response body"), "\(body.standardError)")
        #expect(body.standardOutput.utf8.count < 1000)
        #expect(body.standardError.contains(", \(body.standardOutput.utf8.count) bytes received"))
        try await server.shutdown()
    }

    @Test func connectTimeoutCoversTCPAndTLS() async throws {
        let stuck = try StuckListener()
        let tcp = try await self.fetch(["--connect-timeout", "0.3", "https://127.0.0.1:\(stuck.port)/"])
        #expect(tcp.status == 28, "\(tcp.standardError)")
        #expect(tcp.standardError.contains("connect"))
        let silent = try await ScriptedTCPServer.start(.acceptAndNeverRead)
        let tls = try await self.fetch(["--connect-timeout", "0.3", "https://127.0.0.1:\(silent.port)/"])
        #expect(tls.status == 28, "\(tls.standardError)")
        #expect(tls.standardError.contains("TLS handshake"))
        try await silent.shutdown()
    }

    @Test func unknownHostExits6() async throws {
        let result = try await FetchCLITests.fetch(["https://no-such-host.invalid/"])
        #expect(result.status == 6)
        #expect(result.standardError.contains("(6) no-such-host.invalid"))
        #expect(result.standardError.contains("DNS"))
    }

    @Test func badArgumentsAreRejectedBeforeAnyRequest() async throws {
        for arguments in [
            ["-X", "BAD METHOD", "https://localhost/"], ["-H", "no colon", "https://localhost/"],
            ["--parallel", "0", "https://localhost/"], ["-m", "-1", "https://localhost/"],
            ["-o", "x", "-O", "https://localhost/x"],
        ] {
            let result = try await FetchCLITests.fetch(arguments)
            #expect(result.status == 64, "\(arguments): \(result.standardError)")
            #expect(result.standardError.contains("Error:"), "\(arguments)")
        }
        let unreadable = try await FetchCLITests.fetch(["-w", "@/nonexistent/format", "https://localhost/"])
        #expect(unreadable.status == 26)
        #expect(unreadable.standardError.contains("/nonexistent/format"))
    }

    // MARK: - Helpers

    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "fetch-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    /// The test server's body for /chunked/N: the alphabet over and over.
    static func payload(_ count: Int) -> [UInt8] {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz".utf8)
        return (0..<count).map { alphabet[$0 % 26] }
    }
}
