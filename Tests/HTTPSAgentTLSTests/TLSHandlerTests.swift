import HTTPSAgentTLS
import NIOCore
import NIOEmbedded
import Testing

@Suite("TLS handler, client and server in memory")
struct TLSHandlerTests {
    let pki: TestPKI

    init() throws {
        self.pki = try TestPKI()
    }

    @Test func handshakeNegotiatesTLS13AndALPNThenCarriesData() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        try pair.connect()
        let info = try #require(try BackToBack.result(pair.clientHandshake)?.get())
        #expect(info.protocolVersion == "TLSv1.3")
        #expect(info.alpn == "http/1.1")
        #expect(info.sessionReused == false)
        #expect(info.peerSubject?.contains("CN=localhost") == true)

        try pair.client.writeAndFlush(ByteBuffer(string: "hello over TLS")).wait()
        try pair.pump()
        #expect(try BackToBack.received(pair.server) == "hello over TLS")

        try pair.server.writeAndFlush(ByteBuffer(string: "and back")).wait()
        try pair.pump()
        #expect(try BackToBack.received(pair.client) == "and back")
    }

    @Test func largeWritesArriveWholeAndInOrder() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        try pair.connect()
        var payload = ByteBuffer()
        for index in 0..<(1 << 20) {
            payload.writeInteger(UInt8(truncatingIfNeeded: index &* 31))
        }
        // One pump delivers it all at once: reads stop at their size limit and must resume, not fail.
        try pair.server.writeAndFlush(payload).wait()
        try pair.pump()
        var received = ByteBuffer()
        while var chunk = try pair.client.readInbound(as: ByteBuffer.self) {
            received.writeBuffer(&chunk)
        }
        #expect(received == payload)
        #expect(pair.caughtErrors.isEmpty)
    }

    @Test func writesBeforeTheHandshakeAreSentAfterIt() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        _ = try pair.server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        _ = try pair.client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let written = pair.client.writeAndFlush(ByteBuffer(string: "early"))
        try pair.pump()
        try written.wait()
        #expect(try BackToBack.received(pair.server) == "early")
    }

    @Test func tls12CanBeNegotiated() throws {
        let pair = try BackToBack(
            client: pki.clientOptions(),
            server: pki.serverOptions(maximumVersion: .tls1_2),
            host: "localhost"
        )
        try pair.connect()
        let info = try #require(try BackToBack.result(pair.clientHandshake)?.get())
        #expect(info.protocolVersion == "TLSv1.2")
    }

    @Test func ipLiteralIsVerifiedAgainstTheIPAddressSAN() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "127.0.0.1")
        try pair.connect()
        #expect(try BackToBack.result(pair.clientHandshake)?.get() != nil)
    }

    @Test(
        "certificate failures carry the verify result in words",
        arguments: [
            CertificateCase.wrongHostname,
            .expired,
            .notYetValid,
            .unknownAuthority,
            .selfSigned,
            .wrongIPAddress,
        ]
    )
    func certificateFailure(_ testCase: CertificateCase) throws {
        let (certificate, host) = try testCase.make(pki)
        let pair = try BackToBack(
            client: pki.clientOptions(),
            server: pki.serverOptions(certificate: certificate),
            host: host
        )
        try pair.connect()
        let result = try #require(BackToBack.result(pair.clientHandshake))
        #expect(throws: TLSFailure.self) { try result.get() }
        guard case .failure(let error) = result, let failure = error as? TLSFailure else { return }
        #expect(failure.kind == .certificateVerificationFailed)
        #expect(failure.reason == "certificate verify failed")
        #expect(failure.verifyResultDescription == testCase.expectedDescription)
        #expect(!pair.client.isActive)
    }

    @Test func verificationNoneAcceptsAnyCertificate() throws {
        let selfSigned = try CertificateAuthority.selfSigned(commonName: "nobody", dnsNames: ["nobody.invalid"])
        let pair = try BackToBack(
            client: pki.clientOptions(verification: .none),
            server: pki.serverOptions(certificate: selfSigned),
            host: "localhost"
        )
        try pair.connect()
        #expect(try BackToBack.result(pair.clientHandshake)?.get() != nil)
    }

    @Test func noHostnameVerificationStillChecksTheChain() throws {
        let other = try pki.authority.issue(commonName: "other", dnsNames: ["other.example"])
        let accepted = try BackToBack(
            client: pki.clientOptions(verification: .noHostnameVerification),
            server: pki.serverOptions(certificate: other),
            host: "localhost"
        )
        try accepted.connect()
        #expect(try BackToBack.result(accepted.clientHandshake)?.get() != nil)

        let selfSigned = try CertificateAuthority.selfSigned(commonName: "localhost", dnsNames: ["localhost"])
        let rejected = try BackToBack(
            client: pki.clientOptions(verification: .noHostnameVerification),
            server: pki.serverOptions(certificate: selfSigned),
            host: "localhost"
        )
        try rejected.connect()
        #expect(throws: TLSFailure.self) { try BackToBack.result(rejected.clientHandshake)?.get() }
    }

    @Test func minimumVersionIsEnforced() throws {
        let pair = try BackToBack(
            client: pki.clientOptions(minimumVersion: .tls1_3),
            server: pki.serverOptions(maximumVersion: .tls1_2),
            host: "localhost"
        )
        try pair.connect()
        let result = try #require(BackToBack.result(pair.clientHandshake))
        guard case .failure(let error) = result, let failure = error as? TLSFailure else {
            Issue.record("expected a TLS failure, got \(result)")
            return
        }
        #expect(failure.kind == .handshakeFailed)
        #expect(failure.reason == "tlsv1 alert protocol version")
    }

    @Test func clientCertificateIsPresentedWhenTheServerAsksForOne() throws {
        let clientIdentity = try pki.authority.issue(commonName: "agent-client", clientAuth: true)
        let pair = try BackToBack(
            client: pki.clientOptions(clientCertificate: clientIdentity),
            server: pki.serverOptions(clientTrustRoots: pki.trustRoots),
            host: "localhost"
        )
        try pair.connect()
        // TLS 1.3 servers verify the client's certificate after the client considers itself connected.
        let serverInfo = try #require(try BackToBack.result(pair.serverHandshake)?.get())
        #expect(serverInfo.peerSubject?.contains("CN=agent-client") == true)

        let withoutCertificate = try BackToBack(
            client: pki.clientOptions(),
            server: pki.serverOptions(clientTrustRoots: pki.trustRoots),
            host: "localhost"
        )
        try withoutCertificate.connect()
        #expect(throws: TLSFailure.self) { try BackToBack.result(withoutCertificate.serverHandshake)?.get() }
    }

    @Test func aTLS13RefusalAfterTheClientsFinishedIsARejectedHandshake() throws {
        let pair = try BackToBack(
            client: pki.clientOptions(),
            server: pki.serverOptions(clientTrustRoots: pki.trustRoots),
            host: "localhost"
        )
        try pair.connect()
        // The client's side of the handshake completed; the server's refusal came after it.
        #expect(try BackToBack.result(pair.clientHandshake)?.get().protocolVersion == "TLSv1.3")
        let failure = try #require(pair.clientHandler.fatalFailure, "\(pair.caughtErrors)")
        #expect(failure.kind == .rejectedAfterHandshake)
        #expect(failure.reason == "tlsv13 alert certificate required")
        #expect(failure.openSSLErrors.last?.receivedAlert == 116)
        // Fired down the pipeline too, for handlers already there.
        #expect(pair.caughtErrors.contains { ($0 as? TLSFailure) == failure })
        #expect(!pair.client.isActive)
    }

    @Test func aFatalAlertAfterApplicationDataIsAProtocolError() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        try pair.connect()
        try pair.server.writeAndFlush(ByteBuffer(string: "hello")).wait()
        try pair.pump()
        #expect(try BackToBack.received(pair.client) == "hello")
        // A record the server cannot decrypt makes it end the connection with a fatal alert.
        #expect(throws: TLSFailure.self) { try pair.server.writeInbound(Self.undecryptableRecord) }
        try pair.pump()
        let failure = try #require(pair.clientHandler.fatalFailure, "\(pair.caughtErrors)")
        #expect(failure.kind == .protocolError)
        #expect(failure.openSSLErrors.contains { $0.receivedAlert != nil }, "\(failure.openSSLErrors)")
    }

    @Test func aBadRecordBeforeApplicationDataIsNoRejection() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        try pair.connect()
        // Found on this side, not refused by the peer: no alert was received.
        #expect(throws: TLSFailure.self) { try pair.client.writeInbound(Self.undecryptableRecord) }
        let failure = try #require(pair.clientHandler.fatalFailure)
        #expect(failure.kind == .protocolError)
        #expect(failure.openSSLErrors.allSatisfy { $0.receivedAlert == nil }, "\(failure.openSSLErrors)")
    }

    /// A TLS 1.3 application-data record whose contents cannot decrypt.
    static var undecryptableRecord: ByteBuffer {
        ByteBuffer(bytes: [0x17, 0x03, 0x03, 0x00, 0x20] + [UInt8](repeating: 0, count: 32))
    }

    @Test func closeSendsCloseNotifySoThePeerSeesACleanShutdown() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        try pair.connect()
        let closed = pair.client.close()
        try pair.pump()
        try closed.wait()
        // The server got close_notify, answered it and closed: no unclean-shutdown error.
        #expect(!pair.server.isActive)
        #expect(throws: Never.self) { try pair.server.throwIfErrorCaught() }
    }

    @Test func transportCloseWithoutCloseNotifyIsReportedAsUnclean() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        try pair.connect()
        pair.client.pipeline.fireChannelInactive()
        #expect {
            try pair.client.throwIfErrorCaught()
        } throws: { error in
            (error as? TLSFailure)?.kind == .uncleanShutdown
        }
    }

    @Test func transportCloseDuringTheHandshakeFailsIt() throws {
        let pair = try BackToBack(client: pki.clientOptions(), server: pki.serverOptions(), host: "localhost")
        _ = try pair.client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        pair.client.pipeline.fireChannelInactive()
        let result = try #require(BackToBack.result(pair.clientHandshake))
        guard case .failure(let error) = result else {
            Issue.record("handshake should have failed")
            return
        }
        #expect((error as? TLSFailure)?.kind == .closedDuringHandshake)
    }

    @Test func contextsAreBuiltOncePerConfiguration() throws {
        let cache = SSLContextCache()
        let first = try cache.context(for: pki.clientOptions())
        let second = try cache.context(for: pki.clientOptions())
        let other = try cache.context(for: pki.clientOptions(minimumVersion: .tls1_3))
        #expect(first === second)
        #expect(first !== other)
        #expect(cache.count == 2)
    }

    @Test func badTrustRootsFailWithASetupError() throws {
        var options = pki.clientOptions()
        options.trustRoots = .pem(.bytes(Array("not a certificate".utf8)))
        #expect(throws: TLSSetupError.self) { try SSLContextBox(options: options) }
        options.trustRoots = .pem(.file("/nonexistent/ca.pem"))
        #expect(throws: TLSSetupError.self) { try SSLContextBox(options: options) }
    }
}

