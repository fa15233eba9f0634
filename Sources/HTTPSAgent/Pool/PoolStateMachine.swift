import NIOCore

/// Every decision of the Agent's connection pools: which connection a request gets, when to open or
/// close one, who waits and who fails.
///
/// A pure value: events in, ``PoolAction``s out; no I/O, no locks, no clocks (the caller passes
/// `now`). One machine holds the pools of all origins so that the global ``PoolLimits/maxTotalSockets``
/// can be enforced across them.
///
/// A connection is in exactly one of four sets of its origin's pool: `connecting` (being dialled),
/// `leased` (carrying a request), `idle` (free, oldest first) or `closing` (close requested, not yet
/// closed). All four count toward the limits, so the server never sees more sockets than allowed.
/// Requests wait in FIFO order per origin; a new connection is dialled only while the waiters
/// outnumber the connections already being dialled for them.
struct PoolStateMachine {
    struct IdleConnection: Sendable, Hashable {
        var id: Int
        var since: NIODeadline
        /// When it must be closed if still free: the idle timeout, the server's keep-alive hint, or the
        /// end of its lifetime, whichever comes first; `nil` for never.
        var deadline: NIODeadline?
    }

    /// How long a connection may live and how much it may carry.
    struct Life: Sendable, Hashable {
        /// The end of its ``PoolLimits/maxConnectionLifetime`` (jittered); `nil` for no end.
        var expiresAt: NIODeadline?
        /// Requests given to it so far.
        var requests = 0
        /// The server's last `Keep-Alive: timeout` hint on it.
        var keepAliveHint: TimeAmount?
    }

    struct HostPool {
        var connecting: Set<Int> = []
        var leased: Set<Int> = []
        /// Oldest first.
        var idle: [IdleConnection] = []
        var closing: Set<Int> = []
        var waiters = CircularBuffer<UInt64>(initialCapacity: 4)

        var total: Int { self.connecting.count + self.leased.count + self.idle.count + self.closing.count }
        var isEmpty: Bool { self.total == 0 && self.waiters.isEmpty }
        /// Waiters no connection is being dialled for.
        var unservedWaiters: Int { self.waiters.count - self.connecting.count }
    }

    let limits: PoolLimits
    private(set) var hosts: [Origin: HostPool] = [:]
    private var connectionOrigins: [Int: Origin] = [:]
    private var waiterOrigins: [UInt64: Origin] = [:]
    /// Waiters that must get a new connection, not a free or released one (a request sent again after
    /// its reused connection turned out to be closed).
    private var freshWaiters: Set<UInt64> = []
    private var lives: [Int: Life] = [:]
    private(set) var totalConnections = 0
    private var totalClosing = 0
    private var nextConnectionID = 1
    private(set) var isShuttingDown = false

    init(limits: PoolLimits) {
        precondition(limits.maxSocketsPerHost > 0, "maxSocketsPerHost must be at least 1")
        precondition(limits.maxFreeSocketsPerHost >= 0, "maxFreeSocketsPerHost must not be negative")
        precondition((limits.maxTotalSockets ?? 1) > 0, "maxTotalSockets must be at least 1")
        precondition((limits.maxRequestsPerConnection ?? 1) > 0, "maxRequestsPerConnection must be at least 1")
        precondition(
            (limits.maxConnectionLifetime ?? .seconds(1)) > .zero,
            "maxConnectionLifetime must be more than zero"
        )
        self.limits = limits
    }

    /// The origin of a connection the pool holds.
    func origin(ofConnection id: Int) -> Origin? { self.connectionOrigins[id] }

    /// The origin a waiting request waits for.
    func origin(ofWaiter request: UInt64) -> Origin? { self.waiterOrigins[request] }

    /// Shutdown was requested and every connection is closed.
    var isShutdownComplete: Bool { self.isShuttingDown && self.totalConnections == 0 }

    // MARK: - Requests

