import HTTPSAgent
import HTTPSAgentTestSupport
import Testing

/// Against nginx with a shared session cache, counted from nginx's own access log
/// (`$ssl_session_reused`). CI installs nginx; locally a missing nginx skips these tests, and with
/// CI=true it fails them.
@Suite(
    "Interop with nginx",
    .enabled(if: NginxServer.unavailableReason == nil || OpenSSLServer.isCI, "nginx is not installed")
)
struct NginxInteropTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test(
        arguments: [
            ("TLSv1.3", true),
            ("TLSv1.2", true),
            ("TLSv1.2", false),
        ]
    )
    func fiftyReconnectsMakeOneFullHandshakeByNginxsLog(protocols: String, tickets: Bool) async throws {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let nginx = try await NginxServer.start(
            certificatePath: files.certificatePath,
            keyPath: files.keyPath,
            protocols: protocols,
            sessionTickets: tickets,
            keepAlive: false
        )
        defer { nginx.stop() }
        let agent = Agent(configuration: environment.configuration(keepAlive: false))
        var clientSaysResumed: [Bool] = []
        for _ in 0..<50 {
            let response = try await agent.get("https://localhost:\(nginx.port)/")
            #expect(try await response.text() == "hello from nginx\n")
            clientSaysResumed.append(response.connection.tls?.sessionResumed ?? false)
        }
        await agent.shutdown()
        let log = nginx.accessLog()
        #expect(log.count == 50)
        #expect(Set(log.map(\.connection)).count == 50, "one connection per request")
        #expect(log.filter(\.sessionReused).count == 49, "\(protocols) tickets \(tickets)")
        #expect(log.allSatisfy { $0.protocolVersion == protocols })
        // The client's flag agrees with nginx's, request by request.
        #expect(log.map(\.sessionReused) == clientSaysResumed)
    }

    @Test func withTheCacheDisabledNginxSeesNoResumption() async throws {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let nginx = try await NginxServer.start(
            certificatePath: files.certificatePath,
            keyPath: files.keyPath,
            keepAlive: false
        )
        defer { nginx.stop() }
        var configuration = environment.configuration(keepAlive: false)
        configuration.sessionCache = nil
        let agent = Agent(configuration: configuration)
        for _ in 0..<10 {
            _ = try await agent.get("https://localhost:\(nginx.port)/").text()
        }
        await agent.shutdown()
        let log = nginx.accessLog()
        #expect(log.count == 10)
        #expect(!log.contains { $0.sessionReused })
    }

    @Test func keepAliveReusesOneConnectionByNginxsCount() async throws {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let nginx = try await NginxServer.start(
            certificatePath: files.certificatePath,
            keyPath: files.keyPath,
            keepAlive: true
        )
        defer { nginx.stop() }
        let agent = Agent(configuration: environment.configuration())
        for _ in 0..<20 {
            _ = try await agent.get("https://localhost:\(nginx.port)/").text()
        }
        await agent.shutdown()
        let log = nginx.accessLog()
        #expect(log.count == 20)
        #expect(Set(log.map(\.connection)).count == 1)
    }
}
