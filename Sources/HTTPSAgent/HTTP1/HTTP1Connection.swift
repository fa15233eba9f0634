import HTTPSAgentTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// One open connection (TCP, TLS if `https`, HTTP/1.1), as the pool and the request path see it.
///
/// Thread-safe: every call hops to the channel's event loop, where ``HTTP1ClientHandler`` does the work.
final class HTTP1Connection: Sendable {
    let id: Int
    let channel: any Channel
    let host: String
    let port: Int
    let tls: TLSInfo?
    /// The addresses and ports, formatted once for every request's facts and timing record.
    let remoteIP: String?
    let remotePort: Int?
    let localIP: String?
    let localPort: Int?
    /// When each step of opening it ended.
    let timeline: ConnectionTimeline
    private let handler: NIOLoopBound<HTTP1ClientHandler>
    private let lastReleased = NIOLockedValueBox<NIODeadline?>(nil)

    /// Wraps a channel whose pipeline already ends in `handler`. Must be called on the channel's event loop.
    init(
        id: Int,
        channel: any Channel,
        host: String,
        port: Int,
        tls: TLSInfo?,
        timeline: ConnectionTimeline,
        handler: HTTP1ClientHandler
    ) {
        self.id = id
        self.channel = channel
        self.host = host
        self.port = port
        self.tls = tls
        self.timeline = timeline
        self.remoteIP = channel.remoteAddress?.ipAddress
        self.remotePort = channel.remoteAddress?.port
        self.localIP = channel.localAddress?.ipAddress
        self.localPort = channel.localAddress?.port
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        handler.producer = BodyProducer(handler: self.handler)
    }

    var eventLoop: any EventLoop { self.channel.eventLoop }

    /// When the connection last became free, if it ever did.
    var idleSince: NIODeadline? { self.lastReleased.withLockedValue { $0 } }

    /// Notes that the connection became free at `now`.
    func markReleased(now: NIODeadline) {
        self.lastReleased.withLockedValue { $0 = now }
    }

    /// Sends `request` and waits for the response head.
    ///
    /// A streamed request body is read from its sequence only once the request head has been written,
    /// by a task of its own, so that a server answering before the upload ends (or answering while it
    /// reads, like an echo) gets its response read. That task ends with the exchange. Cancelling the
    /// calling task abandons the request and closes the connection.
    ///
    /// - Returns: the response head and the stream its body arrives on.
    /// - Throws: ``AgentError``; ``AgentError/requestMayHaveBeenSent`` is `false` when the connection was
    ///   closed before anything was written (and a streamed body was not read from).
    func execute(_ request: PreparedRequest, id requestID: UInt64, tracker: RequestTracker) async throws -> ReceivedHead
    {
        let head = self.eventLoop.makePromise(of: ReceivedHead.self)
        let started = self.eventLoop.makePromise(of: Void.self)
        let handler = self.handler
        self.eventLoop.execute {
            handler.value.startRequest(
                request,
                id: requestID,
                tracker: tracker,
                headPromise: head,
                startedPromise: started
            )
        }
        return try await withTaskCancellationHandler {
            try await started.futureResult.get()
            if case .stream(let length, let makeSource) = request.body?.storage {
                let upload = Task {
                    await self.sendBody(source: makeSource(), length: length, requestID: requestID)
                }
                self.eventLoop.execute { handler.value.attachUpload(upload, id: requestID) }
            }
            return try await head.futureResult.get()
        } onCancel: {
            self.eventLoop.execute { handler.value.abandon(id: requestID) }
        }
    }

    /// Streams the body. A failure to write means the connection ended; the head promise says how.
    private func sendBody(source: RequestBody.ChunkSource, length: Int?, requestID: UInt64) async {
        let handler = self.handler
        var sent = 0
        do {
            while let chunk = try await source.next() {
                if Task.isCancelled { return }  // the exchange ended
                sent += chunk.readableBytes
                if let length, sent > length {
                    self.failBody(requestID: requestID, self.lengthMismatch(declared: length, sent: sent, more: true))
                    return
                }
                guard chunk.readableBytes > 0 else { continue }
                // With a declared length the server may answer as soon as the last byte arrives, so the
                // request is marked complete in the same event-loop turn that writes that byte.
                let isLast = sent == length
                let written = self.eventLoop.makePromise(of: Void.self)
                self.eventLoop.execute {
                    handler.value.writeBodyPart(chunk, id: requestID, isLast: isLast, promise: written)
                }
                try await written.futureResult.get()
                if isLast { return }
            }
        } catch is ChannelError {
            return  // the connection is gone; the response head promise carries the reason
        } catch {
            if error is AgentError || error is CancellationError || Task.isCancelled { return }
            self.failBody(
                requestID: requestID,
                AgentError(
                    code: .requestBodyFailed,
                    phase: .requestWrite,
                    host: self.host,
                    port: self.port,
                    message: "the request body sequence threw",
                    requestMayHaveBeenSent: true,
                    underlying: String(describing: error)
                )
            )
            return
        }
        if let length, sent != length {
            self.failBody(requestID: requestID, self.lengthMismatch(declared: length, sent: sent, more: false))
            return
        }
        let finished = self.eventLoop.makePromise(of: Void.self)
        self.eventLoop.execute { handler.value.finishRequestBody(id: requestID, promise: finished) }
        try? await finished.futureResult.get()
    }

    private func failBody(requestID: UInt64, _ error: AgentError) {
        let handler = self.handler
        self.eventLoop.execute { handler.value.failRequestBody(id: requestID, error: error) }
    }

    private func lengthMismatch(declared: Int, sent: Int, more: Bool) -> AgentError {
        AgentError(
            code: .requestBodyLengthMismatch,
            phase: .requestWrite,
            host: self.host,
            port: self.port,
            message: more
                ? "the request body is longer than its declared length of \(declared) bytes"
                : "the request body has \(sent) bytes, not its declared \(declared)",
            requestMayHaveBeenSent: true
        )
    }

    /// Closes the connection. A request in flight fails with ``AgentError/Code/shutdown`` if `reason` is
    /// ``ConnectionCloseReason/shutdown``, else with ``AgentError/Code/cancelled``.
    func close(reason: ConnectionCloseReason) {
        let handler = self.handler
        self.eventLoop.execute { handler.value.closeConnection(reason: reason) }
    }
}

/// The body stream's way back to its connection, hopping to the event loop.
private struct BodyProducer: ResponseBodyProducer {
    let handler: NIOLoopBound<HTTP1ClientHandler>

    func resumeReading(request: UInt64) {
        let handler = self.handler
        handler.eventLoop.execute { handler.value.resumeReading(id: request) }
    }

    func abandon(request: UInt64) {
        let handler = self.handler
        handler.eventLoop.execute { handler.value.abandon(id: request) }
    }
}