    /// A request wants a connection to `origin`.
    ///
    /// - Parameter fresh: only a connection dialled from now on will do. At the per-host limit, the
    ///   oldest free connection is closed to make room for it.
    mutating func leaseRequested(
        _ request: UInt64,
        origin: Origin,
        now: NIODeadline,
        fresh: Bool = false
    ) -> [PoolAction] {
        if self.isShuttingDown {
            return [.failRequest(request, .shutdown, origin)]
        }
        // Taken out of the dictionary while it changes, so that its sets and arrays are not copied.
        var host = self.takeHost(origin)
        var actions: [PoolAction] = []
        if fresh {
            self.freshWaiters.insert(request)
            let atGlobalLimit = self.limits.maxTotalSockets.map { self.totalConnections >= $0 } ?? false
            if host.total >= self.limits.maxSocketsPerHost || atGlobalLimit, !host.idle.isEmpty {
                let oldest = host.idle.removeFirst()
                self.startClosing(oldest.id, in: &host, into: &actions)
            }
        }
        while !fresh, let connection = self.takeIdle(&host) {
            // A free connection past its lifetime is closed, not handed out.
            if self.isWornOut(connection, now: now) {
                self.startClosing(connection, in: &host, into: &actions, reason: .expired)
                continue
            }
            host.leased.insert(connection)
            self.hosts[origin] = host
            self.lives[connection]?.requests += 1
            actions.append(.lease(connection: connection, request: request, reused: true))
            return actions
        }
        host.waiters.append(request)
        self.hosts[origin] = host
        self.waiterOrigins[request] = origin
        self.dialForWaiters(of: origin, into: &actions)
        // Dials serve waiters in order, so if any waiter is left without a dial, it is this newest one:
        // it waits at a limit, and only then does the wait timeout apply.
        if let timeout = self.limits.poolWaitTimeout, (self.hosts[origin]?.unservedWaiters ?? 0) > 0 {
            actions.append(.scheduleWaitTimer(request: request, deadline: now + timeout))
        }
        return actions
    }

    /// The task of a waiting request was cancelled.
    mutating func waiterCancelled(_ request: UInt64) -> [PoolAction] {
        self.removeWaiter(request, failure: .cancelled)
    }

    /// A waiting request's ``PoolLimits/poolWaitTimeout`` passed.
    mutating func waitTimerFired(_ request: UInt64) -> [PoolAction] {
        self.removeWaiter(request, failure: .waitTimeout)
    }

    private mutating func removeWaiter(_ request: UInt64, failure: PoolFailure) -> [PoolAction] {
        guard let origin = self.waiterOrigins.removeValue(forKey: request) else {
            return []  // already served or failed
        }
        self.freshWaiters.remove(request)
        var host = self.takeHost(origin)
        if let index = host.waiters.firstIndex(of: request) {
            host.waiters.remove(at: index)
        }
        self.putHost(host, origin)
        return [.failRequest(request, failure, origin)]
    }

    // MARK: - Connections

    /// A connection finished its handshake and is ready for a request.
    ///
    /// - Parameter jitter: a random number in `0..<1` from the caller (the machine has no randomness):
    ///   the connection's lifetime is shortened by up to 10 % of ``PoolLimits/maxConnectionLifetime``
    ///   by it, so that connections opened together do not expire together.
    mutating func connectionEstablished(_ id: Int, now: NIODeadline, jitter: Double = 0) -> [PoolAction] {
        guard let origin = self.connectionOrigins[id] else {
            preconditionFailure("connection \(id) established but unknown to the pool")
        }
        self.lives[id] = Life(
            expiresAt: self.limits.maxConnectionLifetime.map { lifetime in
                let shortening = Double(lifetime.nanoseconds) * 0.1 * min(max(jitter, 0), 1)
                return now + lifetime - .nanoseconds(Int64(shortening))
            }
        )
        var actions: [PoolAction] = []
        var host = self.takeHost(origin)
        precondition(host.connecting.remove(id) != nil, "connection \(id) established but not connecting")
        if self.isShuttingDown {
            self.startClosing(id, in: &host, into: &actions)
        } else if let request = host.waiters.popFirst() {
            self.waiterOrigins[request] = nil
            self.freshWaiters.remove(request)
            host.leased.insert(id)
            self.lives[id]?.requests += 1
            actions.append(.lease(connection: id, request: request, reused: false))
        } else {
            self.park(id, in: &host, origin: origin, now: now, into: &actions)
        }
        self.putHost(host, origin)
        return actions
    }

