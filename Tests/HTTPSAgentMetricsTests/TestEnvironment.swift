import HTTPSAgent
import HTTPSAgentTestSupport

/// A CA, servers trusting it and Agents trusting it; the part of HTTPSAgentTests' environment these
/// tests need (test targets cannot import each other).
struct TestEnvironment {
    let certificates: TestCertificates

    init() throws {
        self.certificates = try Self.shared.get()
    }

    /// One CA and server certificate for the whole run: making them costs CPU that every test would
    /// otherwise spend at once when the parallel run starts.
    private static let shared = Result { try TestCertificates() }

    var configuration: Agent.Configuration {
        Agent.Configuration(tls: TLSConfiguration(trustRoots: .pem(self.certificates.caPEM)))
    }

    func tlsServer() async throws -> TestHTTPServer {
        try await TestHTTPServer.start(.init(tls: self.certificates.serverOptions()))
    }

    func plainServer() async throws -> TestHTTPServer {
        try await TestHTTPServer.start(.init())
    }
}

/// Runs `body` with an Agent carrying `observers` and a started server, shutting both down afterwards
/// whatever happens.
@discardableResult
func withAgent<Result>(
    _ configuration: Agent.Configuration,
    observers: [any AgentObserver],
    server: TestHTTPServer,
    _ body: (Agent, TestHTTPServer) async throws -> Result
) async throws -> Result {
    let agent = Agent(configuration: configuration, observers: observers)
    do {
        let result = try await body(agent, server)
        await agent.shutdown()
        try await server.shutdown()
        return result
    } catch {
        await agent.shutdown()
        try? await server.shutdown()
        throw error
    }
}

extension Agent {
    /// GETs `url` and reads the body to its end, so that the request's events are all delivered.
    func fetch(_ url: String) async throws -> AgentResponse {
        let response = try await self.get(url)
        _ = try await response.body.collect(upTo: 1 << 20)
        return response
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes. The timeout only bounds a failing
/// wait; no test asserts how long anything took.
func eventually(timeout: Duration = .seconds(10), _ condition: () throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try condition()
}
