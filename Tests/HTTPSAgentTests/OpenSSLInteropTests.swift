import HTTPSAgent
import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import Testing

/// Against `openssl s_server`: an independent server whose `-www` page states, from the server's
/// side, the protocol, the cipher and whether the session is new or reused. CI installs openssl; a
/// missing binary skips these tests locally and fails them when CI=true.
@Suite(
    "Interop with openssl s_server",
    .enabled(if: OpenSSLServer.unavailableReason == nil || OpenSSLServer.isCI, "openssl is not installed")
)
struct OpenSSLInteropTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    private func withServer(
        certificate: PEMCertificateAndKey? = nil,
        arguments: [String] = [],
        _ body: (OpenSSLServer, CertificateFiles) async throws -> Void
    ) async throws {
        let files = try environment.certificates.writeFiles(certificate: certificate)
        defer { files.remove() }
        let server = try await OpenSSLServer.start(
            arguments: ["-cert", files.certificatePath, "-key", files.keyPath, "-www"] + arguments
        )
        defer { server.stop() }
        try await body(server, files)
    }

    @Test(arguments: [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")])
    func fetchesTheStatusPage(flag: String, version: String) async throws {
        try await self.withServer(arguments: [flag]) { server, _ in
            let agent = Agent(configuration: environment.configuration())
            for index in 0..<3 {
                let response = try await agent.get("https://localhost:\(server.port)/")
                let page = try await response.text()
                // The server saw a full handshake, then resumptions, at the version and cipher we report.
                let handshake = index == 0 ? "New" : "Reused"
                #expect(page.contains("\(handshake), \(version), Cipher is \(response.connection.tls?.cipher ?? "?")"))
                #expect(response.connection.tls?.sessionResumed == (index > 0))
                #expect(response.connection.tls?.version == version)
                #expect(response.connection.tls?.alpn == nil)  // s_server does not do ALPN unless asked
                #expect(response.connection.isReused == false)  // HTTP/1.0, closed by the server
            }
            await agent.shutdown()
        }
    }

    @Test(arguments: [["-tls1_3"], ["-tls1_2"], ["-tls1_2", "-no_ticket"]])
    func fiftyReconnectsMakeOneFullHandshakeByTheServersCount(flags: [String]) async throws {
        try await self.withServer(arguments: flags) { server, _ in
            let agent = Agent(configuration: environment.configuration(keepAlive: false))
            var new = 0
            var reused = 0
            for _ in 0..<50 {
                let response = try await agent.get("https://localhost:\(server.port)/")
                let page = try await response.text()
                let serverSaysReused = page.contains("\nReused, ") || page.hasPrefix("Reused, ")
                if serverSaysReused { reused += 1 } else if page.contains("New, ") { new += 1 }
                // The client's own flag agrees with the server, connection by connection.
                #expect(response.connection.tls?.sessionResumed == serverSaysReused)
            }
            #expect(new == 1, "\(flags)")
            #expect(reused == 49, "\(flags)")
            await agent.shutdown()
        }
    }

    @Test func withTheCacheDisabledTheServerSeesNoResumption() async throws {
        try await self.withServer(arguments: ["-tls1_3"]) { server, _ in
            var configuration = environment.configuration(keepAlive: false)
            configuration.sessionCache = nil
            let agent = Agent(configuration: configuration)
            for _ in 0..<5 {
                let page = try await agent.get("https://localhost:\(server.port)/").text()
                #expect(page.contains("New, TLSv1.3"))
            }
            await agent.shutdown()
        }
    }

    @Test func presentsAClientCertificateWhenAsked() async throws {
        let client = try environment.certificates.authority.issue(commonName: "agent-client", clientAuth: true)
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        try await self.withServer(arguments: ["-Verify", "1", "-CAfile", files.caPath]) { server, _ in
            var configuration = environment.configuration()
            configuration.tls.clientCertificate = .pem(
                certificateChain: client.certificatePEM,
                privateKey: client.privateKeyPEM
            )
            let agent = Agent(configuration: configuration)
            let page = try await agent.get("https://localhost:\(server.port)/").text()
            #expect(page.contains("Client certificate"))
            #expect(page.contains("Subject: CN = agent-client") || page.contains("Subject: CN=agent-client"))
            await agent.shutdown()

            // Without one, the server refuses the connection.
            let anonymous = Agent(configuration: environment.configuration())
            await #expect(throws: AgentError.self) {
                _ = try await anonymous.get("https://localhost:\(server.port)/").text()
            }
            await anonymous.shutdown()
        }
    }

    @Test func wrongHostnameUnknownCAAndExpiredFailWithTheirReason() async throws {
        let cases: [(PEMCertificateAndKey, String)] = [
            (
                try environment.certificates.authority.issue(commonName: "other", dnsNames: ["other.example"]),
                "hostname mismatch"
            ),
            (
                try CertificateAuthority(commonName: "Stranger").issue(
                    commonName: "localhost",
                    dnsNames: ["localhost"]
                ),
                "unable to get local issuer certificate"
            ),
            (
                try environment.certificates.authority.issue(
                    commonName: "localhost",
                    dnsNames: ["localhost"],
                    notBeforeOffset: -10 * 86_400,
                    notAfterOffset: -3600
                ),
                "certificate has expired"
            ),
        ]
        for (certificate, reason) in cases {
            try await self.withServer(certificate: certificate) { server, _ in
                let agent = Agent(configuration: environment.configuration())
                await #expect {
                    _ = try await agent.get("https://localhost:\(server.port)/")
                } throws: { error in
                    guard let error = error as? AgentError else { return false }
                    return error.code == .certificateVerificationFailed && error.verifyResultDescription == reason
                        && error.host == "localhost" && error.port == server.port
                }
                await agent.shutdown()
            }
        }
    }
}
