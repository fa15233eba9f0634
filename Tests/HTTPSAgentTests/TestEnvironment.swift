import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore

/// Shared test setup: a CA, TLS servers trusting it, Agents trusting it.
struct TestEnvironment {
    let certificates: TestCertificates

    init() throws {
        self.certificates = try Self.shared.get()
    }

    /// One CA and server certificate for the whole run. Making them costs milliseconds of CPU, and every
    /// test makes an environment: hundreds at once when the parallel run starts, on two cores. Tests that
    /// need a certificate of their own issue it from this CA or make another CA.
    private static let shared = Result { try TestCertificates() }

    var tls: TLSConfiguration {
        TLSConfiguration(trustRoots: .pem(self.certificates.caPEM))
    }

    func configuration(
        maxSocketsPerHost: Int = 10,
        maxFreeSocketsPerHost: Int = 10,
        maxTotalSockets: Int? = nil,
        idleTimeout: Duration? = .seconds(30),
        freeSocketScheduling: FreeSocketScheduling = .lifo,
        keepAlive: Bool = true,
        poolWaitTimeout: Duration? = nil
    ) -> Agent.Configuration {
        Agent.Configuration(
            maxSocketsPerHost: maxSocketsPerHost,
            maxFreeSocketsPerHost: maxFreeSocketsPerHost,
            maxTotalSockets: maxTotalSockets,
            idleTimeout: idleTimeout,
            freeSocketScheduling: freeSocketScheduling,
            keepAlive: keepAlive,
            poolWaitTimeout: poolWaitTimeout,
            tls: self.tls
        )
    }

    func tlsServer(
        closeIdleAfter: TimeAmount? = nil,
        maxRequestsPerConnection: Int? = nil
    ) async throws -> TestHTTPServer {
        try await TestHTTPServer.start(
            .init(
                tls: self.certificates.serverOptions(),
                closeIdleAfter: closeIdleAfter,
                maxRequestsPerConnection: maxRequestsPerConnection
            )
        )
    }

    func plainServer(closeIdleAfter: TimeAmount? = nil) async throws -> TestHTTPServer {
        try await TestHTTPServer.start(.init(closeIdleAfter: closeIdleAfter))
    }
}

extension AgentResponse {
    /// The body as a string, read whole.
    func text() async throws -> String {
        String(buffer: try await self.body.collect(upTo: 64 << 20))
    }

    /// The server's number for the connection that carried this request.
    var serverConnectionID: Int? {
        self.headerFields[HTTPField.Name("X-Connection-ID")!].flatMap { Int($0) }
    }
}

/// Runs `body` with a started Agent and server, shutting both down afterwards whatever happens.
@discardableResult
func withAgent<Result>(
    _ configuration: Agent.Configuration,
    server: TestHTTPServer,
    _ body: (Agent, TestHTTPServer) async throws -> Result
) async throws -> Result {
    let agent = Agent(configuration: configuration)
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

/// The `AgentError` that `body` throws, or `nil` if it throws nothing (or something else).
func agentError(_ body: () async throws -> Void) async -> AgentError? {
    do {
        try await body()
        return nil
    } catch {
        return error as? AgentError
    }
}
