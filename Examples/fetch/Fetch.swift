import ArgumentParser
import HTTPSAgent
import HTTPTypes
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// `fetch`: a small curl-like fetcher on top of the HTTPSAgent library.
///
/// Every URL on the command line goes through one ``Agent``, in order, so requests to the same host
/// share a kept-alive connection.
@main
struct Fetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Fetch URLs through one connection-pooling HTTPS Agent.",
        discussion: """
            Bodies go to standard output (or to the file given with -o). With several URLs, a line per \
            request on standard error shows which connection carried it and whether it was reused.

            Run `fetch --demo` to see pooling against a local HTTPS server, with no network needed.
            """
    )

    @Flag(name: .shortAndLong, help: "Silent: print no progress or per-request lines, only errors.")
    var silent = false

    @Option(name: .shortAndLong, help: "Write bodies to FILE instead of standard output.")
    var output: String?

    @Option(name: .customLong("cacert"), help: "Trust the CA certificates in this PEM file instead of the system's.")
    var caCertificate: String?

    @Option(
        name: [.customShort("w"), .customLong("write-out")],
        help: ArgumentHelp(
            "After each transfer, print FORMAT to standard output with curl's %{variables} expanded.",
            discussion: """
                Variables: time_namelookup, time_connect, time_appconnect, time_pretransfer, \
                time_posttransfer, time_starttransfer, time_total, time_redirect, http_code, size_download, \
                speed_download, num_connects, remote_ip, remote_port, local_ip, local_port, \
                ssl_verify_result, url_effective, errormsg, exitcode; and ours: time_queue, reused, resumed, \
                tls_version, tls_cipher. Escapes: \\n \\r \\t.
                """,
            valueName: "FORMAT"
        )
    )
    var writeOut: String?

    @Flag(help: "Start a local HTTPS server and show what the Agent does (no URL needed).")
    var demo = false

    @Argument(help: "The URLs to fetch, in order.")
    var urls: [String] = []

    func validate() throws {
        if !self.demo && self.urls.isEmpty {
            throw ValidationError("give at least one URL, or --demo")
        }
    }

    func run() async throws {
        if self.demo {
            try await Demo(color: Terminal.isTTY(STDOUT_FILENO)).run()
            return
        }
        var configuration = Agent.Configuration()
        if let caCertificate {
            configuration.tls.trustRoots = .file(caCertificate)
        }
        let agent = Agent(configuration: configuration)
        let sink: OutputSink
        do {
            sink = try OutputSink(path: self.output)
        } catch {
            await agent.shutdown()
            throw ExitCode(23)
        }
        var failure: ExitCode?
        var connectionsOpened = Set<Int>()
        let writeOut = self.writeOut.map(WriteOut.init(format:))
        for url in self.urls {
            let clock = ContinuousClock()
            let start = clock.now
            var transfer = WriteOut.Transfer(url: url, sizeDownload: 0)
            defer {
                if let writeOut {
                    Terminal.standardOutput(writeOut.render(transfer))
                }
            }
            do {
                let request = try HTTPRequest(method: .get, url: url)
                let response = try await agent.execute(request)
                var bytes = 0
                for try await chunk in response.body {
                    bytes += chunk.readableBytes
                    transfer.sizeDownload = bytes
                    try sink.write(chunk)
                }
                transfer.timing = response.timing
                connectionsOpened.insert(response.connection.id)
                if !self.silent && self.urls.count > 1 {
                    let elapsed = clock.now - start
                    Terminal.standardError(
                        "\(url) -> \(response.status.code), \(bytes) bytes, connection #\(response.connection.id) "
                            + "\(response.connection.isReused ? "reused" : "new"), \(Terminal.milliseconds(elapsed))"
                    )
                }
            } catch let error as AgentError {
                transfer.error = error
                transfer.timing = error.timing
                Terminal.standardError("fetch: \(error)")
                failure = ExitCode(Self.curlExitCode(for: error))
            } catch let error as OutputSink.WriteError {
                Terminal.standardError("fetch: \(error)")
                failure = ExitCode(23)
            }
        }
        sink.close()
        if !self.silent && self.urls.count > 1 {
            Terminal.standardError(
                "fetch: \(self.urls.count) requests over \(connectionsOpened.count) connection(s)"
            )
        }
        await agent.shutdown()
        if let failure {
            throw failure
        }
    }

    /// curl's exit codes for the failures curl users script against.
    static func curlExitCode(for error: AgentError) -> Int32 {
        switch error.code {
        case .invalidRequest: 3
        case .dnsFailed: 6
        case .connectFailed: 7
        case .connectTimeout, .tlsHandshakeTimeout, .poolWaitTimeout: 28
        case .certificateVerificationFailed: 60
        case .tlsHandshakeFailed, .tlsConfigurationInvalid: 35
        case .responseBodyTruncated, .uncleanShutdown: 18
        case .malformedResponse, .connectionClosed: 52
        default: 56
        }
    }
}

/// Where bodies go: standard output or a file.
final class OutputSink {
    struct WriteError: Error, CustomStringConvertible {
        var description: String
    }

    private let descriptor: Int32
    private let ownsDescriptor: Bool

    init(path: String?) throws {
        if let path {
            let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            guard descriptor >= 0 else {
                let reason = String(cString: strerror(errno))
                Terminal.standardError("fetch: cannot write \(path): \(reason)")
                throw WriteError(description: "cannot write \(path): \(reason)")
            }
            self.descriptor = descriptor
            self.ownsDescriptor = true
        } else {
            self.descriptor = STDOUT_FILENO
            self.ownsDescriptor = false
        }
    }

    func write(_ buffer: ByteBuffer) throws {
        try buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(self.descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw WriteError(description: "write failed: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
    }

    func close() {
        if self.ownsDescriptor {
            Glibc.close(self.descriptor)
        }
    }
}

/// Small terminal helpers.
enum Terminal {
    static func isTTY(_ descriptor: Int32) -> Bool { isatty(descriptor) == 1 }

    static func standardError(_ line: String) {
        let text = line + "\n"
        _ = text.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
    }

    /// Writes `text` as is, unbuffered, so that it stays in order with bodies written to standard output.
    static func standardOutput(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(STDOUT_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let value = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        let rounded = (value * 10).rounded() / 10
        return "\(rounded) ms"
    }
}
