/// The decisions of a TLS session cache: which session to offer for a key, what to keep, what to drop.
///
/// A pure value: events in, results out; no I/O, no locks, no clock (callers pass `now`, in seconds
/// since 1970, because session lifetimes are absolute and survive a restart when persisted).
///
/// Rules (RFC 8446 appendix C.4, RFC 5077, and curl's and Node's caches):
/// - Entries are keyed by a digest of everything that must match for resumption to be safe; a session
///   is only ever offered under the key it was stored under.
/// - TLS 1.3 tickets are single-use: the several a server sends are kept (up to ``maximumPerKey``) and
///   each is taken out when offered. A TLS 1.2 session may be offered again, and a newer one replaces it.
/// - Expired sessions (lifetime passed, or the server certificate they vouch for expired) are dropped
///   when met, never offered.
/// - At ``capacity`` keys, the least recently used key is evicted.
package struct SessionCacheState<Session> {
    package struct Stored {
        package var session: Session
        /// Seconds since 1970 after which it must not be offered.
        package var expiresAt: Int64
        /// TLS 1.3 tickets: spent when offered.
        package var singleUse: Bool
        /// False for sessions tied to a client certificate: never written to a file.
        package var persistable: Bool
        /// A digest of the session itself, to recognise the same ticket coming back from a file.
        package var fingerprint: [UInt8]?

        package init(
            session: Session,
            expiresAt: Int64,
            singleUse: Bool,
            persistable: Bool,
            fingerprint: [UInt8]? = nil
        ) {
            self.session = session
            self.expiresAt = expiresAt
            self.singleUse = singleUse
            self.persistable = persistable
            self.fingerprint = fingerprint
        }
    }

    package struct Stats: Sendable, Hashable {
        /// Keys with at least one session.
        package var entries = 0
        /// Offers made.
        package var hits = 0
        /// Lookups that found nothing to offer.
        package var misses = 0
        /// Keys dropped for capacity.
        package var evictions = 0
        /// Sessions dropped because they expired.
        package var expirations = 0
        /// Keys dropped because a connection under them failed with a TLS error.
        package var invalidations = 0
    }

    fileprivate struct Entry {
        var sessions: [Stored]
        var lastUsed: UInt64
    }

    package let capacity: Int
    package let maximumPerKey: Int
    private let unseal: @Sendable (PersistedSession, [UInt8]) -> Stored?
    private var entries: [[UInt8]: Entry] = [:]
    /// Sessions read from a file, not yet matched to a key: only a salted hash of their key is known.
    private var loaded: [PersistedSession] = []
    /// Fingerprints of tickets already offered (most recent last), so that a ticket read back from a
    /// file is not offered a second time.
    private var spent: [[UInt8]] = []
    private var spentSet: Set<[UInt8]> = []
    private static var spentMemory: Int { 4096 }
    private var tick: UInt64 = 0
    private var counters = Stats()

    /// - Parameters:
    ///   - capacity: the most keys kept; 0 keeps nothing.
    ///   - maximumPerKey: the most TLS 1.3 tickets kept per key.
    ///   - unseal: opens a loaded session for the key digest it matched; `nil` drops it.
    package init(
        capacity: Int,
        maximumPerKey: Int = 4,
        unseal: @escaping @Sendable (PersistedSession, [UInt8]) -> Stored?
    ) {
        precondition(capacity >= 0 && maximumPerKey >= 1, "invalid session cache limits")
        self.capacity = capacity
        self.maximumPerKey = maximumPerKey
        self.unseal = unseal
    }

    package var stats: Stats {
        var stats = self.counters
        stats.entries = self.entries.count
        return stats
    }

    /// The session to offer for `key`, if any. A single-use one is removed.
    package mutating func take(_ key: [UInt8], now: Int64) -> Session? {
        self.claimLoaded(for: key, now: now)
        guard var entry = self.entries.removeValue(forKey: key) else {
            self.counters.misses += 1
            return nil
        }
        let before = entry.sessions.count
        entry.sessions.removeAll { $0.expiresAt <= now }
        self.counters.expirations += before - entry.sessions.count
        guard let newest = entry.sessions.last else {
            self.counters.misses += 1
            return nil
        }
        if newest.singleUse {
            entry.sessions.removeLast()
            if let fingerprint = newest.fingerprint {
                self.rememberSpent(fingerprint)
            }
        }
        self.tick += 1
        entry.lastUsed = self.tick
        if !entry.sessions.isEmpty {
            self.entries[key] = entry
        }
        self.counters.hits += 1
        return newest.session
    }

    /// Keeps a session the server issued under `key`. Sessions already expired are not kept.
    package mutating func store(_ stored: Stored, for key: [UInt8], now: Int64) {
        guard self.capacity > 0, stored.expiresAt > now else { return }
        self.tick += 1
        var entry = self.entries.removeValue(forKey: key) ?? Entry(sessions: [], lastUsed: self.tick)
        entry.lastUsed = self.tick
        self.merge(stored, into: &entry)
        self.entries[key] = entry
        self.evictBeyondCapacity()
    }

    /// Adds a session as the newest of an entry: tickets accumulate (up to ``maximumPerKey``) and push
    /// out a TLS 1.2 session; a TLS 1.2 session replaces everything.
    private func merge(_ stored: Stored, into entry: inout Entry) {
        if stored.singleUse {
            entry.sessions.removeAll { !$0.singleUse }
            entry.sessions.append(stored)
            if entry.sessions.count > self.maximumPerKey {
                entry.sessions.removeFirst(entry.sessions.count - self.maximumPerKey)
            }
        } else {
            entry.sessions = [stored]
        }
    }

    /// Drops every session of `key`: a connection under it failed with a TLS error or fatal alert.
    package mutating func invalidate(_ key: [UInt8]) {
        let loadedBefore = self.loaded.count
        self.loaded.removeAll { $0.matches(keyDigest: key) }
        let droppedLoaded = self.loaded.count != loadedBefore
        if self.entries.removeValue(forKey: key) != nil || droppedLoaded {
            self.counters.invalidations += 1
        }
    }

    package mutating func removeAll() {
        self.entries.removeAll()
        self.loaded.removeAll()
    }

    // MARK: - Persistence

    /// What can be written to a file: unexpired, persistable sessions by key digest, plus loaded ones
    /// not yet matched to a key (still sealed).
    package func persistable(now: Int64) -> (byKey: [(key: [UInt8], stored: Stored)], loaded: [PersistedSession]) {
        var byKey: [(key: [UInt8], stored: Stored)] = []
        for (key, entry) in self.entries {
            for stored in entry.sessions where stored.persistable && stored.expiresAt > now {
                byKey.append((key, stored))
            }
        }
        return (byKey, self.loaded.filter { $0.expiresAt > now })
    }

    /// Adds sessions read from a file; expired ones are dropped (and counted), and an entry already
    /// loaded is not loaded twice (a ticket must not be offered twice).
    package mutating func load(_ sessions: [PersistedSession], now: Int64) {
        var known = Set(self.loaded)
        for session in sessions {
            if session.expiresAt <= now {
                self.counters.expirations += 1
            } else if known.insert(session).inserted {
                self.loaded.append(session)
            }
        }
        let (product, overflow) = self.capacity.multipliedReportingOverflow(by: self.maximumPerKey)
        let limit = overflow ? Int.max : product
        if self.loaded.count > limit {
            self.loaded.removeFirst(self.loaded.count - limit)
        }
    }

    /// Moves loaded sessions whose salted key hash matches `key` into the entry for `key`, under the
    /// same rules as ``store(_:for:now:)``, as older than anything stored since. One that matches but
    /// does not open (altered) or has expired is dropped.
    private mutating func claimLoaded(for key: [UInt8], now: Int64) {
        guard !self.loaded.isEmpty else { return }
        var matched: [Stored] = []
        let unseal = self.unseal
        var expired = 0
        self.loaded.removeAll { loaded in
            guard loaded.matches(keyDigest: key) else { return false }
            if loaded.expiresAt <= now {
                expired += 1
            } else if let stored = unseal(loaded, key) {
                matched.append(stored)
            }
            return true
        }
        self.counters.expirations += expired
        // The same ticket may come back from a file: once spent, or while still held, it is not kept twice.
        let existing = self.entries[key]
        var known = self.spentSet
        for stored in existing?.sessions ?? [] {
            if let fingerprint = stored.fingerprint { known.insert(fingerprint) }
        }
        matched.removeAll { stored in
            guard let fingerprint = stored.fingerprint else { return false }
            return !known.insert(fingerprint).inserted
        }
        guard !matched.isEmpty else { return }
        self.tick += 1
        self.entries.removeValue(forKey: key)
        var entry = Entry(sessions: [], lastUsed: self.tick)
        for stored in matched + (existing?.sessions ?? []) {
            self.merge(stored, into: &entry)
        }
        self.entries[key] = entry
        self.evictBeyondCapacity()
    }

    private mutating func rememberSpent(_ fingerprint: [UInt8]) {
        guard self.spentSet.insert(fingerprint).inserted else { return }
        self.spent.append(fingerprint)
        if self.spent.count > Self.spentMemory {
            self.spentSet.remove(self.spent.removeFirst())
        }
    }

    private mutating func evictBeyondCapacity() {
        while self.entries.count > self.capacity {
            guard let oldest = self.entries.min(by: { $0.value.lastUsed < $1.value.lastUsed })?.key else { return }
            self.entries.removeValue(forKey: oldest)
            self.counters.evictions += 1
        }
    }
}

extension SessionCacheState: Sendable where Session: Sendable {}
extension SessionCacheState.Stored: Sendable where Session: Sendable {}
extension SessionCacheState.Entry: Sendable where Session: Sendable {}
