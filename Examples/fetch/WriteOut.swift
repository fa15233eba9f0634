import HTTPSAgent
import HTTPTypes

/// curl's `-w/--write-out`: a format with `%{variable}` placeholders and `\n`-style escapes, expanded
/// once per transfer from its timing record.
///
/// Times print as seconds with six decimals, as curl prints them; `http_code` is `000` for a transfer
/// that got no response.
struct WriteOut {
    /// What one transfer left behind.
    struct Transfer: Sendable {
        /// The URL as given.
        var url: String
        /// The URL the transfer ended at, after redirects (-L), when it got that far.
        var effectiveURL: String?
        var method: HTTPRequest.Method = .get
        var timing: RequestTiming?
        /// Body bytes received.
        var sizeDownload: Int = 0
        /// The library's error, when the Agent failed the request.
        var error: AgentError?
        /// 0, or curl's exit code for how the transfer failed (an Agent error, -f, -m, a write error).
        var exitCode: Int32 = 0
        /// The one-line message for a failure.
        var errorMessage: String?
    }

    /// Our variables beyond curl's.
    static let ownVariables = ["time_queue", "reused", "resumed", "tls_version", "tls_cipher"]

    let format: String

    init(format: String) {
        self.format = format
    }

    /// The -w argument: a format, or `@FILE` (`@-` for standard input) to read one.
    init(argument: String) throws(RequestOptions.ReadError) {
        guard argument.hasPrefix("@") else {
            self.init(format: argument)
            return
        }
        let bytes = try RequestOptions.readFile(String(argument.dropFirst()))
        self.init(format: String(decoding: bytes, as: UTF8.self))
    }

    /// The format expanded for `transfer`. Unknown variables expand to nothing, as in curl.
    func render(_ transfer: Transfer) -> String {
        var output = ""
        var characters = self.format[...]
        while let character = characters.popFirst() {
            switch character {
            case "%":
                if characters.first == "%" {
                    characters.removeFirst()
                    output.append("%")
                } else if characters.first == "{", let close = characters.firstIndex(of: "}") {
                    let name = String(characters[characters.index(after: characters.startIndex)..<close])
                    characters = characters[characters.index(after: close)...]
                    output += Self.value(of: name, transfer) ?? ""
                } else {
                    output.append("%")
                }
            case "\\":
                switch characters.popFirst() {
                case "n": output.append("\n")
                case "r": output.append("\r")
                case "t": output.append("\t")
                case "\\": output.append("\\")
                case let other?: output += "\\" + String(other)
                case nil: output.append("\\")
                }
            default:
                output.append(character)
            }
        }
        return output
    }

    static func value(of name: String, _ transfer: Transfer) -> String? {
        let timing = transfer.timing
        if name.hasPrefix("time_") {
            guard RequestTiming.curlVariableNames.contains(name) else { return nil }
            return Self.seconds(timing?.curlVariable(name) ?? 0)
        }
        switch name {
        case "http_code", "response_code":
            let code = timing?.statusCode ?? 0
            return code < 100 ? String(repeating: "0", count: 3 - String(code).count) + String(code) : String(code)
        case "size_download":
            return String(transfer.sizeDownload)
        case "speed_download":
            let total = timing?.curlVariable("time_total") ?? 0
            return total > 0 ? String(Int(Double(transfer.sizeDownload) / total)) : "0"
        case "num_connects":
            // With -L, the connections every hop opened.
            guard let timing else { return "0" }
            return String((timing.hops + [timing]).count { $0.connectEnd != nil && !$0.reusedConnection })
        case "remote_ip":
            return timing?.remoteAddress ?? ""
        case "remote_port":
            return timing?.remotePort.map(String.init) ?? ""
        case "local_ip":
            return timing?.localAddress ?? ""
        case "local_port":
            return timing?.localPort.map(String.init) ?? ""
        case "ssl_verify_result":
            return String(transfer.error?.verifyResult ?? 0)
        case "url_effective":
            return transfer.effectiveURL ?? transfer.url
        case "url":
            return transfer.url
        case "num_redirects":
            return String(timing?.redirectCount ?? 0)
        case "errormsg":
            return transfer.errorMessage ?? ""
        case "exitcode":
            return String(transfer.exitCode)
        case "reused":
            return timing?.reusedConnection == true ? "1" : "0"
        case "resumed":
            return timing?.resumedSession == true ? "1" : "0"
        case "tls_version":
            return timing?.tlsVersion ?? ""
        case "tls_cipher":
            return timing?.tlsCipher ?? ""
        default:
            return nil
        }
    }

    /// "0.012345": seconds with six decimals.
    static func seconds(_ value: Double) -> String {
        let micros = Int((value * 1_000_000).rounded())
        let fraction = String(micros % 1_000_000)
        return "\(micros / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
    }
}
