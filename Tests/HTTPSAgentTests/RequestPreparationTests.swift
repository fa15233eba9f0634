import HTTPTypes
import NIOCore
import NIOHTTP1
import Testing

@testable import HTTPSAgent

// MARK: - Helpers

private func request(
    _ method: HTTPRequest.Method = .get,
    scheme: String? = "https",
    authority: String?,
    path: String? = "/",
    headers: HTTPFields = [:]
) -> HTTPRequest {
    HTTPRequest(method: method, scheme: scheme, authority: authority, path: path, headerFields: headers)
}

private func target(_ authority: String, scheme: String = "https") throws -> RequestTarget {
    try RequestTarget(request(scheme: scheme, authority: authority))
}

private func prepare(
    _ method: HTTPRequest.Method = .get,
    url: String = "https://example.com/",
    headers: HTTPFields = [:],
    body: RequestBody? = nil,
    agentKeepAlive: Bool = true
) throws -> PreparedRequest {
    let request = try HTTPRequest(method: method, url: url, headerFields: headers)
    return try PreparedRequest(request, body: body, agentKeepAlive: agentKeepAlive)
}

private func streamed(length: Int?) -> RequestBody {
    .stream(AsyncStream<ByteBuffer> { $0.finish() }, length: length)
}

private func field(_ name: String) -> HTTPField.Name {
    HTTPField.Name(name)!
}

private func expectInvalid(_ sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    let error = #expect(throws: AgentError.self, sourceLocation: sourceLocation) { try body() }
    #expect(error?.code == .invalidRequest, sourceLocation: sourceLocation)
    #expect(error?.phase == .request, sourceLocation: sourceLocation)
}

extension PreparedRequest {
    /// The header lines in order, as (name, value).
    fileprivate var lines: [String] { self.head.headers.map { "\($0.name): \($0.value)" } }

    fileprivate func values(_ name: String) -> [String] { self.head.headers[name] }
}

// MARK: - Parsing URLs

@Suite("HTTPRequest(method:url:)")
struct RequestURLParsingTests {
    @Test func splitsSchemeAuthorityAndPathAndDropsTheFragment() throws {
        let parsed = try HTTPRequest(method: .post, url: "https://Example.com:8443/a/b?x=1&y=2#frag")
        #expect(parsed.method == .post)
        #expect(parsed.scheme == "https")
        #expect(parsed.authority == "Example.com:8443")
        #expect(parsed.path == "/a/b?x=1&y=2")
    }

    @Test(
        arguments: [
            ("https://example.com", "/"),
            ("https://example.com/", "/"),
            ("https://example.com?q=1", "/?q=1"),
            ("https://example.com#top", "/"),
            ("https://example.com/#top?not-a-query", "/"),
            ("http://example.com/p?x#f", "/p?x"),
            ("https://[::1]:8443?x", "/?x"),
        ]
    )
    func pathDefaults(url: String, path: String) throws {
        #expect(try HTTPRequest(method: .get, url: url).path == path)
    }

    @Test func lowerCasesTheSchemeAndKeepsTheAuthorityAsWritten() throws {
        let parsed = try HTTPRequest(method: .get, url: "HTTP://WWW.Example.COM/Path")
        #expect(parsed.scheme == "http")
        #expect(parsed.authority == "WWW.Example.COM")
        #expect(parsed.path == "/Path")
    }

    @Test func keepsHeaderFields() throws {
        let parsed = try HTTPRequest(method: .get, url: "https://example.com/", headerFields: [.accept: "text/plain"])
        #expect(parsed.headerFields[.accept] == "text/plain")
    }

    @Test(
        arguments: [
            "example.com/path",  // no scheme
            "//example.com/",
            "mailto:someone@example.com",
            "https:/example.com/",
            "ftp://example.com/",  // unsupported scheme
            "https:///path",  // empty host
            "https://?q",
            "https://user:secret@example.com/",  // user info
            "https://example.com:0/",
            "https://example.com:99999/",
            "https://exa mple.com/",
            "https://example.com/a b",  // space in the path
            "https://example.com/caf\u{E9}",  // not ASCII
            "https://example.com/\u{7F}",
        ]
    )
    func rejects(url: String) {
        expectInvalid { _ = try HTTPRequest(method: .get, url: url) }
    }

    @Test func rejectionNamesTheUnsupportedScheme() {
        let error = #expect(throws: AgentError.self) { try HTTPRequest(method: .get, url: "FTP://example.com/") }
        #expect(error?.message.contains("\"ftp\"") == true)
    }
}

// MARK: - Request targets

