import HTTPSAgentTLS
import HTTPTypes
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Told by a connection when it becomes free again or goes away. Called on the connection's event loop.
protocol HTTP1ConnectionDelegate: Sendable {
    /// The exchange finished and the connection is idle and reusable; `keepAliveHint` is how long
    /// the server said it keeps an idle connection (`Keep-Alive: timeout=N`), if it said.
    func connectionReleased(_ id: Int, keepAliveHint: TimeAmount?)
    /// The channel closed. Called exactly once per connection.
    func connectionClosed(_ id: Int, reason: ConnectionCloseReason)
}

/// A response head together with the stream its body will arrive on.
struct ReceivedHead: Sendable {
    var head: HTTPResponseHead
    var body: ResponseBodyStream
    /// The body's length if known before reading it: 0 for HEAD, 1xx, 204 and 304, else the
    /// Content-Length, if any.
    var bodyLength: Int?
}

/// Runs HTTP/1.1 exchanges on one channel, below ``HTTP1Connection`` and above NIO's HTTP codec.
///
/// Decisions come from ``HTTP1ConnectionStateMachine``; this class only performs them: it writes
/// requests, hands the response head to the waiting caller, feeds the body stream, pauses socket reads
/// while the consumer is behind, and tells the pool when the connection is free or closed.
final class HTTP1ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private var machine = HTTP1ConnectionStateMachine()
    private var context: ChannelHandlerContext?
    private let connectionID: Int
    let host: String
    let port: Int
    private let delegate: any HTTP1ConnectionDelegate
    /// Set once the owning ``HTTP1Connection`` exists; it is the producer of each body stream.
    var producer: (any ResponseBodyProducer)?

    private var currentRequestID: UInt64 = 0
    private var currentRequestIsHead = false
    private var headPromise: EventLoopPromise<ReceivedHead>?
    private var stream: ResponseBodyStream?
    private var readsPaused = false
    private var pendingRead = false
    /// The task streaming the current request's body, if any.
    private var upload: Task<Void, Never>?
    /// Shared with the ``ResponseByteGuard`` below the decoder: how the current response is framed, and
    /// how many raw bytes of it arrived.
    let watch: ResponseByteWatch
    /// The most header fields a response head may have.
    private let maxHeaderCount: Int

    /// The current request's timing record and observers.
    private var tracker: RequestTracker?
    /// Socket byte counts when the current request started, and body bytes so far.
    private var wireBaseline = (sent: 0, received: 0)
    private var requestBodyBytes = 0
    private var responseBodyBytes = 0
    private let counter: ByteCounter?
    private let events: ConnectionObservers
    /// Why the connection is closing, once this side has decided to close it.
    private var closeReason: ConnectionCloseReason?
    /// The TLS failure that ended the connection, if one did: a request that comes after it is told why.
    private(set) var tlsFailure: TLSFailure?
    /// How long an exchange may go without a byte from the server; `nil` waits forever.
    private let readIdleTimeout: TimeAmount?
    /// The pending check of the read-idle clock. It is not moved on every read: it looks at
    /// `readIdleSince` when it runs, and schedules itself again if the server spoke meanwhile, so that a
    /// busy connection costs one timer per timeout, not several per request.
    private var readIdleTimer: Scheduled<Void>?
    /// When the read-idle clock last started from zero: the server's last byte, or the moment the clock
    /// started running.
    private var readIdleSince = NIODeadline.uptimeNanoseconds(0)
    /// Fails the exchange at the request's deadline (``Agent/Configuration/requestTimeout``).
    private var deadlineTimer: Scheduled<Void>?
    /// Bumped when the read-idle check is cancelled, so that a check already on its way to run (NIO cannot
    /// always stop those) does nothing.
    private var timerGeneration = 0
    /// Whether the current request's last byte reached the socket: the read-idle clock runs only then.
    private var requestOnSocket = false
    /// The `timeout` of the last response's `Keep-Alive` field.
    private var keepAliveHint: TimeAmount?

    init(
        connectionID: Int,
        host: String,
        port: Int,
        delegate: any HTTP1ConnectionDelegate,
        counter: ByteCounter? = nil,
        events: ConnectionObservers,
        readIdleTimeout: TimeAmount? = nil,
        headLimits: ResponseHeadLimits = ResponseHeadLimits()
    ) {
        self.readIdleTimeout = readIdleTimeout
        self.watch = ResponseByteWatch(maxHeadSize: headLimits.maxSize)
        self.maxHeaderCount = Swift.max(1, headLimits.maxFieldCount)
        self.connectionID = connectionID
        self.host = host
        self.port = port
        self.delegate = delegate
        self.counter = counter
        self.events = events
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelReadIdleTimer()
        self.context = nil
        // The producer refers back to this handler; let both go once the channel is gone.
        self.producer = nil
    }

    // MARK: - Requests (called on the event loop by HTTP1Connection)

    /// Writes the request head (and an in-memory body) if the connection can take it.
    ///
    /// `startedPromise` succeeds once the head is written, so a streamed body is read only from then on;
    /// if the connection cannot take the request, both promises fail with nothing written.
    func startRequest(
        _ request: PreparedRequest,
        id: UInt64,
        tracker: RequestTracker,
        headPromise: EventLoopPromise<ReceivedHead>,
        startedPromise: EventLoopPromise<Void>
    ) {
        guard let context = self.context else {
            headPromise.fail(self.notSentError())
            startedPromise.fail(self.notSentError())
            return
        }
        switch self.machine.requestStarted(id: id, keepAlive: request.keepAlive) {
        case .writeRequest:
            self.currentRequestID = id
            self.currentRequestIsHead = request.head.method == .HEAD
            self.headPromise = headPromise
            self.tracker = tracker
            self.wireBaseline = (self.counter?.sent ?? 0, self.counter?.received ?? 0)
            self.requestBodyBytes = 0
            self.responseBodyBytes = 0
            self.watch.requestStarted(tracker: tracker)
            tracker.requestStarting(now: .now())
            // The read-idle clock starts once the whole request is on the socket (see `endWritten`): until
            // then the server may well be waiting for us.
            self.requestOnSocket = false
            self.armDeadlineTimer(request.deadline)
            // Milestones are taken when the bytes reach the socket (the write promises), not when queued.
            // The head's promise only feeds an event, so it exists only when someone listens.
            var headWritten: EventLoopPromise<Void>?
            if !tracker.observers.isEmpty {
                let promise = context.eventLoop.makePromise(of: Void.self)
                promise.futureResult.whenSuccess { tracker.requestHeadWritten() }
                headWritten = promise
            }
            context.write(self.wrapOutboundOut(.head(request.head)), promise: headWritten)
            switch request.body?.storage {
            case .stream:
                context.flush()
            case .buffer(let buffer):
                if buffer.readableBytes > 0 {
                    context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
                }
                self.requestBodyBytes = buffer.readableBytes
                fallthrough
            case nil:
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: self.endWritten(tracker))
                self.run(self.machine.requestFullyWritten(id: id))
            }
            startedPromise.succeed()
        case .rejectRequest:
            headPromise.fail(self.notSentError())
            startedPromise.fail(self.notSentError())
        default:
            preconditionFailure("unexpected action for a new request")
        }
    }

    /// Ties the task uploading request `id`'s body to the exchange: it is cancelled when the exchange
    /// ends (response complete, failure, abandonment), or at once if it already has.
    func attachUpload(_ upload: Task<Void, Never>, id: UInt64) {
        if self.machine.isCurrent(id: id) {
            self.upload = upload
        } else {
            upload.cancel()
        }
    }

    /// Writes a piece of a streamed body; `isLast` also ends the request.
    func writeBodyPart(_ buffer: ByteBuffer, id: UInt64, isLast: Bool, promise: EventLoopPromise<Void>) {
        guard let context = self.context, self.machine.acceptsRequestBody(id: id) else {
            promise.fail(ChannelError.ioOnClosedChannel)
            return
        }
        self.requestBodyBytes += buffer.readableBytes
        if isLast {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let written = self.endWritten(self.tracker)
            written?.futureResult.cascade(to: promise)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: written ?? promise)
            self.run(self.machine.requestFullyWritten(id: id))
        } else {
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: promise)
        }
    }

    func finishRequestBody(id: UInt64, promise: EventLoopPromise<Void>) {
        guard let context = self.context, self.machine.acceptsRequestBody(id: id) else {
            promise.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let written = self.endWritten(self.tracker)
        written?.futureResult.cascade(to: promise)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: written ?? promise)
        self.run(self.machine.requestFullyWritten(id: id))
    }

    /// A promise for the request's last write that records the request as written once it is on the
    /// socket; `nil` without a request to record.
    private func endWritten(_ tracker: RequestTracker?) -> EventLoopPromise<Void>? {
        guard let tracker, let context = self.context else { return nil }
        let bodyBytes = self.requestBodyBytes
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenSuccess {
            tracker.requestWritten(bodyBytes: bodyBytes, now: .now())
            // All sent: from now on, silence is the server's. Unless the exchange ended meanwhile (an early
            // response), or the reader is behind and reads are paused.
            guard self.tracker === tracker else { return }
            self.requestOnSocket = true
            if !self.readsPaused {
                self.startReadIdleClock()
            }
        }
        return promise
    }

    func failRequestBody(id: UInt64, error: AgentError) {
        self.run(self.machine.requestBodyFailed(id: id, error: error))
    }

    /// The caller cancelled, or dropped the body before its end.
    func abandon(id: UInt64) {
        self.run(self.machine.requestAbandoned(id: id))
    }

    func resumeReading(id: UInt64) {
        guard self.machine.isCurrent(id: id) else { return }
        self.resumeReads()
    }

    /// Closes the connection on behalf of the pool, failing a request in flight.
    func closeConnection(reason: ConnectionCloseReason) {
        self.closeReason = self.closeReason ?? reason
        self.run(self.machine.closeRequested(failure: reason == .shutdown ? .shutdown : .cancelled))
    }

    // MARK: - Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if self.readIdleTimer != nil { self.readIdleSince = .now() }
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            // A status code is 100 to 999 (RFC 9110 §15), but the parser takes any three digits. It frames a
            // 0xx like a 200 while everything here (no body before 200) frames it like a 1xx, so the body's
            // length would be wrong and a connection could be released in the middle of one. Found by
            // fuzzing the response path.
            guard head.status.code >= 100 else {
                self.run(self.machine.errorCaught(HTTPParserError.invalidStatus))
                return
            }
            guard head.headers.count <= self.maxHeaderCount else {
                let limit = ResponseHeadTooLarge.Limit.fieldCount(count: head.headers.count, limit: self.maxHeaderCount)
                self.run(self.machine.errorCaught(ResponseHeadTooLarge(limit: limit)))
                return
            }
            let closeDelimited = !self.currentRequestIsHead && Self.isCloseDelimited(head)
            // After a 101 the decoder stops parsing and the bytes belong to another protocol: never reuse.
            let keepAlive = head.isKeepAlive && head.status.code != 101
            switch self.machine.responseHeadReceived(keepAlive: keepAlive, closeDelimited: closeDelimited) {
            case .deliverHead:
                self.keepAliveHint = head.headers.first(name: "keep-alive").flatMap(Self.keepAliveTimeout)
                let stream = ResponseBodyStream(
                    producer: self.producer!,
                    requestID: self.currentRequestID,
                    host: self.host,
                    port: self.port,
                    tracker: self.tracker
                )
                self.stream = stream
                let promise = self.headPromise
                self.headPromise = nil
                let hasNoBody =
                    self.currentRequestIsHead || head.status.code < 200 || head.status.code == 204
                    || head.status.code == 304
                let length = hasNoBody ? 0 : head.headers.first(name: "content-length").flatMap { Int($0) }
                self.watch.headReceived(Self.framing(of: head, length: length, closeDelimited: closeDelimited))
                if let tracker = self.tracker {
                    let status = HTTPResponse.Status(
                        code: Int(head.status.code),
                        reasonPhrase: head.status.reasonPhrase
                    )
                    tracker.responseHead(status, now: .now())
                    self.recordBytes()
                }
                promise?.succeed(ReceivedHead(head: head, body: stream, bodyLength: length))
            case let action:
                self.run(action)
            }
        case .body(let buffer):
            switch self.machine.responseBodyReceived() {
            case .forwardBody:
                self.responseBodyBytes += buffer.readableBytes
                self.recordBytes()
                if let stream = self.stream, !stream.yield(buffer) {
                    // The reader is behind, not the server: the read-idle clock stops while reads are paused.
                    self.readsPaused = true
                }
            case let action:
                self.run(action)
            }
        case .end:
            // Bytes after the response's end: the server's framing is off, never take them for a next
            // response. The response itself is complete.
            let bytesFollow = self.watch.bytesFollow
            if bytesFollow { self.closeReason = self.closeReason ?? .error }
            self.run(self.machine.responseEndReceived(bytesFollow: bytesFollow))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.closeReason == nil, Self.isPeerClose(error) {
            self.closeReason = .closedByServer
        }
        if self.tlsFailure == nil, let failure = error as? TLSFailure, failure.kind != .uncleanShutdown {
            self.tlsFailure = failure
        }
        self.run(self.machine.errorCaught(error))
    }

    /// A close by the server that surfaces as an error: a TCP close without TLS `close_notify`, or a reset.
    private static func isPeerClose(_ error: any Error) -> Bool {
        if let failure = error as? TLSFailure, failure.kind == .uncleanShutdown { return true }
        if let error = error as? IOError, error.errnoCode == ECONNRESET || error.errnoCode == EPIPE { return true }
        return false
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.run(self.machine.channelInactive())
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        if self.readsPaused {
            self.pendingRead = true
        } else {
            context.read()
        }
    }

    // MARK: - Actions

    private func run(_ action: HTTP1ConnectionStateMachine.Action) {
        switch action {
        case .none, .writeRequest, .rejectRequest, .forwardBody, .deliverHead:
            break
        case .finishBody(let then):
            let stream = self.stream
            self.stream = nil
            let tracker = self.takeTracker()
            // The record is final before anyone can see the end of the body. The pool gets the connection
            // back before the consumer learns the body is complete, so that the consumer's next request
            // finds it free instead of dialling another.
            tracker?.finished(bodyBytes: self.responseBodyBytes, now: .now())
            self.exchangeEnded(then, reason: .notReusable)
            stream?.finish(nil)
        case .failHead(let failure, let then):
            let promise = self.headPromise
            self.headPromise = nil
            // The Agent reports this failure to the tracker when the error reaches it.
            _ = self.takeTracker()
            promise?.fail(self.headError(failure))
            self.exchangeEnded(then, reason: Self.closeReason(for: failure))
        case .failBody(let failure, let closeDelimited, let then):
            let stream = self.stream
            self.stream = nil
            var error = self.bodyError(failure, closeDelimited: closeDelimited)
            if let tracker = self.takeTracker() {
                error = tracker.fail(error)
            }
            stream?.finish(error)
            self.exchangeEnded(then, reason: Self.closeReason(for: failure))
        case .close:
            self.closeReason = self.closeReason ?? .error
            self.context?.close(promise: nil)
        case .reportClosed:
            self.reportClosed()
        }
    }

    /// Ends the current request's tracking, recording its byte counts.
    private func takeTracker() -> RequestTracker? {
        // Without a tracker the read-idle clock stands still; its pending check finds that and lapses.
        self.deadlineTimer?.cancel()
        self.deadlineTimer = nil
        guard let tracker = self.tracker else { return nil }
        self.recordBytes()
        self.tracker = nil
        self.watch.requestEnded()
        return tracker
    }

    /// Brings the record's byte counts up to date, so that a failure raised by the body's reader
    /// carries them.
    private func recordBytes() {
        self.tracker?.bytes(
            wireSent: (self.counter?.sent ?? 0) - self.wireBaseline.sent,
            wireReceived: (self.counter?.received ?? 0) - self.wireBaseline.received,
            bodyReceived: self.responseBodyBytes
        )
    }

    private func exchangeEnded(_ then: HTTP1ConnectionStateMachine.Then, reason: ConnectionCloseReason) {
        self.watch.exchangeEnded(released: then == .release)
        self.upload?.cancel()
        self.upload = nil
        switch then {
        case .release:
            // Keep reading while idle, so that a close by the server is noticed at once.
            self.resumeReads()
            self.delegate.connectionReleased(self.connectionID, keepAliveHint: self.keepAliveHint)
        case .close:
            self.closeReason = self.closeReason ?? reason
            self.context?.close(promise: nil)
        case .reportClosed:
            self.reportClosed()
        }
    }

    private func reportClosed() {
        self.cancelReadIdleTimer()
        let reason = self.closeReason ?? .closedByServer
        // Observers first: the pool's shutdown may complete as soon as it hears of the last close.
        self.events.emit { $0.connectionClosed($1, reason: reason) }
        self.delegate.connectionClosed(self.connectionID, reason: reason)
    }

    private static func closeReason(for failure: HTTP1ConnectionStateMachine.Failure) -> ConnectionCloseReason {
        switch failure {
        case .closed: .closedByServer
        case .cancelled, .requestBody: .notReusable
        case .shutdown: .shutdown
        case .error(let error): Self.isPeerClose(error) ? .closedByServer : .error
        }
    }

    private func resumeReads() {
        let wasPaused = self.readsPaused
        self.readsPaused = false
        if wasPaused && self.isReadIdleClockRunning { self.startReadIdleClock() }
        if self.pendingRead {
            self.pendingRead = false
            self.context?.read()
        }
    }
}

