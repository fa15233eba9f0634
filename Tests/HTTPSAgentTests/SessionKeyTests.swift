import Foundation
import HTTPSAgentTLS
import Testing

@testable import HTTPSAgent

/// Rule 1 of RELIABILITY.md: every input that changes whom we trust or who we claim to be is in the
/// session key, with a test per field. Row C1: a session made under one configuration is never offered
/// under another that differs in any one of them.
@Suite("TLS session cache keys")
struct SessionKeyTests {
    static let base = SessionKey(
        host: "example.com",
        port: 443,
        serverName: "example.com",
        alpn: ["http/1.1"],
        configurationIdentity: CryptoPrimitives.sha256(Array("configuration A".utf8))
    )

    /// One variant per field, each differing from `base` in that field only.
    static let singleFieldVariants: [(String, SessionKey)] = {
        var variants: [(String, SessionKey)] = []
        func variant(_ name: String, _ change: (inout SessionKey) -> Void) {
            var key = base
            change(&key)
            variants.append((name, key))
        }
        variant("host") { $0.host = "example.org" }
        variant("host subdomain") { $0.host = "www.example.com" }
        variant("port") { $0.port = 8443 }
        variant("port 0") { $0.port = 0 }
        variant("no SNI") { $0.serverName = nil }
        variant("other SNI") { $0.serverName = "other.example" }
        variant("empty SNI") { $0.serverName = "" }
        variant("SNI spelled no-sni") { $0.serverName = "no-sni" }
        variant("no ALPN") { $0.alpn = [] }
        variant("ALPN h2") { $0.alpn = ["h2"] }
        variant("ALPN extra") { $0.alpn = ["h2", "http/1.1"] }
        variant("ALPN order") { $0.alpn = ["http/1.1", "h2"] }
        variant("identity") { $0.configurationIdentity = CryptoPrimitives.sha256(Array("configuration B".utf8)) }
        variant("identity one bit") { $0.configurationIdentity[31] ^= 0x01 }
        variant("identity empty") { $0.configurationIdentity = [] }
        return variants
    }()

    @Test func theDigestIsStableForEqualKeys() {
        let again = SessionKey(
            host: "example" + ".com",
            port: 400 + 43,
            serverName: String("example.com"),
            alpn: ["http/" + "1.1"],
            configurationIdentity: CryptoPrimitives.sha256(Array("configuration A".utf8))
        )
        #expect(again == Self.base)
        #expect(again.digest == Self.base.digest)
        #expect(Self.base.digest.count == 32)
        #expect(Self.base.digest == Self.base.digest)
    }

    @Test(arguments: singleFieldVariants.indices)
    func theDigestDiffersWhenOneFieldDiffers(index: Int) {
        let (name, variant) = Self.singleFieldVariants[index]
        #expect(variant != Self.base, "\(name)")
        #expect(variant.digest != Self.base.digest, "\(name)")
    }

    /// The digest is kept with the key; a key changed field by field must have the digest a key made
    /// with those fields has, or sessions stored under one would never be found under the other.
    @Test(arguments: singleFieldVariants.indices)
    func aChangedKeyHasTheDigestOfAKeyMadeThatWay(index: Int) {
        let (name, variant) = Self.singleFieldVariants[index]
        let made = SessionKey(
            host: variant.host,
            port: variant.port,
            serverName: variant.serverName,
            alpn: variant.alpn,
            configurationIdentity: variant.configurationIdentity
        )
        #expect(variant.digest == made.digest, "\(name)")
        #expect(variant == made, "\(name)")
    }

    @Test func allSingleFieldVariantsHaveDistinctDigests() {
        let digests = Self.singleFieldVariants.map(\.1.digest) + [Self.base.digest]
        #expect(Set(digests).count == digests.count)
    }

    @Test func fieldsCannotBleedIntoOneAnother() {
        // Length prefixes: moving bytes from one field to the next gives another digest.
        var first = Self.base
        first.host = "example.com4"
        first.port = 43
        #expect(first.digest != Self.base.digest)
        var sni = Self.base
        sni.serverName = "sni:example.com"
        #expect(sni.digest != Self.base.digest)
    }

    @Test func alpnListsThatJoinToTheSameTextDiffer() {
        var two = Self.base
        two.alpn = ["h2", "http/1.1"]
        var one = Self.base
        one.alpn = ["h2,http/1.1"]
        #expect(one.digest != two.digest)
    }
}

// MARK: - SSLContextBox.identity

