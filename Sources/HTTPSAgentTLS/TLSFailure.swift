/// Why a TLS connection failed, in words a person can act on.
package struct TLSFailure: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Kind: Sendable, Hashable {
        /// The handshake failed for a reason other than the peer's certificate (protocol, version, ALPN, alert).
        case handshakeFailed
        /// The peer's certificate did not verify; ``TLSFailure/verifyResultDescription`` says why.
        case certificateVerificationFailed
        /// The transport closed before the handshake finished.
        case closedDuringHandshake
        /// The transport closed without the peer's `close_notify`: data may have been truncated.
        case uncleanShutdown
        /// A fatal error after the handshake (bad record, peer alert).
        case protocolError
        /// The peer sent a fatal alert after the handshake completed on this side but before any
        /// application data arrived: how a TLS 1.3 server refuses the client's certificate, or its
        /// absence ("tlsv13 alert certificate required"), since it checks it after the client's Finished.
        case rejectedAfterHandshake
    }

    package var kind: Kind
    /// OpenSSL's reason for the failure, e.g. "certificate verify failed", or our own when OpenSSL has none.
    package var reason: String
    /// The full OpenSSL error queue at the time of failure, oldest first.
    package var openSSLErrors: [OpenSSLErrorEntry]
    /// The X.509 verify result code (`X509_V_OK`, 0, when the chain was fine or not checked).
    package var verifyResult: Int
    /// The verify result in words, e.g. "certificate has expired", or `nil` when it is `X509_V_OK`.
    package var verifyResultDescription: String?

    package init(
        kind: Kind,
        reason: String,
        openSSLErrors: [OpenSSLErrorEntry] = [],
        verifyResult: Int = 0,
        verifyResultDescription: String? = nil
    ) {
        self.kind = kind
        self.reason = reason
        self.openSSLErrors = openSSLErrors
        self.verifyResult = verifyResult
        self.verifyResultDescription = verifyResultDescription
    }

    package var description: String {
        if let verify = self.verifyResultDescription {
            return "\(self.reason) (\(verify))"
        }
        return self.reason
    }
}

/// What a completed handshake negotiated.
package struct TLSConnectionInfo: Sendable, Hashable {
    /// As OpenSSL names it: "TLSv1.2", "TLSv1.3".
    package var protocolVersion: String
    /// The negotiated cipher suite, e.g. "TLS_AES_256_GCM_SHA384".
    package var cipher: String
    /// The protocol ALPN selected, if any.
    package var alpn: String?
    /// Whether the handshake resumed a previous session (`SSL_session_reused`).
    package var sessionReused: Bool
    /// The peer certificate's subject in OpenSSL's one-line form, if the peer sent one.
    package var peerSubject: String?
    /// The SNI host name: what the client sent (server role) or what we sent (client role), if any.
    package var serverName: String?

    package init(
        protocolVersion: String,
        cipher: String,
        alpn: String?,
        sessionReused: Bool,
        peerSubject: String?,
        serverName: String? = nil
    ) {
        self.protocolVersion = protocolVersion
        self.cipher = cipher
        self.alpn = alpn
        self.sessionReused = sessionReused
        self.peerSubject = peerSubject
        self.serverName = serverName
    }
}
