import NIOConcurrencyHelpers
import NIOCore

/// What the producing connection does when the consumer of a body asks for more or goes away.
protocol ResponseBodyProducer: Sendable {
    /// The consumer drained the buffer below the low watermark: read from the socket again.
    func resumeReading(request: UInt64)
    /// The consumer stopped before the end (dropped the body, cancelled, or failed a size check):
    /// the rest of the response will never be read, so the connection cannot be reused.
    func abandon(request: UInt64)
}

/// The buffer between a connection (producer, on its event loop) and the code iterating a response
/// body (consumer, any task), with backpressure.
///
/// The producer yields buffers as they arrive. Once more than `highWatermark` bytes wait unread, the
/// producer is told to stop reading from the socket; once the consumer has drained them below
/// `lowWatermark`, it is told to resume. A consumer that goes away early makes the producer abandon the
/// response, which closes the connection (its remaining bytes would poison the next request).
final class ResponseBodyStream: Sendable {
    private enum Phase {
        /// The producer may yield more.
        case streaming
        /// The producer is done; `error` is `nil` for a complete body.
        case finished((any Error)?)
        /// The consumer is gone; yields are dropped.
        case abandoned
    }

    private struct State {
        /// The connection, until the body is finished or abandoned: a response kept after its body
        /// ended keeps nothing of the connection alive.
        var producer: (any ResponseBodyProducer)?
        var phase: Phase = .streaming
        var buffers = CircularBuffer<ByteBuffer>(initialCapacity: 4)
        var bufferedBytes = 0
        var waiter: ThrowingContinuation<ByteBuffer?>?
        var producerPaused = false
        var iteratorMade = false
    }

    private let state: NIOLockedValueBox<State>
    private let requestID: UInt64
    let highWatermark: Int
    let lowWatermark: Int
    let errorContext: (host: String, port: Int)
    /// The request's record, so that failures found by the consumer carry it.
    let tracker: RequestTracker?

    init(
        producer: any ResponseBodyProducer,
        requestID: UInt64,
        host: String,
        port: Int,
        tracker: RequestTracker? = nil,
        highWatermark: Int = 256 * 1024,
        lowWatermark: Int = 64 * 1024
    ) {
        self.state = NIOLockedValueBox(State(producer: producer))
        self.requestID = requestID
        self.errorContext = (host, port)
        self.tracker = tracker
        self.highWatermark = highWatermark
        self.lowWatermark = lowWatermark
    }

    // MARK: - Producer (event loop)

