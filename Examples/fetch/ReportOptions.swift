import ArgumentParser
import Synchronization

/// `--timing` and `--json`: reports built from the transfers' timing records.
struct ReportOptions: ParsableArguments {
    @Flag(
        help: ArgumentHelp(
            "After all requests, print a summary of where their time went to standard error.",
            discussion: """
                One row per phase (queue, dns, connect, tls, request write, ttfb, transfer, total) with the \
                number of requests it counts and its min, median, p99 and max in milliseconds; median and \
                p99 by nearest rank (the sample at rank ceil(p/100 * n)). dns, connect and tls count new \
                connections only, since a reused one skips them; a failed request counts the phases it \
                finished, not its total. Then: requests ok and failed, connections opened and requests on \
                reused ones, full and resumed TLS handshakes, bytes. It goes to standard error so that \
                bodies, -w and --json on standard output stay clean for pipes; -s does not hide it.
                """
        )
    )
    var timing = false

    @Flag(
        help: ArgumentHelp(
            "Print one JSON object per request, on one line, to standard output as each request ends.",
            discussion: """
                Keys, the same in every record: url, method, status (null without a response), error \
                (null, or {code, phase, message, exit_code}), reused, resumed, connection, remote_ip, \
                remote_port, local_ip, local_port, tls_version, tls_cipher, alpn, milestones {queue_end, \
                dns_end, connect_end, tls_end, request_start, request_end, first_byte, response_head, end}, \
                phases {queue, dns, connect, tls, request_write, ttfb, transfer}, total, bytes {body_sent, \
                body_received, wire_sent, wire_received}, attempts, idle_before_reuse. Times are in \
                seconds: milestones from the request's start, null when not reached (a reused connection \
                has no dns_end, connect_end or tls_end); phases are the gaps between them and add up to \
                total. \
                Bodies also go to standard output: add -o FILE or -o /dev/null to keep the stream pure JSON.
                """
        )
    )
    var json = false
}

/// Takes each finished transfer: prints its `--json` record at once and keeps it for the `--timing`
/// summary printed at the end.
///
/// `Sendable`, so that requests running in parallel can report from their own tasks; a record is
/// written whole under the lock, so records never interleave.
final class TransferReport: Sendable {
    private let timing: Bool
    private let json: Bool
    private let transfers = Mutex<[WriteOut.Transfer]>([])

    init(_ options: ReportOptions) {
        self.timing = options.timing
        self.json = options.json
    }

    /// Call once per transfer, when it has finished or failed.
    func finished(_ transfer: WriteOut.Transfer) {
        self.transfers.withLock { transfers in
            if self.json {
                Terminal.standardOutput(JSONRecord.line(for: transfer) + "\n")
            }
            if self.timing {
                transfers.append(transfer)
            }
        }
    }

    /// Call once, after the last transfer: prints the `--timing` summary.
    func allFinished() {
        guard self.timing else { return }
        let transfers = self.transfers.withLock { $0 }
        for line in TimingSummary(transfers).lines() {
            Terminal.standardError(line)
        }
    }
}