@Suite("RequestTarget")
struct RequestTargetTests {
    @Test func lowerCasesTheHostAndKeepsTheHostHeaderAsWritten() throws {
        let parsed = try target("Example.COM:8443")
        #expect(parsed.scheme == .https)
        #expect(parsed.host == "example.com")
        #expect(parsed.port == 8443)
        #expect(parsed.hostHeader == "Example.COM:8443")
    }

    @Test(arguments: [("https", Origin.Scheme.https, 443), ("http", .http, 80), ("HTTPS", .https, 443)])
    func defaultPorts(scheme: String, expected: Origin.Scheme, port: Int) throws {
        let parsed = try target("example.com", scheme: scheme)
        #expect(parsed.scheme == expected)
        #expect(parsed.port == port)
        #expect(parsed.hostHeader == "example.com")
    }

    @Test(
        arguments: [
            ("example.com.", "example.com", 443),
            ("Example.com.:8443", "example.com", 8443),
            ("example.com..", "example.com.", 443),
            ("localhost", "localhost", 443),
            ("127.0.0.1:1", "127.0.0.1", 1),
            ("my_host-1.internal:65535", "my_host-1.internal", 65_535),
        ]
    )
    func normalisesHosts(authority: String, host: String, port: Int) throws {
        let parsed = try target(authority)
        #expect(parsed.host == host)
        #expect(parsed.port == port)
        #expect(parsed.hostHeader == authority)
    }

    @Test(
        arguments: [
            ("[::1]", "::1", 443),
            ("[::1]:8443", "::1", 8443),
            ("[2001:DB8::A]:80", "2001:db8::a", 80),
            ("[::ffff:192.0.2.1]", "::ffff:192.0.2.1", 443),
        ]
    )
    func ipv6Literals(authority: String, host: String, port: Int) throws {
        let parsed = try target(authority)
        #expect(parsed.host == host)
        #expect(parsed.port == port)
        #expect(parsed.hostHeader == authority)
    }

    @Test func rejectsARequestWithoutScheme() {
        expectInvalid { _ = try RequestTarget(request(scheme: nil, authority: "example.com")) }
    }

    @Test(arguments: ["ftp", "wss", ""])
    func rejectsUnsupportedSchemes(_ scheme: String) {
        expectInvalid { _ = try target("example.com", scheme: scheme) }
    }

    @Test(arguments: [nil, ""] as [String?])
    func rejectsAMissingHost(_ authority: String?) {
        expectInvalid { _ = try RequestTarget(request(authority: authority)) }
    }

    @Test(
        arguments: [
            ":443",  // empty host
            "user@example.com",
            "user:pw@example.com:443",
            "example.com:0",
            "example.com:65536",
            "example.com:-1",
            "example.com:https",
            "example.com:44 3",
            "example.com:80:80",
            "exa%mple.com",
            "exa%2Emple.com",
            "exa mple.com",
            "example.com/path",
            "example.com\r\nX-Injected: 1",
            "caf\u{E9}.example",
            "::1",  // IPv6 without brackets
            "[::1",
            "[]",
            "[example.com]",
            "[127.0.0.1]",
            "[::1]x",
            "[::1]:0",
            "[::1]:65536",
            "[::1]:port",
            "[fe80::1%25eth0]",
            // A combining mark after a delimiter: one character with it, so a character walk stepped over it.
            "example.com:\u{301}443",
            "[\u{301}::1]",
            "[::1]:\u{301}443",
        ]
    )
    func rejectsInvalidAuthorities(_ authority: String) {
        expectInvalid { _ = try target(authority) }
    }

    @Test(arguments: ["example.com:+443", "[::1]:+443"])
    func rejectsASignedPort(_ authority: String) {
        expectInvalid { _ = try target(authority) }
    }
}

// MARK: - Prepared requests

@Suite("PreparedRequest")
struct PreparedRequestTests {
    @Test func headCarriesMethodPathAndVersion() throws {
        let prepared = try prepare(.delete, url: "https://example.com/items/7?force=1")
        #expect(prepared.head.method == .DELETE)
        #expect(prepared.head.uri == "/items/7?force=1")
        #expect(prepared.head.version == .http1_1)
        #expect(prepared.target.host == "example.com")
        #expect(prepared.keepAlive)
    }

    @Test(arguments: ["https://Example.COM:8443/", "https://[::1]:8443/", "http://example.com./"])
    func hostHeaderComesFirstAndIsTheAuthorityAsWritten(url: String) throws {
        let prepared = try prepare(url: url, headers: [.accept: "*/*"])
        let authority = try #require(try HTTPRequest(method: .get, url: url).authority)
        #expect(prepared.lines.first == "Host: \(authority)")
        #expect(prepared.values("host") == [authority])
    }