enum CertificateCase: String, CustomTestStringConvertible, Sendable {
    case wrongHostname
    case expired
    case notYetValid
    case unknownAuthority
    case selfSigned
    case wrongIPAddress

    var testDescription: String { self.rawValue }

    var expectedDescription: String {
        switch self {
        case .wrongHostname: "hostname mismatch"
        case .expired: "certificate has expired"
        case .notYetValid: "certificate is not yet valid"
        case .unknownAuthority: "unable to get local issuer certificate"
        case .selfSigned: "self-signed certificate"
        case .wrongIPAddress: "IP address mismatch"
        }
    }

    /// The certificate the server presents, and the host the client connects to.
    func make(_ pki: TestPKI) throws -> (PEMCertificateAndKey, String) {
        switch self {
        case .wrongHostname:
            return (try pki.authority.issue(commonName: "other", dnsNames: ["other.example"]), "localhost")
        case .expired:
            return (
                try pki.authority.issue(
                    commonName: "localhost",
                    dnsNames: ["localhost"],
                    notBeforeOffset: -10 * 86_400,
                    notAfterOffset: -86_400
                ), "localhost"
            )
        case .notYetValid:
            return (
                try pki.authority.issue(
                    commonName: "localhost",
                    dnsNames: ["localhost"],
                    notBeforeOffset: 86_400,
                    notAfterOffset: 10 * 86_400
                ), "localhost"
            )
        case .unknownAuthority:
            let stranger = try CertificateAuthority(commonName: "Stranger CA")
            return (try stranger.issue(commonName: "localhost", dnsNames: ["localhost"]), "localhost")
        case .selfSigned:
            return (try CertificateAuthority.selfSigned(commonName: "localhost", dnsNames: ["localhost"]), "localhost")
        case .wrongIPAddress:
            return (try pki.authority.issue(commonName: "ip", ipAddresses: ["127.0.0.2"]), "127.0.0.1")
        }
    }
}
