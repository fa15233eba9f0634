public import HTTPTypes
import NIOConcurrencyHelpers
public import NIOCore
import NIOHTTP1

// Probes for the micro-benchmarks in `Benchmarks/` (a separate package, which sees only public API).
//
// NOT API. Everything here is `@_spi(Benchmarking)`: for the Benchmarks package only, with no
// stability promise; it may change or go away in any release. Each probe sets up its state in its
// initialiser and then runs one hot-path operation of the library per call, through the library's own
// internal code (nothing is copied), so that a benchmark's measured loop holds only that operation.

/// Leases an idle pooled connection and releases it again through ``PoolStateMachine``, under a lock as
/// ``ConnectionPool`` takes it.
///
/// Not API: for the Benchmarks package only, with no stability promise.
///
/// The pool's decisions without the driver: no continuation, no effects, no timers. One origin
/// (`https://example.com:443`, the default ``TLSConfiguration``) with one established connection,
/// idle; the Agent's default limits (``Agent/Configuration``: a 30 s idle timeout, LIFO).
@_spi(Benchmarking)
public final class PoolStateMachineProbe: Sendable {
    private struct State {
        var machine: PoolStateMachine
        var nextRequestID: UInt64
    }

    private let state: NIOLockedValueBox<State>
    private let origin: Origin
    private let connection: Int

    /// Creates a pool whose one connection has carried a request and is idle.
    public init() {
        let configuration = Agent.Configuration()
        let origin = Origin(scheme: .https, host: "example.com", port: 443, tls: configuration.tls)
        var machine = PoolStateMachine(limits: configuration.poolLimits)
        let now = NIODeadline.now()
        guard case .createConnection(let id, _) = machine.leaseRequested(1, origin: origin, now: now).first else {
            preconditionFailure("an empty pool did not dial for its first request")
        }
        _ = machine.connectionEstablished(id, now: now)
        _ = machine.connectionReleased(id, now: now)
        self.state = NIOLockedValueBox(State(machine: machine, nextRequestID: 1))
        self.origin = origin
        self.connection = id
    }

    /// A new request leases the idle connection (`leaseRequested`), then releases it
    /// (`connectionReleased`): each event under the lock, with `now` read as ``ConnectionPool`` reads it.
    ///
    /// - Returns: whether the request got the idle connection.
    public func leaseAndRelease() -> Bool {
        let leased = self.state.withLockedValue { state in
            state.nextRequestID += 1
            return state.machine.leaseRequested(state.nextRequestID, origin: self.origin, now: .now())
        }
        let released = self.state.withLockedValue { state in
            state.machine.connectionReleased(self.connection, now: .now())
        }
        guard case .lease(self.connection, _, reused: true) = leased.first else { return false }
        return !released.isEmpty
    }
}

/// Leases an idle pooled connection and releases it again through an ``Agent``'s ``ConnectionPool``.
///
/// Not API: for the Benchmarks package only, with no stability promise.
///
/// The whole driver: the lock, the machine, the continuation the request waits on, the effects, and
/// cancelling and scheduling the connection's idle timer on its event loop. The pool cannot hold a
/// connection without a socket, so the initialiser opens one real connection with one request; no
/// byte goes over it while the probe runs.
@_spi(Benchmarking)
public final class ConnectionPoolProbe: Sendable {
    private let agent: Agent
    private let origin: Origin
    private let tracker: RequestTracker

    /// Creates an Agent with its default configuration and sends one `GET` to `url`, which leaves one
    /// connection idle in its pool.
    ///
    /// - Parameters:
    ///   - url: the URL of a server that keeps connections open.
    ///   - eventLoopGroup: the Agent's event loops.
    /// - Throws: ``AgentError`` if the request fails.
    public init(url: String, eventLoopGroup: any EventLoopGroup) async throws {
        let agent = Agent(eventLoopGroup: eventLoopGroup)
        let request = try HTTPRequest(method: .get, url: url)
        let target = try RequestTarget(request)
        self.origin = Origin(
            scheme: target.scheme,
            host: target.host,
            port: target.port,
            tls: target.scheme == .https ? agent.configuration.tls : nil
        )
        self.tracker = RequestTracker(
            request: ObservedRequest(
                id: 0,
                method: .get,
                scheme: target.scheme.rawValue,
                host: target.host,
                port: target.port,
                path: "/"
            ),
            observers: [],
            now: .now()
        )
        self.agent = agent
        let response = try await agent.execute(request)
        _ = try await response.body.collect(upTo: 1 << 20)
    }

    /// Leases the idle connection as `Agent.execute` does (``Agent/lease(_:tracker:deadline:)`` without a
    /// deadline), then releases it as the connection's handler does when a response has ended
    /// (``ConnectionPool/connectionReleased(_:keepAliveHint:)``).
    ///
    /// Call it on the connection's event loop, where the handler releases connections.
    ///
    /// - Returns: whether the lease reused the pooled connection.
    /// - Throws: ``AgentError`` if the lease fails.
    public func leaseAndRelease() async throws -> Bool {
        let lease = try await self.agent.lease(self.origin, tracker: self.tracker, deadline: nil, fresh: false)
        self.agent.pool.connectionReleased(lease.connection.id, keepAliveHint: nil)
        return lease.reused
    }

    /// Shuts the Agent down, closing the connection.
    public func shutdown() async {
        await self.agent.shutdown()
    }
}

