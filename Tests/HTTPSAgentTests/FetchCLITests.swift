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
        let result = try await Self.fetch(["-sS", server.url("/hello")])
        #expect(result.status == 60)
        #expect(result.standardError.contains("unable to get local issuer certificate"))
        #expect(result.standardError.contains("localhost:\(server.port)"))
        try await server.shutdown()
    }

    @Test func writeOutPrintsCurlsTimingVariables() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        // The command from curl's documentation, plus our variables.
        let format =
            "dns lookup %{time_namelookup}s tcp connect %{time_connect}s tls handshake %{time_appconnect}s "
            + "pre transfer %{time_pretransfer}s start transfer %{time_starttransfer}s total time %{time_total}s "
            + "| %{http_code} %{size_download} %{num_connects} %{reused} %{resumed} %{tls_version} "
            + "%{remote_ip}:%{remote_port} %{time_queue} 100%% %{bogus}\\n"
        let result = try await Self.fetch(
            [
                "-o", "/dev/null", "-s", "--cacert", files.caPath, "-w", format, server.url("/bytes/300"),
                server.url("/hello"),
            ]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.standardOutput.split(separator: "\n").map(String.init)
        try #require(lines.count == 2, "\(result.standardOutput)")
        func seconds(_ line: String, after label: String) throws -> Double {
            let rest = try #require(line.range(of: label + " ")).upperBound
            return try #require(Double(line[rest...].prefix { $0 != "s" }))
        }
        let labels = ["dns lookup", "tcp connect", "tls handshake", "pre transfer", "start transfer", "total time"]
        let first = try labels.map { try seconds(lines[0], after: $0) }
        #expect(first == first.sorted(), "cumulative times go up: \(first)")
        #expect(first.allSatisfy { $0 > 0 })
        #expect(lines[0].contains("| 200 300 1 0 0 TLSv1.3 127.0.0.1:\(server.port) "))
        // time_queue, then "%%" as "%", and an unknown variable as nothing.
        let tail = lines[0].split(separator: " ", omittingEmptySubsequences: false).suffix(3).map(String.init)
        #expect(Double(tail[0]) != nil && tail[1] == "100%" && tail[2].isEmpty, "\(tail)")
        // The second URL reuses the connection: no DNS, connect or TLS, as curl prints it.
        let second = try labels.map { try seconds(lines[1], after: $0) }
        #expect(Array(second.prefix(3)) == [0, 0, 0])
        #expect(second[3] > 0 && second[4] >= second[3] && second[5] >= second[4])
        #expect(lines[1].contains("| 200 5 0 1 0 TLSv1.3 127.0.0.1:\(server.port) "))
        #expect(server.stats.accepted == 1)
        try await server.shutdown()
    }

    @Test func writeOutAfterAFailureHasCode000() async throws {
        let port = try await unusedLoopbackPort()
        let result = try await Self.fetch(
            ["-s", "-w", "%{http_code} %{time_connect} %{exitcode} %{num_connects}", "https://127.0.0.1:\(port)/"]
        )
        #expect(result.status == 7)
        #expect(result.standardOutput == "000 0.000000 7 0")
    }

    @Test func refusedConnectionExitsWithCurlsCode7() async throws {
        let port = try await unusedLoopbackPort()
        let result = try await Self.fetch(["https://127.0.0.1:\(port)/"])
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

    /// Runs `fetch` with `arguments` (in `directory`, if given) and collects its output.
    static func fetch(_ arguments: [String], directory workingDirectory: String? = nil) async throws -> Result {
        try await Self.run("fetch", arguments, directory: workingDirectory)
    }

    /// Runs one of the package's executables, built next to the test bundle, and collects its output.
    ///
    /// `lowPriority` runs it under `nice -n 19`, so that a long CPU-bound run does not starve the
    /// timing-sensitive tests that run alongside it.
    static func run(
        _ product: String,
        _ arguments: [String],
        directory workingDirectory: String? = nil,
        lowPriority: Bool = false
    ) async throws -> Result {
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let executable = directory.appendingPathComponent(product)
        let process = Process()
        if lowPriority {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nice")
            process.arguments = ["-n", "19", executable.path] + arguments
        } else {
            process.executableURL = executable
            process.arguments = arguments
        }
        if let workingDirectory {
            process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory)
        }
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