private struct TemporaryFile {
    let path: String

    init(_ contents: String) throws {
        self.path = NSTemporaryDirectory() + "session-key-test-" + UUID().uuidString + ".pem"
        try self.write(contents)
    }

    func write(_ contents: String) throws {
        try Data(contents.utf8).write(to: URL(fileURLWithPath: self.path))
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: self.path)
    }
}

@Suite("TLS configuration identity")
struct SSLContextIdentityTests {
    let authority: CertificateAuthority
    let otherAuthority: CertificateAuthority
    let clientCertificate: PEMCertificateAndKey
    let otherClientCertificate: PEMCertificateAndKey

    init() throws {
        self.authority = try CertificateAuthority(commonName: "Identity Test CA")
        self.otherAuthority = try CertificateAuthority(commonName: "Identity Test CA")
        self.clientCertificate = try self.authority.issue(commonName: "client", clientAuth: true)
        self.otherClientCertificate = try self.authority.issue(commonName: "client", clientAuth: true)
    }

    var roots: [UInt8] { Array(self.authority.certificatePEM.utf8) }

    func options(_ change: (inout TLSContextOptions) -> Void = { _ in }) -> TLSContextOptions {
        var options = TLSContextOptions(role: .client, trustRoots: .pem(.bytes(self.roots)))
        change(&options)
        return options
    }

    func identity(_ options: TLSContextOptions) throws -> [UInt8] {
        try SSLContextBox(options: options).identity
    }

    @Test func equalOptionsBuiltTwiceHaveEqualIdentities() throws {
        let first = try SSLContextBox(options: self.options())
        let second = try SSLContextBox(options: self.options())
        #expect(first !== second)
        #expect(first.identity.count == 32)
        #expect(first.identity == second.identity)
        // Equal contents from separately made byte arrays, with a client certificate too.
        let withCertificate = self.options {
            $0.certificateChain = .bytes(Array(self.clientCertificate.certificatePEM.utf8))
            $0.privateKey = .bytes(Array(self.clientCertificate.privateKeyPEM.utf8))
        }
        #expect(try self.identity(withCertificate) == self.identity(withCertificate))
    }

    @Test func trustRootsFromAnotherAuthorityChangeTheIdentity() throws {
        let other = self.options { $0.trustRoots = .pem(.bytes(Array(self.otherAuthority.certificatePEM.utf8))) }
        #expect(try self.identity(other) != self.identity(self.options()))
    }

    @Test func anExtraTrustRootChangesTheIdentity() throws {
        let both = self.options {
            $0.trustRoots = .pem(.bytes(self.roots + Array(self.otherAuthority.certificatePEM.utf8)))
        }
        #expect(try self.identity(both) != self.identity(self.options()))
    }

    @Test func systemTrustRootsDifferFromPEMAndFromNone() throws {
        let pem = try self.identity(self.options())
        let system = try self.identity(self.options { $0.trustRoots = .system })
        let none = try self.identity(self.options { $0.trustRoots = nil })
        #expect(Set([pem, system, none]).count == 3)
    }

    @Test func aTrustFileRewrittenInPlaceChangesTheIdentity() throws {
        let file = try TemporaryFile(self.authority.certificatePEM)
        defer { file.remove() }
        let options = self.options { $0.trustRoots = .pem(.file(file.path)) }
        let before = try SSLContextBox(options: options)
        try file.write(self.otherAuthority.certificatePEM)
        let after = try SSLContextBox(options: options)
        #expect(before !== after)
        #expect(before.identity != after.identity)
        // Contents, not the time of building: the original contents give the original identity.
        try file.write(self.authority.certificatePEM)
        #expect(try self.identity(options) == before.identity)
    }

    @Test func aTrustFileWithAnAppendedRootChangesTheIdentity() throws {
        let file = try TemporaryFile(self.authority.certificatePEM)
        defer { file.remove() }
        let options = self.options { $0.trustRoots = .pem(.file(file.path)) }
        let before = try self.identity(options)
        try file.write(self.authority.certificatePEM + self.otherAuthority.certificatePEM)
        #expect(try self.identity(options) != before)
    }

    @Test func eachVerificationModeHasItsOwnIdentity() throws {
        let modes: [PeerVerification] = [.full, .noHostnameVerification, .none]
        let identities = try modes.map { mode in try self.identity(self.options { $0.verification = mode }) }
        #expect(Set(identities).count == 3)
    }