/// Records one request's timing from start to end through a ``RequestTracker`` with no observers.
///
/// Not API: for the Benchmarks package only, with no stability promise.
///
/// The request is a `GET` on a reused TLS connection with a 2,200-byte response body.
@_spi(Benchmarking)
public final class RequestTrackerProbe: Sendable {
    private let lease: Lease
    private let requestIDs = NIOLockedValueBox<UInt64>(0)

    /// Creates the pooled connection the requests are recorded on.
    ///
    /// - Parameter channel: stands in for the connection's socket (its addresses become the
    ///   connection's); nothing is written to it. The connection's handler is added to its pipeline, as
    ///   the connector adds it, so that closing the channel lets the connection go. Call this on the
    ///   channel's event loop.
    /// - Throws: if the handler cannot be added.
    public init(channel: any Channel) throws {
        let now = NIODeadline.now()
        let handler = HTTP1ClientHandler(
            connectionID: 1,
            host: "example.com",
            port: 443,
            delegate: IgnoredConnectionEvents(),
            events: .none
        )
        try channel.pipeline.syncOperations.addHandler(handler)
        let connection = HTTP1Connection(
            id: 1,
            channel: channel,
            host: "example.com",
            port: 443,
            tls: TLSInfo(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", alpn: "http/1.1"),
            timeline: ConnectionTimeline(dialStart: now, dnsEnd: now, connectEnd: now, tlsEnd: now, expectsTLS: true),
            handler: handler
        )
        connection.markReleased(now: now)
        self.lease = Lease(connection: connection, requestID: 1, reused: true)
    }

    /// One request's record, event by event in the order the Agent and the connection's handler report
    /// them: the tracker's creation (with a request id from a lock, as `Agent` takes it), `queued`,
    /// `ConnectionInfo(lease:)` and `acquired`, `requestStarting`, `requestWritten`, `firstByte`,
    /// `responseHead`, `bytes`, `finished`; then the record the response hands out
    /// (``AgentResponse/timing``).
    ///
    /// - Returns: the finished record.
    public func record() -> RequestTiming {
        let id = self.requestIDs.withLockedValue { id in
            id += 1
            return id
        }
        let connection = self.lease.connection
        let tracker = RequestTracker(
            request: ObservedRequest(
                id: id,
                method: .get,
                scheme: "https",
                host: connection.host,
                port: connection.port,
                path: "/"
            ),
            observers: [],
            now: .now()
        )
        tracker.queued()
        let info = ConnectionInfo(lease: self.lease)
        tracker.acquired(connection, reused: true, info: info, now: .now())
        tracker.requestStarting(now: .now())
        tracker.requestWritten(bodyBytes: 0, now: .now())
        tracker.firstByte(now: .now())
        tracker.responseHead(.ok, now: .now())
        tracker.bytes(wireSent: 120, wireReceived: 2_400, bodyReceived: 2_200)
        tracker.finished(bodyBytes: 2_200, now: .now())
        return tracker.timing
    }
}

/// A delegate for a connection that is never used for an exchange.
private struct IgnoredConnectionEvents: HTTP1ConnectionDelegate {
    func connectionReleased(_ id: Int, keepAliveHint: TimeAmount?) {}
    func connectionClosed(_ id: Int, reason: ConnectionCloseReason) {}
}

/// Turns a request into bytes as a connection writes it: ``PreparedRequest`` (the checks, the header
/// fields and NIO's request head), then NIO's `HTTPRequestEncoder`, the encoder a connection's pipeline
/// has.
///
/// Not API: for the Benchmarks package only, with no stability promise.
///
/// Left out: the response decoder also sees each head on its way out (it queues the request's method
/// to parse the response), and with no responses that queue would only grow; and what comes after the
/// encoder (TLS, the socket).
@_spi(Benchmarking)
public final class RequestHeadProbe {
    private let request: HTTPRequest
    private let configuration: Agent.Configuration
    private let channel: any Channel

    /// Adds the encoder to `channel`'s pipeline.
    ///
    /// - Parameters:
    ///   - request: the request to encode, without a body.
    ///   - configuration: the Agent configuration whose keep-alive and decompression settings apply.
    ///   - channel: where the encoded bytes go, e.g. an `EmbeddedChannel` to read them back from. Call
    ///     this, and ``write()``, on its event loop.
    /// - Throws: if the encoder cannot be added.
    public init(
        request: HTTPRequest,
        configuration: Agent.Configuration = Agent.Configuration(),
        channel: any Channel
    )
        throws
    {
        self.request = request
        self.configuration = configuration
        self.channel = channel
        try channel.pipeline.syncOperations.addHandler(HTTPRequestEncoder())
    }

    /// Prepares the request and writes its head and end through the pipeline, as the connection's
    /// handler writes a request without a body, and flushes.
    ///
    /// The end is written with a promise, as the handler writes it (without the callback the handler
    /// adds to record the request as written; ``RequestTrackerProbe`` covers that record).
    ///
    /// - Throws: ``AgentError`` if the request is invalid.
    public func write() throws {
        let prepared = try PreparedRequest(
            self.request,
            body: nil,
            agentKeepAlive: self.configuration.keepAlive,
            decompression: self.configuration.decompression
        )
        let pipeline = self.channel.pipeline.syncOperations
        pipeline.write(NIOAny(HTTPClientRequestPart.head(prepared.head)), promise: nil)
        // The handler's promise for the end, through which it learns when the request reached the socket:
        // with one, the encoder passes a zero-length write down the pipeline.
        let written = self.channel.eventLoop.makePromise(of: Void.self)
        pipeline.writeAndFlush(NIOAny(HTTPClientRequestPart.end(nil)), promise: written)
    }
}
