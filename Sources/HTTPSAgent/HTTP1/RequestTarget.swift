import HTTPSAgentTLS
public import HTTPTypes

/// Where a request goes, worked out from its scheme and authority.
struct RequestTarget: Sendable, Hashable {
    var scheme: Origin.Scheme
    /// Normalised: lower-cased, no trailing dot, no brackets.
    var host: String
    var port: Int
    /// The `Host` header: the authority as the caller wrote it.
    var hostHeader: String

    /// Parses `request.scheme` and `request.authority`.
    init(_ request: HTTPRequest) throws(AgentError) {
        guard let schemeText = request.scheme?.lowercased() else {
            throw Self.invalid("the request has no scheme; use \"https\" or \"http\"")
        }
        guard let scheme = Origin.Scheme(rawValue: schemeText) else {
            throw Self.invalid("unsupported scheme \"\(schemeText)\"; use \"https\" or \"http\"")
        }
        guard let authority = request.authority, !authority.isEmpty else {
            throw Self.invalid("the request has no host (authority)")
        }
        try self.init(scheme: scheme, authority: authority)
    }

    // Scans bytes (`utf8`), not characters: every delimiter is ASCII, and so is every valid host.
    init(scheme: Origin.Scheme, authority: String) throws(AgentError) {
        let bytes = authority.utf8
        // Hosts, IP literals and ports are ASCII; anything else (a combining mark after a delimiter, say)
        // is refused before it can reach DNS, SNI, the pool key or the Host field.
        guard bytes.allSatisfy({ $0 < 0x80 }) else {
            throw Self.invalid("the host and port must be ASCII; use the host's IDNA (xn--) form")
        }
        if bytes.contains(UInt8(ascii: "@")) {
            throw Self.invalid("credentials in the URL are not supported; send an Authorization header")
        }
        var hostPart: Substring
        var portPart: Substring?
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else {
                throw Self.invalid("unterminated IPv6 address in \"\(authority)\"")
            }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let rest = authority[authority.index(after: close)...]
            if !rest.isEmpty {
                guard rest.utf8.first == UInt8(ascii: ":") else {
                    throw Self.invalid("unexpected text after \"]\" in \"\(authority)\"")
                }
                portPart = rest.dropFirst()
            }
            guard IPAddressLiteral.isIPAddress(String(hostPart)), hostPart.contains(":") else {
                throw Self.invalid("\"\(hostPart)\" is not an IPv6 address")
            }
        } else {
            if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
                hostPart = authority[..<colon]
                portPart = authority[authority.index(after: colon)...]
            } else {
                hostPart = Substring(authority)
            }
            guard !hostPart.isEmpty, hostPart.utf8.allSatisfy(Self.isHostByte) else {
                throw Self.invalid("invalid host \"\(hostPart)\"")
            }
            if hostPart.utf8.last == UInt8(ascii: "."), hostPart.utf8.count > 1 {
                hostPart = hostPart.dropLast()
            }
        }
        var port = scheme.defaultPort
        if let portPart {
            // Digits only: Int("+443") would parse, and the Host header would carry the "+".
            guard portPart.utf8.allSatisfy({ UInt8(ascii: "0") <= $0 && $0 <= UInt8(ascii: "9") }),
                portPart.utf8.count <= 5,
                let value = Int(portPart), (1...65_535).contains(value)
            else {
                throw Self.invalid("invalid port \"\(portPart)\"")
            }
            port = value
        }
        self.scheme = scheme
        self.host = Self.asciiLowercased(hostPart)
        self.port = port
        self.hostHeader = authority
    }

    /// `text` with A–Z lower-cased, without a new string's work when there is nothing to lower.
    static func asciiLowercased(_ text: Substring) -> String {
        guard text.utf8.contains(where: { UInt8(ascii: "A") <= $0 && $0 <= UInt8(ascii: "Z") }) else {
            return String(text)
        }
        return text.lowercased()
    }

    /// Letters, digits, `-`, `.` and `_`: what DNS names and IPv4 literals are made of. Everything else
    /// (`%`, `/`, spaces, control characters) is refused rather than passed to DNS, SNI and the pool key.
    private static func isHostByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"):
            return true
        default:
            return false
        }
    }

    private static func invalid(_ message: String) -> AgentError {
        AgentError(code: .invalidRequest, phase: .request, message: message)
    }
}

extension HTTPRequest {
    /// Creates a request from a URL string such as `"https://example.com:8443/path?query"`.
    ///
    /// - Parameters:
    ///   - method: the request method.
    ///   - url: an absolute `https` or `http` URL. A fragment is dropped; user info is refused.
    ///   - headerFields: header fields to send.
    /// - Throws: ``AgentError`` with code ``AgentError/Code/invalidRequest`` when the URL is not usable.
    public init(method: Method, url: String, headerFields: HTTPFields = [:]) throws(AgentError) {
        // Scans bytes (`utf8`): every delimiter is ASCII.
        guard let colon = url.utf8.firstIndex(of: UInt8(ascii: ":")), url.utf8[colon...].starts(with: "://".utf8) else {
            throw AgentError(code: .invalidRequest, phase: .request, message: "\"\(url)\" is not an absolute URL")
        }
        let scheme = RequestTarget.asciiLowercased(url[..<colon])
        var rest = url[url.utf8.index(colon, offsetBy: 3)...]
        if let hash = rest.utf8.firstIndex(of: UInt8(ascii: "#")) {
            rest = rest[..<hash]
        }
        let pathStart =
            rest.utf8.firstIndex(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") }) ?? rest.endIndex
        let authority = String(rest[..<pathStart])
        var path = String(rest[pathStart...])
        if path.isEmpty {
            path = "/"
        } else if path.utf8.first == UInt8(ascii: "?") {
            path = "/" + path
        }
        guard let parsedScheme = Origin.Scheme(rawValue: scheme) else {
            throw AgentError(
                code: .invalidRequest,
                phase: .request,
                message: "unsupported scheme \"\(scheme)\"; use \"https\" or \"http\""
            )
        }
        _ = try RequestTarget(scheme: parsedScheme, authority: authority)
        guard path.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw AgentError(
                code: .invalidRequest,
                phase: .request,
                message: "the path contains spaces or control characters; percent-encode them"
            )
        }
        self.init(method: method, scheme: scheme, authority: authority, path: path, headerFields: headerFields)
    }
}
