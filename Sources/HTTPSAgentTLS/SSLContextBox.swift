internal import COpenSSL
import NIOConcurrencyHelpers

/// Owns one `SSL_CTX`, built from ``TLSContextOptions``.
///
/// Building a context is expensive (loading the system trust store parses a few hundred certificates),
/// so contexts are built once per distinct configuration and shared by every connection that uses it.
/// OpenSSL allows `SSL_new` on one context from many threads at once; nothing mutates the context after
/// `init` returns, which is why the class can be `Sendable`.
package final class SSLContextBox: @unchecked Sendable {
    let context: OpaquePointer
    package let options: TLSContextOptions
    /// ALPN protocols in wire format (length-prefixed), kept alive for the server's select callback.
    private let alpnWire: UnsafeMutableBufferPointer<UInt8>
    /// A SHA-256 fingerprint of everything that decides whom this context trusts and who it claims to
    /// be: the options, and the *contents* of every trust, certificate and key file as loaded. Two
    /// contexts with equal identities verify alike, so TLS sessions may move between them (and
    /// between Agents); any difference keeps their sessions apart.
    package private(set) var identity: [UInt8] = []

    package init(options: TLSContextOptions) throws(TLSSetupError) {
        OpenSSLErrorQueue.clear()
        let method = options.role == .client ? TLS_client_method() : TLS_server_method()
        guard let context = SSL_CTX_new(method) else {
            throw TLSSetupError(operation: "creating an SSL_CTX")
        }
        let wire = Self.alpnWireFormat(options.alpnProtocols)
        let alpnWire = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(wire.count, 1))
        _ = alpnWire.initialize(from: wire)
        self.context = context
        self.options = options
        self.alpnWire = UnsafeMutableBufferPointer(rebasing: alpnWire[0..<wire.count])
        // Files are read once, here: what is loaded and what the identity covers are the same bytes.
        let resolved = try ResolvedMaterial(options)
        // From here on `deinit` frees what we have built if a step below throws.
        try self.configure(resolved)
        self.identity = ContextIdentity.fingerprint(options, resolved)
    }

    /// Whether this context presents a client certificate (its sessions are tied to that identity).
    package var hasClientCertificate: Bool {
        self.options.role == .client && self.options.certificateChain != nil
    }

    deinit {
        SSL_CTX_free(self.context)
        UnsafeMutableBufferPointer(start: self.alpnWire.baseAddress, count: max(self.alpnWire.count, 1))
            .deallocate()
    }

    private func configure(_ material: ResolvedMaterial) throws(TLSSetupError) {
        let options = self.options
        guard cshim_SSL_CTX_set_min_proto_version(self.context, Int32(options.minimumVersion.rawValue)) == 1 else {
            throw TLSSetupError(operation: "setting the minimum TLS version")
        }
        if let maximum = options.maximumVersion {
            guard cshim_SSL_CTX_set_max_proto_version(self.context, Int32(maximum.rawValue)) == 1 else {
                throw TLSSetupError(operation: "setting the maximum TLS version")
            }
        }
        // Renegotiation is a source of attacks and HTTP/1.1 clients never need it.
        SSL_CTX_set_options(self.context, cshim_SSL_OP_NO_RENEGOTIATION())

        switch options.role {
        case .client:
            try self.configureClient(material)
        case .server:
            try self.configureServer(material)
        }
        if let chain = material.certificateChain {
            guard let key = material.privateKey else {
                throw TLSSetupError(operation: "loading a certificate without its private key", openSSLErrors: [])
            }
            try self.useCertificateChain(chain)
            try self.usePrivateKey(key)
            guard SSL_CTX_check_private_key(self.context) == 1 else {
                throw TLSSetupError(operation: "checking that the private key matches the certificate")
            }
        }
    }

    private func configureClient(_ material: ResolvedMaterial) throws(TLSSetupError) {
        let options = self.options
        switch options.verification {
        case .full, .noHostnameVerification:
            SSL_CTX_set_verify(self.context, SSL_VERIFY_PEER, nil)
        case .none:
            SSL_CTX_set_verify(self.context, SSL_VERIFY_NONE, nil)
        }
        if let roots = material.trustRoots {
            try self.loadTrustRoots(roots)
        }
        // Sessions are kept by the Agent's cache, not OpenSSL's: the new-session callback hands each
        // one (TLS 1.2 at the end of the handshake, TLS 1.3 tickets whenever they arrive) to the
        // connection that received it, found through ex-data.
        _ = cshim_SSL_CTX_set_session_cache_mode(
            self.context,
            Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE)
        )
        SSL_CTX_sess_set_new_cb(self.context) { ssl, session in
            guard let ssl, let session, let owner = SSLConnectionBox.owner(of: ssl) else { return 0 }
            // Returning 1 keeps the reference OpenSSL passed us; the box frees it.
            return owner.sessionReceived(takingOwnership: session) ? 1 : 0
        }
        if !self.alpnWire.isEmpty {
            // Unlike most of OpenSSL, this function returns 0 on success.
            guard SSL_CTX_set_alpn_protos(self.context, self.alpnWire.baseAddress, UInt32(self.alpnWire.count)) == 0
            else {
                throw TLSSetupError(operation: "setting the ALPN protocols")
            }
        }
    }

    private func configureServer(_ material: ResolvedMaterial) throws(TLSSetupError) {
        let options = self.options
        if let roots = material.trustRoots {
            try self.loadTrustRoots(roots)
            let mode =
                options.verification == .none ? SSL_VERIFY_PEER : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
            SSL_CTX_set_verify(self.context, mode, nil)
        } else {
            SSL_CTX_set_verify(self.context, SSL_VERIFY_NONE, nil)
        }
        // Resumption with a server-side cache needs a session id context.
        let sessionContext: [UInt8] = Array("swift-https-agent".utf8)
        _ = SSL_CTX_set_session_id_context(self.context, sessionContext, UInt32(sessionContext.count))
        if let timeout = options.sessionTimeout {
            _ = SSL_CTX_set_timeout(self.context, timeout)
        }
        if !options.sessionTickets {
            SSL_CTX_set_options(self.context, cshim_SSL_OP_NO_TICKET())
            // TLS 1.3 sends tickets unless told not to, even with SSL_OP_NO_TICKET and a stateful cache.
            _ = SSL_CTX_set_num_tickets(self.context, 0)
        }
        if !self.alpnWire.isEmpty {
            // The box owns the context and every `SSL` keeps its box alive, so the box outlives any
            // callback; an unretained reference is enough.
            let argument = Unmanaged.passUnretained(self).toOpaque()
            SSL_CTX_set_alpn_select_cb(
                self.context,
                { _, out, outLength, offered, offeredLength, argument in
                    guard let argument, let offered, let out, let outLength else {
                        return cshim_SSL_TLSEXT_ERR_NOACK()
                    }
                    let box = Unmanaged<SSLContextBox>.fromOpaque(argument).takeUnretainedValue()
                    var selected: UnsafeMutablePointer<UInt8>?
                    var selectedLength: UInt8 = 0
                    let result = SSL_select_next_proto(
                        &selected,
                        &selectedLength,
                        box.alpnWire.baseAddress,
                        UInt32(box.alpnWire.count),
                        offered,
                        offeredLength
                    )
                    if result != OPENSSL_NPN_NEGOTIATED && box.options._testSelectsUnofferedALPN,
                        let first = box.alpnWire.baseAddress
                    {
                        // Our first protocol, whatever the client offered: its length byte, then its name.
                        out.pointee = UnsafePointer(first + 1)
                        outLength.pointee = first.pointee
                        return cshim_SSL_TLSEXT_ERR_OK()
                    }
                    guard result == OPENSSL_NPN_NEGOTIATED, let selected else {
                        return cshim_SSL_TLSEXT_ERR_ALERT_FATAL()
                    }
                    out.pointee = UnsafePointer(selected)
                    outLength.pointee = selectedLength
                    return cshim_SSL_TLSEXT_ERR_OK()
                },
                argument
            )
        }
    }

    private static func alpnWireFormat(_ protocols: [String]) -> [UInt8] {
        var wire: [UInt8] = []
        for name in protocols {
            let bytes = Array(name.utf8)
            precondition(!bytes.isEmpty && bytes.count < 256, "invalid ALPN protocol name \(name)")
            wire.append(UInt8(bytes.count))
            wire.append(contentsOf: bytes)
        }
        return wire
    }

    // MARK: - Certificates and keys

    private func loadTrustRoots(_ roots: ResolvedMaterial.Roots) throws(TLSSetupError) {
        switch roots {
        case .system:
            guard SSL_CTX_set_default_verify_paths(self.context) == 1 else {
                throw TLSSetupError(operation: "loading the system trust store")
            }
        case .pem(let pem):
            let certificates = try PEMReader.certificates(pem.bytes, what: "the trust roots\(pem.origin)")
            defer { for certificate in certificates { X509_free(certificate) } }
            let store = SSL_CTX_get_cert_store(self.context)
            for certificate in certificates where X509_STORE_add_cert(store, certificate) != 1 {
                throw TLSSetupError(operation: "adding a trust root\(pem.origin)")
            }
        }
    }

    private func useCertificateChain(_ pem: ResolvedMaterial.PEM) throws(TLSSetupError) {
        let certificates = try PEMReader.certificates(pem.bytes, what: "the certificate chain\(pem.origin)")
        defer { for certificate in certificates { X509_free(certificate) } }
        guard SSL_CTX_use_certificate(self.context, certificates[0]) == 1 else {
            throw TLSSetupError(operation: "using the certificate\(pem.origin)")
        }
        for intermediate in certificates.dropFirst()
        where cshim_SSL_CTX_add1_chain_cert(self.context, intermediate) != 1 {
            throw TLSSetupError(operation: "adding an intermediate certificate\(pem.origin)")
        }
    }

    private func usePrivateKey(_ pem: ResolvedMaterial.PEM) throws(TLSSetupError) {
        let key = try PEMReader.privateKey(pem.bytes, what: "the private key\(pem.origin)")
        defer { EVP_PKEY_free(key) }
        guard SSL_CTX_use_PrivateKey(self.context, key) == 1 else {
            throw TLSSetupError(operation: "using the private key\(pem.origin)")
        }
    }
}

/// A process-wide cache of contexts, one per distinct ``TLSContextOptions``.
package final class SSLContextCache: Sendable {
    private let contexts = NIOLockedValueBox<[TLSContextOptions: SSLContextBox]>([:])

    package init() {}

    /// The context for `options`, built on first use.
    ///
    /// Building happens under the lock so that concurrent first requests build one context, not many.
    package func context(for options: TLSContextOptions) throws(TLSSetupError) -> SSLContextBox {
        let result: Result<SSLContextBox, TLSSetupError> = self.contexts.withLockedValue { contexts in
            if let existing = contexts[options] {
                return .success(existing)
            }
            do throws(TLSSetupError) {
                let context = try SSLContextBox(options: options)
                contexts[options] = context
                return .success(context)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    package var count: Int { self.contexts.withLockedValue { $0.count } }
}
