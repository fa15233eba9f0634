package import NIOCore

/// Fired inbound once the handshake has completed, carrying what it negotiated.
package struct TLSHandshakeCompletedEvent: Sendable {
    package var info: TLSConnectionInfo
}

/// A SwiftNIO handler that runs TLS over the channel: ciphertext below it, plaintext above it.
///
/// The handler drives an ``SSLConnectionBox`` through Swift results and never calls OpenSSL itself.
/// It starts the handshake as soon as the channel is active, holds plaintext writes until the
/// handshake is done, sends `close_notify` when the channel is closed, and reports a transport close
/// without the peer's `close_notify` as ``TLSFailure/Kind-swift.enum/uncleanShutdown``, fired as an
/// error before `channelInactive`, so that a body framed by the end of the connection can be told
/// from one cut short. A fatal alert from the peer before any application data is reported as
/// ``TLSFailure/Kind-swift.enum/rejectedAfterHandshake`` and kept in ``fatalFailure``.
package final class TLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    /// Legal moves: idle → handshaking → active → closing → closed; any state → closed.
    private enum State {
        /// Added, channel not active yet.
        case idle
        /// ClientHello sent (or awaited, as a server).
        case handshaking
        /// Application data flows.
        case active
        /// We sent `close_notify` and asked the channel to close.
        case closing
        /// The channel is gone or the connection failed.
        case closed
    }

    private struct BufferedWrite {
        var data: ByteBuffer
        var promise: EventLoopPromise<Void>?
    }

    private let connection: SSLConnectionBox
    private var state: State = .idle
    private var handshakePromise: EventLoopPromise<TLSConnectionInfo>?
    /// Plaintext written before the handshake completed.
    private var bufferedWrites: [BufferedWrite] = []
    /// Promises of plaintext already encrypted, completed when its ciphertext is written out.
    private var unflushedPromises: [EventLoopPromise<Void>] = []
    private var receivedCloseNotify = false
    /// Whether any plaintext came from the peer; a fatal alert before it is a rejected handshake.
    private var receivedApplicationData = false

    /// The error that ended the connection after the handshake (a fatal alert, a bad record), if one did.
    ///
    /// It is also fired down the pipeline, but a connector that has not added its handlers yet would
    /// miss it, and once the channel closes the handler is out of the pipeline: keep a reference to the
    /// handler and read this on the event loop.
    package private(set) var fatalFailure: TLSFailure?

    /// - Parameters:
    ///   - connection: the OpenSSL connection this handler drives; owned by the handler from now on.
    ///   - handshakePromise: completed with the negotiated parameters, or failed with a ``TLSFailure``
    ///     (or the transport's error) if the handshake does not complete.
    package init(connection: SSLConnectionBox, handshakePromise: EventLoopPromise<TLSConnectionInfo>? = nil) {
        self.connection = connection
        self.handshakePromise = handshakePromise
    }

    // MARK: - Lifecycle

    package func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            self.beginHandshake(context: context)
        }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        self.failPendingWrites(ChannelError.ioOnClosedChannel)
        self.handshakePromise?.fail(ChannelError.ioOnClosedChannel)
        self.handshakePromise = nil
    }

    package func channelActive(context: ChannelHandlerContext) {
        self.beginHandshake(context: context)
        context.fireChannelActive()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        let previous = self.state
        self.state = .closed
        switch previous {
        case .idle, .handshaking:
            self.failHandshakePromise(
                TLSFailure(kind: .closedDuringHandshake, reason: "the connection closed during the TLS handshake")
            )
        case .active:
            if !self.receivedCloseNotify {
                context.fireErrorCaught(
                    TLSFailure(
                        kind: .uncleanShutdown,
                        reason: "the connection closed without a TLS close_notify"
                    )
                )
            }
        case .closing, .closed:
            break
        }
        self.failPendingWrites(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .handshaking = self.state {
            // A transport error (e.g. ECONNRESET) during the handshake ends it.
            self.failHandshakePromise(error)
        }
        context.fireErrorCaught(error)
    }

    // MARK: - Inbound

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let ciphertext = self.unwrapInboundIn(data)
        switch self.state {
        case .idle:
            self.beginHandshake(context: context)
        case .handshaking, .active:
            break
        case .closing, .closed:
            return  // nothing more is delivered once we started closing
        }
        self.connection.feed(ciphertext)
        self.advance(context: context)
    }

    private func advance(context: ChannelHandlerContext) {
        if case .handshaking = self.state {
            switch self.connection.handshake() {
            case .wantRead:
                self.writeOutput(context: context, promises: [])
                return
            case .failed(let failure):
                self.failHandshake(context: context, failure: failure)
                return
            case .complete:
                self.completeHandshake(context: context)
            }
        }
        self.readPlaintext(context: context)
    }

    private func readPlaintext(context: ChannelHandlerContext) {
        while case .active = self.state {
            switch self.connection.read(allocator: context.channel.allocator) {
            case .data(let plaintext):
                self.receivedApplicationData = true
                context.fireChannelRead(self.wrapInboundOut(plaintext))
            case .wantRead:
                // Reading can produce output (e.g. a KeyUpdate reply); send it along.
                self.flushOutput(context: context)
                return
            case .closeNotify:
                self.receivedCloseNotify = true
                self.closeGracefully(context: context, promise: nil)
                return
            case .failed(var failure):
                // In TLS 1.3 the server checks the client's certificate after the client's handshake is
                // done, so a refusal arrives here: tell it from a failure in mid-conversation.
                if !self.receivedApplicationData && failure.openSSLErrors.contains(where: { $0.receivedAlert != nil }) {
                    failure.kind = .rejectedAfterHandshake
                }
                self.state = .closed
                self.fatalFailure = self.fatalFailure ?? failure
                self.writeOutput(context: context, promises: [])
                context.fireErrorCaught(failure)
                context.close(promise: nil)
                return
            }
        }
    }

    // MARK: - Outbound

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plaintext = self.unwrapOutboundIn(data)
        switch self.state {
        case .idle, .handshaking:
            self.bufferedWrites.append(BufferedWrite(data: plaintext, promise: promise))
        case .active:
            self.encrypt(context: context, plaintext, promise: promise)
        case .closing, .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    package func flush(context: ChannelHandlerContext) {
        if case .active = self.state {
            self.flushOutput(context: context)
        }
        // Before the handshake completes, buffered writes are flushed once it does.
    }

    package func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all else {
            context.close(mode: mode, promise: promise)
            return
        }
        switch self.state {
        case .active:
            self.closeGracefully(context: context, promise: promise)
        case .idle, .handshaking:
            self.state = .closed
            self.failHandshakePromise(ChannelError.ioOnClosedChannel)
            self.failPendingWrites(ChannelError.ioOnClosedChannel)
            context.close(mode: .all, promise: promise)
        case .closing, .closed:
            context.close(mode: .all, promise: promise)
        }
    }

    // MARK: - Helpers

    private func beginHandshake(context: ChannelHandlerContext) {
        guard case .idle = self.state else { return }
        self.state = .handshaking
        switch self.connection.handshake() {
        case .wantRead:
            self.writeOutput(context: context, promises: [])
        case .failed(let failure):
            self.failHandshake(context: context, failure: failure)
        case .complete:
            self.completeHandshake(context: context)
        }
    }

    private func completeHandshake(context: ChannelHandlerContext) {
        self.state = .active
        let info = self.connection.connectionInfo
        // Our last handshake flight (e.g. the client Finished) goes out before any application data.
        self.writeOutput(context: context, promises: [])
        let writes = self.bufferedWrites
        self.bufferedWrites = []
        // Callbacks on the handshake promise run inline: a connector may add handlers here.
        let promise = self.handshakePromise
        self.handshakePromise = nil
        promise?.succeed(info)
        context.fireUserInboundEventTriggered(TLSHandshakeCompletedEvent(info: info))
        for write in writes {
            self.encrypt(context: context, write.data, promise: write.promise)
        }
        if !writes.isEmpty {
            self.flushOutput(context: context)
        }
    }

    private func encrypt(context: ChannelHandlerContext, _ plaintext: ByteBuffer, promise: EventLoopPromise<Void>?) {
        switch self.connection.write(plaintext) {
        case .complete, .wantRead:
            if let promise {
                self.unflushedPromises.append(promise)
            }
        case .failed(let failure):
            promise?.fail(failure)
            self.state = .closed
            self.fatalFailure = self.fatalFailure ?? failure
            context.fireErrorCaught(failure)
            context.close(promise: nil)
        }
    }

    private func flushOutput(context: ChannelHandlerContext) {
        let promises = self.unflushedPromises
        self.unflushedPromises = []
        self.writeOutput(context: context, promises: promises)
    }

    /// Writes whatever ciphertext OpenSSL produced and completes `promises` when it is on the wire.
    private func writeOutput(context: ChannelHandlerContext, promises: [EventLoopPromise<Void>]) {
        guard let output = self.connection.takeOutput(allocator: context.channel.allocator) else {
            for promise in promises { promise.succeed() }
            return
        }
        context.writeAndFlush(self.wrapOutboundOut(output), promise: Self.combine(promises, on: context.eventLoop))
    }

    private func closeGracefully(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        self.state = .closing
        self.connection.shutdown()
        self.failPendingWrites(ChannelError.ioOnClosedChannel)
        self.writeOutput(context: context, promises: [])
        context.close(mode: .all, promise: promise)
    }

    private func failHandshake(context: ChannelHandlerContext, failure: TLSFailure) {
        self.state = .closed
        // Send the alert OpenSSL queued, so the peer learns why.
        self.writeOutput(context: context, promises: [])
        self.failHandshakePromise(failure)
        self.failPendingWrites(failure)
        context.fireErrorCaught(failure)
        context.close(promise: nil)
    }

    private func failHandshakePromise(_ error: any Error) {
        let promise = self.handshakePromise
        self.handshakePromise = nil
        promise?.fail(error)
    }

    private func failPendingWrites(_ error: any Error) {
        let writes = self.bufferedWrites
        let promises = self.unflushedPromises
        self.bufferedWrites = []
        self.unflushedPromises = []
        for write in writes { write.promise?.fail(error) }
        for promise in promises { promise.fail(error) }
    }

    private static func combine(_ promises: [EventLoopPromise<Void>], on loop: any EventLoop) -> EventLoopPromise<Void>?
    {
        switch promises.count {
        case 0:
            return nil
        case 1:
            return promises[0]
        default:
            let combined = loop.makePromise(of: Void.self)
            combined.futureResult.whenComplete { result in
                for promise in promises { promise.completeWith(result) }
            }
            return combined
        }
    }
}

@available(*, unavailable)
extension TLSHandler: Sendable {}
