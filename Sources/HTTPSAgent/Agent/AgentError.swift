/// The one error type the Agent throws.
///
/// Every error carries a stable ``code`` to switch on, the ``phase`` of the request it happened in,
/// the ``host`` and ``port`` it concerns, and a ``message`` a person can act on. TLS failures also carry
/// OpenSSL's reason and the certificate verify result in words.
///
/// ```swift
/// do {
///     let response = try await agent.execute(request)
/// } catch let error as AgentError where error.code == .certificateVerificationFailed {
///     print(error.verifyResultDescription ?? "")   // "certificate has expired"
/// }
/// ```
public struct AgentError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A stable identifier for the kind of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case invalidRequest
            case dnsFailed
            case connectFailed
            case connectTimeout
            case tlsConfigurationInvalid
            case tlsHandshakeFailed
            case tlsHandshakeTimeout
            case readTimeout
            case requestTimeout
            case certificateVerificationFailed
            case connectionClosed
            case uncleanShutdown
            case responseBodyTruncated
            case malformedResponse
            case responseHeadTooLarge
            case requestBodyFailed
            case requestBodyLengthMismatch
            case responseBodyTooLarge
            case bodyAlreadyConsumed
            case decompressionFailed
            case decompressionLimitExceeded
            case poolWaitTimeout
            case tooManyRedirects
            case redirectLoop
            case insecureRedirect
            case invalidRedirect
            case cancelled
            case shutdown
        }

        private let base: Base

        private init(_ base: Base) { self.base = base }

        /// The request could not be sent as given: no scheme or host, an unsupported scheme, a bad host.
        public static let invalidRequest = Code(.invalidRequest)
        /// The host name did not resolve.
        public static let dnsFailed = Code(.dnsFailed)
        /// No address of the host accepted a TCP connection.
        public static let connectFailed = Code(.connectFailed)
        /// TCP connect did not complete within ``Agent/Configuration/connectTimeout``.
        public static let connectTimeout = Code(.connectTimeout)
        /// The TLS configuration could not be loaded (unreadable trust roots, a key that does not match).
        public static let tlsConfigurationInvalid = Code(.tlsConfigurationInvalid)
        /// The TLS handshake failed for a reason other than the server's certificate.
        ///
        /// This includes a TLS 1.3 server refusing the client's certificate, or its absence, with an alert
        /// such as "tlsv13 alert certificate required" (in ``AgentError/tlsReason``). Such a server checks
        /// the certificate after the client's side of the handshake is done, so its alert can arrive after
        /// the connection was handed to the request, even after the request was written; it is reported
        /// the same way whenever it arrives, in the ``AgentError/Phase/tlsHandshake`` phase, with
        /// ``AgentError/requestMayHaveBeenSent`` `false` (the server reads no request before the handshake
        /// succeeds).
        public static let tlsHandshakeFailed = Code(.tlsHandshakeFailed)
        /// The TLS handshake did not complete within ``Agent/Configuration/tlsHandshakeTimeout``.
        public static let tlsHandshakeTimeout = Code(.tlsHandshakeTimeout)
        /// No byte came from the server for ``Agent/Configuration/readIdleTimeout`` while waiting for the
        /// response head (phase ``Phase/responseHead``) or its body (``Phase/responseBody``). The
        /// connection is closed.
        public static let readTimeout = Code(.readTimeout)
        /// The request took longer than ``Agent/Configuration/requestTimeout`` in all; ``phase`` says
        /// what it was doing. A connection it was using is closed.
        public static let requestTimeout = Code(.requestTimeout)
        /// The server's certificate did not verify; see ``AgentError/verifyResultDescription``.
        public static let certificateVerificationFailed = Code(.certificateVerificationFailed)
        /// The connection closed before a complete response head arrived.
        public static let connectionClosed = Code(.connectionClosed)
        /// The server closed TLS without `close_notify` while a body delimited by the connection's
        /// end was being read: the body may be truncated.
        public static let uncleanShutdown = Code(.uncleanShutdown)
        /// The connection closed before the response body was complete.
        public static let responseBodyTruncated = Code(.responseBodyTruncated)
        /// The server sent bytes that are not a valid HTTP/1.1 response.
        public static let malformedResponse = Code(.malformedResponse)
        /// The response head was larger than ``Agent/Configuration/maxResponseHeadSize`` or had more
        /// fields than ``Agent/Configuration/maxResponseHeaderCount``. The connection is closed.
        public static let responseHeadTooLarge = Code(.responseHeadTooLarge)
        /// The request body sequence threw.
        public static let requestBodyFailed = Code(.requestBodyFailed)
        /// A streamed request body did not have the length it declared.
        public static let requestBodyLengthMismatch = Code(.requestBodyLengthMismatch)
        /// ``ResponseBody/collect(upTo:)`` found more bytes than allowed.
        public static let responseBodyTooLarge = Code(.responseBodyTooLarge)
        /// A response body was iterated a second time.
        public static let bodyAlreadyConsumed = Code(.bodyAlreadyConsumed)
        /// A compressed body could not be decoded: corrupt data, or a stream that ends early.
        public static let decompressionFailed = Code(.decompressionFailed)
        /// A compressed body decoded to more than ``Decompression`` allows (a decompression bomb?).
        public static let decompressionLimitExceeded = Code(.decompressionLimitExceeded)
        /// The request waited longer than ``Agent/Configuration/poolWaitTimeout`` for a connection.
        public static let poolWaitTimeout = Code(.poolWaitTimeout)
        /// The chain went past ``RedirectPolicy/maxRedirects`` redirects.
        public static let tooManyRedirects = Code(.tooManyRedirects)
        /// A redirect pointed back to a request already made in the chain (the same method and URL).
        public static let redirectLoop = Code(.redirectLoop)
        /// A redirect from `https` to `http`, which ``RedirectPolicy/allowsHTTPSToHTTP`` does not allow.
        public static let insecureRedirect = Code(.insecureRedirect)
        /// A redirect's `Location` is not a usable URL: an unsupported scheme, no host, credentials in it.
        public static let invalidRedirect = Code(.invalidRedirect)
        /// The task running the request was cancelled.
        public static let cancelled = Code(.cancelled)
        /// The Agent was shut down.
        public static let shutdown = Code(.shutdown)

        /// The code's name, e.g. "certificateVerificationFailed".
        public var description: String { self.base.rawValue }
    }

    /// Where in a request's life an error happened.
    public enum Phase: String, Sendable, Hashable {
        /// Before any I/O: checking and encoding the request.
        case request
        /// Waiting for a free connection in the pool.
        case poolWait
        /// Resolving the host name.
        case dns
        /// Opening the TCP connection.
        case connect
        /// The TLS handshake.
        case tlsHandshake
        /// Writing the request head and body.
        case requestWrite
        /// Waiting for and reading the response head.
        case responseHead
        /// Reading the response body.
        case responseBody
        /// Deciding whether to follow a redirect, once its response head had arrived.
        case redirect
    }

    /// The kind of failure.
    public var code: Code
    /// The phase the request was in.
    public var phase: Phase
    /// The host the request was for, if known.
    public var host: String?
    /// The port the request was for, if known.
    public var port: Int?
    /// What went wrong, in words.
    public var message: String
    /// For TLS failures: OpenSSL's reason, e.g. "certificate verify failed".
    public var tlsReason: String?
    /// For certificate failures: the verify result in words, e.g. "certificate has expired",
    /// "hostname mismatch", "unable to get local issuer certificate".
    public var verifyResultDescription: String?
    /// For certificate failures: OpenSSL's numeric verify result (`X509_V_ERR_*`).
    public var verifyResult: Int?
    /// Whether the server may have received and acted on the request. `false` means it certainly
    /// did not, so the request is safe to send again.
    public var requestMayHaveBeenSent: Bool
    /// A lower-level error that caused this one, described.
    public var underlying: String?
    /// The URL of the request that failed, if it started (`nil` with ``timing``): after redirects, the
    /// URL of the hop that failed or whose redirect was refused (curl's `url_effective`).
    public var url: String?
    /// The timing record of the failed request: the milestones it reached before it failed, e.g. DNS
    /// and connect for a refused TLS handshake. `nil` for a request rejected before it started (an
    /// invalid URL or header).
    public var timing: RequestTiming?
    /// Set by the connector on dial failures: the steps the dial completed, until a request's record
    /// takes them over.
    var dialTimeline: ConnectionTimeline?

    package init(
        code: Code,
        phase: Phase,
        host: String? = nil,
        port: Int? = nil,
        message: String,
        requestMayHaveBeenSent: Bool = false,
        underlying: String? = nil
    ) {
        self.code = code
        self.phase = phase
        self.host = host
        self.port = port
        self.message = message
        self.requestMayHaveBeenSent = requestMayHaveBeenSent
        self.underlying = underlying
    }

    /// "https://example.com:443: TLS handshake: certificate verify failed (certificate has expired)".
    public var description: String {
        var text = ""
        if let host {
            text += port.map { "\(host):\($0)" } ?? host
            text += ": "
        }
        text += "\(self.phase.displayName): \(self.message)"
        if let underlying, !self.message.contains(underlying) {
            text += " (\(underlying))"
        }
        return text
    }

    func withEndpoint(host: String, port: Int) -> AgentError {
        var copy = self
        copy.host = copy.host ?? host
        copy.port = copy.port ?? port
        return copy
    }
}

extension AgentError.Phase {
    /// The phase in words, as error descriptions name it: "DNS", "TLS handshake", "reading the response
    /// head".
    public var displayName: String {
        switch self {
        case .request: "request"
        case .poolWait: "waiting for a connection"
        case .dns: "DNS"
        case .connect: "connect"
        case .tlsHandshake: "TLS handshake"
        case .requestWrite: "sending the request"
        case .responseHead: "reading the response head"
        case .responseBody: "reading the response body"
        case .redirect: "following a redirect"
        }
    }
}
