import NIOCore
import Testing

@testable import HTTPSAgent

/// SplitMix64: a small, seedable, deterministic generator (the stdlib's generator cannot be seeded).
private struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var value = self.state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }

    mutating func chance(_ percent: Int) -> Bool {
        Int.random(in: 0..<100, using: &self) < percent
    }

    mutating func pick<T>(_ values: [T]) -> T? {
        values.isEmpty ? nil : values[Int.random(in: 0..<values.count, using: &self)]
    }
}

/// The fake world violated a rule, or the machine's view differs from the world's.
private struct IllegalMove: Error, CustomStringConvertible {
    var description: String
}

/// A driver for ``PoolStateMachine`` that performs its actions on a model of connections, requests and
/// timers, refuses every action that is illegal in that model, and checks the pool's invariants after
/// every event.
private struct PoolWorld {
    enum ConnectionState: Equatable, CustomStringConvertible {
        case connecting
        /// Just established or released: waiting for the machine's decision in this step.
        case ready
        case leased(UInt64)
        case idle(since: NIODeadline)
        case closing

        var description: String {
            switch self {
            case .connecting: "connecting"
            case .ready: "ready"
            case .leased(let request): "leased(\(request))"
            case .idle(let since): "idle(\(since.uptimeNanoseconds))"
            case .closing: "closing"
            }
        }
    }

    struct Connection {
        let origin: Origin
        var state: ConnectionState
    }

    enum RequestState: Equatable {
        case waiting
        case leased(Int)
        case failed
    }

    struct Request {
        let origin: Origin
        var state: RequestState
    }

    enum Event: CustomStringConvertible {
        case request(UInt64, Origin)
        case cancel(UInt64)
        case waitTimer(UInt64)
        case established(Int)
        case failed(Int, AgentError)
        case released(Int)
        case closed(Int)
        case idleTimer(Int)
        case shutdown

        var description: String {
            switch self {
            case .request(let id, let origin): "request \(id) for \(origin)"
            case .cancel(let id): "cancel \(id)"
            case .waitTimer(let id): "wait timer \(id)"
            case .established(let id): "established \(id)"
            case .failed(let id, _): "failed \(id)"
            case .released(let id): "released \(id)"
            case .closed(let id): "closed \(id)"
            case .idleTimer(let id): "idle timer \(id)"
            case .shutdown: "shutdown"
            }
        }
    }

    let limits: PoolLimits
    let origins: [Origin]
    let seed: UInt64
    var rng: SplitMix64
    var eventCount: UInt64 = 0
    var machine: PoolStateMachine
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    var connections: [Int: Connection] = [:]
    var closed: Set<Int> = []
    var closedOrigins: [Int: Origin] = [:]
    var requests: [UInt64: Request] = [:]
    /// The waiting requests of each origin, oldest first (an index into `requests`).
    var waiting: [Origin: [UInt64]] = [:]
    var nextRequest: UInt64 = 1
    /// Requests sent again after a reused connection failed: only a new connection may serve them.
    var freshRequests: Set<UInt64> = []
    /// Pending timers; some are stale on purpose (a timer that fired while its cancellation raced), so a
    /// connection can have several.
    var idleTimers: [(connection: Int, deadline: NIODeadline)] = []
    var waitTimers: [UInt64: NIODeadline] = [:]
    var shuttingDown = false
    var shutdownCompleteCount = 0
    var history: [String] = []
    var stats: [String: Int] = [:]

    init(limits: PoolLimits, origins: [Origin], seed: UInt64) {
        self.limits = limits
        self.origins = origins
        self.seed = seed
        self.rng = SplitMix64(seed: seed)
        self.machine = PoolStateMachine(limits: limits)
    }

    // MARK: Queries on the model

    func ids(_ predicate: (Connection) -> Bool) -> [Int] {
        self.connections.filter { predicate($0.value) }.keys.sorted()
    }

    func waitingRequests(of origin: Origin) -> [UInt64] {
        self.waiting[origin] ?? []
    }

    func waitingRequests() -> [UInt64] {
        self.waiting.values.joined().sorted()
    }

    /// Records that a waiting request was served or failed.
    mutating func resolve(_ id: UInt64, as state: RequestState) {
        let origin = self.requests[id]!.origin
        self.requests[id]!.state = state
        self.waiting[origin]!.removeAll { $0 == id }
    }

