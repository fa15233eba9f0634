import Foundation
import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix

/// A raw TCP server on loopback that misbehaves on purpose, for failure tests.
package final class ScriptedTCPServer: Sendable {
    /// What the server does with each connection.
    package enum Behavior: Sendable {
        /// Accepts and never sends a byte (a TLS handshake or response that never comes).
        case acceptAndHang
        /// Closes the connection as soon as it is accepted.
        case closeOnAccept
        /// Waits for the first bytes, sends `reply`, then closes if `close`.
        case reply(String, close: Bool)
        /// Answers the first request on each connection with `response` (which should keep the
        /// connection alive), then reads the second request and closes without answering: the
        /// keep-alive race, made deterministic.
        case answerFirstThenDropSecond(response: String)
    }

    private let channel: any Channel
    private let acceptedCount: NIOLockedValueBox<Int>
    private let requestCount: NIOLockedValueBox<Int>
    package let port: Int

    private init(channel: any Channel, accepted: NIOLockedValueBox<Int>, requests: NIOLockedValueBox<Int>) {
        self.channel = channel
        self.acceptedCount = accepted
        self.requestCount = requests
        self.port = channel.localAddress?.port ?? 0
    }

    /// Connections accepted so far.
    package var accepted: Int { self.acceptedCount.withLockedValue { $0 } }

    /// Request heads received so far (for ``Behavior/answerFirstThenDropSecond(response:)``).
    package var requestsReceived: Int { self.requestCount.withLockedValue { $0 } }

    package static func start(
        _ behavior: Behavior,
        host: String = "127.0.0.1",
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> ScriptedTCPServer {
        let accepted = NIOLockedValueBox(0)
        let requests = NIOLockedValueBox(0)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                switch behavior {
                case .acceptAndHang:
                    return channel.eventLoop.makeSucceededVoidFuture()
                case .closeOnAccept:
                    return channel.close()
                case .reply(let text, let close):
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ReplyHandler(reply: text, close: close))
                    }
                case .answerFirstThenDropSecond(let response):
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            DropSecondHandler(response: response, requests: requests)
                        )
                    }
                }
            }
            .bind(host: host, port: 0)
            .get()
        return ScriptedTCPServer(channel: channel, accepted: accepted, requests: requests)
    }

    package func shutdown() async throws {
        try await self.channel.close()
    }
}

private final class ReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let reply: String
    let close: Bool
    var replied = false

    init(reply: String, close: Bool) {
        self.reply = reply
        self.close = close
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.replied else { return }
        self.replied = true
        let written = context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: self.reply)))
        if self.close {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

private final class DropSecondHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let response: String
    let requests: NIOLockedValueBox<Int>
    var received = ""
    var answered = 0

    init(response: String, requests: NIOLockedValueBox<Int>) {
        self.response = response
        self.requests = requests
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += String(buffer: self.unwrapInboundIn(data))
        // Requests without bodies end at the blank line after their head.
        while let end = self.received.range(of: "\r\n\r\n") {
            self.received.removeSubrange(..<end.upperBound)
            self.requests.withLockedValue { $0 += 1 }
            self.answered += 1
            if self.answered == 1 {
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: self.response)), promise: nil)
            } else {
                context.close(promise: nil)
                return
            }
        }
    }
}

/// A loopback port nothing listens on (bound, then closed).
package func unusedLoopbackPort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0)
        .get()
    let port = channel.localAddress?.port ?? 0
    try await channel.close()
    return port
}
