import NIOCore

/// What the connection's handler and the byte guard below the decoder share about the current response:
/// how its raw bytes are framed, so that the guard can tell where it may end. Event-loop only.
final class ResponseByteWatch {
    /// How far the guard can see into the response's framing.
    enum Framing {
        /// No request in flight: any byte is unsolicited.
        case idle
        /// Waiting for the final response head: `bytes` of heads so far (informational ones included);
        /// `scan` is where in a line the last of them was.
        case head(bytes: Int, scan: HeadScan)
        /// A body of known length with `remaining` bytes to come. Also a response without a body (0).
        case length(remaining: Int)
        /// A chunked body: it ends at a line feed the guard does not locate.
        case chunked
        /// A body that ends with the connection (or bytes of another protocol after a 101).
        case untilClose
        /// The exchange failed or the connection is closing: bytes are dropped.
        case discarding
    }

    /// Where a head scan stands: in a line, just after a line feed, or after a line feed and a CR.
    enum HeadScan {
        case inLine
        case lineStart
        case lineStartCR
    }

    private(set) var framing: Framing = .idle
    /// Raw bytes received since the current request started.
    private(set) var responseBytes = 0
    /// Whether more bytes follow those the decoder is being fed, should the response end within them.
    /// Set by the guard around each piece it passes on; the handler does not reuse a connection whose
    /// response ended with bytes after it.
    fileprivate(set) var bytesFollow = false
    /// The most bytes the response heads of one exchange may take.
    let maxHeadSize: Int
    /// Told of the current response's first byte.
    private var tracker: RequestTracker?

    init(maxHeadSize: Int) {
        self.maxHeadSize = Swift.max(1, maxHeadSize)
    }

    /// Whether a request is in flight, so that bytes from the server are expected.
    var expectingResponse: Bool {
        switch self.framing {
        case .idle, .discarding: false
        case .head, .length, .chunked, .untilClose: true
        }
    }

    func requestStarted(tracker: RequestTracker?) {
        self.framing = .head(bytes: 0, scan: .inLine)
        self.responseBytes = 0
        self.tracker = tracker
    }

    /// The final head arrived; the body that follows is framed as `framing`.
    func headReceived(_ framing: Framing) {
        guard case .head = self.framing else { return }
        self.framing = framing
    }

    /// The request's record is closed: no first byte to report any more.
    func requestEnded() {
        self.tracker = nil
    }

    /// The exchange is over: the connection is free again if `released`, else it is closing.
    func exchangeEnded(released: Bool) {
        self.framing = released ? .idle : .discarding
    }

    fileprivate func received(_ count: Int) {
        if self.responseBytes == 0, count > 0, let tracker = self.tracker {
            tracker.firstByte(now: .now())
        }
        self.responseBytes += count
    }

    fileprivate func set(_ framing: Framing) {
        self.framing = framing
    }
}

/// The limits on a response head, from ``Agent/Configuration``.
struct ResponseHeadLimits: Sendable, Hashable {
    /// ``Agent/Configuration/maxResponseHeadSize``.
    var maxSize = 64 * 1024
    /// ``Agent/Configuration/maxResponseHeaderCount``.
    var maxFieldCount = 100
}

/// Bytes arrived on a connection that had no request in flight.
struct UnsolicitedBytesError: Error, CustomStringConvertible {
    var count: Int
    var description: String { "\(self.count) bytes arrived while no request was in flight" }
}

/// A response head over ``Agent/Configuration/maxResponseHeadSize`` or
/// ``Agent/Configuration/maxResponseHeaderCount``.
struct ResponseHeadTooLarge: Error, CustomStringConvertible {
    enum Limit {
        /// The heads took more than `limit` bytes.
        case size(limit: Int)
        /// The head had `count` fields, more than `limit`.
        case fieldCount(count: Int, limit: Int)
    }

    var limit: Limit

    var description: String {
        switch self.limit {
        case .size(let limit):
            "the response head is larger than \(limit) bytes (Agent.Configuration.maxResponseHeadSize)"
        case .fieldCount(let count, let limit):
            "the response head has \(count) header fields, more than \(limit) "
                + "(Agent.Configuration.maxResponseHeaderCount)"
        }
    }
}

