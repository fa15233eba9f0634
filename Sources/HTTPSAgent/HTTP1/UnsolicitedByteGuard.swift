import NIOCore

/// What the connection's handler tells the byte guard, and what the guard counts. Event-loop only.
final class ResponseByteWatch {
    /// Whether a request is in flight, so that bytes from the server are expected.
    private(set) var expectingResponse = false
    /// Raw bytes received since the current request started.
    private(set) var responseBytes = 0
    /// Told of the current response's first byte.
    private var tracker: RequestTracker?

    func requestStarted(tracker: RequestTracker?) {
        self.expectingResponse = true
        self.responseBytes = 0
        self.tracker = tracker
    }

    /// The request's record is closed: no first byte to report any more.
    func requestEnded() {
        self.tracker = nil
    }

    func exchangeEnded() {
        self.expectingResponse = false
    }

    fileprivate func received(_ count: Int) {
        if self.responseBytes == 0, count > 0, let tracker = self.tracker {
            tracker.firstByte(now: .now())
        }
        self.responseBytes += count
    }
}

/// Bytes arrived on a connection that had no request in flight.
struct UnsolicitedBytesError: Error, CustomStringConvertible {
    var count: Int
    var description: String { "\(self.count) bytes arrived while no request was in flight" }
}

/// Sits below the HTTP decoder and looks at the raw bytes.
///
/// Why not leave this to the decoder: a few unsolicited bytes that do not yet form a response head (a
/// server's "HTTP/1.1 408" cut short, garbage, a stray CRLF) would wait inside the decoder and be parsed
/// as the start of the next request's response. Any byte while idle instead fails the connection at
/// once, so it is closed and never handed out. It also counts the bytes of the current response, so a
/// close in the middle of a head is not taken for a close before any response.
final class UnsolicitedByteGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let watch: ResponseByteWatch

    init(watch: ResponseByteWatch) {
        self.watch = watch
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        guard self.watch.expectingResponse else {
            context.fireErrorCaught(UnsolicitedBytesError(count: buffer.readableBytes))
            return
        }
        self.watch.received(buffer.readableBytes)
        context.fireChannelRead(data)
    }
}

@available(*, unavailable)
extension UnsolicitedByteGuard: Sendable {}

@available(*, unavailable)
extension ResponseByteWatch: Sendable {}
