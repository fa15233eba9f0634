import HTTPSAgentTLS
import NIOCore
import NIOHTTP1

/// How the handler turns what went wrong into an ``AgentError``.
extension HTTP1ClientHandler {
    func notSentError() -> AgentError {
        Self.notSentError(host: self.host, port: self.port, cause: self.tlsFailure)
    }

    /// The error for a request whose connection ended before any of it was written; `cause` is the TLS
    /// failure that ended the connection, if one did. A server that rejected the handshake is reported
    /// as such (see ``Connector/handshakeError(_:host:port:)``).
    static func notSentError(host: String, port: Int, cause: TLSFailure?) -> AgentError {
        if let cause, cause.kind == .rejectedAfterHandshake {
            return Connector.handshakeError(cause, host: host, port: port)
        }
        return AgentError(
            code: .connectionClosed,
            phase: .requestWrite,
            host: host,
            port: port,
            message: cause == nil
                ? "the connection closed before the request was sent"
                : "the connection failed before the request was sent",
            requestMayHaveBeenSent: false,
            underlying: cause.map { String(describing: $0) }
        )
    }

    func headError(_ failure: HTTP1ConnectionStateMachine.Failure) -> AgentError {
        if self.watch.responseBytes > 0, Self.isCloseOrUncleanShutdown(failure) {
            // Part of a head arrived: the server did respond, so this is no "closed before responding".
            return self.error(
                .malformedResponse,
                .responseHead,
                "the connection closed in the middle of the response head (\(self.watch.responseBytes) bytes)"
            )
        }
        switch failure {
        case .closed:
            return self.error(.connectionClosed, .responseHead, "the server closed the connection before responding")
        case .cancelled:
            return self.error(.cancelled, .responseHead, "the request was cancelled", sent: true)
        case .shutdown:
            return self.error(.shutdown, .responseHead, "the Agent was shut down", sent: true)
        case .requestBody(let error):
            return error
        case .error(let error):
            if let timeout = error as? ReadIdleTimeout {
                return self.error(.readTimeout, .responseHead, "\(timeout) while waiting for the response head")
            }
            if error is RequestDeadlineExceeded {
                return self.error(
                    .requestTimeout,
                    .responseHead,
                    "the request's time (requestTimeout) ran out before the response head arrived"
                )
            }
            if let failure = error as? TLSFailure, failure.kind == .uncleanShutdown {
                return self.error(
                    .connectionClosed,
                    .responseHead,
                    "the server closed the connection before responding"
                )
            }
            if let failure = error as? TLSFailure, failure.kind == .rejectedAfterHandshake {
                return Connector.handshakeError(failure, host: self.host, port: self.port)
            }
            if let tooLarge = error as? ResponseHeadTooLarge {
                return self.error(.responseHeadTooLarge, .responseHead, tooLarge.description)
            }
            if let parserError = error as? HTTPParserError, parserError == .headerOverflow {
                return self.error(
                    .responseHeadTooLarge,
                    .responseHead,
                    "the response head's fields exceed the HTTP parser's limit (80 KiB)",
                    underlying: error
                )
            }
            if Self.isMalformed(error) {
                return self.error(
                    .malformedResponse,
                    .responseHead,
                    "the response is not valid HTTP/1.1",
                    underlying: error
                )
            }
            return self.error(
                .connectionClosed,
                .responseHead,
                "the connection failed before a response arrived",
                underlying: error
            )
        }
    }

    func bodyError(_ failure: HTTP1ConnectionStateMachine.Failure, closeDelimited: Bool) -> AgentError {
        switch failure {
        case .closed:
            return self.error(
                .responseBodyTruncated,
                .responseBody,
                "the connection closed before the body was complete"
            )
        case .cancelled:
            return self.error(.cancelled, .responseBody, "reading the response body was cancelled")
        case .shutdown:
            return self.error(.shutdown, .responseBody, "the Agent was shut down")
        case .requestBody(let error):
            return error
        case .error(let error):
            if let timeout = error as? ReadIdleTimeout {
                return self.error(.readTimeout, .responseBody, "\(timeout) in the middle of the body")
            }
            if error is RequestDeadlineExceeded {
                return self.error(
                    .requestTimeout,
                    .responseBody,
                    "the request's time (requestTimeout) ran out in the middle of the body"
                )
            }
            if let failure = error as? TLSFailure, failure.kind == .uncleanShutdown {
                if closeDelimited {
                    return self.error(
                        .uncleanShutdown,
                        .responseBody,
                        "the server closed the connection without a TLS close_notify; the body may be truncated"
                    )
                }
                return self.error(
                    .responseBodyTruncated,
                    .responseBody,
                    "the connection closed before the body was complete"
                )
            }
            if let parserError = error as? HTTPParserError, parserError == .invalidEOFState {
                return self.error(
                    .responseBodyTruncated,
                    .responseBody,
                    "the connection closed before the body was complete"
                )
            }
            if Self.isMalformed(error) {
                return self.error(
                    .malformedResponse,
                    .responseBody,
                    "the response body is not valid HTTP/1.1",
                    underlying: error
                )
            }
            return self.error(
                .responseBodyTruncated,
                .responseBody,
                "the connection failed during the body",
                underlying: error
            )
        }
    }

    func error(
        _ code: AgentError.Code,
        _ phase: AgentError.Phase,
        _ message: String,
        sent: Bool = true,
        underlying: (any Error)? = nil
    ) -> AgentError {
        AgentError(
            code: code,
            phase: phase,
            host: self.host,
            port: self.port,
            message: message,
            requestMayHaveBeenSent: sent,
            underlying: underlying.map { String(describing: $0) }
        )
    }

    static func isCloseOrUncleanShutdown(_ failure: HTTP1ConnectionStateMachine.Failure) -> Bool {
        switch failure {
        case .closed:
            return true
        case .error(let error):
            return (error as? TLSFailure)?.kind == .uncleanShutdown || (error as? HTTPParserError) == .invalidEOFState
        case .cancelled, .requestBody, .shutdown:
            return false
        }
    }

    static func isMalformed(_ error: any Error) -> Bool {
        error is HTTPParserError || error is NIOHTTPDecoderError || error is ByteToMessageDecoderError
            || error is UnsolicitedBytesError
    }

    /// How the guard below the decoder sees the body that follows `head`; `length` is its known length.
    static func framing(of head: HTTPResponseHead, length: Int?, closeDelimited: Bool) -> ResponseByteWatch.Framing {
        // After a 101 the bytes belong to another protocol.
        if head.status.code == 101 { return .untilClose }
        if let length { return .length(remaining: length) }
        if closeDelimited { return .untilClose }
        // Chunked: the end is a line feed the guard looks for. (Also a Content-Length too large for `Int`,
        // a body that never completes; at worst its connection is closed for nothing.)
        return .chunked
    }

    /// A response whose body ends when the connection does: no Content-Length, not chunked, and a
    /// status that has a body. The caller rules out responses to HEAD.
    static func isCloseDelimited(_ head: HTTPResponseHead) -> Bool {
        let code = head.status.code
        if code < 200 || code == 204 || code == 304 { return false }
        if head.headers.contains(name: "content-length") { return false }
        if let encoding = head.headers.first(name: "transfer-encoding"), encoding.lowercased().contains("chunked") {
            return false
        }
        return true
    }
}
