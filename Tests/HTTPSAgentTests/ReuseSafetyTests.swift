import Foundation
import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import NIOCore
import Testing

@testable import HTTPSAgent

/// A connection, a TLS context or a session made for one origin or TLS configuration is never used for
/// another, and a connection whose response body is still on the wire is never handed to a request.
/// Modelled on curl's reuse advisories: CVE-2021-22924 (trust paths compared loosely), CVE-2022-27782
/// (TLS options missing from the reuse key) and CVE-2021-22890 (sessions filed under the wrong host).
@Suite("Reuse safety")
struct ReuseSafetyTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    // MARK: - Keys compare bytes, not canonically equivalent text

    /// "café.pem" with a precomposed "é", and with "e" and a combining acute accent: equal Swift strings,
    /// two different files on Linux.
    static let precomposed = "caf\u{E9}.pem"
    static let decomposed = "cafe\u{301}.pem"

    @Test func canonicallyEquivalentPathsAreDifferentKeys() throws {
        #expect(Self.precomposed == Self.decomposed, "the premise: Swift calls them equal")
        let first = TLSConfiguration(trustRoots: .file("/etc/" + Self.precomposed))
        let second = TLSConfiguration(trustRoots: .file("/etc/" + Self.decomposed))
        #expect(first != second)
        #expect(TLSConfiguration.TrustRoots.pem(Self.precomposed) != .pem(Self.decomposed))
        let certificate = TLSConfiguration.ClientCertificate.files(certificateChain: Self.precomposed, privateKey: "k")
        #expect(certificate != .files(certificateChain: Self.decomposed, privateKey: "k"))
        #expect(certificate == .files(certificateChain: Self.precomposed, privateKey: "k"))
        #expect(PEMSource.file(Self.precomposed) != .file(Self.decomposed))
        #expect(PEMSource.file(Self.precomposed) == .file(Self.precomposed))
        // And so are the pool's keys.
        let origin = Origin(scheme: .https, host: "localhost", port: 443, tls: first)
        var other = origin
        other.tls = second
        #expect(origin != other)
        #expect(Set([origin, other]).count == 2)
    }

    @Test func trustFilesWithCanonicallyEquivalentNamesGetTheirOwnContexts() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let stranger = try CertificateAuthority(commonName: "Stranger")
        try environment.certificates.caPEM.write(
            toFile: directory + "/" + Self.precomposed,
            atomically: true,
            encoding: .utf8
        )
        try stranger.certificatePEM.write(toFile: directory + "/" + Self.decomposed, atomically: true, encoding: .utf8)
        let contexts = SSLContextCache()
        let ours = try contexts.context(
            for: TLSContextOptions(role: .client, trustRoots: .pem(.file(directory + "/" + Self.precomposed)))
        )
        let theirs = try contexts.context(
            for: TLSContextOptions(role: .client, trustRoots: .pem(.file(directory + "/" + Self.decomposed)))
        )
        #expect(ours !== theirs)
        #expect(ours.identity != theirs.identity)
        #expect(contexts.count == 2)
    }

    @Test func aSharedSessionCacheNeverLendsASessionAcrossTrustFiles() async throws {
        // Two Agents share a session cache; their trust files have canonically equivalent names. The one
        // trusting only a stranger must fail verification, whatever the other has resumed and cached.
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let stranger = try CertificateAuthority(commonName: "Stranger")
        let trusted = directory + "/" + Self.precomposed
        let untrusted = directory + "/" + Self.decomposed
        try environment.certificates.caPEM.write(toFile: trusted, atomically: true, encoding: .utf8)
        try stranger.certificatePEM.write(toFile: untrusted, atomically: true, encoding: .utf8)

        let server = try await environment.tlsServer()
        let cache = TLSSessionCache()
        func agent(trusting path: String) -> Agent {
            var configuration = environment.configuration(keepAlive: false)
            configuration.tls = TLSConfiguration(trustRoots: .file(path))
            configuration.sessionCache = cache
            return Agent(configuration: configuration)
        }
        let first = agent(trusting: trusted)
        for _ in 0..<2 {
            _ = try await first.get(server.url("/hello")).text()
        }
        #expect(server.stats.resumedHandshakes == 1)
        #expect(cache.stats.entries == 1)

        let second = agent(trusting: untrusted)
        let error = await agentError { _ = try await second.get(server.url("/hello")) }
        #expect(error?.code == .certificateVerificationFailed)
        #expect(error?.phase == .tlsHandshake)
        #expect(server.stats.resumedHandshakes == 1, "no session was offered across the trust files")
        #expect(server.stats.requests == 2)
        await first.shutdown()
        await second.shutdown()
        try await server.shutdown()
    }

    // MARK: - The pool's key

    @Test func aHostAliasOfTheSameServerGetsItsOwnConnection() async throws {
        // One server, reached as "localhost" and as "127.0.0.1": two origins, so two connections, each
        // reused only for its own name (the server's SNI report tells which name a connection was for).
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            var connectionOf: [String: Int] = [:]
            for round in 0..<6 {
                let host = round.isMultiple(of: 2) ? "localhost" : "127.0.0.1"
                let response = try await agent.get("https://\(host):\(server.port)/hello")
                #expect(try await response.text() == "hello")
                let sni = response.headerFields[HTTPField.Name("X-TLS-SNI")!]
                #expect(sni == (host == "localhost" ? "localhost" : "-"))
                let id = try #require(response.serverConnectionID)
                #expect(connectionOf[host, default: id] == id, "\(host) stays on its own connection")
                connectionOf[host] = id
            }
            #expect(Set(connectionOf.values).count == 2)
            #expect(server.stats.accepted == 2)
        }
    }

    @Test func spellingsOfOneHostShareItsConnection() async throws {
        // Case and a trailing dot do not make another host: these may, and do, share.
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            for host in ["localhost", "LOCALHOST", "localhost.", "LocalHost."] {
                let response = try await agent.get("https://\(host):\(server.port)/hello")
                #expect(try await response.text() == "hello")
            }
            #expect(server.stats.accepted == 1)
            #expect(agent.stats.origins.count == 1)
        }
    }

    @Test func anotherPortIsAnotherPool() async throws {
        let second = try await environment.tlsServer()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, first in
            for _ in 0..<3 {
                _ = try await agent.get(first.url("/hello")).text()
                _ = try await agent.get(second.url("/hello")).text()
            }
            #expect(first.stats.accepted == 1 && first.stats.requests == 3)
            #expect(second.stats.accepted == 1 && second.stats.requests == 3)
            #expect(agent.stats.origins.count == 2)
        }
        try await second.shutdown()
    }

    // MARK: - Unread bodies

    /// Whether `buffer` is the server's `/bytes/N` payload: the alphabet, over and over.
    static func isPayload(_ buffer: ByteBuffer, count: Int) -> Bool {
        buffer.readableBytes == count
            && buffer.readableBytesView.enumerated().allSatisfy { index, byte in
                byte == UInt8(ascii: "a") + UInt8(index % 26)
            }
    }

    @Test func aConnectionWhoseBodyIsStillComingIsNotLent() async throws {
        let size = 4 << 20
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // The first body is held unread (the reader is behind, so most of it is still on the wire).
            let held = try await agent.get(server.url("/bytes/\(size)"))
            let second = try await agent.get(server.url("/bytes/1000"))
            #expect(second.serverConnectionID != held.serverConnectionID)
            #expect(Self.isPayload(try await second.body.collect(upTo: 1 << 20), count: 1000))
            // Both bodies arrive whole and unmixed.
            #expect(Self.isPayload(try await held.body.collect(upTo: 8 << 20), count: size))
            #expect(server.stats.accepted == 2)
        }
    }

    @Test(arguments: [0, 1])
    func aBodyDroppedBeforeItsEndTakesItsConnectionWithIt(piecesRead: Int) async throws {
        let size = 4 << 20
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            do {
                let response = try await agent.get(server.url("/bytes/\(size)"))
                var iterator = response.body.makeAsyncIterator()
                for _ in 0..<piecesRead {
                    _ = try await iterator.next()
                }
            }
            // The rest of that body is not taken for the next response: a new connection carries it.
            let next = try await agent.get(server.url("/bytes/1000"))
            #expect(Self.isPayload(try await next.body.collect(upTo: 1 << 20), count: 1000))
            #expect(!next.connection.isReused)
            #expect(server.stats.accepted == 2)
            #expect(await server.waitUntil { $0.open == 1 })
        }
    }

    @Test func aCompleteBodyDroppedUnreadLeavesAReusableConnection() async throws {
        // The body was all received before it was dropped: nothing of it is left on the wire.
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            do {
                let response = try await agent.get(server.url("/bytes/100"))
                #expect(response.status == .ok)
                // Wait for the connection to come back to the pool with the whole body read off the wire.
                #expect(await Self.waitUntilFree(agent))
            }
            let next = try await agent.get(server.url("/bytes/1000"))
            #expect(Self.isPayload(try await next.body.collect(upTo: 1 << 20), count: 1000))
            #expect(next.connection.isReused)
            #expect(server.stats.accepted == 1)
        }
    }

    static func waitUntilFree(_ agent: Agent) async -> Bool {
        for _ in 0..<3000 {
            if agent.stats.origins.first?.free == 1 { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "reuse-safety-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
