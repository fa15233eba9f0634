import HTTPSAgentTLS
import NIOConcurrencyHelpers

/// What a reconnect does with a ``TLSSessionCache`` that holds sessions for many servers.
///
/// Not API: for the Benchmarks package only, with no stability promise (see `HotPathProbes.swift`).
///
/// The cache holds one session for each of `servers` keys, built as the connector builds them (host,
/// port, SNI, the default ``TLSConfiguration``'s ALPN protocols and identity). The sessions are real
/// OpenSSL `SSL_SESSION`s, decoded from DER made here with the fields and sizes of sessions OpenSSL 3
/// makes on a client: a P-256 server certificate, a 208-byte ticket for TLS 1.3 (176 for TLS 1.2),
/// about 770 bytes in all.
@_spi(Benchmarking)
public final class SessionCacheProbe: Sendable {
    /// The kind of session the cache holds.
    public enum Sessions: Sendable, Hashable {
        /// TLS 1.3 tickets: single-use, so taking one removes it and remembers its fingerprint.
        case tls13Tickets
        /// TLS 1.2 sessions: taking one leaves it; a new one replaces it.
        case tls12Sessions
    }

    private let cache: TLSSessionCache
    /// The servers' host names; each call builds its key from one, as the connector builds one per
    /// connection (the key's digest is computed when the key is made).
    private let hosts: [String]
    private let alpn: [String]
    private let configurationIdentity: [UInt8]
    /// Sessions stored in turn, one per call. More than the 4,096 spent-ticket fingerprints the cache
    /// remembers, so that every ticket taken is new to it, as a server's tickets are.
    private let sessions: [SSLSessionBox]
    private let calls = NIOLockedValueBox(0)

    /// Fills a cache and warms it up with one call of ``reconnect()`` per session, so that it is in the
    /// state of a long-running process.
    ///
    /// - Parameters:
    ///   - servers: how many keys the cache holds sessions for; also its capacity.
    ///   - sessions: TLS 1.3 tickets or TLS 1.2 sessions.
    /// - Throws: if OpenSSL cannot make the TLS context or the certificate.
    public init(servers: Int = 100, sessions kind: Sessions) throws {
        precondition(servers > 0, "the cache needs at least one server")
        let context = try SSLContextCache().context(for: TLSConfiguration().contextOptions)
        self.alpn = context.options.alpnProtocols
        self.configurationIdentity = context.identity
        self.hosts = (0..<servers).map { "server-\($0).example.com" }
        let certificate = try CertificateAuthority.selfSigned(commonName: "example.com", dnsNames: ["example.com"])
        let peer = Self.der(fromPEM: certificate.certificatePEM)
        let now = TLSSessionCache.now()
        self.sessions = try (0..<(4_096 + 2 * servers)).map { _ in
            guard let session = SSLSessionBox(der: SessionDER.session(kind, peer: peer, createdAt: now)) else {
                throw TLSSetupError(operation: "d2i_SSL_SESSION")
            }
            return session
        }
        self.cache = TLSSessionCache(capacity: servers)
        for (host, session) in zip(self.hosts, self.sessions) {
            self.cache.store(session, for: self.key(host), persistable: true)
        }
        for _ in self.sessions {
            self.reconnect()
        }
    }

    /// A reconnect to the next server in turn: makes the connection's key (with its digest), takes the
    /// session to offer (`take`, as the connector does before the handshake) and stores the one the
    /// server sends (`store`, as the new-session callback does). Also takes one uncontended lock, for
    /// the probe's own call counter.
    ///
    /// - Returns: whether a session was found to offer.
    @discardableResult
    public func reconnect() -> Bool {
        let call = self.calls.withLockedValue { calls in
            defer { calls += 1 }
            return calls
        }
        let key = self.key(self.hosts[call % self.hosts.count])
        let offered = self.cache.take(key)
        // Offset by the number of keys, so that the session stored is never one the cache still holds.
        self.cache.store(self.sessions[(call + self.hosts.count) % self.sessions.count], for: key, persistable: true)
        return offered != nil
    }

