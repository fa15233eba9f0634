import NIOCore

/// When each step of opening a connection ended, on NIO's monotonic clock. Kept by the connection so
/// that the request it is handed to can place those steps on its own timeline.
struct ConnectionTimeline: Sendable, Hashable {
    /// When the dial began (DNS lookup about to start).
    var dialStart: NIODeadline
    var dnsEnd: NIODeadline?
    var connectEnd: NIODeadline?
    var tlsEnd: NIODeadline?
    /// Whether the connection needs a TLS handshake.
    var expectsTLS: Bool
}

/// The observers told about one connection's events, and how to name the connection to them.
///
/// With no observer installed, every call is a check of an empty array.
struct ConnectionObservers: Sendable {
    let observers: [any AgentObserver]
    let connection: ObservedConnection

    var isEmpty: Bool { self.observers.isEmpty }

    /// No observers.
    static let none = ConnectionObservers(
        observers: [],
        connection: ObservedConnection(id: 0, scheme: "", host: "", port: 0)
    )

    @inline(__always)
    func emit(_ event: (any AgentObserver, ObservedConnection) -> Void) {
        for observer in self.observers {
            event(observer, self.connection)
        }
    }
}

/// Counts the bytes a connection reads from and writes to its socket. First in the pipeline, so TLS
/// record overhead is included. Event-loop only.
final class ByteCounter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private(set) var received = 0
    private(set) var sent = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.received += self.unwrapInboundIn(data).readableBytes
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.sent += self.unwrapOutboundIn(data).readableBytes
        context.write(data, promise: promise)
    }
}

@available(*, unavailable)
extension ByteCounter: Sendable {}
