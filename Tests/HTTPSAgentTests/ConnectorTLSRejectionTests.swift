import HTTPSAgentTLS
import HTTPSAgentTestSupport
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import HTTPSAgent

/// A TLS 1.3 server that requires a client certificate refuses a client without one only after the
/// client's side of the handshake is done, so its alert can land while the connection is being set up,
/// while it waits for its first request, or after that request was written. Each timing is forced here
/// with a server that holds the client's last handshake flight until told, and each must give the same
/// error.
@Suite("A TLS 1.3 refusal after the client's Finished, at every moment it can land", .timeLimit(.minutes(2)))
struct ConnectorTLSRejectionTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// Server options that require a client certificate issued by the test CA.
    private var serverOptions: TLSContextOptions {
        var options = environment.certificates.serverOptions()
        options.trustRoots = .pem(.bytes(Array(environment.certificates.caPEM.utf8)))
        return options
    }

    private func connector(beforeInstallingHTTP: (@Sendable (any Channel) async -> Void)? = nil) -> Connector {
        var connector = Connector(
            group: MultiThreadedEventLoopGroup.singleton,
            resolver: SystemResolver(),
            contexts: SSLContextCache(),
            connectTimeout: .seconds(10),
            tlsHandshakeTimeout: .seconds(10),
            sessionCache: nil
        )
        connector._testBeforeInstallingHTTP = beforeInstallingHTTP
        return connector
    }

    private func origin(_ server: GatedTLSServer) -> Origin {
        Origin(scheme: .https, host: "127.0.0.1", port: server.port, tls: environment.tls)
    }

    /// Dials and returns the connection, as the pool would get it.
    private func connect(_ connector: Connector, to server: GatedTLSServer) async throws -> HTTP1Connection {
        let box = NIOLockedValueBox<HTTP1Connection?>(nil)
        try await connector.connect(
            id: 1,
            origin: self.origin(server),
            delegate: IgnoringDelegate(),
            events: .none,
            established: { connection in box.withLockedValue { $0 = connection } }
        )
        return try #require(box.withLockedValue { $0 })
    }

    private func get(on connection: HTTP1Connection) async throws -> ReceivedHead {
        let request = HTTPRequest(method: .get, scheme: "https", authority: "127.0.0.1", path: "/")
        let tracker = RequestTracker(
            request: ObservedRequest(id: 1, method: .get, scheme: "https", host: "127.0.0.1", port: 0, path: "/"),
            observers: [],
            now: .now()
        )
        let prepared = try PreparedRequest(request, body: nil, agentKeepAlive: true)
        return try await connection.execute(prepared, id: 1, tracker: tracker)
    }

    /// The one error every timing must give.
    private func expectRefusal(_ error: any Error, port: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let error = error as? AgentError else {
            Issue.record("not an AgentError: \(error)", sourceLocation: sourceLocation)
            return
        }
        #expect(error.code == .tlsHandshakeFailed, "\(error)", sourceLocation: sourceLocation)
        #expect(error.phase == .tlsHandshake, "\(error)", sourceLocation: sourceLocation)
        #expect(error.tlsReason == "tlsv13 alert certificate required", "\(error)", sourceLocation: sourceLocation)
        #expect(
            error.description
                == "127.0.0.1:\(port): TLS handshake: the server rejected the handshake after our side completed "
                + "it: tlsv13 alert certificate required",
            sourceLocation: sourceLocation
        )
        #expect(!error.requestMayHaveBeenSent, sourceLocation: sourceLocation)
    }

    @Test func theAlertLandsBeforeTheHTTPHandlersAreAdded() async throws {
        let server = try await GatedTLSServer.start(self.serverOptions)
        // Held between the handshake and the HTTP handlers until the server's refusal has closed it.
        let connector = self.connector { channel in
            server.release()
            try? await channel.closeFuture.get()
        }
        await #expect {
            _ = try await self.connect(connector, to: server)
        } throws: { error in
            self.expectRefusal(error, port: server.port)
            return (error as? AgentError)?.dialTimeline?.tlsEnd != nil  // our side of the handshake did finish
        }
        try await server.shutdown()
    }

    @Test func theAlertLandsBeforeTheRequestIsWritten() async throws {
        let server = try await GatedTLSServer.start(self.serverOptions)
        let connection = try await self.connect(self.connector(), to: server)
        server.release()
        try await connection.channel.closeFuture.get()
        await #expect {
            _ = try await self.get(on: connection)
        } throws: { error in
            self.expectRefusal(error, port: server.port)
            return true
        }
        try await server.shutdown()
    }

    @Test func theAlertLandsAfterTheRequestWasWritten() async throws {
        let server = try await GatedTLSServer.start(self.serverOptions)
        let connection = try await self.connect(self.connector(), to: server)
        let sentByHandshake = try await Self.sent(on: connection.channel)
        let request = Task { try await self.get(on: connection) }
        // Once every byte the client sent, request included, is at the server, let it judge the handshake.
        var sent = sentByHandshake
        while sent == sentByHandshake || server.received < sent {
            try await Task.sleep(for: .milliseconds(5))
            sent = try await Self.sent(on: connection.channel)
        }
        server.release()
        await #expect {
            _ = try await request.value
        } throws: { error in
            self.expectRefusal(error, port: server.port)
            return true
        }
        try await server.shutdown()
    }

    @Test func thirtyRefusedRequestsAllFailAlikeAndNoneIsRetried() async throws {
        let server = try await TestHTTPServer.start(.init(tls: self.serverOptions))
        let agent = Agent(configuration: environment.configuration())
        for _ in 0..<30 {
            await #expect {
                _ = try await agent.get(server.url("/hello", host: "127.0.0.1"))
            } throws: { error in
                self.expectRefusal(error, port: server.port)
                return true
            }
        }
        await agent.shutdown()
        // One connection per request: a refused connection is not dialled again.
        #expect(server.stats.accepted == 30)
        #expect(server.stats.requests == 0)
        try await server.shutdown()
    }

    /// The bytes the client's socket has sent so far, TLS records included.
    private static func sent(on channel: any Channel) async throws -> Int {
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: ByteCounter.self).sent
        }.get()
    }
}

