import ArgumentParser
import HTTPSAgent
import HTTPTypes
import NIOCore

/// `--reconnect N`, after `openssl s_client -reconnect`: N requests to one URL, each over a new
/// connection, with a line per connection saying whether its TLS handshake was full or resumed.
///
/// Unlike s_client, N counts the first connection too: `--reconnect 5` makes 5 connections. The lines
/// go to standard output in s_client's words (`New, TLSv1.3, Cipher is …` or `Reused, …`), even with
/// `-s`. Bodies are read and thrown away, or written to the file given with `-o`. With `-w`, its output
/// follows each connection's line, one transfer per connection. The TLS flags apply and the connections
/// share the session cache (`--no-session-cache` makes every one `New`; `--session-file` lets the first
/// one resume). Only one `https` URL is allowed, and not with `--demo`. The first failure stops the
/// run, with the exit code a normal fetch would give.
struct ReconnectOptions: ParsableArguments {
    @Option(
        name: .customLong("reconnect"),
        help: ArgumentHelp(
            "Make N connections to the one URL, each with a new TLS handshake, and say which ones resumed.",
            discussion: """
                Like `openssl s_client -reconnect`, a line per connection on standard output: New (full \
                handshake) or Reused (resumed session), the TLS version and the cipher. N counts the first \
                connection. Bodies are discarded unless -o is given; -w prints after each connection.
                """,
            valueName: "N"
        )
    )
    var count: Int?

    var isRequested: Bool { self.count != nil }

    func validate() throws {
        if let count, count < 1 {
            throw ValidationError("--reconnect needs at least 1 connection, not \(count)")
        }
    }

    /// The checks that need the rest of the command line.
    func validate(with fetch: Fetch) throws {
        guard self.isRequested else { return }
        if fetch.demo {
            throw ValidationError("--reconnect and --demo do not go together")
        }
        guard fetch.urls.count == 1 else {
            throw ValidationError("--reconnect takes exactly one URL, not \(fetch.urls.count)")
        }
        guard fetch.urls[0].lowercased().hasPrefix("https://") else {
            throw ValidationError("--reconnect needs an https:// URL: it reports on TLS handshakes")
        }
    }

    /// Runs the connections with an Agent made from `configuration`, without keep-alive so that each
    /// request gets a connection of its own, with fetch's request options (method, headers, body).
    ///
    /// - Returns: the exit code of the first failure, which stops the run, or nil.
    func run(
        url: String,
        configuration: Agent.Configuration,
        settings: TransferSettings,
        sink: OutputSink?,
        report: inout RunReport,
        verbose: Bool
    ) async -> Int32? {
        var configuration = configuration
        configuration.keepAlive = false
        let verbose = verbose ? Verbose(configuration: configuration) : nil
        let agent = Agent(configuration: configuration, observers: verbose?.observers ?? [])
        let runner = TransferRunner(agent: agent, settings: settings, sink: sink, verbose: verbose)
        for _ in 0..<(self.count ?? 0) {
            let result = await runner.run(url: url)
            if result.exitCode == 0, let connection = result.connection {
                Terminal.standardOutput(Self.line(for: connection) + "\n")
            }
            report.add(result)
            if result.exitCode != 0 { break }
        }
        await agent.shutdown()
        return report.lastFailure
    }

    /// "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384", or "Reused, …" for a resumed session.
    static func line(for connection: ConnectionInfo) -> String {
        guard let tls = connection.tls else { return "New, no TLS" }
        return "\(tls.sessionResumed ? "Reused" : "New"), \(tls.version), Cipher is \(tls.cipher)"
    }
}
