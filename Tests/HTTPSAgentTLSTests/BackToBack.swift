import HTTPSAgentTLS
import NIOCore
import NIOEmbedded

/// A test PKI: a CA and a server certificate for localhost, 127.0.0.1 and ::1.
struct TestPKI {
    let authority: CertificateAuthority
    let server: PEMCertificateAndKey

    init() throws {
        self.authority = try CertificateAuthority()
        self.server = try self.authority.issue(
            commonName: "localhost",
            dnsNames: ["localhost"],
            ipAddresses: ["127.0.0.1", "::1"]
        )
    }

    var trustRoots: TrustRootSource { .pem(.bytes(Array(self.authority.certificatePEM.utf8))) }

    func serverOptions(
        certificate: PEMCertificateAndKey? = nil,
        minimumVersion: TLSProtocolVersion = .tls1_2,
        maximumVersion: TLSProtocolVersion? = nil,
        clientTrustRoots: TrustRootSource? = nil,
        alpn: [String] = ["http/1.1"]
    ) -> TLSContextOptions {
        let certificate = certificate ?? self.server
        return TLSContextOptions(
            role: .server,
            trustRoots: clientTrustRoots,
            minimumVersion: minimumVersion,
            maximumVersion: maximumVersion,
            alpnProtocols: alpn,
            certificateChain: .bytes(Array(certificate.certificatePEM.utf8)),
            privateKey: .bytes(Array(certificate.privateKeyPEM.utf8))
        )
    }

    func clientOptions(
        verification: PeerVerification = .full,
        minimumVersion: TLSProtocolVersion = .tls1_2,
        clientCertificate: PEMCertificateAndKey? = nil
    ) -> TLSContextOptions {
        TLSContextOptions(
            role: .client,
            trustRoots: self.trustRoots,
            verification: verification,
            minimumVersion: minimumVersion,
            certificateChain: clientCertificate.map { .bytes(Array($0.certificatePEM.utf8)) },
            privateKey: clientCertificate.map { .bytes(Array($0.privateKeyPEM.utf8)) }
        )
    }
}

/// A client and a server channel joined in memory, pumped until neither has anything to send.
final class BackToBack {
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    let clientHandshake: EventLoopPromise<TLSConnectionInfo>
    let serverHandshake: EventLoopPromise<TLSConnectionInfo>
    let clientHandler: TLSHandler
    let serverHandler: TLSHandler

    init(client clientOptions: TLSContextOptions, server serverOptions: TLSContextOptions, host: String) throws {
        let clientConnection = try SSLConnectionBox(
            context: SSLContextBox(options: clientOptions),
            serverHostname: host
        )
        let serverConnection = try SSLConnectionBox(context: SSLContextBox(options: serverOptions), serverHostname: nil)
        self.clientHandshake = self.client.eventLoop.makePromise()
        self.serverHandshake = self.server.eventLoop.makePromise()
        self.clientHandler = TLSHandler(connection: clientConnection, handshakePromise: self.clientHandshake)
        self.serverHandler = TLSHandler(connection: serverConnection, handshakePromise: self.serverHandshake)
        try self.server.pipeline.syncOperations.addHandler(self.serverHandler)
        try self.client.pipeline.syncOperations.addHandler(self.clientHandler)
    }

    deinit {
        // An EmbeddedChannel and its pipeline keep each other alive until the channel closes.
        _ = try? self.client.finish(acceptAlreadyClosed: true)
        _ = try? self.server.finish(acceptAlreadyClosed: true)
    }

    /// Activates both channels and runs the handshake to its end, successful or not.
    func connect() throws {
        _ = try self.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        _ = try self.client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try self.pump()
    }

    /// Moves bytes both ways until both sides are quiet.
    func pump() throws {
        var moved = true
        while moved {
            moved = false
            while let bytes = try self.client.readOutbound(as: ByteBuffer.self) {
                moved = true
                if self.server.isActive { self.deliver(bytes, to: self.server) }
            }
            while let bytes = try self.server.readOutbound(as: ByteBuffer.self) {
                moved = true
                if self.client.isActive { self.deliver(bytes, to: self.client) }
            }
        }
    }

    /// Errors the pipelines fired while bytes were delivered, in order.
    private(set) var caughtErrors: [any Error] = []

    private func deliver(_ bytes: ByteBuffer, to channel: EmbeddedChannel) {
        do {
            try channel.writeInbound(bytes)
        } catch {
            // EmbeddedChannel rethrows errors fired through the pipeline; tests look at them here.
            self.caughtErrors.append(error)
        }
    }

    /// Everything the channel delivered as plaintext, joined.
    static func received(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let buffer = try channel.readInbound(as: ByteBuffer.self) {
            text += String(buffer: buffer)
        }
        return text
    }

    /// The result of a promise the test expects to be completed already.
    static func result<T>(_ promise: EventLoopPromise<T>) -> Result<T, any Error>? {
        var result: Result<T, any Error>?
        promise.futureResult.assumeIsolated().whenComplete { result = $0 }
        return result
    }
}
