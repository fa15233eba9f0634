import Foundation
package import HTTPSAgentTLS
import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix

/// A raw TCP server on loopback that misbehaves on purpose, for failure tests.
///
/// With TLS options it runs a real TLS handshake first, and the behaviour applies to what is inside:
/// the bytes it scripts are sent as application data, and its closes send `close_notify` unless an
/// answer says otherwise (``ScriptedAnswer/withoutCloseNotify``).
package final class ScriptedTCPServer: Sendable {
    /// What the server does with each connection.
    package enum Behavior: Sendable {
        /// Accepts and never sends a byte (a TLS handshake or response that never comes).
        case acceptAndHang
        /// Accepts and never reads nor sends: once the socket buffers fill, the client's writes stall.
        case acceptAndNeverRead
        /// Closes the connection as soon as it is accepted.
        case closeOnAccept
        /// Waits for the first bytes, sends `reply`, then closes if `close`.
        case reply(String, close: Bool)
        /// Answers the first request on each connection with `response` (which should keep the
        /// connection alive), then reads the second request, writes `partial` (default: nothing) and
        /// closes: the keep-alive race, made deterministic.
        case answerFirstThenDropSecond(response: String, partial: String = "")
        /// Answers every request with `response`, and 50 ms after the first answer writes `unsolicited`
        /// to the then idle connection.
        case answerThenSendUnsolicited(response: String, unsolicited: String)
        /// Answers each request (a head without a body) with what `answer` returns for its path, on any
        /// connection; a request for a path it has no answer for (`nil`) gets a 404 with keep-alive.
        case answer(@Sendable (_ path: String) -> ScriptedAnswer?)
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

    /// Starts a server on `host` and `port` (0: an ephemeral port).
    ///
    /// - Parameter tls: server options to run TLS with; `nil` (the default) speaks plain TCP.
    package static func start(
        _ behavior: Behavior,
        tls: TLSContextOptions? = nil,
        host: String = "127.0.0.1",
        port: Int = 0,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> ScriptedTCPServer {
        let accepted = NIOLockedValueBox(0)
        let requests = NIOLockedValueBox(0)
        let context = try tls.map { try SSLContextBox(options: $0) }
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                if let context {
                    do {
                        let connection = try SSLConnectionBox(context: context, serverHostname: nil)
                        try channel.pipeline.syncOperations.addHandler(TLSHandler(connection: connection))
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                switch behavior {
                case .acceptAndHang:
                    return channel.eventLoop.makeSucceededVoidFuture()
                case .acceptAndNeverRead:
                    return channel.setOption(.autoRead, value: false)
                case .closeOnAccept:
                    return channel.close()
                case .reply(let text, let close):
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ReplyHandler(reply: text, close: close))
                    }
                case .answerFirstThenDropSecond(let response, let partial):
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            RequestCountingHandler(
                                response: response,
                                requests: requests,
                                second: .drop(partial: partial)
                            )
                        )
                    }
                case .answer(let answer):
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ScriptedAnswerHandler(answer: answer, requests: requests)
                        )
                    }
                case .answerThenSendUnsolicited(let response, let unsolicited):
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            RequestCountingHandler(
                                response: response,
                                requests: requests,
                                second: .answerAndSendUnsolicited(unsolicited)
                            )
                        )
                    }
                }
            }
            .bind(host: host, port: port)
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

private final class RequestCountingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Second {
        /// Write `partial` and close instead of answering the second request.
        case drop(partial: String)
        /// Answer every request; 50 ms after the first answer, write these bytes unasked.
        case answerAndSendUnsolicited(String)
    }

    let response: String
    let requests: NIOLockedValueBox<Int>
    let second: Second
    var received = ""
    var answered = 0

    init(response: String, requests: NIOLockedValueBox<Int>, second: Second) {
        self.response = response
        self.requests = requests
        self.second = second
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += String(buffer: self.unwrapInboundIn(data))
        // Requests without bodies end at the blank line after their head.
        while let end = self.received.range(of: "\r\n\r\n") {
            self.received.removeSubrange(..<end.upperBound)
            self.requests.withLockedValue { $0 += 1 }
            self.answered += 1
            switch self.second {
            case .drop(let partial) where self.answered > 1:
                let written = context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: partial)))
                written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            case .drop, .answerAndSendUnsolicited:
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: self.response)), promise: nil)
            }
            if case .answerAndSendUnsolicited(let bytes) = self.second, self.answered == 1 {
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(50)) {
                    context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: bytes)), promise: nil)
                }
            }
        }
    }
}