    /// Dialling a connection failed (DNS, connect, TLS).
    mutating func connectionFailed(_ id: Int, error: AgentError) -> [PoolAction] {
        guard let origin = self.connectionOrigins.removeValue(forKey: id) else {
            preconditionFailure("connection \(id) failed but unknown to the pool")
        }
        self.totalConnections -= 1
        self.lives[id] = nil
        var actions: [PoolAction] = []
        var host = self.takeHost(origin)
        precondition(host.connecting.remove(id) != nil, "connection \(id) failed but not connecting")
        // Fail the oldest waiter unless the dials still under way can serve every waiter.
        if host.waiters.count > host.connecting.count, let request = host.waiters.popFirst() {
            self.waiterOrigins[request] = nil
            self.freshWaiters.remove(request)
            actions.append(.failRequest(request, .connectFailed(error), origin))
        }
        self.putHost(host, origin)
        self.dialForAllWaiters(startingWith: origin, into: &actions)
        self.appendShutdownCompleteIfDone(&actions)
        return actions
    }

    /// A leased connection finished its exchange and may be reused.
    ///
    /// - Parameters:
    ///   - keepAliveHint: how long the server said it keeps an idle connection open
    ///     (`Keep-Alive: timeout=N`), if it did; remembered for the connection's later releases.
    ///   - unused: the lease is handed back without a request sent (its requester went away), so it does
    ///     not count toward ``PoolLimits/maxRequestsPerConnection``.
    mutating func connectionReleased(
        _ id: Int,
        now: NIODeadline,
        keepAliveHint: TimeAmount? = nil,
        unused: Bool = false
    ) -> [PoolAction] {
        if unused { self.lives[id]?.requests -= 1 }
        if let keepAliveHint { self.lives[id]?.keepAliveHint = keepAliveHint }
        let keepAliveHint = keepAliveHint ?? self.lives[id]?.keepAliveHint
        guard let origin = self.connectionOrigins[id] else {
            return []  // closed meanwhile
        }
        var actions: [PoolAction] = []
        var host = self.takeHost(origin)
        defer { self.putHost(host, origin) }
        guard host.leased.remove(id) != nil else {
            return []  // already closing (shutdown); its close will be reported
        }
        if self.isShuttingDown {
            self.startClosing(id, in: &host, into: &actions)
        } else if self.isWornOut(id, now: now) {
            // It finished its request; now it goes. Waiters get a new connection once it has closed.
            self.startClosing(id, in: &host, into: &actions, reason: .expired)
        } else if let first = host.waiters.first, self.freshWaiters.contains(first), host.connecting.isEmpty,
            host.closing.isEmpty
        {
            // The oldest waiter needs a new connection and no dial or close is under way for it: this slot
            // goes to its dial once the connection has closed, rather than to newer waiters for ever.
            self.startClosing(id, in: &host, into: &actions)
        } else if let index = host.waiters.firstIndex(where: { !self.freshWaiters.contains($0) }) {
            let request = host.waiters.remove(at: index)
            self.waiterOrigins[request] = nil
            host.leased.insert(id)
            self.lives[id]?.requests += 1
            actions.append(.lease(connection: id, request: request, reused: true))
        } else if host.unservedWaiters > host.closing.count {
            // Only waiters for a new connection, and no dial for one of them: this slot goes to that dial
            // once the connection has closed.
            self.startClosing(id, in: &host, into: &actions)
        } else {
            self.park(id, in: &host, origin: origin, now: now, keepAliveHint: keepAliveHint, into: &actions)
        }
        return actions
    }

    /// A connection's channel closed, whatever state it was in.
    mutating func connectionClosed(_ id: Int) -> [PoolAction] {
        guard let origin = self.connectionOrigins.removeValue(forKey: id) else {
            return []
        }
        self.totalConnections -= 1
        self.lives[id] = nil
        var host = self.takeHost(origin)
        if host.closing.remove(id) != nil {
            self.totalClosing -= 1
        } else if host.leased.remove(id) == nil {
            guard let index = host.idle.firstIndex(where: { $0.id == id }) else {
                preconditionFailure("connection \(id) closed in no known state")
            }
            host.idle.remove(at: index)
        }
        self.putHost(host, origin)
        var actions: [PoolAction] = []
        self.dialForAllWaiters(startingWith: origin, into: &actions)
        self.appendShutdownCompleteIfDone(&actions)
        return actions
    }

