import HTTPSAgentTLS
import NIOCore
import NIOEmbedded
import Testing

/// Sessions captured from real handshakes between our client and server roles, in memory.
@Suite("Session capture from real handshakes")
struct SessionCaptureTests {
    let pki: TestPKI

    init() throws {
        self.pki = try TestPKI()
    }

    /// Runs one handshake (and reads what follows it) with `offer` offered, returning the sessions the
    /// client received and whether the server resumed.
    func connect(
        server serverContext: SSLContextBox,
        offer: SSLSessionBox? = nil
    ) throws -> (sessions: [SSLSessionBox], resumed: Bool) {
        let clientContext = try SSLContextBox(options: pki.clientOptions())
        let clientConnection = try SSLConnectionBox(context: clientContext, serverHostname: "localhost")
        var received: [SSLSessionBox] = []
        clientConnection.onNewSession = { received.append($0) }
        if let offer { clientConnection.offer(offer) }
        let client = EmbeddedChannel()
        let server = EmbeddedChannel()
        defer {
            // An EmbeddedChannel and its pipeline keep each other alive until the channel closes.
            _ = try? client.finish(acceptAlreadyClosed: true)
            _ = try? server.finish(acceptAlreadyClosed: true)
        }
        let clientHandshake = client.eventLoop.makePromise(of: TLSConnectionInfo.self)
        try client.pipeline.syncOperations.addHandler(
            TLSHandler(connection: clientConnection, handshakePromise: clientHandshake)
        )
        try server.pipeline.syncOperations.addHandler(
            TLSHandler(connection: SSLConnectionBox(context: serverContext, serverHostname: nil))
        )
        _ = try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        _ = try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var moved = true
        while moved {
            moved = false
            while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                moved = true
                try server.writeInbound(bytes)
            }
            while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                moved = true
                try client.writeInbound(bytes)
            }
        }
        let info = try #require(BackToBack.result(clientHandshake)).get()
        return (received, info.sessionReused)
    }

    @Test(
        arguments: [
            ("TLS 1.3", TLSProtocolVersion?.none, true),
            ("TLS 1.2 tickets", TLSProtocolVersion.tls1_2, true),
        ]
    )
    func theServersLifetimeIsTheSessionsLifetime(kind: String, maximum: TLSProtocolVersion?, tickets: Bool) throws {
        var options = pki.serverOptions(maximumVersion: maximum)
        options.sessionTickets = tickets
        options.sessionTimeout = 60
        let sessions = try self.connect(server: SSLContextBox(options: options)).sessions
        try #require(!sessions.isEmpty, "\(kind)")
        for session in sessions {
            #expect(session.lifetime == 60, "\(kind)")
            #expect(session.isResumable)
        }
    }

    @Test func aSessionIDWithoutTicketKeepsTheClientsTimeout() throws {
        var options = pki.serverOptions(maximumVersion: .tls1_2)
        options.sessionTickets = false
        options.sessionTimeout = 60
        let sessions = try self.connect(server: SSLContextBox(options: options)).sessions
        let session = try #require(sessions.first)
        // No hint travels with a session ID: the client's own default applies (and the cache's cap).
        #expect(session.lifetime > 0)
        #expect(!session.isSingleUse)
    }

    @Test func aTicketFromAResumedConnectionKeepsTheOriginalVerificationTime() throws {
        // One server context throughout: its ticket keys must open the tickets it issued.
        let server = try SSLContextBox(options: pki.serverOptions())
        let first = try #require(try self.connect(server: server).sessions.first)
        #expect(first.verifiedAt == first.createdAt)
        // Pretend the full handshake was long ago.
        let old = try #require(SSLSessionBox(der: first.derEncoded(), verifiedAt: 1_000))
        let second = try self.connect(server: server, offer: old)
        #expect(second.resumed)
        let renewed = try #require(second.sessions.first)
        #expect(renewed.verifiedAt == 1_000)
        #expect(renewed.createdAt > 1_000)
    }

    @Test func aTLS12SessionResumesRepeatedlyAndStaysUnchanged() throws {
        let server = try SSLContextBox(options: pki.serverOptions(maximumVersion: .tls1_2))
        let session = try #require(try self.connect(server: server).sessions.first)
        let before = session.derEncoded()
        #expect(try self.connect(server: server, offer: session).resumed)
        #expect(try self.connect(server: server, offer: session).resumed)
        #expect(session.derEncoded() == before)
    }
}
