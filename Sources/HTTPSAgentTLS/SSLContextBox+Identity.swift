internal import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

/// The fingerprint behind ``SSLContextBox/identity``.
enum ContextIdentity {
    /// SHA-256 over a length-prefixed encoding of every option and of the material as loaded. For the
    /// system store, the CA bundle's contents and the CA directory's listing stand for it, so a changed
    /// store gives a new identity (and sessions made under the old one are not offered).
    static func fingerprint(_ options: TLSContextOptions, _ material: ResolvedMaterial) -> [UInt8] {
        var bytes: [UInt8] = []
        func field(_ name: String, _ value: [UInt8]) {
            bytes += Array(name.utf8) + [0]
            withUnsafeBytes(of: UInt32(value.count).bigEndian) { bytes += $0 }
            bytes += value
        }
        func text(_ value: String) -> [UInt8] { Array(value.utf8) }
        field("version", text("context-identity-2"))
        field("role", text(options.role == .client ? "client" : "server"))
        field("verification", text("\(options.verification)"))
        field("minimum", text("\(options.minimumVersion.rawValue)"))
        field("maximum", text(options.maximumVersion.map { "\($0.rawValue)" } ?? "none"))
        field("alpn-count", text("\(options.alpnProtocols.count)"))
        for name in options.alpnProtocols {
            field("alpn", text(name))
        }
        switch material.trustRoots {
        case nil: field("roots", text("none"))
        case .system: field("roots", Self.systemStore())
        case .pem(let pem): field("roots", text("pem:") + pem.bytes)
        }
        field("chain", material.certificateChain.map { text("pem:") + $0.bytes } ?? text("none"))
        field("key", material.privateKey.map { text("pem:") + $0.bytes } ?? text("none"))
        field("tickets", text(options.sessionTickets ? "on" : "off"))
        field("session-timeout", text(options.sessionTimeout.map { "\($0)" } ?? "default"))
        return CryptoPrimitives.sha256(bytes)
    }

    /// What OpenSSL's default verify paths hold: the CA file's bytes and the CA directory's names
    /// (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR` as OpenSSL does).
    private static func systemStore() -> [UInt8] {
        let file =
            getenv(X509_get_default_cert_file_env()).map { String(cString: $0) }
            ?? String(cString: X509_get_default_cert_file())
        let directory =
            getenv(X509_get_default_cert_dir_env()).map { String(cString: $0) }
            ?? String(cString: X509_get_default_cert_dir())
        var bytes = Array("system file \(file):".utf8)
        bytes += FileContents.read(file).map { CryptoPrimitives.sha256($0) } ?? Array("unreadable".utf8)
        bytes += Array(" directory \(directory):".utf8)
        var names: [String] = []
        if let handle = opendir(directory) {
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(handle)
        }
        bytes += Array(names.sorted().joined(separator: "\n").utf8)
        return bytes
    }
}
