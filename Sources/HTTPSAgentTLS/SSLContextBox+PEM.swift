internal import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

/// Reads small files (certificates, keys, session files) whole.
package enum FileContents {
    /// The file's bytes, or `nil` if it cannot be opened or read.
    package static func read(_ path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { return nil }
            if count == 0 { return result }
            result += chunk[0..<count]
        }
    }
}

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
    static func privateKey(_ bytes: [UInt8], what: String) throws(TLSSetupError) -> OpaquePointer {
        let bio = try Self.memoryBIO(bytes)
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw TLSSetupError(operation: "reading \(what)")
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

/// The PEM material of ``TLSContextOptions`` with every file read, once.
struct ResolvedMaterial {
    struct PEM {
        var bytes: [UInt8]
        /// " from /path" for a file, "" for bytes given in memory; for error messages.
        var origin: String
    }

    enum Roots {
        case system
        case pem(PEM)
    }

    var trustRoots: Roots?
    var certificateChain: PEM?
    var privateKey: PEM?

    init(_ options: TLSContextOptions) throws(TLSSetupError) {
        switch options.trustRoots {
        case nil: self.trustRoots = nil
        case .system: self.trustRoots = .system
        case .pem(let source): self.trustRoots = .pem(try Self.read(source, what: "the trust roots"))
        }
        self.certificateChain = try options.certificateChain.map { (source) throws(TLSSetupError) in
            try Self.read(source, what: "the certificate chain")
        }
        self.privateKey = try options.privateKey.map { (source) throws(TLSSetupError) in
            try Self.read(source, what: "the private key")
        }
    }

    private static func read(_ source: PEMSource, what: String) throws(TLSSetupError) -> PEM {
        switch source {
        case .bytes(let bytes):
            return PEM(bytes: bytes, origin: "")
        case .file(let path):
            guard let bytes = FileContents.read(path) else {
                throw TLSSetupError(operation: "reading \(what) from \(path)", openSSLErrors: [])
            }
            return PEM(bytes: bytes, origin: " from \(path)")
        }
    }
}
