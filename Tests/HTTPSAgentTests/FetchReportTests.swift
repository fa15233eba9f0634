import Foundation
import HTTPSAgent
import HTTPSAgentTestSupport
import NIOCore
import Testing

@testable import fetch

/// `fetch --json`, `fetch --timing` and the phase table of `fetch --demo`, run as a subprocess against
/// local TLS servers and checked against the servers' own counts.
@Suite("fetch --json and --timing")
struct FetchReportTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// The milestone keys, in the order a GET reaches them.
    static let milestones = [
        "queue_end", "dns_end", "connect_end", "tls_end", "request_start", "request_end", "first_byte",
        "response_head", "end",
    ]
    static let phases = ["queue", "dns", "connect", "tls", "request_write", "ttfb", "transfer"]

    @Test func jsonPrintsOneParsableRecordPerRequest() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let refusedPort = try await unusedLoopbackPort()
        let urls = [server.url("/bytes/100"), server.url("/hello"), "https://127.0.0.1:\(refusedPort)/"]
        let result = try await FetchCLITests.fetch(
            ["-s", "-o", "/dev/null", "--cacert", files.caPath, "--json"] + urls
        )
        try await server.shutdown()
        #expect(result.status == 7, "\(result.standardError)")

        let lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false)
        try #require(lines.count == 4 && lines[3].isEmpty, "three lines, each ended: \(result.standardOutput)")
        let records = try lines.prefix(3).map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            return try #require(object as? [String: Any], "\(line)")
        }
        for (record, url) in zip(records, urls) {
            #expect(record["url"] as? String == url)
            #expect(record["method"] as? String == "GET")
            try Self.expectConsistentTimes(record)
        }

        // The first request opened the connection the second reused; the server saw one connection.
        #expect(server.stats.accepted == 1)
        let opened = records.filter { $0["reused"] as? Bool == false && $0["connection"] is Int }
        #expect(opened.count == server.stats.accepted, "one record per connection the server accepted is not reused")
        let (first, second, refused) = (records[0], records[1], records[2])
        #expect(first["status"] as? Int == 200)
        #expect(first["error"] is NSNull)
        #expect(first["reused"] as? Bool == false)
        #expect(first["tls_version"] as? String == "TLSv1.3")
        #expect(first["remote_ip"] as? String == "127.0.0.1")
        #expect(first["remote_port"] as? Int == server.port)
        #expect((first["local_port"] as? Int ?? 0) > 0)
        #expect(first["idle_before_reuse"] is NSNull)
        #expect(first["attempts"] as? Int == 1)
        let firstBytes = try #require(first["bytes"] as? [String: Any])
        #expect(firstBytes["body_received"] as? Int == 100)
        #expect((firstBytes["wire_received"] as? Int ?? 0) > 100, "TLS records add to the body")
        #expect((firstBytes["wire_sent"] as? Int ?? 0) > 0)
        let firstMilestones = try #require(first["milestones"] as? [String: Any])
        #expect(Self.milestones.allSatisfy { firstMilestones[$0] is Double }, "a new connection reaches them all")

        #expect(second["status"] as? Int == 200)
        #expect(second["reused"] as? Bool == true)
        #expect(second["connection"] as? Int != nil && second["connection"] as? Int == first["connection"] as? Int)
        #expect(second["idle_before_reuse"] is Double)
        let secondMilestones = try #require(second["milestones"] as? [String: Any])
        #expect(["dns_end", "connect_end", "tls_end"].allSatisfy { secondMilestones[$0] is NSNull })
        let secondPhases = try #require(second["phases"] as? [String: Any])
        #expect(["dns", "connect", "tls"].allSatisfy { secondPhases[$0] as? Double == 0 })

        #expect(refused["status"] is NSNull)
        #expect(refused["reused"] as? Bool == false)
        let error = try #require(refused["error"] as? [String: Any], "\(refused)")
        #expect(error["code"] as? String == "connectFailed")
        #expect(error["phase"] as? String == "connect")
        #expect(error["exit_code"] as? Int == 7)
        let message = try #require(error["message"] as? String)
        #expect(message.contains("127.0.0.1:\(refusedPort)") && message.contains("connection refused"), "\(message)")
        let refusedMilestones = try #require(refused["milestones"] as? [String: Any])
        #expect(refusedMilestones["connect_end"] is NSNull && refusedMilestones["end"] is Double)
    }

    /// Milestones go up in order; phases are non-negative and add up to the total.
    static func expectConsistentTimes(_ record: [String: Any]) throws {
        let milestones = try #require(record["milestones"] as? [String: Any])
        let reached = Self.milestones.compactMap { milestones[$0] as? Double }
        #expect(reached == reached.sorted(), "milestones in order: \(milestones)")
        #expect(reached.allSatisfy { $0 >= 0 })
        let phases = try #require(record["phases"] as? [String: Any])
        let durations = try Self.phases.map { try #require(phases[$0] as? Double, "\($0) in \(phases)") }
        let total = try #require(record["total"] as? Double)
        #expect(durations.allSatisfy { $0 >= 0 })
        // Each value is rounded to the microsecond on its own.
        #expect(abs(durations.reduce(0, +) - total) < 0.00001, "\(durations) add up to \(total)")
        #expect(abs(total - (reached.last ?? -1)) < 0.000002, "total is the last milestone, the end")
    }

    @Test func timingPrintsThePhaseTableOnStandardError() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        // Two origins on one server: localhost twice (the second reuses), then 127.0.0.1 (a new pool).
        let urls = [server.url("/delay/50"), server.url("/delay/50"), server.url("/delay/50", host: "127.0.0.1")]
        let result = try await FetchCLITests.fetch(
            ["-s", "-o", "/dev/null", "--cacert", files.caPath, "--timing"] + urls
        )
        try await server.shutdown()
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.isEmpty, "the table goes to standard error")

        let lines = result.standardError.split(separator: "\n").map(String.init)
        func cells(_ name: String) throws -> [String] {
            let line = try #require(lines.first { $0.hasPrefix(name + "  ") }, "no \(name) row in \(lines)")
            return Array(line.dropFirst(name.count).split(separator: " ").map(String.init))
        }
        #expect(try cells("phase") == ["n", "min", "median", "p99", "max"])
        let stats = server.stats
        #expect(stats.accepted == 2 && stats.requests == 3)
        for (row, count) in [
            ("queue", 3), ("dns", stats.accepted), ("connect", stats.accepted), ("tls", stats.accepted),
            ("request write", 3), ("ttfb", 3), ("transfer", 3), ("total", 3),
        ] {
            let values = try cells(row)
            try #require(values.count == 5, "\(row): \(values)")
            #expect(Int(values[0]) == count, "\(row) counts \(count): \(values)")
            let numbers = values.dropFirst().compactMap(Double.init)
            #expect(numbers.count == 4 && numbers == numbers.sorted(), "\(row): min <= median <= p99 <= max")
        }
        // The server waits 50 ms after the request arrives before it answers, so each request's first
        // byte comes at least 50 ms after the request started to be written, i.e. request write + ttfb
        // >= 50. ttfb alone can be a little shorter: the end of the write is stamped when the write
        // completes on the client, which can be after the server has the request. Displayed values are
        // rounded to 0.1 ms, hence the 0.1 of slack.
        let ttfbMin = try #require(Double(try cells("ttfb")[1]))
        let requestWriteMax = try #require(Double(try cells("request write")[4]))
        let totalMin = try #require(Double(try cells("total")[1]))
        #expect(ttfbMin + requestWriteMax >= 50 - 0.1, "\(result.standardError)")
        #expect(totalMin >= 50, "\(result.standardError)")

        #expect(lines.contains("requests        3 (3 ok, 0 failed)"), "\(lines)")
        #expect(lines.contains("connections     \(stats.accepted) opened, 1 request on a reused one"), "\(lines)")
        #expect(
            lines.contains("TLS handshakes  \(stats.fullHandshakes) full, \(stats.resumedHandshakes) resumed"),
            "\(lines)"
        )
        // Every line of the table is as wide as its header: the columns line up.
        let header = try #require(lines.first { $0.hasPrefix("phase") })
        let table = lines.drop { !$0.hasPrefix("phase") }.prefix(9)
        #expect(table.allSatisfy { $0.count == header.count }, "\(table)")
    }

    @Test func timingCountsAFailureAndItsFinishedPhases() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let refusedPort = try await unusedLoopbackPort()
        let result = try await FetchCLITests.fetch(
            ["-s", "--cacert", files.caPath, "--timing", "-o", "/dev/null", server.url("/hello")]
                + ["https://127.0.0.1:\(refusedPort)/"]
        )
        try await server.shutdown()
        #expect(result.status == 7)
        let lines = result.standardError.split(separator: "\n").map(String.init)
        #expect(lines.contains("requests        2 (1 ok, 1 failed)"), "\(lines)")
        #expect(lines.contains("connections     1 opened, 0 requests on a reused one"), "\(lines)")
        // The refused request finished queueing but not connecting, and has no total.
        #expect(lines.contains { $0.hasPrefix("queue ") && $0.split(separator: " ")[1] == "2" }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("connect ") && $0.split(separator: " ")[1] == "1" }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("total ") && $0.split(separator: " ")[1] == "1" }, "\(lines)")
    }

    @Test func demoEndsWithThePhaseTable() async throws {
        let result = try await FetchCLITests.fetch(["--demo"])
        #expect(result.status == 0, "\(result.standardError)")
        let output = result.standardOutput
        #expect(output.contains("Phases of all 15 requests"), "\(output)")
        for row in ["phase", "queue", "dns", "connect", "tls", "request write", "ttfb", "transfer", "total"] {
            #expect(output.contains("\n  \(row)  "), "row \(row)")
        }
        // The client's records agree with the server's counts printed above them.
        #expect(output.contains("connections accepted:   6"))
        #expect(output.contains("\n  connections     6 opened, 9 requests on a reused one\n"), "\(output)")
        #expect(output.contains("\n  TLS handshakes  2 full, 4 resumed\n"), "\(output)")
        #expect(output.contains("\n  requests        15 (15 ok, 0 failed)\n"))
        #expect(!output.contains("\u{1B}["))
    }

    // MARK: - The renderers alone

    @Test func percentilesAreNearestRank() {
        let samples = (1...10).map { Duration.milliseconds($0) }
        #expect(TimingSummary.percentile(50, of: samples) == .milliseconds(5))
        #expect(TimingSummary.percentile(99, of: samples) == .milliseconds(10))
        #expect(TimingSummary.percentile(10, of: samples) == .milliseconds(1))
        let many = (1...200).map { Duration.milliseconds($0) }
        #expect(TimingSummary.percentile(99, of: many) == .milliseconds(198))
        #expect(TimingSummary.percentile(50, of: many) == .milliseconds(100))
        #expect(TimingSummary.percentile(99, of: [.seconds(3)]) == .seconds(3))
        #expect(TimingSummary.percentile(50, of: []) == nil)
    }

    @Test func summaryCountsNewConnectionsOnlyForDNSConnectAndTLS() {
        var new = RequestTiming(startedAt: .now())
        (new.queueEnd, new.dnsEnd, new.connectEnd, new.tlsEnd) = (
            .zero, .milliseconds(1), .milliseconds(3), .milliseconds(7)
        )
        (new.requestStart, new.requestEnd, new.firstByte, new.end) =
            (.milliseconds(7), .milliseconds(8), .milliseconds(20), .milliseconds(21))
        new.resumedSession = true
        var reused = RequestTiming(startedAt: .now())
        reused.reusedConnection = true
        (reused.queueEnd, reused.requestStart, reused.requestEnd, reused.firstByte, reused.end) =
            (.milliseconds(1), .milliseconds(1), .milliseconds(2), .milliseconds(12), .milliseconds(14))
        let summary = TimingSummary([
            WriteOut.Transfer(url: "a", timing: new, sizeDownload: 0),
            WriteOut.Transfer(url: "b", timing: reused, sizeDownload: 0),
            WriteOut.Transfer(url: "c", sizeDownload: 0),  // rejected before it started: no timing
        ])
        let counts = Dictionary(uniqueKeysWithValues: summary.rows.map { ($0.name, $0.samples.count) })
        #expect(
            counts == [
                "queue": 2, "dns": 1, "connect": 1, "tls": 1, "request write": 2, "ttfb": 2, "transfer": 2, "total": 2,
            ]
        )
        #expect(summary.rows.first { $0.name == "tls" }?.samples == [.milliseconds(4)])
        #expect(summary.rows.first { $0.name == "ttfb" }?.samples == [.milliseconds(10), .milliseconds(12)])
        let lines = summary.lines()
        #expect(lines[0] == "phase          n   min  median   p99   max")
        #expect(lines[1] == "queue          2   0.0     0.0   1.0   1.0")
        #expect(lines[3] == "connect        1   2.0     2.0   2.0   2.0")
        #expect(lines[8] == "total          2  14.0    14.0  21.0  21.0")
        #expect(lines.contains("requests        3 (2 ok, 1 failed)"))
        #expect(lines.contains("connections     1 opened, 1 request on a reused one"))
        #expect(lines.contains("TLS handshakes  0 full, 1 resumed"))
    }

    @Test func jsonStringsAndNumbersAreEscapedAndExact() throws {
        let tricky = "quote \" back\\slash\nnew line\ttab \u{01}\u{1F} caf\u{E9} \u{1F600} /"
        let text = JSONValue.object([("s", .string(tricky)), ("k\"ey", .null)]).text
        #expect(text == #"{"s":"quote \" back\\slash\nnew line\ttab \u0001\u001f café 😀 /","k\"ey":null}"#)
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(parsed["s"] as? String == tricky)
        #expect(JSONValue.decimalSeconds(.milliseconds(12)) == "0.012000")
        #expect(JSONValue.decimalSeconds(.nanoseconds(1_500)) == "0.000002")
        #expect(JSONValue.decimalSeconds(.seconds(90) + .microseconds(7)) == "90.000007")
        #expect(JSONValue.decimalSeconds(.microseconds(-1_500)) == "-0.001500")
        #expect(JSONValue.decimalSeconds(.zero) == "0.000000")
    }
}
