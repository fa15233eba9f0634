import NIOCore

extension Agent {
    /// What finished first: the lease or the request's deadline.
    private enum LeaseRace: Sendable {
        case lease(Lease)
        case deadline
    }

    /// A connection for `origin`, unless the request's `deadline` comes first.
    ///
    /// Without a deadline this is the pool's lease. With one, the lease races a timer in a task group;
    /// when the timer wins, the wait is cancelled and the request fails with
    /// ``AgentError/Code/requestTimeout``. A lease granted in the same instant is handed back to the
    /// pool unused, never lost. A connection being dialled for the request is not abandoned: it joins
    /// the pool for later requests.
    func lease(_ origin: Origin, tracker: RequestTracker, deadline: NIODeadline?, fresh: Bool) async throws -> Lease {
        guard let deadline else {
            return try await self.pool.lease(origin, tracker: tracker, fresh: fresh)
        }
        let pool = self.pool
        return try await withThrowingTaskGroup(of: LeaseRace.self) { group in
            group.addTask { .lease(try await pool.lease(origin, tracker: tracker, fresh: fresh)) }
            group.addTask {
                let remaining = deadline - .now()
                if remaining > .zero {
                    try await Task.sleep(for: .nanoseconds(remaining.nanoseconds))
                }
                return .deadline
            }
            var won: Lease?
            var expired = false
            var failure: (any Error)?
            while !group.isEmpty {
                do {
                    switch try await group.next() {
                    case .lease(let lease):
                        if expired || won != nil {
                            pool.connectionReturnedUnused(lease.connection.id)
                        } else {
                            won = lease
                            group.cancelAll()
                        }
                    case .deadline:
                        if won == nil && failure == nil {
                            expired = true
                            group.cancelAll()
                        }
                    case nil:
                        break
                    }
                } catch {
                    // The timer's sleep cancelled, or the lease failed (or was cancelled by the timer).
                    if !(error is CancellationError) && !expired && won == nil && failure == nil {
                        failure = error
                        group.cancelAll()
                    }
                }
            }
            if let won { return won }
            if expired {
                throw AgentError(
                    code: .requestTimeout,
                    phase: .poolWait,
                    host: origin.host,
                    port: origin.port,
                    message: "the request's time (requestTimeout) ran out while it waited for a connection"
                )
            }
            // Both children gone without a result: the caller's task was cancelled. Still an AgentError,
            // as execute promises.
            throw failure
                ?? AgentError(
                    code: .cancelled,
                    phase: .poolWait,
                    host: origin.host,
                    port: origin.port,
                    message: "the request was cancelled while waiting for a connection"
                )
        }
    }
}
