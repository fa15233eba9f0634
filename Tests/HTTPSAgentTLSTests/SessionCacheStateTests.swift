import HTTPSAgentTLS
import Synchronization
import Testing

/// Stands in for `SSLSessionBox`: the state is generic and never looks inside a session.
private struct FakeSession: Sendable, Equatable {
    let id: Int
}

private typealias State = SessionCacheState<FakeSession>

/// A key digest: 32 bytes, like a SHA-256.
private func key(_ byte: UInt8) -> [UInt8] {
    [UInt8](repeating: byte, count: 32)
}

private func ticket(_ id: Int, expiresAt: Int64 = 1_000, persistable: Bool = true) -> State.Stored {
    State.Stored(session: FakeSession(id: id), expiresAt: expiresAt, singleUse: true, persistable: persistable)
}

private func reusable(_ id: Int, expiresAt: Int64 = 1_000, persistable: Bool = true) -> State.Stored {
    State.Stored(session: FakeSession(id: id), expiresAt: expiresAt, singleUse: false, persistable: persistable)
}

/// Fake DER: a marker, the single-use flag, and the id, so `unseal` can rebuild the session.
private func fakeDER(_ id: Int, singleUse: Bool) -> [UInt8] {
    Array("fake-session".utf8) + [singleUse ? 1 : 0] + withUnsafeBytes(of: Int64(id).bigEndian) { Array($0) }
}

private func persisted(
    _ id: Int,
    for key: [UInt8],
    expiresAt: Int64 = 1_000,
    singleUse: Bool = true
)
    -> PersistedSession
{
    PersistedSession(der: fakeDER(id, singleUse: singleUse), keyDigest: key, expiresAt: expiresAt)
}

/// Records every key digest `unseal` is asked about.
private final class UnsealLog: Sendable {
    let keys = Mutex<[[UInt8]]>([])
}

/// Opens a persisted session the way `TLSSessionCache` does: decrypt with the key it matched, then decode.
private func realUnseal(log: UnsealLog? = nil) -> @Sendable (PersistedSession, [UInt8]) -> State.Stored? {
    { persisted, keyDigest in
        log?.keys.withLock { $0.append(keyDigest) }
        guard let der = persisted.open(keyDigest: keyDigest) else { return nil }
        let marker = Array("fake-session".utf8)
        guard der.count == marker.count + 9, Array(der.prefix(marker.count)) == marker else { return nil }
        let id = der.suffix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) }
        return State.Stored(
            session: FakeSession(id: Int(id)),
            expiresAt: persisted.expiresAt,
            singleUse: der[marker.count] == 1,
            persistable: true
        )
    }
}

/// For tests that load nothing: `unseal` must not be called.
private let unexpectedUnseal: @Sendable (PersistedSession, [UInt8]) -> State.Stored? = { _, _ in
    Issue.record("unseal called although nothing was loaded")
    return nil
}

/// Takes from `key` until nothing is offered, at most 10 times (a ticket that is never spent must not loop).
private func takeAll(_ state: inout State, _ key: [UInt8], now: Int64) -> [Int] {
    var offered: [Int] = []
    for _ in 0..<10 {
        guard let session = state.take(key, now: now) else { break }
        offered.append(session.id)
    }
    return offered
}

private func makeState(capacity: Int = 10, maximumPerKey: Int = 4) -> State {
    State(capacity: capacity, maximumPerKey: maximumPerKey, unseal: unexpectedUnseal)
}

@Suite("Session cache state")
struct SessionCacheStateTests {
    // MARK: - Offering

    @Test func anEmptyCacheMisses() {
        var state = makeState()
        #expect(state.take(key(1), now: 0) == nil)
        #expect(state.stats.misses == 1)
        #expect(state.stats.hits == 0)
        #expect(state.stats.entries == 0)
    }

    @Test func aStoredSessionIsOfferedForItsKey() {
        var state = makeState()
        state.store(ticket(7), for: key(1), now: 0)
        #expect(state.stats.entries == 1)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 7))
        #expect(state.stats.hits == 1)
        #expect(state.stats.misses == 0)
    }

