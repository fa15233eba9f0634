import HTTPSAgent

/// `--timing`: where the time of many requests went, as a table of phases with their spread, then
/// counts of requests, connections, TLS handshakes and bytes.
///
/// ```
/// phase          n   min  median    p99    max
/// queue          3   0.1     0.1    0.7    0.7
/// dns            2   0.0     0.0    5.0    5.0
/// ...
/// total          3  52.0    58.2  144.0  144.0
/// times in ms; median and p99 by nearest rank; dns, connect and tls count new connections only
/// requests        3 (3 ok, 0 failed)
/// connections     2 opened, 1 request on a reused one
/// TLS handshakes  2 full, 0 resumed
/// bytes           21 body received; on the wire 1586 received, 213 sent
/// ```
///
/// Rules, so that the numbers mean one thing:
/// - A phase counts a request that got past it, i.e. reached the milestone that closes it. A failed
///   request adds the phases it finished, not the one it failed in, nor its transfer and total.
/// - `dns`, `connect` and `tls` count new connections only: a reused connection skips them (see
///   ``RequestTiming``), and counting its zeros would hide the cost of the connections that were
///   opened. `tls` counts only connections that did a TLS handshake.
/// - Times are milliseconds. `median` and `p99` use the nearest-rank method: the p-th percentile of n
///   sorted samples is the sample at rank ⌈p/100 × n⌉ (counting from 1). It is always one of the
///   samples; the median of an even count is the lower middle one, and below 100 samples p99 is the
///   maximum.
struct TimingSummary {
    /// The spread of one phase over the requests that count for it.
    struct Row {
        var name: String
        /// Sorted.
        var samples: [Duration]
    }

    var rows: [Row]
    var requests = 0
    var succeeded = 0
    /// Connections the requests opened (TCP connected), as the servers would count accepted ones.
    var connectionsOpened = 0
    /// Requests that went on a connection opened before them.
    var reusedRequests = 0
    var fullHandshakes = 0
    var resumedHandshakes = 0
    var bodyBytesReceived = 0
    var wireBytesReceived = 0
    var wireBytesSent = 0

    /// The rows in the table, with what a sample of each is, given a request's timing record and
    /// whether the request succeeded.
    static let phases: [(name: String, sample: @Sendable (RequestTiming, Bool) -> Duration?)] = [
        // Only transfers that followed redirects (-L); the row is left out when none did.
        ("redirect", { timing, _ in timing.hops.isEmpty ? nil : timing.redirectTime }),
        ("queue", { timing, _ in timing.queueEnd.map { _ in timing.queueWait } }),
        ("dns", { timing, _ in TimingSummary.newConnection(timing, reached: timing.dnsEnd) ? timing.dns : nil }),
        (
            "connect",
            { timing, _ in TimingSummary.newConnection(timing, reached: timing.connectEnd) ? timing.connect : nil }
        ),
        (
            "tls",
            { timing, _ in TimingSummary.newConnection(timing, reached: timing.tlsEnd) ? timing.tlsHandshake : nil }
        ),
        (
            "request write",
            { timing, _ in timing.requestEnd != nil || timing.firstByte != nil ? timing.requestWrite : nil }
        ),
        ("ttfb", { timing, _ in timing.firstByte.map { _ in timing.timeToFirstByte } }),
        ("transfer", { timing, ok in ok ? timing.transfer : nil }),
        ("total", { timing, ok in ok ? timing.total : nil }),
    ]

    init(_ transfers: [WriteOut.Transfer]) {
        var samples = Array(repeating: [Duration](), count: Self.phases.count)
        for transfer in transfers {
            self.requests += 1
            guard let timing = transfer.timing else { continue }
            let ok = transfer.exitCode == 0 && timing.isComplete
            if ok { self.succeeded += 1 }
            for (index, phase) in Self.phases.enumerated() {
                if let sample = phase.sample(timing, ok) { samples[index].append(sample) }
            }
            if timing.reusedConnection {
                self.reusedRequests += 1
            } else if timing.connectEnd != nil {
                self.connectionsOpened += 1
                if timing.tlsEnd != nil {
                    if timing.resumedSession { self.resumedHandshakes += 1 } else { self.fullHandshakes += 1 }
                }
            }
            self.bodyBytesReceived += timing.bodyBytesReceived
            self.wireBytesReceived += timing.wireBytesReceived
            self.wireBytesSent += timing.wireBytesSent
        }
        self.rows = zip(Self.phases, samples).map { Row(name: $0.name, samples: $1.sorted()) }
            .filter { $0.name != "redirect" || !$0.samples.isEmpty }
    }

    private static func newConnection(_ timing: RequestTiming, reached milestone: Duration?) -> Bool {
        !timing.reusedConnection && milestone != nil
    }

    /// The nearest-rank `percent`-th percentile of `sorted` samples (see the type's documentation).
    static func percentile(_ percent: Int, of sorted: [Duration]) -> Duration? {
        guard !sorted.isEmpty else { return nil }
        let rank = (percent * sorted.count + 99) / 100  // ⌈percent × n / 100⌉ in integers
        return sorted[min(max(rank, 1), sorted.count) - 1]
    }

    // MARK: - Rendering

    /// The table and the count lines, aligned for a monospaced terminal, without colour.
    func lines() -> [String] {
        var table = [["phase", "n", "min", "median", "p99", "max"]]
        for row in self.rows {
            let values = [
                row.samples.first, Self.percentile(50, of: row.samples), Self.percentile(99, of: row.samples),
                row.samples.last,
            ]
            table.append([row.name, String(row.samples.count)] + values.map { $0.map(Self.milliseconds) ?? "-" })
        }
        // The first column left-aligned, the numbers right-aligned, two spaces between columns.
        let widths = table[0].indices.map { column in table.map { $0[column].count }.max() ?? 0 }
        var lines = table.map { cells in
            cells.indices.map { column in
                let pad = String(repeating: " ", count: widths[column] - cells[column].count)
                return column == 0 ? cells[column] + pad : pad + cells[column]
            }
            .joined(separator: "  ")
        }
        lines.append("times in ms; median and p99 by nearest rank; dns, connect and tls count new connections only")
        let failed = self.requests - self.succeeded
        let counts = [
            ("requests", "\(self.requests) (\(self.succeeded) ok, \(failed) failed)"),
            (
                "connections",
                "\(self.connectionsOpened) opened, \(self.reusedRequests) "
                    + "request\(self.reusedRequests == 1 ? "" : "s") on a reused one"
            ),
            ("TLS handshakes", "\(self.fullHandshakes) full, \(self.resumedHandshakes) resumed"),
            (
                "bytes",
                "\(self.bodyBytesReceived) body received; on the wire \(self.wireBytesReceived) received, "
                    + "\(self.wireBytesSent) sent"
            ),
        ]
        let labelWidth = counts.map(\.0.count).max() ?? 0
        for (label, value) in counts {
            lines.append(label + String(repeating: " ", count: labelWidth - label.count) + "  " + value)
        }
        return lines
    }

    /// "12.3": milliseconds with one decimal.
    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let tenths = seconds * 10_000 + (attoseconds + 50_000_000_000_000) / 100_000_000_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}
