import NIOCore

extension Agent {
    /// How an ``Agent`` pools connections and sets up TLS.
    ///
    /// Limits count every socket the pool holds for a host: those still connecting, those carrying a
    /// request, the free ones, and those being closed.
    public struct Configuration: Sendable, Hashable {
        /// The most sockets open to one origin (scheme, host, port, TLS configuration) at once,
        /// connecting ones included. Requests beyond it wait in FIFO order. Node: `maxSockets`.
        /// Default: 10. Must be at least 1.
        public var maxSocketsPerHost: Int
        /// The most free (idle, kept-alive) sockets kept per origin; a socket released beyond it is
        /// closed. 0 keeps none. Node: `maxFreeSockets`. Default: 10.
        public var maxFreeSocketsPerHost: Int
        /// The most sockets open across all origins; `nil` (the default) means no global limit.
        /// At the limit, an idle socket of another origin is closed to make room. Node: `maxTotalSockets`.
        public var maxTotalSockets: Int?
        /// How long a free socket stays open unused before it is closed; `nil` keeps it until the server
        /// closes it. Node: the `timeout` of a free socket. Default: 30 seconds.
        public var idleTimeout: Duration?
        /// Which free socket the next request gets. Default: ``FreeSocketScheduling/lifo``. Node: `scheduling`.
        public var freeSocketScheduling: FreeSocketScheduling
        /// How long a connection may be used, from its handshake; `nil` (the default) for as long as it
        /// works. Each connection's limit is shortened by a random amount of up to 10 %, so that
        /// connections opened together (a fleet starting up, say) do not all reconnect at the same
        /// moment. A connection past its lifetime finishes the request it carries and is then closed
        /// (``ConnectionCloseReason/expired``); a free one is closed when its time comes. Useful to
        /// follow DNS changes and spread load behind a load balancer. Go: none; Envoy:
        /// `max_connection_duration`.
        public var maxConnectionLifetime: Duration?
        /// The most requests one connection carries; `nil` (the default) for no limit. After its last
        /// request the connection is closed (``ConnectionCloseReason/expired``).
        public var maxRequestsPerConnection: Int?
        /// Whether connections are kept open for further requests. `false` sends `Connection: close` and
        /// closes each connection after its response. Node: `keepAlive`. Default: `true`.
        public var keepAlive: Bool
        /// How long a request may wait for a connection once it is queued because its origin is at
        /// ``maxSocketsPerHost`` (or the Agent at ``maxTotalSockets``); `nil` (the default) waits as long as
        /// it takes. A request for which a connection is being opened at once is bounded by
        /// ``connectTimeout`` and ``tlsHandshakeTimeout`` instead. Expiry fails with
        /// ``AgentError/Code/poolWaitTimeout``.
        public var poolWaitTimeout: Duration?
        /// How long a TCP connect to one address may take. Default: 10 seconds.
        public var connectTimeout: Duration
        /// How long the TLS handshake may take. Default: 10 seconds.
        public var tlsHandshakeTimeout: Duration
        /// How long a request may go without receiving a byte from the server, from the moment its last
        /// byte is on the socket until its body's last byte: waiting for the response head, or between
        /// body bytes. Each byte received starts the wait again; time spent sending the request (a large
        /// or slowly produced body) and time while the body's reader is not keeping up do not count. Expiry fails the request with
        /// ``AgentError/Code/readTimeout`` and closes its connection. `nil` waits forever. Default:
        /// 60 seconds.
        public var readIdleTimeout: Duration?
        /// How long a whole request may take, from ``Agent/execute(_:body:observer:)`` to its body's last
        /// byte: waiting for a connection, connecting, sending, and receiving. Expiry fails it with
        /// ``AgentError/Code/requestTimeout`` in the phase it was in; a connection it was using is closed.
        /// `nil` (the default) sets no overall bound; the step timeouts still apply.
        public var requestTimeout: Duration?
        /// TLS settings for `https` requests. Default: verify against the system trust store.
        public var tls: TLSConfiguration
        /// Where TLS sessions are kept so that new connections resume them; `nil` disables resumption.
        /// Default: a new cache of 100 keys for this Agent. Pass one cache to several Agents to share it.
        public var sessionCache: TLSSessionCache?
        /// Whether to ask for gzip/deflate responses and decode them, and the limits on decoding.
        /// Default: ``Decompression/enabled`` (a ratio limit of 100 beyond the first MiB).
        public var decompression: Decompression
        /// Whether and how far redirects are followed. Default: ``RedirectPolicy/default`` (up to 10, never
        /// from `https` to `http`, credentials kept to the first origin). Node and curl do not follow;
        /// Go and AsyncHTTPClient do. See ``RedirectPolicy``.
        public var redirects: RedirectPolicy
        /// The most bytes a response head may take: the status line, the header fields and the blank
        /// line that ends them, together with any informational (1xx) heads before it. A larger head
        /// fails the request with ``AgentError/Code/responseHeadTooLarge`` and closes its connection.
        /// Default: 64 KiB. Must be at least 1.
        ///
        /// The HTTP parser has its own limit of 80 KiB of field names and values, so a value above that
        /// does not allow more fields than 80 KiB's worth; they fail with the same code.
        public var maxResponseHeadSize: Int
        /// The most header fields a response head may have. More fail the request with
        /// ``AgentError/Code/responseHeadTooLarge`` and close its connection. Default: 100. Must be at
        /// least 1.
        public var maxResponseHeaderCount: Int

