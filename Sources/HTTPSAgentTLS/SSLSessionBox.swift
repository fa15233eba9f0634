internal import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

/// Owns one `SSL_SESSION`: a TLS 1.2 session (ID or RFC 5077 ticket) or a TLS 1.3 ticket that a later
/// connection can resume.
///
/// Immutable after creation, and never handed to OpenSSL as is: ``SSLConnectionBox/offer(_:)`` offers a
/// copy, because OpenSSL writes into a session it resumes (e.g. marks it not resumable after a fatal
/// alert), and a TLS 1.2 session can be offered on several event loops at once. A TLS 1.3 ticket is
/// handed to one connection only (the cache takes it out when it offers it, RFC 8446 appendix C.4).
package final class SSLSessionBox: @unchecked Sendable {
    let session: OpaquePointer

    /// The protocol the session was made with.
    package let protocolVersion: TLSProtocolVersion?
    /// When OpenSSL made the session, in seconds since 1970 (reset on every new ticket).
    package let createdAt: Int64
    /// How long the server lets the session be resumed, in seconds: its ticket lifetime hint for TLS 1.3
    /// and TLS 1.2 tickets; for a TLS 1.2 session ID (no hint), OpenSSL's session timeout.
    package let lifetime: Int64
    /// When the server's certificate stops being valid, in seconds since 1970, if known.
    package let peerNotAfter: Int64?
    /// When the server's certificate was last verified in a full handshake: now for a session from a
    /// full handshake, the offered session's time for one issued on a resumed connection. Lifetimes are
    /// capped from this moment, so a chain of resumptions cannot put off verification forever.
    package let verifiedAt: Int64

    /// Adopts a session reference the caller owns (e.g. from the new-session callback).
    ///
    /// - Parameter verifiedAt: when the certificate behind it was verified; `nil` means at creation.
    init(takingOwnership session: OpaquePointer, verifiedAt: Int64? = nil) {
        self.session = session
        self.protocolVersion = TLSProtocolVersion(rawValue: Int(SSL_SESSION_get_protocol_version(session)))
        self.createdAt = Int64(SSL_SESSION_get_time(session))
        // OpenSSL 3 keeps the client's own default in the timeout; the server's word is the hint.
        let hint = Int64(SSL_SESSION_get_ticket_lifetime_hint(session))
        self.lifetime = hint > 0 ? hint : Int64(SSL_SESSION_get_timeout(session))
        self.peerNotAfter = SSL_SESSION_get0_peer(session).flatMap { Self.seconds(X509_get0_notAfter($0)) }
        self.verifiedAt = verifiedAt ?? self.createdAt
    }

    deinit {
        SSL_SESSION_free(self.session)
    }

    /// Whether OpenSSL considers the session resumable at all.
    package var isResumable: Bool { SSL_SESSION_is_resumable(self.session) == 1 }

    /// Whether resuming the session spends it: TLS 1.3 tickets are single-use.
    package var isSingleUse: Bool { (self.protocolVersion ?? .tls1_3) >= .tls1_3 }

    /// The session in OpenSSL's DER form, with its secrets: handle as a credential.
    package func derEncoded() -> [UInt8] {
        let length = i2d_SSL_SESSION(self.session, nil)
        guard length > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        bytes.withUnsafeMutableBufferPointer { buffer in
            var cursor = buffer.baseAddress
            _ = i2d_SSL_SESSION(self.session, &cursor)
        }
        return bytes
    }

    /// Decodes a session from its DER form.
    ///
    /// - Parameter verifiedAt: when the certificate behind it was verified, if known (else its time).
    package convenience init?(der: [UInt8], verifiedAt: Int64? = nil) {
        OpenSSLErrorQueue.clear()
        let session: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor = buffer.baseAddress
            return d2i_SSL_SESSION(nil, &cursor, buffer.count)
        }
        guard let session else {
            OpenSSLErrorQueue.clear()
            return nil
        }
        self.init(takingOwnership: session, verifiedAt: verifiedAt)
    }

    private static func seconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Int64(timegm(&parts))
    }
}
