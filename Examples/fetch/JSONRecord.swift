import HTTPSAgent
import HTTPTypes

/// `--json`: one JSON object per transfer, on one line, printed as soon as the transfer finishes, so a
/// script can read the records as a stream (`fetch --json -o /dev/null URL… | jq …`).
///
/// Keys come in this order; times are seconds as numbers with six decimals, `null` where the value does
/// not exist:
///
/// | key | value |
/// | --- | --- |
/// | `url`, `method` | the request |
/// | `url_effective` | the URL the transfer ended at: after redirects (-L), the last one; else `url` |
/// | `status` | the response status code; `null` when no response head arrived |
/// | `error` | `null` when the transfer succeeded, else `{code, phase, message, exit_code}`: the ``AgentError`` code and phase names (e.g. `"connectFailed"`, `"connect"`; `"httpError"` for -f, `"maxTimeExceeded"` for -m, `"writeFailed"`, with a null phase when the Agent did not fail), the one-line message, and fetch's curl-style exit code |
/// | `reused` | whether the request went on a connection opened before it |
/// | `resumed` | whether that connection's TLS handshake resumed a session |
/// | `connection` | the Agent's connection id (`#1`, `#2`… in fetch's progress lines) |
/// | `remote_ip`, `remote_port`, `local_ip`, `local_port` | the connection's addresses |
/// | `tls_version`, `tls_cipher`, `alpn` | e.g. `"TLSv1.3"`, `"TLS_AES_256_GCM_SHA384"`; `null` for `http` |
/// | `milestones` | `queue_end`, `dns_end`, `connect_end`, `tls_end`, `request_start`, `request_end`, `first_byte`, `response_head`, `end`: seconds from the start; `null` when not reached or not needed (a reused connection has no `dns_end`, `connect_end` or `tls_end`); after redirects, the final request's, from the start of the first |
/// | `phases` | `redirect` (the time of the redirects before the final request, curl's `time_redirect`; 0 without), `queue`, `dns`, `connect`, `tls`, `request_write`, `ttfb`, `transfer`: the gaps between the milestones, in seconds; a phase the request skipped or never reached is 0, the phase it failed in lasts until the failure |
/// | `total` | seconds from the start to the end; the phases add up to it (up to rounding to microseconds) |
/// | `bytes` | `body_sent`, `body_received`: body bytes; `wire_sent`, `wire_received`: bytes on the socket, TLS records included |
/// | `attempts` | connections the request was tried on (more than 1 after a stale kept-alive connection) |
/// | `redirects` | redirects followed (-L), curl's `num_redirects` |
/// | `idle_before_reuse` | seconds a reused connection had been idle in the pool; `null` on a new one |
///
/// The keys are the same for every record, successful or not, so a reader never has to test for a
/// missing key. The milestones and phases are ``RequestTiming``'s. A request rejected before it started
/// (an invalid URL) has no timing record: its times, addresses and `attempts` are `null`, its bytes 0.
enum JSONRecord {
    /// The record of `transfer`, one line of JSON without the line feed.
    static func line(for transfer: WriteOut.Transfer) -> String {
        JSONValue.object(Self.fields(of: transfer)).text
    }

    /// The Agent's error code, or what fetch itself failed the transfer for: "httpError" (-f),
    /// "maxTimeExceeded" (-m), "writeFailed".
    static func failureCode(_ transfer: WriteOut.Transfer) -> String {
        switch transfer.exitCode {
        case 22: "httpError"
        case 23: "writeFailed"
        case 28 where transfer.error?.code == .cancelled: "maxTimeExceeded"
        default: transfer.error?.code.description ?? "failed"
        }
    }

