import Foundation
import HTTPSAgent
import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import Testing

/// Every way a TLS handshake can fail, against real sockets and real TLS: each must fail with its own
/// code and reason, in the TLS handshake phase, naming the host and port, with no request byte sent,
/// and leave nothing to reuse: the next attempt dials a new connection, no session is cached or
/// offered, and the Agent holds no connection afterwards. (RELIABILITY.md C7, C5; the failures after
/// the handshake are in `TLSTruncationMatrixTests`.)
@Suite("TLS negative matrix: handshakes that must fail", .timeLimit(.minutes(2)))
struct TLSNegativeMatrixTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// The test configuration with `cache`, so that what it holds can be checked.
    func configuration(_ cache: TLSSessionCache, keepAlive: Bool = true) -> Agent.Configuration {
        var configuration = environment.configuration(keepAlive: keepAlive)
        configuration.sessionCache = cache
        return configuration
    }

    // MARK: - Certificates (C7)

    /// A certificate a client must refuse, with OpenSSL's verify result for it.
    enum CertificateRow: String, CaseIterable, Sendable {
        case wrongHostname = "wrong hostname"
        case unknownCA = "unknown CA"
        case expired
        case notYetValid = "not yet valid"
        case selfSigned = "self-signed"
        case wrongIP = "wrong IP address"
        case dnsNamesOnlyForAnIP = "DNS names only, for an IP literal"
        case commonNameOnlyForAnIP = "CN only, for an IP literal"
        case commonNameOnlyForAnotherName = "CN only, for another name"

        func certificate(_ authority: CertificateAuthority) throws -> PEMCertificateAndKey {
            switch self {
            case .wrongHostname:
                try authority.issue(commonName: "other", dnsNames: ["other.example"])
            case .unknownCA:
                try CertificateAuthority(commonName: "Stranger").issue(commonName: "localhost", dnsNames: ["localhost"])
            case .expired:
                try authority.issue(
                    commonName: "localhost",
                    dnsNames: ["localhost"],
                    notBeforeOffset: -30 * 86_400,
                    notAfterOffset: -86_400
                )
            case .notYetValid:
                try authority.issue(
                    commonName: "localhost",
                    dnsNames: ["localhost"],
                    notBeforeOffset: 86_400,
                    notAfterOffset: 30 * 86_400
                )
            case .selfSigned:
                try CertificateAuthority.selfSigned(commonName: "localhost", dnsNames: ["localhost"])
            case .wrongIP:
                try authority.issue(commonName: "127.0.0.2", ipAddresses: ["127.0.0.2"])
            case .dnsNamesOnlyForAnIP:
                try authority.issue(commonName: "localhost", dnsNames: ["localhost"])
            case .commonNameOnlyForAnIP:
                // An IP literal is never matched against the subject's CN.
                try authority.issue(commonName: "127.0.0.1")
            case .commonNameOnlyForAnotherName:
                try authority.issue(commonName: "other.example")
            }
        }

        /// The host the request names.
        var host: String {
            switch self {
            case .wrongIP, .dnsNamesOnlyForAnIP, .commonNameOnlyForAnIP: "127.0.0.1"
            default: "localhost"
            }
        }

        var verifyResult: String {
            switch self {
            case .wrongHostname, .commonNameOnlyForAnotherName: "hostname mismatch"
            case .unknownCA: "unable to get local issuer certificate"
            case .expired: "certificate has expired"
            case .notYetValid: "certificate is not yet valid"
            case .selfSigned: "self-signed certificate"
            case .wrongIP, .dnsNamesOnlyForAnIP, .commonNameOnlyForAnIP: "IP address mismatch"
            }
        }
    }

    @Test(arguments: CertificateRow.allCases)
    func aCertificateThatDoesNotVerifyIsRefusedWithItsReason(_ row: CertificateRow) async throws {
        let certificate = try row.certificate(environment.certificates.authority)
        let server = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(certificate: certificate))
        )
        let cache = TLSSessionCache()
        try await withAgent(self.configuration(cache), server: server) { agent, server in
            await self.expectRefusedTwice(agent, url: server.url("/hello", host: row.host), cache: cache) { error in
                error.code == .certificateVerificationFailed && error.verifyResultDescription == row.verifyResult
                    && error.tlsReason == "certificate verify failed" && error.message.contains(row.verifyResult)
                    && error.verifyResult != nil && error.verifyResult != 0
            }
            // A new connection each time, on which the server completed no handshake and read no request.
            #expect(server.stats.accepted == 2)
            #expect(server.stats.fullHandshakes + server.stats.resumedHandshakes == 0)
            #expect(server.stats.requests == 0)
        }
    }

    /// A certificate without subject alternative names is matched on its CN by name (as OpenSSL,
    /// swift-nio-ssl and curl do; RFC 9525 deprecates it), never by IP address (the row above).
    @Test func aCommonNameOnlyCertificateIsMatchedByNameOnly() async throws {
        let certificate = try environment.certificates.authority.issue(commonName: "localhost")
        let server = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(certificate: certificate))
        )
        try await withAgent(environment.configuration(), server: server) { agent, server in
            let byName = try await agent.get(server.url("/hello")).text()
            #expect(byName == "hello")
            let byAddress = await agentError { _ = try await agent.get(server.url("/hello", host: "127.0.0.1")) }
            #expect(byAddress?.verifyResultDescription == "IP address mismatch")
        }
    }

    // MARK: - Protocol versions

    /// OpenSSL 3 serves TLS 1.0 and 1.1 only at security level 0 (their handshake signatures use SHA-1).
    static let legacyServerArguments = ["-cipher", "DEFAULT@SECLEVEL=0"]

    /// Why the local `openssl s_server` cannot serve TLS 1.0 and 1.1, or `nil` when it can: checked once,
    /// with `openssl s_client`, so that the test below never passes for want of a server to refuse.
    static let legacyServerProblem = Task<String?, Never> {
        guard OpenSSLServer.unavailableReason == nil else { return OpenSSLServer.unavailableReason }
        do {
            let certificates = try TestCertificates()
            let files = try certificates.writeFiles()
            defer { files.remove() }
            for (flag, version) in [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")] {
                let arguments = [flag] + legacyServerArguments
                let server = try await OpenSSLServer.start(
                    arguments: ["-cert", files.certificatePath, "-key", files.keyPath, "-www"] + arguments
                )
                defer { server.stop() }
                let output = try await server.probe(arguments)
                if !output.contains("Protocol  : \(version)\n") || output.contains("Cipher is (NONE)") {
                    return "openssl s_client \(flag) could not connect to s_server \(flag): \(output.suffix(400))"
                }
            }
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test(
        .enabled("the local OpenSSL cannot serve TLS 1.0 or 1.1, even at SECLEVEL=0 (see standard error)") {
            if OpenSSLServer.unavailableReason != nil { return OpenSSLServer.isCI }  // CI installs it
            guard let problem = await legacyServerProblem.value else { return true }
            FileHandle.standardError.write(Data("TLS 1.0/1.1 server check: \(problem)\n".utf8))
            return false
        },
        arguments: ["-tls1", "-tls1_1"]
    )
    func aServerThatSpeaksOnlyTLS10Or11IsRefused(flag: String) async throws {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let server = try await OpenSSLServer.start(
            arguments: ["-cert", files.certificatePath, "-key", files.keyPath, "-www", flag]
                + Self.legacyServerArguments
        )
        defer { server.stop() }
        let relay = try await CuttingRelay.start(to: server.port, cut: .never)
        let cache = TLSSessionCache()
        let agent = Agent(configuration: self.configuration(cache))
        // Our ClientHello offers TLS 1.2 and 1.3 only; the server has neither, and says so with an alert.
        await self.expectRefusedTwice(agent, url: "https://localhost:\(relay.port)/", cache: cache) { error in
            error.code == .tlsHandshakeFailed && error.tlsReason == "tlsv1 alert protocol version"
                && error.verifyResultDescription == nil
        }
        #expect(relay.accepted == 2)
        await agent.shutdown()
        try await relay.shutdown()
    }

    // MARK: - ALPN

    /// The Agent offers only "http/1.1" and has no setting to require it: HTTP/1.1 is what a TLS
    /// connection carries when ALPN selects nothing (RFC 7301 §3.2; curl and Go do the same), so a
    /// server without ALPN is spoken to in HTTP/1.1, and its connections are kept alive.
    @Test func aServerWithoutALPNIsSpokenToInHTTP11() async throws {
        var options = environment.certificates.serverOptions()
        options.alpnProtocols = []
        let server = try await TestHTTPServer.start(.init(tls: options))
        try await withAgent(environment.configuration(), server: server) { agent, server in
            for _ in 0..<2 {
                let response = try await agent.get(server.url("/hello"))
                let text = try await response.text()
                #expect(text == "hello")
                #expect(response.connection.tls?.alpn == nil)
            }
            #expect(server.stats.accepted == 1)
        }
        // The same with an independent server: `openssl s_server` without `-alpn`.
        try #require(OpenSSLServer.unavailableReason == nil || OpenSSLServer.isCI, "openssl is not installed")
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let openssl = try await OpenSSLServer.start(arguments: [
            "-cert", files.certificatePath, "-key", files.keyPath, "-www",
        ])
        defer { openssl.stop() }
        let agent = Agent(configuration: environment.configuration())
        let response = try await agent.get("https://localhost:\(openssl.port)/")
        #expect(response.connection.tls?.alpn == nil)
        #expect(try await response.text().contains("New, TLSv1.3"))
        await agent.shutdown()
    }

    /// A server whose only protocol is "h2" ends the handshake with a `no_application_protocol` alert, as
    /// both our server's ALPN callback and `openssl s_server -alpn h2` do.
    @Test(arguments: ["ours", "openssl s_server"])
    func aServerThatWillNotSpeakHTTP11FailsTheHandshake(kind: String) async throws {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        var ours: TestHTTPServer?
        var openssl: OpenSSLServer?
        defer { openssl?.stop() }
        let serverPort: Int
        if kind == "ours" {
            var options = environment.certificates.serverOptions()
            options.alpnProtocols = ["h2"]
            let server = try await TestHTTPServer.start(.init(tls: options))
            ours = server
            serverPort = server.port
        } else {
            try #require(OpenSSLServer.unavailableReason == nil || OpenSSLServer.isCI, "openssl is not installed")
            let server = try await OpenSSLServer.start(
                arguments: ["-cert", files.certificatePath, "-key", files.keyPath, "-www", "-alpn", "h2"]
            )
            openssl = server
            serverPort = server.port
        }
        let relay = try await CuttingRelay.start(to: serverPort, cut: .never)
        let cache = TLSSessionCache()
        let agent = Agent(configuration: self.configuration(cache))
        await self.expectRefusedTwice(agent, url: "https://localhost:\(relay.port)/hello", cache: cache) { error in
            error.code == .tlsHandshakeFailed && error.tlsReason == "tlsv1 alert no application protocol"
        }
        #expect(relay.accepted == 2)
        #expect((ours?.stats.requests ?? 0) == 0)
        await agent.shutdown()
        try await relay.shutdown()
        try await ours?.shutdown()
    }

    /// A server that selects a protocol we never offered (here "h2") would then speak it to a client that
    /// speaks HTTP/1.1. OpenSSL's client refuses that selection itself (RFC 7301 §3.2): the handshake fails.
    @Test(arguments: [TLSProtocolVersion.tls1_2, .tls1_3])
    func aServerSelectingAProtocolWeDidNotOfferIsRefused(version: TLSProtocolVersion) async throws {
        var options = environment.certificates.serverOptions(maximumVersion: version)
        options.alpnProtocols = ["h2"]
        options._testSelectsUnofferedALPN = true
        let server = try await TestHTTPServer.start(.init(tls: options))
        let cache = TLSSessionCache()
        try await withAgent(self.configuration(cache), server: server) { agent, server in
            await self.expectRefusedTwice(agent, url: server.url("/hello"), cache: cache) { error in
                error.code == .tlsHandshakeFailed && error.tlsReason == "bad extension"
            }
            #expect(server.stats.accepted == 2)
            #expect(server.stats.requests == 0)
        }
    }

    // MARK: - Handshakes cut short

    /// A real server's handshake, cut by a relay after its ServerHello record, or inside it (a record
    /// whose header announces more bytes than ever come), and closed.
    @Test(
        arguments: [CuttingRelay.Cut.afterRecords(1), .insideRecord(afterBytes: 0, keeping: 10)],
        [TLSProtocolVersion.tls1_2, .tls1_3]
    )
    func aHandshakeCutShortIsAHandshakeFailure(cut: CuttingRelay.Cut, version: TLSProtocolVersion) async throws {
        let server = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(maximumVersion: version))
        )
        let relay = try await CuttingRelay.start(to: server.port, cut: cut)
        let cache = TLSSessionCache()
        try await withAgent(self.configuration(cache), server: server) { agent, server in
            await self.expectRefusedTwice(agent, url: "https://localhost:\(relay.port)/hello", cache: cache) { error in
                error.code == .tlsHandshakeFailed
                    && error.message == "the server closed the connection during the TLS handshake"
                    && error.tlsReason == "the connection closed during the TLS handshake"
            }
            #expect(relay.accepted == 2)
            #expect(relay.cuts == 2)
            #expect(server.stats.requests == 0)
        }
        try await relay.shutdown()
    }

    /// A plain HTTP server on an https URL answers the ClientHello with text, not a TLS record.
    @Test func aPlainTextAnswerToTheClientHelloIsAHandshakeFailure() async throws {
        let server = try await ScriptedTCPServer.start(
            .reply("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", close: false)
        )
        let cache = TLSSessionCache()
        let agent = Agent(configuration: self.configuration(cache))
        await self.expectRefusedTwice(agent, url: "https://localhost:\(server.port)/", cache: cache) { error in
            error.code == .tlsHandshakeFailed && error.tlsReason == "wrong version number"
        }
        #expect(server.accepted == 2)
        await agent.shutdown()
        try await server.shutdown()
    }

    // MARK: - Sessions after a failure (C5)

    /// A session made with a server that verified, offered to what now answers at its host and port
    /// with a certificate that does not: the handshake is full (the new server cannot resume it), fails
    /// verification, and takes the key's sessions with it, so nothing is offered again.
    @Test(arguments: [TLSProtocolVersion.tls1_2, .tls1_3])
    func aFailedHandshakeDropsTheSessionsOfItsKey(version: TLSProtocolVersion) async throws {
        let certificates = environment.certificates
        let good = try await TestHTTPServer.start(.init(tls: certificates.serverOptions(maximumVersion: version)))
        let expiredCertificate = try CertificateRow.expired.certificate(certificates.authority)
        let expired = try await TestHTTPServer.start(
            .init(tls: certificates.serverOptions(certificate: expiredCertificate, maximumVersion: version))
        )
        // One host and port for the client; behind it, first the good server, then the expired one.
        let relay = try await CuttingRelay.start(to: good.port, cut: .never)
        let url = "https://localhost:\(relay.port)/hello"
        let cache = TLSSessionCache()
        // No keep-alive: each request dials, so each meets whatever server is behind the relay then.
        let agent = Agent(configuration: self.configuration(cache, keepAlive: false))

        #expect(try await agent.get(url).text() == "hello")
        #expect(await AgentLifecycleTests.waitFor { cache.stats.entries == 1 })
        relay.relay(to: expired.port)

        let first = await agentError { _ = try await agent.get(url) }
        #expect(first?.code == .certificateVerificationFailed)
        #expect(first?.verifyResultDescription == "certificate has expired")
        #expect(cache.stats.hits == 1)  // the session was offered…
        #expect(cache.stats.entries == 0)  // …and dropped with the failure
        #expect(cache.stats.invalidations == 1)
        let second = await agentError { _ = try await agent.get(url) }
        #expect(second?.code == .certificateVerificationFailed)
        #expect(cache.stats.hits == 1)  // nothing offered this time

        // The good server again: a full handshake, as the server counts it.
        relay.relay(to: good.port)
        let response = try await agent.get(url)
        #expect(try await response.text() == "hello")
        #expect(response.connection.tls?.sessionResumed == false)
        #expect(good.stats.fullHandshakes == 2 && good.stats.resumedHandshakes == 0)
        #expect(expired.stats.requests == 0)

        await agent.shutdown()
        try await relay.shutdown()
        try await good.shutdown()
        try await expired.shutdown()
    }

    // MARK: - Helpers

    /// Requests `url` twice; each attempt must fail as `matches` says, in the TLS handshake, naming the
    /// URL's host and port, with the request certainly not sent. Then nothing must be left: no
    /// connection in the Agent, no session in `cache`, and none offered to the second attempt.
    @discardableResult
    func expectRefusedTwice(
        _ agent: Agent,
        url: String,
        cache: TLSSessionCache,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ matches: (AgentError) -> Bool
    ) async -> [AgentError] {
        let request = try? HTTPRequest(method: .get, url: url)
        let host = request?.authority?.split(separator: ":").first.map(String.init)
        let port = request?.authority?.split(separator: ":").last.flatMap { Int($0) }
        var errors: [AgentError] = []
        for attempt in 1...2 {
            guard let error = await agentError({ _ = try await agent.get(url) }) else {
                Issue.record("attempt \(attempt) did not fail with an AgentError", sourceLocation: sourceLocation)
                continue
            }
            errors.append(error)
            #expect(matches(error), "attempt \(attempt): \(error)", sourceLocation: sourceLocation)
            #expect(error.phase == .tlsHandshake, "\(error)", sourceLocation: sourceLocation)
            #expect(error.host == host && error.port == port, "\(error)", sourceLocation: sourceLocation)
            #expect(!error.requestMayHaveBeenSent, "\(error)", sourceLocation: sourceLocation)
            #expect(
                error.description.hasPrefix("\(host ?? "?"):\(port ?? 0): TLS handshake: "),
                "\(error)",
                sourceLocation: sourceLocation
            )
        }
        #expect(
            await AgentLifecycleTests.waitFor { agent.stats.totalConnections == 0 },
            sourceLocation: sourceLocation
        )
        let stats = cache.stats
        #expect(stats.entries == 0, "a session was kept: \(stats)", sourceLocation: sourceLocation)
        #expect(stats.hits == 0 && stats.misses == 2, "\(stats)", sourceLocation: sourceLocation)
        return errors
    }
}
