import HTTPSAgent
import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// TLS session resumption against the in-process server, counted by the server (OpenSSL's
/// `SSL_session_reused` on its side, reported per response as `X-TLS-Resumed`).
@Suite("TLS session resumption")
struct SessionResumptionTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    func reconnectingAgent(cache: TLSSessionCache? = TLSSessionCache(), tls: TLSConfiguration? = nil) -> Agent {
        var configuration = environment.configuration(keepAlive: false)
        configuration.sessionCache = cache
        if let tls { configuration.tls = tls }
        return Agent(configuration: configuration)
    }

    /// Sends `count` requests, one connection each, and checks the client's flag against the server's.
    func requests(_ count: Int, agent: Agent, url: String) async throws -> (resumed: Int, full: Int) {
        var resumed = 0
        for _ in 0..<count {
            let response = try await agent.get(url)
            _ = try await response.text()
            let serverSaysResumed = response.headerFields[HTTPField.Name("X-TLS-Resumed")!] == "1"
            #expect(response.connection.tls?.sessionResumed == serverSaysResumed)
            if serverSaysResumed { resumed += 1 }
        }
        return (resumed, count - resumed)
    }

    /// Replaces the file at `path` with `bytes`, mode 0600.
    func writeFile(_ bytes: [UInt8], to path: String) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
    }

    /// Rewrites every entry of the session file at `path` (with a valid checksum).
    func rewriteEntries(at path: String, _ change: (PersistedSession) -> PersistedSession) throws -> Int {
        let entries = try SessionCodec.decode(#require(FileContents.read(path))).map(change)
        self.writeFile(SessionCodec.encode(entries), to: path)
        return entries.count
    }

    @Test(
        arguments: [
            ("TLS 1.3 tickets", TLSProtocolVersion?.none, true),
            ("TLS 1.2 tickets", TLSProtocolVersion.tls1_2, true),
            ("TLS 1.2 session IDs", TLSProtocolVersion.tls1_2, false),
        ]
    )
    func fiftyReconnectsMakeOneFullHandshake(kind: String, maximum: TLSProtocolVersion?, tickets: Bool) async throws {
        let server = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(maximumVersion: maximum, sessionTickets: tickets))
        )
        let agent = self.reconnectingAgent()
        let counts = try await self.requests(50, agent: agent, url: server.url("/hello"))
        #expect(counts.resumed == 49, "\(kind)")
        #expect(server.stats.fullHandshakes == 1, "\(kind)")
        #expect(server.stats.resumedHandshakes == 49, "\(kind)")
        #expect(server.stats.accepted == 50)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func withTheCacheDisabledNothingIsResumed() async throws {
        let server = try await environment.tlsServer()
        let agent = self.reconnectingAgent(cache: nil)
        let counts = try await self.requests(10, agent: agent, url: server.url("/hello"))
        #expect(counts.resumed == 0)
        #expect(server.stats.resumedHandshakes == 0)
        #expect(server.stats.fullHandshakes == 10)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func aSessionForOneHostIsNeverOfferedToAnother() async throws {
        let server = try await environment.tlsServer()
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(3, agent: agent, url: "https://localhost:\(server.port)/hello")
        // Same server, same certificate (it names both), other host: a full handshake.
        let other = try await self.requests(1, agent: agent, url: "https://127.0.0.1:\(server.port)/hello")
        #expect(other.full == 1)
        #expect(server.stats.fullHandshakes == 2)
        #expect(cache.stats.entries == 2)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func aSessionForOnePortIsNeverOfferedToAnother() async throws {
        let first = try await environment.tlsServer()
        let second = try await environment.tlsServer()
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(2, agent: agent, url: first.url("/hello"))
        let other = try await self.requests(1, agent: agent, url: second.url("/hello"))
        #expect(other.full == 1)
        #expect(second.stats.fullHandshakes == 1 && second.stats.resumedHandshakes == 0)
        await agent.shutdown()
        try await first.shutdown()
        try await second.shutdown()
    }

    @Test func agentsWithEqualConfigurationsShareACacheAndOthersDoNot() async throws {
        let server = try await environment.tlsServer()
        let cache = TLSSessionCache()
        let first = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(1, agent: first, url: server.url("/hello"))

        // Same configuration, another Agent: resumes on its first connection.
        let twin = self.reconnectingAgent(cache: cache)
        #expect(try await self.requests(1, agent: twin, url: server.url("/hello")).resumed == 1)

        // Each differs in one field of its TLS configuration: none may use the first one's sessions.
        let stranger = try CertificateAuthority(commonName: "Another CA")
        var moreRoots = environment.tls
        moreRoots.trustRoots = .pem(environment.certificates.caPEM + stranger.certificatePEM)
        var newerOnly = environment.tls
        newerOnly.minimumVersion = .tls1_3
        var noNameCheck = environment.tls
        noNameCheck.certificateVerification = .noHostnameVerification
        let clientIdentity = try environment.certificates.authority.issue(commonName: "client", clientAuth: true)
        var withCertificate = environment.tls
        withCertificate.clientCertificate = .pem(
            certificateChain: clientIdentity.certificatePEM,
            privateKey: clientIdentity.privateKeyPEM
        )
        for tls in [moreRoots, newerOnly, noNameCheck, withCertificate] {
            let agent = self.reconnectingAgent(cache: cache, tls: tls)
            let counts = try await self.requests(2, agent: agent, url: server.url("/hello"))
            // The first connection under the new configuration is full; the second resumes its own.
            #expect(counts.full == 1 && counts.resumed == 1)
            await agent.shutdown()
        }
        #expect(server.stats.fullHandshakes == 5)
        await first.shutdown()
        await twin.shutdown()
        try await server.shutdown()
    }

    @Test func aTLSFailureDropsTheSessionsOfItsKey() async throws {
        let good = try await environment.tlsServer()
        let port = good.port
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(2, agent: agent, url: "https://localhost:\(port)/hello")
        #expect(cache.stats.entries == 1)
        try await good.shutdown()

        // Another server on the same port, with a certificate that does not verify: the session we
        // offer is not resumed, verification fails, and the key's sessions are dropped.
        let wrong = try environment.certificates.authority.issue(commonName: "other", dnsNames: ["other.example"])
        let impostor = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(certificate: wrong), port: port)
        )
        await #expect {
            _ = try await agent.get("https://localhost:\(port)/hello")
        } throws: { error in
            (error as? AgentError)?.code == .certificateVerificationFailed
        }
        #expect(cache.stats.entries == 0)
        #expect(cache.stats.invalidations == 1)
        await agent.shutdown()
        try await impostor.shutdown()
    }

    @Test func aHandshakeThatFailsAfterOfferingASessionDropsIt() async throws {
        let good = try await environment.tlsServer()
        let port = good.port
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(2, agent: agent, url: "https://localhost:\(port)/hello")
        #expect(cache.stats.entries == 1)
        try await good.shutdown()
        // Something on that port now reads the ClientHello (with the offered session in it) and closes:
        // no TLS alert, no OpenSSL error, but that session must not be offered again and again.
        let resetter = try await ScriptedTCPServer.start(.reply("", close: true), port: port)
        await #expect(throws: AgentError.self) {
            _ = try await agent.get("https://localhost:\(port)/hello")
        }
        #expect(await AgentLifecycleTests.waitFor { cache.stats.entries == 0 })
        #expect(cache.stats.invalidations == 1)
        await agent.shutdown()
        try await resetter.shutdown()
    }

    @Test func onlyAPrivateRegularFileIsLoaded() async throws {
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let cache = TLSSessionCache()
        let good = files.directory + "/sessions.bin"
        try cache.save(to: good)
        try cache.load(from: good)

        func refused(_ path: String, _ reason: String) {
            #expect {
                try TLSSessionCache().load(from: path)
            } throws: { error in
                (error as? TLSSessionCache.FileError)?.reason.contains(reason) == true
            }
        }
        let link = files.directory + "/link.bin"
        symlink(good, link)
        refused(link, "cannot be opened")
        let shared = files.directory + "/shared.bin"
        try cache.save(to: shared)
        chmod(shared, 0o666)
        refused(shared, "other users can write")
        let foreign = files.directory + "/foreign.bin"
        try cache.save(to: foreign)
        if geteuid() == 0 {
            chown(foreign, 65_534, 65_534)
            refused(foreign, "belongs to another user")
        }
        let fifo = files.directory + "/fifo"
        mkfifo(fifo, 0o600)
        refused(fifo, "not a regular file")
        let huge = files.directory + "/huge.bin"
        let descriptor = open(huge, O_WRONLY | O_CREAT, 0o600)
        ftruncate(descriptor, off_t(32 << 20))
        close(descriptor)
        refused(huge, "larger than")
        for path in [good, link, shared, foreign, fifo, huge] { unlink(path) }
    }

    @Test func aPersistedCacheResumesOnTheFirstConnectionOfANewAgent() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let path = files.directory + "/sessions.bin"
        defer { unlink(path) }

        let firstCache = TLSSessionCache()
        let first = self.reconnectingAgent(cache: firstCache)
        _ = try await self.requests(1, agent: first, url: server.url("/hello"))
        await first.shutdown()
        try firstCache.save(to: path)

        // A private file, without the host name in it.
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        let bytes = try #require(FileContents.read(path))
        #expect(!String(decoding: bytes, as: UTF8.self).contains("localhost"))
        #expect(try SessionCodec.decode(bytes).count >= 1)

        let secondCache = TLSSessionCache()
        try secondCache.load(from: path)
        let second = self.reconnectingAgent(cache: secondCache)
        let counts = try await self.requests(1, agent: second, url: server.url("/hello"))
        #expect(counts.resumed == 1)
        #expect(server.stats.fullHandshakes == 1 && server.stats.resumedHandshakes == 1)

        // A loaded session answers only to its own key.
        let third = TLSSessionCache()
        try third.load(from: path)
        let elsewhere = self.reconnectingAgent(cache: third)
        #expect(try await self.requests(1, agent: elsewhere, url: "https://127.0.0.1:\(server.port)/hello").full == 1)
        await second.shutdown()
        await elsewhere.shutdown()
        try await server.shutdown()
    }

    @Test func sessionsTiedToAClientCertificateAreNeverWritten() async throws {
        let client = try environment.certificates.authority.issue(commonName: "client", clientAuth: true)
        var options = environment.certificates.serverOptions()
        options.trustRoots = .pem(.bytes(Array(environment.certificates.caPEM.utf8)))
        let server = try await TestHTTPServer.start(.init(tls: options))
        var tls = environment.tls
        tls.clientCertificate = .pem(certificateChain: client.certificatePEM, privateKey: client.privateKeyPEM)
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache, tls: tls)
        let counts = try await self.requests(3, agent: agent, url: server.url("/hello"))
        #expect(counts.resumed == 2)  // resumed in memory
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let path = files.directory + "/sessions.bin"
        defer { unlink(path) }
        try cache.save(to: path)
        #expect(try SessionCodec.decode(#require(FileContents.read(path))).isEmpty)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func corruptTruncatedAndForeignFilesAreRefusedAndChangeNothing() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(1, agent: agent, url: server.url("/hello"))
        let good = files.directory + "/good.bin"
        try cache.save(to: good)
        let valid = try #require(FileContents.read(good))

        var flipped = valid
        flipped[flipped.count / 2] ^= 0x40
        let cases: [(String, [UInt8])] = [
            ("truncated", Array(valid.prefix(valid.count - 10))),
            ("corrupt", flipped),
            ("foreign", Array("-----BEGIN CERTIFICATE-----\nMIIB\n".utf8)),
            ("empty", []),
        ]
        for (name, bytes) in cases {
            let path = files.directory + "/\(name).bin"
            self.writeFile(bytes, to: path)
            let fresh = TLSSessionCache()
            #expect(throws: TLSSessionCache.FileError.self, "\(name)") { try fresh.load(from: path) }
            let freshAgent = self.reconnectingAgent(cache: fresh)
            #expect(try await self.requests(1, agent: freshAgent, url: server.url("/hello")).full == 1, "\(name)")
            await freshAgent.shutdown()
            unlink(path)
        }
        #expect(throws: TLSSessionCache.FileError.self) { try cache.load(from: files.directory + "/missing.bin") }
        unlink(good)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func anEntryAlteredWithAValidChecksumIsNeverOffered() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(1, agent: agent, url: server.url("/hello"))
        let path = files.directory + "/sessions.bin"
        defer { unlink(path) }
        try cache.save(to: path)
        // Someone extends the lifetimes and recomputes the (unkeyed) checksum: the file loads, but the
        // seal binds each lifetime, so nothing opens and nothing is offered.
        _ = try self.rewriteEntries(at: path) { entry in
            PersistedSession(
                salt: entry.salt,
                keyHash: entry.keyHash,
                expiresAt: entry.expiresAt + 86_400,
                sealed: entry.sealed
            )
        }
        let fresh = TLSSessionCache()
        try fresh.load(from: path)
        let freshAgent = self.reconnectingAgent(cache: fresh)
        #expect(try await self.requests(1, agent: freshAgent, url: server.url("/hello")).full == 1)
        #expect(server.stats.resumedHandshakes == 0)
        await freshAgent.shutdown()
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func expiredEntriesAreDroppedOnLoad() async throws {
        let server = try await environment.tlsServer()
        let files = try environment.certificates.writeFiles()
        defer { files.remove() }
        let cache = TLSSessionCache()
        let agent = self.reconnectingAgent(cache: cache)
        _ = try await self.requests(1, agent: agent, url: server.url("/hello"))
        let path = files.directory + "/sessions.bin"
        try cache.save(to: path)
        // Rewrite the file with every entry already expired.
        let count = try self.rewriteEntries(at: path) { entry in
            PersistedSession(salt: entry.salt, keyHash: entry.keyHash, expiresAt: 1_000, sealed: entry.sealed)
        }

        let fresh = TLSSessionCache()
        try fresh.load(from: path)
        #expect(fresh.stats.expirations == count)
        let freshAgent = self.reconnectingAgent(cache: fresh)
        #expect(try await self.requests(1, agent: freshAgent, url: server.url("/hello")).full == 1)
        unlink(path)
        await freshAgent.shutdown()
        await agent.shutdown()
        try await server.shutdown()
    }
}