    static func fields(of transfer: WriteOut.Transfer) -> [(String, JSONValue)] {
        let timing = transfer.timing
        let error: JSONValue =
            transfer.exitCode == 0
            ? .null
            : .object([
                ("code", .string(Self.failureCode(transfer))),
                ("phase", transfer.error.map { .string($0.phase.rawValue) } ?? .null),
                ("message", .string(transfer.errorMessage ?? "")),
                ("exit_code", .integer(Int(transfer.exitCode))),
            ])
        let milestones: [(String, Duration?)] = [
            ("queue_end", timing?.queueEnd), ("dns_end", timing?.dnsEnd), ("connect_end", timing?.connectEnd),
            ("tls_end", timing?.tlsEnd), ("request_start", timing?.requestStart),
            ("request_end", timing?.requestEnd), ("first_byte", timing?.firstByte),
            ("response_head", timing?.responseHead), ("end", timing?.end),
        ]
        let phases: [(String, Duration?)] = [
            ("redirect", timing?.redirectTime), ("queue", timing?.queueWait), ("dns", timing?.dns),
            ("connect", timing?.connect),
            ("tls", timing?.tlsHandshake), ("request_write", timing?.requestWrite),
            ("ttfb", timing?.timeToFirstByte), ("transfer", timing?.transfer),
        ]
        return [
            ("url", .string(transfer.url)),
            ("url_effective", .string(transfer.effectiveURL ?? transfer.url)),
            ("method", .string(transfer.method.rawValue)),
            ("status", .optional(timing?.statusCode, JSONValue.integer)),
            ("error", error),
            ("reused", .bool(timing?.reusedConnection ?? false)),
            ("resumed", .bool(timing?.resumedSession ?? false)),
            ("connection", .optional(timing?.connectionID, JSONValue.integer)),
            ("remote_ip", .optional(timing?.remoteAddress, JSONValue.string)),
            ("remote_port", .optional(timing?.remotePort, JSONValue.integer)),
            ("local_ip", .optional(timing?.localAddress, JSONValue.string)),
            ("local_port", .optional(timing?.localPort, JSONValue.integer)),
            ("tls_version", .optional(timing?.tlsVersion, JSONValue.string)),
            ("tls_cipher", .optional(timing?.tlsCipher, JSONValue.string)),
            ("alpn", .optional(timing?.alpn, JSONValue.string)),
            ("milestones", .object(milestones.map { ($0, .optional($1, JSONValue.seconds)) })),
            ("phases", .object(phases.map { ($0, .optional($1, JSONValue.seconds)) })),
            ("total", .optional(timing?.total, JSONValue.seconds)),
            (
                "bytes",
                .object([
                    ("body_sent", .integer(timing?.bodyBytesSent ?? 0)),
                    ("body_received", .integer(timing?.bodyBytesReceived ?? transfer.sizeDownload)),
                    ("wire_sent", .integer(timing?.wireBytesSent ?? 0)),
                    ("wire_received", .integer(timing?.wireBytesReceived ?? 0)),
                ])
            ),
            ("attempts", .optional(timing?.attempts, JSONValue.integer)),
            ("redirects", .integer(timing?.redirectCount ?? 0)),
            ("idle_before_reuse", .optional(timing?.idleTimeBeforeReuse, JSONValue.seconds)),
        ]
    }
}

/// A JSON value, written by hand: the fetch target does not link Foundation, and a hand-written
/// writer keeps the keys in the documented order.
///
/// Numbers are integers or ``seconds(_:)``, formatted from a `Duration`'s integer parts, so a record
/// can never contain `NaN` or infinity, which JSON cannot represent.
indirect enum JSONValue {
    case null
    case bool(Bool)
    case integer(Int)
    /// A duration as seconds with six decimals, e.g. `0.012345`.
    case seconds(Duration)
    case string(String)
    /// Keys in the order given.
    case object([(String, JSONValue)])

    /// `.null` for `nil`, else the value made by `make`.
    static func optional<T>(_ value: T?, _ make: (T) -> JSONValue) -> JSONValue {
        value.map(make) ?? .null
    }

    /// The value as compact JSON text.
    var text: String {
        var output = ""
        self.write(to: &output)
        return output
    }

    func write(to output: inout String) {
        switch self {
        case .null:
            output += "null"
        case .bool(let value):
            output += value ? "true" : "false"
        case .integer(let value):
            output += String(value)
        case .seconds(let duration):
            output += Self.decimalSeconds(duration)
        case .string(let value):
            Self.writeString(value, to: &output)
        case .object(let fields):
            output += "{"
            for (index, (key, value)) in fields.enumerated() {
                if index > 0 { output += "," }
                Self.writeString(key, to: &output)
                output += ":"
                value.write(to: &output)
            }
            output += "}"
        }
    }

    /// A JSON string literal: quotes, backslashes and every control character escaped (RFC 8259
    /// section 7); everything else, non-ASCII included, as is in UTF-8.
    static func writeString(_ value: String, to output: inout String) {
        output += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case "\u{08}": output += "\\b"
            case "\u{0C}": output += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default:
                output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }

    /// "0.012345": seconds rounded to the microsecond, computed in integers.
    static func decimalSeconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        // Both parts carry the duration's sign; round the attoseconds half away from zero.
        let half: Int64 = attoseconds < 0 ? -500_000_000_000 : 500_000_000_000
        let micros = seconds * 1_000_000 + (attoseconds + half) / 1_000_000_000_000
        let magnitude = micros.magnitude
        let fraction = String(magnitude % 1_000_000)
        return (micros < 0 ? "-" : "") + "\(magnitude / 1_000_000)."
            + String(repeating: "0", count: 6 - fraction.count) + fraction
    }
}
