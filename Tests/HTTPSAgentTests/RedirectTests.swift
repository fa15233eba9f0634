import HTTPSAgentTestSupport
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import HTTPSAgent

/// Redirects followed by the Agent against real local servers, checked from the server side: what each
/// hop arrived with (`/inspect` echoes it), how many connections and requests the servers saw, and that
/// after every refused chain the pool still serves the next request.
@Suite("Redirects")
struct RedirectTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// `s` percent-encoded for a query value.
    static func encoded(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "/"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                result += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return result
    }

    /// The path of a redirect with `code` to `location`.
    static func redirect(_ code: Int, to location: String, extra: String = "") -> String {
        "/redirect/\(code)?to=\(Self.encoded(location))\(extra)"
    }

    /// What `/inspect` saw: the request line, the header fields (lower-cased names) and the body.
    struct Inspected {
        var requestLine: String
        var fields: [String: String]
        var body: String

        init(_ text: String) {
            let parts = text.split(separator: "\n\n", maxSplits: 1, omittingEmptySubsequences: false)
            let lines = parts[0].split(separator: "\n").map(String.init)
            self.requestLine = lines.first ?? ""
            var fields: [String: String] = [:]
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                fields[line[..<colon].lowercased()] = String(line[line.index(after: colon)...].dropFirst())
            }
            self.fields = fields
            self.body = parts.count > 1 ? String(parts[1]) : ""
        }
    }

    /// A request with a body, a content type, credentials and a field of our own.
    static func request(_ method: HTTPRequest.Method, _ url: String) throws -> HTTPRequest {
        var fields = HTTPFields()
        fields[.contentType] = "text/plain"
        fields[.authorization] = "Bearer secret"
        fields[.proxyAuthorization] = "Basic cHJveHk="
        fields[.cookie] = "session=1"
        fields[HTTPField.Name("X-Custom")!] = "kept"
        return try HTTPRequest(method: method, url: url, headerFields: fields)
    }

    // MARK: - Method and body

    @Test(arguments: [
        // (status, method, sent on: method, body, Content-Type kept)
        (301, HTTPRequest.Method.post, "GET", "", false),
        (302, .post, "GET", "", false),
        (303, .post, "GET", "", false),
        (307, .post, "POST", "payload", true),
        (308, .post, "POST", "payload", true),
        (301, .put, "PUT", "payload", true),
        (302, .delete, "DELETE", "payload", true),
        (303, .put, "GET", "", false),
        (303, .get, "GET", "", false),
    ])
    func methodAndBodyRules(
        code: Int,
        method: HTTPRequest.Method,
        sentMethod: String,
        body: String,
        keepsType: Bool
    )
        async throws
    {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try Self.request(method, server.url(Self.redirect(code, to: "/inspect")))
            let response = try await agent.execute(request, body: .string("payload"))
            let seen = Inspected(try await response.text())
            #expect(response.status.code == 200)
            #expect(seen.requestLine == "\(sentMethod) /inspect", "\(code) \(method)")
            #expect(seen.body == body, "\(code) \(method)")
            #expect((seen.fields["content-type"] != nil) == keepsType, "\(seen.fields)")
            if body.isEmpty {
                #expect(seen.fields["content-length"] == nil || seen.fields["content-length"] == "0")
            } else {
                #expect(seen.fields["content-length"] == String(body.utf8.count))
            }
            // Same origin: credentials and our own fields go along.
            #expect(seen.fields["authorization"] == "Bearer secret")
            #expect(seen.fields["x-custom"] == "kept")
            #expect(response.url == server.url("/inspect"))
            #expect(response.redirectCount == 1)
            // The redirect's body was read, so its connection carried the next request.
            #expect(server.stats.accepted == 1 && server.stats.requests == 2)
        }
    }

    @Test func headStaysHeadOn303() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try HTTPRequest(method: .head, url: server.url(Self.redirect(303, to: "/inspect")))
            let response = try await agent.execute(request)
            #expect(response.status.code == 200)
            #expect(response.headerFields[HTTPField.Name("X-Request-Method")!] == "HEAD")
            #expect(try await response.body.collect(upTo: 1024).readableBytes == 0)
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func a307ResendsALargeBodyIntact() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let request = try HTTPRequest(method: .post, url: server.url(Self.redirect(307, to: "/echo")))
            let response = try await agent.execute(request, body: .bytes(payload))
            #expect(response.headerFields[HTTPField.Name("X-Request-Method")!] == "POST")
            let echoed = try await response.body.collect(upTo: 1 << 20)
            #expect(Array(echoed.readableBytesView) == payload)
            #expect(response.timing.bodyBytesSent == payload.count)
            #expect(response.timing.hops.first?.bodyBytesSent == payload.count)
        }
    }

    @Test func aStreamedBodyIsNotResent() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            func streamed() -> RequestBody {
                .stream(
                    AsyncStream { continuation in
                        continuation.yield(ByteBuffer(string: "streamed"))
                        continuation.finish()
                    },
                    length: 8
                )
            }
            // 307 needs the body again: the redirect comes back as it is.
            let url = server.url(Self.redirect(307, to: "/inspect"))
            let kept = try await agent.execute(try HTTPRequest(method: .post, url: url), body: streamed())
            #expect(kept.status.code == 307)
            #expect(kept.headerFields[.location] == "/inspect")
            #expect(kept.url == url)
            #expect(kept.redirectCount == 0)
            #expect(try await kept.text() == "redirecting")
            // 303 does not: followed as a GET.
            let url303 = server.url(Self.redirect(303, to: "/inspect"))
            let followed = try await agent.execute(try HTTPRequest(method: .post, url: url303), body: streamed())
            #expect(Inspected(try await followed.text()).requestLine == "GET /inspect")
            #expect(server.stats.accepted == 1 && server.stats.requests == 3)
        }
    }

    // MARK: - Location resolution

    @Test func relativeLocationsResolveAgainstTheCurrentURL() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let cases: [(location: String, requestLine: String, redirects: Int)] = [
                ("/inspect?a=1", "GET /inspect?a=1", 1),
                ("../inspect?b=2", "GET /inspect?b=2", 1),
                ("./../inspect", "GET /inspect", 1),
                ("../x/../inspect#fragment", "GET /inspect", 1),
                ("//localhost:\(server.port)/inspect?c=3", "GET /inspect?c=3", 1),
                (server.url("/inspect?d=4"), "GET /inspect?d=4", 1),
                // Query-only: the same path, a new query, which redirects again.
                ("?to=/inspect%3Fe%3D5", "GET /inspect?e=5", 2),
                ("/inspect?space= here", "GET /inspect?space=%20here", 1),
            ]
            for (location, requestLine, redirects) in cases {
                let response = try await agent.get(server.url(Self.redirect(302, to: location)))
                #expect(Inspected(try await response.text()).requestLine == requestLine, "\(location)")
                #expect(response.redirectCount == redirects, "\(location)")
            }
            #expect(server.stats.accepted == 1)
        }
    }

    /// RFC 3986 section 5.4's examples, against its base URI.
    @Test func resolverFollowsRFC3986() throws {
        let base = RequestURL(scheme: "http", authority: "a", path: "/b/c/d;p", query: "q")
        let examples: [(String, String)] = [
            ("g", "http://a/b/c/g"), ("./g", "http://a/b/c/g"), ("g/", "http://a/b/c/g/"), ("/g", "http://a/g"),
            ("//g", "http://g/"), ("?y", "http://a/b/c/d;p?y"), ("g?y", "http://a/b/c/g?y"),
            ("#s", "http://a/b/c/d;p?q"), ("g#s", "http://a/b/c/g"), ("g?y#s", "http://a/b/c/g?y"),
            (";x", "http://a/b/c/;x"), ("g;x", "http://a/b/c/g;x"), ("g;x?y#s", "http://a/b/c/g;x?y"),
            ("", "http://a/b/c/d;p?q"), (".", "http://a/b/c/"), ("./", "http://a/b/c/"), ("..", "http://a/b/"),
            ("../", "http://a/b/"), ("../g", "http://a/b/g"), ("../..", "http://a/"), ("../../", "http://a/"),
            ("../../g", "http://a/g"),
            // Abnormal examples.
            ("../../../g", "http://a/g"), ("../../../../g", "http://a/g"), ("/./g", "http://a/g"),
            ("/../g", "http://a/g"), ("g.", "http://a/b/c/g."), (".g", "http://a/b/c/.g"), ("g..", "http://a/b/c/g.."),
            ("..g", "http://a/b/c/..g"), ("./../g", "http://a/b/g"), ("./g/.", "http://a/b/c/g/"),
            ("g/./h", "http://a/b/c/g/h"), ("g/../h", "http://a/b/c/h"), ("g;x=1/./y", "http://a/b/c/g;x=1/y"),
            ("g;x=1/../y", "http://a/b/c/y"), ("g?y/./x", "http://a/b/c/g?y/./x"),
            ("g?y/../x", "http://a/b/c/g?y/../x"),
            ("g#s/./x", "http://a/b/c/g"), ("g#s/../x", "http://a/b/c/g"),
            // The backward-compatible reading of the same scheme without an authority.
            ("http:g", "http://a/b/c/g"),
            // Ours: another scheme, case, whitespace and bytes a request line cannot carry.
            ("HTTPS://Example.com:8443", "https://Example.com:8443/"), ("  /g  ", "http://a/g"),
            ("/a b/ü?q r", "http://a/a%20b/%C3%BC?q%20r"),
        ]
        for (reference, expected) in examples {
            #expect(try base.resolving(reference).description == expected, "\"\(reference)\"")
        }
        for reference in ["g:h", "ftp://a/", "mailto:x@y", "https:g", "https:///g", "http://"] {
            #expect(throws: RequestURL.ResolutionError.self, "\"\(reference)\"") { try base.resolving(reference) }
        }
    }

    // MARK: - Credentials across origins

    @Test func crossOriginHopDropsCredentials() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // localhost and 127.0.0.1 are two origins (two pools) on one server.
            let other = server.url("/inspect", host: "127.0.0.1")
            let request = try Self.request(.get, server.url(Self.redirect(302, to: other)))
            let response = try await agent.execute(request)
            let seen = Inspected(try await response.text())
            #expect(seen.fields["authorization"] == nil)
            #expect(seen.fields["proxy-authorization"] == nil)
            #expect(seen.fields["cookie"] == nil)
            #expect(seen.fields["x-custom"] == "kept")
            #expect(seen.fields["host"] == "127.0.0.1:\(server.port)")
            #expect(response.url == other)
            #expect(server.stats.accepted == 2, "one connection per origin")

            // Back to the first origin: it gets them again, as it did at the start (curl and Go do the same).
            let back = server.url("/inspect")
            let bounce = try Self.request(
                .get,
                server.url(Self.redirect(302, to: server.url(Self.redirect(302, to: back), host: "127.0.0.1")))
            )
            let returned = Inspected(try await agent.execute(bounce).text())
            #expect(returned.fields["authorization"] == "Bearer secret")
            #expect(returned.fields["cookie"] == "session=1")
        }
    }

    @Test func sameHostOtherPortIsAnotherOrigin() async throws {
        let second = try await environment.tlsServer()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try Self.request(.get, server.url(Self.redirect(307, to: second.url("/inspect"))))
            let seen = Inspected(try await agent.execute(request).text())
            #expect(seen.fields["authorization"] == nil && seen.fields["cookie"] == nil)
            #expect(second.stats.requests == 1)
        }
        try await second.shutdown()
    }

    // MARK: - Refused redirects, and the pool afterwards

    /// The request after a refused chain goes out on the connection the refused redirect came on.
    static func expectPoolServes(_ agent: Agent, _ server: TestHTTPServer, accepted: Int) async throws {
        let after = try await agent.get(server.url("/hello"))
        #expect(try await after.text() == "hello")
        #expect(after.connection.isReused)
        #expect(server.stats.accepted == accepted, "no connection was lost to the failure")
    }

    @Test func httpsToHTTPIsRefusedByDefault() async throws {
        let plain = try await environment.plainServer()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let url = server.url(Self.redirect(302, to: plain.url("/inspect")))
            let error = await agentError { _ = try await agent.execute(Self.request(.get, url)) }
            #expect(error?.code == .insecureRedirect)
            #expect(error?.phase == .redirect)
            #expect(error?.host == "localhost" && error?.port == server.port)
            #expect(error?.requestMayHaveBeenSent == true)
            #expect(error?.description.contains(plain.url("/inspect")) == true, "\(String(describing: error))")
            #expect(error?.timing?.isComplete == true)
            #expect(error?.timing?.statusCode == 302)
            #expect(plain.stats.requests == 0)
            try await Self.expectPoolServes(agent, server, accepted: 1)

            // Allowed for one request: followed, without credentials (another origin).
            let allowed = try await agent.execute(
                Self.request(.get, url),
                redirects: .follow(allowHTTPSToHTTP: true)
            )
            let seen = Inspected(try await allowed.text())
            #expect(seen.requestLine == "GET /inspect")
            #expect(seen.fields["authorization"] == nil && seen.fields["cookie"] == nil)
            #expect(allowed.url == plain.url("/inspect"))
            #expect(allowed.connection.tls == nil)
            #expect(plain.stats.requests == 1)
        }
        try await plain.shutdown()
    }

    @Test func tooManyRedirects() async throws {
        var configuration = environment.configuration()
        configuration.redirects = .follow(max: 3)
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            let error = await agentError { _ = try await agent.get(server.url("/chain/4")) }
            #expect(error?.code == .tooManyRedirects)
            #expect(error?.phase == .redirect)
            #expect(error?.host == "localhost")
            #expect(error?.message.contains("after 3 redirects") == true, "\(String(describing: error))")
            #expect(error?.timing?.redirectCount == 3)
            #expect(error?.url == server.url("/chain/1"), "the hop whose redirect was refused")
            #expect(error?.timing?.statusCode == 302)
            #expect(server.stats.requests == 4, "the fourth redirect is not followed")
            try await Self.expectPoolServes(agent, server, accepted: 1)
            // Exactly the limit is fine.
            let response = try await agent.get(server.url("/chain/3"))
            #expect(try await response.text() == "chain done")
            #expect(response.redirectCount == 3)
            #expect(server.stats.accepted == 1)
        }
    }

    @Test func zeroMeansNoRedirectAtAll() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let request = try HTTPRequest(method: .get, url: server.url("/chain/1"))
            let error = await agentError { _ = try await agent.execute(request, redirects: .follow(max: 0)) }
            #expect(error?.code == .tooManyRedirects)
            try await Self.expectPoolServes(agent, server, accepted: 1)
        }
    }

    @Test func redirectLoop() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let error = await agentError { _ = try await agent.get(server.url("/loop/a")) }
            #expect(error?.code == .redirectLoop)
            #expect(error?.phase == .redirect)
            #expect(error?.description.contains("GET \(server.url("/loop/a"))") == true, "\(String(describing: error))")
            #expect(error?.timing?.redirectCount == 1)
            #expect(error?.url == server.url("/loop/b"))
            #expect(server.stats.requests == 2, "a, b, and not a again")
            try await Self.expectPoolServes(agent, server, accepted: 1)

            let onItself = await agentError { _ = try await agent.get(server.url("/loop/self")) }
            #expect(onItself?.code == .redirectLoop)
            #expect(onItself?.timing?.redirectCount == 0)
            try await Self.expectPoolServes(agent, server, accepted: 1)
        }
    }

    @Test func unusableLocations() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            for location in ["ftp://localhost/file", "https://user:pw@localhost:\(server.port)/", "https:///nohost"] {
                let error = await agentError { _ = try await agent.get(server.url(Self.redirect(301, to: location))) }
                #expect(error?.code == .invalidRedirect, "\(location)")
                #expect(error?.message.contains(location) == true, "\(String(describing: error))")
                #expect(error?.phase == .redirect)
            }
            try await Self.expectPoolServes(agent, server, accepted: 1)
        }
    }

    @Test func notFollowedWhenDisabledOrWithoutLocation() async throws {
        var configuration = environment.configuration()
        configuration.redirects = .disabled
        try await withAgent(configuration, server: environment.tlsServer()) { agent, server in
            let url = server.url(Self.redirect(302, to: "/inspect"))
            let response = try await agent.get(url)
            #expect(response.status.code == 302)
            #expect(try await response.text() == "redirecting")
            #expect(response.url == url && response.redirectCount == 0)
            // Per request, the other way round.
            let followed = try await agent.execute(HTTPRequest(method: .get, url: url), redirects: .default)
            #expect(followed.status.code == 200 && followed.redirectCount == 1)
            _ = try await followed.text()
            // A redirect status without Location is an ordinary response.
            let bare = try await agent.execute(
                HTTPRequest(method: .get, url: server.url("/status/302")),
                redirects: .default
            )
            #expect(bare.status.code == 302 && bare.redirectCount == 0)
            _ = try await bare.text()
            #expect(server.stats.accepted == 1)
        }
    }

    // MARK: - Redirect bodies and connections

    @Test(arguments: [
        // (body size, chunked, connections the server accepts)
        (1000, false, 1),
        (60_000, true, 1),
        (1_000_000, false, 2),
        (1_000_000, true, 2),
    ])
    func redirectBodiesAreReadOrDropped(size: Int, chunked: Bool, accepted: Int) async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let extra = "&size=\(size)" + (chunked ? "&chunked=1" : "")
            let response = try await agent.get(server.url(Self.redirect(302, to: "/hello", extra: extra)))
            #expect(try await response.text() == "hello")
            // A body within 64 KiB is read and the connection reused; a longer one is dropped and its
            // connection closed, rather than read to its end.
            #expect(server.stats.accepted == accepted)
            #expect(response.connection.isReused == (accepted == 1))
            if let hop = response.timing.hops.first {
                #expect(hop.bodyBytesReceived <= max(size, 0))
                #expect(hop.isComplete)
            }
            try await Self.expectPoolServes(agent, server, accepted: accepted)
        }
    }

    // MARK: - Timing

    @Test func timingCoversTheChain() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let response = try await agent.get(server.url("/chain/2"))
            #expect(try await response.text() == "chain done")
            let timing = response.timing
            #expect(timing.isComplete)
            #expect(timing.redirectCount == 2 && response.redirectCount == 2)
            #expect(timing.hops.map(\.statusCode) == [302, 302])
            #expect(timing.statusCode == 200)
            #expect(timing.redirectTime > .zero)
            expectConsistent(timing)
            for hop in timing.hops {
                expectConsistent(hop)
                #expect(hop.isComplete && hop.redirectCount == 0 && hop.redirectTime == .zero)
            }
            // One clock: the first hop starts with the chain, the next when the one before ended, and the
            // final one at redirectTime.
            let hop0 = timing.hops[0]
            let hop1 = timing.hops[1]
            #expect(hop0.startedAt == timing.startedAt)
            let hop1Start = Self.between(timing.startedAt, hop1.startedAt)
            #expect(hop1Start >= hop0.total)
            #expect(timing.redirectTime >= hop1Start + hop1.total)
            for milestone in [timing.queueEnd, timing.requestStart, timing.firstByte, timing.end] {
                #expect((milestone ?? .zero) >= timing.redirectTime)
            }
            // A same-origin chain goes over one connection: new, then reused twice.
            #expect(!hop0.reusedConnection && hop1.reusedConnection && timing.reusedConnection)
            #expect(hop0.tlsEnd != nil && hop1.tlsEnd == nil)
            #expect(server.stats.accepted == 1 && server.stats.requests == 3)
            #expect(Set(timing.hops.map(\.connectionID) + [timing.connectionID]).count == 1)

            // curl's variables with -L: time_redirect, time_total over the chain, milestones summed per hop.
            #expect(timing.curlVariable("time_redirect") == timing.redirectTime.seconds)
            #expect(timing.curlVariable("time_total") == timing.total.seconds)
            let ownFirstBytes = timing.hops.map { $0.firstByte ?? .zero } + [timing.firstByte! - timing.redirectTime]
            let summed = ownFirstBytes.reduce(Duration.zero, +).seconds
            #expect(abs((timing.curlVariable("time_starttransfer") ?? 0) - summed) < 1e-9)
            #expect(timing.curlVariable("time_connect") == hop0.connectEnd?.seconds)
        }
    }

    @Test func aFailedHopCarriesTheChainsTiming() async throws {
        let port = try await unusedLoopbackPort()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let url = server.url(Self.redirect(302, to: "https://127.0.0.1:\(port)/"))
            let error = await agentError { _ = try await agent.get(url) }
            #expect(error?.code == .connectFailed)
            #expect(error?.host == "127.0.0.1")
            #expect(error?.url == "https://127.0.0.1:\(port)/")
            let timing = try #require(error?.timing)
            #expect(timing.redirectCount == 1 && timing.redirectTime > .zero)
            #expect(timing.hops.first?.statusCode == 302)
            expectConsistent(timing)
            try await Self.expectPoolServes(agent, server, accepted: 1)
        }
    }

    static func between(_ start: NIODeadline, _ end: NIODeadline) -> Duration {
        .nanoseconds(Int64(end.uptimeNanoseconds) - Int64(start.uptimeNanoseconds))
    }

    // MARK: - Observers

    @Test func observersSeeEachHopAsARequest() async throws {
        let observer = HopRecorder()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let response = try await agent.execute(
                HTTPRequest(method: .post, url: server.url(Self.redirect(303, to: "/chain/1"))),
                body: .string("form"),
                observer: observer
            )
            _ = try await response.text()
            let events = observer.events
            let ids = Set(events.map(\.id))
            #expect(ids.count == 3, "three hops, three requests: \(events)")
            let lines = events.map(\.line)
            #expect(
                lines == [
                    "queued POST /redirect/303?to=/chain/1", "head 303", "finished 303",
                    "redirected 303 -> GET /chain/1", "queued GET /chain/1", "head 302", "finished 302",
                    "redirected 302 -> GET /chain/0", "queued GET /chain/0", "head 200", "finished 200",
                ]
            )
            #expect(observer.hopRecords.allSatisfy { $0.redirectCount == 0 && $0.redirectTime == .zero })
        }
    }
}

