import HTTPTypes
import NIOCore
import NIOHTTP1

/// A request turned into what goes on the wire, checked once before it waits for a connection.
struct PreparedRequest: Sendable {
    var target: RequestTarget
    var head: HTTPRequestHead
    var body: RequestBody?
    /// Whether this request lets the connection be reused afterwards.
    var keepAlive: Bool
    /// Whether sending the request twice has the same effect as sending it once (RFC 9110 §9.2.2),
    /// by its method or an `Idempotency-Key` header.
    var isIdempotent: Bool
    /// The decoding limits when the Agent asked for a compressed response (the caller did not set
    /// `Accept-Encoding` and decompression is on); `nil` when the body is delivered as received.
    var decoding: Decompression?
    /// When the whole request must be over (``Agent/Configuration/requestTimeout``), if ever.
    var deadline: NIODeadline?

    /// - Parameters:
    ///   - request: the caller's request.
    ///   - body: its body, if any.
    ///   - agentKeepAlive: the Agent's keep-alive setting; `false` sends `Connection: close`.
    ///   - decompression: the Agent's decompression setting.
    init(
        _ request: HTTPRequest,
        body: RequestBody?,
        agentKeepAlive: Bool,
        decompression: Decompression = .disabled
    ) throws(AgentError) {
        let target = try RequestTarget(request)
        if request.method == .connect {
            throw AgentError(
                code: .invalidRequest,
                phase: .request,
                host: target.host,
                port: target.port,
                message: "CONNECT (tunnelling) is not supported"
            )
        }
        var headers = HTTPHeaders()
        headers.reserveCapacity(request.headerFields.count + 3)
        headers.add(name: "Host", value: target.hostHeader)
        var keepAlive = agentKeepAlive
        var declaredLength: Int?
        for field in request.headerFields {
            if field.name.canonicalName == "host" {
                continue  // the Host header comes from the authority
            }
            switch field.name {
            case .transferEncoding:
                continue  // framing is ours to decide
            case .contentLength:
                guard let length = Self.parseLength(field.value) else {
                    throw AgentError(
                        code: .invalidRequest,
                        phase: .request,
                        host: target.host,
                        port: target.port,
                        message: "invalid Content-Length \"\(field.value)\""
                    )
                }
                declaredLength = length
                continue
            case .connection:
                if field.value.lowercased().contains("close") { keepAlive = false }
                if !agentKeepAlive { continue }
            default:
                break
            }
            headers.add(name: field.name.rawName, value: field.value)
        }
        if !agentKeepAlive {
            headers.add(name: "Connection", value: "close")
        }
        // Not for a range: its bytes would be a piece of the compressed representation, which cannot be
        // decoded on its own (Go skips it for the same reason).
        if decompression.isEnabled && request.headerFields[.acceptEncoding] == nil
            && request.headerFields[.range] == nil
        {
            headers.add(name: "Accept-Encoding", value: Decompression.acceptEncoding)
            self.decoding = decompression
        } else {
            self.decoding = nil
        }

        var body = body
        switch body?.storage {
        case .buffer(let buffer):
            if buffer.readableBytes > 0 || Self.expectsBody(request.method) {
                headers.add(name: "Content-Length", value: String(buffer.readableBytes))
            }
        case .stream(let length, let makeSource):
            if let length = length ?? declaredLength {
                headers.add(name: "Content-Length", value: String(length))
                body = RequestBody(storage: .stream(length: length, makeSource: makeSource))
            } else {
                headers.add(name: "Transfer-Encoding", value: "chunked")
            }
        case nil:
            if Self.expectsBody(request.method) {
                headers.add(name: "Content-Length", value: "0")
            }
        }

        let path = request.path ?? "/"
        guard Self.isValidRequestTarget(path, method: request.method) else {
            throw AgentError(
                code: .invalidRequest,
                phase: .request,
                host: target.host,
                port: target.port,
                message:
                    "invalid path \"\(path)\": it must start with \"/\" and contain no spaces or control characters"
            )
        }
        let method = HTTPMethod(rawValue: request.method.rawValue)
        self.target = target
        self.head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        self.body = body
        self.keepAlive = keepAlive
        self.isIdempotent =
            Self.idempotentMethods.contains(request.method)
            || request.headerFields.contains { $0.name.canonicalName == "idempotency-key" }
    }

    private static let idempotentMethods: Set<HTTPRequest.Method> = [.get, .head, .options, .trace, .put, .delete]

    /// Whether the body can be sent again: it is in memory (a stream has been consumed).
    var hasReplayableBody: Bool {
        if case .stream = self.body?.storage { return false }
        return true
    }

    /// Whether resending after `error` on a reused connection is safe: nothing was sent, or the request
    /// is idempotent, replayable, and the connection closed before any response byte.
    func isSafeToResend(after error: AgentError) -> Bool {
        guard error.code == .connectionClosed else { return false }
        if !error.requestMayHaveBeenSent { return true }
        return error.phase == .responseHead && self.isIdempotent && self.hasReplayableBody
    }

    /// Why a request that may have reached the server is not resent, for the error message.
    var whyNotResendable: String {
        if !self.isIdempotent {
            return "\(self.head.method.rawValue) is not idempotent (add an Idempotency-Key header to allow it)"
        }
        if !self.hasReplayableBody {
            return "its streamed body cannot be replayed"
        }
        return "the connection failed after the request was sent"
    }

    /// A non-negative decimal number, as RFC 9110 §8.6 allows for Content-Length.
    private static func parseLength(_ value: String) -> Int? {
        let digits = value.utf8
        guard !digits.isEmpty, digits.count <= 18,
            digits.allSatisfy({ UInt8(ascii: "0") <= $0 && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int(value)
    }

    /// An origin-form target ("/path?query"), or "*" for OPTIONS; visible ASCII only, so nothing a
    /// caller passes can split the request line or smuggle a header.
    private static func isValidRequestTarget(_ path: String, method: HTTPRequest.Method) -> Bool {
        if path == "*" { return method == .options }
        guard path.hasPrefix("/") else { return false }
        return path.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// Methods whose requests carry a body, so an empty one is sent as `Content-Length: 0`.
    private static func expectsBody(_ method: HTTPRequest.Method) -> Bool {
        method == .post || method == .put || method == .patch
    }
}
