import HTTPTypes

/// An absolute `http` or `https` URL split into what a request needs: the URL a redirect chain is at,
/// and what a `Location` field resolves to against it.
struct RequestURL: Sendable, Hashable, CustomStringConvertible {
    /// "http" or "https", lower-cased.
    var scheme: String
    /// The host and optional port, as written.
    var authority: String
    /// The path, starting with "/".
    var path: String
    /// The query, without its "?"; `nil` when the URL has none (an empty one is "").
    var query: String?

    init(scheme: String, authority: String, path: String, query: String?) {
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.query = query
    }

    /// The URL `request` is sent to.
    init(_ request: HTTPRequest) {
        let target = request.path ?? "/"
        var path = Substring(target)
        var query: String?
        if let mark = target.firstIndex(of: "?") {
            path = target[..<mark]
            query = String(target[target.index(after: mark)...])
        }
        self.init(
            scheme: request.scheme?.lowercased() ?? "https",
            authority: request.authority ?? "",
            path: path.isEmpty ? "/" : String(path),
            query: query
        )
    }

    /// The URL `request` is sent to, as text: what ``description`` would give, built in one piece.
    static func string(of request: HTTPRequest) -> String {
        "\(request.scheme?.lowercased() ?? "https")://\(request.authority ?? "")\(request.path ?? "/")"
    }

    /// The path and query, as the request line carries them.
    var pathAndQuery: String {
        self.query.map { self.path + "?" + $0 } ?? self.path
    }

    /// "https://example.com:8443/path?query".
    var description: String {
        "\(self.scheme)://\(self.authority)\(self.pathAndQuery)"
    }

    /// Why a reference does not resolve to a URL the Agent can request.
    struct ResolutionError: Error, Hashable {
        var message: String
    }

    /// The URL `reference` (a `Location` value) points to, resolved against this one by the algorithm of
    /// RFC 3986 section 5.2: absolute (`https://host/p`), scheme-relative (`//host/p`), absolute-path
    /// (`/p`), relative-path (`p`, `../p`), query-only (`?q`) or empty. The fragment is dropped, since it
    /// is never sent. Bytes a request line cannot carry (spaces, controls, non-ASCII) are
    /// percent-encoded, as browsers and curl do with sloppy `Location` values.
    ///
    /// As RFC 3986 allows for backward compatibility, `http:/p` (this URL's scheme, no authority) is read
    /// as a relative reference.
    ///
    /// - Throws: ``ResolutionError`` for another scheme than `http` and `https`, or no host.
    func resolving(_ reference: String) throws(ResolutionError) -> RequestURL {
        var parts = Reference(reference)
        if let scheme = parts.scheme, scheme == self.scheme, parts.authority == nil {
            parts.scheme = nil
        }
        var result = self
        if let scheme = parts.scheme {
            guard scheme == "http" || scheme == "https" else {
                throw ResolutionError(message: "unsupported scheme \"\(scheme)\"; only https and http are followed")
            }
            result.scheme = scheme
            result.authority = parts.authority ?? ""
            result.path = Self.removeDotSegments(parts.path)
            result.query = parts.query
        } else if let authority = parts.authority {
            result.authority = authority
            result.path = Self.removeDotSegments(parts.path)
            result.query = parts.query
        } else if parts.path.isEmpty {
            result.query = parts.query ?? self.query
        } else {
            if parts.path.hasPrefix("/") {
                result.path = Self.removeDotSegments(parts.path)
            } else {
                // Merge (section 5.2.3): the base path up to its last "/", then the reference.
                let directory = self.path[...(self.path.lastIndex(of: "/") ?? self.path.startIndex)]
                result.path = Self.removeDotSegments(directory + parts.path)
            }
            result.query = parts.query
        }
        guard !result.authority.isEmpty else {
            throw ResolutionError(message: "no host")
        }
        if !result.path.hasPrefix("/") {
            result.path = "/" + result.path
        }
        result.path = Self.percentEncoded(result.path)
        result.query = result.query.map(Self.percentEncoded)
        return result
    }

    /// A reference split by the regular expression of RFC 3986 appendix B.
    private struct Reference {
        /// Lower-cased.
        var scheme: String?
        var authority: String?
        var path: String
        var query: String?

        init(_ text: String) {
            var rest = Substring(text.trimmingOWS)
            if let hash = rest.firstIndex(of: "#") {
                rest = rest[..<hash]
            }
            if let colon = rest.firstIndex(of: ":"), Self.isScheme(rest[..<colon]) {
                self.scheme = rest[..<colon].lowercased()
                rest = rest[rest.index(after: colon)...]
            }
            if rest.hasPrefix("//") {
                rest = rest.dropFirst(2)
                let end = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
                self.authority = String(rest[..<end])
                rest = rest[end...]
            }
            if let mark = rest.firstIndex(of: "?") {
                self.query = String(rest[rest.index(after: mark)...])
                rest = rest[..<mark]
            }
            self.path = String(rest)
        }

        /// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
        private static func isScheme(_ text: Substring) -> Bool {
            guard let first = text.utf8.first, first.isASCIILetter else { return false }
            return text.utf8.allSatisfy {
                $0.isASCIILetter || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "+")
                    || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".")
            }
        }
    }

    /// RFC 3986 section 5.2.4: resolves "." and ".." segments.
    static func removeDotSegments(_ path: some StringProtocol) -> String {
        var input = Substring(path)
        var output: [Substring] = []
        // The output as segments, each with its leading "/" (the first may lack one).
        while !input.isEmpty {
            if input.hasPrefix("../") {
                input = input.dropFirst(3)
            } else if input.hasPrefix("./") {
                input = input.dropFirst(2)
            } else if input.hasPrefix("/./") {
                input = input.dropFirst(2)
            } else if input == "/." {
                input = "/"
            } else if input.hasPrefix("/../") {
                input = input.dropFirst(3)
                _ = output.popLast()
            } else if input == "/.." {
                input = "/"
                _ = output.popLast()
            } else if input == "." || input == ".." {
                input = ""
            } else {
                let searchStart = input.hasPrefix("/") ? input.index(after: input.startIndex) : input.startIndex
                let end = input[searchStart...].firstIndex(of: "/") ?? input.endIndex
                output.append(input[..<end])
                input = input[end...]
            }
        }
        return output.joined()
    }

    /// `text` with every byte outside visible ASCII percent-encoded; "%" itself is left alone, since the
    /// server may have encoded already.
    private static func percentEncoded(_ text: String) -> String {
        guard !text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return text }
        let hex = Array("0123456789ABCDEF".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 16)
        for byte in text.utf8 {
            if byte > 0x20 && byte < 0x7F {
                bytes.append(byte)
            } else {
                bytes.append(contentsOf: [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension UInt8 {
    fileprivate var isASCIILetter: Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
    }
}

extension String {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace).
    fileprivate var trimmingOWS: Substring {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}
