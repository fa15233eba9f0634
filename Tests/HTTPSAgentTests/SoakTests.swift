import Foundation
import Testing

/// The short soak that CI runs: the `soak` example (Examples/soak) in a process of its own, so that its
/// file descriptor and memory counts are its own, with a cancellation storm and a shutdown under load. The long run is `swift run -c release soak`
/// (100,000 requests by default; see the Reliability article).
@Suite("Soak")
struct SoakTests {
    @Test func threeThousandRequestsFromSixtyFourTasksLeaveNothingBehind() async throws {
        // A third of them cancelled at a random moment, then an Agent shut down under load.
        let result = try await FetchCLITests.run(
            "soak",
            ["--requests", "3000", "--tasks", "64", "--cancel-every", "3", "--json"],
            lowPriority: true
        )
        let line = try #require(result.standardOutput.split(separator: "\n").last, "\(result.standardError)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            "\(result.standardOutput)"
        )
        #expect(result.status == 0, "\(report["failures"] ?? result.standardError)")
        let cancelled = try #require(report["cancelled"] as? [String: Int])
        let finishedFirst = try #require(report["finishedBeforeCancel"] as? Int)
        let succeeded = try #require(report["succeeded"] as? Int)
        #expect(succeeded == 2000)
        #expect(cancelled.values.reduce(0, +) + finishedFirst == 1000)
        // Cancellations landed while queued for a connection and while the response came.
        #expect(cancelled["waiting for a connection", default: 0] > 0, "\(cancelled)")
        #expect(
            cancelled["reading the response head", default: 0] + cancelled["reading the response body", default: 0] > 0,
            "\(cancelled)"
        )
        // shutdown() with 64 requests in flight: each ended as shut down (or had finished), and it returned.
        let shutdown = try #require(report["shutdownUnderLoad"] as? [String: Any])
        let endings = try #require(shutdown["endings"] as? [String: Int])
        #expect(Set(endings.keys).isSubset(of: ["ok", "shutdown"]), "\(endings)")
        #expect(endings.values.reduce(0, +) == 64)
        #expect((report["errors"] as? [String: Int])?.isEmpty == true, "\(report["errorSamples"] ?? "")")
        #expect(report["activeAtEnd"] as? Int == 0)
        #expect(report["descriptorsBefore"] as? Int == report["descriptorsAfter"] as? Int)
        #expect((report["newDescriptors"] as? [String])?.isEmpty == true)
        #expect(report["serversIdleAtEnd"] as? Bool == true)
        // The faults happened: servers closed connections under the Agent, and it sent requests again.
        let accepted = try #require(report["connectionsAccepted"] as? [Int])
        #expect(accepted.count == 4)
        #expect(accepted[1] > accepted[0], "the jittery server made the Agent reconnect more")
        #expect((report["retried"] as? Int ?? 0) > 0)
        // Every request reached a server once its retries are counted: warm-up and run, both Agents.
        let served = try #require(report["requestsServed"] as? [Int])
        let total = served.reduce(0, +)
        let expected = 2000 + 2 * 64 * 4
        #expect(total >= expected)
    }
}