/// Sits below the HTTP decoder, looks at the raw bytes and passes them on in pieces cut where the
/// response may end.
///
/// Why not leave this to the decoder: it takes in every byte it is given, and holds on to the start of
/// a next message without a word. A few bytes after a response (a server's "HTTP/1.1 408" cut short,
/// garbage, bytes beyond a wrong Content-Length) would wait inside it and be parsed as the start of the
/// next request's response. So:
/// - Any byte while no request is in flight fails the connection at once, so it is closed and never
///   handed out.
/// - During a response, the decoder is fed up to each place the response may end: the blank line that
///   ends a head (found here), the end of a body of known length, and, in a chunked body, the last line
///   feed of what arrived. The handler is told whether bytes follow, and does not reuse a connection
///   whose response ended with bytes after it.
/// - The heads of a response are held to ``Agent/Configuration/maxResponseHeadSize``: the decoder is
///   fed no more than that before the final head is complete.
///
/// It also counts the bytes of the current response, so that a close in the middle of a head is not
/// taken for a close before any response.
final class ResponseByteGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let watch: ResponseByteWatch

    init(watch: ResponseByteWatch) {
        self.watch = watch
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = self.unwrapInboundIn(data)
        if self.watch.expectingResponse {
            self.watch.received(buffer.readableBytes)
        }
        while buffer.readableBytes > 0 {
            switch self.watch.framing {
            case .idle:
                self.watch.set(.discarding)
                context.fireErrorCaught(UnsolicitedBytesError(count: buffer.readableBytes))
                return
            case .discarding:
                return
            case .head(let bytes, let scan):
                let allowed = self.watch.maxHeadSize - bytes
                let (end, newScan) = Self.endOfHead(in: buffer, within: allowed, from: scan)
                if let end {
                    // A whole head: the final one, or an informational one the decoder drops.
                    self.watch.set(.head(bytes: bytes + end, scan: .inLine))
                    self.feed(buffer.readSlice(length: end)!, bytesFollow: buffer.readableBytes > 0, context)
                } else if buffer.readableBytes <= allowed {
                    self.watch.set(.head(bytes: bytes + buffer.readableBytes, scan: newScan))
                    self.feed(buffer, bytesFollow: false, context)
                    return
                } else {
                    self.watch.set(.discarding)
                    context.fireErrorCaught(ResponseHeadTooLarge(limit: .size(limit: self.watch.maxHeadSize)))
                    return
                }
            case .length(let remaining):
                if remaining == 0 {
                    // The decoder did not end the response where its framing says: let it decide.
                    self.feed(buffer, bytesFollow: true, context)
                    return
                }
                let count = Swift.min(remaining, buffer.readableBytes)
                self.watch.set(.length(remaining: remaining - count))
                self.feed(buffer.readSlice(length: count)!, bytesFollow: buffer.readableBytes > 0, context)
            case .chunked:
                // A chunked body ends with a line feed. If the last byte here is one, it is fed on its
                // own, so that an end anywhere before it is known to have bytes after it; if it is not,
                // an end anywhere has.
                let endsWithLineFeed = buffer.getInteger(at: buffer.writerIndex - 1, as: UInt8.self) == Self.lf
                if endsWithLineFeed && buffer.readableBytes > 1 {
                    self.feed(buffer.readSlice(length: buffer.readableBytes - 1)!, bytesFollow: true, context)
                } else {
                    self.feed(buffer, bytesFollow: !endsWithLineFeed, context)
                    return
                }
            case .untilClose:
                self.feed(buffer, bytesFollow: false, context)
                return
            }
        }
    }

    private func feed(_ piece: ByteBuffer, bytesFollow: Bool, _ context: ChannelHandlerContext) {
        self.watch.bytesFollow = bytesFollow
        context.fireChannelRead(self.wrapInboundOut(piece))
        self.watch.bytesFollow = false
    }

    private static let lf = UInt8(ascii: "\n")
    private static let cr = UInt8(ascii: "\r")

    /// Finds the blank line that ends a head among the first `limit` bytes of `buffer`, going on from
    /// `scan`: the number of bytes up to and including it, or `nil` and where the scan stands.
    ///
    /// A head ends at the first line feed that follows a line feed, with at most a CR between; no
    /// field can contain one, so this is never later than where the decoder ends the head.
    static func endOfHead(
        in buffer: ByteBuffer,
        within limit: Int,
        from scan: ResponseByteWatch.HeadScan
    ) -> (end: Int?, scan: ResponseByteWatch.HeadScan) {
        var scan = scan
        var count = 0
        for byte in buffer.readableBytesView.prefix(Swift.max(0, limit)) {
            count += 1
            switch (byte, scan) {
            case (Self.lf, .lineStart), (Self.lf, .lineStartCR):
                return (count, .inLine)
            case (Self.lf, .inLine):
                scan = .lineStart
            case (Self.cr, .lineStart):
                scan = .lineStartCR
            default:
                scan = .inLine
            }
        }
        return (nil, scan)
    }
}

@available(*, unavailable)
extension ResponseByteGuard: Sendable {}

@available(*, unavailable)
extension ResponseByteWatch: Sendable {}