    /// Hands a buffer to the consumer. Returns `false` when the producer should stop reading until
    /// ``ResponseBodyProducer/resumeReading(request:)``.
    func yield(_ buffer: ByteBuffer) -> Bool {
        let (waiter, keepReading): (ThrowingContinuation<ByteBuffer?>?, Bool) = self.state.withLockedValue {
            state in
            guard case .streaming = state.phase else { return (nil, true) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, true)
            }
            state.buffers.append(buffer)
            state.bufferedBytes += buffer.readableBytes
            if state.bufferedBytes >= self.highWatermark {
                state.producerPaused = true
                return (nil, false)
            }
            return (nil, true)
        }
        waiter?.resume(returning: buffer)
        return keepReading
    }

    /// Ends the body: `nil` for a complete body, or the error that cut it short.
    func finish(_ error: (any Error)?) {
        let waiter: ThrowingContinuation<ByteBuffer?>? = self.state.withLockedValue { state in
            guard case .streaming = state.phase else { return nil }
            state.phase = .finished(error)
            state.producer = nil
            if state.buffers.isEmpty, let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            return nil
        }
        if let waiter {
            if let error { waiter.resume(throwing: error) } else { waiter.resume(returning: nil) }
        }
    }

    // MARK: - Consumer (any task)

    /// Marks the start of the one iteration a body allows; `false` if it was already iterated.
    func claimIteration() -> Bool {
        self.state.withLockedValue { state in
            defer { state.iteratorMade = true }
            return !state.iteratorMade
        }
    }

    /// The next buffer, `nil` at the end of a complete body.
    ///
    /// - Throws: the error that cut the body short, or ``AgentError/Code/cancelled`` if the calling task
    ///   is cancelled (the response is then abandoned).
    func next() async throws -> ByteBuffer? {
        let (immediate, resume) = self.state.withLockedValue { self.takeBuffered(&$0) }
        resume?.resumeReading(request: self.requestID)
        switch immediate {
        case .value(let buffer): return buffer
        case .failure(let error): throw self.withTiming(error)
        case .wait: break
        }
        return try await withTaskCancellationHandler {
            try await withThrowingContinuation { (continuation: ThrowingContinuation<ByteBuffer?>) in
                typealias Decision = (
                    Immediate, abandon: (any ResponseBodyProducer)?, resume: (any ResponseBodyProducer)?
                )
                let (outcome, mustAbandon, mustResume): Decision = self.state.withLockedValue { state in
                    if Task.isCancelled {
                        // The cancellation handler may have run before the continuation was stored.
                        return (.failure(self.cancelledError), self.abandonLocked(&state), nil)
                    }
                    // A yield may have filled the buffer (and paused the producer) since the first look.
                    let (immediate, resume) = self.takeBuffered(&state)
                    if case .wait = immediate {
                        state.waiter = continuation
                    }
                    return (immediate, nil, resume)
                }
                mustAbandon?.abandon(request: self.requestID)
                mustResume?.resumeReading(request: self.requestID)
                switch outcome {
                case .value(let buffer): continuation.resume(returning: buffer)
                case .failure(let error): continuation.resume(throwing: self.withTiming(error))
                case .wait: break
                }
            }
        } onCancel: {
            let (waiter, mustAbandon): (ThrowingContinuation<ByteBuffer?>?, (any ResponseBodyProducer)?) =
                self.state.withLockedValue { state in
                    guard let waiter = state.waiter else { return (nil, nil) }
                    state.waiter = nil
                    return (waiter, self.abandonLocked(&state))
                }
            mustAbandon?.abandon(request: self.requestID)
            waiter?.resume(throwing: self.withTiming(self.cancelledError))
        }
    }

    /// Ends the request's record with `error` if nothing else has, and attaches it. Called outside the
    /// stream's lock: the tracker calls observers.
    private func withTiming(_ error: any Error) -> any Error {
        guard let agentError = error as? AgentError, agentError.timing == nil, let tracker = self.tracker else {
            return error
        }
        return tracker.fail(agentError)
    }

    /// The consumer will not read further (dropped, or stopped on purpose). A body already complete
    /// costs nothing; otherwise the connection is abandoned.
    func consumerGone() {
        let mustAbandon = self.state.withLockedValue { self.abandonLocked(&$0) }
        mustAbandon?.abandon(request: self.requestID)
    }

    /// Whether the producer has finished (successfully or not).
    var isFinished: Bool {
        self.state.withLockedValue { state in
            if case .finished = state.phase { return true }
            return false
        }
    }

    // MARK: - Helpers

    private enum Immediate {
        case value(ByteBuffer?)
        case failure(any Error)
        case wait
    }

    /// Takes the next buffered value under the lock. The second result is the producer to resume, if
    /// it is to be resumed.
    private func takeBuffered(_ state: inout State) -> (Immediate, (any ResponseBodyProducer)?) {
        if let buffer = state.buffers.popFirst() {
            state.bufferedBytes -= buffer.readableBytes
            var resume: (any ResponseBodyProducer)?
            if state.producerPaused && state.bufferedBytes < self.lowWatermark {
                state.producerPaused = false
                resume = state.producer
            }
            return (.value(buffer), resume)
        }
        switch state.phase {
        case .streaming:
            return (.wait, nil)
        case .finished(nil):
            return (.value(nil), nil)
        case .finished(let error?):
            return (.failure(error), nil)
        case .abandoned:
            return (.failure(self.cancelledError), nil)
        }
    }

    /// Drops what is buffered and, if the producer is still streaming, moves to `.abandoned`.
    /// Returns the producer if it must be told to abandon the response; the stream lets go of it.
    private func abandonLocked(_ state: inout State) -> (any ResponseBodyProducer)? {
        state.buffers.removeAll()
        state.bufferedBytes = 0
        guard case .streaming = state.phase else { return nil }
        state.phase = .abandoned
        defer { state.producer = nil }
        return state.producer
    }

    private var cancelledError: AgentError {
        AgentError(
            code: .cancelled,
            phase: .responseBody,
            host: self.errorContext.host,
            port: self.errorContext.port,
            message: "reading the response body was cancelled"
        )
    }
}
