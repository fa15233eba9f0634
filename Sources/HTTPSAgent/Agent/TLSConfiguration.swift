import HTTPSAgentTLS

/// How the Agent sets up TLS for `https` requests.
///
/// The defaults verify the server's certificate chain against the system's trust store and check that
/// the certificate names the host (or IP address) in the URL. Turning verification off is possible
/// only by saying so, with ``CertificateVerification/none``.
///
/// Two requests share connections only when their configurations are equal (as well as their scheme,
/// host and port), so a connection verified under one set of trust roots is never used under another.
public struct TLSConfiguration: Sendable, Hashable {
    /// The certificates a server's chain must lead to.
    public enum TrustRoots: Sendable, Hashable {
        /// The operating system's store (`/etc/ssl/certs` on Debian and Ubuntu, from `ca-certificates`).
        case system
        /// A PEM file with one or more CA certificates.
        case file(String)
        /// PEM text with one or more CA certificates.
        case pem(String)

        /// Paths and PEM text are equal only when their bytes are: two paths that differ only in how an
        /// accented letter is encoded name two different files.
        public static func == (lhs: TrustRoots, rhs: TrustRoots) -> Bool {
            switch (lhs, rhs) {
            case (.system, .system): true
            case (.file(let lhs), .file(let rhs)), (.pem(let lhs), .pem(let rhs)): ExactText.equal(lhs, rhs)
            default: false
            }
        }

        public func hash(into hasher: inout Hasher) {
            switch self {
            case .system:
                hasher.combine(0)
            case .file(let path):
                hasher.combine(1)
                ExactText.hash(path, into: &hasher)
            case .pem(let text):
                hasher.combine(2)
                ExactText.hash(text, into: &hasher)
            }
        }
    }

    /// How much of the server's identity is checked.
    public enum CertificateVerification: Sendable, Hashable {
        /// The chain leads to a trusted root, every certificate is within its validity dates, and the
        /// leaf names the host or IP address being connected to. The default.
        case full
        /// The chain and dates are checked, but not the name. For servers reached under a name their
        /// certificate does not carry.
        case noHostnameVerification
        /// Nothing is checked: anyone on the path can impersonate the server. For debugging only.
        case none
    }

    /// A TLS protocol version.
    public enum Version: Sendable, Hashable, Comparable {
        case tls1_2
        case tls1_3
    }

    /// A certificate and private key the client presents when the server asks for one.
    public struct ClientCertificate: Sendable, Hashable {
        enum Source: Sendable, Hashable {
            case files(chain: String, key: String)
            case pem(chain: String, key: String)

            /// Byte for byte, as for ``TrustRoots``.
            static func == (lhs: Source, rhs: Source) -> Bool {
                switch (lhs, rhs) {
                case (.files(let lhsChain, let lhsKey), .files(let rhsChain, let rhsKey)),
                    (.pem(let lhsChain, let lhsKey), .pem(let rhsChain, let rhsKey)):
                    ExactText.equal(lhsChain, rhsChain) && ExactText.equal(lhsKey, rhsKey)
                default: false
                }
            }

            func hash(into hasher: inout Hasher) {
                switch self {
                case .files(let chain, let key):
                    hasher.combine(0)
                    ExactText.hash(chain, into: &hasher)
                    ExactText.hash(key, into: &hasher)
                case .pem(let chain, let key):
                    hasher.combine(1)
                    ExactText.hash(chain, into: &hasher)
                    ExactText.hash(key, into: &hasher)
                }
            }
        }

        let source: Source

        /// Reads the certificate chain (leaf first) and the private key from PEM files.
        public static func files(certificateChain: String, privateKey: String) -> ClientCertificate {
            ClientCertificate(source: .files(chain: certificateChain, key: privateKey))
        }

        /// Uses PEM text for the certificate chain (leaf first) and the private key.
        public static func pem(certificateChain: String, privateKey: String) -> ClientCertificate {
            ClientCertificate(source: .pem(chain: certificateChain, key: privateKey))
        }
    }

    /// The roots the server's chain is verified against. Default: ``TrustRoots/system``.
    public var trustRoots: TrustRoots
    /// Default: ``CertificateVerification/full``.
    public var certificateVerification: CertificateVerification
    /// The lowest version the client accepts. Default: TLS 1.2.
    public var minimumVersion: Version
    /// The highest version the client offers; `nil` (the default) means the highest OpenSSL supports.
    public var maximumVersion: Version?
    /// Presented when the server asks for a client certificate. Default: none.
    public var clientCertificate: ClientCertificate?

    /// Creates a configuration; every parameter has a safe default.
    public init(
        trustRoots: TrustRoots = .system,
        certificateVerification: CertificateVerification = .full,
        minimumVersion: Version = .tls1_2,
        maximumVersion: Version? = nil,
        clientCertificate: ClientCertificate? = nil
    ) {
        self.trustRoots = trustRoots
        self.certificateVerification = certificateVerification
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.clientCertificate = clientCertificate
    }

    /// The OpenSSL context options this configuration stands for. HTTP/1.1 is the only ALPN protocol.
    var contextOptions: TLSContextOptions {
        let roots: TrustRootSource =
            switch self.trustRoots {
            case .system: .system
            case .file(let path): .pem(.file(path))
            case .pem(let text): .pem(.bytes(Array(text.utf8)))
            }
        let verification: PeerVerification =
            switch self.certificateVerification {
            case .full: .full
            case .noHostnameVerification: .noHostnameVerification
            case .none: .none
            }
        var chain: PEMSource?
        var key: PEMSource?
        switch self.clientCertificate?.source {
        case .files(let chainPath, let keyPath):
            chain = .file(chainPath)
            key = .file(keyPath)
        case .pem(let chainText, let keyText):
            chain = .bytes(Array(chainText.utf8))
            key = .bytes(Array(keyText.utf8))
        case nil:
            break
        }
        return TLSContextOptions(
            role: .client,
            trustRoots: roots,
            verification: verification,
            minimumVersion: self.minimumVersion.protocolVersion,
            maximumVersion: self.maximumVersion?.protocolVersion,
            alpnProtocols: ["http/1.1"],
            certificateChain: chain,
            privateKey: key
        )
    }
}

extension TLSConfiguration.Version {
    var protocolVersion: TLSProtocolVersion {
        switch self {
        case .tls1_2: .tls1_2
        case .tls1_3: .tls1_3
        }
    }
}
