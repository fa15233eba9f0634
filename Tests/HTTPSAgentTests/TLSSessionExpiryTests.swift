import Foundation
import HTTPSAgentTLS
import Testing

@testable import HTTPSAgent

/// Just enough DER to write an `SSL_SESSION` by hand (OpenSSL's `SSL_SESSION_ASN1`, ssl/ssl_asn1.c), so
/// that sessions with any version, creation time, lifetime and peer certificate can be made without a
/// handshake.
private enum DER {
    static func element(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        [tag] + self.length(content.count) + content
    }

    static func length(_ count: Int) -> [UInt8] {
        if count < 0x80 { return [UInt8(count)] }
        var bytes: [UInt8] = []
        var remaining = count
        while remaining > 0 {
            bytes.insert(UInt8(remaining & 0xFF), at: 0)
            remaining >>= 8
        }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    /// Minimal two's complement, as DER requires.
    static func integer(_ value: Int64) -> [UInt8] {
        var bytes = withUnsafeBytes(of: value.bigEndian) { Array($0) }
        while bytes.count > 1
            && ((bytes[0] == 0x00 && bytes[1] & 0x80 == 0) || (bytes[0] == 0xFF && bytes[1] & 0x80 != 0))
        {
            bytes.removeFirst()
        }
        return self.element(0x02, bytes)
    }

    static func octets(_ bytes: [UInt8]) -> [UInt8] { self.element(0x04, bytes) }
    static func sequence(_ parts: [[UInt8]]) -> [UInt8] { self.element(0x30, parts.flatMap { $0 }) }
    static func explicit(_ number: UInt8, _ inner: [UInt8]) -> [UInt8] { self.element(0xA0 | number, inner) }
}

private func certificateDER(_ pem: String) throws -> [UInt8] {
    let base64 = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
    return Array(try #require(Data(base64Encoded: base64)))
}

private func makeSession(
    _ version: TLSProtocolVersion,
    createdAt: Int64,
    lifetime: Int64,
    peer: [UInt8]? = nil,
    hostname: String? = nil
) throws -> SSLSessionBox {
    // TLS_AES_128_GCM_SHA256 for TLS 1.3, ECDHE-ECDSA-AES128-GCM-SHA256 for TLS 1.2.
    let cipher: [UInt8] = version == .tls1_3 ? [0x13, 0x01] : [0xC0, 0x2B]
    var parts = [
        DER.integer(1),
        DER.integer(Int64(version.rawValue)),
        DER.octets(cipher),
        DER.octets(CryptoPrimitives.randomBytes(32)),
        DER.octets(CryptoPrimitives.randomBytes(48)),
        DER.explicit(1, DER.integer(createdAt)),
        DER.explicit(2, DER.integer(lifetime)),
    ]
    if let peer {
        parts.append(DER.explicit(3, peer))
    }
    if let hostname {
        parts.append(DER.explicit(6, DER.octets(Array(hostname.utf8))))
    }
    return try #require(SSLSessionBox(der: DER.sequence(parts)))
}

private let day: Int64 = 86_400
private let created: Int64 = 1_700_000_000

@Suite("TLS session expiry")
struct TLSSessionExpiryTests {
    @Test func handMadeSessionsDecodeAsWritten() throws {
        let tls13 = try makeSession(.tls1_3, createdAt: created, lifetime: 3_600)
        #expect(tls13.protocolVersion == .tls1_3)
        #expect(tls13.createdAt == created)
        #expect(tls13.lifetime == 3_600)
        #expect(tls13.peerNotAfter == nil)
        #expect(tls13.isSingleUse)
        #expect(tls13.isResumable)
        let tls12 = try makeSession(.tls1_2, createdAt: created, lifetime: 300)
        #expect(tls12.protocolVersion == .tls1_2)
        #expect(!tls12.isSingleUse)
        #expect(SSLSessionBox(der: [0x30, 0x00]) == nil)
    }

    @Test(arguments: [1, 3_600, 7 * 86_400 - 1, 7 * 86_400] as [Int64])
    func aTLS13LifetimeWithinSevenDaysIsKept(lifetime: Int64) throws {
        let session = try makeSession(.tls1_3, createdAt: created, lifetime: lifetime)
        #expect(TLSSessionCache.expiry(of: session) == created + lifetime)
    }

    @Test(arguments: [7 * 86_400 + 1, 30 * 86_400, Int64(Int32.max)] as [Int64])
    func aTLS13LifetimeIsCappedAtSevenDays(lifetime: Int64) throws {
        let session = try makeSession(.tls1_3, createdAt: created, lifetime: lifetime)
        #expect(TLSSessionCache.expiry(of: session) == created + 7 * day)
    }

    @Test(arguments: [1, 300, 86_400] as [Int64])
    func aTLS12LifetimeWithinADayIsKept(lifetime: Int64) throws {
        let session = try makeSession(.tls1_2, createdAt: created, lifetime: lifetime)
        #expect(TLSSessionCache.expiry(of: session) == created + lifetime)
    }

    @Test(arguments: [86_401, 2 * 86_400, 7 * 86_400] as [Int64])
    func aTLS12LifetimeIsCappedAtOneDay(lifetime: Int64) throws {
        let session = try makeSession(.tls1_2, createdAt: created, lifetime: lifetime)
        #expect(TLSSessionCache.expiry(of: session) == created + day)
    }

    @Test func aSessionWithoutALifetimeHasNoExpiryAndIsNotStored() throws {
        let session = try makeSession(.tls1_3, createdAt: TLSSessionCache.now(), lifetime: -1)
        #expect(session.lifetime <= 0)
        #expect(TLSSessionCache.expiry(of: session) == nil)
        let cache = TLSSessionCache()
        cache.store(session, for: SessionKeyTests.base, persistable: true)
        #expect(cache.stats.entries == 0)
    }

    @Test(arguments: [TLSProtocolVersion.tls1_2, .tls1_3])
    func theServerCertificatesExpiryCapsTheSession(version: TLSProtocolVersion) throws {
        let authority = try CertificateAuthority()
        let leaf = try authority.issue(commonName: "example.com", dnsNames: ["example.com"], notAfterOffset: 3_600)
        let peer = try certificateDER(leaf.certificatePEM)
        let probe = try makeSession(version, createdAt: created, lifetime: 60, peer: peer)
        let notAfter = try #require(probe.peerNotAfter)
        // Issued to expire in an hour (a generous margin: this is about parsing, not timing).
        #expect(abs(notAfter - (TLSSessionCache.now() + 3_600)) < 600)

        let outlivesCertificate = try makeSession(version, createdAt: notAfter - 100, lifetime: 7_200, peer: peer)
        #expect(TLSSessionCache.expiry(of: outlivesCertificate) == notAfter)
        let endsFirst = try makeSession(version, createdAt: notAfter - 10_000, lifetime: 7_200, peer: peer)
        #expect(TLSSessionCache.expiry(of: endsFirst) == notAfter - 10_000 + 7_200)
    }

    @Test func aSessionVouchingForAnExpiredCertificateIsNotStored() throws {
        let authority = try CertificateAuthority()
        let expired = try authority.issue(
            commonName: "example.com",
            notBeforeOffset: -7 * 86_400,
            notAfterOffset: -3_600
        )
        let valid = try authority.issue(commonName: "example.com")
        let now = TLSSessionCache.now()
        let stale = try makeSession(
            .tls1_3,
            createdAt: now,
            lifetime: 3_600,
            peer: certificateDER(expired.certificatePEM)
        )
        let fresh = try makeSession(
            .tls1_3,
            createdAt: now,
            lifetime: 3_600,
            peer: certificateDER(valid.certificatePEM)
        )
        #expect(try #require(TLSSessionCache.expiry(of: stale)) < now)

        let cache = TLSSessionCache()
        var other = SessionKeyTests.base
        other.port = 8443
        cache.store(stale, for: SessionKeyTests.base, persistable: true)
        cache.store(fresh, for: other, persistable: true)
        #expect(cache.stats.entries == 1)
        #expect(cache.take(SessionKeyTests.base) == nil)
        #expect(cache.take(other) === fresh)
    }

    // MARK: - The cache with real sessions

    @Test func aSessionIsOnlyOfferedUnderItsOwnKey() throws {
        let cache = TLSSessionCache()
        let session = try makeSession(.tls1_2, createdAt: TLSSessionCache.now(), lifetime: 3_600)
        cache.store(session, for: SessionKeyTests.base, persistable: true)
        for (name, variant) in SessionKeyTests.singleFieldVariants {
            #expect(cache.take(variant) == nil, "\(name)")
        }
        #expect(cache.take(SessionKeyTests.base) === session)
        #expect(cache.take(SessionKeyTests.base) === session)
    }

    @Test func aTLS13TicketIsOfferedOnce() throws {
        let cache = TLSSessionCache()
        let ticket = try makeSession(.tls1_3, createdAt: TLSSessionCache.now(), lifetime: 3_600)
        cache.store(ticket, for: SessionKeyTests.base, persistable: true)
        #expect(cache.take(SessionKeyTests.base) === ticket)
        #expect(cache.take(SessionKeyTests.base) == nil)
    }

    @Test func savedSessionsComeBackOnlyForTheirKeyAndClientCertificateSessionsStayInMemory() throws {
        let now = TLSSessionCache.now()
        let saved = try makeSession(.tls1_2, createdAt: now, lifetime: 3_600, hostname: "example.com")
        #expect(saved.derEncoded().contains(Array("example.com".utf8)))
        let tied = try makeSession(.tls1_2, createdAt: now, lifetime: 3_600)
        var clientCertificateKey = SessionKeyTests.base
        clientCertificateKey.configurationIdentity = CryptoPrimitives.sha256(Array("with a client cert".utf8))
        let cache = TLSSessionCache()
        cache.store(saved, for: SessionKeyTests.base, persistable: true)
        cache.store(tied, for: clientCertificateKey, persistable: false)

        let path = NSTemporaryDirectory() + "session-expiry-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: path) }
        try cache.save(to: path)
        let contents = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(contents.range(of: Data("example.com".utf8)) == nil)

        let restored = TLSSessionCache()
        try restored.load(from: path)
        #expect(restored.take(clientCertificateKey) == nil)
        for (name, variant) in SessionKeyTests.singleFieldVariants {
            #expect(restored.take(variant) == nil, "\(name)")
        }
        let resumed = try #require(restored.take(SessionKeyTests.base))
        #expect(resumed.derEncoded() == saved.derEncoded())
        #expect(resumed.createdAt == now)
    }
}
