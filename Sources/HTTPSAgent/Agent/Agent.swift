import HTTPSAgentTLS
public import HTTPTypes
public import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A keep-alive HTTPS client with per-origin connection pools.
///
/// An Agent opens connections on demand, keeps them open after a response, and hands them to later
/// requests to the same origin (scheme, host, port and TLS configuration). At
/// ``Configuration/maxSocketsPerHost`` requests wait in FIFO order. Share one Agent across a service.
///
/// ```swift
/// let agent = Agent(configuration: .init(maxSocketsPerHost: 8))
/// let request = try HTTPRequest(method: .get, url: "https://example.com/")
/// let response = try await agent.execute(request)
/// let body = try await response.body.collect(upTo: 1 << 20)
/// print(response.status, response.connection.isReused)
/// await agent.shutdown()
/// ```
///
/// Call ``shutdown()`` when done: it fails waiting requests, closes every connection and returns when
/// they are closed.
public final class Agent: Sendable {
    /// The configuration the Agent was created with.
    public let configuration: Configuration
    /// The observers told of every request and connection.
    public let observers: [any AgentObserver]
    let pool: ConnectionPool
    /// Request ids, unique in the process so that an observer shared by several Agents can key on them.
    private static let lastRequestID = Atomic<UInt64>(0)

    /// Creates an Agent.
    ///
    /// - Parameters:
    ///   - configuration: pool limits and TLS settings.
    ///   - eventLoopGroup: where connections run; `nil` (the default) uses NIO's shared
    ///     `MultiThreadedEventLoopGroup.singleton`.
    ///   - observers: told of every request's and connection's lifecycle events, e.g. a metrics
    ///     adapter. With none (the default) events cost nothing.
    public init(
        configuration: Configuration = Configuration(),
        eventLoopGroup: (any EventLoopGroup)? = nil,
        observers: [any AgentObserver] = []
    ) {
        self.configuration = configuration
        self.observers = observers
        let connector = Connector(
            group: eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton,
            resolver: SystemResolver(),
            contexts: SSLContextCache(),
            connectTimeout: TimeAmount(configuration.connectTimeout),
            tlsHandshakeTimeout: TimeAmount(configuration.tlsHandshakeTimeout),
            readIdleTimeout: configuration.readIdleTimeout.map { TimeAmount($0) },
            responseHeadLimits: configuration.responseHeadLimits,
            sessionCache: configuration.sessionCache
        )
        self.pool = ConnectionPool(limits: configuration.poolLimits, connector: connector, observers: observers)
    }

    /// Sends a request and returns once the response head has arrived.
    ///
    /// The body streams afterwards: read it from ``AgentResponse/body``. The connection returns to the
    /// pool when the whole body has been received. ``AgentResponse/timing`` is complete from then on.
    ///
    /// When a reused connection turns out to have been closed by the server before any response byte
    /// came back, the request is sent again on another connection if that is safe: if no byte of it was
    /// written, or if it is idempotent (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`, or any request
    /// with an `Idempotency-Key` header) and its body is in memory. A failure on a new connection is never
    /// retried, nor is anything after response bytes arrived.
    ///
    /// Redirects are followed as ``Configuration/redirects`` says (by default up to 10, never from
    /// `https` to `http`); see ``RedirectPolicy`` and ``execute(_:body:observer:redirects:)``.
    ///
    /// - Parameters:
    ///   - request: method, scheme, authority, path and header fields.
    ///   - body: the request body, if any.
    ///   - observer: told of this request's events, and of the events of a connection dialled for it,
    ///     in addition to the Agent's ``observers``.
    /// - Returns: the response head, its streamed body, and facts about the connection.
    /// - Throws: ``AgentError``, naming the host and the phase that failed, with the request's
    ///   ``AgentError/timing``.
    public func execute(
        _ request: HTTPRequest,
        body: RequestBody? = nil,
        observer: (any AgentObserver)? = nil
    ) async throws -> AgentResponse {
        try await self.execute(request, body: body, observer: observer, redirects: self.configuration.redirects)
    }

    /// Sends one request, a hop of a redirect chain after `chain`'s hops if given, and returns its
    /// response with the tracker that records it.
    func send(
        _ request: HTTPRequest,
        body: RequestBody?,
        observers: [any AgentObserver],
        start: NIODeadline,
        chain: RedirectChain?
    ) async throws -> (AgentResponse, RequestTracker) {
        var prepared = try PreparedRequest(
            request,
            body: body,
            agentKeepAlive: self.configuration.keepAlive,
            decompression: self.configuration.decompression
        )
        // The whole chain shares one deadline: it runs from the first hop's start.
        prepared.deadline = self.configuration.requestTimeout.map { (chain?.startedAt ?? start) + TimeAmount($0) }
        let target = prepared.target
        let id = Self.lastRequestID.wrappingAdd(1, ordering: .relaxed).newValue
        let tracker = RequestTracker(
            request: ObservedRequest(
                id: id,
                method: request.method,
                scheme: target.scheme.rawValue,
                host: target.host,
                port: target.port,
                path: request.path ?? "/"
            ),
            observers: observers,
            now: start,
            chain: chain
        )
        do {
            var response = try await self.execute(prepared, tracker: tracker)
            response.url = RequestURL.string(of: request)
            return (response, tracker)
        } catch let error as AgentError {
            throw tracker.fail(error)
        }
    }

