import HTTPSAgentTLS
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Keeps TLS sessions so that a new connection to a server we talked to before resumes instead of
/// paying for a full handshake.
///
/// Captures TLS 1.2 sessions (session IDs and RFC 5077 tickets) and TLS 1.3 tickets as servers issue
/// them, and offers one on the next connection with the same key: host, port, SNI, ALPN and the TLS
/// configuration's identity (trust roots and certificate contents, verification, versions). A session is
/// never offered under another key. TLS 1.3 tickets are spent once each; expired sessions are dropped;
/// a connection that fails with a TLS error or fatal alert drops the sessions of its key.
///
/// Each ``Agent`` gets its own cache by default (``Agent/Configuration/sessionCache``); pass one
/// instance to several Agents to share it, or `nil` to disable resumption.
///
/// A resumed session skips certificate verification: the server proves it holds the session's secret,
/// which only a server that passed verification at the original handshake received. See
/// <doc:TLSSessionResumption> for what that does and does not prove, and for persisting sessions with
/// ``save(to:)`` and ``load(from:)``.
public final class TLSSessionCache: Sendable {
    /// Counters since the cache was made.
    public struct Stats: Sendable, Hashable {
        /// Keys (server and configuration) with at least one session.
        public var entries: Int
        /// Sessions offered to a new connection.
        public var hits: Int
        /// New connections with nothing to offer.
        public var misses: Int
        /// Keys dropped to stay within the capacity (least recently used first).
        public var evictions: Int
        /// Sessions dropped because their lifetime passed.
        public var expirations: Int
        /// Keys dropped because a connection under them failed with a TLS error.
        public var invalidations: Int
    }

    /// TLS 1.3 tickets live at most 7 days (RFC 8446 §4.6.1); TLS 1.2 sessions at most a day.
    static let tls13LifetimeCap: Int64 = 7 * 86_400
    static let tls12LifetimeCap: Int64 = 86_400

    private let state: NIOLockedValueBox<SessionCacheState<SSLSessionBox>>

    /// The most keys kept (Node's `maxCachedSessions` counts the same way). Default: 100.
    public let capacity: Int

    /// Creates an empty cache.
    ///
    /// - Parameter capacity: the most keys (server and configuration pairs) kept; 0 keeps none.
    public init(capacity: Int = 100) {
        precondition(capacity >= 0, "capacity must not be negative")
        self.capacity = capacity
        self.state = NIOLockedValueBox(
            SessionCacheState(capacity: capacity) { persisted, keyDigest in
                guard let der = persisted.open(keyDigest: keyDigest), let session = SSLSessionBox(der: der),
                    session.isResumable, let ownExpiry = Self.expiry(of: session)
                else {
                    return nil
                }
                // The file's expiry carries the caps computed when the session was made; the session's
                // own fields can only shorten it.
                return .init(
                    session: session,
                    expiresAt: min(persisted.expiresAt, ownExpiry),
                    singleUse: session.isSingleUse,
                    persistable: true,
                    fingerprint: CryptoPrimitives.sha256(der)
                )
            }
        )
    }

    /// The counters now.
    public var stats: Stats {
        let stats = self.state.withLockedValue { $0.stats }
        return Stats(
            entries: stats.entries,
            hits: stats.hits,
            misses: stats.misses,
            evictions: stats.evictions,
            expirations: stats.expirations,
            invalidations: stats.invalidations
        )
    }

    /// Forgets every session.
    public func removeAll() {
        self.state.withLockedValue { $0.removeAll() }
    }

    // MARK: - Used by the connector

    /// The session to offer for `key`, if any (a TLS 1.3 ticket is taken out).
    func take(_ key: SessionKey) -> SSLSessionBox? {
        let digest = key.digest
        return self.state.withLockedValue { $0.take(digest, now: Self.now()) }
    }

    /// Keeps a session the server issued under `key`.
    func store(_ session: SSLSessionBox, for key: SessionKey, persistable: Bool) {
        guard session.isResumable, let expiresAt = Self.expiry(of: session) else { return }
        let stored = SessionCacheState<SSLSessionBox>.Stored(
            session: session,
            expiresAt: expiresAt,
            singleUse: session.isSingleUse,
            persistable: persistable,
            fingerprint: session.isSingleUse ? CryptoPrimitives.sha256(session.derEncoded()) : nil
        )
        let digest = key.digest
        self.state.withLockedValue { $0.store(stored, for: digest, now: Self.now()) }
    }

    /// Drops the sessions of `key` after a TLS failure under it.
    func invalidate(_ key: SessionKey) {
        let digest = key.digest
        self.state.withLockedValue { $0.invalidate(digest) }
    }

    /// When a session stops being offered: the lifetime the server gave it, at most 7 days (TLS 1.3)
    /// or 1 day (TLS 1.2) after the full handshake that last verified the server's certificate, and
    /// never after that certificate expires. `nil` for a session with no lifetime.
    static func expiry(of session: SSLSessionBox) -> Int64? {
        guard session.lifetime > 0 else { return nil }
        let cap = session.isSingleUse ? Self.tls13LifetimeCap : Self.tls12LifetimeCap
        var expiresAt = min(session.createdAt + session.lifetime, session.verifiedAt + cap)
        if let notAfter = session.peerNotAfter {
            expiresAt = min(expiresAt, notAfter)
        }
        return expiresAt
    }

