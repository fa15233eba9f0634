import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// A connection handed to a request by the pool.
struct Lease: Sendable {
    var connection: HTTP1Connection
    var requestID: UInt64
    var reused: Bool
}

/// The driver of ``PoolStateMachine``: takes the lock, asks the machine, releases the lock, then
/// performs the actions (resumes waiters, dials, closes, schedules timers). It never calls out while
/// holding the lock.
final class ConnectionPool: Sendable {
    private struct State {
        var machine: PoolStateMachine
        var waiters: [UInt64: ThrowingContinuation<Lease>] = [:]
        var connections: [Int: HTTP1Connection] = [:]
        /// At most one per connection. A lease leaves it running (one timer per idle timeout instead of one
        /// per request); when it comes early, the machine asks for the connection's current deadline.
        var idleTimers: [Int: IdleTimer] = [:]
        var nextTimerToken: UInt64 = 0
        var waitTimers: [UInt64: Scheduled<Void>] = [:]
        var dials: [Int: Task<Void, Never>] = [:]
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private struct IdleTimer {
        /// `nil` between the decision (under the lock) and the scheduling (outside it); a timer that fires
        /// in between still finds its token here.
        var scheduled: Scheduled<Void>?
        var deadline: NIODeadline
        var token: UInt64
    }

    /// An action resolved under the lock into what to do once the lock is released.
    private enum Effect {
        case resume(ThrowingContinuation<Lease>, Result<Lease, AgentError>)
        case dial(id: Int, origin: Origin)
        case close(HTTP1Connection, reason: ConnectionCloseReason)
        case cancel(Scheduled<Void>)
        case scheduleIdleTimer(Int, NIODeadline, token: UInt64, HTTP1Connection)
        case scheduleWaitTimer(UInt64, NIODeadline)
        case shutdownComplete([CheckedContinuation<Void, Never>])
        case poolChanged(AgentStats.OriginStats)
    }

    private let state: NIOLockedValueBox<State>
    private let lastRequestID = Atomic<UInt64>(0)
    private let connector: Connector
    private let timerLoop: any EventLoop
    /// The Agent's observers: told of every dial, and of pool changes.
    private let observers: [any AgentObserver]

    init(limits: PoolLimits, connector: Connector, observers: [any AgentObserver] = []) {
        self.state = NIOLockedValueBox(State(machine: PoolStateMachine(limits: limits)))
        self.connector = connector
        self.timerLoop = connector.group.any()
        self.observers = observers
    }

    // MARK: - Leasing

    /// Waits for a connection to `origin`: a free one, a new one, or the next one released.
    ///
    /// - Throws: ``AgentError`` when the wait times out, the task is cancelled, the Agent shuts down, or
    ///   the connection opened for this request fails.
    ///
    /// A connection dialled because of this request reports its events to `tracker`'s observers.
    ///
    /// With `fresh`, only a connection dialled for it (or at least never used) will do.
    func lease(_ origin: Origin, tracker: RequestTracker, fresh: Bool = false) async throws -> Lease {
        let requestID = self.lastRequestID.wrappingAdd(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            try await withThrowingContinuation { (continuation: ThrowingContinuation<Lease>) in
                let effects: [Effect] = self.state.withLockedValue { state in
                    // Cancellation sets the flag before running its handler, so checking it under the
                    // lock closes the window where the handler ran before the waiter existed.
                    if Task.isCancelled {
                        return [.resume(continuation, .failure(Self.error(for: .cancelled, origin: origin)))]
                    }
                    state.waiters[requestID] = continuation
                    let actions = state.machine.leaseRequested(requestID, origin: origin, now: .now(), fresh: fresh)
                    return self.resolve(actions, &state, changed: origin)
                }
                self.perform(effects, dialObservers: tracker.observers)
            }
        } onCancel: {
            self.modify(changed: origin) { $0.machine.waiterCancelled(requestID) }
        }
    }

    // MARK: - Events from connections and dials

    private func connectionEstablished(_ connection: HTTP1Connection) {
        // If no request waits for it any more, it is parked: free from now on.
        connection.markReleased(now: .now())
        self.modify(connection: connection.id) { state in
            state.connections[connection.id] = connection
            state.dials[connection.id] = nil
            return state.machine.connectionEstablished(connection.id, now: .now(), jitter: .random(in: 0..<1))
        }
    }

    private func connectionFailed(_ id: Int, error: AgentError) {
        self.modify(connection: id) { state in
            state.dials[id] = nil
            return state.machine.connectionFailed(id, error: error)
        }
    }

    private func idleTimerFired(_ id: Int, token: UInt64) {
        self.modify(connection: id, closeReason: .idleTimeout) { state in
            // A timer replaced by an earlier one has nothing to say.
            guard state.idleTimers[id]?.token == token else { return [] }
            state.idleTimers[id] = nil
            return state.machine.idleTimerFired(id, now: .now())
        }
    }