    private func execute(_ prepared: PreparedRequest, tracker: RequestTracker) async throws -> AgentResponse {
        tracker.queued()
        if Task.isCancelled {
            throw AgentError(
                code: .cancelled,
                phase: .request,
                host: prepared.target.host,
                port: prepared.target.port,
                message: "the task was cancelled before the request started"
            )
        }
        let origin = Origin(
            scheme: prepared.target.scheme,
            host: prepared.target.host,
            port: prepared.target.port,
            tls: prepared.target.scheme == .https ? self.configuration.tls : nil
        )
        // A pooled connection can turn out to be closed by the server (it idled out) just as we use
        // it. If nothing reached the server, or the request is idempotent and no response byte came
        // back, sending it again is safe. It is sent again once, on a new connection: another pooled one
        // has idled as long and may be closed too. A failure on a new connection is never retried.
        var attempts = 0
        while true {
            attempts += 1
            let lease = try await self.lease(origin, tracker: tracker, deadline: prepared.deadline, fresh: attempts > 1)
            if Task.isCancelled {
                // Cancelled while the lease was being granted: hand the connection back unused rather
                // than send a request nobody waits for.
                self.pool.connectionReturnedUnused(lease.connection.id)
                throw AgentError(
                    code: .cancelled,
                    phase: .poolWait,
                    host: origin.host,
                    port: origin.port,
                    message: "the request was cancelled while waiting for a connection"
                )
            }
            let info = ConnectionInfo(lease: lease)
            tracker.acquired(lease.connection, reused: lease.reused, info: info, now: .now())
            do {
                let received = try await lease.connection.execute(prepared, id: lease.requestID, tracker: tracker)
                return AgentResponse(received, connection: info, tracker: tracker, decoding: prepared.decoding)
            } catch var error as AgentError where lease.reused && error.code == .connectionClosed {
                // The second lease is fresh, so a reused connection fails here at most once.
                if prepared.isSafeToResend(after: error) {
                    tracker.retrying()
                    continue
                }
                if error.requestMayHaveBeenSent {
                    error.message += "; not sent again: \(prepared.whyNotResendable)"
                }
                throw error
            }
        }
    }

    /// Sends a `GET` for `url` and returns the response.
    ///
    /// - Parameter url: an absolute `https` or `http` URL.
    /// - Throws: ``AgentError``.
    public func get(_ url: String) async throws -> AgentResponse {
        try await self.execute(HTTPRequest(method: .get, url: url))
    }

    /// A snapshot of every origin's sockets and waiters.
    public var stats: AgentStats {
        let origins = self.pool.snapshot.map { origin, host in
            AgentStats.OriginStats(
                origin: origin.description,
                tls: origin.tls,
                connecting: host.connecting.count,
                active: host.leased.count,
                free: host.idle.count,
                closing: host.closing.count,
                waiting: host.waiters.count
            )
        }
        return AgentStats(origins: origins.sorted { $0.origin < $1.origin })
    }

    /// Fails waiting and running requests with ``AgentError/Code/shutdown``, closes every connection,
    /// and returns once all are closed. Later requests fail at once.
    public func shutdown() async {
        await self.pool.shutdown()
    }
}

extension ConnectionInfo {
    init(lease: Lease) {
        let connection = lease.connection
        self.init(
            id: connection.id,
            isReused: lease.reused,
            remoteAddress: connection.remoteIP,
            remotePort: connection.remotePort,
            tls: connection.tls
        )
    }
}

extension AgentResponse {
    init(_ received: ReceivedHead, connection: ConnectionInfo, tracker: RequestTracker, decoding: Decompression?) {
        let head = received.head
        var fields = HTTPFields()
        fields.reserveCapacity(head.headers.count)
        for (name, value) in head.headers {
            if let fieldName = HTTPField.Name(name) {
                fields.append(HTTPField(name: fieldName, value: value))
            }
        }
        let status = HTTPResponse.Status(code: Int(head.status.code), reasonPhrase: head.status.reasonPhrase)
        var inflation: ResponseBody.Inflation?
        var decodedEncoding: String?
        // Decode only what this Agent asked for, and only a body that can have bytes (not HEAD, 204, 304).
        if let decoding, received.bodyLength != 0, head.status.code != 206, let encoding = fields[.contentEncoding],
            let format = Decompression.format(contentEncoding: encoding)
        {
            inflation = ResponseBody.Inflation(format: format, limits: decoding)
            fields[.contentEncoding] = nil
            fields[.contentLength] = nil
            decodedEncoding = format == .gzip ? "gzip" : "deflate"
        }
        self.init(
            head: HTTPResponse(status: status, headerFields: fields),
            body: ResponseBody(
                stream: received.body,
                expectedLength: inflation == nil ? received.bodyLength : nil,
                inflation: inflation
            ),
            connection: connection,
            timingSource: .live(tracker),
            url: ""
        )
        self.decodedContentEncoding = decodedEncoding
    }
}