// MARK: - Keep-Alive hint

extension HTTP1ClientHandler {
    /// The `timeout` parameter of a `Keep-Alive` field value such as "timeout=5, max=100", in seconds
    /// (RFC 2068 §19.7.1.1, still sent by Apache, nginx and Node). Nonsense is ignored.
    static func keepAliveTimeout(_ value: String) -> TimeAmount? {
        for parameter in value.split(separator: ",") {
            let parts = parameter.split(separator: "=", maxSplits: 1).map { part in
                String(part.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
            }
            guard parts.count == 2, parts[0].lowercased() == "timeout",
                let seconds = Int64(parts[1]), seconds >= 0, seconds < 1_000_000
            else { continue }
            return .seconds(seconds)
        }
        return nil
    }
}

// MARK: - Read-idle timeout and deadline

/// The request's deadline passed while it was on the connection.
struct RequestDeadlineExceeded: Error {}

/// The server sent nothing for the read-idle timeout.
struct ReadIdleTimeout: Error, CustomStringConvertible {
    var timeout: TimeAmount
    var description: String { "no data from the server for \(Double(self.timeout.nanoseconds) / 1e9) s" }
}

extension HTTP1ClientHandler {
    /// Whether silence from the server counts now: an exchange is on, its request is all on the socket,
    /// and its reader is not behind.
    fileprivate var isReadIdleClockRunning: Bool {
        self.tracker != nil && self.requestOnSocket && !self.readsPaused
    }