    /// An idle connection's timer fired.
    ///
    /// The driver may leave a timer running while its connection is leased and parked again, so a timer
    /// can come early: then the connection's current deadline is asked for again.
    mutating func idleTimerFired(_ id: Int, now: NIODeadline) -> [PoolAction] {
        guard let origin = self.connectionOrigins[id] else { return [] }
        var actions: [PoolAction] = []
        var host = self.takeHost(origin)
        defer { self.putHost(host, origin) }
        guard let index = host.idle.firstIndex(where: { $0.id == id }), let deadline = host.idle[index].deadline
        else {
            return []  // leased (or closing) now: its next release sets its deadline
        }
        guard deadline <= now else {
            return [.scheduleIdleTimer(connection: id, deadline: deadline)]  // parked again since
        }
        host.idle.remove(at: index)
        self.startClosing(id, in: &host, into: &actions, reason: self.isWornOut(id, now: now) ? .expired : nil)
        return actions
    }

    // MARK: - Shutdown

    /// Fails every waiter, closes every connection, and refuses new requests.
    mutating func shutdownRequested() -> [PoolAction] {
        guard !self.isShuttingDown else { return [] }
        self.isShuttingDown = true
        var actions: [PoolAction] = []
        for origin in Array(self.hosts.keys) {
            var host = self.takeHost(origin)
            while let request = host.waiters.popFirst() {
                self.waiterOrigins[request] = nil
                self.freshWaiters.remove(request)
                actions.append(.failRequest(request, .shutdown, origin))
            }
            for idle in host.idle {
                self.startClosing(idle.id, in: &host, into: &actions)
            }
            host.idle.removeAll()
            for id in host.leased {
                self.startClosing(id, in: &host, into: &actions)
            }
            host.leased.removeAll()
            // Connections still dialling are closed when they are established.
            self.putHost(host, origin)
        }
        self.appendShutdownCompleteIfDone(&actions)
        return actions
    }

    // MARK: - Queries

    /// Whether connection `id` is on its origin's free list.
    func isIdle(_ id: Int) -> Bool {
        guard let origin = self.connectionOrigins[id] else { return false }
        return self.hosts[origin]?.idle.contains { $0.id == id } ?? false
    }

    /// Whether connection `id` is still being dialled.
    func isConnecting(_ id: Int) -> Bool {
        guard let origin = self.connectionOrigins[id] else { return false }
        return self.hosts[origin]?.connecting.contains(id) ?? false
    }

    // MARK: - Helpers

    /// Takes an origin's pool out of the dictionary for modification (avoiding a copy on write).
    private mutating func takeHost(_ origin: Origin) -> HostPool {
        self.hosts.removeValue(forKey: origin) ?? HostPool()
    }

    /// Puts an origin's pool back, unless nothing is left in it.
    private mutating func putHost(_ host: HostPool, _ origin: Origin) {
        if !host.isEmpty {
            self.hosts[origin] = host
        }
    }

    private func takeIdle(_ host: inout HostPool) -> Int? {
        guard !host.idle.isEmpty else { return nil }
        switch self.limits.scheduling {
        case .lifo: return host.idle.removeLast().id
        case .fifo: return host.idle.removeFirst().id
        }
    }

    private mutating func startClosing(
        _ id: Int,
        in host: inout HostPool,
        into actions: inout [PoolAction],
        reason: ConnectionCloseReason? = nil
    ) {
        host.closing.insert(id)
        self.totalClosing += 1
        actions.append(.closeConnection(id, reason: reason))
    }

    /// Past its lifetime, or it has carried its most requests.
    private func isWornOut(_ id: Int, now: NIODeadline) -> Bool {
        guard let life = self.lives[id] else { return false }
        if let expiresAt = life.expiresAt, expiresAt <= now { return true }
        if let most = self.limits.maxRequestsPerConnection, life.requests >= most { return true }
        return false
    }

