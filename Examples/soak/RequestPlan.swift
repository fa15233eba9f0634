import HTTPSAgent
import HTTPTypes
import NIOCore
import Synchronization

/// Which request comes n-th, and sending a batch of them from many tasks.
struct RequestPlan: Sendable {
    let urls: [String]
    let largeEvery: Int
    /// Every this many requests one is cancelled at a random moment; `nil` for none.
    var cancelEvery: Int?

    static let smallSize = 2_200
    static let largeSize = 256 << 10
    static let chunkedSize = 5_000

    /// Request `n`: the origins in turn; every `largeEvery`-th a large body, every 7th a chunked one.
    func request(_ n: Int) -> (url: String, size: Int) {
        let base = self.urls[n % self.urls.count]
        if n % self.largeEvery == 0 { return (base + "/bytes/\(Self.largeSize)", Self.largeSize) }
        if n % 7 == 3 { return (base + "/chunked/\(Self.chunkedSize)", Self.chunkedSize) }
        return (base + "/bytes/\(Self.smallSize)", Self.smallSize)
    }

    /// What a batch came to.
    struct Outcome: Sendable {
        var succeeded = 0
        var reused = 0
        var retried = 0
        /// Cancelled requests, by the phase they were cancelled in.
        var cancelled: [String: Int] = [:]
        /// Requests meant to be cancelled that finished first.
        var finishedBeforeCancel = 0
        /// Failures by error code (or type, for an error that is not an ``AgentError``).
        var errors: [String: Int] = [:]
        /// The first few failures in full.
        var errorSamples: [String] = []

        mutating func add(_ other: Outcome) {
            self.succeeded += other.succeeded
            self.reused += other.reused
            self.retried += other.retried
            self.cancelled.merge(other.cancelled, uniquingKeysWith: +)
            self.finishedBeforeCancel += other.finishedBeforeCancel
            self.errors.merge(other.errors, uniquingKeysWith: +)
            self.errorSamples += other.errorSamples.prefix(max(0, 5 - self.errorSamples.count))
        }

        mutating func fail(_ key: String, _ description: String) {
            self.errors[key, default: 0] += 1
            if self.errorSamples.count < 5 { self.errorSamples.append(description) }
        }
    }

    /// Sends requests 0..<`requests` from `tasks` tasks, each taking the next number when it is free.
    func drive(_ agent: Agent, requests: Int, tasks: Int) async -> Outcome {
        let next = Ticket()
        return await withTaskGroup(of: Outcome.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    var outcome = Outcome()
                    while case let n = next.take(), n < requests {
                        await self.send(n, agent: agent, into: &outcome)
                    }
                    return outcome
                }
            }
            var total = Outcome()
            for await outcome in group { total.add(outcome) }
            return total
        }
    }

    private func send(_ n: Int, agent: Agent, into outcome: inout Outcome) async {
        if let cancelEvery, n % cancelEvery == cancelEvery - 1 {
            await self.sendAndCancel(n, agent: agent, into: &outcome)
            return
        }
        let (url, size) = self.request(n)
        do {
            let response = try await agent.get(url)
            let body = try await response.body.collect(upTo: 1 << 20)
            guard response.status.code == 200, Self.isPayload(body, count: size) else {
                outcome.fail("wrongResponse", "\(url): status \(response.status.code), \(body.readableBytes) bytes")
                return
            }
            outcome.succeeded += 1
            if response.connection.isReused { outcome.reused += 1 }
            if response.timing.attempts > 1 { outcome.retried += 1 }
        } catch let error as AgentError {
            outcome.fail(error.code.description, "\(url): \(error)")
        } catch {
            outcome.fail(String(describing: type(of: error)), "\(url): \(error)")
        }
    }

    /// The test server's payload: the alphabet over and over from the first byte.
    static func isPayload(_ buffer: ByteBuffer, count: Int) -> Bool {
        guard buffer.readableBytes == count else { return false }
        return buffer.withUnsafeReadableBytes { bytes in
            var expected = UInt8(ascii: "a")
            for byte in bytes {
                guard byte == expected else { return false }
                expected = expected == UInt8(ascii: "z") ? UInt8(ascii: "a") : expected + 1
            }
            return true
        }
    }
}

/// Hands out 0, 1, 2, ... to whoever asks, from any task.
final class Ticket: Sendable {
    private let counter = Atomic<Int>(0)

    func take() -> Int {
        self.counter.wrappingAdd(1, ordering: .relaxed).oldValue
    }
}
