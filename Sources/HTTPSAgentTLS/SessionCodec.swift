internal import COpenSSL

/// SHA-256 and random bytes, for session-cache keys and the persisted file.
package enum CryptoPrimitives {
    /// The SHA-256 digest of `bytes`.
    package static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        bytes.withUnsafeBytes { input in
            digest.withUnsafeMutableBufferPointer { output in
                _ = EVP_Digest(input.baseAddress, input.count, output.baseAddress, &length, EVP_sha256(), nil)
            }
        }
        return digest
    }

    /// AES-256-GCM: `nonce(12) ‖ ciphertext ‖ tag(16)`, authenticating `associated` too.
    package static func seal(_ plaintext: [UInt8], key: [UInt8], associated: [UInt8]) -> [UInt8] {
        precondition(key.count == 32, "AES-256 needs a 32-byte key")
        let nonce = Self.randomBytes(12)
        guard let context = EVP_CIPHER_CTX_new() else { preconditionFailure("EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(context) }
        var ciphertext = [UInt8](repeating: 0, count: plaintext.count + 16)
        var tag = [UInt8](repeating: 0, count: 16)
        var length: Int32 = 0
        var total = 0
        var ok = EVP_EncryptInit_ex(context, EVP_aes_256_gcm(), nil, key, nonce) == 1
        ok = ok && EVP_EncryptUpdate(context, nil, &length, associated, Int32(associated.count)) == 1
        ok =
            ok
            && ciphertext.withUnsafeMutableBufferPointer {
                EVP_EncryptUpdate(context, $0.baseAddress, &length, plaintext, Int32(plaintext.count)) == 1
            }
        total = Int(length)
        ok =
            ok
            && ciphertext.withUnsafeMutableBufferPointer {
                EVP_EncryptFinal_ex(context, $0.baseAddress! + total, &length) == 1
            }
        total += Int(length)
        ok = ok && EVP_CIPHER_CTX_ctrl(context, cshim_EVP_CTRL_GCM_GET_TAG(), 16, &tag) == 1
        precondition(ok, "AES-GCM encryption failed")
        return nonce + ciphertext[0..<total] + tag
    }

    /// Opens what ``seal(_:key:associated:)`` made; `nil` if the key, the data or `associated` differ.
    package static func open(_ sealed: [UInt8], key: [UInt8], associated: [UInt8]) -> [UInt8]? {
        guard key.count == 32, sealed.count >= 12 + 16 else { return nil }
        let nonce = Array(sealed[0..<12])
        let ciphertext = Array(sealed[12..<(sealed.count - 16)])
        var tag = Array(sealed.suffix(16))
        guard let context = EVP_CIPHER_CTX_new() else { return nil }
        defer { EVP_CIPHER_CTX_free(context) }
        var plaintext = [UInt8](repeating: 0, count: ciphertext.count + 16)
        var length: Int32 = 0
        var ok = EVP_DecryptInit_ex(context, EVP_aes_256_gcm(), nil, key, nonce) == 1
        ok = ok && EVP_DecryptUpdate(context, nil, &length, associated, Int32(associated.count)) == 1
        ok =
            ok
            && plaintext.withUnsafeMutableBufferPointer {
                EVP_DecryptUpdate(context, $0.baseAddress, &length, ciphertext, Int32(ciphertext.count)) == 1
            }
        let total = Int(length)
        ok = ok && EVP_CIPHER_CTX_ctrl(context, cshim_EVP_CTRL_GCM_SET_TAG(), 16, &tag) == 1
        ok =
            ok
            && plaintext.withUnsafeMutableBufferPointer {
                EVP_DecryptFinal_ex(context, $0.baseAddress! + total, &length) == 1
            }
        OpenSSLErrorQueue.clear()
        guard ok else { return nil }
        return Array(plaintext[0..<(total + Int(length))])
    }

    /// `count` cryptographically random bytes.
    package static func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let ok = bytes.withUnsafeMutableBufferPointer { RAND_bytes($0.baseAddress, Int32(count)) }
        precondition(ok == 1, "RAND_bytes failed")
        return bytes
    }
}

/// One persisted session: found again by a salted hash of its cache key, readable only with that key.
///
/// The DER form of a session carries the server's certificate and the SNI name, so it is sealed
/// (AES-256-GCM) under a key derived from the cache-key digest: a reader who does not already know the
/// host, port and TLS configuration learns neither the host nor the session.
package struct PersistedSession: Sendable, Hashable {
    /// 16 random bytes, one per entry.
    package var salt: [UInt8]
    /// SHA-256(salt ‖ key digest).
    package var keyHash: [UInt8]
    /// Seconds since 1970 after which the session must not be offered (authenticated by the seal).
    package var expiresAt: Int64
    /// The session's DER form, sealed with ``seal(der:keyDigest:expiresAt:)``.
    package var sealed: [UInt8]

    package init(salt: [UInt8], keyHash: [UInt8], expiresAt: Int64, sealed: [UInt8]) {
        self.salt = salt
        self.keyHash = keyHash
        self.expiresAt = expiresAt
        self.sealed = sealed
    }

    /// A new entry for a session stored under `keyDigest`.
    package init(der: [UInt8], keyDigest: [UInt8], expiresAt: Int64) {
        let salt = CryptoPrimitives.randomBytes(16)
        self.init(
            salt: salt,
            keyHash: Self.hash(salt: salt, keyDigest: keyDigest),
            expiresAt: expiresAt,
            sealed: CryptoPrimitives.seal(der, key: Self.sealingKey(keyDigest), associated: Self.associated(expiresAt))
        )
    }

    /// Whether this entry belongs to `keyDigest`.
    package func matches(keyDigest: [UInt8]) -> Bool {
        Self.hash(salt: self.salt, keyDigest: keyDigest) == self.keyHash
    }

    /// The session's DER form, if `keyDigest` is the key it was sealed under and nothing was altered.
    package func open(keyDigest: [UInt8]) -> [UInt8]? {
        CryptoPrimitives.open(self.sealed, key: Self.sealingKey(keyDigest), associated: Self.associated(self.expiresAt))
    }

    /// The salted hash under which a key digest is stored.
    package static func hash(salt: [UInt8], keyDigest: [UInt8]) -> [UInt8] {
        CryptoPrimitives.sha256(salt + keyDigest)
    }

    private static func sealingKey(_ keyDigest: [UInt8]) -> [UInt8] {
        CryptoPrimitives.sha256(Array("swift-https-agent session file v1".utf8) + keyDigest)
    }

    private static func associated(_ expiresAt: Int64) -> [UInt8] {
        withUnsafeBytes(of: expiresAt.bigEndian) { Array($0) }
    }
}