    static func now() -> Int64 {
        Int64(time(nil))
    }
}

// MARK: - Persistence

extension TLSSessionCache {
    /// Why a session file could not be written or read. The cache is left as it was.
    public struct FileError: Error, Sendable, Hashable, CustomStringConvertible {
        /// The file.
        public var path: String
        /// What was wrong, e.g. "its checksum does not match (truncated or corrupt)".
        public var reason: String

        public var description: String { "session file \(self.path): \(self.reason)" }
    }

    /// Writes the cache's sessions to `path` (mode 0600, replaced atomically), so a later process can
    /// resume on its first connection after ``load(from:)``.
    ///
    /// The file holds session secrets: treat it like a private key, and write access to it like write
    /// access to the trust store (a forged session could impersonate a server). Host names are not in
    /// it in clear: each entry is found by a salted SHA-256 of its key and encrypted (AES-256-GCM) under
    /// a key derived from the host, port and TLS configuration, since a session itself carries the
    /// server's certificate and name. Sessions tied to a client certificate, and expired ones, are not
    /// written.
    ///
    /// - Throws: ``FileError`` if the file cannot be written.
    public func save(to path: String) throws(FileError) {
        let now = Self.now()
        let (byKey, loaded) = self.state.withLockedValue { $0.persistable(now: now) }
        var entries: [PersistedSession] = loaded
        for (digest, stored) in byKey {
            let der = stored.session.derEncoded()
            guard !der.isEmpty else { continue }
            entries.append(PersistedSession(der: der, keyDigest: digest, expiresAt: stored.expiresAt))
        }
        try Self.writeAtomically(SessionCodec.encode(entries), to: path)
    }

    /// Adds the sessions in a file written by ``save(to:)``. Expired entries are dropped. A session
    /// from the file is offered only to a connection whose key hashes to the entry's key hash, and can
    /// only be decrypted with that key; an entry altered since it was written is dropped.
    ///
    /// Only a regular file that belongs to the current user, is not writable by group or others, and
    /// is at most 16 MiB is read; a symbolic link is not followed.
    ///
    /// - Throws: ``FileError`` if the file is missing, unreadable, not private, too large, truncated,
    ///   corrupt or not a session file; the cache is then unchanged.
    public func load(from path: String) throws(FileError) {
        let bytes = try Self.readPrivateFile(path)
        let persisted: [PersistedSession]
        do {
            persisted = try SessionCodec.decode(bytes)
        } catch {
            throw FileError(path: path, reason: error.description)
        }
        let now = Self.now()
        self.state.withLockedValue { $0.load(persisted, now: now) }
    }

    /// The largest session file accepted: far more than `capacity` keys of tickets need.
    static let maximumFileSize = 16 << 20

    /// Reads a session file only if it is a regular file (no symbolic link followed), owned by this user,
    /// not writable by others, and of a sane size: whoever can write it can make us resume a session
    /// they made, and so impersonate a server without its certificate.
    private static func readPrivateFile(_ path: String) throws(FileError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else {
            throw FileError(path: path, reason: "it cannot be opened: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw FileError(path: path, reason: "it cannot be examined: \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw FileError(path: path, reason: "it is not a regular file")
        }
        guard info.st_uid == geteuid() else {
            throw FileError(path: path, reason: "it belongs to another user")
        }
        guard info.st_mode & 0o022 == 0 else {
            throw FileError(path: path, reason: "other users can write to it")
        }
        guard Int(info.st_size) <= Self.maximumFileSize else {
            throw FileError(path: path, reason: "it is larger than \(Self.maximumFileSize) bytes")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw FileError(path: path, reason: "it cannot be read whole")
            }
            offset += count
        }
        return bytes
    }

    private static func writeAtomically(_ bytes: [UInt8], to path: String) throws(FileError) {
        let temporary = path + ".tmp-" + CryptoPrimitives.randomBytes(6).map { String($0, radix: 16) }.joined()
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else {
            throw FileError(path: path, reason: "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        var failure: String?
        // Exactly 0600 whatever the umask: the file holds secrets.
        if fchmod(descriptor, 0o600) != 0 {
            failure = "cannot set its mode: \(String(cString: strerror(errno)))"
        }
        var offset = 0
        while failure == nil && offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                failure = "cannot write: \(String(cString: strerror(errno)))"
            } else {
                offset += written
            }
        }
        if failure == nil && fsync(descriptor) != 0 {
            failure = "cannot flush: \(String(cString: strerror(errno)))"
        }
        close(descriptor)
        if failure == nil && rename(temporary, path) != 0 {
            failure = "cannot replace it: \(String(cString: strerror(errno)))"
        }
        if let failure {
            unlink(temporary)
            throw FileError(path: path, reason: failure)
        }
    }
}

extension TLSSessionCache: Hashable {
    /// Caches are equal only to themselves.
    public static func == (lhs: TLSSessionCache, rhs: TLSSessionCache) -> Bool { lhs === rhs }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(ObjectIdentifier(self))
    }
}
