import Foundation
import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import fetch

#if canImport(Glibc)
import Glibc
#endif

/// `fetch -v` and the progress bar, run as a subprocess against local TLS servers.
@Suite("fetch -v and the progress bar")
struct FetchVerboseTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    // MARK: - -v

    @Test func verboseShowsOneDialThenReuse() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let port = server.port
        let result = try await FetchCLITests.fetch(
            ["-v", "-o", "/dev/null", "--cacert", files.caPath, server.url("/bytes/10"), server.url("/hello")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.standardError.split(separator: "\n").map(String.init)
        func count(_ line: String) -> Int { lines.count { $0 == line } }
        func index(_ prefix: String, after start: Int = -1) -> Int {
            lines.indices.first { $0 > start && lines[$0].hasPrefix(prefix) } ?? Int.max
        }
        // The dial, once.
        #expect(count("* Host localhost:\(port) was resolved.") == 1, "\(result.standardError)")
        #expect(lines.contains("* IPv4: 127.0.0.1"))
        #expect(count("*   Trying 127.0.0.1:\(port)...") == 1)
        #expect(count("* Connected to localhost (127.0.0.1) port \(port) (#1)") == 1)
        #expect(lines.count { $0.hasPrefix("* SSL connection using TLSv1.3 / TLS_") } == 1)
        #expect(count("* full TLS handshake") == 1)
        #expect(count("*  SSL certificate verify ok.") == 1)
        #expect(!lines.contains("* TLS handshake: offering a cached session"))
        // The second request reuses the connection.
        #expect(lines.count { $0.hasPrefix("* Re-using existing connection #1 with host localhost (idle ") } == 1)
        // Both heads, with their header fields.
        #expect(count("> GET /bytes/10 HTTP/1.1") == 1)
        #expect(count("> GET /hello HTTP/1.1") == 1)
        #expect(count("> Host: localhost:\(port)") == 2)
        #expect(count("< HTTP/1.1 200 OK") == 2)
        #expect(count("< Content-Length: 10") == 1)
        #expect(count("< X-Connection-ID: 1") == 2)
        #expect(count("< X-Request-Number: 2") == 1)
        #expect(count("* Connection #1 to host localhost left intact") == 2)
        // In the order things happened.
        let connected = index("* Connected to")
        let firstRequest = index("> GET /bytes/10")
        let firstResponse = index("< HTTP/1.1 200", after: firstRequest)
        let reuse = index("* Re-using", after: firstResponse)
        let secondRequest = index("> GET /hello", after: reuse)
        let secondResponse = index("< HTTP/1.1 200", after: secondRequest)
        #expect(connected < firstRequest && secondResponse < lines.count, "\(result.standardError)")
        // The server saw one connection carry both requests.
        #expect(server.stats.accepted == 1)
        #expect(server.stats.requests == 2)
        try await server.shutdown()
    }

    @Test func verboseShowsARefusedConnect() async throws {
        let port = try await unusedLoopbackPort()
        let result = try await FetchCLITests.fetch(["-v", "https://127.0.0.1:\(port)/"])
        #expect(result.status == 7)
        let lines = result.standardError.split(separator: "\n").map(String.init)
        #expect(lines.contains("*   Trying 127.0.0.1:\(port)..."), "\(result.standardError)")
        #expect(lines.contains("* connect to 127.0.0.1 port \(port) failed: connection refused"))
        #expect(lines.contains { $0.hasPrefix("* Connection #1 failed: 127.0.0.1:\(port): connect: ") })
        #expect(!lines.contains { $0.hasPrefix("* Connected") || $0.hasPrefix(">") || $0.hasPrefix("<") })
    }

    @Test func verboseShowsSessionResumption() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        // `/close` ends each connection, so the second request dials again and resumes the session.
        let result = try await FetchCLITests.fetch(
            ["-v", "-o", "/dev/null", "--cacert", files.caPath, server.url("/close"), server.url("/close")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.standardError.split(separator: "\n").map(String.init)
        func index(_ prefix: String) -> Int { lines.firstIndex { $0.hasPrefix(prefix) } ?? Int.max }
        #expect(lines.count { $0 == "* full TLS handshake" } == 1, "\(result.standardError)")
        #expect(lines.count { $0 == "* TLS handshake: offering a cached session" } == 1)
        #expect(lines.count { $0 == "* SSL session resumed" } == 1)
        #expect(index("* full TLS handshake") < index("* TLS handshake: offering"))
        #expect(index("* TLS handshake: offering") < index("* SSL session resumed"))
        #expect(lines.contains("* Connected to localhost (127.0.0.1) port \(server.port) (#2)"))
        // The first connection's close comes after its response head, never before, and nothing is
        // said to be left intact.
        #expect(index("< HTTP/1.1 200 OK") < index("* Connection #1 to host localhost closed ("))
        #expect(
            index("* Connection #1 to host localhost closed (")
                < index("* Connected to localhost (127.0.0.1) port \(server.port) (#2)")
        )
        #expect(!result.standardError.contains("left intact"))
        #expect(await server.waitUntil { $0.resumedHandshakes == 1 })
        #expect(server.stats.accepted == 2)
        #expect(server.stats.fullHandshakes == 1)
        try await server.shutdown()
    }

    /// Two requests at once on one connection, as with parallel transfers, fed to the observers by hand:
    /// lines are tagged, and what happened on the connection after a response head arrived waits until
    /// that head is printed, even when the tasks print the heads in the other order.
    @Test func verboseKeepsTheOrderOfInterleavedRequests() throws {
        let written = NIOLockedValueBox("")
        let verbose = Verbose(configuration: .init(decompression: .disabled), tagged: true) { text in
            written.withLockedValue { $0 += text }
        }
        let connections = try #require(verbose.observers.first)
        let connection = ObservedConnection(id: 1, scheme: "https", host: "localhost", port: 8443)
        func observed(_ id: UInt64, _ path: String) -> ObservedRequest {
            ObservedRequest(id: id, method: .get, scheme: "https", host: "localhost", port: 8443, path: path)
        }
        func response(_ number: Int) -> AgentResponse {
            var head = HTTPResponse(status: .ok)
            head.headerFields[HTTPField.Name("X-Request-Number")!] = String(number)
            return AgentResponse(
                head: head,
                body: ResponseBody(bytes: ByteBuffer()),
                connection: ConnectionInfo(id: 1, isReused: number > 1)
            )
        }
        let (first, second) = (observed(1, "/a"), observed(2, "/b"))
        let a = verbose.request(try HTTPRequest(method: .get, url: "https://localhost:8443/a"))
        let b = verbose.request(try HTTPRequest(method: .get, url: "https://localhost:8443/b"))

        a.requestQueued(first)
        b.requestQueued(second)
        connections.dnsStarted(connection)
        connections.connectStarted(connection, address: "127.0.0.1:8443")
        connections.connectFinished(connection, address: "127.0.0.1:8443", failure: nil)
        a.connectionAcquired(first, connection: ConnectionInfo(id: 1, isReused: false), idleTime: nil)
        a.requestHeadWritten(first)
        a.responseHeadReceived(first, status: .ok)
        // The first body ends before its task prints the head; the second request takes the connection.
        b.connectionAcquired(second, connection: ConnectionInfo(id: 1, isReused: true), idleTime: .milliseconds(2))
        b.requestHeadWritten(second)
        b.responseHeadReceived(second, status: .ok)
        connections.connectionClosed(connection, reason: .closedByServer)
        // The second task prints its head first: it waits for the first one.
        b.received(response(2))
        let beforeFirstHead = written.withLockedValue { $0 }
        #expect(!beforeFirstHead.contains("<") && !beforeFirstHead.contains("[2]"), "\(beforeFirstHead)")
        a.received(response(1))

        let lines = written.withLockedValue { $0 }.split(separator: "\n").map(String.init)
        #expect(
            lines == [
                "[#1] *   Trying 127.0.0.1:8443...",
                "[#1] * Connected to localhost (127.0.0.1) port 8443 (#1)",
                "[1] > GET /a HTTP/1.1",
                "[1] > Host: localhost:8443",
                "[1] >",
                "[1] < HTTP/1.1 200 OK",
                "[1] < X-Request-Number: 1",
                "[1] <",
                "[2] * Re-using existing connection #1 with host localhost (idle 2.0 ms)",
                "[2] > GET /b HTTP/1.1",
                "[2] > Host: localhost:8443",
                "[2] >",
                "[2] < HTTP/1.1 200 OK",
                "[2] < X-Request-Number: 2",
                "[2] <",
                "[#1] * Connection #1 to host localhost closed (closedByServer)",
            ],
            "\(lines)"
        )
    }

    // MARK: - Progress bar

    @Test func noProgressBarIntoAPipe() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await FetchCLITests.fetch(
            ["-o", "/dev/null", "--cacert", files.caPath, server.url("/slow/2000000/500")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        #expect(!result.standardError.contains("\r"))
        #expect(result.standardError.isEmpty)
        #expect(server.stats.requests == 1)
        try await server.shutdown()
    }

    @Test func progressBarOnATerminal() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await Self.fetchOnTerminal(
            ["-o", "/dev/null", "--cacert", files.caPath, server.url("/slow/2000000/500")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let error = result.standardError
        // Drawn in place, at least at the start and the end, and the line ended.
        #expect(error.hasPrefix("\r"), "\(error.debugDescription)")
        #expect(error.count { $0 == "\r" } >= 2)
        #expect(error.hasSuffix("\n") && error.count { $0 == "\n" } == 1)
        let last = try #require(error.split(separator: "\r").last)
        #expect(last.hasPrefix("100% [####################] 1.9 MiB / 1.9 MiB "), "\(last.debugDescription)")
        #expect(last.contains("/s  in "))
        #expect(error.contains("  0% [--------------------] 0 B / 1.9 MiB"))
        #expect(server.stats.requests == 1)
        try await server.shutdown()
    }

    @Test(arguments: ["-s", "-v"])
    func noProgressBarOnATerminalWith(_ flag: String) async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await Self.fetchOnTerminal(
            [flag, "-o", "/dev/null", "--cacert", files.caPath, server.url("/slow/200000/200")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        #expect(!result.standardError.contains("\r"), "\(result.standardError.debugDescription)")
        #expect(!result.standardError.contains("%"))
        #expect(result.standardError.isEmpty == (flag == "-s"))
        #expect(server.stats.requests == 1)
        try await server.shutdown()
    }

    // MARK: - Helpers

    /// Runs `fetch` with standard error on a pseudo-terminal (in raw mode, so that the bytes arrive as
    /// written) and standard output on a pipe.
    static func fetchOnTerminal(_ arguments: [String]) async throws -> FetchCLITests.Result {
        var primary: Int32 = -1
        var secondary: Int32 = -1
        var mode = termios()
        cfmakeraw(&mode)
        try #require(
            openpty(&primary, &secondary, nil, &mode, nil) == 0,
            "openpty: \(String(cString: strerror(errno)))"
        )
        defer { close(primary) }
        // Close-on-exec, so that no other test's subprocess inherits a side and holds the terminal open.
        _ = fcntl(primary, F_SETFD, FD_CLOEXEC)
        _ = fcntl(secondary, F_SETFD, FD_CLOEXEC)

        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let process = Process()
        process.executableURL = directory.appendingPathComponent("fetch")
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(fileDescriptor: secondary, closeOnDealloc: false)
        do {
            try process.run()
        } catch {
            close(secondary)
            throw error
        }
        // The child has its copy; once it exits, reading the primary side fails with EIO.
        close(secondary)
        async let outData = Self.readAll(output.fileHandleForReading)
        async let errData = Self.readTerminal(primary)
        let (out, err) = await (outData, errData)
        while process.isRunning {
            try await Task.sleep(for: .milliseconds(5))
        }
        return FetchCLITests.Result(
            status: process.terminationStatus,
            standardOutput: String(decoding: out, as: UTF8.self),
            standardError: String(decoding: err, as: UTF8.self)
        )
    }

    private static func readAll(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: handle.readDataToEndOfFile())
            }
        }
    }

    /// Reads the terminal's primary side until every copy of the secondary side is closed.
    private static func readTerminal(_ descriptor: Int32) async -> [UInt8] {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var bytes: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                    if count > 0 {
                        bytes += buffer[..<count]
                    } else if count < 0 && errno == EINTR {
                        continue
                    } else {
                        break  // EIO: the child and every copy of its terminal are gone
                    }
                }
                continuation.resume(returning: bytes)
            }
        }
    }
}