    @Test func aSingleUseTicketIsTakenOut() {
        var state = makeState()
        state.store(ticket(7), for: key(1), now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 7))
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.stats.entries == 0)
        #expect(state.stats.hits == 1)
        #expect(state.stats.misses == 1)
    }

    @Test func ticketsAreKeptUpToMaximumPerKeyAndOfferedNewestFirst() {
        var state = makeState(maximumPerKey: 3)
        for id in 1...5 {
            state.store(ticket(id), for: key(1), now: 0)
        }
        #expect(state.stats.entries == 1)
        let offered = takeAll(&state, key(1), now: 1)
        // The two oldest were dropped; the rest come newest first.
        #expect(offered == [5, 4, 3])
    }

    @Test func aReusableSessionIsOfferedAgainUntilANewerOneReplacesIt() {
        var state = makeState()
        state.store(reusable(1), for: key(1), now: 0)
        for _ in 0..<3 {
            #expect(state.take(key(1), now: 1) == FakeSession(id: 1))
        }
        #expect(state.stats.hits == 3)
        #expect(state.stats.entries == 1)
        state.store(reusable(2), for: key(1), now: 2)
        #expect(state.take(key(1), now: 3) == FakeSession(id: 2))
        #expect(state.take(key(1), now: 3) == FakeSession(id: 2))
    }

    @Test func aReusableSessionReplacesTickets() {
        var state = makeState()
        state.store(ticket(1), for: key(1), now: 0)
        state.store(ticket(2), for: key(1), now: 0)
        state.store(reusable(3), for: key(1), now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 3))
        #expect(state.take(key(1), now: 1) == FakeSession(id: 3))
        // A ticket now replaces the reusable session; the earlier tickets must not come back either.
        state.store(ticket(4), for: key(1), now: 1)
        #expect(state.take(key(1), now: 2) == FakeSession(id: 4))
        #expect(state.take(key(1), now: 2) == nil)
    }

    @Test func aTicketReplacesAReusableSession() {
        var state = makeState()
        state.store(reusable(1), for: key(1), now: 0)
        state.store(ticket(2), for: key(1), now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 2))
        #expect(state.take(key(1), now: 1) == nil)
    }

    // MARK: - Expiry

    @Test func expiredSessionsAreNeverOfferedAndAreCounted() {
        var state = makeState()
        state.store(ticket(1, expiresAt: 100), for: key(1), now: 0)
        state.store(ticket(2, expiresAt: 200), for: key(1), now: 0)
        // Expiry is inclusive: at `expiresAt` the session is already gone.
        #expect(state.take(key(1), now: 200) == nil)
        #expect(state.stats.expirations == 2)
        #expect(state.stats.misses == 1)
        #expect(state.stats.hits == 0)
        #expect(state.stats.entries == 0)
    }

    @Test func justBeforeExpiryASessionIsStillOffered() {
        var state = makeState()
        state.store(reusable(1, expiresAt: 100), for: key(1), now: 0)
        #expect(state.take(key(1), now: 99) == FakeSession(id: 1))
        #expect(state.take(key(1), now: 100) == nil)
        #expect(state.stats.expirations == 1)
    }

    @Test func anExpiredNewestTicketGivesWayToAnOlderLiveOne() {
        var state = makeState()
        state.store(ticket(1, expiresAt: 300), for: key(1), now: 0)
        state.store(ticket(2, expiresAt: 100), for: key(1), now: 0)
        #expect(state.take(key(1), now: 150) == FakeSession(id: 1))
        #expect(state.stats.expirations == 1)
        #expect(state.take(key(1), now: 150) == nil)
    }

    @Test func aSessionAlreadyExpiredWhenStoredIsNotKept() {
        var state = makeState()
        state.store(ticket(1, expiresAt: 100), for: key(1), now: 100)
        state.store(reusable(2, expiresAt: 50), for: key(2), now: 100)
        #expect(state.stats.entries == 0)
        // Not kept at all: even a lookup with an earlier clock finds nothing.
        #expect(state.take(key(1), now: 0) == nil)
        #expect(state.take(key(2), now: 0) == nil)
    }

    // MARK: - Capacity

    @Test func capacityZeroKeepsNothing() {
        var state = State(capacity: 0, unseal: realUnseal())
        state.store(ticket(1), for: key(1), now: 0)
        state.store(reusable(2), for: key(2), now: 0)
        state.load([persisted(3, for: key(3))], now: 0)
        #expect(state.stats.entries == 0)
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.take(key(2), now: 1) == nil)
        #expect(state.take(key(3), now: 1) == nil)
        let saved = state.persistable(now: 1)
        #expect(saved.byKey.isEmpty)
        #expect(saved.loaded.isEmpty)
    }

    @Test func theLeastRecentlyStoredKeyIsEvictedAtCapacity() {
        var state = makeState(capacity: 2)
        state.store(reusable(1), for: key(1), now: 0)
        state.store(reusable(2), for: key(2), now: 0)
        #expect(state.stats.evictions == 0)
        state.store(reusable(3), for: key(3), now: 0)
        #expect(state.stats.entries == 2)
        #expect(state.stats.evictions == 1)
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.take(key(2), now: 1) == FakeSession(id: 2))
        #expect(state.take(key(3), now: 1) == FakeSession(id: 3))
    }

    @Test func takingAKeyCountsAsUse() {
        var state = makeState(capacity: 2)
        state.store(reusable(1), for: key(1), now: 0)
        state.store(reusable(2), for: key(2), now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 1))
        state.store(reusable(3), for: key(3), now: 1)
        #expect(state.stats.evictions == 1)
        #expect(state.take(key(2), now: 2) == nil)
        #expect(state.take(key(1), now: 2) == FakeSession(id: 1))
        #expect(state.take(key(3), now: 2) == FakeSession(id: 3))
    }

    @Test func storingAgainUnderAKeyCountsAsUse() {
        var state = makeState(capacity: 2)
        state.store(ticket(1), for: key(1), now: 0)
        state.store(ticket(2), for: key(2), now: 0)
        state.store(ticket(11), for: key(1), now: 0)
        state.store(ticket(3), for: key(3), now: 0)
        #expect(state.stats.evictions == 1)
        #expect(state.take(key(2), now: 1) == nil)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 11))
        #expect(state.take(key(1), now: 1) == FakeSession(id: 1))
        #expect(state.take(key(3), now: 1) == FakeSession(id: 3))
    }

    @Test func evictionsAreCountedPerKeyDropped() {
        var state = makeState(capacity: 3)
        for byte in UInt8(1)...10 {
            state.store(ticket(Int(byte)), for: key(byte), now: 0)
        }
        #expect(state.stats.entries == 3)
        #expect(state.stats.evictions == 7)
        for byte in UInt8(1)...7 {
            #expect(state.take(key(byte), now: 1) == nil)
        }
        for byte in UInt8(8)...10 {
            #expect(state.take(key(byte), now: 1) == FakeSession(id: Int(byte)))
        }
    }

    // MARK: - Invalidation and removal

    @Test func invalidateDropsEverySessionOfTheKeyOnly() {
        var state = makeState()
        state.store(ticket(1), for: key(1), now: 0)
        state.store(ticket(2), for: key(1), now: 0)
        state.store(reusable(3), for: key(2), now: 0)
        state.invalidate(key(1))
        #expect(state.stats.invalidations == 1)
        #expect(state.stats.entries == 1)
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.take(key(2), now: 1) == FakeSession(id: 3))
        // A key with nothing stored is not counted.
        state.invalidate(key(9))
        #expect(state.stats.invalidations == 1)
        #expect(state.stats.evictions == 0)
    }

    @Test func invalidateAlsoDropsLoadedSessionsOfTheKey() {
        var state = State(capacity: 10, unseal: realUnseal())
        state.load([persisted(1, for: key(1)), persisted(2, for: key(2))], now: 0)
        state.invalidate(key(1))
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.take(key(2), now: 1) == FakeSession(id: 2))
        #expect(state.persistable(now: 1).loaded.isEmpty)
    }

    @Test func invalidatingAKeyWithOnlyLoadedSessionsLeavesOtherKeysAlone() {
        var state = State(capacity: 1, unseal: realUnseal())
        state.store(reusable(1), for: key(1), now: 0)
        state.load([persisted(2, for: key(2))], now: 0)
        state.invalidate(key(2))
        #expect(state.take(key(1), now: 1) == FakeSession(id: 1))
        #expect(state.stats.evictions == 0)
    }

    @Test func removeAllForgetsStoredAndLoadedSessions() {
        var state = State(capacity: 10, unseal: realUnseal())
        state.store(ticket(1), for: key(1), now: 0)
        state.store(reusable(2), for: key(2), now: 0)
        state.load([persisted(3, for: key(3))], now: 0)
        state.removeAll()
        #expect(state.stats.entries == 0)
        let saved = state.persistable(now: 1)
        #expect(saved.byKey.isEmpty)
        #expect(saved.loaded.isEmpty)
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.take(key(2), now: 1) == nil)
        #expect(state.take(key(3), now: 1) == nil)
    }

    // MARK: - Stats and keys

    @Test func statsCountEntriesHitsAndMisses() {
        var state = makeState()
        state.store(ticket(1), for: key(1), now: 0)
        state.store(ticket(2), for: key(1), now: 0)
        state.store(reusable(3), for: key(2), now: 0)
        state.store(reusable(4), for: key(3), now: 0)
        #expect(state.stats.entries == 3)
        _ = state.take(key(1), now: 1)
        _ = state.take(key(2), now: 1)
        _ = state.take(key(4), now: 1)
        #expect(state.stats.hits == 2)
        #expect(state.stats.misses == 1)
        #expect(state.stats.entries == 3)
        _ = state.take(key(1), now: 1)
        #expect(state.stats.entries == 2)
        #expect(state.stats.evictions == 0)
        #expect(state.stats.expirations == 0)
        #expect(state.stats.invalidations == 0)
    }

    @Test func aDigestDifferingInOneByteNeverGetsTheSession() {
        var state = makeState()
        let stored = key(0xA5)
        state.store(reusable(1), for: stored, now: 0)
        for index in stored.indices {
            for flip: UInt8 in [0x01, 0x80] {
                var other = stored
                other[index] ^= flip
                #expect(state.take(other, now: 1) == nil, "byte \(index) ^ \(flip)")
            }
        }
        #expect(state.take(Array(stored.dropLast()), now: 1) == nil)
        #expect(state.take(stored + [0], now: 1) == nil)
        #expect(state.take([], now: 1) == nil)
        #expect(state.take(stored, now: 1) == FakeSession(id: 1))
        #expect(state.stats.hits == 1)
    }

    // MARK: - Persistence

    @Test func persistableLeavesOutClientCertificateAndExpiredSessions() {
        var state = State(capacity: 10, unseal: realUnseal())
        state.store(reusable(1, expiresAt: 500), for: key(1), now: 0)
        state.store(reusable(2, expiresAt: 500, persistable: false), for: key(2), now: 0)
        state.store(ticket(3, expiresAt: 50), for: key(3), now: 0)
        state.store(ticket(4, expiresAt: 500), for: key(4), now: 0)
        state.store(ticket(5, expiresAt: 500), for: key(4), now: 0)
        let saved = state.persistable(now: 100)
        let pairs = saved.byKey.map { "\($0.key[0]):\($0.stored.session.id)" }.sorted()
        #expect(pairs == ["1:1", "4:4", "4:5"])
        #expect(saved.loaded.isEmpty)
    }

    @Test func persistableReturnsUnclaimedLoadedSessionsUnlessExpired() {
        var state = State(capacity: 10, unseal: realUnseal())
        let early = persisted(1, for: key(1), expiresAt: 150)
        let late = persisted(2, for: key(2), expiresAt: 500)
        let claimed = persisted(3, for: key(3), expiresAt: 500, singleUse: false)
        state.load([early, late, claimed], now: 0)
        #expect(state.persistable(now: 100).loaded == [early, late, claimed])
        #expect(state.take(key(3), now: 100) == FakeSession(id: 3))
        let saved = state.persistable(now: 200)
        #expect(saved.loaded == [late])
        // Once claimed, a session is written again by key (sealed anew by the caller), not twice.
        #expect(saved.byKey.map(\.key) == [key(3)])
        #expect(saved.byKey.map(\.stored.session) == [FakeSession(id: 3)])
    }

    @Test func loadDropsExpiredEntriesAndCountsThem() {
        var state = State(capacity: 10, unseal: realUnseal())
        let kept = persisted(3, for: key(3), expiresAt: 101)
        state.load(
            [persisted(1, for: key(1), expiresAt: 100), persisted(2, for: key(2), expiresAt: 5), kept],
            now: 100
        )
        #expect(state.stats.expirations == 2)
        #expect(state.persistable(now: 100).loaded == [kept])
        #expect(state.take(key(1), now: 0) == nil)
        #expect(state.take(key(3), now: 100) == FakeSession(id: 3))
    }

    @Test func loadKeepsAtMostCapacityTimesMaximumPerKey() {
        var state = State(capacity: 2, maximumPerKey: 2, unseal: realUnseal())
        let sessions = (1...6).map { persisted($0, for: key(UInt8($0))) }
        state.load(sessions, now: 0)
        let loaded = state.persistable(now: 0).loaded
        #expect(loaded.count == 4)
        #expect(loaded.allSatisfy { sessions.contains($0) })
        // A second load is bounded the same way, not added on top.
        state.load((7...9).map { persisted($0, for: key(UInt8($0))) }, now: 0)
        #expect(state.persistable(now: 0).loaded.count == 4)
    }

    @Test func aLoadedSessionIsClaimedOnlyByTheKeyItWasSealedFor() {
        let log = UnsealLog()
        var state = State(capacity: 10, unseal: realUnseal(log: log))
        state.load([persisted(7, for: key(1))], now: 0)
        #expect(state.take(key(2), now: 1) == nil)
        #expect(log.keys.withLock { $0.isEmpty })
        #expect(state.persistable(now: 1).loaded.count == 1)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 7))
        #expect(log.keys.withLock { $0 } == [key(1)])
        #expect(state.persistable(now: 1).loaded.isEmpty)
        // A single-use ticket from a file is spent like any other.
        #expect(state.take(key(1), now: 1) == nil)
    }

    @Test func aLoadedSessionIsNeverOfferedUnderAKeyDifferingInOneByte() {
        var state = State(capacity: 10, unseal: realUnseal())
        let stored = key(0x3C)
        state.load([persisted(7, for: stored, singleUse: false)], now: 0)
        for index in stored.indices {
            var other = stored
            other[index] ^= 0x01
            #expect(state.take(other, now: 1) == nil, "byte \(index)")
        }
        #expect(state.take(stored, now: 1) == FakeSession(id: 7))
        #expect(state.take(stored, now: 1) == FakeSession(id: 7))
    }

    @Test func aLoadedSessionWithAlteredCiphertextIsDropped() {
        var state = State(capacity: 10, unseal: realUnseal())
        var altered = persisted(7, for: key(1))
        altered.sealed[altered.sealed.count / 2] ^= 0x01
        state.load([altered], now: 0)
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.stats.entries == 0)
        #expect(state.persistable(now: 1).loaded.isEmpty)
    }

    @Test func aLoadedSessionWithAnExtendedLifetimeIsDropped() {
        var state = State(capacity: 10, unseal: realUnseal())
        var altered = persisted(7, for: key(1), expiresAt: 100)
        altered.expiresAt = 10_000
        state.load([altered], now: 0)
        #expect(state.take(key(1), now: 500) == nil)
        #expect(state.persistable(now: 500).loaded.isEmpty)
    }

    @Test func aLoadedSessionReLabelledForAnotherKeyDoesNotOpen() {
        var state = State(capacity: 10, unseal: realUnseal())
        let original = persisted(7, for: key(1))
        // Its key hash now matches key 2, but it was sealed under key 1.
        let relabelled = PersistedSession(
            salt: original.salt,
            keyHash: PersistedSession.hash(salt: original.salt, keyDigest: key(2)),
            expiresAt: original.expiresAt,
            sealed: original.sealed
        )
        state.load([relabelled], now: 0)
        #expect(state.take(key(2), now: 1) == nil)
        #expect(state.take(key(1), now: 1) == nil)
        #expect(state.stats.hits == 0)
    }

    @Test func aLoadedSessionThatUnsealRefusesIsDropped() {
        let log = UnsealLog()
        var state = State(capacity: 10) { persisted, keyDigest in
            log.keys.withLock { $0.append(keyDigest) }
            return nil
        }
        state.load([persisted(7, for: key(1)), persisted(8, for: key(1))], now: 0)
        #expect(state.take(key(1), now: 1) == nil)
        #expect(log.keys.withLock { $0.count } == 2)
        #expect(state.persistable(now: 1).loaded.isEmpty)
        // Dropped, not retried.
        #expect(state.take(key(1), now: 1) == nil)
        #expect(log.keys.withLock { $0.count } == 2)
    }

    @Test func aLoadedSessionThatExpiredSinceLoadingIsNotOffered() {
        var state = State(capacity: 10, unseal: realUnseal())
        state.load([persisted(7, for: key(1), expiresAt: 100)], now: 0)
        #expect(state.take(key(1), now: 100) == nil)
        #expect(state.stats.expirations == 1)
    }

    @Test func claimedSessionsCountTowardMaximumPerKeyAsOlderThanStoredOnes() {
        var state = State(capacity: 10, maximumPerKey: 2, unseal: realUnseal())
        state.load([persisted(10, for: key(1)), persisted(11, for: key(1)), persisted(12, for: key(1))], now: 0)
        state.store(ticket(1), for: key(1), now: 0)
        let offered = takeAll(&state, key(1), now: 1)
        #expect(offered == [1, 12])
    }

    @Test func loadingIntoAnUnboundedCacheDoesNotTrap() async {
        await #expect(processExitsWith: .success) {
            var state = SessionCacheState<FakeSession>(capacity: .max) { _, _ in nil }
            state.load([], now: 0)
        }
    }

    @Test func claimingCountsTowardCapacity() {
        var state = State(capacity: 1, unseal: realUnseal())
        state.load([persisted(7, for: key(1), singleUse: false)], now: 0)
        state.store(reusable(2), for: key(2), now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 7))
        #expect(state.stats.entries == 1)
        #expect(state.stats.evictions == 1)
        #expect(state.take(key(2), now: 1) == nil)
    }
}

