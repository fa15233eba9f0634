import Foundation
import HTTPSAgentTestSupport
import Testing

/// Runs the `fetch` binary (built as a dependency of this test target) against local servers.
@Suite("The fetch command")
struct FetchCLITests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func hundredURLsToOneHostUseOneConnection() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let urls = (0..<100).map { server.url("/bytes/\($0)") }
        let result = try await Self.fetch(["--cacert", files.caPath] + urls)
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.utf8.count == (0..<100).reduce(0, +))
        #expect(result.standardError.contains("100 requests over 1 connection(s)"))
        #expect(result.standardError.contains("connection #1 reused"))
        #expect(server.stats.accepted == 1)
        #expect(server.stats.requests == 100)
        try await server.shutdown()
    }

    @Test func silentModeAndOutputFile() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let output = files.directory + "/body.bin"
        defer { unlink(output) }
        let result = try await Self.fetch(
            ["-s", "-o", output, "--cacert", files.caPath, server.url("/bytes/1000"), server.url("/bytes/24")]
        )
        #expect(result.status == 0)
        #expect(result.standardError.isEmpty)
        #expect(result.standardOutput.isEmpty)
        let written = try Data(contentsOf: URL(fileURLWithPath: output))
        #expect(written.count == 1024)
        try await server.shutdown()
    }

    @Test func untrustedServerExitsWithCurlsCode60() async throws {
        let server = try await environment.tlsServer()
        let result = try await Self.fetch(["-s", server.url("/hello")])
        #expect(result.status == 60)
        #expect(result.standardError.contains("unable to get local issuer certificate"))
        #expect(result.standardError.contains("localhost:\(server.port)"))
        try await server.shutdown()
    }

    @Test func refusedConnectionExitsWithCurlsCode7() async throws {
        let port = try await unusedLoopbackPort()
        let result = try await Self.fetch(["-s", "https://127.0.0.1:\(port)/"])
        #expect(result.status == 7)
        #expect(result.standardError.contains("connection refused"))
    }

    @Test func demoShowsNewAndReusedConnections() async throws {
        let result = try await Self.fetch(["--demo"])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.contains("connection #1  new"))
        #expect(result.standardOutput.contains("connection #1  reused"))
        #expect(result.standardOutput.contains("Summary, as counted by the server"))
        #expect(result.standardOutput.contains("full TLS handshake"))
        #expect(result.standardOutput.contains("resumed TLS session"))
        #expect(result.standardOutput.contains("TLS handshakes:         2 full, 4 resumed"))
        #expect(!result.standardOutput.contains("\u{1B}["))  // no colour when not a terminal
    }

    struct Result {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// Runs `fetch` with `arguments` and collects its output.
    static func fetch(_ arguments: [String]) async throws -> Result {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let executable = directory.appendingPathComponent("fetch")
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        try process.run()
        // Read both pipes to the end off the cooperative pool, so a chatty child never blocks.
        async let outData = Self.readAll(output.fileHandleForReading)
        async let errData = Self.readAll(error.fileHandleForReading)
        let (out, err) = await (outData, errData)
        while process.isRunning {
            try await Task.sleep(for: .milliseconds(5))
        }
        return Result(
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
}