/// Why a session file was refused.
package struct SessionFileError: Error, Sendable, Hashable, CustomStringConvertible {
    package var reason: String
    package var description: String { "not a valid session file: \(self.reason)" }
}

/// The session file format: a magic line, a count, the entries, and a SHA-256 of all of it, so that
/// truncation, corruption and foreign files are all refused as a whole.
///
///     "HTTPSAGENT-SESSIONS-1\n" | count: UInt32 | entries | SHA-256(everything before)
///     entry: salt[16] | keyHash[32] | expiresAt: Int64 | sealedLength: UInt32 | sealed
///
/// Integers are big-endian.
package enum SessionCodec {
    static let magic = Array("HTTPSAGENT-SESSIONS-1\n".utf8)
    /// Refuse absurd sizes rather than allocate them.
    static let maximumEntries = 10_000
    /// The largest sealed session an entry may hold (64 KiB of DER, plus nonce and tag).
    package static let maximumSealedLength = 64 * 1024 + 28

    /// Encodes `sessions`. Entries ``decode(_:)`` would refuse (sealed larger than
    /// ``maximumSealedLength``) are left out, so that one of them cannot spoil the whole file.
    package static func encode(_ sessions: [PersistedSession]) -> [UInt8] {
        let sessions = sessions.filter { $0.sealed.count <= Self.maximumSealedLength }
        var bytes = Self.magic
        Self.append(UInt32(sessions.count), to: &bytes)
        for session in sessions {
            precondition(session.salt.count == 16 && session.keyHash.count == 32, "malformed persisted session")
            bytes += session.salt
            bytes += session.keyHash
            Self.append(UInt64(bitPattern: session.expiresAt), to: &bytes)
            Self.append(UInt32(session.sealed.count), to: &bytes)
            bytes += session.sealed
        }
        bytes += CryptoPrimitives.sha256(bytes)
        return bytes
    }

    package static func decode(_ bytes: [UInt8]) throws(SessionFileError) -> [PersistedSession] {
        guard bytes.count >= Self.magic.count + 4 + 32, Array(bytes.prefix(Self.magic.count)) == Self.magic else {
            throw SessionFileError(reason: "it does not start with the session-file header")
        }
        let body = Array(bytes.dropLast(32))
        guard CryptoPrimitives.sha256(body) == Array(bytes.suffix(32)) else {
            throw SessionFileError(reason: "its checksum does not match (truncated or corrupt)")
        }
        var reader = Reader(bytes: body, offset: Self.magic.count)
        let count = Int(try reader.uint32())
        guard count <= Self.maximumEntries else {
            throw SessionFileError(reason: "it claims \(count) entries")
        }
        var sessions: [PersistedSession] = []
        sessions.reserveCapacity(count)
        for _ in 0..<count {
            let salt = try reader.bytes(16)
            let keyHash = try reader.bytes(32)
            let expiresAt = Int64(bitPattern: try reader.uint64())
            let length = Int(try reader.uint32())
            guard length <= Self.maximumSealedLength else {
                throw SessionFileError(reason: "an entry claims \(length) bytes")
            }
            let sealed = try reader.bytes(length)
            sessions.append(PersistedSession(salt: salt, keyHash: keyHash, expiresAt: expiresAt, sealed: sealed))
        }
        guard reader.isAtEnd else {
            throw SessionFileError(reason: "it has bytes after its last entry")
        }
        return sessions
    }

    private static func append<Integer: FixedWidthInteger>(_ value: Integer, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { bytes += $0 }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset: Int

        var isAtEnd: Bool { self.offset == self.bytes.count }

        mutating func bytes(_ count: Int) throws(SessionFileError) -> [UInt8] {
            guard count >= 0, self.bytes.count - self.offset >= count else {
                throw SessionFileError(reason: "it ends in the middle of an entry")
            }
            defer { self.offset += count }
            return Array(self.bytes[self.offset..<(self.offset + count)])
        }

        mutating func uint32() throws(SessionFileError) -> UInt32 {
            try self.bytes(4).reduce(0) { $0 << 8 | UInt32($1) }
        }

        mutating func uint64() throws(SessionFileError) -> UInt64 {
            try self.bytes(8).reduce(0) { $0 << 8 | UInt64($1) }
        }
    }
}
