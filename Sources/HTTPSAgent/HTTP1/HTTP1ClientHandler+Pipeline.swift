import NIOCore
import NIOHTTP1

extension HTTP1ClientHandler {
    /// Adds the HTTP/1.1 handlers to a connection's pipeline, above whatever carries its bytes (TLS, or
    /// the socket itself for `http`), ending with this handler.
    ///
    /// One place for the order, so that the connector and the response-path fuzz harness
    /// (`Tests/Fuzz`) run exactly the same pipeline: the byte guard sees the raw bytes before the
    /// decoder, which drops leftover bytes at a close and the informational (1xx) heads.
    func addHTTPHandlers(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        let decoder = HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes, informationalResponseStrategy: .drop)
        try pipeline.addHandler(ResponseByteGuard(watch: self.watch))
        try pipeline.addHandler(HTTPRequestEncoder())
        try pipeline.addHandler(ByteToMessageHandler(decoder))
        try pipeline.addHandler(self)
    }
}
