import HTTPSAgentTLS

/// Everything that must match for a TLS session to be offered to a server again.
///
/// curl's reuse advisories (CVE-2021-22890, CVE-2022-27782) came from fields missing from such keys.
/// Here the key is the host, the port, the SNI name sent (none for IP literals), the ALPN protocols
/// offered, and the identity of the TLS configuration (``SSLContextBox/identity``: verification mode,
/// versions, and the contents of trust roots, client certificate and key). Any difference gives a
/// different digest, and sessions are only found by digest.
struct SessionKey: Sendable, Hashable {
    var host: String { didSet { self.digest = self.computeDigest() } }
    var port: Int { didSet { self.digest = self.computeDigest() } }
    var serverName: String? { didSet { self.digest = self.computeDigest() } }
    var alpn: [String] { didSet { self.digest = self.computeDigest() } }
    var configurationIdentity: [UInt8] { didSet { self.digest = self.computeDigest() } }

    /// SHA-256 over a length-prefixed encoding of every field, so no two different keys share bytes.
    /// Computed once, when the key is made (and again if a field changes): a reconnect looks its
    /// session up and stores the new one under the same key.
    private(set) var digest: [UInt8] = []

    init(host: String, port: Int, serverName: String?, alpn: [String], configurationIdentity: [UInt8]) {
        self.host = host
        self.port = port
        self.serverName = serverName
        self.alpn = alpn
        self.configurationIdentity = configurationIdentity
        self.digest = self.computeDigest()
    }

    private func computeDigest() -> [UInt8] {
        var bytes: [UInt8] = []
        func field(_ value: [UInt8]) {
            withUnsafeBytes(of: UInt32(value.count).bigEndian) { bytes += $0 }
            bytes += value
        }
        field(Array("session-key-1".utf8))
        field(Array(self.host.utf8))
        field(Array(String(self.port).utf8))
        field(self.serverName.map { Array("sni:\($0)".utf8) } ?? Array("no-sni".utf8))
        field(Array(String(self.alpn.count).utf8))
        for name in self.alpn {
            field(Array(name.utf8))
        }
        field(self.configurationIdentity)
        return CryptoPrimitives.sha256(bytes)
    }
}