    private func waitTimerFired(_ request: UInt64) {
        self.modify(changed: self.state.withLockedValue { $0.machine.origin(ofWaiter: request) }) { state in
            state.waitTimers[request] = nil
            return state.machine.waitTimerFired(request)
        }
    }

    // MARK: - Shutdown and stats

    /// Fails waiters, closes every connection (failing requests in flight), and returns when all are closed.
    func shutdown() async {
        let dials = self.state.withLockedValue { Array($0.dials.values) }
        self.modify { $0.machine.shutdownRequested() }
        for dial in dials { dial.cancel() }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = self.state.withLockedValue { state in
                if state.machine.isShutdownComplete { return true }
                state.shutdownWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// A snapshot of every origin's pool.
    var snapshot: [Origin: PoolStateMachine.HostPool] {
        self.state.withLockedValue { $0.machine.hosts }
    }

    // MARK: - Running the machine

    /// Runs an event through the machine. `changed` names the origin whose pool the event concerns, for
    /// ``AgentObserver/poolChanged(_:)``; `closeReason` is why connections the machine closes are closed.
    private func modify(
        changed origin: Origin? = nil,
        closeReason: ConnectionCloseReason = .poolLimit,
        _ body: (inout State) -> [PoolAction]
    ) {
        let effects: [Effect] = self.state.withLockedValue { state in
            let actions = body(&state)
            return self.resolve(actions, &state, changed: origin, closeReason: closeReason)
        }
        self.perform(effects)
    }

    /// ``modify(changed:closeReason:_:)`` for an event about connection `id`.
    private func modify(
        connection id: Int,
        closeReason: ConnectionCloseReason = .poolLimit,
        _ body: (inout State) -> [PoolAction]
    ) {
        let effects: [Effect] = self.state.withLockedValue { state in
            // Looked up before the event: a close removes the connection from the machine.
            let origin = self.observers.isEmpty ? nil : state.machine.origin(ofConnection: id)
            let actions = body(&state)
            return self.resolve(actions, &state, changed: origin, closeReason: closeReason)
        }
        self.perform(effects)
    }

    /// Turns actions into effects under the lock, taking continuations and timers out of the state so
    /// that each is used exactly once.
    private func resolve(
        _ actions: [PoolAction],
        _ state: inout State,
        changed origin: Origin?,
        closeReason: ConnectionCloseReason = .poolLimit
    ) -> [Effect] {
        var effects: [Effect] = []
        effects.reserveCapacity(actions.count + 1)
        for action in actions {
            switch action {
            case .createConnection(let id, let origin):
                effects.append(.dial(id: id, origin: origin))
            case .lease(let connectionID, let request, let reused):
                guard let continuation = state.waiters.removeValue(forKey: request),
                    let connection = state.connections[connectionID]
                else {
                    preconditionFailure("lease of connection \(connectionID) to unknown request \(request)")
                }
                if let timer = state.waitTimers.removeValue(forKey: request) { effects.append(.cancel(timer)) }
                let lease = Lease(connection: connection, requestID: request, reused: reused)
                effects.append(.resume(continuation, .success(lease)))
            case .failRequest(let request, let failure, let origin):
                guard let continuation = state.waiters.removeValue(forKey: request) else {
                    preconditionFailure("failing unknown request \(request)")
                }
                if let timer = state.waitTimers.removeValue(forKey: request) { effects.append(.cancel(timer)) }
                effects.append(.resume(continuation, .failure(Self.error(for: failure, origin: origin))))
            case .closeConnection(let id, let reason):
                if let timer = state.idleTimers.removeValue(forKey: id)?.scheduled { effects.append(.cancel(timer)) }
                if let connection = state.connections[id] {
                    effects.append(
                        .close(connection, reason: state.machine.isShuttingDown ? .shutdown : reason ?? closeReason)
                    )
                }
            case .scheduleIdleTimer(let id, let deadline):
                // A running timer due no later will do: when it fires, the machine re-arms it if need be.
                if let running = state.idleTimers[id], running.deadline <= deadline { continue }
                if let connection = state.connections[id] {
                    // Reserved now, under the lock, so that the timer is known before it can fire.
                    if let replaced = state.idleTimers[id]?.scheduled { effects.append(.cancel(replaced)) }
                    state.nextTimerToken += 1
                    let token = state.nextTimerToken
                    state.idleTimers[id] = IdleTimer(scheduled: nil, deadline: deadline, token: token)
                    effects.append(.scheduleIdleTimer(id, deadline, token: token, connection))
                }
            case .scheduleWaitTimer(let request, let deadline):
                effects.append(.scheduleWaitTimer(request, deadline))
            case .shutdownComplete:
                effects.append(.shutdownComplete(state.shutdownWaiters))
                state.shutdownWaiters = []
            }
        }
        if !self.observers.isEmpty, let origin {
            // First, so that observers hear of the change before a waiter (a shutdown, say) resumes.
            effects.insert(.poolChanged(AgentStats.OriginStats(origin, state.machine.hosts[origin])), at: 0)
        }
        return effects
    }

    /// Performs effects outside the lock. Dials started here report their events to `dialObservers`
    /// (the Agent's and those of the request that caused them), else to the Agent's observers.
    private func perform(_ effects: [Effect], dialObservers: [any AgentObserver]? = nil) {
        for effect in effects {
            switch effect {
            case .resume(let continuation, let result):
                continuation.resume(with: result.mapError { $0 as any Error })
            case .dial(let id, let origin):
                self.dial(id: id, origin: origin, observers: dialObservers ?? self.observers)
            case .close(let connection, let reason):
                connection.close(reason: reason)
            case .cancel(let timer):
                timer.cancel()
            case .scheduleIdleTimer(let id, let deadline, let token, let connection):
                let timer = connection.eventLoop.scheduleTask(deadline: deadline) { [self] in
                    self.idleTimerFired(id, token: token)
                }
                let attached = self.state.withLockedValue { state in
                    // Unless the reservation is gone: fired already, replaced by an earlier one, or closed.
                    guard state.idleTimers[id]?.token == token else { return false }
                    state.idleTimers[id]?.scheduled = timer
                    return true
                }
                if !attached { timer.cancel() }
            case .scheduleWaitTimer(let request, let deadline):
                let timer = self.timerLoop.scheduleTask(deadline: deadline) { [self] in
                    self.waitTimerFired(request)
                }
                self.storeTimer(timer) { state in
                    guard state.waiters[request] != nil else { return false }
                    state.waitTimers[request] = timer
                    return true
                }
            case .shutdownComplete(let waiters):
                for waiter in waiters { waiter.resume() }
            case .poolChanged(let stats):
                for observer in self.observers { observer.poolChanged(stats) }
            }
        }
    }

    private func storeTimer(_ timer: Scheduled<Void>, _ store: (inout State) -> Bool) {
        let stored = self.state.withLockedValue { store(&$0) }
        if !stored { timer.cancel() }
    }

    private func dial(id: Int, origin: Origin, observers: [any AgentObserver]) {
        let events = ConnectionObservers(
            observers: observers,
            connection: ObservedConnection(
                id: id,
                scheme: origin.scheme.rawValue,
                host: origin.host,
                port: origin.port
            )
        )
        let task = Task {
            do throws(AgentError) {
                try await self.connector.connect(id: id, origin: origin, delegate: self, events: events) {
                    connection in
                    self.connectionEstablished(connection)
                }
            } catch {
                self.connectionFailed(id, error: error)
            }
        }
        let cancelNow = self.state.withLockedValue { state in
            // A fast dial may already be done; only keep the task while it can still be cancelled.
            guard state.machine.isConnecting(id) else { return false }
            state.dials[id] = task
            // A shutdown that began after this dial was decided did not see its task.
            return state.machine.isShuttingDown
        }
        if cancelNow {
            task.cancel()
        }
    }

    private static func error(for failure: PoolFailure, origin: Origin) -> AgentError {
        let host = origin.host
        let port = origin.port
        switch failure {
        case .shutdown:
            return AgentError(
                code: .shutdown,
                phase: .poolWait,
                host: host,
                port: port,
                message: "the Agent is shut down"
            )
        case .waitTimeout:
            return AgentError(
                code: .poolWaitTimeout,
                phase: .poolWait,
                host: host,
                port: port,
                message: "no connection became free within the pool wait timeout"
            )
        case .cancelled:
            return AgentError(
                code: .cancelled,
                phase: .poolWait,
                host: host,
                port: port,
                message: "the request was cancelled while waiting for a connection"
            )
        case .connectFailed(let error):
            return error
        }
    }
}

extension ConnectionPool: HTTP1ConnectionDelegate {
    /// A lease handed back without a request sent on it.
    func connectionReturnedUnused(_ id: Int) {
        let now = NIODeadline.now()
        self.modify(connection: id) { state in
            state.connections[id]?.markReleased(now: now)
            return state.machine.connectionReleased(id, now: now, unused: true)
        }
    }

    func connectionReleased(_ id: Int, keepAliveHint: TimeAmount?) {
        let now = NIODeadline.now()
        self.modify(connection: id) { state in
            state.connections[id]?.markReleased(now: now)
            return state.machine.connectionReleased(id, now: now, keepAliveHint: keepAliveHint)
        }
    }

    func connectionClosed(_ id: Int, reason: ConnectionCloseReason) {
        let timer: Scheduled<Void>? = self.state.withLockedValue {
            $0.idleTimers.removeValue(forKey: id)?.scheduled ?? nil
        }
        timer?.cancel()
        self.modify(connection: id) { state in
            state.connections[id] = nil
            return state.machine.connectionClosed(id)
        }
    }
}