    func isConnecting(_ connection: Connection) -> Bool { connection.state == .connecting }

    func isFresh(_ request: UInt64) -> Bool { self.freshRequests.contains(request) }

    /// Whether the machine must close a connection of `origin` released while `waiters` wait, so that its
    /// slot goes to a dial for the waiters that need a new connection: the oldest needs one and nothing
    /// is under way for it, or every waiter needs one and the dials and closes under way are too few.
    func releaseMakesRoomForAFreshWaiter(_ origin: Origin, waiters: [UInt64]) -> Bool {
        guard let first = waiters.first else { return false }
        let connecting = self.ids { $0.origin == origin && $0.state == .connecting }.count
        let closing = self.ids { $0.origin == origin && $0.state == .closing }.count
        if self.isFresh(first) && connecting == 0 && closing == 0 { return true }
        return waiters.allSatisfy(self.isFresh) && waiters.count - connecting > closing
    }

    func isClosing(_ connection: Connection) -> Bool { connection.state == .closing }

    func isLeased(_ connection: Connection) -> Bool {
        if case .leased = connection.state { return true }
        return false
    }

    func isIdle(_ connection: Connection) -> Bool {
        if case .idle = connection.state { return true }
        return false
    }

    var atGlobalLimit: Bool {
        self.limits.maxTotalSockets.map { self.connections.count >= $0 } ?? false
    }

    /// The most connections another origin could open for the waiters no dial serves yet.
    func slotNeeded(except excluded: Origin) -> Int {
        self.origins.filter { $0 != excluded }.map { origin in
            let mine = self.connections.values.filter { $0.origin == origin }
            let unserved = self.waitingRequests(of: origin).count - mine.filter(self.isConnecting).count
            return max(0, min(unserved, self.limits.maxSocketsPerHost - mine.count))
        }.max() ?? 0
    }

    /// Whether the driver's cancellation of a timer loses the race with its firing. Decided by the seed,
    /// the event and the timer only, not by the order of the actions (which follows the machine's sets and
    /// dictionaries, whose order changes from process to process), so that every run of a seed is the same.
    func timerRaces(_ timer: UInt64, percent: Int) -> Bool {
        var generator = SplitMix64(seed: self.seed ^ (self.eventCount << 32) ^ timer)
        return generator.chance(percent)
    }

    func idleTimerRaces(_ connection: Int, percent: Int) -> Bool {
        self.timerRaces(UInt64(connection), percent: percent)
    }

    func waitTimerRaces(_ request: UInt64, percent: Int) -> Bool {
        self.timerRaces(request | (1 << 62), percent: percent)
    }

    func fail(_ message: String) -> IllegalMove {
        let events = self.history.suffix(25).joined(separator: "\n")
        return IllegalMove(description: "\(message)\nlimits: \(self.limits)\nlast events:\n\(events)")
    }

