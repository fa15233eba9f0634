import HTTPSAgentTestSupport

/// The seed corpus: small valid exchanges of each kind the response path knows, in ``FuzzInput``'s
/// layout. `Tests/Fuzz/corpus` holds them as files (`swift run fuzz-response --write-seeds DIR`
/// writes them; a test checks the two agree).
public enum FuzzSeeds {
    public static let all: [(name: String, input: [UInt8])] = [
        (
            "content-length",
            FuzzInput.encode(
                options: [],
                cuts: [5, 40],
                data: text("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
            )
        ),
        (
            "chunked",
            FuzzInput.encode(
                options: reader(.collect),
                cuts: [47, 52, 60],
                data: text(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
                )
            )
        ),
        ("gzip", FuzzInput.encode(options: [], cuts: [70], data: encoded("gzip", .gzip, chunked: false))),
        ("deflate-zlib-chunked", FuzzInput.encode(options: [], data: encoded("deflate", .zlib, chunked: true))),
        (
            "deflate-raw",
            FuzzInput.encode(options: [], cuts: [60, 61], data: encoded("deflate", .rawDeflate, chunked: false))
        ),
        (
            "gzip-two-members-tight-limits",
            FuzzInput.encode(
                options: [.tightLimits],
                data: text("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
                    + chunk(Compressor.compress(text("first member, "), format: .gzip))
                    + chunk(Compressor.compress(text("second member"), format: .gzip)) + text("0\r\n\r\n")
            )
        ),
        (
            "informational",
            FuzzInput.encode(
                options: [],
                cuts: [10],
                data: text(
                    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                        + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                )
            )
        ),
        (
            "close-delimited",
            FuzzInput.encode(
                options: [],
                cuts: [30],
                data: text("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            )
        ),
        {
            // Three responses on one connection: each read ends where a response does, so the next
            // request is out before its response arrives.
            let first = text("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
            let second = text("HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=5\r\n\r\n")
            let third = text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthree\r\n0\r\n\r\n")
            return (
                "keep-alive-three",
                FuzzInput.encode(
                    options: [],
                    cuts: [first.count, first.count + second.count],
                    data: first + second + third
                )
            )
        }(),
        ("head", FuzzInput.encode(options: [.head], data: text("HTTP/1.1 200 OK\r\nContent-Length: 123\r\n\r\n"))),
        ("not-modified-http10", FuzzInput.encode(options: [], data: text("HTTP/1.0 304 Not Modified\r\n\r\n"))),
        (
            "take-one-then-drop",
            FuzzInput.encode(
                options: reader(.takeOneThenDrop),
                cuts: [42],
                data: text("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
            )
        ),
        (
            "cancel-after-head",
            FuzzInput.encode(
                options: reader(.cancelAfterHead),
                data: text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n")
            )
        ),
        (
            "reset-mid-body",
            FuzzInput.encode(
                options: [.endWithReset],
                data: text("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ntoo short")
            )
        ),
        (
            "deadline-mid-head",
            FuzzInput.encode(options: [.deadlinePasses], data: text("HTTP/1.1 200 OK\r\nServer: slo"))
        ),
        (
            "switching-protocols",
            FuzzInput.encode(
                options: [.noKeepAlive],
                data: text(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\u{81}\u{05}hello"
                )
            )
        ),
    ]

    private static func text(_ string: String) -> [UInt8] { Array(string.utf8) }

    private static func reader(_ reader: FuzzInput.Reader) -> FuzzInput.Options {
        FuzzInput.Options(rawValue: reader.rawValue)
    }

    private static func chunk(_ bytes: [UInt8]) -> [UInt8] {
        text(String(bytes.count, radix: 16) + "\r\n") + bytes + text("\r\n")
    }

    /// A response whose body is a repetitive text compressed as `format`, framed by length or chunked.
    private static func encoded(_ encoding: String, _ format: Compressor.Format, chunked: Bool) -> [UInt8] {
        let body = Compressor.compress(
            text(String(repeating: "compressed \(encoding) body; ", count: 20)),
            format: format
        )
        guard chunked else {
            return text("HTTP/1.1 200 OK\r\nContent-Encoding: \(encoding)\r\nContent-Length: \(body.count)\r\n\r\n")
                + body
        }
        let half = body.count / 2
        return text("HTTP/1.1 200 OK\r\nContent-Encoding: \(encoding)\r\nTransfer-Encoding: chunked\r\n\r\n")
            + chunk(Array(body[..<half])) + chunk(Array(body[half...])) + text("0\r\n\r\n")
    }
}
