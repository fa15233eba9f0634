import ArgumentParser
import HTTPSAgent
import HTTPTypes
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// `fetch`: a small curl-like fetcher on top of the HTTPSAgent library.
///
/// Every URL on the command line goes through one ``Agent``, so requests to the same host share a
/// kept-alive connection.
@main
struct Fetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Fetch URLs through one connection-pooling HTTPS Agent.",
        discussion: """
            Bodies go to standard output (or to the file given with -o, or with -O to files named like the \
            URLs). With several transfers, a line per transfer on standard error shows which connection \
            carried it and whether it was reused. Exit codes follow curl's: 6 DNS, 7 connect, 28 timeout, \
            35 TLS, 60 certificate verification, 22 an HTTP error with -f, 23 a write error, 47 too many \
            redirects (with -L).

            Run `fetch --demo` to see pooling against a local HTTPS server, with no network needed.
            """
    )

    @Flag(name: .shortAndLong, help: "Silent: no per-transfer lines, and no error messages unless -S.")
    var silent = false

    @Flag(name: [.customShort("S"), .customLong("show-error")], help: "With -s, still print error messages.")
    var showError = false

    @Flag(
        name: [.customShort("f"), .customLong("fail")],
        help: "Exit 22 on an HTTP status of 400 or more, without the body."
    )
    var fail = false

    @Flag(name: [.customShort("i"), .customLong("include")], help: "Write the response head before the body.")
    var include = false

    @Option(
        name: .shortAndLong,
        help: ArgumentHelp(
            "Write bodies to FILE instead of standard output (all of them, in order).",
            valueName: "FILE"
        )
    )
    var output: String?

    @Flag(
        name: [.customShort("O"), .customLong("remote-name")],
        help: "Write each body to a file in the current directory named like the last segment of its URL's path."
    )
    var remoteName = false

    @Option(
        name: [.customShort("w"), .customLong("write-out")],
        help: ArgumentHelp(
            "After each transfer, print FORMAT to standard output with curl's %{variables} expanded.",
            discussion: """
                @FILE reads the format from FILE (@- from standard input). Variables: time_namelookup, \
                time_connect, time_appconnect, time_pretransfer, time_posttransfer, time_starttransfer, \
                time_total, time_redirect, http_code, size_download, speed_download, num_connects, \
                num_redirects, remote_ip, remote_port, local_ip, local_port, ssl_verify_result, url, \
                url_effective, errormsg, exitcode; and ours: time_queue, reused, resumed, tls_version, \
                tls_cipher. Escapes: \\n \\r \\t.
                """,
            valueName: "FORMAT"
        )
    )
    var writeOut: String?

    @OptionGroup(title: "Request")
    var request: RequestOptions

    @OptionGroup(title: "Request")
    var redirects: RedirectOptions  // -L, --max-redirs (RedirectOptions.swift)

    @OptionGroup(title: "Connections")
    var connection: ConnectionOptions

    @OptionGroup(title: "TLS and sessions")
    var tls: TLSOptions

    @OptionGroup(title: "TLS and sessions")
    var reconnect: ReconnectOptions

    @OptionGroup(title: "Reports")
    var reportOptions: ReportOptions

    @OptionGroup(title: "Display")
    var display: DisplayOptions

    @Flag(help: "Start a local HTTPS server and show what the Agent does (no URL needed).")
    var demo = false

    @Argument(help: "The URLs to fetch, in order.")
    var urls: [String] = []

    func validate() throws {
        if !self.demo && self.urls.isEmpty {
            throw ValidationError("give at least one URL, or --demo")
        }
        if self.remoteName {
            if self.output != nil { throw ValidationError("-o and -O cannot be combined") }
            for url in self.urls where TransferRunner.remoteFileName(url) == nil {
                throw ValidationError("-O: \(url) has no file name in its path")
            }
        }
        try self.reconnect.validate(with: self)
    }

    func run() async throws {
        if self.demo {
            try await Demo(color: Terminal.isTTY(STDOUT_FILENO)).run()
            return
        }
        let showErrors = !self.silent || self.showError
        // Everything that can fail before a request is sent fails here, before an Agent exists.
        let body: ByteBuffer?
        let writeOut: WriteOut?
        let sink: OutputSink?
        do {
            body = try self.request.body()
            writeOut = try self.writeOut.map { try WriteOut(argument: $0) }
        } catch {
            if showErrors { Terminal.standardError("fetch: (26) \(error)") }
            throw ExitCode(26)
        }
        do {
            sink = self.remoteName ? nil : try OutputSink(path: self.output)
        } catch {
            if showErrors { Terminal.standardError("fetch: (23) \(error)") }
            throw ExitCode(23)
        }

        var configuration = Agent.Configuration()
        let sessionFile = self.tls.apply(to: &configuration)  // TLS flags; loads --session-file
        defer { sessionFile.save() }  // at every exit, failed transfers too
        self.connection.apply(to: &configuration)
        self.redirects.apply(to: &configuration)  // as in curl, no redirects followed without -L
        // curl decodes only with --compressed; the library's default is to ask and decode.
        configuration.decompression = self.request.compressed ? .enabled : .disabled
        let settings = TransferSettings(
            method: self.request.requestMethod,
            headerFields: try self.request.headerFields(hasBody: body != nil),
            body: body,
            failOnHTTPError: self.fail,
            includeHead: self.include || self.request.headOnly,
            remoteName: self.remoteName,
            maxTime: self.connection.maxTimeDuration,
            bufferBodies: self.connection.parallel > 1
        )
        let jobs = Array(repeatElement(self.urls, count: self.connection.repeat).joined())
        var report = RunReport(
            writeOut: writeOut,
            reports: TransferReport(self.reportOptions),
            perTransferLines: !self.silent && jobs.count > 1 && !self.reconnect.isRequested,
            showErrors: showErrors
        )
        if self.reconnect.isRequested {
            // Bodies are not the point of --reconnect: discarded unless -o or -O says where they go.
            let discard = self.output == nil && !self.remoteName
            let reconnectSink = discard ? try OutputSink(path: "/dev/null") : sink
            if let failure = await self.reconnect.run(
                url: self.urls[0],
                configuration: configuration,
                settings: settings,
                sink: reconnectSink,
                report: &report,
                verbose: self.display.verbose
            ) {
                report.reports.allFinished()
                throw ExitCode(failure)
            }
            report.reports.allFinished()
            return
        }
        // -v: an observer on the Agent for connections, and one per request (tagged when they overlap).
        let verbose =
            self.display.verbose ? Verbose(configuration: configuration, tagged: self.connection.parallel > 1) : nil
        let agent = Agent(configuration: configuration, observers: verbose?.observers ?? [])
        // A progress bar on a terminal, for one transfer at a time only.
        let progress =
            self.connection.parallel > 1
            ? nil
            : ProgressBar.forStandardError(
                silent: self.silent,
                verbose: self.display.verbose,
                bodyToTerminal: self.output == nil && !self.remoteName && Terminal.isTTY(STDOUT_FILENO)
            )
        let runner = TransferRunner(
            agent: agent,
            settings: settings,
            sink: sink,
            verbose: verbose,
            progress: progress
        )
        if self.connection.parallel == 1 {
            for url in jobs {
                report.add(await runner.run(url: url))
            }
        } else {
            await withTaskGroup(of: TransferResult.self) { group in
                var pending = jobs.makeIterator()
                for _ in 0..<self.connection.parallel {
                    guard let url = pending.next() else { break }
                    group.addTask { await runner.run(url: url) }
                }
                for await result in group {
                    report.add(result)
                    if let url = pending.next() {
                        group.addTask { await runner.run(url: url) }
                    }
                }
            }
        }
        report.reports.allFinished()
        if report.perTransferLines {
            Terminal.standardError(
                "fetch: \(jobs.count) requests over \(report.connectionsUsed.count) connection(s)"
            )
        }
        await agent.shutdown()
        if let failure = report.lastFailure {
            throw ExitCode(failure)
        }
    }

    /// curl's exit codes for the failures curl users script against.
    static func curlExitCode(for error: AgentError) -> Int32 {
        switch error.code {
        // 47 for too many redirects or a loop, and the other refused redirects: RedirectOptions.swift.
        case .tooManyRedirects, .redirectLoop, .insecureRedirect, .invalidRedirect:
            RedirectOptions.curlExitCode(for: error) ?? 47
        case .invalidRequest: 3
        case .dnsFailed: 6
        case .connectFailed: 7
        case .connectTimeout, .tlsHandshakeTimeout, .readTimeout, .requestTimeout, .poolWaitTimeout: 28
        case .certificateVerificationFailed: 60
        // Includes a TLS 1.3 server's "certificate required", which curl learns of on a read and calls 56.
        case .tlsHandshakeFailed, .tlsConfigurationInvalid: 35
        case .responseBodyTruncated, .uncleanShutdown: 18
        // A read that failed (a reset, a bad TLS record) rather than a clean close: curl's "failure
        // receiving network data".
        case .connectionClosed where error.underlying != nil: 56
        case .malformedResponse, .connectionClosed: 52
        default: 56
        }
    }
}

