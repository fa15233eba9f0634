public import HTTPTypes

/// Receives the lifecycle events of an Agent's requests and connections: for logs, metrics and traces.
///
/// Every method has an empty default, so an observer implements only what it needs. Install observers
/// on the Agent (``Agent/init(configuration:eventLoopGroup:observers:)``, for every request and
/// connection) or on one request
/// (``Agent/execute(_:body:observer:)``, for that request and the connection it dials).
///
/// Methods run synchronously, never while the Agent holds a lock, mostly on the connection's event
/// loop: keep them quick and non-blocking (hand slow work to a task of your own). An observer may call
/// back into the Agent, e.g. read ``Agent/stats`` or start a request.
///
/// The order of one request's events is fixed: ``requestQueued(_:)``, then the connection events of a
/// dial if it needed one, ``connectionAcquired(_:connection:idleTime:)``, ``requestHeadWritten(_:)``,
/// ``requestBodyWritten(_:bytes:)``, ``firstResponseByte(_:)``, ``responseHeadReceived(_:status:)``,
/// ``responseBodyFinished(_:bytes:)`` and ``requestFinished(_:timing:)``; or, at any point after
/// ``requestQueued(_:)``, ``requestFailed(_:error:timing:)``. Exactly one of the last two ends every
/// request.
///
/// Each hop of a redirect chain is a request of its own, with its own ``ObservedRequest/id`` and its own
/// record (see <doc:Redirects>). When the Agent follows a redirect, the hop ends as its discarded body
/// does (``requestFinished(_:timing:)``, or ``requestFailed(_:error:timing:)`` for a body too long to
/// read), then ``requestRedirected(_:response:next:)`` tells of the redirect, and the next hop starts with
/// its own ``requestQueued(_:)``. A redirect the Agent refuses (too many, a loop, `https` to `http`) ends
/// its hop normally; the caller gets the error.
public protocol AgentObserver: Sendable {
    /// The request is waiting for a connection (free, new, or the next one released).
    func requestQueued(_ request: ObservedRequest)
    /// The request has a connection.
    ///
    /// - Parameters:
    ///   - request: the request.
    ///   - connection: the connection; ``ConnectionInfo/isReused`` says whether it was open before.
    ///   - idleTime: how long a reused connection sat free in the pool; `nil` for a new one.
    func connectionAcquired(_ request: ObservedRequest, connection: ConnectionInfo, idleTime: Duration?)

    /// A new connection is being opened: its host name is about to be resolved.
    func dnsStarted(_ connection: ObservedConnection)
    /// The host name resolved to `addresses`, in the order they will be tried.
    func dnsFinished(_ connection: ObservedConnection, addresses: [String])
    /// A TCP connect to `address` started. With several addresses, attempts may overlap (Happy
    /// Eyeballs).
    func connectStarted(_ connection: ObservedConnection, address: String)
    /// A TCP connect to `address` ended; `failure` describes why it failed, `nil` if it connected.
    func connectFinished(_ connection: ObservedConnection, address: String, failure: String?)
    /// The TLS handshake started; `offeringSession` tells whether a cached session is offered.
    func tlsStarted(_ connection: ObservedConnection, offeringSession: Bool)
    /// The TLS handshake completed; ``TLSInfo/sessionResumed`` tells whether it resumed a session.
    func tlsFinished(_ connection: ObservedConnection, tls: TLSInfo)
    /// The connection is open and ready for requests: exactly once for every connection that is later
    /// reported closed, and never for one that failed to open.
    func connectionEstablished(_ connection: ObservedConnection, info: ConnectionInfo)
    /// Opening the connection failed (DNS, connect or TLS), or was abandoned at shutdown.
    func connectionFailed(_ connection: ObservedConnection, error: AgentError)
    /// The connection closed, for `reason`.
    func connectionClosed(_ connection: ObservedConnection, reason: ConnectionCloseReason)

    /// The request head was written to the connection.
    func requestHeadWritten(_ request: ObservedRequest)
    /// The last byte of the request body was written; `bytes` is the body's length (0 without a body).
    func requestBodyWritten(_ request: ObservedRequest, bytes: Int)
    /// The first byte of the response arrived.
    func firstResponseByte(_ request: ObservedRequest)
    /// The response head arrived.
    func responseHeadReceived(_ request: ObservedRequest, status: HTTPResponse.Status)
    /// The last byte of the response body arrived; `bytes` is the body's length.
    func responseBodyFinished(_ request: ObservedRequest, bytes: Int)
    /// The request completed: its body was received in full. `timing` is final.
    func requestFinished(_ request: ObservedRequest, timing: RequestTiming)
    /// The request failed, at any point from the queue to the body's last byte. `timing` holds the
    /// milestones it reached.
    func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming)
    /// The response was a redirect the Agent follows: its body has been discarded (the request has
    /// ended), and `next` is sent now, as a new request.
    ///
    /// - Parameters:
    ///   - request: the hop that was redirected.
    ///   - response: the redirect's status and header fields, `Location` included.
    ///   - next: the request the Agent sends next: the method, URL and header fields it will carry
    ///     (credentials included when kept), before the fields the Agent adds (`Host`, framing,
    ///     `Accept-Encoding`).
    func requestRedirected(_ request: ObservedRequest, response: HTTPResponse, next: HTTPRequest)

    /// An origin's pool changed: a connection was leased, freed, opened or closed, or a request started
    /// or stopped waiting. Only observers installed on the Agent receive it.
    func poolChanged(_ pool: AgentStats.OriginStats)
}

