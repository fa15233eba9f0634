import Foundation
import HTTPSAgentFuzzing
import Testing

/// Replays the response-path fuzz harness's inputs (`Tests/Fuzz`, see `.ci/fuzz`) in the normal suite:
/// every input the fuzzer found a problem with must now run clean, and each seed must do what it was
/// written to do, which shows the harness really drives the response path.
@Suite("Response-path fuzz regressions")
struct ResponseFuzzRegressionTests {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz")

    static func names(in folder: String) -> [String] {
        let path = Self.fuzzDirectory.appendingPathComponent(folder).path
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted()
    }

    static func contents(_ folder: String, _ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: Self.fuzzDirectory.appendingPathComponent(folder).appendingPathComponent(name)))
    }

    /// What the first request of each regression input ends with: the fuzzer's findings fail cleanly.
    static let regressionErrors: [String: String] = [
        // A status code below 100: framed as a 1xx here and as a 200 by the parser.
        "found-status-020-then-pipelined": "malformedResponse",
        "status-020-until-close": "malformedResponse",
        "status-099-with-length": "malformedResponse",
    ]

    @Test func everyRegressionInputHasAnExpectation() {
        #expect(Self.names(in: "regressions") == Self.regressionErrors.keys.sorted())
    }

    @Test(arguments: Self.names(in: "regressions"))
    func regressionInputRunsClean(name: String) throws {
        let report = ResponsePathFuzzer.run(try Self.contents("regressions", name))
        #expect(report.violations == [])
        #expect(report.exchanges.first?.errorCode == Self.regressionErrors[name])
        #expect(report.closed == 1)
    }

    @Test func theCorpusIsTheSeeds() throws {
        #expect(Self.names(in: "corpus") == FuzzSeeds.all.map(\.name).sorted())
        for seed in FuzzSeeds.all {
            #expect(
                try Self.contents("corpus", seed.name) == seed.input,
                "\(seed.name): run `swift run fuzz-response --write-seeds Tests/Fuzz/corpus`"
            )
        }
    }

    /// A seed's expected outcome: the first response's status, body and error, and how often the
    /// connection went back to the pool.
    struct Expected: Sendable {
        var status: Int?
        var body: String
        var error: String?
        var released: Int
        var decoded: String? = nil
    }

    /// The text the compressed seeds carry.
    static func compressed(_ encoding: String) -> String {
        String(repeating: "compressed \(encoding) body; ", count: 20)
    }

    static let seedOutcomes: [String: Expected] = [
        "content-length": Expected(status: 200, body: "hello world", released: 1),
        "chunked": Expected(status: 200, body: "hello world", released: 1),
        "gzip": Expected(status: 200, body: compressed("gzip"), released: 1, decoded: "gzip"),
        "deflate-zlib-chunked": Expected(status: 200, body: compressed("deflate"), released: 1, decoded: "deflate"),
        "deflate-raw": Expected(status: 200, body: compressed("deflate"), released: 1, decoded: "deflate"),
        "gzip-two-members-tight-limits": Expected(
            status: 200,
            body: "first member, second member",
            released: 1,
            decoded: "gzip"
        ),
        "informational": Expected(status: 200, body: "ok", released: 1),
        "close-delimited": Expected(status: 200, body: "until the end", released: 0),
        "keep-alive-three": Expected(status: 200, body: "one", released: 3),
        "head": Expected(status: 200, body: "", released: 1),
        "not-modified-http10": Expected(status: 304, body: "", released: 0),
        "take-one-then-drop": Expected(status: 200, body: "012", released: 0),
        "cancel-after-head": Expected(status: 200, body: "some", error: "cancelled", released: 0),
        "reset-mid-body": Expected(status: 200, body: "too short", error: "responseBodyTruncated", released: 0),
        "deadline-mid-head": Expected(status: nil, body: "", error: "requestTimeout", released: 0),
        "switching-protocols": Expected(status: 101, body: "", released: 0),
    ]

    @Test(arguments: FuzzSeeds.all.map(\.name))
    func seedDoesWhatItWasWrittenFor(name: String) throws {
        let seed = try #require(FuzzSeeds.all.first { $0.name == name })
        let expected = try #require(Self.seedOutcomes[name])
        let report = ResponsePathFuzzer.run(seed.input)
        #expect(report.violations == [])
        let first = try #require(report.exchanges.first)
        #expect(first.status == expected.status)
        #expect(String(decoding: first.body, as: UTF8.self) == expected.body)
        #expect(first.errorCode == expected.error)
        #expect(first.decodedEncoding == expected.decoded)
        #expect(report.released == expected.released)
        #expect(report.closed == 1)
    }

    @Test func responsesOnOneConnectionFollowEachOther() throws {
        let seed = try #require(FuzzSeeds.all.first { $0.name == "keep-alive-three" })
        let report = ResponsePathFuzzer.run(seed.input)
        #expect(report.exchanges.map(\.status) == [200, 204, 200])
        #expect(report.exchanges.map { String(decoding: $0.body, as: UTF8.self) } == ["one", "", "three"])
        #expect(report.exchanges.allSatisfy { $0.errorCode == nil && $0.finished })
    }
}