    @Test func theMinimumVersionChangesTheIdentity() throws {
        let tls12 = try self.identity(self.options { $0.minimumVersion = .tls1_2 })
        let tls13 = try self.identity(self.options { $0.minimumVersion = .tls1_3 })
        #expect(tls12 != tls13)
    }

    @Test func theMaximumVersionChangesTheIdentity() throws {
        let none = try self.identity(self.options { $0.maximumVersion = nil })
        let tls12 = try self.identity(self.options { $0.maximumVersion = .tls1_2 })
        let tls13 = try self.identity(self.options { $0.maximumVersion = .tls1_3 })
        #expect(Set([none, tls12, tls13]).count == 3)
    }

    @Test func theALPNListChangesTheIdentity() throws {
        let lists: [[String]] = [["http/1.1"], [], ["h2"], ["h2", "http/1.1"], ["http/1.1", "h2"]]
        let identities = try lists.map { list in try self.identity(self.options { $0.alpnProtocols = list }) }
        #expect(Set(identities).count == lists.count)
    }

    @Test func alpnListsThatJoinToTheSameTextHaveDifferentIdentities() throws {
        let two = try self.identity(self.options { $0.alpnProtocols = ["h2", "http/1.1"] })
        let one = try self.identity(self.options { $0.alpnProtocols = ["h2,http/1.1"] })
        #expect(one != two)
    }

    @Test func aClientCertificateChangesTheIdentity() throws {
        func with(_ certificate: PEMCertificateAndKey) -> TLSContextOptions {
            self.options {
                $0.certificateChain = .bytes(Array(certificate.certificatePEM.utf8))
                $0.privateKey = .bytes(Array(certificate.privateKeyPEM.utf8))
            }
        }
        let none = try self.identity(self.options())
        let first = try self.identity(with(self.clientCertificate))
        let second = try self.identity(with(self.otherClientCertificate))
        #expect(Set([none, first, second]).count == 3)
    }

    @Test func anExtraCertificateInTheChainChangesTheIdentity() throws {
        let leafOnly = self.options {
            $0.certificateChain = .bytes(Array(self.clientCertificate.certificatePEM.utf8))
            $0.privateKey = .bytes(Array(self.clientCertificate.privateKeyPEM.utf8))
        }
        var withIntermediate = leafOnly
        withIntermediate.certificateChain = .bytes(
            Array((self.clientCertificate.certificatePEM + self.authority.certificatePEM).utf8)
        )
        #expect(try self.identity(leafOnly) != self.identity(withIntermediate))
    }

    @Test func aClientCertificateFileRewrittenInPlaceChangesTheIdentity() throws {
        let chain = try TemporaryFile(self.clientCertificate.certificatePEM)
        let key = try TemporaryFile(self.clientCertificate.privateKeyPEM)
        defer {
            chain.remove()
            key.remove()
        }
        let options = self.options {
            $0.certificateChain = .file(chain.path)
            $0.privateKey = .file(key.path)
        }
        let before = try self.identity(options)
        try chain.write(self.otherClientCertificate.certificatePEM)
        try key.write(self.otherClientCertificate.privateKeyPEM)
        #expect(try self.identity(options) != before)
    }

    @Test func theRoleChangesTheIdentity() throws {
        let client = try self.identity(self.options())
        let server = try self.identity(self.options { $0.role = .server })
        #expect(client != server)
    }

    @Test func theTicketSettingChangesTheIdentity() throws {
        let on = try self.identity(self.options { $0.sessionTickets = true })
        let off = try self.identity(self.options { $0.sessionTickets = false })
        #expect(on != off)
    }

    @Test func aMissingTrustFileFailsInsteadOfGivingAnIdentity() {
        let options = self.options { $0.trustRoots = .pem(.file("/nonexistent/session-key-test.pem")) }
        #expect(throws: TLSSetupError.self) { try SSLContextBox(options: options) }
    }

    @Test func theSessionKeyOfTwoConfigurationsDiffersThroughTheIdentity() throws {
        let strict = try SSLContextBox(options: self.options())
        let lax = try SSLContextBox(options: self.options { $0.verification = .none })
        func key(_ context: SSLContextBox) -> SessionKey {
            SessionKey(
                host: "example.com",
                port: 443,
                serverName: "example.com",
                alpn: context.options.alpnProtocols,
                configurationIdentity: context.identity
            )
        }
        #expect(key(strict).digest != key(lax).digest)
        #expect(try key(strict).digest == key(SSLContextBox(options: self.options())).digest)
    }
}