private struct IgnoringDelegate: HTTP1ConnectionDelegate {
    func connectionReleased(_ id: Int, keepAliveHint: TimeAmount?) {}
    func connectionClosed(_ id: Int, reason: ConnectionCloseReason) {}
}

/// A TLS server that stops reading what a client sends once it has answered the ClientHello, until
/// ``release()``: the client's Certificate and Finished, and whatever follows, wait for the test.
private final class GatedTLSServer: Sendable {
    private let channel: any Channel
    private let state: NIOLockedValueBox<(gates: [NIOLoopBound<Gate>], released: Bool)>
    private let counter: NIOLockedValueBox<Int>
    let port: Int

    private init(
        channel: any Channel,
        state: NIOLockedValueBox<(gates: [NIOLoopBound<Gate>], released: Bool)>,
        counter: NIOLockedValueBox<Int>
    ) {
        self.channel = channel
        self.state = state
        self.counter = counter
        self.port = channel.localAddress?.port ?? 0
    }

    static func start(_ options: TLSContextOptions) async throws -> GatedTLSServer {
        let context = try SSLContextBox(options: options)
        let state = NIOLockedValueBox<(gates: [NIOLoopBound<Gate>], released: Bool)>(([], false))
        let counter = NIOLockedValueBox(0)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let gate = Gate(counter: counter)
                    let released = state.withLockedValue { state in
                        state.gates.append(NIOLoopBound(gate, eventLoop: channel.eventLoop))
                        return state.released
                    }
                    if released { gate.holding = false }
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(gate)
                    try sync.addHandler(TLSHandler(connection: SSLConnectionBox(context: context, serverHostname: nil)))
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return GatedTLSServer(channel: channel, state: state, counter: counter)
    }

    /// Bytes received from clients so far, held ones included.
    var received: Int { self.counter.withLockedValue { $0 } }

    /// Lets every connection, now and later, read what it holds and all that follows.
    func release() {
        let gates = self.state.withLockedValue { state in
            state.released = true
            return state.gates
        }
        for gate in gates {
            gate.eventLoop.execute { gate.value.release() }
        }
    }

    func shutdown() async throws {
        try await self.channel.close()
    }

    /// First in the pipeline: passes bytes in until the server has written its first flight, then holds
    /// them.
    final class Gate: ChannelDuplexHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        private let counter: NIOLockedValueBox<Int>
        private var context: ChannelHandlerContext?
        private var answered = false
        var holding = true
        private var held: [ByteBuffer] = []

        init(counter: NIOLockedValueBox<Int>) {
            self.counter = counter
        }

        func handlerAdded(context: ChannelHandlerContext) {
            self.context = context
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            self.context = nil
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = self.unwrapInboundIn(data)
            self.counter.withLockedValue { $0 += bytes.readableBytes }
            if self.answered && self.holding {
                self.held.append(bytes)
            } else {
                context.fireChannelRead(data)
            }
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            self.answered = true
            context.write(data, promise: promise)
        }

        func release() {
            self.holding = false
            guard let context = self.context else { return }
            let held = self.held
            self.held = []
            for bytes in held {
                context.fireChannelRead(self.wrapInboundOut(bytes))
            }
            context.fireChannelReadComplete()
        }
    }
}
