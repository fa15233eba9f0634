import Foundation

/// One client's run of one scenario: per-request wall and CPU time, and nginx's counts.
struct RunResult {
    var wallMilliseconds: Double
    var cpuMicroseconds: Double
    /// Distinct connections in nginx's log for the run, its warm-up included.
    var connections: Int
    /// Of those, the ones whose TLS session was resumed.
    var resumed: Int
}

struct ScenarioFailure: Error, CustomStringConvertible {
    var description: String
}

struct Scenario {
    var name: String
    var block: NginxFixture.Block
    var path: String
    var bodySize: Int
    var requests: Int
    var concurrency: Int

    static func all(small: Int, large: Int, handshakes: Int, concurrent: Int, concurrency: Int) -> [Scenario] {
        let smallSize = NginxFixture.smallSize
        return [
            Scenario(
                name: "small keep-alive",
                block: .keepAlive,
                path: "small",
                bodySize: smallSize,
                requests: small,
                concurrency: 1
            ),
            Scenario(
                name: "large keep-alive",
                block: .keepAlive,
                path: "large",
                bodySize: NginxFixture.largeSize,
                requests: large,
                concurrency: 1
            ),
            Scenario(
                name: "small new conn, full handshake",
                block: .fullHandshake,
                path: "small",
                bodySize: smallSize,
                requests: handshakes,
                concurrency: 1
            ),
            Scenario(
                name: "small new conn, resumed TLS 1.3",
                block: .resumeTLS13,
                path: "small",
                bodySize: smallSize,
                requests: handshakes,
                concurrency: 1
            ),
            Scenario(
                name: "small new conn, resumed TLS 1.2",
                block: .resumeTLS12,
                path: "small",
                bodySize: smallSize,
                requests: handshakes,
                concurrency: 1
            ),
            Scenario(
                name: "small \(concurrency) concurrent",
                block: .keepAlive,
                path: "small",
                bodySize: smallSize,
                requests: concurrent,
                concurrency: concurrency
            ),
        ]
    }

    /// A fresh client; a warm-up of one request per task (which opens the connections and, where the
    /// server allows it, gets a session to resume); then the measured requests, `concurrency` tasks
    /// each sending its share one after another.
    func run(client kind: ClientKind, nginx: NginxFixture) async throws -> RunResult {
        let url = nginx.url(self.block, path: self.path)
        nginx.mark()
        let client = try kind.make(caPath: nginx.caPath, maxConnections: self.concurrency == 1 ? 16 : self.concurrency)
        let measured: (wall: Double, cpu: Double)
        do {
            try await self.send(client: client, url: url, perTask: Array(repeating: 1, count: self.concurrency))
            let shares = (0..<self.concurrency).map {
                self.requests / self.concurrency + ($0 < self.requests % self.concurrency ? 1 : 0)
            }
            let cpuBefore = Self.cpuMicroseconds()
            let start = ContinuousClock.now
            try await self.send(client: client, url: url, perTask: shares)
            let wall = ContinuousClock.now - start
            let cpu = Self.cpuMicroseconds() - cpuBefore
            measured = (Double(wall.components.seconds) * 1e3 + Double(wall.components.attoseconds) * 1e-15, cpu)
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()

        let expected = self.requests + self.concurrency
        let entries = nginx.entriesSinceMark(expecting: expected)
        guard entries.count == expected else {
            throw ScenarioFailure(description: "nginx logged \(entries.count) requests, expected \(expected)")
        }
        if let bad = entries.first(where: { $0.status != 200 || $0.bodyBytes != self.bodySize }) {
            throw ScenarioFailure(description: "nginx logged status \(bad.status) with \(bad.bodyBytes) bytes")
        }
        let connections = Set(entries.map(\.connection))
        let resumed = Set(entries.filter(\.sessionReused).map(\.connection))
        return RunResult(
            wallMilliseconds: measured.wall / Double(self.requests),
            cpuMicroseconds: measured.cpu / Double(self.requests),
            connections: connections.count,
            resumed: resumed.count
        )
    }

    private func send(client: any BenchClient, url: String, perTask: [Int]) async throws {
        let bodySize = self.bodySize
        try await withThrowingTaskGroup(of: Void.self) { group in
            for count in perTask {
                group.addTask {
                    for _ in 0..<count {
                        let received = try await client.get(url)
                        guard received == bodySize else {
                            throw ScenarioFailure(description: "GET \(url): \(received) bytes, expected \(bodySize)")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// User plus system CPU time of the whole process so far.
    static func cpuMicroseconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let user = Double(usage.ru_utime.tv_sec) * 1e6 + Double(usage.ru_utime.tv_usec)
        let system = Double(usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_stime.tv_usec)
        return user + system
    }
}
