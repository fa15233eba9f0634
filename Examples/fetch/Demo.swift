import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore

/// `fetch --demo`: starts a local HTTPS server with a test CA made at start, then shows what the Agent
/// does: keep-alive reuse, queueing at `maxSocketsPerHost`, and full versus resumed TLS handshakes when
/// every request needs a new connection, checked against the server's own counts, with each request's
/// timing record.
struct Demo {
    let color: Bool

    func run() async throws {
        let certificates = try TestCertificates()
        let server = try await TestHTTPServer.start(.init(tls: certificates.serverOptions()))
        do {
            try await self.show(server: server, tls: TLSConfiguration(trustRoots: .pem(certificates.caPEM)))
        } catch {
            try? await server.shutdown()
            throw error
        }
        try await server.shutdown()
    }

    private func show(server: TestHTTPServer, tls: TLSConfiguration) async throws {
        self.title("swift-https-agent demo")
        self.line("Local HTTPS server: \(server.url("/")) (certificate from a test CA made just now)")
        self.line("")
        var rows: [Row] = []  // every request, for the phase summary at the end

        self.heading("1. Keep-alive: five requests in a row, one Agent")
        let keepAlive = Agent(configuration: .init(maxSocketsPerHost: 2, tls: tls))
        for _ in 0..<5 {
            rows.append(try await self.fetch(keepAlive, server.url("/hello")))
        }
        self.note("One TLS handshake; the next four requests reuse its connection.")
        self.line("")

        self.heading("2. Queueing: six requests at once, maxSocketsPerHost = 2, server answers after 100 ms")
        let snapshot = try await withThrowingTaskGroup(of: Row.self) { group in
            for _ in 0..<6 {
                group.addTask { try await Self.timedGet(keepAlive, server.url("/delay/100")) }
            }
            try await Task.sleep(for: .milliseconds(40))
            let stats = keepAlive.stats["https://localhost:\(server.port)"]
            var queued: [Row] = []
            for try await row in group { queued.append(row) }
            for row in queued.sorted(by: { $0.timing.total < $1.timing.total }) { self.print(row) }
            rows += queued
            return stats
        }
        if let snapshot {
            self.note(
                "40 ms in, the pool had \(snapshot.active) active and \(snapshot.waiting) waiting; "
                    + "requests wait in FIFO order for a free connection."
            )
        }
        self.line("")
        await keepAlive.shutdown()

        self.heading("3. keepAlive off: a new connection per request, resuming the TLS session")
        let noKeepAlive = Agent(configuration: .init(keepAlive: false, tls: tls))
        for _ in 0..<4 {
            rows.append(try await self.fetch(noKeepAlive, server.url("/hello")))
        }
        if let cache = noKeepAlive.configuration.sessionCache {
            let stats = cache.stats
            self.note(
                "The first connection pays for a full handshake; the others resume its session from the "
                    + "Agent's session cache (\(stats.hits) hits, \(stats.misses) miss)."
            )
        }
        await noKeepAlive.shutdown()
        self.line("")

        let stats = server.stats
        self.heading("Summary, as counted by the server")
        self.line("  requests served:        \(stats.requests)")
        self.line("  connections accepted:   \(stats.accepted)  (most open at once: \(stats.maxOpen))")
        self.line("  TLS handshakes:         \(stats.fullHandshakes) full, \(stats.resumedHandshakes) resumed")
        self.line("")
        self.heading("Phases of all \(rows.count) requests, from their timing records (what fetch --timing prints)")
        let transfers = rows.map {
            WriteOut.Transfer(url: $0.path, timing: $0.timing, sizeDownload: $0.timing.bodyBytesReceived)
        }
        let summary = TimingSummary(transfers).lines()
        self.line(self.paint("  " + summary[0], code: "2"))
        for line in summary.dropFirst() { self.line("  " + line) }
        self.line("")
        self.note("Times are in milliseconds, from each response's timing record (response.timing).")
    }

    // MARK: - Requests

    struct Row: Sendable {
        var path: String
        var status: Int
        var connection: ConnectionInfo
        var timing: RequestTiming
    }

    private func fetch(_ agent: Agent, _ url: String) async throws -> Row {
        let row = try await Self.timedGet(agent, url)
        self.print(row)
        return row
    }

    private static func timedGet(_ agent: Agent, _ url: String) async throws -> Row {
        let response = try await agent.get(url)
        _ = try await response.body.collect(upTo: 1 << 20)
        let path = "/" + url.split(separator: "/", maxSplits: 3).dropFirst(2).joined(separator: "/")
        return Row(
            path: path.isEmpty ? "/" : path,
            status: response.status.code,
            connection: response.connection,
            timing: response.timing
        )
    }

    // MARK: - Output

    private func print(_ row: Row) {
        let reuse =
            row.connection.isReused
            ? self.paint("reused", code: "32") : self.paint("new   ", code: "33")
        var text = "  GET \(row.path.padding(to: 11)) \(row.status)  connection #\(row.connection.id)  \(reuse)"
        if let tls = row.connection.tls, !row.connection.isReused {
            let handshake =
                tls.sessionResumed
                ? self.paint("resumed TLS session", code: "36") : self.paint("full TLS handshake ", code: "35")
            text += "  \(tls.version) \(handshake)"
        } else {
            text += "".padding(to: 29)
        }
        let timing = row.timing
        let phases = [
            ("queue", timing.queueWait), ("dns", timing.dns), ("tcp", timing.connect), ("tls", timing.tlsHandshake),
            ("ttfb", timing.timeToFirstByte), ("total", timing.total),
        ]
        text += phases.map { "  \($0) \(Self.milliseconds($1))" }.joined()
        self.line(text)
    }

    /// "12.3", in milliseconds, right-aligned to 5 characters.
    private static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let tenths = Int((Double(seconds) * 10_000 + Double(attoseconds) / 1e14).rounded())
        let text = "\(tenths / 10).\(tenths % 10)"
        return String(repeating: " ", count: max(0, 5 - text.count)) + text
    }

    private func title(_ text: String) { self.line(self.paint(text, code: "1")) }
    private func heading(_ text: String) { self.line(self.paint(text, code: "1")) }
    private func note(_ text: String) { self.line(self.paint("  " + text, code: "2")) }
    private func line(_ text: String) { Swift.print(text) }

    private func paint(_ text: String, code: String) -> String {
        self.color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }
}

extension String {
    fileprivate func padding(to width: Int) -> String {
        self.count >= width ? self : self + String(repeating: " ", count: width - self.count)
    }
}