/// The bytes a ``ScriptedTCPServer`` sends for one request: written as `pieces`, each flushed on its own
/// and 20 ms after the previous one (so that they most likely arrive in separate reads), then the
/// connection closed if `close`.
package struct ScriptedAnswer: Sendable {
    package var pieces: [String]
    package var close: Bool
    /// With `close`, over TLS: shut the TCP connection down without sending `close_notify` first, as a
    /// crashed server or a middlebox cutting the connection would (over plain TCP, a FIN either way).
    package var withoutCloseNotify = false

    /// Bytes written at once.
    package init(_ bytes: String, close: Bool = false) {
        self.pieces = [bytes]
        self.close = close
    }

    package init(pieces: [String], close: Bool = false) {
        self.pieces = pieces
        self.close = close
    }

    /// `bytes` written at once, then the TCP connection shut without `close_notify`.
    package static func closingWithoutCloseNotify(_ bytes: String) -> ScriptedAnswer {
        var answer = ScriptedAnswer(bytes, close: true)
        answer.withoutCloseNotify = true
        return answer
    }
}

private final class ScriptedAnswerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let answer: @Sendable (String) -> ScriptedAnswer?
    let requests: NIOLockedValueBox<Int>
    var received = ""
    /// Set once an answer closes the connection: later requests on it are not answered.
    var closing = false

    init(answer: @escaping @Sendable (String) -> ScriptedAnswer?, requests: NIOLockedValueBox<Int>) {
        self.answer = answer
        self.requests = requests
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += String(buffer: self.unwrapInboundIn(data))
        while !self.closing, let end = self.received.range(of: "\r\n\r\n") {
            let head = self.received[..<end.lowerBound]
            self.received.removeSubrange(..<end.upperBound)
            self.requests.withLockedValue { $0 += 1 }
            // "GET /path HTTP/1.1": the second word.
            let path = head.split(separator: " ", maxSplits: 2).dropFirst().first.map(String.init) ?? "/"
            let answer =
                self.answer(path) ?? ScriptedAnswer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            self.closing = answer.close
            self.write(answer.pieces[...], answer: answer, context: context)
        }
    }

    private func write(_ pieces: ArraySlice<String>, answer: ScriptedAnswer, context: ChannelHandlerContext) {
        guard let piece = pieces.first else {
            // The TLS handler sends close_notify on a full close and passes a half-close straight down.
            if answer.close { context.close(mode: answer.withoutCloseNotify ? .output : .all, promise: nil) }
            return
        }
        let written = context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: piece)))
        let rest = pieces.dropFirst()
        written.assumeIsolated().whenComplete { _ in
            if rest.isEmpty {
                self.write(rest, answer: answer, context: context)
            } else {
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(20)) {
                    self.write(rest, answer: answer, context: context)
                }
            }
        }
    }
}

/// A loopback port where connects are refused, for as long as the process runs.
///
/// The port stays bound to a socket that never listens, so that the kernel answers every SYN with a
/// reset, and no other socket can take the port meanwhile. (A port bound and closed again could be
/// handed to another test's server in a parallel run, which then answers instead of refusing.)
package func unusedLoopbackPort() async throws -> Int {
    try ReservedPorts.reserve()
}

private enum ReservedPorts {
    /// The sockets that hold the ports; never closed.
    private static let sockets = NIOLockedValueBox<[Int32]>([])

    static func reserve() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ReservationFailed() }
        guard let port = bindToFreeLoopbackPort(descriptor) else {
            close(descriptor)
            throw ReservationFailed()
        }
        self.sockets.withLockedValue { $0.append(descriptor) }
        return port
    }

    struct ReservationFailed: Error, CustomStringConvertible {
        var description: String { "could not bind a loopback port to refuse connects on" }
    }
}
