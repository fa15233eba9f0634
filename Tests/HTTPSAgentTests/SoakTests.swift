import Foundation
import Testing

/// The short soak that CI runs: the `soak` example (Examples/soak) in a process of its own, so that its
/// file descriptor and memory counts are its own. The long run is `swift run -c release soak`
/// (100,000 requests by default; see the Reliability article).
@Suite("Soak")
struct SoakTests {
    @Test func threeThousandRequestsFromSixtyFourTasksLeaveNothingBehind() async throws {
        let result = try await FetchCLITests.run("soak", ["--requests", "3000", "--tasks", "64", "--json"])
        let line = try #require(result.standardOutput.split(separator: "\n").last, "\(result.standardError)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
            "\(result.standardOutput)"
        )
        #expect(result.status == 0, "\(report["failures"] ?? result.standardError)")
        #expect(report["succeeded"] as? Int == 3000)
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
        let expected = 3000 + 2 * 64 * 4
        #expect(total >= expected)
    }
}
