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
    public typealias Element = ByteBuffer

    /// Tells the stream when its last user is gone.
    final class Handle: Sendable {
        let stream: ResponseBodyStream

        init(_ stream: ResponseBodyStream) { self.stream = stream }

        deinit { self.stream.consumerGone() }
    }

    let handle: Handle
    /// The declared `Content-Length`, if any.
    public let expectedLength: Int?

    init(stream: ResponseBodyStream, expectedLength: Int?) {
        self.handle = Handle(stream)
        self.expectedLength = expectedLength
    }

    /// Iterates the body's buffers.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let handle: Handle
        let claimed: Bool

        /// The next buffer, or `nil` after the last.
        ///
        /// - Throws: ``AgentError`` if the connection failed before the body was complete, if the task
        ///   was cancelled, or if the body was already iterated.
        public mutating func next() async throws -> ByteBuffer? {
            guard self.claimed else {
                throw AgentError(
                    code: .bodyAlreadyConsumed,
                    phase: .responseBody,
                    host: self.handle.stream.errorContext.host,
                    port: self.handle.stream.errorContext.port,
                    message: "a response body can be iterated only once"
                )
            }
            return try await self.handle.stream.next()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(handle: self.handle, claimed: self.handle.stream.claimIteration())
    }

    /// Reads the whole body into one buffer.
    ///
    /// - Parameter maxBytes: the most bytes to accept. A body that declares a larger `Content-Length`
    ///   fails before anything is read.
    /// - Returns: the body's bytes.
    /// - Throws: ``AgentError`` with code ``AgentError/Code/responseBodyTooLarge`` when the body is longer
    ///   than `maxBytes` (its connection is closed), or any error of ``AsyncIterator/next()``.
    public func collect(upTo maxBytes: Int) async throws -> ByteBuffer {
        if let expected = self.expectedLength, expected > maxBytes {
            self.handle.stream.consumerGone()
            throw self.tooLarge(maxBytes)
        }
        var result = ByteBuffer()
        if let expected = self.expectedLength {
            result.reserveCapacity(expected)
        }
        var iterator = self.makeAsyncIterator()
        while var chunk = try await iterator.next() {
            guard result.readableBytes + chunk.readableBytes <= maxBytes else {
                self.handle.stream.consumerGone()
                throw self.tooLarge(maxBytes)
            }
            if result.readableBytes == 0 && result.capacity == 0 {
                result = chunk
            } else {
                result.writeBuffer(&chunk)
            }
        }
        return result
    }

    private func tooLarge(_ maxBytes: Int) -> AgentError {
        AgentError(
            code: .responseBodyTooLarge,
            phase: .responseBody,
            host: self.handle.stream.errorContext.host,
            port: self.handle.stream.errorContext.port,
            message: "the response body is larger than the \(maxBytes) bytes allowed"
        )
    }
}