    /// A first connection to a server the cache has no session for: its key, and a `take` that finds
    /// nothing.
    ///
    /// - Returns: whether a session was found (never).
    public func miss() -> Bool {
        self.cache.take(self.key("unknown.example.com")) != nil
    }

    /// The key the connector makes for a connection to `host`:443 with the default configuration.
    private func key(_ host: String) -> SessionKey {
        SessionKey(
            host: host,
            port: 443,
            serverName: host,
            alpn: self.alpn,
            configurationIdentity: self.configurationIdentity
        )
    }

    /// The DER bytes of the first block of a PEM text.
    private static func der(fromPEM pem: String) -> [UInt8] {
        var values = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            values[Int(byte)] = UInt8(index)
        }
        var bytes: [UInt8] = []
        var bits: UInt32 = 0
        var count = 0
        for line in pem.split(separator: "\n").drop(while: { !$0.hasPrefix("-----BEGIN") }).dropFirst() {
            if line.hasPrefix("-----END") { break }
            for byte in line.utf8 where values[Int(byte)] != 0xFF {
                bits = bits << 6 | UInt32(values[Int(byte)])
                count += 6
                if count >= 8 {
                    count -= 8
                    bytes.append(UInt8(truncatingIfNeeded: bits >> UInt32(count)))
                }
            }
        }
        return bytes
    }
}

/// OpenSSL's DER form of a client session (`SSL_SESSION_ASN1` in ssl/ssl_asn1.c), with the fields an
/// OpenSSL 3 client keeps after a full handshake.
private enum SessionDER {
    static func session(_ kind: SessionCacheProbe.Sessions, peer: [UInt8], createdAt: Int64) -> [UInt8] {
        let tls13 = kind == .tls13Tickets
        var fields: [[UInt8]] = [
            self.integer(1),
            self.integer(tls13 ? 0x0304 : 0x0303),
            self.octets(tls13 ? [0x13, 0x02] : [0xC0, 0x2C]),  // AES-256-GCM-SHA384, ECDHE-ECDSA for TLS 1.2
            self.octets(CryptoPrimitives.randomBytes(32)),  // session ID
            self.octets(CryptoPrimitives.randomBytes(48)),  // master key or resumption secret
            self.explicit(1, self.integer(UInt64(createdAt))),
            self.explicit(2, self.integer(7_200)),  // timeout
            self.explicit(3, peer),
            self.explicit(5, self.integer(0)),  // verify result: X509_V_OK
            self.explicit(6, self.octets(Array("example.com".utf8))),
            self.explicit(9, self.integer(7_200)),  // ticket lifetime hint
            self.explicit(10, self.octets(CryptoPrimitives.randomBytes(tls13 ? 208 : 176))),
        ]
        if tls13 {
            fields.append(self.explicit(14, self.integer(0x5621_D561)))  // ticket age add
        }
        return self.element(0x30, fields.flatMap { $0 })
    }

    private static func element(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        guard content.count >= 0x80 else { return [tag, UInt8(content.count)] + content }
        let length = withUnsafeBytes(of: UInt32(content.count).bigEndian) { Array($0.drop { $0 == 0 }) }
        return [tag, 0x80 | UInt8(length.count)] + length + content
    }

    /// A non-negative INTEGER: big-endian, minimal, with a leading zero byte if the top bit is set.
    private static func integer(_ value: UInt64) -> [UInt8] {
        var bytes = withUnsafeBytes(of: value.bigEndian) { Array($0.drop { $0 == 0 }) }
        if bytes.first.map({ $0 & 0x80 != 0 }) ?? true {
            bytes.insert(0, at: 0)
        }
        return self.element(0x02, bytes)
    }

    private static func octets(_ bytes: [UInt8]) -> [UInt8] { self.element(0x04, bytes) }

    private static func explicit(_ number: UInt8, _ inner: [UInt8]) -> [UInt8] { self.element(0xA0 | number, inner) }
}