        /// Creates a configuration; every parameter has a default.
        public init(
            maxSocketsPerHost: Int = 10,
            maxFreeSocketsPerHost: Int = 10,
            maxTotalSockets: Int? = nil,
            idleTimeout: Duration? = .seconds(30),
            freeSocketScheduling: FreeSocketScheduling = .lifo,
            keepAlive: Bool = true,
            poolWaitTimeout: Duration? = nil,
            connectTimeout: Duration = .seconds(10),
            tlsHandshakeTimeout: Duration = .seconds(10),
            readIdleTimeout: Duration? = .seconds(60),
            tls: TLSConfiguration = TLSConfiguration(),
            sessionCache: TLSSessionCache? = TLSSessionCache(),
            decompression: Decompression = .enabled,
            redirects: RedirectPolicy = .default,
            maxResponseHeadSize: Int = 64 * 1024,
            maxResponseHeaderCount: Int = 100
        ) {
            self.maxSocketsPerHost = maxSocketsPerHost
            self.maxFreeSocketsPerHost = maxFreeSocketsPerHost
            self.maxTotalSockets = maxTotalSockets
            self.idleTimeout = idleTimeout
            self.freeSocketScheduling = freeSocketScheduling
            self.keepAlive = keepAlive
            self.poolWaitTimeout = poolWaitTimeout
            self.connectTimeout = connectTimeout
            self.tlsHandshakeTimeout = tlsHandshakeTimeout
            self.readIdleTimeout = readIdleTimeout
            self.tls = tls
            self.sessionCache = sessionCache
            self.decompression = decompression
            self.maxConnectionLifetime = nil
            self.maxRequestsPerConnection = nil
            self.requestTimeout = nil
            self.redirects = redirects
            self.maxResponseHeadSize = maxResponseHeadSize
            self.maxResponseHeaderCount = maxResponseHeaderCount
        }

        var responseHeadLimits: ResponseHeadLimits {
            ResponseHeadLimits(maxSize: self.maxResponseHeadSize, maxFieldCount: self.maxResponseHeaderCount)
        }

        var poolLimits: PoolLimits {
            PoolLimits(
                maxSocketsPerHost: self.maxSocketsPerHost,
                // Without keep-alive nothing is ever free.
                maxFreeSocketsPerHost: self.keepAlive ? self.maxFreeSocketsPerHost : 0,
                maxTotalSockets: self.maxTotalSockets,
                idleTimeout: self.idleTimeout.map { TimeAmount($0) },
                scheduling: self.freeSocketScheduling,
                poolWaitTimeout: self.poolWaitTimeout.map { TimeAmount($0) },
                maxConnectionLifetime: self.maxConnectionLifetime.map { TimeAmount($0) },
                maxRequestsPerConnection: self.maxRequestsPerConnection
            )
        }
    }
}