    func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw self.fail(message()) }
    }

    // MARK: Sending events

    /// Sends one event to the machine, performs the actions it returns, and checks the invariants.
    @discardableResult
    mutating func send(_ event: Event) throws -> [PoolAction] {
        self.now = self.now + .milliseconds(1)  // strictly increasing, so idle times are distinct
        self.eventCount += 1
        var waitersBefore: [UInt64] = []
        let actions: [PoolAction]
        switch event {
        case .request(let id, let origin):
            self.requests[id] = Request(origin: origin, state: .waiting)
            self.waiting[origin, default: []].append(id)
            actions = self.machine.leaseRequested(id, origin: origin, now: self.now, fresh: self.isFresh(id))
        case .cancel(let id):
            actions = self.machine.waiterCancelled(id)
        case .waitTimer(let id):
            actions = self.machine.waitTimerFired(id)
        case .established(let id):
            let connection = try self.connection(id, in: .connecting)
            waitersBefore = self.waitingRequests(of: connection.origin)
            self.connections[id]!.state = .ready
            actions = self.machine.connectionEstablished(id, now: self.now)
        case .failed(let id, let error):
            let connection = try self.connection(id, in: .connecting)
            waitersBefore = self.waitingRequests(of: connection.origin)
            self.forget(id)
            actions = self.machine.connectionFailed(id, error: error)
        case .released(let id):
            if let connection = self.connections[id], self.isLeased(connection) {
                waitersBefore = self.waitingRequests(of: connection.origin)
                self.connections[id]!.state = .ready
            }
            actions = self.machine.connectionReleased(id, now: self.now)
        case .closed(let id):
            if let connection = self.connections[id] {
                try self.check(connection.state != .connecting, "the world closed connecting \(id)")
                self.forget(id)
            }
            actions = self.machine.connectionClosed(id)
        case .idleTimer(let id):
            actions = self.machine.idleTimerFired(id, now: self.now)
        case .shutdown:
            self.shuttingDown = true
            actions = self.machine.shutdownRequested()
        }
        self.history.append("\(self.now.uptimeNanoseconds / 1_000_000)ms \(event) -> \(actions)")
        if self.history.count > 100 { self.history.removeFirst(50) }
        try self.apply(actions, for: event, waitersBefore: waitersBefore)
        try self.checkInvariants()
        return actions
    }

    private func connection(_ id: Int, in state: ConnectionState) throws -> Connection {
        guard let connection = self.connections[id], connection.state == state else {
            throw self.fail("connection \(id) is not \(state)")
        }
        return connection
    }

    /// The connection is gone; the driver drops its timer, but now and then a timer is already firing.
    private mutating func forget(_ id: Int) {
        self.closedOrigins[id] = self.connections.removeValue(forKey: id)?.origin
        self.closed.insert(id)
        if !self.idleTimerRaces(id, percent: 30) { self.idleTimers.removeAll { $0.connection == id } }
    }

    // MARK: Performing actions

    private mutating func apply(_ actions: [PoolAction], for event: Event, waitersBefore: [UInt64]) throws {
        for action in actions {
            self.stats["\(action)".prefix { $0 != "(" }.description, default: 0] += 1
            switch action {
            case .createConnection(let id, let origin):
                try self.check(!self.shuttingDown, "dial \(id) after shutdown")
                try self.check(self.connections[id] == nil && !self.closed.contains(id), "connection id \(id) reused")
                try self.check(self.origins.contains(origin), "dial for unknown origin \(origin)")
                let dialling = self.ids { $0.origin == origin && $0.state == .connecting }.count
                try self.check(
                    self.waitingRequests(of: origin).count > dialling,
                    "dial \(id) for \(origin) though every waiter has a dial"
                )
                self.connections[id] = Connection(origin: origin, state: .connecting)

            case .lease(let id, let requestID, let reused):
                guard let request = self.requests[requestID], request.state == .waiting else {
                    throw self.fail("lease of \(id) to request \(requestID), which is not waiting")
                }
                guard let connection = self.connections[id] else {
                    throw self.fail("lease of connection \(id), which is closed or unknown")
                }
                try self.check(
                    connection.origin == request.origin,
                    "lease of \(id) (\(connection.origin)) to request \(requestID) (\(request.origin))"
                )
                var isNew = false
                if case .established(id) = event { isNew = true }
                // A new connection goes to the oldest waiter; one that served before, to the oldest waiter
                // that does not need a new one.
                let waiters = self.waitingRequests(of: request.origin)
                try self.check(
                    requestID == (isNew ? waiters.first : waiters.first { !self.isFresh($0) }),
                    "lease of \(id) to \(requestID) while older requests wait: \(waiters), fresh \(self.freshRequests)"
                )
                try self.check(
                    isNew || !self.isFresh(requestID),
                    "request \(requestID) needs a new connection, got \(id)"
                )
                if self.isFresh(requestID) { self.stats["fresh lease", default: 0] += 1 }
                switch connection.state {
                case .ready:
                    break
                case .idle(let since):
                    guard case .request(requestID, _) = event else {
                        throw self.fail("idle connection \(id) leased outside of a lease request")
                    }
                    let sinces = self.connections.values.compactMap { candidate -> NIODeadline? in
                        guard candidate.origin == connection.origin, case .idle(let since) = candidate.state else {
                            return nil
                        }
                        return since
                    }
                    let expected = self.limits.scheduling == .lifo ? sinces.max() : sinces.min()
                    try self.check(since == expected, "idle connection \(id) taken against \(self.limits.scheduling)")
                default:
                    throw self.fail("lease of connection \(id), which is \(connection.state)")
                }
                try self.check(reused != isNew, "lease of \(id) with reused \(reused) on \(event)")
                self.connections[id]!.state = .leased(requestID)
                self.resolve(requestID, as: .leased(id))
                if !self.idleTimerRaces(id, percent: 20) { self.idleTimers.removeAll { $0.connection == id } }
                if !self.waitTimerRaces(requestID, percent: 20) { self.waitTimers[requestID] = nil }

            case .failRequest(let requestID, let failure, let origin):
                guard let request = self.requests[requestID], request.state == .waiting else {
                    throw self.fail("failing request \(requestID), which is not waiting")
                }
                try self.check(request.origin == origin, "request \(requestID) failed with the wrong origin")
                switch (event, failure) {
                case (.request(requestID, _), .shutdown) where self.shuttingDown,
                    (.cancel(requestID), .cancelled),
                    (.waitTimer(requestID), .waitTimeout),
                    (.shutdown, .shutdown):
                    break
                case (.failed(_, let error), .connectFailed(let reported)) where error == reported:
                    try self.check(
                        requestID == self.waitingRequests(of: origin).first,
                        "dial failure given to \(requestID), not to the oldest waiter"
                    )
                default:
                    throw self.fail("request \(requestID) failed with \(failure) on \(event)")
                }
                self.resolve(requestID, as: .failed)
                if !self.waitTimerRaces(requestID, percent: 20) { self.waitTimers[requestID] = nil }

            case .closeConnection(let id, _):
                guard let connection = self.connections[id] else {
                    throw self.fail("close of connection \(id), which is closed or unknown")
                }
                switch connection.state {
                case .ready:
                    // Parking refused: the free list is full, or another origin needs the slot.
                    let idle = self.ids { $0.origin == connection.origin && self.isIdle($0) }.count
                    try self.check(
                        self.shuttingDown || idle >= self.limits.maxFreeSocketsPerHost
                            || (self.atGlobalLimit && self.slotNeeded(except: connection.origin) > 0)
                            || self.releaseMakesRoomForAFreshWaiter(connection.origin, waiters: waitersBefore),
                        "connection \(id) closed instead of parked"
                    )
                case .idle(let since):
                    let isOwnTimer: Bool
                    if case .idleTimer(id) = event { isOwnTimer = true } else { isOwnTimer = false }
                    if isOwnTimer {
                        try self.check(since + self.limits.idleTimeout! <= self.now, "idle timer closed \(id) early")
                    } else if case .shutdown = event {
                        break
                    } else if case .request(let requestID, connection.origin) = event, self.isFresh(requestID) {
                        // Room for a request that needs a new connection, at a limit: the oldest free one goes.
                        let mine = self.connections.values.filter { $0.origin == connection.origin }
                        try self.check(
                            mine.count >= self.limits.maxSocketsPerHost || self.atGlobalLimit,
                            "free connection \(id) closed for fresh request \(requestID) below every limit"
                        )
                        let oldest = mine.compactMap { candidate -> NIODeadline? in
                            if case .idle(let since) = candidate.state { return since }
                            return nil
                        }.min()
                        try self.check(since == oldest, "closed \(id) for \(requestID), not the oldest free one")
                    } else {
                        // Evicted for another origin: only at the global limit, least recently used first.
                        try self.check(self.limits.maxTotalSockets != nil, "eviction of \(id) without global limit")
                        let oldest = self.connections.values.compactMap { candidate -> NIODeadline? in
                            if case .idle(let since) = candidate.state { return since }
                            return nil
                        }.min()
                        try self.check(since == oldest, "eviction of \(id), which is not the least recently used")
                        // Only as many as the closing connections do not already make room for.
                        try self.check(
                            self.atGlobalLimit
                                && self.slotNeeded(except: connection.origin) > self.ids(self.isClosing).count,
                            "eviction of \(id) although the connections closing make room enough"
                        )
                    }
                case .leased:
                    guard case .shutdown = event else {
                        throw self.fail("close of leased connection \(id) outside of shutdown")
                    }
                default:
                    throw self.fail("close of connection \(id), which is \(connection.state)")
                }
                if connection.state == .ready, waitersBefore.contains(where: { !self.isFresh($0) }), !self.shuttingDown,
                    !self.releaseMakesRoomForAFreshWaiter(connection.origin, waiters: waitersBefore)
                {
                    throw self.fail("connection \(id) closed while requests of its origin wait: \(waitersBefore)")
                }
                self.connections[id]!.state = .closing
                if !self.idleTimerRaces(id, percent: 20) { self.idleTimers.removeAll { $0.connection == id } }

            case .scheduleIdleTimer(let id, let deadline):
                guard let timeout = self.limits.idleTimeout else {
                    throw self.fail("idle timer for \(id) without idle timeout")
                }
                if case .idleTimer(id) = event, case .idle(let since)? = self.connections[id]?.state {
                    // A timer that came early (its connection was leased and parked again) is set again.
                    try self.check(deadline == since + timeout, "idle timer for \(id) re-armed at the wrong deadline")
                    try self.check(deadline > self.now, "idle timer for \(id) re-armed for a deadline that passed")
                } else {
                    try self.check(self.connections[id]?.state == .ready, "idle timer for \(id), which is not parked")
                    try self.check(deadline == self.now + timeout, "idle timer for \(id) at the wrong deadline")
                    self.connections[id]!.state = .idle(since: self.now)
                }
                self.idleTimers.append((id, deadline))

            case .scheduleWaitTimer(let requestID, let deadline):
                guard case .request(requestID, _) = event, let timeout = self.limits.poolWaitTimeout else {
                    throw self.fail("wait timer for \(requestID) on \(event)")
                }
                try self.check(self.requests[requestID]?.state == .waiting, "wait timer for \(requestID), not waiting")
                try self.check(deadline == self.now + timeout, "wait timer for \(requestID) at the wrong deadline")
                self.waitTimers[requestID] = deadline

            case .shutdownComplete:
                try self.check(self.shuttingDown, "shutdown complete without shutdown")
                try self.check(action == actions.last, "shutdown complete is not the last action")
                self.shutdownCompleteCount += 1
            }
        }
        // A connection the machine parked without timer (no idle timeout) is idle now.
        for id in self.ids({ $0.state == .ready }) {
            try self.check(self.limits.idleTimeout == nil, "connection \(id) left undecided by \(event)")
            try self.check(!self.shuttingDown, "connection \(id) parked during shutdown")
            self.connections[id]!.state = .idle(since: self.now)
        }
        if case .failed(let id, let error) = event, !self.shuttingDown {
            // The oldest waiter gets the error unless the dials still under way can serve every waiter.
            let origin = self.closedOrigins[id]!
            let dialsLeft =
                self.ids { $0.origin == origin && $0.state == .connecting }.count
                - actions.filter { if case .createConnection(_, origin) = $0 { true } else { false } }.count
            let failures = actions.filter { if case .failRequest = $0 { true } else { false } }
            if waitersBefore.count > dialsLeft {
                try self.check(
                    failures == [.failRequest(waitersBefore[0], .connectFailed(error), origin)],
                    "failed dial \(id) with waiters \(waitersBefore) and \(dialsLeft) dials left gave \(actions)"
                )
            } else {
                try self.check(failures.isEmpty, "failed dial \(id) failed a request although dials serve all")
            }
        }
        if case .released(let id) = event, !waitersBefore.isEmpty, !self.shuttingDown,
            let origin = self.connections[id]?.origin ?? self.closedOrigins[id]
        {
            let closedForAFreshWaiter = actions.contains {
                if case .closeConnection(id, _) = $0 { true } else { false }
            }
            // Waiters that need a new connection cannot take it; any other can.
            if !closedForAFreshWaiter && waitersBefore.contains(where: { !self.isFresh($0) }) {
                try self.check(
                    actions.contains { if case .lease(id, _, _) = $0 { true } else { false } },
                    "released connection \(id) not leased to a waiter \(waitersBefore)"
                )
            }
            // The oldest waiter needs a new connection and nothing was under way for it: it gets this slot.
            if let first = waitersBefore.first, self.isFresh(first) {
                let others = self.ids { $0.origin == origin && ($0.state == .connecting || $0.state == .closing) }
                try self.check(
                    closedForAFreshWaiter || !others.isEmpty,
                    "released connection \(id) given past fresh request \(first) with nothing under way for it"
                )
            }
        }
        if case .established(let id) = event, !waitersBefore.isEmpty, !self.shuttingDown {
            try self.check(
                actions.contains { if case .lease(id, _, _) = $0 { true } else { false } },
                "established connection \(id) not leased to a waiter \(waitersBefore)"
            )
        }
    }

    // MARK: Invariants

    mutating func checkInvariants() throws {
        let total = self.connections.count
        try self.check(self.machine.totalConnections == total, "machine counts \(self.machine.totalConnections)")
        if let maxTotal = self.limits.maxTotalSockets {
            try self.check(total <= maxTotal, "\(total) connections, more than maxTotalSockets")
        }
        let closingTotal = self.ids(self.isClosing).count
        for origin in self.origins {
            let mine = self.connections.filter { $0.value.origin == origin }
            let connecting = Set(mine.filter { self.isConnecting($0.value) }.keys)
            let leased = Set(mine.filter { self.isLeased($0.value) }.keys)
            let closing = Set(mine.filter { self.isClosing($0.value) }.keys)
            let idle = mine.compactMap { id, connection -> PoolStateMachine.IdleConnection? in
                if case .idle(let since) = connection.state { return .init(id: id, since: since) }
                return nil
            }.sorted { $0.since < $1.since }
            let waiting = self.waitingRequests(of: origin)

            try self.check(mine.count <= self.limits.maxSocketsPerHost, "\(origin): \(mine.count) sockets")
            try self.check(idle.count <= self.limits.maxFreeSocketsPerHost, "\(origin): \(idle.count) idle")
            try self.check(
                idle.isEmpty || waiting.allSatisfy(self.isFresh),
                "\(origin): idle connections while requests wait that one could serve"
            )

            // The machine's view is the world's view.
            let host = self.machine.hosts[origin]
            if mine.isEmpty && waiting.isEmpty {
                try self.check(host == nil, "\(origin): empty pool kept")
                continue
            }
            guard let host else { throw self.fail("\(origin): pool missing") }
            try self.check(host.connecting == connecting, "\(origin): connecting \(host.connecting) vs \(connecting)")
            try self.check(host.leased == leased, "\(origin): leased \(host.leased) vs \(leased)")
            try self.check(host.closing == closing, "\(origin): closing \(host.closing) vs \(closing)")
            try self.check(
                host.idle.map(\.id) == idle.map(\.id) && host.idle.map(\.since) == idle.map(\.since),
                "\(origin): idle \(host.idle) vs \(idle)"
            )
            try self.check(Array(host.waiters) == waiting, "\(origin): waiters \(Array(host.waiters)) vs \(waiting)")
            for id in connecting { try self.check(self.machine.isConnecting(id), "\(id) not connecting") }
            for entry in idle { try self.check(self.machine.isIdle(entry.id), "\(entry.id) not idle") }

            // With a wait timeout, a request without a wait timer is one a dial in progress is for (dials
            // serve waiters oldest first), so no request waits at a limit for longer than the timeout.
            if self.limits.poolWaitTimeout != nil {
                for (position, request) in waiting.enumerated() where self.waitTimers[request] == nil {
                    try self.check(
                        position < connecting.count,
                        "\(origin): request \(request) waits at a limit without a wait timer"
                    )
                }
            }

            // Waiters that need a new connection are never left behind a free connection of their own
            // origin: a close under way makes room for each one that no dial serves.
            if !self.shuttingDown && !idle.isEmpty && waiting.count > connecting.count {
                try self.check(
                    closing.count >= waiting.count - connecting.count,
                    "\(origin): waiters \(waiting) behind free connections \(idle.map(\.id)), \(closing.count) closing"
                )
            }

            // No waiter is forgotten: one nobody dials for is blocked by a limit, and at the global
            // limit either a closing connection will free a slot or there is nothing left to evict.
            if !self.shuttingDown && waiting.count > connecting.count && mine.count < self.limits.maxSocketsPerHost {
                guard let maxTotal = self.limits.maxTotalSockets, total >= maxTotal else {
                    throw self.fail("\(origin): waiters \(waiting) left without a dial below every limit")
                }
                let evictable = self.connections.values.contains { $0.origin != origin && self.isIdle($0) }
                try self.check(closingTotal > 0 || !evictable, "\(origin): blocked at the global limit for good")
            }
        }
        if self.shuttingDown {
            try self.check(self.waitingRequests().isEmpty, "requests wait during shutdown")
            try self.check(self.ids(self.isLeased).isEmpty, "connections leased during shutdown")
            try self.check(self.ids(self.isIdle).isEmpty, "connections idle during shutdown")
            try self.check(self.shutdownCompleteCount == (total == 0 ? 1 : 0), "shutdown complete seen wrongly")
            try self.check(self.machine.isShutdownComplete == (total == 0), "isShutdownComplete")
        } else {
            try self.check(self.shutdownCompleteCount == 0, "shutdown complete before shutdown")
        }
    }

    // MARK: Random steps

    mutating func randomStep() throws {
        let roll = Int.random(in: 0..<100, using: &self.rng)
        switch roll {
        case 0..<24:
            let id = self.nextRequest
            self.nextRequest += 1
            // Now and then a request sent again after its pooled connection failed.
            if self.rng.chance(15) { self.freshRequests.insert(id) }
            try self.send(.request(id, self.rng.pick(self.origins)!))
        case 24..<40:
            if let id = self.rng.pick(self.ids(self.isConnecting)) { try self.send(.established(id)) }
        case 40..<44:
            if let id = self.rng.pick(self.ids(self.isConnecting)) {
                let error = AgentError(code: .connectFailed, phase: .connect, message: "dial \(id) failed")
                try self.send(.failed(id, error))
            }
        case 44..<62:
            if let id = self.rng.pick(self.ids(self.isLeased)) { try self.send(.released(id)) }
        case 62..<67:
            // The server closes a connection that is idle or carrying a request.
            if let id = self.rng.pick(self.ids { self.isIdle($0) || self.isLeased($0) }) {
                try self.send(.closed(id))
            }
        case 67..<79:
            if let id = self.rng.pick(self.ids(self.isClosing)) { try self.send(.closed(id)) }
        case 79..<88:
            try self.advanceTime(by: .milliseconds(Int64.random(in: 0...3000, using: &self.rng)))
        case 88..<93:
            if let id = self.rng.pick(self.waitingRequests()) {
                let origin = self.requests[id]!.origin
                try self.expect(.cancel(id), [.failRequest(id, .cancelled, origin)])
            }
        case 93..<96:
            // Cancelling a request that is no longer waiting, or was never made.
            let candidates = self.requests.filter { $0.value.state != .waiting }.keys.sorted()
            let id = self.rng.pick(candidates) ?? self.nextRequest + 1000
            try self.expect(.cancel(id), [])
        case 96..<98:
            // A late release of a connection that closed, or that is closing.
            let candidates = Array(self.closed).sorted() + self.ids(self.isClosing)
            if let id = self.rng.pick(candidates) { try self.expect(.released(id), []) }
        default:
            // A late close report of a connection that is already closed.
            if let id = self.rng.pick(Array(self.closed).sorted()) { try self.expect(.closed(id), []) }
        }
    }

    /// Moves the clock and fires the timers that are due, oldest deadline first.
    mutating func advanceTime(by amount: TimeAmount) throws {
        self.now = self.now + amount
        let idleDue = self.idleTimers.filter { $0.deadline <= self.now }
            .sorted { ($0.deadline, $0.connection) < ($1.deadline, $1.connection) }
        self.idleTimers.removeAll { $0.deadline <= self.now }
        for (id, _) in idleDue {
            // The event moves the clock by a millisecond before the machine sees it.
            var expected: [PoolAction] = []
            if let connection = self.connections[id], case .idle(let since) = connection.state {
                let deadline = since + self.limits.idleTimeout!
                // Due: closed. Parked again since the timer was set: set again for the new deadline.
                expected =
                    deadline <= self.now + .milliseconds(1)
                    ? [.closeConnection(id)] : [.scheduleIdleTimer(connection: id, deadline: deadline)]
            }
            try self.expect(.idleTimer(id), expected)
        }
        let waitDue = self.waitTimers.filter { $0.value <= self.now }
            .sorted { ($0.value, $0.key) < ($1.value, $1.key) }
        for (id, _) in waitDue {
            self.waitTimers[id] = nil
            var expected: [PoolAction] = []
            if let request = self.requests[id], request.state == .waiting {
                expected = [.failRequest(id, .waitTimeout, request.origin)]
            }
            try self.expect(.waitTimer(id), expected)
        }
    }

    /// Sends an event whose outcome is known exactly.
    mutating func expect(_ event: Event, _ expected: [PoolAction]) throws {
        let actions = try self.send(event)
        try self.check(actions == expected, "\(event) gave \(actions), expected \(expected)")
    }

    // MARK: Shutdown

    /// Shuts down, lets every connection finish closing or dialling, and checks the end state.
    mutating func shutDownAndDrain() throws {
        try self.send(.shutdown)
        var steps = 0
        while !self.connections.isEmpty {
            steps += 1
            try self.check(steps < 10_000, "shutdown does not finish")
            switch Int.random(in: 0..<10, using: &self.rng) {
            case 0:
                let id = self.nextRequest
                self.nextRequest += 1
                let origin = self.rng.pick(self.origins)!
                try self.expect(.request(id, origin), [.failRequest(id, .shutdown, origin)])
            case 1:
                try self.advanceTime(by: .seconds(Int64.random(in: 0...10, using: &self.rng)))
            case 2:
                if let id = self.rng.pick(self.ids(self.isConnecting)) {
                    let error = AgentError(code: .shutdown, phase: .connect, message: "dial \(id) cancelled")
                    try self.send(.failed(id, error))
                }
            case 3, 4:
                if let id = self.rng.pick(self.ids(self.isConnecting)) {
                    try self.expect(.established(id), [.closeConnection(id)])
                }
            case 5:
                if let id = self.rng.pick(self.ids(self.isClosing)) { try self.expect(.released(id), []) }
            default:
                if let id = self.rng.pick(self.ids(self.isClosing)) { try self.send(.closed(id)) }
            }
        }
        try self.check(self.shutdownCompleteCount == 1, "shutdown complete seen \(self.shutdownCompleteCount) times")
        try self.check(self.waitingRequests().isEmpty, "requests never resolved: \(self.waitingRequests())")
        try self.check(self.machine.hosts.isEmpty, "pools left after shutdown: \(self.machine.hosts.keys)")
        try self.check(self.machine.isShutdownComplete, "machine not shut down")
        // Late events change nothing.
        try self.expect(.shutdown, [])
        try self.advanceTime(by: .seconds(60))
    }
}

