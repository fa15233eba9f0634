import NIOConcurrencyHelpers
package import NIOCore
import NIOPosix

/// A TCP relay on loopback in front of a real TLS server, for handshakes and records cut short by that
/// server's own bytes.
///
/// Each connection it accepts gets its own connection to the server. What the client sends is passed on
/// whole; what the server sends is passed on up to the relay's ``Cut``, counted in TLS records (a 5-byte
/// header whose last two bytes give the length of the body that follows), and then the client's
/// connection is closed (a FIN, no `close_notify`: the relay has no keys). It also counts the
/// connections it accepted, for servers that keep no count of their own (`openssl s_server`).
package final class CuttingRelay: Sendable {
    /// Where the server's bytes stop.
    package enum Cut: Sendable, Hashable {
        /// Nowhere: the relay only counts connections.
        case never
        /// After the server's first `records` complete records, e.g. after the ServerHello (1).
        case afterRecords(Int)
        /// In the first record that starts once `afterBytes` bytes have been passed on: its header and
        /// `keeping` bytes of its body (at most all but one) go through, then the cut. With `afterBytes`
        /// 0, the very first record (the ServerHello) is cut; with more than the handshake takes, a
        /// record of application data is.
        case insideRecord(afterBytes: Int, keeping: Int)
    }

    private let channel: any Channel
    private let acceptedCount: NIOLockedValueBox<Int>
    private let cutCount: NIOLockedValueBox<Int>
    private let serverPort: NIOLockedValueBox<Int>
    /// The port the relay listens on.
    package let port: Int

    private init(
        channel: any Channel,
        accepted: NIOLockedValueBox<Int>,
        cuts: NIOLockedValueBox<Int>,
        serverPort: NIOLockedValueBox<Int>
    ) {
        self.channel = channel
        self.acceptedCount = accepted
        self.cutCount = cuts
        self.serverPort = serverPort
        self.port = channel.localAddress?.port ?? 0
    }

    /// Sends the connections accepted from now on to the server at 127.0.0.1:`serverPort`: another
    /// server behind the same host and port, as far as a client can tell.
    package func relay(to serverPort: Int) {
        self.serverPort.withLockedValue { $0 = serverPort }
    }

    /// Connections accepted so far.
    package var accepted: Int { self.acceptedCount.withLockedValue { $0 } }

    /// Connections cut so far: the cut point was reached and the client's connection closed there.
    package var cuts: Int { self.cutCount.withLockedValue { $0 } }

    /// Starts a relay on 127.0.0.1 to the server at 127.0.0.1:`serverPort`.
    package static func start(
        to serverPort: Int,
        cut: Cut,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> CuttingRelay {
        let accepted = NIOLockedValueBox(0)
        let cuts = NIOLockedValueBox(0)
        let target = NIOLockedValueBox(serverPort)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { client in
                accepted.withLockedValue { $0 += 1 }
                // What the client sends before the server's side is connected waits in here.
                let toServer = Forwarder(cutter: nil, cuts: cuts)
                do {
                    try client.pipeline.syncOperations.addHandler(toServer)
                } catch {
                    return client.eventLoop.makeFailedFuture(error)
                }
                ClientBootstrap(group: client.eventLoop)
                    .channelInitializer { server in
                        server.eventLoop.makeCompletedFuture {
                            let toClient = Forwarder(cutter: RecordCutter(cut), cuts: cuts)
                            toClient.connected(to: client)
                            try server.pipeline.syncOperations.addHandler(toClient)
                        }
                    }
                    .connect(host: "127.0.0.1", port: target.withLockedValue { $0 })
                    .assumeIsolated()
                    .whenComplete { result in
                        switch result {
                        case .success(let server):
                            toServer.connected(to: server)
                            client.closeFuture.whenComplete { _ in server.close(promise: nil) }
                            server.closeFuture.whenComplete { _ in client.close(promise: nil) }
                        case .failure:
                            client.close(promise: nil)
                        }
                    }
                return client.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return CuttingRelay(channel: channel, accepted: accepted, cuts: cuts, serverPort: target)
    }

    /// Stops listening. Relayed connections end when either of their sides closes.
    package func shutdown() async throws {
        try await self.channel.close()
    }
}

/// Passes what one side reads to the other (both on one event loop), through a cutter if it has one.
private final class Forwarder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var peer: (any Channel)?
    /// Bytes read before the peer was connected.
    private var pending: [ByteBuffer] = []
    private var cutter: RecordCutter?
    private let cuts: NIOLockedValueBox<Int>

    init(cutter: RecordCutter?, cuts: NIOLockedValueBox<Int>) {
        self.cutter = cutter
        self.cuts = cuts
    }

    /// From now on, what is read goes to `peer`, starting with what waited.
    func connected(to peer: any Channel) {
        self.peer = peer
        for bytes in self.pending {
            peer.write(bytes, promise: nil)
        }
        self.pending = []
        peer.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = self.unwrapInboundIn(data)
        guard let peer = self.peer else {
            self.pending.append(bytes)
            return
        }
        guard var cutter = self.cutter else {
            peer.writeAndFlush(bytes, promise: nil)
            return
        }
        let (forward, cutNow) = cutter.take(&bytes)
        self.cutter = cutter
        guard cutNow else {
            if forward.readableBytes > 0 { peer.writeAndFlush(forward, promise: nil) }
            return
        }
        self.cuts.withLockedValue { $0 += 1 }
        peer.writeAndFlush(forward).whenComplete { _ in peer.close(promise: nil) }
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Decides how many of a server's bytes pass, record by record.
private struct RecordCutter {
    let cut: CuttingRelay.Cut
    /// Bytes passed on so far.
    private var passed = 0
    /// Complete records passed on so far.
    private var records = 0
    /// The header of the record being read, while it is incomplete.
    private var header: [UInt8] = []
    /// Body bytes of the current record still to come, once its header is complete.
    private var remainingBody = 0
    /// Body bytes of the current record to pass before the cut, when the cut falls in it.
    private var bodyBeforeCut: Int?
    private var done = false

    init(_ cut: CuttingRelay.Cut) {
        self.cut = cut
    }

    /// What of `bytes` to pass on, and whether the cut comes right after it (`true` once only).
    mutating func take(_ bytes: inout ByteBuffer) -> (forward: ByteBuffer, cutNow: Bool) {
        var forward = ByteBuffer()
        guard !self.done else { return (forward, false) }
        while !self.done && bytes.readableBytes > 0 {
            let atBoundary = self.remainingBody == 0 && self.header.isEmpty
            if atBoundary, case .afterRecords(let count) = self.cut, self.records >= count {
                self.done = true
            } else if self.remainingBody == 0 {
                if atBoundary, case .insideRecord(let afterBytes, let keeping) = self.cut, self.passed >= afterBytes {
                    self.bodyBeforeCut = keeping
                }
                let byte = bytes.readInteger(as: UInt8.self)!
                forward.writeInteger(byte)
                self.passed += 1
                self.header.append(byte)
                if self.header.count == 5 {
                    self.remainingBody = Int(self.header[3]) << 8 | Int(self.header[4])
                    self.header = []
                    // At most all but one byte of the body, so that the record really is cut short.
                    self.bodyBeforeCut = self.bodyBeforeCut.map { max(0, min($0, self.remainingBody - 1)) }
                    if self.bodyBeforeCut == 0 { self.done = true }
                    if self.remainingBody == 0 { self.records += 1 }
                }
            } else {
                let count = min(bytes.readableBytes, self.remainingBody, self.bodyBeforeCut ?? Int.max)
                var slice = bytes.readSlice(length: count)!
                forward.writeBuffer(&slice)
                self.passed += count
                self.remainingBody -= count
                if let limit = self.bodyBeforeCut {
                    self.bodyBeforeCut = limit - count
                    if limit == count { self.done = true }
                }
                if self.remainingBody == 0 { self.records += 1 }
            }
        }
        return (forward, self.done)
    }
}
