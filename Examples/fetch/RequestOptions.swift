import ArgumentParser
import HTTPSAgent
import HTTPTypes
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// curl's options for what to send: `-X`, `-H`, `-d`, `--data-binary` and `-I`.
struct RequestOptions: ParsableArguments {
    @Option(
        name: [.customShort("X"), .customLong("request")],
        help: ArgumentHelp("The request method. Default: GET, POST with -d, HEAD with -I.", valueName: "METHOD")
    )
    var method: String?

    @Option(
        name: [.customShort("H"), .customLong("header")],
        help: ArgumentHelp(
            "Add a header field, \"Name: value\" (repeat for more).",
            discussion: """
                "Name:" removes a field fetch would send by default (User-Agent, Accept, Content-Type); \
                "Name;" sends the field with an empty value.
                """,
            valueName: "LINE"
        )
    )
    var headers: [String] = []

    @Option(
        name: [.customShort("d"), .customLong("data")],
        help: ArgumentHelp(
            "Send DATA as the body of a POST, as application/x-www-form-urlencoded.",
            discussion: """
                @FILE reads the data from FILE (@- from standard input) with carriage returns and newlines \
                removed, as curl does. Several -d join with "&".
                """,
            valueName: "DATA"
        )
    )
    var data: [String] = []

    @Option(
        name: .customLong("data-binary"),
        help: ArgumentHelp("Like -d, but @FILE is sent exactly as it is.", valueName: "DATA")
    )
    var dataBinary: [String] = []

    @Flag(name: [.customShort("I"), .customLong("head")], help: "Send HEAD and print the response head only.")
    var headOnly = false

    @Flag(
        help: ArgumentHelp(
            "Ask for a gzip or deflate response and decode it.",
            discussion: """
                Without it, as in curl, no Accept-Encoding is sent and a body is written as the server sent \
                it. With it, size_download counts the decoded bytes.
                """
        )
    )
    var compressed = false

    /// The value fetch sends as `User-Agent` unless told otherwise.
    static let userAgent = "swift-https-agent-fetch/0.1"

    func validate() throws {
        if self.headOnly && !(self.data.isEmpty && self.dataBinary.isEmpty) {
            throw ValidationError("-I sends HEAD, which has no body: drop -d/--data-binary")
        }
        if let method, HTTPRequest.Method(method) == nil {
            throw ValidationError("-X \(method): not a valid method token")
        }
        for line in self.headers {
            _ = try Self.parse(header: line)
        }
    }

    /// The method to send.
    var requestMethod: HTTPRequest.Method {
        if let method, let parsed = HTTPRequest.Method(method) { return parsed }
        if self.headOnly { return .head }
        return self.data.isEmpty && self.dataBinary.isEmpty ? .get : .post
    }

    /// The header fields to send: fetch's defaults, then -H on top.
    func headerFields(hasBody: Bool) throws -> HTTPFields {
        var fields = HTTPFields()
        fields[.userAgent] = Self.userAgent
        fields[.accept] = "*/*"
        if hasBody {
            fields[.contentType] = "application/x-www-form-urlencoded"
        }
        // A field given with -H replaces fetch's default of that name; several -H of one name all go.
        var defaults: Set<HTTPField.Name> = [.userAgent, .accept, .contentType]
        for line in self.headers {
            let (name, value) = try Self.parse(header: line)
            if defaults.remove(name) != nil || value == nil {
                fields[name] = nil
            }
            if let value {
                fields.append(HTTPField(name: name, value: value))
            }
        }
        return fields
    }

    /// "Name: value" → (name, value); "Name:" → (name, nil), a removal; "Name;" → (name, "").
    static func parse(header line: String) throws -> (HTTPField.Name, String?) {
        if line.hasSuffix(";"), !line.contains(":") {
            guard let name = HTTPField.Name(String(line.dropLast())) else {
                throw ValidationError("-H \"\(line)\": not a valid header field name")
            }
            return (name, "")
        }
        guard let colon = line.firstIndex(of: ":") else {
            throw ValidationError("-H \"\(line)\": expected \"Name: value\"")
        }
        guard let name = HTTPField.Name(String(line[..<colon])) else {
            throw ValidationError("-H \"\(line)\": not a valid header field name")
        }
        let value = line[line.index(after: colon)...].trimmingSpaces
        if value.isEmpty { return (name, nil) }
        guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
            throw ValidationError("-H \"\(name)\": the value contains control characters")
        }
        return (name, value)
    }

    struct ReadError: Error, CustomStringConvertible {
        var description: String
    }

    /// The body from -d and --data-binary, read once (files included) and sent with every URL.
    func body() throws(ReadError) -> ByteBuffer? {
        if self.data.isEmpty && self.dataBinary.isEmpty { return nil }
        var parts: [[UInt8]] = []
        for item in self.data {
            var bytes = try Self.read(item)
            if item.hasPrefix("@") {
                bytes.removeAll { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }
            }
            parts.append(bytes)
        }
        for item in self.dataBinary {
            parts.append(try Self.read(item))
        }
        var buffer = ByteBuffer()
        for (index, part) in parts.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: "&")) }
            buffer.writeBytes(part)
        }
        return buffer
    }

    /// `@FILE` or `@-` read whole; anything else as its UTF-8 bytes.
    private static func read(_ item: String) throws(ReadError) -> [UInt8] {
        guard item.hasPrefix("@") else { return Array(item.utf8) }
        return try Self.readFile(String(item.dropFirst()))
    }

    /// The whole of the file at `path`, or of standard input for "-".
    static func readFile(_ path: String) throws(ReadError) -> [UInt8] {
        let descriptor = path == "-" ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw ReadError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { if descriptor != STDIN_FILENO { close(descriptor) } }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ReadError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
        }
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
