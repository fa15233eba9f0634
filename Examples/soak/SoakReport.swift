/// The outcome of a soak run and the checks it must pass.
struct SoakReport: Codable {
    var requests: Int
    var tasks: Int
    var seconds: Double
    var succeeded: Int
    var reused: Int
    /// Requests that needed a second attempt (a reused connection closed by the server under them).
    var retried: Int
    /// Requests cancelled on purpose, by the phase they were in.
    var cancelled: [String: Int]
    /// Requests meant to be cancelled that finished first.
    var finishedBeforeCancel: Int
    var errors: [String: Int]
    var errorSamples: [String]
    var warmUpErrors: Int
    /// Active, connecting and waiting over every origin, read before the shutdown.
    var activeAtEnd: Int
    /// Free connections left in the pool before the shutdown.
    var freeAtEnd: Int
    /// Per server, in the order steady, random 0–20 ms idle close, 5 requests per connection, random
    /// 0–200 ms idle close.
    var connectionsAccepted: [Int]
    var requestsServed: [Int]
    var descriptorsBefore: Int
    var descriptorsAfter: Int
    /// Descriptors open after the run that were not before (number and target).
    var newDescriptors: [String]
    var serversIdleAtEnd: Bool
    /// Resident bytes after the warm-up, and after the run.
    var memoryBefore: Int
    var memoryAfter: Int
    var memoryAllowance: Int
    var shutdownUnderLoad: RequestPlan.ShutdownOutcome
    var failures: [String] = []

    mutating func evaluate() {
        var failures: [String] = []
        let errorCount = self.errors.values.reduce(0, +)
        if errorCount > 0 || self.warmUpErrors > 0 {
            failures.append("\(errorCount) requests failed (\(self.warmUpErrors) in the warm-up): \(self.errors)")
        }
        let cancelled = self.cancelled.values.reduce(0, +)
        if self.succeeded + cancelled + self.finishedBeforeCancel != self.requests {
            failures.append(
                "\(self.succeeded) succeeded and \(cancelled + self.finishedBeforeCancel) were cancelled or meant to be, "
                    + "of \(self.requests)"
            )
        }
        let endings = Set(self.shutdownUnderLoad.endings.keys)
        if !endings.isSubset(of: ["ok", "shutdown"]) {
            failures.append("requests in flight at the shutdown ended as \(self.shutdownUnderLoad.endings)")
        }
        if self.shutdownUnderLoad.shutdownSeconds > 5 {
            failures.append("shutdown() under load took \(self.shutdownUnderLoad.shutdownSeconds) s")
        }
        if self.activeAtEnd != 0 {
            failures.append("\(self.activeAtEnd) connections or waiters still active after the last request")
        }
        if !self.serversIdleAtEnd {
            failures.append("connections still open on the servers 10 s after the Agent shut down")
        }
        if self.descriptorsAfter != self.descriptorsBefore || !self.newDescriptors.isEmpty {
            failures.append(
                "file descriptors: \(self.descriptorsBefore) before, \(self.descriptorsAfter) after; new: \(self.newDescriptors)"
            )
        }
        if self.memoryAfter - self.memoryBefore > self.memoryAllowance {
            failures.append(
                "resident memory grew by \(Self.mebibytes(self.memoryAfter - self.memoryBefore)) MiB, more than "
                    + "\(Self.mebibytes(self.memoryAllowance)) MiB"
            )
        }
        self.failures = failures
    }

    var text: String {
        var lines = [
            "soak: \(self.requests) requests from \(self.tasks) tasks over 4 origins in "
                + "\(Self.rounded(self.seconds)) s (\(Int(Double(self.requests) / max(self.seconds, 1e-9))) per second)",
            "  succeeded \(self.succeeded), reused a connection \(self.reused), retried \(self.retried), "
                + "failed \(self.errors.values.reduce(0, +))",
            "  cancelled on purpose \(self.cancelled.values.reduce(0, +)) (by phase: \(self.cancelled)), "
                + "finished before their cancellation \(self.finishedBeforeCancel)",
            "  shutdown() with \(self.shutdownUnderLoad.requests) requests in flight took "
                + "\(Self.rounded(self.shutdownUnderLoad.shutdownSeconds * 1000)) ms; they ended as "
                + "\(self.shutdownUnderLoad.endings)",
            "  servers: accepted \(self.connectionsAccepted) connections, served \(self.requestsServed) requests",
            "  active at the end: \(self.activeAtEnd), free \(self.freeAtEnd); file descriptors \(self.descriptorsBefore) before, "
                + "\(self.descriptorsAfter) after",
            "  resident memory \(Self.mebibytes(self.memoryBefore)) MiB after the warm-up, "
                + "\(Self.mebibytes(self.memoryAfter)) MiB after the run",
        ]
        lines += self.errorSamples.map { "  error: \($0)" }
        lines += self.failures.isEmpty ? ["  every check held"] : self.failures.map { "  FAILED: \($0)" }
        return lines.joined(separator: "\n")
    }

    private static func mebibytes(_ bytes: Int) -> String { Self.rounded(Double(bytes) / 1_048_576) }

    private static func rounded(_ value: Double) -> String {
        String(Double((value * 10).rounded()) / 10)
    }
}