    @Test func userHostFieldsAreDropped() throws {
        let prepared = try prepare(headers: [field("Host"): "evil.example", .accept: "*/*", field("host"): "other"])
        #expect(prepared.lines == ["Host: example.com", "Accept: */*"])
    }

    @Test func userFieldsKeepTheirOrderAfterHost() throws {
        let prepared = try prepare(headers: [.userAgent: "test/1", .accept: "*/*", field("X-Trace"): "a"])
        #expect(prepared.lines == ["Host: example.com", "User-Agent: test/1", "Accept: */*", "X-Trace: a"])
    }

    @Test func userTransferEncodingIsDropped() throws {
        let get = try prepare(headers: [.transferEncoding: "chunked"])
        #expect(get.values("transfer-encoding").isEmpty)
        let post = try prepare(.post, headers: [field("transfer-encoding"): "gzip, chunked"], body: .string("abc"))
        #expect(post.values("transfer-encoding").isEmpty)
        #expect(post.values("content-length") == ["3"])
    }

    @Test func inMemoryBodyGetsItsContentLength() throws {
        let prepared = try prepare(.post, headers: [.contentLength: "99"], body: .string("hello"))
        #expect(prepared.values("content-length") == ["5"])
        #expect(prepared.body?.length == 5)
        #expect(prepared.hasReplayableBody)
    }

    @Test(
        arguments: [
            (HTTPRequest.Method.post, ["0"]),
            (.put, ["0"]),
            (.patch, ["0"]),
            (.get, []),
            (.head, []),
            (.delete, []),
            (.options, []),
        ]
    )
    func requestWithoutBody(method: HTTPRequest.Method, contentLength: [String]) throws {
        let prepared = try prepare(method, headers: [.contentLength: "12"])
        #expect(prepared.values("content-length") == contentLength)
        #expect(prepared.values("transfer-encoding").isEmpty)
        #expect(prepared.body == nil)
    }

    @Test(arguments: [(HTTPRequest.Method.post, ["0"]), (.get, [])])
    func emptyInMemoryBody(method: HTTPRequest.Method, contentLength: [String]) throws {
        let prepared = try prepare(method, body: .bytes(ByteBuffer()))
        #expect(prepared.values("content-length") == contentLength)
    }

    @Test func nonEmptyBodyOnGetStillGetsItsLength() throws {
        #expect(try prepare(.get, body: .bytes([1, 2, 3])).values("content-length") == ["3"])
    }

    @Test func streamOfUnknownLengthIsChunked() throws {
        let prepared = try prepare(.post, body: streamed(length: nil))
        #expect(prepared.values("transfer-encoding") == ["chunked"])
        #expect(prepared.values("content-length").isEmpty)
        #expect(prepared.body?.length == nil)
        #expect(!prepared.hasReplayableBody)
    }

    @Test func streamOfKnownLengthHasContentLength() throws {
        let prepared = try prepare(.put, headers: [.contentLength: "7"], body: streamed(length: 10))
        #expect(prepared.values("content-length") == ["10"])
        #expect(prepared.values("transfer-encoding").isEmpty)
        #expect(prepared.body?.length == 10)
    }

    @Test func userContentLengthIsTheLengthOfAStreamWithout() throws {
        let prepared = try prepare(.put, headers: [.contentLength: "7"], body: streamed(length: nil))
        #expect(prepared.values("content-length") == ["7"])
        #expect(prepared.values("transfer-encoding").isEmpty)
        #expect(prepared.body?.length == 7)
    }

    @Test(arguments: ["-5", "+5", "5x", "abc", "0x10", ""])
    func invalidUserContentLengthIsRefused(value: String) throws {
        expectInvalid { _ = try prepare(.put, headers: [.contentLength: value], body: streamed(length: nil)) }
    }

    @Test func agentWithoutKeepAliveSendsConnectionClose() throws {
        let prepared = try prepare(headers: [.connection: "keep-alive"], agentKeepAlive: false)
        #expect(prepared.values("connection") == ["close"])
        #expect(!prepared.keepAlive)
    }

    @Test func noConnectionFieldByDefault() throws {
        let prepared = try prepare()
        #expect(prepared.values("connection").isEmpty)
        #expect(prepared.keepAlive)
    }

    @Test(arguments: [("close", false), ("Close", false), ("keep-alive, close", false), ("keep-alive", true)])
    func userConnectionField(value: String, keepAlive: Bool) throws {
        let prepared = try prepare(headers: [.connection: value])
        #expect(prepared.values("connection") == [value])
        #expect(prepared.keepAlive == keepAlive)
    }