@Suite("PoolStateMachine simulation", .serialized)
struct PoolStateMachineSimulationTests {
    static let origins: [Origin] = [
        Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration()),
        // Same host and port, other TLS configuration: a separate pool.
        Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration(certificateVerification: .none)),
        Origin(scheme: .http, host: "a.example", port: 80, tls: nil),
    ]

    /// Limits drawn from the seed, so the seeds cover tight and loose pools, with and without global limit.
    private static func limits(seed: UInt64) -> PoolLimits {
        var rng = SplitMix64(seed: seed ^ 0xA5A5_A5A5)
        let perHost = Int.random(in: 1...4, using: &rng)
        return PoolLimits(
            maxSocketsPerHost: perHost,
            maxFreeSocketsPerHost: Int.random(in: 0...3, using: &rng),
            maxTotalSockets: seed % 3 == 0 ? nil : Int.random(in: 1...(perHost * 2), using: &rng),
            idleTimeout: rng.chance(80) ? .milliseconds(Int64.random(in: 500...5000, using: &rng)) : nil,
            scheduling: rng.chance(50) ? .lifo : .fifo,
            poolWaitTimeout: rng.chance(50) ? .milliseconds(Int64.random(in: 500...10_000, using: &rng)) : nil
        )
    }

    @Test(arguments: UInt64(1)...UInt64(24))
    func randomEventsKeepThePoolsInvariants(seed: UInt64) async throws {
        var world = PoolWorld(limits: Self.limits(seed: seed), origins: Self.origins, seed: seed)
        for step in 0..<4000 {
            try world.randomStep()
            // A seed takes most of a second of CPU in a debug build. Let the parallel run's other tests
            // (their timers and continuations) have the thread between steps: CI has two.
            if step % 50 == 0 { await Task.yield() }
        }
        try world.shutDownAndDrain()
        #expect(world.requests.values.allSatisfy { $0.state != .waiting })
        #expect(world.requests.count > 500)
        #expect((world.stats["lease"] ?? 0) > 100, "too few leases: \(world.stats)")
        #expect((world.stats["fresh lease"] ?? 0) > 10, "too few requests served by a new connection: \(world.stats)")
    }
}
