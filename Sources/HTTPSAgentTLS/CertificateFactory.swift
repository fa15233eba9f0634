internal import COpenSSL
import NIOConcurrencyHelpers

/// A certificate and its private key, PEM-encoded.
package struct PEMCertificateAndKey: Sendable, Hashable {
    package var certificatePEM: String
    package var privateKeyPEM: String
}

/// Makes X.509 certificates with OpenSSL: a certificate authority and the certificates it signs.
///
/// For tests and the `fetch --demo` server only: it lets them make a fresh CA at start, and certificates
/// that are expired, not yet valid, self-signed or for the wrong name, without committing key material.
/// Keys are ECDSA P-256, signatures SHA-256.
package final class CertificateAuthority: @unchecked Sendable {
    private let key: OpaquePointer
    private let certificate: OpaquePointer
    /// Signing takes the lock: OpenSSL objects are not promised to be safe for concurrent use.
    private let lock = NIOLock()
    /// The CA certificate, to be used as a trust root.
    package let certificatePEM: String

    /// A self-signed certificate authority valid from a day ago for `days` days.
    package init(commonName: String = "swift-https-agent Test CA", days: Int = 3650) throws(TLSSetupError) {
        let key = try Self.generateKey()
        let certificate: OpaquePointer
        do {
            certificate = try Self.makeCertificate(
                commonName: commonName,
                publicKey: key,
                notBeforeOffset: -86_400,
                notAfterOffset: days * 86_400,
                extensions: [
                    (NID_basic_constraints, "critical,CA:TRUE"),
                    (NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"),
                    (NID_subject_key_identifier, "hash"),
                ],
                issuer: nil,
                issuerKey: key
            )
        } catch {
            EVP_PKEY_free(key)
            throw error
        }
        self.key = key
        self.certificate = certificate
        self.certificatePEM = Self.pem(certificate: certificate)
    }

    deinit {
        X509_free(self.certificate)
        EVP_PKEY_free(self.key)
    }

    /// Issues a leaf certificate signed by this authority.
    ///
    /// - Parameters:
    ///   - commonName: the subject's CN.
    ///   - dnsNames: DNS subject alternative names.
    ///   - ipAddresses: IP subject alternative names (textual, e.g. "127.0.0.1", "::1").
    ///   - notBeforeOffset: seconds from now when validity starts (negative: in the past).
    ///   - notAfterOffset: seconds from now when validity ends (negative: already expired).
    ///   - clientAuth: issue for TLS client authentication instead of server authentication.
    package func issue(
        commonName: String,
        dnsNames: [String] = [],
        ipAddresses: [String] = [],
        notBeforeOffset: Int = -86_400,
        notAfterOffset: Int = 365 * 86_400,
        clientAuth: Bool = false
    ) throws(TLSSetupError) -> PEMCertificateAndKey {
        self.lock.lock()
        defer { self.lock.unlock() }
        return try Self.leaf(
            commonName: commonName,
            dnsNames: dnsNames,
            ipAddresses: ipAddresses,
            notBeforeOffset: notBeforeOffset,
            notAfterOffset: notAfterOffset,
            clientAuth: clientAuth,
            issuer: self.certificate,
            issuerKey: self.key
        )
    }

    /// A self-signed leaf certificate (not a CA), which no trust store accepts.
    package static func selfSigned(
        commonName: String,
        dnsNames: [String] = [],
        ipAddresses: [String] = []
    ) throws(TLSSetupError) -> PEMCertificateAndKey {
        try Self.leaf(
            commonName: commonName,
            dnsNames: dnsNames,
            ipAddresses: ipAddresses,
            notBeforeOffset: -86_400,
            notAfterOffset: 365 * 86_400,
            clientAuth: false,
            issuer: nil,
            issuerKey: nil
        )
    }

    // MARK: - Helpers

    private static func leaf(
        commonName: String,
        dnsNames: [String],
        ipAddresses: [String],
        notBeforeOffset: Int,
        notAfterOffset: Int,
        clientAuth: Bool,
        issuer: OpaquePointer?,
        issuerKey: OpaquePointer?
    ) throws(TLSSetupError) -> PEMCertificateAndKey {
        let key = try Self.generateKey()
        defer { EVP_PKEY_free(key) }
        var extensions: [(Int32, String)] = [
            (NID_basic_constraints, "critical,CA:FALSE"),
            (NID_key_usage, "critical,digitalSignature"),
            (NID_ext_key_usage, clientAuth ? "clientAuth" : "serverAuth"),
            (NID_subject_key_identifier, "hash"),
        ]
        if issuer != nil {
            extensions.append((NID_authority_key_identifier, "keyid:always"))
        }
        let names = dnsNames.map { "DNS:\($0)" } + ipAddresses.map { "IP:\($0)" }
        if !names.isEmpty {
            extensions.append((NID_subject_alt_name, names.joined(separator: ",")))
        }
        let certificate = try Self.makeCertificate(
            commonName: commonName,
            publicKey: key,
            notBeforeOffset: notBeforeOffset,
            notAfterOffset: notAfterOffset,
            extensions: extensions,
            issuer: issuer,
            issuerKey: issuerKey ?? key
        )
        defer { X509_free(certificate) }
        return PEMCertificateAndKey(
            certificatePEM: Self.pem(certificate: certificate),
            privateKeyPEM: Self.pem(key: key)
        )
    }

    private static func generateKey() throws(TLSSetupError) -> OpaquePointer {
        OpenSSLErrorQueue.clear()
        guard let key = cshim_EVP_EC_gen_p256() else {
            throw TLSSetupError(operation: "generating a P-256 key")
        }
        return key
    }

    /// Builds and signs a certificate. `issuer == nil` means self-signed.
    private static func makeCertificate(
        commonName: String,
        publicKey: OpaquePointer,
        notBeforeOffset: Int,
        notAfterOffset: Int,
        extensions: [(Int32, String)],
        issuer: OpaquePointer?,
        issuerKey: OpaquePointer
    ) throws(TLSSetupError) -> OpaquePointer {
        OpenSSLErrorQueue.clear()
        guard let certificate = X509_new() else {
            throw TLSSetupError(operation: "allocating a certificate")
        }
        var succeeded = false
        defer { if !succeeded { X509_free(certificate) } }

        X509_set_version(certificate, 2)  // X.509 v3
        ASN1_INTEGER_set_uint64(X509_get_serialNumber(certificate), UInt64.random(in: 1...UInt64(Int64.max)))
        X509_gmtime_adj(X509_getm_notBefore(certificate), notBeforeOffset)
        X509_gmtime_adj(X509_getm_notAfter(certificate), notAfterOffset)
        X509_set_pubkey(certificate, publicKey)
        let subject = X509_get_subject_name(certificate)
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, commonName, -1, -1, 0)
        X509_set_issuer_name(certificate, issuer.map { X509_get_subject_name($0) } ?? subject)

        var context = X509V3_CTX()
        cshim_X509V3_set_ctx_nodb(&context)
        X509V3_set_ctx(&context, issuer ?? certificate, certificate, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else {
                throw TLSSetupError(operation: "building the certificate extension \(value)")
            }
            defer { X509_EXTENSION_free(ext) }
            guard X509_add_ext(certificate, ext, -1) == 1 else {
                throw TLSSetupError(operation: "adding the certificate extension \(value)")
            }
        }
        guard X509_sign(certificate, issuerKey, EVP_sha256()) > 0 else {
            throw TLSSetupError(operation: "signing the certificate")
        }
        succeeded = true
        return certificate
    }

    private static func pem(certificate: OpaquePointer) -> String {
        Self.withMemoryBIO { bio in _ = PEM_write_bio_X509(bio, certificate) }
    }

    private static func pem(key: OpaquePointer) -> String {
        Self.withMemoryBIO { bio in _ = PEM_write_bio_PrivateKey(bio, key, nil, nil, 0, nil, nil) }
    }

    private static func withMemoryBIO(_ body: (OpaquePointer) -> Void) -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { return "" }
        defer { BIO_free(bio) }
        body(bio)
        var data: UnsafeMutablePointer<CChar>?
        let length = cshim_BIO_get_mem_data(bio, &data)
        guard let data, length > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }
}