@Suite("SessionCacheState: loading a file twice, and claiming under the store rules")
struct SessionCacheStateLoadRulesTests {
    @Test func loadingTheSameEntriesTwiceDoesNotDuplicateATicket() {
        var state = State(capacity: 10, unseal: realUnseal())
        let entry = persisted(1, for: key(1))
        state.load([entry], now: 0)
        state.load([entry], now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 1))
        // The one ticket was spent; a duplicate would be offered a second time.
        #expect(state.take(key(1), now: 1) == nil)
    }

    @Test func claimedSessionsFollowTheStoreRules() {
        var state = State(capacity: 10, unseal: realUnseal())
        // A TLS 1.2 session loaded from a file, then a TLS 1.3 ticket from the server: the ticket
        // supersedes the older TLS 1.2 session, as it would had both arrived from servers.
        state.load([persisted(1, for: key(1), singleUse: false)], now: 0)
        state.store(ticket(2), for: key(1), now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 2))
        #expect(state.take(key(1), now: 1) == nil)
    }

    @Test func aClaimWhoseSessionsAllExpiredEvictsNothing() {
        var state = State(capacity: 1, unseal: realUnseal())
        state.store(reusable(1), for: key(1), now: 0)
        state.load([persisted(2, for: key(2), expiresAt: 50)], now: 0)
        #expect(state.take(key(2), now: 100) == nil)
        #expect(state.take(key(1), now: 100) == FakeSession(id: 1))
        #expect(state.stats.evictions == 0)
        #expect(state.stats.expirations == 1)
    }
}

