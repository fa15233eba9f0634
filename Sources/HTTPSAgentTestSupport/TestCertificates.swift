package import HTTPSAgentTLS

#if canImport(Glibc)
import Glibc
#endif

/// A fresh test CA and a server certificate for `localhost`, `127.0.0.1` and `::1`, made at start.
package struct TestCertificates: Sendable {
    package let authority: CertificateAuthority
    package let server: PEMCertificateAndKey

    package init() throws {
        self.authority = try CertificateAuthority()
        self.server = try self.authority.issue(
            commonName: "localhost",
            dnsNames: ["localhost"],
            ipAddresses: ["127.0.0.1", "::1"]
        )
    }

    /// The CA certificate, PEM.
    package var caPEM: String { self.authority.certificatePEM }

    /// TLS options for a server presenting `certificate` (default: the localhost certificate).
    package func serverOptions(
        certificate: PEMCertificateAndKey? = nil,
        maximumVersion: TLSProtocolVersion? = nil,
        sessionTickets: Bool = true
    ) -> TLSContextOptions {
        let certificate = certificate ?? self.server
        return TLSContextOptions(
            role: .server,
            trustRoots: nil,
            maximumVersion: maximumVersion,
            certificateChain: .bytes(Array(certificate.certificatePEM.utf8)),
            privateKey: .bytes(Array(certificate.privateKeyPEM.utf8)),
            sessionTickets: sessionTickets
        )
    }

    /// Writes the CA certificate, the server certificate and its key into a new private temporary
    /// directory, for tools that read files (`openssl s_server`, `fetch --cacert`).
    package func writeFiles(certificate: PEMCertificateAndKey? = nil) throws -> CertificateFiles {
        try CertificateFiles(caPEM: self.caPEM, certificate: certificate ?? self.server)
    }
}

/// PEM files in a private temporary directory, removed by ``remove()``.
package struct CertificateFiles: Sendable {
    package let directory: String
    package let caPath: String
    package let certificatePath: String
    package let keyPath: String

    init(caPEM: String, certificate: PEMCertificateAndKey) throws {
        var template = Array("/tmp/https-agent-test-XXXXXX".utf8CString)
        guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TLSSetupError(operation: "creating a temporary directory", openSSLErrors: [])
        }
        self.directory = String(cString: created)
        self.caPath = self.directory + "/ca.pem"
        self.certificatePath = self.directory + "/cert.pem"
        self.keyPath = self.directory + "/key.pem"
        try Self.write(caPEM, to: self.caPath)
        try Self.write(certificate.certificatePEM, to: self.certificatePath)
        try Self.write(certificate.privateKeyPEM, to: self.keyPath)
    }

    /// Deletes the files and their directory.
    package func remove() {
        for path in [self.caPath, self.certificatePath, self.keyPath] {
            unlink(path)
        }
        rmdir(self.directory)
    }

    private static func write(_ text: String, to path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard descriptor >= 0 else {
            throw TLSSetupError(operation: "creating \(path)", openSSLErrors: [])
        }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            throw TLSSetupError(operation: "writing \(path)", openSSLErrors: [])
        }
    }
}
