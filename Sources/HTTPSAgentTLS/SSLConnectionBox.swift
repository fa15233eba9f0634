internal import COpenSSL
package import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The result of a handshake or write step.
package enum TLSStepResult: Sendable {
    case complete
    /// OpenSSL needs more bytes from the peer before it can go on.
    case wantRead
    case failed(TLSFailure)
}

/// The result of asking for decrypted bytes.
package enum TLSReadResult: Sendable {
    case data(ByteBuffer)
    /// Every byte fed so far has been decrypted; wait for more.
    case wantRead
    /// The peer sent `close_notify`.
    case closeNotify
    case failed(TLSFailure)
}

/// Owns one `SSL` and its pair of memory BIOs.
///
/// Used only on one channel's event loop, like the handler that owns it. The handler never calls
/// OpenSSL; it asks this box and gets Swift results back.
package final class SSLConnectionBox {
    private let ssl: OpaquePointer
    private let bios: MemoryBIOPair
    /// Keeps the `SSL_CTX` (and the ALPN list its callback reads) alive as long as this `SSL`.
    package let context: SSLContextBox
    /// The name or address we connect to, used for SNI and verification (client role only).
    package let serverHostname: String?
    /// What ended the last read after it had already produced data, reported by the next read.
    private var pendingReadResult: TLSReadResult?
    /// Called with each session the server lets us resume later (client role). A TLS 1.3 server sends
    /// its tickets after the handshake, so this can run during any read.
    package var onNewSession: ((SSLSessionBox) -> Void)?
    /// Called once when the connection fails with a TLS error or a fatal alert: its sessions must not
    /// be resumed (RFC 8446 §6.2; RFC 5246 §7.2.2).
    package var onFatalError: (() -> Void)?

    /// Creates a connection in the role of `context`.
    ///
    /// - Parameters:
    ///   - context: the shared context.
    ///   - serverHostname: for a client, the host we connect to: a DNS name gets SNI and name
    ///     verification, an IP literal gets IP verification and no SNI (RFC 6066 §3 forbids it).
    package init(context: SSLContextBox, serverHostname: String?) throws(TLSSetupError) {
        OpenSSLErrorQueue.clear()
        guard let ssl = SSL_new(context.context) else {
            throw TLSSetupError(operation: "creating an SSL object")
        }
        let bios: MemoryBIOPair
        do {
            bios = try MemoryBIOPair()
        } catch {
            SSL_free(ssl)
            throw error
        }
        SSL_set_bio(ssl, bios.incoming, bios.outgoing)
        self.ssl = ssl
        self.bios = bios
        self.context = context
        self.serverHostname = serverHostname
        // Lets the C new-session callback find this box. The SSL is freed in our deinit and callbacks
        // only run inside calls this box makes, so an unretained reference is always valid there.
        SSL_set_ex_data(ssl, connectionExDataIndex, Unmanaged.passUnretained(self).toOpaque())
        switch context.options.role {
        case .client:
            SSL_set_connect_state(ssl)
            if let serverHostname {
                try self.configureServerIdentity(serverHostname)
            }
        case .server:
            SSL_set_accept_state(ssl)
        }
    }

    deinit {
        SSL_free(self.ssl)
    }

    private func configureServerIdentity(_ host: String) throws(TLSSetupError) {
        let verifyName = self.context.options.verification == .full
        if IPAddressLiteral.isIPAddress(host) {
            if verifyName {
                guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(self.ssl), host) == 1 else {
                    throw TLSSetupError(operation: "setting the IP address \(host) for verification")
                }
            }
        } else {
            guard cshim_SSL_set_tlsext_host_name(self.ssl, host) == 1 else {
                throw TLSSetupError(operation: "setting the SNI name \(host)")
            }
            if verifyName {
                SSL_set_hostflags(self.ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
                guard SSL_set1_host(self.ssl, host) == 1 else {
                    throw TLSSetupError(operation: "setting the host name \(host) for verification")
                }
            }
        }
    }

    /// The box that owns `ssl`, from its ex-data.
    static func owner(of ssl: OpaquePointer) -> SSLConnectionBox? {
        SSL_get_ex_data(ssl, connectionExDataIndex).map {
            Unmanaged<SSLConnectionBox>.fromOpaque($0).takeUnretainedValue()
        }
    }

    /// From the new-session callback: keeps the session if someone wants it.
    /// - Returns: whether the reference was taken (else OpenSSL releases it).
    func sessionReceived(takingOwnership session: OpaquePointer) -> Bool {
        guard let onNewSession = self.onNewSession else { return false }
        // A ticket issued on a resumed connection vouches for the certificate checked back when the
        // offered session was made, not now.
        let verifiedAt = SSL_session_reused(self.ssl) == 1 ? self.offeredSession?.verifiedAt : nil
        onNewSession(SSLSessionBox(takingOwnership: session, verifiedAt: verifiedAt))
        return true
    }

    /// Offers a cached session for resumption; call before the handshake starts.
    ///
    /// OpenSSL gets a private copy: it writes into the session it resumes, and the cached one may be
    /// offered on another event loop at the same time.
    package func offer(_ session: SSLSessionBox) {
        guard let copy = SSL_SESSION_dup(session.session) else { return }
        _ = SSL_set_session(self.ssl, copy)
        SSL_SESSION_free(copy)  // the SSL holds its own reference now
        self.offeredSession = session
    }

    /// The session offered for this connection, if any.
    package private(set) var offeredSession: SSLSessionBox?

    private func reportFatalError() {
        let callback = self.onFatalError
        self.onFatalError = nil
        callback?()
    }

    // MARK: - Bytes in and out

    /// Hands ciphertext received from the network to OpenSSL.
    package func feed(_ buffer: ByteBuffer) {
        self.bios.feed(buffer)
    }

    /// Ciphertext OpenSSL wants sent to the peer, or `nil`.
    package func takeOutput(allocator: ByteBufferAllocator) -> ByteBuffer? {
        self.bios.drain(allocator: allocator)
    }

    // MARK: - Operations

    /// Advances the handshake with what has been fed so far.
    package func handshake() -> TLSStepResult {
        OpenSSLErrorQueue.clear()
        let result = SSL_do_handshake(self.ssl)
        if result == 1 {
            return .complete
        }
        switch SSL_get_error(self.ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .wantRead
        default:
            let failure = self.handshakeFailure()
            self.reportFatalError()
            return .failed(failure)
        }
    }

    /// Decrypts up to `limit` bytes of what has been fed so far.
    package func read(allocator: ByteBufferAllocator, limit: Int = 64 * 1024) -> TLSReadResult {
        if let pending = self.pendingReadResult {
            self.pendingReadResult = nil
            return pending
        }
        var buffer = allocator.buffer(capacity: 16 * 1024)
        var lastResult: Int32 = 0
        while buffer.readableBytes < limit {
            OpenSSLErrorQueue.clear()
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 * 1024) { pointer in
                lastResult = SSL_read(self.ssl, pointer.baseAddress, Int32(min(pointer.count, Int(Int32.max))))
                return lastResult > 0 ? Int(lastResult) : 0
            }
            if lastResult <= 0 { break }
        }
        if lastResult > 0 {
            // Stopped at `limit`, not for want of input: more may be ready, the caller reads again.
            return .data(buffer)
        }
        let outcome: TLSReadResult
        switch SSL_get_error(self.ssl, lastResult) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            outcome = .wantRead
        case SSL_ERROR_ZERO_RETURN:
            outcome = .closeNotify
        default:
            // Drained now, while the queue still holds this call's reason.
            let errors = OpenSSLErrorQueue.drain()
            self.reportFatalError()
            outcome = .failed(
                TLSFailure(
                    kind: .protocolError,
                    reason: errors.last?.reason ?? "TLS read failed",
                    openSSLErrors: errors
                )
            )
        }
        if buffer.readableBytes > 0 {
            // Report the bytes first; a close_notify or an error behind them comes with the next call.
            if case .wantRead = outcome {} else { self.pendingReadResult = outcome }
            return .data(buffer)
        }
        return outcome
    }

    /// Encrypts `buffer`; the ciphertext is then available from ``takeOutput(allocator:)``.
    package func write(_ buffer: ByteBuffer) -> TLSStepResult {
        var failure: TLSFailure?
        buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                OpenSSLErrorQueue.clear()
                let chunk = min(bytes.count - offset, Int(Int32.max))
                let result = SSL_write(self.ssl, bytes.baseAddress! + offset, Int32(chunk))
                guard result > 0 else {
                    let errors = OpenSSLErrorQueue.drain()
                    self.reportFatalError()
                    failure = TLSFailure(
                        kind: .protocolError,
                        reason: errors.last?.reason ?? "TLS write failed",
                        openSSLErrors: errors
                    )
                    return
                }
                offset += Int(result)
            }
        }
        return failure.map { .failed($0) } ?? .complete
    }

    /// Queues our `close_notify` alert. Its bytes are then available from ``takeOutput(allocator:)``.
    package func shutdown() {
        OpenSSLErrorQueue.clear()
        _ = SSL_shutdown(self.ssl)
        OpenSSLErrorQueue.clear()
    }

    // MARK: - What was negotiated

    /// What the handshake negotiated; only meaningful after it completed.
    package var connectionInfo: TLSConnectionInfo {
        let version = String(cString: SSL_get_version(self.ssl))
        let cipher = SSL_get_current_cipher(self.ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? ""
        var alpnPointer: UnsafePointer<UInt8>?
        var alpnLength: UInt32 = 0
        SSL_get0_alpn_selected(self.ssl, &alpnPointer, &alpnLength)
        let alpn = alpnPointer.map {
            String(decoding: UnsafeBufferPointer(start: $0, count: Int(alpnLength)), as: UTF8.self)
        }
        var subject: String?
        if let certificate = cshim_SSL_get_peer_certificate(self.ssl) {
            defer { X509_free(certificate) }
            if let line = X509_NAME_oneline(X509_get_subject_name(certificate), nil, 0) {
                subject = String(cString: line)
                CRYPTO_free(line, #fileID, #line)
            }
        }
        return TLSConnectionInfo(
            protocolVersion: version,
            cipher: cipher,
            alpn: alpn,
            sessionReused: SSL_session_reused(self.ssl) == 1,
            peerSubject: subject,
            serverName: SSL_get_servername(self.ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) }
        )
    }

    private func handshakeFailure() -> TLSFailure {
        let errors = OpenSSLErrorQueue.drain()
        let verifyResult = Int(SSL_get_verify_result(self.ssl))
        let reason = errors.last?.reason ?? "TLS handshake failed"
        // With verification off, a bad verify result is not why the handshake failed.
        if verifyResult != Int(X509_V_OK) && self.context.options.verification != .none {
            let description = String(cString: X509_verify_cert_error_string(verifyResult))
            return TLSFailure(
                kind: .certificateVerificationFailed,
                reason: reason,
                openSSLErrors: errors,
                verifyResult: verifyResult,
                verifyResultDescription: description
            )
        }
        return TLSFailure(kind: .handshakeFailed, reason: reason, openSSLErrors: errors)
    }
}

/// The ex-data slot where each `SSL` keeps a pointer to its ``SSLConnectionBox``.
let connectionExDataIndex: Int32 = cshim_SSL_get_ex_new_index()

/// Tells IP literals from host names.
package enum IPAddressLiteral {
    /// Whether `host` is an IPv4 dotted quad or an IPv6 address (without brackets).
    package static func isIPAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return host.withCString { name in
            inet_pton(AF_INET, name, &v4) == 1 || inet_pton(AF_INET6, name, &v6) == 1
        }
    }
}
