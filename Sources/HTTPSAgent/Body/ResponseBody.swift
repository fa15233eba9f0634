public import NIOCore

/// The body of a response, streamed from the connection as an asynchronous sequence of buffers.
///
/// Iterate it once. Reading is paced by the consumer: when the consumer falls behind, the connection
/// stops reading from the socket. The connection goes back to the pool as soon as the last byte of the
/// body has been received and both sides allow keep-alive, even if buffered bytes are still unread.
///
/// Dropping a response (and every iterator of its body) before the body has been received completely
/// closes its connection: the bytes still on the way would otherwise be read as the next response.
///
/// ```swift
/// for try await chunk in response.body {
///     process(chunk)
/// }
/// // or, for small bodies:
/// let bytes = try await response.body.collect(upTo: 1 << 20)
/// ```
public struct ResponseBody: AsyncSequence, Sendable {
    /// Each element is a buffer of body bytes, in order.
    public typealias Element = ByteBuffer

    /// Tells the stream when its last user is gone.
    final class Handle: Sendable {
        let stream: ResponseBodyStream

        init(_ stream: ResponseBodyStream) { self.stream = stream }

        deinit { self.stream.consumerGone() }
    }

    /// How to decode a compressed body as it is read.
    struct Inflation: Sendable {
        var format: Inflater.Format
        var limits: Decompression
    }

    let handle: Handle
    let inflation: Inflation?
    /// The declared `Content-Length`, if any; `nil` for a body the Agent decodes.
    public let expectedLength: Int?

    init(stream: ResponseBodyStream, expectedLength: Int?, inflation: Inflation? = nil) {
        self.handle = Handle(stream)
        self.expectedLength = expectedLength
        self.inflation = inflation
    }

    /// A body that yields `bytes` and ends, e.g. to stand in for the Agent in a test.
    public init(bytes: ByteBuffer) {
        let stream = ResponseBodyStream(producer: NoProducer(), requestID: 0, host: "", port: 0)
        if bytes.readableBytes > 0 {
            _ = stream.yield(bytes)
        }
        stream.finish(nil)
        self.init(stream: stream, expectedLength: bytes.readableBytes)
    }

    /// Iterates the body's buffers.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let handle: Handle
        let claimed: Bool
        let inflater: Inflater?

        /// The next buffer, or `nil` after the last.
        ///
        /// - Throws: ``AgentError`` if the connection failed before the body was complete, if the task
        ///   was cancelled, or if the body was already iterated.
        public mutating func next() async throws -> ByteBuffer? {
            guard self.claimed else {
                var error = AgentError(
                    code: .bodyAlreadyConsumed,
                    phase: .responseBody,
                    host: self.handle.stream.errorContext.host,
                    port: self.handle.stream.errorContext.port,
                    message: "a response body can be iterated only once"
                )
                // A misuse of the body, not a failure of the request: the record as it stands.
                error.timing = self.handle.stream.tracker?.timing
                throw error
            }
            guard let inflater else {
                return try await self.handle.stream.next()
            }
            do {
                while true {
                    if inflater.needsInput {
                        guard let encoded = try await self.handle.stream.next() else { break }
                        inflater.feed(encoded)
                    }
                    let decoded = try inflater.produce(upTo: Self.largestDecodedPiece)
                    self.handle.stream.tracker?.decoded(bytes: inflater.decodedBytes)
                    if decoded.readableBytes > 0 { return decoded }
                }
                try inflater.finish()
                return nil
            } catch let failure as Inflater.Failure {
                self.handle.stream.tracker?.decoded(bytes: inflater.decodedBytes)
                throw self.fail(failure)
            }
        }

        /// The most decoded bytes one `next()` returns: a few encoded bytes can decode to megabytes.
        private static let largestDecodedPiece = 64 * 1024

        private func fail(_ failure: Inflater.Failure) -> AgentError {
            let context = self.handle.stream.errorContext
            let error = AgentError(
                code: failure.kind == .limitExceeded ? .decompressionLimitExceeded : .decompressionFailed,
                phase: .responseBody,
                host: context.host,
                port: context.port,
                message: failure.message
            )
            // Recorded first, so that observers hear of this failure rather than of the abandonment. A body
            // that had already arrived whole was reported finished: its record stays as it was.
            let failed = self.handle.stream.tracker?.fail(error) ?? error
            // The rest of the body will not be read: its connection cannot carry another request.
            self.handle.stream.consumerGone()
            return failed
        }
    }

    /// The iterator of the body's one iteration; a second one throws ``AgentError/Code/bodyAlreadyConsumed``.
    public func makeAsyncIterator() -> AsyncIterator {
        let claimed = self.handle.stream.claimIteration()
        return AsyncIterator(
            handle: self.handle,
            claimed: claimed,
            inflater: claimed ? self.inflation.map { Inflater(format: $0.format, limits: $0.limits) } : nil
        )
    }

    /// Reads the whole body into one buffer.
    ///
    /// - Parameter maxBytes: the most bytes to accept. A body that declares a larger `Content-Length`
    ///   fails before anything is read.
    /// - Returns: the body's bytes.
    /// - Throws: ``AgentError`` with code ``AgentError/Code/responseBodyTooLarge`` when the body is longer
    ///   than `maxBytes` (its connection is closed), or any error of ``AsyncIterator/next()``.
    public func collect(upTo maxBytes: Int) async throws -> ByteBuffer {
        // A ByteBuffer holds at most 4 GiB; a larger limit means "as much as fits".
        let limit = Swift.min(maxBytes, Int(UInt32.max))
        if let expected = self.expectedLength, expected > limit {
            let error = self.tooLarge(maxBytes)
            self.handle.stream.consumerGone()
            throw error
        }
        var result = ByteBuffer()
        if let expected = self.expectedLength {
            // The server's claim alone is not worth a large allocation; the buffer grows as bytes arrive.
            result.reserveCapacity(Swift.min(expected, Self.largestUpfrontReservation))
        }
        var iterator = self.makeAsyncIterator()
        while var chunk = try await iterator.next() {
            guard result.readableBytes + chunk.readableBytes <= limit else {
                let error = self.tooLarge(maxBytes)
                self.handle.stream.consumerGone()
                throw error
            }
            if result.readableBytes == 0 && result.capacity == 0 {
                result = chunk
            } else {
                result.writeBuffer(&chunk)
            }
        }
        return result
    }

    private static let largestUpfrontReservation = 1 << 20

    private func tooLarge(_ maxBytes: Int) -> AgentError {
        let error = AgentError(
            code: .responseBodyTooLarge,
            phase: .responseBody,
            host: self.handle.stream.errorContext.host,
            port: self.handle.stream.errorContext.port,
            message: "the response body is larger than the \(maxBytes) bytes allowed"
        )
        return self.handle.stream.tracker?.fail(error) ?? error
    }
}

/// The producer of a body that is complete from the start.
private struct NoProducer: ResponseBodyProducer {
    func resumeReading(request: UInt64) {}
    func abandon(request: UInt64) {}
}
