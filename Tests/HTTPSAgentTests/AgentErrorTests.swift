import HTTPSAgent
import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

@Suite("Failures: typed, naming host and phase, leaving nothing behind")
struct AgentErrorTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    // Certificates that do not verify: TLSNegativeMatrixTests.

    @Test func verificationCanBeNarrowedOrDisabledOnlyExplicitly() async throws {
        let other = try environment.certificates.authority.issue(commonName: "other", dnsNames: ["other.example"])
        let server = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(certificate: other))
        )
        var configuration = environment.configuration()
        configuration.tls.certificateVerification = .noHostnameVerification
        try await withAgent(configuration, server: server) { agent, server in
            let text = try await agent.get(server.url("/hello")).text()
            #expect(text == "hello")
        }
        #expect(TLSConfiguration().certificateVerification == .full)
        #expect(TLSConfiguration().trustRoots == .system)
    }

    @Test func sniCarriesHostNamesButNotIPAddresses() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let byName = try await agent.get("https://localhost:\(server.port)/hello")
            #expect(byName.headerFields[HTTPField.Name("X-TLS-SNI")!] == "localhost")
            // An IP literal is verified against the certificate's IP entries, and sends no SNI (RFC 6066).
            let byAddress = try await agent.get("https://127.0.0.1:\(server.port)/hello")
            #expect(byAddress.headerFields[HTTPField.Name("X-TLS-SNI")!] == "-")
            #expect(try await byAddress.text() == "hello")
        }
    }

    @Test func minimumVersionIsEnforced() async throws {
        let server = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(maximumVersion: .tls1_2))
        )
        var configuration = environment.configuration()
        configuration.tls.minimumVersion = .tls1_3
        try await withAgent(configuration, server: server) { agent, server in
            await #expect {
                _ = try await agent.get(server.url("/hello"))
            } throws: { error in
                guard let error = error as? AgentError else { return false }
                return error.code == .tlsHandshakeFailed && error.tlsReason == "tlsv1 alert protocol version"
            }
        }
    }

    @Test func connectionRefusedIsAConnectFailure() async throws {
        let port = try await unusedLoopbackPort()
        let agent = Agent(configuration: environment.configuration())
        await #expect {
            _ = try await agent.get("https://127.0.0.1:\(port)/")
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .connectFailed && error.phase == .connect && error.host == "127.0.0.1"
                && error.port == port && error.message.contains("connection refused")
        }
        #expect(agent.stats.totalConnections == 0)
        await agent.shutdown()
    }

    @Test func unresolvableHostIsADNSFailure() async throws {
        let agent = Agent(configuration: environment.configuration())
        await #expect {
            _ = try await agent.get("https://no-such-host.invalid/")
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .dnsFailed && error.phase == .dns && error.host == "no-such-host.invalid"
        }
        await agent.shutdown()
    }

    @Test func stalledHandshakeTimesOut() async throws {
        let server = try await ScriptedTCPServer.start(.acceptAndHang)
        var configuration = environment.configuration()
        configuration.tlsHandshakeTimeout = .milliseconds(200)
        let agent = Agent(configuration: configuration)
        await #expect {
            _ = try await agent.get("https://localhost:\(server.port)/")
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .tlsHandshakeTimeout && error.phase == .tlsHandshake
        }
        #expect(agent.stats.totalConnections == 0)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func serverClosingDuringTheHandshakeIsAHandshakeFailure() async throws {
        let server = try await ScriptedTCPServer.start(.closeOnAccept)
        let agent = Agent(configuration: environment.configuration())
        await #expect {
            _ = try await agent.get("https://localhost:\(server.port)/")
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .tlsHandshakeFailed && error.phase == .tlsHandshake
        }
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func malformedResponseIsReportedAndTheConnectionDropped() async throws {
        let server = try await ScriptedTCPServer.start(.reply("SMTP ready\r\n\r\n", close: false))
        let agent = Agent(configuration: environment.configuration())
        await #expect {
            _ = try await agent.get("http://127.0.0.1:\(server.port)/")
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .malformedResponse && error.phase == .responseHead
        }
        #expect(await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 })
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func serverClosingWithoutAResponseIsConnectionClosed() async throws {
        let server = try await ScriptedTCPServer.start(.reply("", close: true))
        let agent = Agent(configuration: environment.configuration())
        await #expect {
            _ = try await agent.get("http://127.0.0.1:\(server.port)/")
        } throws: { error in
            guard let error = error as? AgentError else { return false }
            return error.code == .connectionClosed && error.phase == .responseHead && error.requestMayHaveBeenSent
        }
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test(
        arguments: [
            "example.com/no-scheme",
            "ftp://example.com/",
            "https://exa mple.com/",
            "https://evil.com%2F@good.com/",
            "https://host%2Fpath/",
            "https://example.com:0/",
            "https://example.com:70000/",
            "https://user:secret@example.com/",
            "https://example.com/a path",
            "https://[::1/",
            "https:///nohost",
        ]
    )
    func invalidURLsAreRejectedBeforeAnyIO(url: String) async throws {
        #expect {
            _ = try HTTPRequest(method: .get, url: url)
        } throws: { error in
            (error as? AgentError)?.code == .invalidRequest
        }
        let agent = Agent()
        let request = HTTPRequest(method: .get, scheme: "gopher", authority: "example.com", path: "/")
        await #expect {
            _ = try await agent.execute(request)
        } throws: { error in
            (error as? AgentError)?.code == .invalidRequest
        }
        await agent.shutdown()
    }
}
