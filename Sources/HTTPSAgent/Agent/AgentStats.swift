/// A snapshot of an ``Agent``'s pools.
public struct AgentStats: Sendable, Hashable {
    /// The sockets and waiters of one origin.
    public struct OriginStats: Sendable, Hashable {
        /// "https://example.com:443".
        public var origin: String
        /// The TLS configuration of this origin's connections; `nil` for `http`. An Agent can hold
        /// several pools for one host and port, one per configuration.
        public var tls: TLSConfiguration?
        /// Connections being opened (DNS, connect, TLS).
        public var connecting: Int
        /// Connections carrying a request.
        public var active: Int
        /// Free connections, kept alive for the next request.
        public var free: Int
        /// Connections being closed.
        public var closing: Int
        /// Requests waiting for a connection.
        public var waiting: Int

        /// Creates origin stats, e.g. to drive an observer in a test.
        public init(
            origin: String,
            tls: TLSConfiguration? = nil,
            connecting: Int = 0,
            active: Int = 0,
            free: Int = 0,
            closing: Int = 0,
            waiting: Int = 0
        ) {
            self.origin = origin
            self.tls = tls
            self.connecting = connecting
            self.active = active
            self.free = free
            self.closing = closing
            self.waiting = waiting
        }
    }

    /// One entry per origin with any socket or waiter, sorted by origin.
    public var origins: [OriginStats]

    /// Every socket the Agent holds, in any state.
    public var totalConnections: Int {
        self.origins.reduce(0) { $0 + $1.connecting + $1.active + $1.free + $1.closing }
    }

    /// The stats of one origin, e.g. `"https://localhost:8443"`; the first if several TLS
    /// configurations are in use for it.
    public subscript(origin: String) -> OriginStats? {
        self.origins.first { $0.origin == origin }
    }
}

extension AgentStats.OriginStats {
    init(_ origin: Origin, _ pool: PoolStateMachine.HostPool?) {
        self.init(
            origin: origin.description,
            tls: origin.tls,
            connecting: pool?.connecting.count ?? 0,
            active: pool?.leased.count ?? 0,
            free: pool?.idle.count ?? 0,
            closing: pool?.closing.count ?? 0,
            waiting: pool?.waiters.count ?? 0
        )
    }
}