/// What the run prints after each transfer, and what it remembers for the end.
struct RunReport {
    let writeOut: WriteOut?
    /// --json and --timing.
    let reports: TransferReport
    /// A line per transfer on standard error (several transfers, not -s).
    let perTransferLines: Bool
    let showErrors: Bool
    private(set) var connectionsUsed = Set<Int>()
    /// The exit code of the last transfer that failed.
    private(set) var lastFailure: Int32?

    init(writeOut: WriteOut?, reports: TransferReport, perTransferLines: Bool, showErrors: Bool) {
        self.writeOut = writeOut
        self.reports = reports
        self.perTransferLines = perTransferLines
        self.showErrors = showErrors
    }

    mutating func add(_ result: TransferResult) {
        let transfer = result.transfer
        if let writeOut {
            Terminal.standardOutput(writeOut.render(transfer))
        }
        self.reports.finished(transfer)
        if let connection = result.connection {
            self.connectionsUsed.insert(connection.id)
        }
        if result.exitCode != 0 {
            self.lastFailure = result.exitCode
            if self.showErrors {
                Terminal.standardError("fetch: (\(result.exitCode)) \(transfer.errorMessage ?? transfer.url)")
            }
        }
        if self.perTransferLines, let status = result.status, let connection = result.connection {
            Terminal.standardError(
                "\(transfer.url) -> \(status.code), \(transfer.sizeDownload) bytes, connection #\(connection.id) "
                    + "\(connection.isReused ? "reused" : "new"), \(Terminal.milliseconds(result.elapsed))"
            )
        }
    }
}
