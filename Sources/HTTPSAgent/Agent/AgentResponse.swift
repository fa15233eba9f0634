public import HTTPTypes
import NIOCore

/// A response: its head, its streamed body, and facts about the connection that carried it.
public struct AgentResponse: Sendable {
    /// The status line and header fields.
    public var head: HTTPResponse
    /// The body, streamed. Iterate it or call ``ResponseBody/collect(upTo:)``.
    public var body: ResponseBody
    /// The connection that carried the request.
    public var connection: ConnectionInfo
    /// The `Content-Encoding` the Agent removed while decoding the body ("gzip" or "deflate"), or `nil`
    /// when the body is delivered as the server sent it. See ``Decompression``.
    public var decodedContentEncoding: String?
    /// The URL this response came from: after redirects, the last one in the chain (curl's
    /// `url_effective`). Without its fragment; with the scheme and authority as the request gave them.
    public var url: String

    enum TimingSource: Sendable {
        case fixed(RequestTiming)
        /// Still being written by the connection until the body's end.
        case live(RequestTracker)
    }

    let timingSource: TimingSource

    /// Creates a response, e.g. to stand in for the Agent in a test.
    ///
    /// - Parameters:
    ///   - head: the status and header fields.
    ///   - body: the body.
    ///   - connection: facts about the connection.
    ///   - timing: the record ``timing`` returns; by default an empty one started now.
    ///   - url: the URL the response came from.
    public init(
        head: HTTPResponse,
        body: ResponseBody,
        connection: ConnectionInfo,
        timing: RequestTiming? = nil,
        url: String = ""
    ) {
        self.init(
            head: head,
            body: body,
            connection: connection,
            timingSource: .fixed(timing ?? RequestTiming(startedAt: .now())),
            url: url
        )
    }

    init(head: HTTPResponse, body: ResponseBody, connection: ConnectionInfo, timingSource: TimingSource, url: String) {
        self.head = head
        self.body = body
        self.connection = connection
        self.timingSource = timingSource
        self.url = url
    }

    /// Where the request's time went, as it stands.
    ///
    /// Complete (``RequestTiming/isComplete``) once the body has been read to its end; read it after
    /// ``ResponseBody/collect(upTo:)`` or the end of iteration. Before that, the body milestones are
    /// missing.
    public var timing: RequestTiming {
        switch self.timingSource {
        case .fixed(let timing): timing
        case .live(let tracker): tracker.timing
        }
    }

    /// How many redirects the Agent followed to get this response (curl's `num_redirects`); see
    /// ``RequestTiming/hops`` for each one's record.
    public var redirectCount: Int { self.timing.redirectCount }

    /// The response status.
    public var status: HTTPResponse.Status { self.head.status }
    /// The response header fields.
    public var headerFields: HTTPFields { self.head.headerFields }
}

/// Facts about the connection that carried a request.
public struct ConnectionInfo: Sendable, Hashable {
    /// A number unique among the Agent's connections, in the order they were opened (from 1).
    public var id: Int
    /// Whether the connection came from the pool's free list: it was open before this request, so the
    /// request paid for no DNS lookup, TCP connect or TLS handshake. Usually it carried an earlier
    /// request; it may also have been opened for a request that was cancelled before using it.
    public var isReused: Bool
    /// The server's address, e.g. "127.0.0.1" or "::1", if known.
    public var remoteAddress: String?
    /// The server's port.
    public var remotePort: Int?
    /// What the TLS handshake negotiated; `nil` for `http`.
    public var tls: TLSInfo?

    /// Creates connection facts, e.g. to stand in for the Agent in a test.
    public init(id: Int, isReused: Bool, remoteAddress: String? = nil, remotePort: Int? = nil, tls: TLSInfo? = nil) {
        self.id = id
        self.isReused = isReused
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.tls = tls
    }
}

/// What a TLS handshake negotiated.
public struct TLSInfo: Sendable, Hashable {
    /// "TLSv1.2" or "TLSv1.3", as OpenSSL names it.
    public var version: String
    /// The cipher suite, e.g. "TLS_AES_256_GCM_SHA384".
    public var cipher: String
    /// The ALPN protocol the server selected, if any ("http/1.1").
    public var alpn: String?
    /// Whether the handshake resumed an earlier TLS session instead of doing a full handshake.
    public var sessionResumed: Bool

    /// Creates TLS facts, e.g. to stand in for the Agent in a test.
    public init(version: String, cipher: String, alpn: String? = nil, sessionResumed: Bool = false) {
        self.version = version
        self.cipher = cipher
        self.alpn = alpn
        self.sessionResumed = sessionResumed
    }
}