/// Records the request events that tell hops apart, with their request ids.
final class HopRecorder: AgentObserver {
    private let box = NIOLockedValueBox<(events: [(id: UInt64, line: String)], records: [RequestTiming])>(([], []))

    var events: [(id: UInt64, line: String)] { self.box.withLockedValue { $0.events } }
    var hopRecords: [RequestTiming] { self.box.withLockedValue { $0.records } }

    private func record(_ request: ObservedRequest, _ line: String) {
        self.box.withLockedValue { $0.events.append((request.id, line)) }
    }

    func requestQueued(_ request: ObservedRequest) { self.record(request, "queued \(request.method) \(request.path)") }
    func responseHeadReceived(_ request: ObservedRequest, status: HTTPResponse.Status) {
        self.record(request, "head \(status.code)")
    }
    func requestRedirected(_ request: ObservedRequest, response: HTTPResponse, next: HTTPRequest) {
        self.record(request, "redirected \(response.status.code) -> \(next.method) \(next.path ?? "")")
    }
    func requestFinished(_ request: ObservedRequest, timing: RequestTiming) {
        self.record(request, "finished \(timing.statusCode ?? 0)")
        self.box.withLockedValue { $0.records.append(timing) }
    }
    func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {
        self.record(request, "failed \(error.code)")
    }
}
