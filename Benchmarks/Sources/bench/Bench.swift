import ArgumentParser
import Foundation

/// `swift run -c release --package-path Benchmarks bench`: every scenario, every client, in
/// interleaved rounds, then one table of medians.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "HTTPSAgent, AsyncHTTPClient and URLSession side by side against nginx on 127.0.0.1."
    )

    @Flag(help: "A smoke run: a tenth of every request count (at least 16), 2 rounds.")
    var quick = false

    @Option(help: "Rounds; each runs every scenario with every client, the order of the clients rotating.")
    var rounds: Int?

    @Option(help: "Requests in the small keep-alive scenario.")
    var smallRequests = 5_000

    @Option(help: "Requests in the large keep-alive scenario.")
    var largeRequests = 200

    @Option(help: "Requests in each new-connection scenario (full handshake, resumed TLS 1.3 and 1.2).")
    var handshakeRequests = 500

    @Option(help: "Requests in the concurrent scenario, spread over --concurrency tasks.")
    var concurrentRequests = 10_000

    @Option(help: "Tasks in the concurrent scenario, and the connections each client may open per host.")
    var concurrency = 16

    @Option(
        name: .customLong("client"),
        help: "Only this client (repeatable): \(ClientKind.allCases.map(\.rawValue).joined(separator: ", ")).",
        transform: { name in
            guard let kind = ClientKind.allCases.first(where: { $0.rawValue.lowercased() == name.lowercased() }) else {
                throw ValidationError("unknown client \(name)")
            }
            return kind
        }
    )
    var clients: [ClientKind] = []

    @Option(name: .customLong("scenario"), help: "Only scenarios whose name contains this text (repeatable).")
    var scenarioFilters: [String] = []

    @Flag(help: "Do not pin the client to CPU 0 and nginx to CPU 1.")
    var noPin = false

    func run() async throws {
        let rounds = self.rounds ?? (self.quick ? 2 : 5)
        var clients = self.clients.isEmpty ? ClientKind.allCases : self.clients
        if clients.contains(.urlSession) {
            URLSessionTrust.reexecInPrivateMountNamespace()
        }
        let quick = self.quick
        let scale: (Int) -> Int = { quick ? max($0 / 10, 16) : $0 }
        let pin = !self.noPin && ProcessInfo.processInfo.activeProcessorCount >= 2
        if pin {
            try Self.pinThisProcess(toCPU: 0)
        }
        let all = Scenario.all(
            small: scale(self.smallRequests),
            large: scale(self.largeRequests),
            handshakes: scale(self.handshakeRequests),
            concurrent: scale(self.concurrentRequests),
            concurrency: self.concurrency
        )
        let filters = self.scenarioFilters
        let scenarios = all.filter { scenario in
            filters.isEmpty || filters.contains { scenario.name.contains($0) }
        }

        let nginx = try NginxFixture(cpu: pin ? 1 : nil)
        defer { nginx.stop() }
        var notes: [String] = []
        if clients.contains(.urlSession),
            let reason = URLSessionTrust.install(caPath: nginx.caPath, directory: nginx.directory)
        {
            notes.append("URLSession not run: \(reason).")
            clients.removeAll { $0 == .urlSession }
        }

        progress("nginx on 127.0.0.1 \(pin ? "pinned to CPU 1, this process to CPU 0" : "unpinned"); \(rounds) rounds")
        var results: [Key: [RunResult]] = [:]
        var failures: [String] = []
        for round in 0..<rounds {
            for scenario in scenarios {
                let offset = round % clients.count
                for client in clients[offset...] + clients[..<offset] {
                    let key = Key(scenario: scenario.name, client: client)
                    do {
                        let result = try await scenario.run(client: client, nginx: nginx)
                        results[key, default: []].append(result)
                        progress(
                            "round \(round + 1) \(scenario.name) \(client.rawValue): "
                                + String(
                                    format: "%.3f ms, %.0f µs CPU",
                                    result.wallMilliseconds,
                                    result.cpuMicroseconds
                                )
                                + " per request, \(result.connections) connections, \(result.resumed) resumed"
                        )
                    } catch {
                        let message = "round \(round + 1) \(scenario.name) \(client.rawValue): \(error)"
                        progress(message)
                        failures.append(message)
                    }
                }
            }
        }
        print(Report.table(scenarios: scenarios, clients: clients, results: results))
        for note in notes {
            print(note)
        }
        if !failures.isEmpty {
            print("\n\(failures.count) runs failed:")
            for failure in failures {
                print("- \(failure)")
            }
        }
    }

    /// Pins every thread of this process, and so every thread it starts later, to one CPU.
    private static func pinThisProcess(toCPU cpu: Int) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        process.arguments = ["-a", "-p", "-c", String(cpu), String(getpid())]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("taskset could not pin this process to CPU \(cpu); use --no-pin")
        }
    }
}

/// A progress line on standard error, unbuffered, so that standard output is only the table and notes.
func progress(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

struct Key: Hashable {
    var scenario: String
    var client: ClientKind
}
