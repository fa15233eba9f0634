/// A TLS protocol version, in the order OpenSSL compares them.
package enum TLSProtocolVersion: Int, Sendable, Hashable, Comparable, CaseIterable {
    case tls1_0 = 0x0301
    case tls1_1 = 0x0302
    case tls1_2 = 0x0303
    case tls1_3 = 0x0304

    package static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Where PEM-encoded material comes from: a file on disk or bytes in memory.
///
/// Paths are equal only when their bytes are (see ``ExactText``).
package enum PEMSource: Sendable, Hashable {
    case file(String)
    case bytes([UInt8])

    package static func == (lhs: PEMSource, rhs: PEMSource) -> Bool {
        switch (lhs, rhs) {
        case (.file(let lhs), .file(let rhs)): ExactText.equal(lhs, rhs)
        case (.bytes(let lhs), .bytes(let rhs)): lhs == rhs
        default: false
        }
    }

    package func hash(into hasher: inout Hasher) {
        switch self {
        case .file(let path):
            hasher.combine(0)
            ExactText.hash(path, into: &hasher)
        case .bytes(let bytes):
            hasher.combine(1)
            hasher.combine(bytes)
        }
    }
}

/// The certificates a peer's chain is checked against.
package enum TrustRootSource: Sendable, Hashable {
    /// The operating system's store (OpenSSL's default verify paths, `/etc/ssl/certs` on Debian).
    case system
    /// PEM certificates, from a file or from memory.
    case pem(PEMSource)
}

/// How much of the peer's identity is checked.
package enum PeerVerification: Sendable, Hashable {
    /// Chain to a trusted root, validity dates, and the host name or IP address.
    case full
    /// Chain and dates, but not the name.
    case noHostnameVerification
    /// Nothing at all. Only for debugging (`fetch -k`).
    case none
}

/// Everything that goes into one `SSL_CTX`.
///
/// Two equal values build interchangeable contexts, so the value is the key of the context cache.
/// Equality compares file paths, not file contents: a trust file edited on disk is picked up by a new
/// ``SSLContextCache`` only.
package struct TLSContextOptions: Sendable, Hashable {
    package enum Role: Sendable, Hashable {
        case client
        case server
    }

    package var role: Role
    /// For a client, the roots that verify the server (default: the system store). For a server, the roots
    /// that verify client certificates; `nil` means the server does not ask for one.
    package var trustRoots: TrustRootSource?
    package var verification: PeerVerification
    package var minimumVersion: TLSProtocolVersion
    package var maximumVersion: TLSProtocolVersion?
    /// ALPN protocol names in preference order; empty sends no ALPN extension.
    package var alpnProtocols: [String]
    /// Our certificate chain (leaf first) and its private key: the server's identity, or a client certificate.
    package var certificateChain: PEMSource?
    package var privateKey: PEMSource?
    /// Server only: whether to issue session tickets (TLS 1.2 RFC 5077 and TLS 1.3).
    package var sessionTickets: Bool
    /// Server only: how long sessions may be resumed, in seconds (the ticket lifetime hint); `nil`
    /// keeps OpenSSL's default.
    package var sessionTimeout: Int?
    /// Server only, for tests: select the first of ``alpnProtocols`` even when the client did not offer
    /// it, as a broken server would (a correct one picks from the client's list, or answers without
    /// ALPN). Lets a test check that a client refuses a protocol it never asked for.
    package var _testSelectsUnofferedALPN = false

    package init(
        role: Role,
        trustRoots: TrustRootSource? = .system,
        verification: PeerVerification = .full,
        minimumVersion: TLSProtocolVersion = .tls1_2,
        maximumVersion: TLSProtocolVersion? = nil,
        alpnProtocols: [String] = ["http/1.1"],
        certificateChain: PEMSource? = nil,
        privateKey: PEMSource? = nil,
        sessionTickets: Bool = true,
        sessionTimeout: Int? = nil
    ) {
        self.role = role
        self.trustRoots = trustRoots
        self.verification = verification
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.alpnProtocols = alpnProtocols
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.sessionTickets = sessionTickets
        self.sessionTimeout = sessionTimeout
    }
}
