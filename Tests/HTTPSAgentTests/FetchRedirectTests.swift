import Foundation
import HTTPSAgentTestSupport
import Testing

/// `fetch -L`, `--max-redirs` and the redirect variables of `-w` and `--json`, run as a subprocess
/// against local servers and checked against what the servers saw.
@Suite("fetch -L")
struct FetchRedirectTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    func redirect(_ code: Int, to location: String) -> String {
        RedirectTests.redirect(code, to: location)
    }

    @Test func withoutLocationTheRedirectIsTheResult() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let url = server.url(self.redirect(302, to: "/hello"))
        let result = try await FetchCLITests.fetch(
            ["-s", "--cacert", files.caPath, "-w", "\n%{http_code} %{num_redirects} %{url_effective}", url]
        )
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput == "redirecting\n302 0 \(url)")
        #expect(server.stats.requests == 1, "not followed")
        try await server.shutdown()
    }

    @Test func timingShowsARedirectRowOnlyWhenThereWereRedirects() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await FetchCLITests.fetch(
            [
                "-sL", "--timing", "-o", "/dev/null", "--cacert", files.caPath, server.url("/chain/2"),
                server.url("/hello"),
            ]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.standardError.split(separator: "\n").map(String.init)
        let row = lines.first { $0.hasPrefix("redirect ") }?.split(separator: " ").map(String.init)
        #expect(row?[1] == "1", "one of the two transfers was redirected: \(lines)")
        let plain = try await FetchCLITests.fetch(
            ["-s", "--timing", "-o", "/dev/null", "--cacert", files.caPath, server.url("/hello")]
        )
        #expect(!plain.standardError.contains("redirect"), "\(plain.standardError)")
        try await server.shutdown()
    }

    @Test func locationFollowsAndWritesTheFinalBody() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let url = server.url("/chain/2")
        let format =
            "\n%{http_code} %{num_redirects} %{url_effective} %{url} %{time_redirect} %{time_total} %{num_connects}"
        let result = try await FetchCLITests.fetch(["-sL", "--cacert", files.caPath, "-w", format, url])
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.standardOutput.split(separator: "\n").map(String.init)
        try #require(lines.count == 2, "\(result.standardOutput)")
        #expect(lines[0] == "chain done")
        let values = lines[1].split(separator: " ").map(String.init)
        try #require(values.count == 7, "\(values)")
        #expect(values[0] == "200" && values[1] == "2")
        #expect(values[2] == server.url("/chain/0") && values[3] == url)
        let redirectTime = try #require(Double(values[4]))
        let total = try #require(Double(values[5]))
        #expect(redirectTime > 0 && redirectTime < total, "\(values)")
        #expect(values[6] == "1", "one connection for the whole chain")
        #expect(server.stats.accepted == 1 && server.stats.requests == 3)
        try await server.shutdown()
    }

    @Test func postBecomesGetOn303() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await FetchCLITests.fetch(
            ["-sL", "--cacert", files.caPath, "-d", "a=1", server.url(self.redirect(303, to: "/inspect"))]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let seen = RedirectTests.Inspected(result.standardOutput)
        #expect(seen.requestLine == "GET /inspect")
        #expect(seen.fields["content-type"] == nil && seen.body.isEmpty)
        try await server.shutdown()
    }

    @Test func tooManyRedirectsAndLoopsExit47() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let format = "%{http_code} %{num_redirects} %{url_effective} %{exitcode}"
        let many = try await FetchCLITests.fetch(
            ["-L", "--max-redirs", "2", "--cacert", files.caPath, "-w", format, server.url("/chain/3")]
        )
        #expect(many.status == 47, "\(many.standardError)")
        #expect(many.standardOutput == "302 2 \(server.url("/chain/1")) 47")
        #expect(
            many.standardError.contains("localhost:\(server.port): following a redirect: stopped after 2 redirects"),
            "\(many.standardError)"
        )
        let loop = try await FetchCLITests.fetch(["-sSL", "--cacert", files.caPath, server.url("/loop/a")])
        #expect(loop.status == 47)
        #expect(loop.standardError.contains("redirect loop"), "\(loop.standardError)")
        // -1: no limit.
        let unlimited = try await FetchCLITests.fetch(
            ["-sL", "--max-redirs", "-1", "--cacert", files.caPath, server.url("/chain/60")]
        )
        #expect(unlimited.status == 0 && unlimited.standardOutput == "chain done", "\(unlimited.standardError)")
        #expect(server.stats.accepted == 3, "one connection per run")
        try await server.shutdown()
    }

    @Test func httpsToHTTPNeedsItsOwnFlag() async throws {
        let server = try await environment.tlsServer()
        let plain = try await environment.plainServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let url = server.url(self.redirect(301, to: plain.url("/hello")))
        let refused = try await FetchCLITests.fetch(["-sSL", "--cacert", files.caPath, url])
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("from https to \(plain.url("/hello"))"), "\(refused.standardError)")
        #expect(plain.stats.requests == 0)
        let allowed = try await FetchCLITests.fetch(["-sL", "--redirect-to-http", "--cacert", files.caPath, url])
        #expect(allowed.status == 0 && allowed.standardOutput == "hello", "\(allowed.standardError)")
        #expect(plain.stats.requests == 1)
        try await server.shutdown()
        try await plain.shutdown()
    }

    @Test func jsonRecordCoversTheChain() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let url = server.url("/chain/2")
        let result = try await FetchCLITests.fetch(["-sL", "-o", "/dev/null", "--cacert", files.caPath, "--json", url])
        #expect(result.status == 0, "\(result.standardError)")
        let object = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8))
        let record = try #require(object as? [String: Any])
        #expect(record["url"] as? String == url)
        #expect(record["url_effective"] as? String == server.url("/chain/0"))
        #expect(record["redirects"] as? Int == 2)
        #expect(record["status"] as? Int == 200)
        let phases = try #require(record["phases"] as? [String: Any])
        let redirect = try #require(phases["redirect"] as? Double)
        #expect(redirect > 0)
        // The phases, redirect first, add up to the total.
        let durations = try (["redirect"] + FetchReportTests.phases).map { try #require(phases[$0] as? Double) }
        let total = try #require(record["total"] as? Double)
        #expect(abs(durations.reduce(0, +) - total) < 0.00001, "\(durations) add up to \(total)")
        let milestones = try #require(record["milestones"] as? [String: Any])
        #expect((milestones["queue_end"] as? Double ?? 0) >= redirect, "the final request's, on the chain's clock")
        try await server.shutdown()
    }

    @Test func verboseShowsEveryHop() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let port = server.port
        let other = server.url("/hello", host: "127.0.0.1")
        let result = try await FetchCLITests.fetch(
            [
                "-vL", "-o", "/dev/null", "--cacert", files.caPath, "-H", "Authorization: Bearer secret", "-H",
                "X-Custom: kept", server.url(self.redirect(307, to: "/chain/1?to=x")),
                server.url(self.redirect(302, to: other)),
            ]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let lines = result.standardError.split(separator: "\n").map(String.init)
        func count(_ line: String) -> Int { lines.count { $0 == line } }
        func index(_ line: String, after start: Int = -1) -> Int {
            lines.indices.first { $0 > start && lines[$0] == line } ?? Int.max
        }
        // First transfer: 307 to /chain/1, 302 to /chain/0, 200; one connection.
        let first = index("> GET /redirect/307?to=/chain/1%3Fto%3Dx HTTP/1.1")
        let firstHead = index("< HTTP/1.1 307 Temporary Redirect", after: first)
        let location = index("< Location: /chain/1?to=x", after: firstHead)
        let intact = index("* Connection #1 to host localhost left intact", after: location)
        let issue = index(
            "* Issue another request to this URL: 'https://localhost:\(port)/chain/1?to=x'",
            after: intact
        )
        let reuse = lines.indices.first { $0 > issue && lines[$0].hasPrefix("* Re-using existing connection #1") }
        let second = index("> GET /chain/1?to=x HTTP/1.1", after: issue)
        let third = index("> GET /chain/0?to=x HTTP/1.1", after: second)
        let done = index("< HTTP/1.1 200 OK", after: third)
        #expect(first < firstHead && firstHead < location && location < intact && intact < issue, "\(lines)")
        #expect(reuse.map { $0 < second } == true && second < third && third < done && done != Int.max, "\(lines)")
        // Second transfer: to another origin, where Authorization is not sent.
        let hop = index("* Issue another request to this URL: '\(other)'")
        let next = index("> GET /hello HTTP/1.1", after: hop)
        #expect(hop < next && next != Int.max, "\(lines)")
        #expect(index("> Host: 127.0.0.1:\(port)", after: next) == next + 1)
        #expect(count("> Authorization: Bearer secret") == 4, "three hops of the first transfer, one of the second")
        #expect(count("> X-Custom: kept") == 5)
        #expect(count("* Connected to 127.0.0.1 (127.0.0.1) port \(port) (#2)") == 1)
        #expect(server.stats.accepted == 2)
        try await server.shutdown()
    }

    @Test func verboseShowsARefusedRedirect() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await FetchCLITests.fetch(
            ["-vL", "--max-redirs", "0", "--cacert", files.caPath, server.url("/chain/1"), server.url("/hello")]
        )
        #expect(result.status == 47, "the last failure's code: \(result.standardError)")
        let lines = result.standardError.split(separator: "\n").map(String.init)
        let refused = lines.firstIndex(of: "< HTTP/1.1 302 Found")
        let error = lines.firstIndex { $0.hasPrefix("fetch: (47) ") }
        let reuse = lines.firstIndex { $0.hasPrefix("* Re-using existing connection #1") }
        #expect(refused != nil && error != nil && reuse != nil, "\(lines)")
        #expect(lines.contains("* Connection #1 to host localhost left intact"))
        #expect(server.stats.accepted == 1)
        try await server.shutdown()
    }
}
