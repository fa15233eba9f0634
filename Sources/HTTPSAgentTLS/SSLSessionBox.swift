internal import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

/// Owns one `SSL_SESSION`: a TLS 1.2 session (ID or RFC 5077 ticket) or a TLS 1.3 ticket that a later
/// connection can resume.
///
/// Immutable after creation. OpenSSL reference-counts sessions and lets several `SSL` objects refer to
/// one, so a box can be offered from any thread; a TLS 1.3 ticket is nonetheless handed to one
/// connection only (the cache takes it out when it offers it, RFC 8446 appendix C.4).
package final class SSLSessionBox: @unchecked Sendable {
    let session: OpaquePointer

    /// The protocol the session was made with.
    package let protocolVersion: TLSProtocolVersion?
    /// When the session was made, in seconds since 1970.
    package let createdAt: Int64
    /// How long the session may be resumed, in seconds, as OpenSSL records it (for TLS 1.3 the
    /// server's ticket lifetime).
    package let lifetime: Int64
    /// When the server's certificate stops being valid, in seconds since 1970, if known.
    package let peerNotAfter: Int64?

    /// Adopts a session reference the caller owns (e.g. from the new-session callback).
    init(takingOwnership session: OpaquePointer) {
        self.session = session
        self.protocolVersion = TLSProtocolVersion(rawValue: Int(SSL_SESSION_get_protocol_version(session)))
        self.createdAt = Int64(SSL_SESSION_get_time(session))
        self.lifetime = Int64(SSL_SESSION_get_timeout(session))
        self.peerNotAfter = SSL_SESSION_get0_peer(session).flatMap { Self.seconds(X509_get0_notAfter($0)) }
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
    package convenience init?(der: [UInt8]) {
        OpenSSLErrorQueue.clear()
        let session: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor = buffer.baseAddress
            return d2i_SSL_SESSION(nil, &cursor, buffer.count)
        }
        guard let session else {
            OpenSSLErrorQueue.clear()
            return nil
        }
        self.init(takingOwnership: session)
    }

    private static func seconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Int64(timegm(&parts))
    }
}
