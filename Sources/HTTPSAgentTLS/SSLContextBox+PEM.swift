internal import COpenSSL

/// Parses PEM bytes held in memory into OpenSSL objects.
enum PEMReader {
    /// Every certificate in `bytes`, in order. The caller owns (and must `X509_free`) each one.
    static func certificates(_ bytes: [UInt8], what: String) throws(TLSSetupError) -> [OpaquePointer] {
        let bio = try Self.memoryBIO(bytes)
        defer { BIO_free(bio) }
        var certificates: [OpaquePointer] = []
        while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
            certificates.append(certificate)
        }
        // Reading stops with a "no start line" error at the end of the input; that one is expected.
        OpenSSLErrorQueue.clear()
        guard !certificates.isEmpty else {
            throw TLSSetupError(operation: "reading \(what): no PEM certificate found", openSSLErrors: [])
        }
        return certificates
    }

    /// The first private key in `bytes`. The caller owns (and must `EVP_PKEY_free`) it.
    static func privateKey(_ bytes: [UInt8]) throws(TLSSetupError) -> OpaquePointer {
        let bio = try Self.memoryBIO(bytes)
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw TLSSetupError(operation: "reading the private key")
        }
        return key
    }

    /// A read-write memory BIO holding a copy of `bytes`. The caller owns (and must `BIO_free`) it.
    private static func memoryBIO(_ bytes: [UInt8]) throws(TLSSetupError) -> OpaquePointer {
        OpenSSLErrorQueue.clear()
        guard let bio = BIO_new(BIO_s_mem()) else {
            throw TLSSetupError(operation: "allocating a memory BIO")
        }
        let written = bytes.withUnsafeBytes { BIO_write(bio, $0.baseAddress, Int32($0.count)) }
        guard written == Int32(bytes.count) else {
            BIO_free(bio)
            throw TLSSetupError(operation: "copying PEM bytes into a memory BIO")
        }
        return bio
    }
}
