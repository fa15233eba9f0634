import NIOCore

/// Why the pool fails a waiting request.
enum PoolFailure: Sendable {
    case shutdown
    case waitTimeout
    case cancelled
    /// The connection opened for waiting requests failed; the oldest waiter gets its error.
    case connectFailed(AgentError)
}

/// What the pool's driver must do, as decided by ``PoolStateMachine``.
///
/// Timers are implicit in a few actions to keep the list short: handing out an idle connection or
/// closing one also cancels its idle timer; serving or failing a waiter also cancels its wait timer.
enum PoolAction: Sendable {
    /// Open a new connection for `origin`, with this id.
    case createConnection(id: Int, origin: Origin)
    /// Give connection `connection` to request `request`.
    case lease(connection: Int, request: UInt64, reused: Bool)
    /// Fail a waiting request for `origin`.
    case failRequest(UInt64, PoolFailure, Origin)
    /// Close a connection (idle, over a limit, worn out, or at shutdown), for `reason` if the machine
    /// knows better than the event's default.
    case closeConnection(Int, reason: ConnectionCloseReason? = nil)
    case scheduleIdleTimer(connection: Int, deadline: NIODeadline)
    case scheduleWaitTimer(request: UInt64, deadline: NIODeadline)
    /// Shutdown was requested and the last connection has closed.
    case shutdownComplete
}

/// Free-socket scheduling: which idle connection the next request gets.
public enum FreeSocketScheduling: Sendable, Hashable {
    /// The most recently used, so the others idle out sooner (fewer open sockets). Node's default.
    case lifo
    /// The least recently used, spreading requests over all free sockets.
    case fifo
}

/// The limits the pool enforces, in the state machine's terms.
struct PoolLimits: Sendable, Hashable {
    var maxSocketsPerHost: Int
    var maxFreeSocketsPerHost: Int
    var maxTotalSockets: Int?
    var idleTimeout: TimeAmount?
    var scheduling: FreeSocketScheduling
    var poolWaitTimeout: TimeAmount?
    var maxConnectionLifetime: TimeAmount? = nil
    var maxRequestsPerConnection: Int? = nil

    /// How much sooner than a server's `Keep-Alive: timeout` hint an idle connection is closed.
    static let keepAliveHintMargin = TimeAmount.seconds(1)
}
