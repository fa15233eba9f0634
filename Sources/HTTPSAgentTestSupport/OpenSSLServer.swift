import Foundation

/// `openssl s_server` as a subprocess on loopback: an independent TLS server to test against.
///
/// With `-www` it answers `GET /` with a page that starts with "New, TLSv1.3, Cipher is …" or
/// "Reused, …": the server's own word on whether the session was resumed.
package final class OpenSSLServer: @unchecked Sendable {
    /// Why a test that needs `openssl` is skipped here, or `nil` when the binary is there.
    package static var unavailableReason: String? {
        OpenSSLServer.executable == nil ? "the openssl command is not installed (apt-get install -y openssl)" : nil
    }

    /// Whether tests must not skip: on CI a missing server is a failure.
    package static var isCI: Bool {
        ProcessInfo.processInfo.environment["CI"] == "true"
    }

    private static let executable: String? = {
        for directory in ["/usr/bin", "/usr/local/bin", "/bin"] {
            let path = directory + "/openssl"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }()

    private let process: Process
    /// The port it accepted on.
    package let port: Int

    /// Starts `openssl s_server -accept 127.0.0.1:0` with `arguments` and waits, on a thread of its own,
    /// for its ACCEPT line.
    ///
    /// - Throws: when `openssl` is missing or does not start listening within 10 seconds.
    package static func start(arguments: [String]) async throws -> OpenSSLServer {
        try await runBlocking { try OpenSSLServer(arguments: arguments) }
    }

    private init(arguments: [String]) throws {
        guard let executable = Self.executable else {
            throw StartError(description: Self.unavailableReason ?? "openssl not found")
        }
        let process = Process()
        // Under `timeout`, so that a test run that dies cannot leave a server behind for long.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["-k", "5", "600", executable, "s_server", "-accept", "127.0.0.1:0"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = Pipe()
        try process.run()
        let reader = output.fileHandleForReading
        var text = ""
        let deadline = Date().addingTimeInterval(10)
        var port: Int?
        while port == nil && Date() < deadline && process.isRunning {
            // Wait for output at most until the deadline: `availableData` alone would block for as long as
            // the server prints nothing.
            var descriptor = pollfd(fd: reader.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
            guard poll(&descriptor, 1, milliseconds) > 0 else { continue }
            let data = reader.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
            for line in text.split(separator: "\n") where line.hasPrefix("ACCEPT") {
                port = line.split(separator: ":").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            }
        }
        guard let port else {
            stopProcessUnderTimeout(process)
            throw StartError(description: "openssl s_server did not start listening within 10 s: \(text)")
        }
        // Keep draining its output so that it never blocks on a full pipe, on a thread that ends with the
        // output. (Not a readabilityHandler: on Linux one that stays set is called again and again once
        // the output has ended, and one that removes itself leaks Foundation's weak reference to it.)
        Thread.detachNewThread {
            while !reader.availableData.isEmpty {}
        }
        self.process = process
        self.port = port
    }

    /// Runs `openssl s_client -connect 127.0.0.1:PORT` with `arguments` against this server, with no
    /// input, and returns what it printed (standard output and error together): a way to check what the
    /// server can do, independently of the client under test, before a test relies on it. The client is
    /// waited for on a thread of its own.
    package func probe(_ arguments: [String]) async throws -> String {
        try await runBlocking { try self.probeBlocking(arguments) }
    }

    private func probeBlocking(_ arguments: [String]) throws -> String {
        guard let executable = Self.executable else {
            throw StartError(description: Self.unavailableReason ?? "openssl not found")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments =
            ["-k", "5", "20", executable, "s_client", "-connect", "127.0.0.1:\(self.port)"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The pipe ends when the client exits (at most 20 s, under `timeout`).
        let data = output.fileHandleForReading.readDataToEndOfFile()
        stopProcessUnderTimeout(process)
        return String(decoding: data, as: UTF8.self)
    }

    struct StartError: Error, CustomStringConvertible {
        var description: String
    }

    /// Stops the server.
    package func stop() {
        stopProcessUnderTimeout(self.process)
    }

    deinit {
        self.stop()
    }
}
