import Foundation
import HTTPSAgentTLS
import HTTPSAgentTestSupport
import Testing

/// `fetch`'s TLS flags (`-k`, `--cert`/`--key`), its session cache flags (`--no-session-cache`,
/// `--session-file`) and `--reconnect`, run as a subprocess against local servers. Resumption is
/// checked by the server's own count of full and resumed handshakes.
@Suite("The fetch command's TLS and session flags")
struct FetchTLSSessionTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// The lines `fetch --reconnect` printed.
    private func lines(_ result: FetchCLITests.Result) -> [String] {
        result.standardOutput.split(separator: "\n").map(String.init)
    }

    /// Writes `text` to `path` with mode 0600.
    private func write(_ text: String, to path: String) throws {
        let created = FileManager.default.createFile(
            atPath: path,
            contents: Data(text.utf8),
            attributes: [.posixPermissions: 0o600]
        )
        try #require(created, "cannot write \(path)")
    }

    // MARK: - --reconnect

    @Test func reconnectFiveTimesResumesFourByTheServersCount() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await FetchCLITests.fetch(["--cacert", files.caPath, "--reconnect", "5", server.url("/hello")])
        #expect(result.status == 0, "\(result.standardError)")
        let lines = self.lines(result)
        try #require(lines.count == 5, "\(result.standardOutput)")
        #expect(lines[0].hasPrefix("New, TLSv1.3, Cipher is TLS_"), "\(lines[0])")
        let cipher = String(lines[0].dropFirst("New, TLSv1.3, ".count))
        #expect(lines.dropFirst().allSatisfy { $0 == "Reused, TLSv1.3, \(cipher)" }, "\(lines)")
        #expect(!result.standardOutput.contains("hello"))  // bodies are not printed
        #expect(server.stats.accepted == 5)
        #expect(server.stats.requests == 5)
        #expect(server.stats.fullHandshakes == 1)
        #expect(server.stats.resumedHandshakes == 4)
        try await server.shutdown()
    }

    @Test func reconnectWithoutTheSessionCacheIsAllNew() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await FetchCLITests.fetch(
            ["--cacert", files.caPath, "--no-session-cache", "--reconnect", "5", server.url("/hello")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let lines = self.lines(result)
        #expect(lines.count == 5 && lines.allSatisfy { $0.hasPrefix("New, TLSv1.3, Cipher is ") }, "\(lines)")
        #expect(server.stats.accepted == 5)
        #expect(server.stats.fullHandshakes == 5)
        #expect(server.stats.resumedHandshakes == 0)
        try await server.shutdown()
    }

    @Test func reconnectWritesOutAfterEachConnection() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let result = try await FetchCLITests.fetch(
            ["--cacert", files.caPath, "--reconnect", "3", "-w", "%{num_connects} %{resumed} %{size_download}\\n"]
                + [server.url("/bytes/7")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        let lines = self.lines(result)
        try #require(lines.count == 6, "\(lines)")
        #expect(lines[0].hasPrefix("New, ") && lines[1] == "1 0 7")
        #expect(lines[2].hasPrefix("Reused, ") && lines[3] == "1 1 7")
        #expect(lines[4].hasPrefix("Reused, ") && lines[5] == "1 1 7")
        #expect(server.stats.accepted == 3)
        try await server.shutdown()
    }

    @Test func reconnectStopsAtTheFirstFailureWithCurlsCode() async throws {
        let server = try await environment.tlsServer()
        // Not trusted: the first handshake fails verification, and nothing else is tried.
        let result = try await FetchCLITests.fetch(["--reconnect", "5", server.url("/hello")])
        #expect(result.status == 60)
        #expect(result.standardOutput.isEmpty)
        #expect(result.standardError.contains("localhost:\(server.port)"))
        #expect(server.stats.accepted == 1)
        try await server.shutdown()
    }

    @Test(
        arguments: [
            (["--reconnect", "2", "https://localhost:1/a", "https://localhost:1/b"], "exactly one URL"),
            (["--reconnect", "0", "https://localhost:1/"], "at least 1"),
            (["--reconnect", "2", "http://localhost:1/"], "https://"),
            (["--session-file", "/tmp/x", "--no-session-cache", "https://localhost:1/"], "contradict"),
            (["--key", "/tmp/key.pem", "https://localhost:1/"], "--key needs --cert"),
        ]
    )
    func contradictoryFlagsAreUsageErrors(arguments: [String], message: String) async throws {
        let result = try await FetchCLITests.fetch(arguments)
        #expect(result.status == 64, "\(result.standardError)")
        #expect(result.standardError.contains(message), "\(result.standardError)")
    }

    @Test(.enabled(if: OpenSSLServer.unavailableReason == nil || OpenSSLServer.isCI, "openssl is not installed"))
    func reconnectAgreesWithOpenSSLServersOwnWord() async throws {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        for version in ["-tls1_3", "-tls1_2"] {
            let server = try await OpenSSLServer.start(
                arguments: ["-cert", files.certificatePath, "-key", files.keyPath, "-www", version]
            )
            defer { server.stop() }
            let pages = files.directory + "/pages\(version).txt"
            defer { unlink(pages) }
            let result = try await FetchCLITests.fetch(
                ["--cacert", files.caPath, "--reconnect", "4", "-o", pages, "https://localhost:\(server.port)/"]
            )
            #expect(result.status == 0, "\(result.standardError)")
            // Each page s_server sent says, in the same words, what the server saw on that connection.
            let serverLines = try String(contentsOfFile: pages, encoding: .utf8)
                .split(separator: "\n")
                .filter { $0.hasPrefix("New, ") || $0.hasPrefix("Reused, ") }
                .map(String.init)
            #expect(serverLines.count == 4, "\(version)")
            #expect(self.lines(result) == serverLines, "\(version)")
            #expect(serverLines.first?.hasPrefix("New, TLSv1.") == true)
            #expect(serverLines.dropFirst().allSatisfy { $0.hasPrefix("Reused, ") }, "\(serverLines)")
        }
    }

    // MARK: - --session-file

    @Test func aSessionFileLetsTheNextProcessResumeOnItsFirstConnection() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let path = files.directory + "/sessions"
        defer { unlink(path) }
        let deadPort = try await unusedLoopbackPort()

        // The first run fails on its second URL; the session of the first is saved all the same.
        let first = try await FetchCLITests.fetch(
            ["-sS", "-o", "/dev/null", "--cacert", files.caPath, "--session-file", path]
                + [server.url("/hello"), "https://127.0.0.1:\(deadPort)/"]
        )
        #expect(first.status == 7, "\(first.standardError)")
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        #expect(server.stats.fullHandshakes == 1 && server.stats.resumedHandshakes == 0)

        // Another process, the same file: its first connection resumes.
        let second = try await FetchCLITests.fetch(
            ["-sS", "-o", "/dev/null", "--cacert", files.caPath, "--session-file", path, "-w", "%{resumed}"]
                + [server.url("/hello")]
        )
        #expect(second.status == 0, "\(second.standardError)")
        #expect(second.standardOutput == "1")
        #expect(server.stats.accepted == 2)
        #expect(server.stats.fullHandshakes == 1)
        #expect(server.stats.resumedHandshakes == 1)

        // It saved the ticket it got in turn (TLS 1.3 tickets are spent once), so a third one resumes too.
        let third = try await FetchCLITests.fetch(
            ["--cacert", files.caPath, "--session-file", path, "--reconnect", "2", server.url("/hello")]
        )
        #expect(third.status == 0, "\(third.standardError)")
        #expect(self.lines(third).count == 2 && self.lines(third).allSatisfy { $0.hasPrefix("Reused, ") })
        #expect(server.stats.accepted == 4)
        #expect(server.stats.fullHandshakes == 1)
        #expect(server.stats.resumedHandshakes == 3)
        try await server.shutdown()
    }

    @Test func aCorruptSessionFileIsAWarningAndIsLeftAlone() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let path = files.directory + "/sessions"
        defer { unlink(path) }
        let garbage = "not a session file\n"
        try self.write(garbage, to: path)
        let result = try await FetchCLITests.fetch(
            ["-sS", "--cacert", files.caPath, "--session-file", path, server.url("/hello")]
        )
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput == "hello")
        let warnings = result.standardError.split(separator: "\n")
        #expect(warnings.count == 1, "\(result.standardError)")
        #expect(result.standardError.contains("fetch: warning: ignoring the session file \(path): "))
        #expect(server.stats.fullHandshakes == 1 && server.stats.resumedHandshakes == 0)
        // Not overwritten: it may be some other file of the user's, named by mistake.
        #expect(try String(contentsOfFile: path, encoding: .utf8) == garbage)
        try await server.shutdown()
    }

    // MARK: - -k

    @Test func insecureReachesAnUntrustedServerAndSaysSoEvenWhenSilent() async throws {
        let server = try await environment.tlsServer()
        let refused = try await FetchCLITests.fetch(["-sS", server.url("/hello")])
        #expect(refused.status == 60)
        #expect(refused.standardOutput.isEmpty)

        let result = try await FetchCLITests.fetch(["-s", "-k", server.url("/hello")])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput == "hello")
        let warning = result.standardError.split(separator: "\n")
        #expect(warning.count == 1 && warning[0].contains("WARNING") && warning[0].contains("NOT authenticated"))
        #expect(server.stats.requests == 1)
        try await server.shutdown()
    }

    // MARK: - --cert and --key

    /// A server that requires a client certificate issued by the test CA, and the client's PEM files:
    /// the certificate, its key, and both in one file.
    private struct ClientCertificateSetup {
        let server: TestHTTPServer
        let files: CertificateFiles
        let certificate: String
        let key: String
        let both: String

        func remove() {
            for path in [self.certificate, self.key, self.both] { unlink(path) }
            self.files.remove()
        }
    }

    private func clientCertificateSetup(
        maximumVersion: TLSProtocolVersion? = nil
    ) async throws
        -> ClientCertificateSetup
    {
        let client = try environment.certificates.authority.issue(commonName: "fetch-client", clientAuth: true)
        var options = environment.certificates.serverOptions(maximumVersion: maximumVersion)
        options.trustRoots = .pem(.bytes(Array(environment.certificates.caPEM.utf8)))  // requires a client certificate
        let files = try environment.certificates.writeFiles()
        let setup = ClientCertificateSetup(
            server: try await TestHTTPServer.start(.init(tls: options)),
            files: files,
            certificate: files.directory + "/client.pem",
            key: files.directory + "/client.key",
            both: files.directory + "/client-and-key.pem"
        )
        try self.write(client.certificatePEM, to: setup.certificate)
        try self.write(client.privateKeyPEM, to: setup.key)
        try self.write(client.certificatePEM + client.privateKeyPEM, to: setup.both)
        return setup
    }

    @Test func aClientCertificateIsPresentedWhenTheServerRequiresOne() async throws {
        let setup = try await self.clientCertificateSetup()
        defer { setup.remove() }
        let server = setup.server
        let base = ["-sS", "--cacert", setup.files.caPath]

        let separate = try await FetchCLITests.fetch(
            base + ["--cert", setup.certificate, "--key", setup.key, server.url("/hello")]
        )
        #expect(separate.status == 0, "\(separate.standardError)")
        #expect(separate.standardOutput == "hello")
        // Like curl, --cert alone reads the key from the same file.
        let combined = try await FetchCLITests.fetch(base + ["--cert", setup.both, server.url("/hello")])
        #expect(combined.status == 0, "\(combined.standardError)")
        #expect(server.stats.requests == 2)

        // Without one, the server refuses. In TLS 1.3 it sends its alert after the client's Finished, so
        // it lands before or after the request was written; either way it is a refused handshake, as in
        // TLS 1.2 (curl, which learns of it on a read, says 56).
        let anonymous = try await FetchCLITests.fetch(base + [server.url("/hello")])
        #expect(anonymous.status == 35, "\(anonymous.standardError)")
        #expect(anonymous.standardOutput.isEmpty)
        #expect(
            anonymous.standardError.contains("localhost:\(server.port): TLS handshake: "),
            "\(anonymous.standardError)"
        )
        #expect(anonymous.standardError.contains("tlsv13 alert certificate required"), "\(anonymous.standardError)")
        #expect(server.stats.requests == 2)

        // A certificate file without its key is caught before any connection.
        let keyless = try await FetchCLITests.fetch(base + ["--cert", setup.certificate, server.url("/hello")])
        #expect(keyless.status == 64)
        #expect(keyless.standardError.contains("--cert \(setup.certificate) holds no private key"))
        #expect(server.stats.accepted == 3)
        try await server.shutdown()
    }

    @Test func withoutAClientCertificateATLS12HandshakeFailsWithCurlsCode35() async throws {
        let setup = try await self.clientCertificateSetup(maximumVersion: .tls1_2)
        defer { setup.remove() }
        let server = setup.server
        let base = ["-sS", "--cacert", setup.files.caPath]

        let presented = try await FetchCLITests.fetch(
            base + ["--cert", setup.certificate, "--key", setup.key, "-w", "%{tls_version}", "-o", "/dev/null"]
                + [server.url("/hello")]
        )
        #expect(presented.status == 0, "\(presented.standardError)")
        #expect(presented.standardOutput == "TLSv1.2")

        // In TLS 1.2 the server refuses before its Finished: a failed handshake.
        let anonymous = try await FetchCLITests.fetch(base + [server.url("/hello")])
        #expect(anonymous.status == 35, "\(anonymous.standardError)")
        #expect(anonymous.standardError.contains("localhost:\(server.port): TLS handshake: "))
        #expect(anonymous.standardError.contains("handshake failure"), "\(anonymous.standardError)")
        #expect(server.stats.requests == 1)
        try await server.shutdown()
    }
}