    /// Keeps a free connection, or closes it when the free list is full or another origin needs the slot.
    private mutating func park(
        _ id: Int,
        in host: inout HostPool,
        origin: Origin,
        now: NIODeadline,
        keepAliveHint: TimeAmount? = nil,
        into actions: inout [PoolAction]
    ) {
        if host.idle.count >= self.limits.maxFreeSocketsPerHost || self.anotherOriginNeedsASlot(except: origin) {
            self.startClosing(id, in: &host, into: &actions)
            return
        }
        // The server's hint, less a margin, so that we close first rather than race its close.
        let hinted = keepAliveHint.map { now + $0 - PoolLimits.keepAliveHintMargin }
        if let hinted, hinted <= now {
            self.startClosing(id, in: &host, into: &actions, reason: .idleTimeout)
            return
        }
        // The earliest of the three, without building an array on every release.
        var deadline = self.limits.idleTimeout.map { now + $0 }
        if let hinted, hinted < (deadline ?? .distantFuture) { deadline = hinted }
        if let expiresAt = self.lives[id]?.expiresAt, expiresAt < (deadline ?? .distantFuture) { deadline = expiresAt }
        host.idle.append(IdleConnection(id: id, since: now, deadline: deadline))
        if let deadline {
            actions.append(.scheduleIdleTimer(connection: id, deadline: deadline))
        }
    }

    /// Dials for the waiters of `origin`, then of every other origin with unserved waiters, oldest
    /// waiter first. Called when a connection goes away, since that may free a global slot.
    private mutating func dialForAllWaiters(startingWith origin: Origin, into actions: inout [PoolAction]) {
        self.dialForWaiters(of: origin, into: &actions)
        guard self.limits.maxTotalSockets != nil else { return }
        let blocked = self.hosts.filter { $0.key != origin && $0.value.unservedWaiters > 0 }
            .sorted { ($0.value.waiters.first ?? .max) < ($1.value.waiters.first ?? .max) }
        for (other, _) in blocked {
            self.dialForWaiters(of: other, into: &actions)
        }
    }

    /// Opens connections while `origin` has waiters nobody is dialling for and the limits allow.
    /// At the global limit, closes least recently used idle connections of other origins to make room.
    private mutating func dialForWaiters(of origin: Origin, into actions: inout [PoolAction]) {
        guard !self.isShuttingDown, var host = self.hosts.removeValue(forKey: origin) else { return }
        while host.unservedWaiters > 0 && host.total < self.limits.maxSocketsPerHost {
            if let maxTotal = self.limits.maxTotalSockets, self.totalConnections >= maxTotal {
                // Connections already closing will free slots; evict more only if they are not enough.
                let needed = min(host.unservedWaiters, self.limits.maxSocketsPerHost - host.total)
                if needed > self.totalClosing {
                    self.hosts[origin] = host
                    for _ in self.totalClosing..<needed {
                        guard self.evictLeastRecentlyUsedIdle(except: origin, into: &actions) else { break }
                    }
                    host = self.hosts.removeValue(forKey: origin)!
                }
                break
            }
            let id = self.nextConnectionID
            self.nextConnectionID += 1
            host.connecting.insert(id)
            self.connectionOrigins[id] = origin
            self.totalConnections += 1
            actions.append(.createConnection(id: id, origin: origin))
        }
        if !host.isEmpty {
            self.hosts[origin] = host
        }
    }

    private mutating func evictLeastRecentlyUsedIdle(except origin: Origin, into actions: inout [PoolAction]) -> Bool {
        var oldest: (origin: Origin, index: Int, since: NIODeadline)?
        for (candidate, host) in self.hosts where candidate != origin {
            for (index, idle) in host.idle.enumerated() where idle.since < (oldest?.since ?? .distantFuture) {
                oldest = (candidate, index, idle.since)
            }
        }
        guard let oldest else { return false }
        var host = self.takeHost(oldest.origin)
        let idle = host.idle.remove(at: oldest.index)
        self.startClosing(idle.id, in: &host, into: &actions)
        self.putHost(host, oldest.origin)
        return true
    }

    /// Whether other origins wait at the global limit for more slots than connections already closing
    /// will free.
    private func anotherOriginNeedsASlot(except origin: Origin) -> Bool {
        guard let maxTotal = self.limits.maxTotalSockets, self.totalConnections >= maxTotal else { return false }
        var needed = 0
        for (key, host) in self.hosts where key != origin {
            needed += max(0, min(host.unservedWaiters, self.limits.maxSocketsPerHost - host.total))
        }
        return needed > self.totalClosing
    }

    private func appendShutdownCompleteIfDone(_ actions: inout [PoolAction]) {
        if self.isShutdownComplete {
            actions.append(.shutdownComplete)
        }
    }
}
