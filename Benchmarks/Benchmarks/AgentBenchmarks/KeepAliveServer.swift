import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A plain HTTP/1.1 server on 127.0.0.1 that answers every request with the same small body.
///
/// The library's test servers (`HTTPSAgentTestSupport`) have package access and cannot be used from
/// this package, so the benchmarks bring their own. It does as little as possible per request, so
/// that the client's share of each measurement stays large: the response head and body are built
/// once, every response carries a `Content-Length`, and connections stay open (HTTP/1.1 keep-alive,
/// handled by NIO's server pipeline). It counts the connections it accepts, so that a benchmark can
/// check that its requests really shared one connection.
final class KeepAliveServer: Sendable {
    /// The body of every response.
    static let body = "hello, benchmark\n"

    private let channel: any Channel
    private let accepted: NIOLockedValueBox<Int>

    /// The port the server listens on.
    let port: Int

    /// How many connections the server has accepted so far.
    var connectionsAccepted: Int { self.accepted.withLockedValue { $0 } }

    /// `http://127.0.0.1:<port>/`.
    var url: String { "http://127.0.0.1:\(self.port)/" }

    private init(channel: any Channel, accepted: NIOLockedValueBox<Int>) {
        self.channel = channel
        self.accepted = accepted
        self.port = channel.localAddress?.port ?? 0
    }

    /// Starts a server on `group`, bound to 127.0.0.1 on a free port.
    ///
    /// - Parameter group: the event loops the listening socket and its connections run on.
    /// - Throws: when the socket cannot be bound.
    static func start(on group: any EventLoopGroup) async throws -> KeepAliveServer {
        let accepted = NIOLockedValueBox(0)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(FixedResponseHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return KeepAliveServer(channel: channel, accepted: accepted)
    }

    /// Closes the listening socket. Open connections close when their event loop group shuts down.
    func stop() async {
        try? await self.channel.close()
    }
}

/// Answers each request, once its end has arrived, with `200 OK` and ``KeepAliveServer/body``.
private final class FixedResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private static let head: HTTPResponseHead = {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: String(KeepAliveServer.body.utf8.count))
        headers.add(name: "Content-Type", value: "text/plain")
        return HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
    }()

    private let body = ByteBuffer(string: KeepAliveServer.body)

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = self.unwrapInboundIn(data) else {
            return
        }
        context.write(self.wrapOutboundOut(.head(Self.head)), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(self.body))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}
