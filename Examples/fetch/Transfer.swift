import HTTPSAgent
import HTTPTypes
import NIOCore
import Synchronization

/// What every transfer of one run shares: the request to send and what to do with the response.
struct TransferSettings: Sendable {
    var method: HTTPRequest.Method
    var headerFields: HTTPFields
    var body: ByteBuffer?
    /// -f: an HTTP status of 400 or more fails the transfer (exit 22) and its body is not written.
    var failOnHTTPError = false
    /// -i / -I: write the response head before the body.
    var includeHead = false
    /// -O: write each body to a file named like the last segment of its URL's path.
    var remoteName = false
    /// -m: the most time one transfer may take.
    var maxTime: Duration?
    /// With parallel transfers: collect each body and write it whole at the end, so bodies never mix.
    var bufferBodies = false
}

/// How one transfer ended.
struct TransferResult: Sendable {
    /// What -w and the reports read.
    var transfer: WriteOut.Transfer
    /// The HTTP status, if a response head arrived.
    var status: HTTPResponse.Status?
    /// The connection that carried the request, if one did.
    var connection: ConnectionInfo?
    /// How long the transfer took, as fetch saw it.
    var elapsed: Duration = .zero
    /// 0, or curl's exit code for the failure.
    var exitCode: Int32 { self.transfer.exitCode }
}

/// Runs transfers through one Agent and writes their bodies.
struct TransferRunner: Sendable {
    let agent: Agent
    let settings: TransferSettings
    /// Where bodies go; nil with -O, where each transfer opens its own file.
    let sink: OutputSink?
    /// -v: prints each request's head, response head and end.
    var verbose: Verbose? = nil
    /// A progress bar on standard error, when it is a terminal and transfers run one at a time.
    var progress: ProgressBar? = nil

    /// Runs one transfer to the end, within -m if given. Never throws: failures are in the result.
    func run(url: String) async -> TransferResult {
        guard let maxTime = self.settings.maxTime else {
            return await self.perform(url: url)
        }
        let expired = Flag()
        let work = Task { await self.perform(url: url) }
        let timer = Task {
            try await Task.sleep(for: maxTime)
            expired.set()
            work.cancel()
        }
        var result = await withTaskCancellationHandler {
            await work.value
        } onCancel: {
            work.cancel()
        }
        timer.cancel()
        if expired.isSet, result.transfer.error?.code == .cancelled {
            result.transfer.exitCode = 28
            let error = result.transfer.error
            let host = error?.host.map { host in error?.port.map { "\(host):\($0)" } ?? host } ?? url
            let phase = error.map { " while \($0.phase.displayName)" } ?? ""
            result.transfer.errorMessage =
                "\(host): operation timed out after \(Terminal.milliseconds(maxTime)) (-m)\(phase), "
                + "\(result.transfer.sizeDownload) bytes received"
        }
        return result
    }

    private func perform(url: String) async -> TransferResult {
        let clock = ContinuousClock()
        let start = clock.now
        var result = TransferResult(transfer: WriteOut.Transfer(url: url, method: self.settings.method))
        await self.perform(url: url, into: &result)
        result.elapsed = clock.now - start
        return result
    }

    private func perform(url: String, into result: inout TransferResult) async {
        var shown: VerboseRequest?
        do {
            let request = try HTTPRequest(
                method: self.settings.method,
                url: url,
                headerFields: self.settings.headerFields
            )
            shown = self.verbose?.request(request, bodyLength: self.settings.body?.readableBytes)
            let response = try await self.agent.execute(
                request,
                body: self.settings.body.map { .bytes($0) },
                observer: shown
            )
            shown?.received(response)
            result.transfer.effectiveURL = response.url
            result.status = response.status
            result.connection = response.connection
            result.transfer.timing = response.timing
            if self.settings.failOnHTTPError && response.status.code >= 400 {
                // Read the body to its end so the connection stays usable, but write none of it.
                for try await _ in response.body {}
                shown?.finished(response)
                result.transfer.timing = response.timing
                result.transfer.exitCode = 22
                result.transfer.errorMessage =
                    "\(Self.authority(of: url)): the server answered \(response.status.code) "
                    + "\(response.status.reasonPhrase) (-f)"
                return
            }
            let sink = try self.sink ?? OutputSink(path: Self.remoteFileName(url) ?? "")
            var buffered = ByteBuffer()
            if self.settings.includeHead {
                let head = Self.headText(response.head)
                if self.settings.bufferBodies { buffered.writeString(head) } else { try sink.write(head) }
            }
            self.progress?.start(contentLength: response.body.expectedLength)
            // Ends the bar's line before any error message, too.
            defer { self.progress?.finish() }
            for try await chunk in response.body {
                self.progress?.advance(by: chunk.readableBytes)
                result.transfer.sizeDownload += chunk.readableBytes
                if self.settings.bufferBodies {
                    var chunk = chunk
                    buffered.writeBuffer(&chunk)
                } else {
                    try sink.write(chunk)
                }
            }
            shown?.finished(response)
            if buffered.readableBytes > 0 {
                try sink.write(buffered)
            }
            result.transfer.timing = response.timing
        } catch let error as AgentError {
            shown?.failed()  // a refused redirect's head, not returned, still shows in -v
            result.transfer.effectiveURL = error.url
            result.transfer.error = error
            result.transfer.timing = error.timing ?? result.transfer.timing
            result.transfer.exitCode = Fetch.curlExitCode(for: error)
            result.transfer.errorMessage = "\(error)"
        } catch let error as OutputSink.WriteError {
            result.transfer.exitCode = 23
            result.transfer.errorMessage = error.description
        } catch {
            result.transfer.exitCode = 2
            result.transfer.errorMessage = "\(url): \(error)"
        }
    }

    /// The response head as curl -i prints it: status line, fields, blank line, CRLF line ends.
    static func headText(_ head: HTTPResponse) -> String {
        var text = "HTTP/1.1 \(head.status.code) \(head.status.reasonPhrase)\r\n"
        for field in head.headerFields {
            text += "\(field.name): \(field.value)\r\n"
        }
        return text + "\r\n"
    }

    /// The last segment of the URL's path, as -O names the file; nil when there is none.
    static func remoteFileName(_ url: String) -> String? {
        var rest = Substring(url)
        if let scheme = rest.firstRange(of: "://") { rest = rest[scheme.upperBound...] }
        rest = rest.prefix { $0 != "?" && $0 != "#" }
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let name = rest[slash...].split(separator: "/", omittingEmptySubsequences: false).last ?? ""
        return name.isEmpty || name == "." || name == ".." ? nil : String(name)
    }

    /// "host:port" of a URL, for messages.
    static func authority(of url: String) -> String {
        var rest = Substring(url)
        if let scheme = rest.firstRange(of: "://") { rest = rest[scheme.upperBound...] }
        return String(rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" })
    }
}

/// A flag one task sets and another reads.
private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { self.value.load(ordering: .acquiring) }
    func set() { self.value.store(true, ordering: .releasing) }
}
