public import NIOCore

/// The body of a request: bytes in memory or a stream of buffers.
///
/// ```swift
/// let upload = RequestBody.bytes(ByteBuffer(string: "{\"name\":\"value\"}"))
/// let streamed = RequestBody.stream(chunks, length: nil)   // sent with Transfer-Encoding: chunked
/// ```
public struct RequestBody: Sendable {
    /// Produces the chunks of a streamed body, one `next()` at a time, in the task that sends them.
    struct ChunkSource {
        let next: () async throws -> ByteBuffer?
    }

    enum Storage: Sendable {
        case buffer(ByteBuffer)
        case stream(length: Int?, makeSource: @Sendable () -> ChunkSource)
    }

    let storage: Storage

    /// The number of bytes the body will send, if known. An unknown length is sent chunked.
    public var length: Int? {
        switch self.storage {
        case .buffer(let buffer): buffer.readableBytes
        case .stream(let length, _): length
        }
    }

    /// A body sent from a buffer, with a `Content-Length`.
    public static func bytes(_ buffer: ByteBuffer) -> RequestBody {
        RequestBody(storage: .buffer(buffer))
    }

    /// A body sent from bytes, with a `Content-Length`.
    public static func bytes(_ bytes: some Sequence<UInt8>) -> RequestBody {
        var buffer = ByteBuffer()
        buffer.writeBytes(bytes)
        return RequestBody(storage: .buffer(buffer))
    }

    /// A body sent from a string's UTF-8 bytes, with a `Content-Length`.
    public static func string(_ text: String) -> RequestBody {
        RequestBody(storage: .buffer(ByteBuffer(string: text)))
    }

    /// A body read from an asynchronous sequence of buffers while the request is being sent.
    ///
    /// The sequence is iterated once, at the pace the connection accepts bytes. If it throws, the
    /// request fails with ``AgentError/Code/requestBodyFailed`` and the connection is closed.
    ///
    /// - Parameters:
    ///   - sequence: the chunks, in order.
    ///   - length: the total length if known (sent as `Content-Length`, and checked); `nil` sends the
    ///     body with `Transfer-Encoding: chunked`.
    public static func stream<Chunks: AsyncSequence & Sendable>(
        _ sequence: Chunks,
        length: Int?
    ) -> RequestBody where Chunks.Element == ByteBuffer {
        RequestBody(
            storage: .stream(
                length: length,
                makeSource: {
                    var iterator = sequence.makeAsyncIterator()
                    return ChunkSource(next: { try await iterator.next() })
                }
            )
        )
    }
}
