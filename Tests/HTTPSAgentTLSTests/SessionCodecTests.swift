import Testing

@testable import HTTPSAgentTLS

private func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

private let aesKey = (0..<32).map { UInt8($0) }

/// A persisted entry with fixed, recognisable fields.
private func entry(_ seed: UInt8, sealedLength: Int = 40, expiresAt: Int64 = 1_700_000_000) -> PersistedSession {
    PersistedSession(
        salt: [UInt8](repeating: seed, count: 16),
        keyHash: [UInt8](repeating: seed &+ 1, count: 32),
        expiresAt: expiresAt,
        sealed: (0..<sealedLength).map { UInt8(truncatingIfNeeded: Int(seed) &+ $0) }
    )
}

/// `body` with a correct SHA-256 trailer, so that only the structure is wrong.
private func withChecksum(_ body: [UInt8]) -> [UInt8] {
    body + CryptoPrimitives.sha256(body)
}

private func bigEndian<Integer: FixedWidthInteger>(_ value: Integer) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian) { Array($0) }
}

/// Decodes, expecting a `SessionFileError`; returns its reason.
private func refusal(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    do throws(SessionFileError) {
        let sessions = try SessionCodec.decode(bytes)
        Issue.record("decoded \(sessions.count) sessions from an invalid file", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error.reason
    }
}

@Suite("Session codec and crypto primitives")
struct SessionCodecTests {
    // MARK: - SHA-256 and random bytes

    @Test func sha256MatchesKnownVectors() {
        #expect(
            hex(CryptoPrimitives.sha256(Array("abc".utf8)))
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        #expect(
            hex(CryptoPrimitives.sha256([]))
                == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(
            hex(CryptoPrimitives.sha256(long)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        )
    }

    @Test func randomBytesHaveTheRequestedLengthAndVary() {
        #expect(CryptoPrimitives.randomBytes(0).isEmpty)
        #expect(CryptoPrimitives.randomBytes(1).count == 1)
        #expect(CryptoPrimitives.randomBytes(16).count == 16)
        let large = CryptoPrimitives.randomBytes(4096)
        #expect(large.count == 4096)
        // 4096 equal random bytes, or two equal 32-byte draws, has probability ~2^-256 or less.
        #expect(Set(large).count > 1)
        #expect(CryptoPrimitives.randomBytes(32) != CryptoPrimitives.randomBytes(32))
    }

    // MARK: - AES-256-GCM

    @Test(arguments: [0, 1, 15, 16, 17, 1000])
    func sealThenOpenRoundTrips(length: Int) throws {
        let plaintext = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let associated = Array("context".utf8)
        let sealed = CryptoPrimitives.seal(plaintext, key: aesKey, associated: associated)
        #expect(sealed.count == 12 + length + 16)
        if length >= 16 {
            #expect(Array(sealed[12..<(12 + length)]) != plaintext)
        }
        let opened = try #require(CryptoPrimitives.open(sealed, key: aesKey, associated: associated))
        #expect(opened == plaintext)
    }

    @Test func sealingTwiceUsesFreshNonces() {
        let plaintext = Array("the same secret".utf8)
        let first = CryptoPrimitives.seal(plaintext, key: aesKey, associated: [])
        let second = CryptoPrimitives.seal(plaintext, key: aesKey, associated: [])
        #expect(first.prefix(12) != second.prefix(12))
        #expect(first != second)
    }

    @Test func openFailsWithAnotherKey() {
        let sealed = CryptoPrimitives.seal(Array("secret".utf8), key: aesKey, associated: [1])
        var otherKey = aesKey
        otherKey[31] ^= 0x01
        #expect(CryptoPrimitives.open(sealed, key: otherKey, associated: [1]) == nil)
        #expect(CryptoPrimitives.open(sealed, key: Array(aesKey.prefix(31)), associated: [1]) == nil)
        #expect(CryptoPrimitives.open(sealed, key: [], associated: [1]) == nil)
    }

    @Test func openFailsWhenAnyByteOfNonceCiphertextOrTagIsAltered() {
        let plaintext = Array("a session worth stealing".utf8)
        let sealed = CryptoPrimitives.seal(plaintext, key: aesKey, associated: [9, 9])
        #expect(CryptoPrimitives.open(sealed, key: aesKey, associated: [9, 9]) == plaintext)
        for index in sealed.indices {
            var altered = sealed
            altered[index] ^= 0x01
            let part = index < 12 ? "nonce" : index < sealed.count - 16 ? "ciphertext" : "tag"
            #expect(CryptoPrimitives.open(altered, key: aesKey, associated: [9, 9]) == nil, "\(part) byte \(index)")
        }
    }

    @Test func openFailsWhenTheAssociatedDataDiffers() {
        let sealed = CryptoPrimitives.seal(Array("secret".utf8), key: aesKey, associated: [1, 2, 3])
        #expect(CryptoPrimitives.open(sealed, key: aesKey, associated: [1, 2, 4]) == nil)
        #expect(CryptoPrimitives.open(sealed, key: aesKey, associated: [1, 2]) == nil)
        #expect(CryptoPrimitives.open(sealed, key: aesKey, associated: []) == nil)
        #expect(CryptoPrimitives.open(sealed, key: aesKey, associated: [1, 2, 3, 0]) == nil)
    }

    @Test func openFailsForTruncatedOrTooShortInput() {
        let sealed = CryptoPrimitives.seal(Array("secret".utf8), key: aesKey, associated: [])
        for length in 0..<sealed.count {
            #expect(
                CryptoPrimitives.open(Array(sealed.prefix(length)), key: aesKey, associated: []) == nil,
                "\(length)"
            )
        }
        #expect(CryptoPrimitives.open(sealed + [0], key: aesKey, associated: []) == nil)
    }

    // MARK: - PersistedSession

    @Test func aPersistedSessionOpensOnlyForItsKeyDigest() throws {
        let digest = CryptoPrimitives.sha256(Array("key A".utf8))
        let other = CryptoPrimitives.sha256(Array("key B".utf8))
        let der = Array("DER of a session for example.com".utf8)
        let session = PersistedSession(der: der, keyDigest: digest, expiresAt: 1_800_000_000)
        #expect(session.salt.count == 16)
        #expect(session.keyHash.count == 32)
        #expect(session.keyHash == CryptoPrimitives.sha256(session.salt + digest))
        #expect(session.expiresAt == 1_800_000_000)
        #expect(session.matches(keyDigest: digest))
        #expect(try #require(session.open(keyDigest: digest)) == der)
        #expect(!session.matches(keyDigest: other))
        #expect(session.open(keyDigest: other) == nil)
        var oneBitOff = digest
        oneBitOff[0] ^= 0x80
        #expect(!session.matches(keyDigest: oneBitOff))
        #expect(session.open(keyDigest: oneBitOff) == nil)
    }

    @Test func aPersistedSessionHidesItsKeyAndContents() {
        let digest = CryptoPrimitives.sha256(Array("key A".utf8))
        let der = Array("example.com example.com example.com example.com".utf8)
        let first = PersistedSession(der: der, keyDigest: digest, expiresAt: 1_800_000_000)
        let second = PersistedSession(der: der, keyDigest: digest, expiresAt: 1_800_000_000)
        // Salted: two entries for one key cannot be linked, and neither shows the key digest.
        #expect(first.salt != second.salt)
        #expect(first.keyHash != second.keyHash)
        #expect(first.keyHash != digest)
        #expect(first.sealed != second.sealed)
        let marker = Array("example.com".utf8)
        let leaks = (0...(first.sealed.count - marker.count)).contains {
            Array(first.sealed[$0..<($0 + marker.count)]) == marker
        }
        #expect(!leaks)
    }

    @Test func aPersistedSessionWithAlteredExpiryDoesNotOpen() {
        let digest = CryptoPrimitives.sha256(Array("key A".utf8))
        let session = PersistedSession(der: [1, 2, 3, 4], keyDigest: digest, expiresAt: 1_000)
        for expiresAt: Int64 in [1_001, 999, 0, -1_000, .max, 1_000 + (1 << 32)] {
            var altered = session
            altered.expiresAt = expiresAt
            #expect(altered.matches(keyDigest: digest))
            #expect(altered.open(keyDigest: digest) == nil, "expiresAt \(expiresAt)")
        }
    }

    @Test func aPersistedSessionWithAlteredSealOrSaltIsRefused() {
        let digest = CryptoPrimitives.sha256(Array("key A".utf8))
        let session = PersistedSession(der: [1, 2, 3, 4], keyDigest: digest, expiresAt: 1_000)
        var sealed = session
        sealed.sealed[sealed.sealed.count - 1] ^= 0x01
        #expect(sealed.open(keyDigest: digest) == nil)
        var salted = session
        salted.salt[0] ^= 0x01
        #expect(!salted.matches(keyDigest: digest))
    }

    // MARK: - SessionCodec round trips

    @Test func anEmptyFileRoundTrips() throws {
        let file = SessionCodec.encode([])
        #expect(file.count == SessionCodec.magic.count + 4 + 32)
        #expect(Array(file.prefix(SessionCodec.magic.count)) == Array("HTTPSAGENT-SESSIONS-1\n".utf8))
        #expect(try SessionCodec.decode(file).isEmpty)
    }

    @Test func oneEntryRoundTripsWithTheDocumentedLayout() throws {
        let session = entry(7, sealedLength: 40, expiresAt: -2)
        let file = SessionCodec.encode([session])
        let magic = SessionCodec.magic
        #expect(file.count == magic.count + 4 + 16 + 32 + 8 + 4 + 40 + 32)
        #expect(Array(file[magic.count..<(magic.count + 4)]) == [0, 0, 0, 1])
        let expiryOffset = magic.count + 4 + 16 + 32
        #expect(Array(file[expiryOffset..<(expiryOffset + 8)]) == bigEndian(Int64(-2)))
        #expect(Array(file[(expiryOffset + 8)..<(expiryOffset + 12)]) == [0, 0, 0, 40])
        #expect(Array(file.suffix(32)) == CryptoPrimitives.sha256(Array(file.dropLast(32))))
        #expect(try SessionCodec.decode(file) == [session])
    }

    @Test func manyEntriesRoundTripInOrder() throws {
        let sessions =
            (0..<20).map { entry(UInt8($0), sealedLength: $0 * 13, expiresAt: Int64($0) * 1_000_003) }
            + [entry(99, sealedLength: 0, expiresAt: .min), entry(100, sealedLength: 3, expiresAt: .max)]
        #expect(try SessionCodec.decode(SessionCodec.encode(sessions)) == sessions)
    }

    @Test func realPersistedSessionsStillOpenAfterARoundTrip() throws {
        let digest = CryptoPrimitives.sha256(Array("key".utf8))
        let session = PersistedSession(der: Array("der".utf8), keyDigest: digest, expiresAt: 42)
        let decoded = try SessionCodec.decode(SessionCodec.encode([session]))
        #expect(decoded == [session])
        #expect(decoded.first?.open(keyDigest: digest) == Array("der".utf8))
    }

    @Test func anEntryOfTheLargestAcceptedSizeRoundTrips() throws {
        let session = entry(1, sealedLength: SessionCodec.maximumSealedLength)
        #expect(try SessionCodec.decode(SessionCodec.encode([session])) == [session])
    }

    @Test func whatEncodeWritesDecodeAccepts() throws {
        let session = entry(1, sealedLength: SessionCodec.maximumSealedLength + 1)
        let file = SessionCodec.encode([session])
        // Encode leaves out an entry decode would refuse, rather than write a file decode refuses whole.
        #expect(try SessionCodec.decode(file).isEmpty)
    }

    // MARK: - SessionCodec refusals

    @Test func aFileWithTheWrongMagicIsRefused() {
        let valid = SessionCodec.encode([entry(1)])
        #expect(refusal([]) != nil)
        #expect(refusal(Array("HTTPSAGENT-SESSIONS-1\n".utf8)) != nil)
        var body = Array(valid.dropLast(32))
        body[20] = UInt8(ascii: "2")  // "...SESSIONS-2\n"
        #expect(refusal(withChecksum(body))?.contains("header") == true)
        var lowercase = Array(valid.dropLast(32))
        lowercase[0] = UInt8(ascii: "h")
        #expect(refusal(withChecksum(lowercase))?.contains("header") == true)
        let foreign = withChecksum(Array("-----BEGIN CERTIFICATE-----\n".utf8) + [0, 0, 0, 0])
        #expect(refusal(foreign)?.contains("header") == true)
    }

    @Test func everyTruncationIsRefused() {
        let valid = SessionCodec.encode([entry(1, sealedLength: 5), entry(2, sealedLength: 0)])
        for length in 0..<valid.count {
            #expect(refusal(Array(valid.prefix(length))) != nil, "prefix of \(length) bytes")
        }
        let empty = SessionCodec.encode([])
        for length in 0..<empty.count {
            #expect(refusal(Array(empty.prefix(length))) != nil, "prefix of \(length) bytes")
        }
    }

    @Test func everyFlippedByteIsRefused() {
        let valid = SessionCodec.encode([entry(1, sealedLength: 5), entry(2, sealedLength: 0)])
        for index in valid.indices {
            for flip: UInt8 in [0x01, 0x80] {
                var corrupt = valid
                corrupt[index] ^= flip
                #expect(refusal(corrupt) != nil, "byte \(index) ^ \(flip)")
            }
        }
    }

    @Test func trailingBytesAreRefusedEvenWithAMatchingChecksum() {
        let body = Array(SessionCodec.encode([entry(1)]).dropLast(32))
        #expect(refusal(withChecksum(body + [0]))?.contains("after its last entry") == true)
        #expect(refusal(withChecksum(body + [UInt8](repeating: 0xFF, count: 100))) != nil)
        // A valid file followed by anything fails its checksum.
        #expect(refusal(SessionCodec.encode([entry(1)]) + [0]) != nil)
    }

    @Test func aCountLargerOrSmallerThanTheEntriesIsRefused() {
        let magic = SessionCodec.magic
        var body = Array(SessionCodec.encode([entry(1)]).dropLast(32))
        body.replaceSubrange(magic.count..<(magic.count + 4), with: bigEndian(UInt32(2)))
        #expect(refusal(withChecksum(body))?.contains("middle of an entry") == true)
        body.replaceSubrange(magic.count..<(magic.count + 4), with: bigEndian(UInt32(0)))
        #expect(refusal(withChecksum(body))?.contains("after its last entry") == true)
    }

    @Test(arguments: [UInt32(100_001), UInt32(Int32.max), UInt32.max])
    func anAbsurdEntryCountIsRefusedBeforeAllocating(count: UInt32) {
        let body = SessionCodec.magic + bigEndian(count)
        #expect(refusal(withChecksum(body))?.contains("claims \(count) entries") == true)
    }

    @Test func theLargestAcceptedCountStillNeedsItsEntries() {
        let body = SessionCodec.magic + bigEndian(UInt32(SessionCodec.maximumEntries))
        #expect(refusal(withChecksum(body))?.contains("middle of an entry") == true)
    }

    @Test(arguments: [UInt32(64 * 1024 + 29), UInt32(Int32.max), UInt32.max])
    func anAbsurdEntryLengthIsRefusedBeforeAllocating(length: UInt32) {
        let session = entry(1, sealedLength: 8)
        let body =
            SessionCodec.magic + bigEndian(UInt32(1)) + session.salt + session.keyHash
            + bigEndian(session.expiresAt) + bigEndian(length) + session.sealed
        #expect(refusal(withChecksum(body))?.contains("claims \(length) bytes") == true)
    }

    @Test func anEntryLongerThanTheFileIsRefused() {
        let session = entry(1, sealedLength: 8)
        let body =
            SessionCodec.magic + bigEndian(UInt32(1)) + session.salt + session.keyHash
            + bigEndian(session.expiresAt) + bigEndian(UInt32(9)) + session.sealed
        #expect(refusal(withChecksum(body))?.contains("middle of an entry") == true)
    }

    @Test func theErrorDescribesTheFileAsInvalid() {
        let reason = refusal(Array("nonsense".utf8))
        #expect(reason != nil)
        let error = SessionFileError(reason: reason ?? "")
        #expect(error.description.hasPrefix("not a valid session file: "))
    }
}