    /// Starts the read-idle clock from zero, scheduling a check unless one is pending already.
    fileprivate func startReadIdleClock() {
        guard let timeout = self.readIdleTimeout else { return }
        self.readIdleSince = .now()
        if self.readIdleTimer == nil {
            self.scheduleReadIdleCheck(in: timeout)
        }
    }

    private func scheduleReadIdleCheck(in delay: TimeAmount) {
        guard let context = self.context else { return }
        let generation = self.timerGeneration
        self.readIdleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            guard self.timerGeneration == generation else { return }
            self.readIdleTimer = nil
            self.readIdleCheck()
        }
    }

    /// Fails the exchange if the clock has run for the whole timeout; else checks again when it could.
    private func readIdleCheck() {
        guard let timeout = self.readIdleTimeout, self.isReadIdleClockRunning else { return }
        let idle = NIODeadline.now() - self.readIdleSince
        guard idle >= timeout else {
            self.scheduleReadIdleCheck(in: timeout - idle)
            return
        }
        self.closeReason = self.closeReason ?? .error
        // Fails the head or the body as if the connection broke, and closes it.
        self.run(self.machine.errorCaught(ReadIdleTimeout(timeout: timeout)))
    }

    /// Fails the exchange, as if the connection broke, when `deadline` comes.
    fileprivate func armDeadlineTimer(_ deadline: NIODeadline?) {
        self.deadlineTimer?.cancel()
        self.deadlineTimer = nil
        guard let deadline, let context = self.context else { return }
        let request = self.currentRequestID
        self.deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            guard self.tracker != nil, self.currentRequestID == request, self.deadlineTimer != nil else { return }
            self.deadlineTimer = nil
            self.closeReason = self.closeReason ?? .error
            self.run(self.machine.errorCaught(RequestDeadlineExceeded()))
        }
    }

    /// Drops the pending check, for a connection that is going away.
    fileprivate func cancelReadIdleTimer() {
        self.readIdleTimer?.cancel()
        self.readIdleTimer = nil
        self.timerGeneration &+= 1
    }
}

@available(*, unavailable)
extension HTTP1ClientHandler: Sendable {}
