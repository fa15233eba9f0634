import ArgumentParser
import Foundation
import HTTPSAgent
import HTTPSAgentTestSupport

/// `swift run -c release soak`: many requests from many tasks through one Agent to four local HTTPS
/// servers, some of which close idle connections at random, then checks that nothing failed and
/// nothing was left behind: no error, no active connection or waiter, the file descriptors the
/// process had before, and resident memory within an allowance of where it was after a warm-up.
///
/// Exit status 0 when every check holds, 1 otherwise. `--json` prints the report as one JSON object.
@main
struct Soak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Load, faults and leak checks for the Agent against four local HTTPS servers."
    )

    @Option(help: "Requests to send after the warm-up.")
    var requests = 100_000

    @Option(help: "Concurrent tasks sending them.")
    var tasks = 64

    @Option(help: "maxSocketsPerHost of the Agent (maxFreeSocketsPerHost is half of it).")
    var maxSockets = 8

    @Option(help: "Every Nth request fetches a large body (256 KiB); the rest are small or chunked.")
    var largeEvery = 25

    @Option(help: "Cancel every Nth request at a random moment (0–3 ms after it starts); 0 for none.")
    var cancelEvery = 10

    @Option(help: "How much resident memory may grow over the run, in MiB, before it counts as a leak.")
    var memoryAllowance = 64

    @Flag(help: "Print the report as one JSON object on standard output.")
    var json = false

    func validate() throws {
        guard self.requests >= 0, self.tasks > 0, self.maxSockets > 1, self.largeEvery > 0 else {
            throw ValidationError(
                "--requests must not be negative; --tasks, --max-sockets (> 1), --large-every positive"
            )
        }
    }

    func run() async throws {
        let certificates = try TestCertificates()
        let servers = try await SoakServers.start(certificates)
        var configuration = Agent.Configuration()
        configuration.tls = TLSConfiguration(trustRoots: .pem(certificates.caPEM))
        configuration.maxSocketsPerHost = self.maxSockets
        configuration.maxFreeSocketsPerHost = self.maxSockets / 2
        configuration.idleTimeout = .seconds(2)
        var plan = RequestPlan(urls: servers.baseURLs, largeEvery: self.largeEvery)

        // A first Agent warms up what stays for the life of the process (event-loop and dispatch timers,
        // the allocator's arenas), and is shut down before the descriptors are counted.
        let warmUpAgent = Agent(configuration: configuration)
        let warmUp = await plan.drive(warmUpAgent, requests: self.tasks * 4, tasks: self.tasks)
        await warmUpAgent.shutdown()
        _ = await servers.waitUntilNoneOpen()
        // Dispatch opens a timer descriptor per clock the first time a sleep uses that clock, and keeps
        // it for the life of the process: use each clock once before counting.
        try await Task.sleep(for: .milliseconds(1))
        try await SuspendingClock().sleep(for: .milliseconds(1))
        try await Task.sleep(nanoseconds: 1_000_000)
        let descriptorsBefore = ProcessProbe.descriptorTargets()

        let agent = Agent(configuration: configuration)
        _ = await plan.drive(agent, requests: self.tasks * 4, tasks: self.tasks)
        let memoryBefore = ProcessProbe.residentBytes()
        plan.cancelEvery = self.cancelEvery > 0 ? self.cancelEvery : nil
        let started = ContinuousClock.now
        let outcome = await plan.drive(agent, requests: self.requests, tasks: self.tasks)
        let elapsed = ContinuousClock.now - started
        let memoryAfter = ProcessProbe.residentBytes()
        // A dial started for a request that another connection then served finishes on its own and joins
        // the free connections; give those a moment, then nothing may be leased, dialling or waiting.
        let statsAfter = await Self.settled(agent)

        await agent.shutdown()
        // Last, an Agent shut down while every task waits for a slow answer.
        let busy = Agent(configuration: configuration)
        let shutdown = await RequestPlan.shutdownUnderLoad(busy, urls: servers.baseURLs, tasks: self.tasks)
        let serversIdle = await servers.waitUntilNoneOpen()
        let descriptorsAfter = ProcessProbe.descriptorTargets()
        let served = servers.stats
        try await servers.shutdown()

        var report = SoakReport(
            requests: self.requests,
            tasks: self.tasks,
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
            succeeded: outcome.succeeded,
            reused: outcome.reused,
            retried: outcome.retried,
            cancelled: outcome.cancelled,
            finishedBeforeCancel: outcome.finishedBeforeCancel,
            errors: outcome.errors,
            errorSamples: outcome.errorSamples,
            warmUpErrors: warmUp.errors.values.reduce(0, +),
            activeAtEnd: statsAfter.origins.reduce(0) { $0 + $1.active + $1.connecting + $1.waiting },
            freeAtEnd: statsAfter.origins.reduce(0) { $0 + $1.free },
            connectionsAccepted: served.map(\.accepted),
            requestsServed: served.map(\.requests),
            descriptorsBefore: descriptorsBefore.count,
            descriptorsAfter: descriptorsAfter.count,
            newDescriptors: descriptorsAfter.sorted { $0.key < $1.key }.compactMap { number, target in
                descriptorsBefore[number] == target ? nil : "\(number): \(target)"
            },
            serversIdleAtEnd: serversIdle,
            memoryBefore: memoryBefore,
            memoryAfter: memoryAfter,
            memoryAllowance: self.memoryAllowance << 20,
            shutdownUnderLoad: shutdown
        )
        report.evaluate()
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
        if !report.failures.isEmpty {
            throw ExitCode(1)
        }
    }

    /// The Agent's stats once no connection is being dialled (at most 10 s from now).
    private static func settled(_ agent: Agent) async -> AgentStats {
        for _ in 0..<1000 {
            let stats = agent.stats
            if stats.origins.allSatisfy({ $0.connecting == 0 }) { return stats }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return agent.stats
    }
}