@Suite("SessionCacheState: a spent ticket read back from a file")
struct SessionCacheStateSpentTicketTests {
    /// Unseals fake DER and fingerprints it, as the real cache fingerprints the session's DER.
    fileprivate static let fingerprintingUnseal: @Sendable (PersistedSession, [UInt8]) -> State.Stored? = {
        persisted,
        digest in
        guard let der = persisted.open(keyDigest: digest) else { return nil }
        let id = der.suffix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) }
        return State.Stored(
            session: FakeSession(id: Int(id)),
            expiresAt: persisted.expiresAt,
            singleUse: true,
            persistable: true,
            fingerprint: CryptoPrimitives.sha256(der)
        )
    }

    @Test func aTicketSpentBeforeTheFileIsLoadedIsNotOfferedAgain() {
        var state = State(capacity: 10, unseal: Self.fingerprintingUnseal)
        let der = fakeDER(1, singleUse: true)
        var spent = ticket(1)
        spent.fingerprint = CryptoPrimitives.sha256(der)
        state.store(spent, for: key(1), now: 0)
        #expect(state.take(key(1), now: 1) == FakeSession(id: 1))
        // The same ticket comes back from a file saved earlier.
        state.load([PersistedSession(der: der, keyDigest: key(1), expiresAt: 1_000)], now: 1)
        #expect(state.take(key(1), now: 2) == nil)
    }

    @Test func aTicketHeldAndLoadedAgainIsKeptOnce() {
        var state = State(capacity: 10, unseal: Self.fingerprintingUnseal)
        let der = fakeDER(1, singleUse: true)
        var held = ticket(1)
        held.fingerprint = CryptoPrimitives.sha256(der)
        state.store(held, for: key(1), now: 0)
        state.load([PersistedSession(der: der, keyDigest: key(1), expiresAt: 1_000)], now: 1)
        #expect(state.take(key(1), now: 2) == FakeSession(id: 1))
        #expect(state.take(key(1), now: 2) == nil)
    }
}