    @Test func invalidTargetsAreRejected() {
        expectInvalid {
            _ = try PreparedRequest(request(authority: "user@example.com"), body: nil, agentKeepAlive: true)
        }
    }

    @Test(arguments: ["/a b", "/a\r\nX-Injected: 1", "", "a", "*", "/caf\u{E9}"])
    func invalidRequestTargetsAreRejected(path: String) {
        expectInvalid {
            _ = try PreparedRequest(request(authority: "example.com", path: path), body: nil, agentKeepAlive: true)
        }
    }

    @Test func asteriskIsAcceptedForOptions() throws {
        let request = HTTPRequest(method: .options, scheme: "https", authority: "example.com", path: "*")
        let prepared = try PreparedRequest(request, body: nil, agentKeepAlive: true)
        #expect(prepared.head.uri == "*")
    }

    // MARK: Idempotency and resending

    @Test(
        arguments: [
            (HTTPRequest.Method.get, true),
            (.head, true),
            (.options, true),
            (.trace, true),
            (.put, true),
            (.delete, true),
            (.post, false),
            (.patch, false),
            (HTTPRequest.Method("PROPFIND")!, false),
        ]
    )
    func idempotencyByMethod(method: HTTPRequest.Method, idempotent: Bool) throws {
        #expect(try prepare(method).isIdempotent == idempotent)
    }

    @Test(arguments: ["Idempotency-Key", "idempotency-key"])
    func idempotencyKeyMakesAnyMethodIdempotent(name: String) throws {
        #expect(try prepare(.post, headers: [field(name): "abc-123"]).isIdempotent)
        #expect(try prepare(.patch, headers: [field(name): "abc-123"]).isIdempotent)
        #expect(try !prepare(.post, headers: [field("Idempotency"): "abc-123"]).isIdempotent)
    }

    private static func failure(
        _ code: AgentError.Code = .connectionClosed,
        phase: AgentError.Phase = .responseHead,
        sent: Bool = true
    ) -> AgentError {
        AgentError(code: code, phase: phase, message: "test", requestMayHaveBeenSent: sent)
    }

    @Test func closedBeforeAnythingWasSentIsSafeToResend() throws {
        let notSent = Self.failure(phase: .requestWrite, sent: false)
        #expect(try prepare(.post, body: streamed(length: nil)).isSafeToResend(after: notSent))
        #expect(try prepare(.patch, body: .string("x")).isSafeToResend(after: notSent))
        #expect(try prepare(.get).isSafeToResend(after: notSent))
    }

    @Test func idempotentReplayableRequestClosedBeforeTheHeadIsSafeToResend() throws {
        let closed = Self.failure()
        #expect(try prepare(.get).isSafeToResend(after: closed))
        #expect(try prepare(.put, body: .string("x")).isSafeToResend(after: closed))
        let keyed = try prepare(.post, headers: [field("Idempotency-Key"): "k"], body: .string("x"))
        #expect(keyed.isSafeToResend(after: closed))
    }

    @Test func sentRequestsThatAreNotSafeAreNotResent() throws {
        let closed = Self.failure()
        #expect(try !prepare(.put, body: streamed(length: 3)).isSafeToResend(after: closed))
        #expect(try !prepare(.post, body: .string("x")).isSafeToResend(after: closed))
        #expect(try !prepare(.patch).isSafeToResend(after: closed))
    }

    @Test(arguments: [AgentError.Phase.requestWrite, .responseBody, .tlsHandshake])
    func sentRequestsFailingInAnotherPhaseAreNotResent(phase: AgentError.Phase) throws {
        #expect(try !prepare(.get).isSafeToResend(after: Self.failure(phase: phase)))
    }

    @Test(
        arguments: [
            AgentError.Code.responseBodyTruncated, .malformedResponse, .cancelled, .shutdown, .uncleanShutdown,
            .tlsHandshakeFailed,
        ]
    )
    func onlyClosedConnectionsAreResent(code: AgentError.Code) throws {
        let get = try prepare(.get)
        #expect(!get.isSafeToResend(after: Self.failure(code)))
        #expect(!get.isSafeToResend(after: Self.failure(code, phase: .requestWrite, sent: false)))
    }

    @Test func whyNotResendableNamesTheReason() throws {
        #expect(
            try prepare(.post).whyNotResendable
                == "POST is not idempotent (add an Idempotency-Key header to allow it)"
        )
        #expect(
            try prepare(.put, body: streamed(length: nil)).whyNotResendable == "its streamed body cannot be replayed"
        )
        #expect(try prepare(.get).whyNotResendable == "the connection failed after the request was sent")
    }
}