extension AgentObserver {
    public func requestQueued(_ request: ObservedRequest) {}
    public func connectionAcquired(_ request: ObservedRequest, connection: ConnectionInfo, idleTime: Duration?) {}
    public func dnsStarted(_ connection: ObservedConnection) {}
    public func dnsFinished(_ connection: ObservedConnection, addresses: [String]) {}
    public func connectStarted(_ connection: ObservedConnection, address: String) {}
    public func connectFinished(_ connection: ObservedConnection, address: String, failure: String?) {}
    public func tlsStarted(_ connection: ObservedConnection, offeringSession: Bool) {}
    public func tlsFinished(_ connection: ObservedConnection, tls: TLSInfo) {}
    public func connectionEstablished(_ connection: ObservedConnection, info: ConnectionInfo) {}
    public func connectionFailed(_ connection: ObservedConnection, error: AgentError) {}
    public func connectionClosed(_ connection: ObservedConnection, reason: ConnectionCloseReason) {}
    public func requestHeadWritten(_ request: ObservedRequest) {}
    public func requestBodyWritten(_ request: ObservedRequest, bytes: Int) {}
    public func firstResponseByte(_ request: ObservedRequest) {}
    public func responseHeadReceived(_ request: ObservedRequest, status: HTTPResponse.Status) {}
    public func responseBodyFinished(_ request: ObservedRequest, bytes: Int) {}
    public func requestFinished(_ request: ObservedRequest, timing: RequestTiming) {}
    public func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {}
    public func requestRedirected(_ request: ObservedRequest, response: HTTPResponse, next: HTTPRequest) {}
    public func poolChanged(_ pool: AgentStats.OriginStats) {}
}

/// The request an event is about.
public struct ObservedRequest: Sendable, Hashable {
    /// A number unique among the requests of every Agent in the process, in the order they started; use
    /// it to tie one request's events together.
    public var id: UInt64
    /// The request method.
    public var method: HTTPRequest.Method
    /// "https" or "http".
    public var scheme: String
    /// The host, as the request names it.
    public var host: String
    /// The port.
    public var port: Int
    /// The path and query.
    public var path: String

    /// Creates a request description, e.g. to drive an observer in a test.
    public init(id: UInt64, method: HTTPRequest.Method, scheme: String, host: String, port: Int, path: String) {
        self.id = id
        self.method = method
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path
    }
}

/// The connection an event is about.
public struct ObservedConnection: Sendable, Hashable {
    /// The connection's id, as in ``ConnectionInfo/id``.
    public var id: Int
    /// "https" or "http".
    public var scheme: String
    /// The host it connects to.
    public var host: String
    /// The port.
    public var port: Int

    /// Creates a connection description, e.g. to drive an observer in a test.
    public init(id: Int, scheme: String, host: String, port: Int) {
        self.id = id
        self.scheme = scheme
        self.host = host
        self.port = port
    }
}

/// Why a connection closed.
public struct ConnectionCloseReason: Sendable, Hashable, CustomStringConvertible {
    private enum Base: String, Sendable, Hashable {
        case idleTimeout
        case poolLimit
        case shutdown
        case notReusable
        case closedByServer
        case error
        case expired
    }

    private let base: Base

    private init(_ base: Base) { self.base = base }

    /// It sat free for longer than ``Agent/Configuration/idleTimeout``.
    public static let idleTimeout = ConnectionCloseReason(.idleTimeout)
    /// The pool had no room to keep it: ``Agent/Configuration/maxFreeSocketsPerHost`` or
    /// ``Agent/Configuration/maxTotalSockets``.
    public static let poolLimit = ConnectionCloseReason(.poolLimit)
    /// The Agent shut down.
    public static let shutdown = ConnectionCloseReason(.shutdown)
    /// Its last exchange left it unusable: `Connection: close`, a body delimited by the close, a
    /// cancelled request, or a body dropped before its end.
    public static let notReusable = ConnectionCloseReason(.notReusable)
    /// The server closed it.
    public static let closedByServer = ConnectionCloseReason(.closedByServer)
    /// An error on the connection: a malformed response, bytes while idle, a TLS error.
    public static let error = ConnectionCloseReason(.error)
    /// It reached ``Agent/Configuration/maxConnectionLifetime`` or
    /// ``Agent/Configuration/maxRequestsPerConnection``; it finished its last request first.
    public static let expired = ConnectionCloseReason(.expired)

    /// The reason's name, e.g. "idleTimeout".
    public var description: String { self.base.rawValue }
}
