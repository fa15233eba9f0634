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

    init(scheme: Origin.Scheme, authority: String) throws(AgentError) {
        if authority.contains("@") {
            throw Self.invalid("credentials in the URL are not supported; send an Authorization header")
        }
        var hostPart: Substring
        var portPart: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw Self.invalid("unterminated IPv6 address in \"\(authority)\"")
            }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let rest = authority[authority.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw Self.invalid("unexpected text after \"]\" in \"\(authority)\"") }
                portPart = rest.dropFirst()
            }
            guard IPAddressLiteral.isIPAddress(String(hostPart)), hostPart.contains(":") else {
                throw Self.invalid("\"\(hostPart)\" is not an IPv6 address")
            }
        } else {
            if let colon = authority.lastIndex(of: ":") {
                hostPart = authority[..<colon]
                portPart = authority[authority.index(after: colon)...]
            } else {
                hostPart = Substring(authority)
            }
            guard !hostPart.isEmpty, hostPart.utf8.allSatisfy(Self.isHostByte) else {
                throw Self.invalid("invalid host \"\(hostPart)\"")
            }
            if hostPart.hasSuffix("."), hostPart.count > 1 {
                hostPart = hostPart.dropLast()
            }
        }
        var port = scheme.defaultPort
        if let portPart {
            // Digits only: Int("+443") would parse, and the Host header would carry the "+".
            guard portPart.utf8.allSatisfy({ UInt8(ascii: "0") <= $0 && $0 <= UInt8(ascii: "9") }),
                portPart.count <= 5,
                let value = Int(portPart), (1...65_535).contains(value)
            else {
                throw Self.invalid("invalid port \"\(portPart)\"")
            }
            port = value
        }
        self.scheme = scheme
        self.host = hostPart.lowercased()
        self.port = port
        self.hostHeader = authority
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
        guard let colon = url.firstIndex(of: ":"), url[colon...].hasPrefix("://") else {
            throw AgentError(code: .invalidRequest, phase: .request, message: "\"\(url)\" is not an absolute URL")
        }
        let scheme = url[..<colon].lowercased()
        var rest = url[url.index(colon, offsetBy: 3)...]
        if let hash = rest.firstIndex(of: "#") {
            rest = rest[..<hash]
        }
        let pathStart = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = String(rest[..<pathStart])
        var path = String(rest[pathStart...])
        if path.isEmpty {
            path = "/"
        } else if path.hasPrefix("?") {
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
