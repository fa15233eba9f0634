import NIOCore
import Testing

@testable import HTTPSAgent

// MARK: - Making actions comparable (tests only)

extension PoolFailure: Equatable {
    static func == (lhs: PoolFailure, rhs: PoolFailure) -> Bool {
        switch (lhs, rhs) {
        case (.shutdown, .shutdown), (.waitTimeout, .waitTimeout), (.cancelled, .cancelled):
            return true
        case (.connectFailed(let lhsError), .connectFailed(let rhsError)):
            return lhsError == rhsError
        default:
            return false
        }
    }
}

extension PoolAction: Equatable {
    static func == (lhs: PoolAction, rhs: PoolAction) -> Bool {
        switch (lhs, rhs) {
        case (.createConnection(let lhsID, let lhsOrigin), .createConnection(let rhsID, let rhsOrigin)):
            return lhsID == rhsID && lhsOrigin == rhsOrigin
        case (
            .lease(let lhsConnection, let lhsRequest, let lhsReused),
            .lease(let rhsConnection, let rhsRequest, let rhsReused)
        ):
            return lhsConnection == rhsConnection && lhsRequest == rhsRequest && lhsReused == rhsReused
        case (
            .failRequest(let lhsRequest, let lhsFailure, let lhsOrigin),
            .failRequest(let rhsRequest, let rhsFailure, let rhsOrigin)
        ):
            return lhsRequest == rhsRequest && lhsFailure == rhsFailure && lhsOrigin == rhsOrigin
        case (.closeConnection(let lhsID, let lhsReason), .closeConnection(let rhsID, let rhsReason)):
            return lhsID == rhsID && lhsReason == rhsReason
        case (.scheduleIdleTimer(let lhsID, let lhsDeadline), .scheduleIdleTimer(let rhsID, let rhsDeadline)):
            return lhsID == rhsID && lhsDeadline == rhsDeadline
        case (.scheduleWaitTimer(let lhsRequest, let lhsDeadline), .scheduleWaitTimer(let rhsRequest, let rhsDeadline)):
            return lhsRequest == rhsRequest && lhsDeadline == rhsDeadline
        case (.shutdownComplete, .shutdownComplete):
            return true
        default:
            return false
        }
    }
}

// MARK: - Fixtures

private let originA = Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration())
private let originB = Origin(scheme: .https, host: "b.example", port: 443, tls: TLSConfiguration())

/// An arbitrary, fixed starting point of the tests' clock.
private let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

/// `t0` plus `milliseconds`.
private func at(_ milliseconds: Int64) -> NIODeadline {
    t0 + .milliseconds(milliseconds)
}

private func makeLimits(
    perHost: Int = 4,
    free: Int = 4,
    total: Int? = nil,
    idleTimeout: TimeAmount? = .seconds(5),
    scheduling: FreeSocketScheduling = .lifo,
    waitTimeout: TimeAmount? = nil
) -> PoolLimits {
    PoolLimits(
        maxSocketsPerHost: perHost,
        maxFreeSocketsPerHost: free,
        maxTotalSockets: total,
        idleTimeout: idleTimeout,
        scheduling: scheduling,
        poolWaitTimeout: waitTimeout
    )
}

private func dialError(_ message: String = "connection refused") -> AgentError {
    AgentError(code: .connectFailed, phase: .connect, host: "a.example", port: 443, message: message)
}

/// Checks that two action lists hold the same actions, in any order (for actions produced while iterating
/// over dictionaries or sets, such as at shutdown).
private func expectSameActions(
    _ actual: [PoolAction],
    _ expected: [PoolAction],
    sourceLocation: SourceLocation = #_sourceLocation
) {
    var remaining = actual
    for action in expected {
        if let index = remaining.firstIndex(of: action) {
            remaining.remove(at: index)
        } else {
            Issue.record("expected \(action) in \(actual)", sourceLocation: sourceLocation)
        }
    }
    #expect(remaining.isEmpty, "unexpected actions \(remaining)", sourceLocation: sourceLocation)
}

extension PoolStateMachine {
    /// Requests a lease that must be served by dialling connection `expectedConnection` (a request with a
    /// dial of its own gets no wait timer), establishes it and checks that it is leased to the request as
    /// a new connection.
    fileprivate mutating func leaseNew(
        _ request: UInt64,
        origin: Origin,
        expectedConnection: Int,
        now: NIODeadline = t0,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(
            self.leaseRequested(request, origin: origin, now: now)
                == [.createConnection(id: expectedConnection, origin: origin)],
            sourceLocation: sourceLocation
        )
        #expect(
            self.connectionEstablished(expectedConnection, now: now)
                == [.lease(connection: expectedConnection, request: request, reused: false)],
            sourceLocation: sourceLocation
        )
    }

    fileprivate func waiters(_ origin: Origin) -> [UInt64] {
        self.hosts[origin].map { Array($0.waiters) } ?? []
    }

    fileprivate func idleIDs(_ origin: Origin) -> [Int] {
        self.hosts[origin]?.idle.map(\.id) ?? []
    }

    fileprivate func closing(_ origin: Origin) -> Set<Int> {
        self.hosts[origin]?.closing ?? []
    }

    fileprivate func leased(_ origin: Origin) -> Set<Int> {
        self.hosts[origin]?.leased ?? []
    }

    fileprivate func connecting(_ origin: Origin) -> Set<Int> {
        self.hosts[origin]?.connecting ?? []
    }
}

/// Origins that each differ from `originA` in one respect.
private let originsDifferingFromA: [Origin] = {
    var tls13 = TLSConfiguration()
    tls13.minimumVersion = .tls1_3
    return [
        Origin(scheme: .http, host: "a.example", port: 443, tls: nil),
        Origin(scheme: .https, host: "b.example", port: 443, tls: TLSConfiguration()),
        Origin(scheme: .https, host: "a.example", port: 8443, tls: TLSConfiguration()),
        Origin(scheme: .https, host: "a.example", port: 443, tls: nil),
        Origin(scheme: .https, host: "a.example", port: 443, tls: tls13),
        Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration(certificateVerification: .none)),
        Origin(
            scheme: .https,
            host: "a.example",
            port: 443,
            tls: TLSConfiguration(certificateVerification: .noHostnameVerification)
        ),
        Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration(trustRoots: .pem("ROOT"))),
        Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration(trustRoots: .file("/ca.pem"))),
        Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration(maximumVersion: .tls1_2)),
        Origin(
            scheme: .https,
            host: "a.example",
            port: 443,
            tls: TLSConfiguration(clientCertificate: .pem(certificateChain: "CHAIN", privateKey: "KEY"))
        ),
    ]
}()

// MARK: - Tests

@Suite("PoolStateMachine")
struct PoolStateMachineTests {
    // MARK: First lease and reuse

    @Test func firstLeaseDialsAndTheRequestWaitsUntilEstablished() throws {
        var machine = PoolStateMachine(limits: makeLimits())

        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        let host = try #require(machine.hosts[originA])
        #expect(Array(host.waiters) == [1])
        #expect(host.connecting == [1])
        #expect(host.leased.isEmpty && host.idle.isEmpty && host.closing.isEmpty)
        #expect(machine.isConnecting(1))
        #expect(machine.totalConnections == 1)

        #expect(
            machine.connectionEstablished(1, now: at(10)) == [.lease(connection: 1, request: 1, reused: false)]
        )
        #expect(machine.waiters(originA).isEmpty)
        #expect(machine.leased(originA) == [1])
        #expect(!machine.isConnecting(1))
        #expect(!machine.isIdle(1))
        #expect(machine.totalConnections == 1)
    }

    @Test func releaseWithoutWaiterParksTheConnectionAndTheNextLeaseReusesIt() throws {
        var machine = PoolStateMachine(limits: makeLimits(idleTimeout: .seconds(5)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)

        #expect(
            machine.connectionReleased(1, now: at(100))
                == [.scheduleIdleTimer(connection: 1, deadline: at(100) + .seconds(5))]
        )
        #expect(machine.isIdle(1))
        let host = try #require(machine.hosts[originA])
        #expect(host.idle == [PoolStateMachine.IdleConnection(id: 1, since: at(100), deadline: at(100) + .seconds(5))])
        #expect(host.leased.isEmpty)

        #expect(
            machine.leaseRequested(2, origin: originA, now: at(200))
                == [.lease(connection: 1, request: 2, reused: true)]
        )
        #expect(!machine.isIdle(1))
        #expect(machine.leased(originA) == [1])
        #expect(machine.totalConnections == 1)
    }

    @Test func withoutIdleTimeoutAReleasedConnectionIsParkedWithoutTimer() {
        var machine = PoolStateMachine(limits: makeLimits(idleTimeout: nil))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)

        #expect(machine.connectionReleased(1, now: at(100)) == [])
        #expect(machine.isIdle(1))
        #expect(machine.idleTimerFired(1, now: at(1_000_000)) == [])
        #expect(machine.isIdle(1))
        #expect(
            machine.leaseRequested(2, origin: originA, now: at(200))
                == [.lease(connection: 1, request: 2, reused: true)]
        )
    }

    @Test func aRequestServedByADialOrFromTheFreeListGetsNoWaitTimer() {
        var machine = PoolStateMachine(limits: makeLimits(waitTimeout: .seconds(2)))
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.connectionEstablished(1, now: t0) == [.lease(connection: 1, request: 1, reused: false)])
        _ = machine.connectionReleased(1, now: at(10))
        #expect(
            machine.leaseRequested(2, origin: originA, now: at(20)) == [.lease(connection: 1, request: 2, reused: true)]
        )
    }

    // MARK: Free-socket scheduling

    @Test(arguments: [FreeSocketScheduling.lifo, .fifo])
    func freeSocketSchedulingPicksMostOrLeastRecentlyReleased(_ scheduling: FreeSocketScheduling) {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 4, free: 4, scheduling: scheduling))
        for id in 1...3 {
            machine.leaseNew(UInt64(id), origin: originA, expectedConnection: id)
        }
        // Released in the order 2, 3, 1.
        _ = machine.connectionReleased(2, now: at(10))
        _ = machine.connectionReleased(3, now: at(20))
        _ = machine.connectionReleased(1, now: at(30))
        #expect(machine.idleIDs(originA) == [2, 3, 1])

        var handedOut: [Int] = []
        for request in UInt64(4)...6 {
            let actions = machine.leaseRequested(request, origin: originA, now: at(40))
            guard actions.count == 1, case .lease(let connection, request, true) = actions[0] else {
                Issue.record("expected a reused lease, got \(actions)")
                return
            }
            handedOut.append(connection)
        }
        switch scheduling {
        case .lifo: #expect(handedOut == [1, 3, 2])
        case .fifo: #expect(handedOut == [2, 3, 1])
        }
        #expect(machine.totalConnections == 3)
    }

    // MARK: maxSocketsPerHost

    @Test(arguments: [(5, 2), (3, 3), (6, 1), (1, 4), (8, 3)])
    func requestsBeyondMaxSocketsPerHostWaitAndAreServedInOrder(requests: Int, limit: Int) {
        var machine = PoolStateMachine(limits: makeLimits(perHost: limit, free: limit))
        var created: [Int] = []
        for request in 1...requests {
            for action in machine.leaseRequested(UInt64(request), origin: originA, now: at(Int64(request))) {
                guard case .createConnection(let id, originA) = action else {
                    Issue.record("unexpected \(action)")
                    continue
                }
                created.append(id)
            }
        }
        #expect(created == Array(1...min(requests, limit)))
        #expect(machine.totalConnections == min(requests, limit))
        #expect(machine.waiters(originA) == (1...requests).map { UInt64($0) })

        // Establish the connections in reverse order: the oldest waiter still gets the first one.
        var served: [UInt64] = []
        for id in created.reversed() {
            let actions = machine.connectionEstablished(id, now: at(100))
            guard actions.count == 1, case .lease(id, let request, false) = actions[0] else {
                Issue.record("expected a new lease of \(id), got \(actions)")
                return
            }
            served.append(request)
        }
        // Release round-robin; each release goes to the oldest waiter still waiting.
        var time: Int64 = 200
        while served.count < requests {
            for id in created where served.count < requests {
                time += 1
                let actions = machine.connectionReleased(id, now: at(time))
                guard actions.count == 1, case .lease(id, let request, true) = actions[0] else {
                    Issue.record("expected a reused lease of \(id), got \(actions)")
                    return
                }
                served.append(request)
            }
        }
        #expect(served == (1...requests).map { UInt64($0) })
        #expect(machine.waiters(originA).isEmpty)
        #expect(machine.totalConnections == min(requests, limit))
    }

    @Test func aReleasedConnectionGoesToTheOldestWaiter() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2))
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.leaseRequested(2, origin: originA, now: t0) == [.createConnection(id: 2, origin: originA)])
        for request in UInt64(3)...5 {
            #expect(machine.leaseRequested(request, origin: originA, now: t0) == [])
        }
        #expect(machine.connectionEstablished(2, now: at(1)) == [.lease(connection: 2, request: 1, reused: false)])
        #expect(machine.connectionEstablished(1, now: at(2)) == [.lease(connection: 1, request: 2, reused: false)])
        #expect(machine.connectionReleased(1, now: at(3)) == [.lease(connection: 1, request: 3, reused: true)])
        #expect(machine.connectionReleased(2, now: at(4)) == [.lease(connection: 2, request: 4, reused: true)])
        #expect(machine.connectionReleased(1, now: at(5)) == [.lease(connection: 1, request: 5, reused: true)])
        #expect(
            machine.connectionReleased(2, now: at(6))
                == [.scheduleIdleTimer(connection: 2, deadline: at(6) + .seconds(5))]
        )
        #expect(machine.totalConnections == 2)
    }

    // MARK: maxFreeSocketsPerHost

    @Test func releasingBeyondMaxFreeSocketsClosesTheConnection() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 4, free: 1))
        for id in 1...3 {
            machine.leaseNew(UInt64(id), origin: originA, expectedConnection: id)
        }
        #expect(
            machine.connectionReleased(1, now: at(10))
                == [.scheduleIdleTimer(connection: 1, deadline: at(10) + .seconds(5))]
        )
        #expect(machine.connectionReleased(2, now: at(20)) == [.closeConnection(2)])
        #expect(machine.connectionReleased(3, now: at(30)) == [.closeConnection(3)])
        #expect(machine.idleIDs(originA) == [1])
        #expect(machine.closing(originA) == [2, 3])
        #expect(machine.totalConnections == 3, "closing connections count until closed")

        #expect(machine.connectionClosed(2) == [])
        #expect(machine.connectionClosed(3) == [])
        #expect(machine.totalConnections == 1)
        #expect(machine.closing(originA).isEmpty)
    }

    @Test func maxFreeSocketsZeroClosesEveryReleasedConnection() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 4, free: 0))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originA, expectedConnection: 2)
        #expect(machine.connectionReleased(1, now: at(10)) == [.closeConnection(1)])
        #expect(machine.connectionReleased(2, now: at(10)) == [.closeConnection(2)])
        #expect(!machine.isIdle(1) && !machine.isIdle(2))
        #expect(machine.closing(originA) == [1, 2])

        #expect(machine.connectionClosed(1) == [])
        #expect(machine.connectionClosed(2) == [])
        #expect(machine.hosts[originA] == nil)
        #expect(machine.totalConnections == 0)

        // The next request needs a new connection.
        #expect(machine.leaseRequested(3, origin: originA, now: at(20)) == [.createConnection(id: 3, origin: originA)])
    }

    @Test func maxFreeSocketsZeroClosesAConnectionEstablishedWithoutWaiter() {
        var machine = PoolStateMachine(limits: makeLimits(free: 0))
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.waiterCancelled(1) == [.failRequest(1, .cancelled, originA)])
        #expect(machine.connectionEstablished(1, now: at(1)) == [.closeConnection(1)])
        #expect(machine.connectionClosed(1) == [])
        #expect(machine.hosts.isEmpty)
    }

    @Test func closingConnectionsCountTowardMaxSocketsPerHost() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1, free: 0))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(machine.connectionReleased(1, now: at(10)) == [.closeConnection(1)])
        // Connection 1 is still closing: no second socket to the host yet.
        #expect(machine.leaseRequested(2, origin: originA, now: at(20)) == [])
        #expect(machine.waiters(originA) == [2])
        #expect(machine.connectionClosed(1) == [.createConnection(id: 2, origin: originA)])
        #expect(machine.connectionEstablished(2, now: at(30)) == [.lease(connection: 2, request: 2, reused: false)])
    }

    // MARK: Idle timer

    @Test func idleTimerClosesOnlyOnceTheIdleTimeoutHasPassed() {
        var machine = PoolStateMachine(limits: makeLimits(idleTimeout: .seconds(5)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(
            machine.connectionReleased(1, now: at(1000)) == [.scheduleIdleTimer(connection: 1, deadline: at(6000))]
        )

        // Early (the driver may leave a timer running across a lease): set again for the deadline.
        #expect(machine.idleTimerFired(1, now: at(5999)) == [.scheduleIdleTimer(connection: 1, deadline: at(6000))])
        #expect(machine.isIdle(1))

        #expect(machine.idleTimerFired(1, now: at(6000)) == [.closeConnection(1)])
        #expect(!machine.isIdle(1))
        #expect(machine.closing(originA) == [1])
        #expect(machine.totalConnections == 1)

        // A second firing for a closing connection does nothing.
        #expect(machine.idleTimerFired(1, now: at(7000)) == [])
        #expect(machine.connectionClosed(1) == [])
        #expect(machine.hosts.isEmpty)
        #expect(machine.totalConnections == 0)
        // And after it closed neither.
        #expect(machine.idleTimerFired(1, now: at(8000)) == [])
    }

    @Test func staleIdleTimerOfAConnectionLeasedAgainDoesNothing() {
        var machine = PoolStateMachine(limits: makeLimits(idleTimeout: .seconds(5)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        _ = machine.connectionReleased(1, now: at(1000))
        #expect(
            machine.leaseRequested(2, origin: originA, now: at(2000))
                == [.lease(connection: 1, request: 2, reused: true)]
        )

        #expect(machine.idleTimerFired(1, now: at(6000)) == [])
        #expect(machine.leased(originA) == [1])
        #expect(machine.closing(originA).isEmpty)
    }

    @Test func staleIdleTimerOfAConnectionReleasedAgainLaterIsSetForTheNewDeadline() {
        var machine = PoolStateMachine(limits: makeLimits(idleTimeout: .seconds(5)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(machine.connectionReleased(1, now: at(1000)) == [.scheduleIdleTimer(connection: 1, deadline: at(6000))])
        _ = machine.leaseRequested(2, origin: originA, now: at(2000))
        #expect(machine.connectionReleased(1, now: at(3000)) == [.scheduleIdleTimer(connection: 1, deadline: at(8000))])

        #expect(machine.idleTimerFired(1, now: at(6000)) == [.scheduleIdleTimer(connection: 1, deadline: at(8000))])
        #expect(machine.isIdle(1))
        #expect(machine.idleTimerFired(1, now: at(8000)) == [.closeConnection(1)])
    }

    @Test func idleTimerClosesOnlyItsOwnConnection() {
        var machine = PoolStateMachine(limits: makeLimits(idleTimeout: .seconds(5)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originA, expectedConnection: 2)
        _ = machine.connectionReleased(1, now: at(1000))
        _ = machine.connectionReleased(2, now: at(2000))

        #expect(machine.idleTimerFired(1, now: at(6000)) == [.closeConnection(1)])
        #expect(machine.idleIDs(originA) == [2])
        #expect(machine.idleTimerFired(2, now: at(6500)) == [.scheduleIdleTimer(connection: 2, deadline: at(7000))])
        #expect(machine.idleTimerFired(2, now: at(7000)) == [.closeConnection(2)])
    }

    @Test func idleTimerOfAnUnknownConnectionDoesNothing() {
        var machine = PoolStateMachine(limits: makeLimits())
        #expect(machine.idleTimerFired(42, now: at(100_000)) == [])
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        // Leased, not idle.
        #expect(machine.idleTimerFired(1, now: at(100_000)) == [])
        #expect(machine.leased(originA) == [1])
    }

    // MARK: connectionClosed

    @Test func connectionClosedWhileIdleForgetsIt() {
        var machine = PoolStateMachine(limits: makeLimits())
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originA, expectedConnection: 2)
        _ = machine.connectionReleased(1, now: at(10))
        _ = machine.connectionReleased(2, now: at(20))

        #expect(machine.connectionClosed(2) == [])
        #expect(!machine.isIdle(2))
        #expect(machine.idleIDs(originA) == [1])
        #expect(machine.totalConnections == 1)
        #expect(machine.connectionClosed(1) == [])
        #expect(machine.hosts[originA] == nil)
        #expect(machine.totalConnections == 0)

        // Nothing is left to reuse, and a late idle timer or release is ignored.
        #expect(machine.idleTimerFired(1, now: at(10_000)) == [])
        #expect(machine.connectionReleased(1, now: at(30)) == [])
        #expect(machine.leaseRequested(3, origin: originA, now: at(40)) == [.createConnection(id: 3, origin: originA)])
    }

    @Test func connectionClosedWhileLeasedFreesASlotForAWaiter() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(machine.leaseRequested(2, origin: originA, now: at(10)) == [])

        #expect(machine.connectionClosed(1) == [.createConnection(id: 2, origin: originA)])
        #expect(machine.leased(originA).isEmpty)
        #expect(machine.connecting(originA) == [2])
        // The closed connection's release, should it still come, is ignored.
        #expect(machine.connectionReleased(1, now: at(20)) == [])
        #expect(machine.connectionEstablished(2, now: at(30)) == [.lease(connection: 2, request: 2, reused: false)])
    }

    @Test func connectionClosedWhileLeasedWithoutWaiters() {
        var machine = PoolStateMachine(limits: makeLimits())
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(machine.connectionClosed(1) == [])
        #expect(machine.hosts.isEmpty)
        #expect(machine.totalConnections == 0)
        // A second report of the same close is ignored.
        #expect(machine.connectionClosed(1) == [])
    }

    @Test func connectionClosedWhileClosingCompletesTheClose() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1, free: 0))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(machine.connectionReleased(1, now: at(10)) == [.closeConnection(1)])
        #expect(machine.closing(originA) == [1])
        #expect(machine.leaseRequested(2, origin: originA, now: at(20)) == [])

        #expect(machine.connectionClosed(1) == [.createConnection(id: 2, origin: originA)])
        #expect(machine.closing(originA).isEmpty)
        #expect(machine.totalConnections == 1)
        #expect(machine.connectionClosed(1) == [])
    }

    // MARK: connectionFailed

    @Test func connectionFailedFailsTheWaiterWithTheError() {
        var machine = PoolStateMachine(limits: makeLimits())
        let error = dialError()
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.connectionFailed(1, error: error) == [.failRequest(1, .connectFailed(error), originA)])
        #expect(machine.hosts.isEmpty)
        #expect(machine.totalConnections == 0)
        #expect(!machine.isConnecting(1))
    }

    @Test func connectionFailedFailsTheOldestWaiterAndDialsForTheRest() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2))
        let error = dialError()
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.leaseRequested(2, origin: originA, now: t0) == [.createConnection(id: 2, origin: originA)])
        #expect(machine.leaseRequested(3, origin: originA, now: t0) == [])

        // Connection 2's dial fails: request 1 (the oldest) gets the error, and request 3, which no dial
        // serves any more, gets a new one.
        #expect(
            machine.connectionFailed(2, error: error) == [
                .failRequest(1, .connectFailed(error), originA),
                .createConnection(id: 3, origin: originA),
            ]
        )
        #expect(machine.waiters(originA) == [2, 3])
        #expect(machine.connecting(originA) == [1, 3])
        #expect(machine.connectionEstablished(3, now: at(10)) == [.lease(connection: 3, request: 2, reused: false)])
        #expect(machine.connectionEstablished(1, now: at(10)) == [.lease(connection: 1, request: 3, reused: false)])
    }

    @Test func repeatedDialFailuresFailOneWaiterEach() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1))
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.leaseRequested(2, origin: originA, now: t0) == [])
        #expect(machine.leaseRequested(3, origin: originA, now: t0) == [])

        let first = dialError("first")
        let second = dialError("second")
        #expect(
            machine.connectionFailed(1, error: first) == [
                .failRequest(1, .connectFailed(first), originA),
                .createConnection(id: 2, origin: originA),
            ]
        )
        #expect(
            machine.connectionFailed(2, error: second) == [
                .failRequest(2, .connectFailed(second), originA),
                .createConnection(id: 3, origin: originA),
            ]
        )
        #expect(machine.connectionEstablished(3, now: at(10)) == [.lease(connection: 3, request: 3, reused: false)])
    }

    @Test func connectionFailedFailsNobodyWhileOtherDialsServeEveryWaiter() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 3))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(machine.leaseRequested(2, origin: originA, now: t0) == [.createConnection(id: 2, origin: originA)])
        #expect(machine.leaseRequested(3, origin: originA, now: t0) == [.createConnection(id: 3, origin: originA)])
        // Request 2 is served by the released connection; one waiter, two dials left.
        #expect(machine.connectionReleased(1, now: at(10)) == [.lease(connection: 1, request: 2, reused: true)])

        #expect(machine.connectionFailed(2, error: dialError()) == [])
        #expect(machine.waiters(originA) == [3])
        #expect(machine.connectionEstablished(3, now: at(20)) == [.lease(connection: 3, request: 3, reused: false)])
    }

    @Test func connectionFailedAfterItsWaiterWasCancelledFailsNobody() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2))
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.leaseRequested(2, origin: originA, now: t0) == [.createConnection(id: 2, origin: originA)])
        #expect(machine.waiterCancelled(1) == [.failRequest(1, .cancelled, originA)])

        #expect(machine.connectionFailed(1, error: dialError()) == [])
        #expect(machine.connectionEstablished(2, now: at(10)) == [.lease(connection: 2, request: 2, reused: false)])
        #expect(machine.totalConnections == 1)
    }

    @Test func connectionFailedWithoutAnyWaiter() {
        var machine = PoolStateMachine(limits: makeLimits())
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.waiterCancelled(1) == [.failRequest(1, .cancelled, originA)])
        #expect(machine.connectionFailed(1, error: dialError()) == [])
        #expect(machine.hosts.isEmpty)
        #expect(machine.totalConnections == 0)
    }

    // MARK: Cancellation and wait timeout

    @Test func waitTimerIsScheduledOnlyWithPoolWaitTimeout() {
        var withTimeout = PoolStateMachine(limits: makeLimits(perHost: 1, waitTimeout: .milliseconds(2500)))
        withTimeout.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(
            withTimeout.leaseRequested(2, origin: originA, now: at(100))
                == [.scheduleWaitTimer(request: 2, deadline: at(2600))]
        )
        var withoutTimeout = PoolStateMachine(limits: makeLimits(perHost: 1, waitTimeout: nil))
        withoutTimeout.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(withoutTimeout.leaseRequested(2, origin: originA, now: at(100)) == [])
    }

    @Test func onlyTheRequestsLeftWithoutADialGetAWaitTimer() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, waitTimeout: .seconds(1)))
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.createConnection(id: 1, origin: originA)])
        #expect(machine.leaseRequested(2, origin: originA, now: t0) == [.createConnection(id: 2, origin: originA)])
        #expect(
            machine.leaseRequested(3, origin: originA, now: at(1)) == [
                .scheduleWaitTimer(request: 3, deadline: at(1001))
            ]
        )
        #expect(
            machine.leaseRequested(4, origin: originA, now: at(2)) == [
                .scheduleWaitTimer(request: 4, deadline: at(1002))
            ]
        )
    }

    @Test func aRequestWaitingAtTheGlobalLimitGetsAWaitTimer() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, total: 1, waitTimeout: .seconds(1)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(
            machine.leaseRequested(2, origin: originB, now: at(10)) == [
                .scheduleWaitTimer(request: 2, deadline: at(1010))
            ]
        )
    }

    @Test func waitTimeoutIsScheduledAlsoForRequestsWaitingAtTheLimit() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1, waitTimeout: .seconds(1)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(
            machine.leaseRequested(2, origin: originA, now: at(10))
                == [.scheduleWaitTimer(request: 2, deadline: at(1010))]
        )
        #expect(machine.waitTimerFired(2) == [.failRequest(2, .waitTimeout, originA)])
        #expect(machine.waiters(originA).isEmpty)
        // The connection is released with nobody waiting any more.
        #expect(machine.connectionReleased(1, now: at(20)) == [.scheduleIdleTimer(connection: 1, deadline: at(5020))])
    }

    @Test func waitTimerFailsTheWaiterAndItsLateDialGoesToTheFreeList() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, total: 1, waitTimeout: .seconds(2)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(
            machine.leaseRequested(2, origin: originB, now: t0) == [.scheduleWaitTimer(request: 2, deadline: at(2000))]
        )
        // A's connection makes room for B, whose dial is still under way when the wait timer fires.
        #expect(machine.connectionReleased(1, now: at(10)) == [.closeConnection(1)])
        #expect(machine.connectionClosed(1) == [.createConnection(id: 2, origin: originB)])

        #expect(machine.waitTimerFired(2) == [.failRequest(2, .waitTimeout, originB)])
        #expect(machine.waiters(originB).isEmpty)
        #expect(machine.connecting(originB) == [2])
        // Firing or cancelling once more does nothing.
        #expect(machine.waitTimerFired(2) == [])
        #expect(machine.waiterCancelled(2) == [])

        #expect(
            machine.connectionEstablished(2, now: at(3000)) == [.scheduleIdleTimer(connection: 2, deadline: at(8000))]
        )
        #expect(machine.isIdle(2))
    }

    @Test func cancellingAWaiterFailsItOnce() {
        var machine = PoolStateMachine(limits: makeLimits())
        _ = machine.leaseRequested(1, origin: originA, now: t0)
        #expect(machine.waiterCancelled(1) == [.failRequest(1, .cancelled, originA)])
        #expect(machine.waiterCancelled(1) == [])
        #expect(machine.waitTimerFired(1) == [])
    }

    @Test func unknownAndServedRequestsProduceNoActions() {
        var machine = PoolStateMachine(limits: makeLimits(waitTimeout: .seconds(1)))
        #expect(machine.waiterCancelled(42) == [])
        #expect(machine.waitTimerFired(42) == [])

        _ = machine.leaseRequested(1, origin: originA, now: t0)
        _ = machine.connectionEstablished(1, now: at(1))
        #expect(machine.waiterCancelled(1) == [])
        #expect(machine.waitTimerFired(1) == [])
        #expect(machine.leased(originA) == [1])

        _ = machine.connectionReleased(1, now: at(2))
        #expect(
            machine.leaseRequested(2, origin: originA, now: at(3)) == [.lease(connection: 1, request: 2, reused: true)]
        )
        #expect(machine.waiterCancelled(2) == [])
        #expect(machine.waitTimerFired(2) == [])
    }

    @Test func cancellingAWaiterInTheMiddleKeepsTheOthersInOrder() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        for request in UInt64(2)...4 {
            #expect(machine.leaseRequested(request, origin: originA, now: t0) == [])
        }
        #expect(machine.waiterCancelled(3) == [.failRequest(3, .cancelled, originA)])
        #expect(machine.waiters(originA) == [2, 4])
        #expect(machine.connectionReleased(1, now: at(1)) == [.lease(connection: 1, request: 2, reused: true)])
        #expect(machine.connectionReleased(1, now: at(2)) == [.lease(connection: 1, request: 4, reused: true)])
    }

    // MARK: Shutdown

    @Test func shutdownWithoutConnectionsCompletesAtOnce() {
        var machine = PoolStateMachine(limits: makeLimits())
        #expect(machine.shutdownRequested() == [.shutdownComplete])
        #expect(machine.isShuttingDown)
        #expect(machine.isShutdownComplete)
        #expect(machine.shutdownRequested() == [])
        #expect(machine.leaseRequested(1, origin: originA, now: t0) == [.failRequest(1, .shutdown, originA)])
        #expect(machine.hosts.isEmpty)
        #expect(machine.totalConnections == 0)
    }

    @Test func shutdownFailsWaitersClosesConnectionsAndCompletesWithTheLastClose() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, waitTimeout: .seconds(60)))
        var all: [PoolAction] = []
        // A: connection 1 leased to request 1, connection 2 idle.
        _ = machine.leaseRequested(1, origin: originA, now: t0)
        _ = machine.leaseRequested(2, origin: originA, now: t0)
        _ = machine.connectionEstablished(1, now: t0)
        _ = machine.connectionEstablished(2, now: t0)
        _ = machine.connectionReleased(2, now: at(10))
        // B: connections 3 and 4 dialling for requests 3 and 4, request 5 waiting at the limit.
        for request in UInt64(3)...5 {
            _ = machine.leaseRequested(request, origin: originB, now: at(20))
        }
        #expect(machine.connecting(originB) == [3, 4])
        #expect(machine.waiters(originB) == [3, 4, 5])

        let shutdown = machine.shutdownRequested()
        all += shutdown
        expectSameActions(
            shutdown,
            [
                .failRequest(3, .shutdown, originB),
                .failRequest(4, .shutdown, originB),
                .failRequest(5, .shutdown, originB),
                .closeConnection(2),
                .closeConnection(1),
            ]
        )
        #expect(machine.isShuttingDown)
        #expect(!machine.isShutdownComplete)
        #expect(machine.totalConnections == 4)
        #expect(machine.waiters(originB).isEmpty)
        #expect(machine.closing(originA) == [1, 2])

        // Waiters cannot be failed twice; new requests are refused.
        #expect(machine.waiterCancelled(5) == [])
        #expect(machine.waitTimerFired(5) == [])
        #expect(machine.leaseRequested(6, origin: originA, now: at(30)) == [.failRequest(6, .shutdown, originA)])
        #expect(machine.hosts[originA]?.waiters.isEmpty ?? true)

        // The leased connection's request finishes: it is already closing.
        var step = machine.connectionReleased(1, now: at(40))
        #expect(step == [])
        all += step
        // A dial that completes is closed, one that fails fails nobody.
        step = machine.connectionEstablished(3, now: at(50))
        #expect(step == [.closeConnection(3)])
        all += step
        step = machine.connectionFailed(4, error: dialError())
        #expect(step == [])
        all += step
        step = machine.idleTimerFired(2, now: at(100_000))
        #expect(step == [])
        all += step

        for id in [1, 2] {
            step = machine.connectionClosed(id)
            #expect(step == [])
            all += step
        }
        #expect(!machine.isShutdownComplete)
        step = machine.connectionClosed(3)
        #expect(step == [.shutdownComplete])
        all += step
        #expect(machine.isShutdownComplete)
        #expect(machine.hosts.isEmpty)
        #expect(machine.totalConnections == 0)

        // Nothing that comes later completes shutdown again.
        all += machine.connectionClosed(3)
        all += machine.shutdownRequested()
        all += machine.leaseRequested(7, origin: originB, now: at(60))
        #expect(all.filter { $0 == .shutdownComplete }.count == 1)
    }

    @Test func shutdownCompletesWhenTheLastDialFails() {
        var machine = PoolStateMachine(limits: makeLimits())
        _ = machine.leaseRequested(1, origin: originA, now: t0)
        #expect(machine.shutdownRequested() == [.failRequest(1, .shutdown, originA)])
        #expect(machine.connectionFailed(1, error: dialError()) == [.shutdownComplete])
        #expect(machine.isShutdownComplete)
    }

    @Test func aConnectionEstablishedAfterShutdownIsClosed() {
        var machine = PoolStateMachine(limits: makeLimits())
        _ = machine.leaseRequested(1, origin: originA, now: t0)
        #expect(machine.shutdownRequested() == [.failRequest(1, .shutdown, originA)])
        #expect(machine.connectionEstablished(1, now: at(10)) == [.closeConnection(1)])
        #expect(machine.closing(originA) == [1])
        #expect(!machine.isIdle(1))
        #expect(machine.connectionClosed(1) == [.shutdownComplete])
    }

    @Test func shutdownWithOnlyIdleConnections() {
        var machine = PoolStateMachine(limits: makeLimits())
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originB, expectedConnection: 2)
        _ = machine.connectionReleased(1, now: at(10))
        _ = machine.connectionReleased(2, now: at(20))
        expectSameActions(machine.shutdownRequested(), [.closeConnection(1), .closeConnection(2)])
        #expect(machine.connectionClosed(2) == [])
        #expect(machine.connectionClosed(1) == [.shutdownComplete])
    }

    // MARK: maxTotalSockets

    @Test func atTheGlobalLimitTheLeastRecentlyUsedIdleConnectionOfAnotherOriginIsClosed() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, free: 2, total: 2))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originA, expectedConnection: 2)
        // Connection 2 is released first, so it is the least recently used.
        _ = machine.connectionReleased(2, now: at(10))
        _ = machine.connectionReleased(1, now: at(20))

        #expect(machine.leaseRequested(3, origin: originB, now: at(30)) == [.closeConnection(2)])
        #expect(machine.waiters(originB) == [3])
        #expect(machine.connecting(originB).isEmpty)
        #expect(machine.closing(originA) == [2])
        #expect(machine.isIdle(1))
        #expect(machine.totalConnections == 2)

        // B dials once A's close is reported.
        #expect(machine.connectionClosed(2) == [.createConnection(id: 3, origin: originB)])
        #expect(machine.connectionEstablished(3, now: at(40)) == [.lease(connection: 3, request: 3, reused: false)])

        // A second request for B evicts A's other connection.
        #expect(machine.leaseRequested(4, origin: originB, now: at(50)) == [.closeConnection(1)])
        #expect(machine.connectionClosed(1) == [.createConnection(id: 4, origin: originB)])
        #expect(machine.hosts[originA] == nil)
        #expect(machine.totalConnections == 2)
    }

    @Test func evictionCountsConnectionsAlreadyClosing() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 3, free: 3, total: 3))
        for id in 1...3 {
            machine.leaseNew(UInt64(id), origin: originA, expectedConnection: id)
        }
        _ = machine.connectionReleased(1, now: at(10))
        _ = machine.connectionReleased(2, now: at(20))
        _ = machine.connectionReleased(3, now: at(30))

        #expect(machine.leaseRequested(4, origin: originB, now: at(40)) == [.closeConnection(1)])
        // Two waiters, one connection closing: one more eviction.
        #expect(machine.leaseRequested(5, origin: originB, now: at(50)) == [.closeConnection(2)])
        #expect(machine.connectionClosed(1) == [.createConnection(id: 4, origin: originB)])
        #expect(machine.connectionClosed(2) == [.createConnection(id: 5, origin: originB)])
        #expect(machine.idleIDs(originA) == [3])
        #expect(machine.totalConnections == 3)
    }

    @Test func aConnectionClosingForAnotherReasonSparesAnEviction() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, free: 2, total: 2, idleTimeout: .seconds(5)))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originA, expectedConnection: 2)
        _ = machine.connectionReleased(1, now: at(10))
        _ = machine.connectionReleased(2, now: at(20))
        #expect(machine.idleTimerFired(1, now: at(5010)) == [.closeConnection(1)])

        // Connection 1's close will free the slot B needs: connection 2 stays.
        #expect(machine.leaseRequested(3, origin: originB, now: at(5015)) == [])
        #expect(machine.isIdle(2))
        #expect(machine.connectionClosed(1) == [.createConnection(id: 3, origin: originB)])
        #expect(machine.isIdle(2))
    }

    @Test func atTheGlobalLimitAConnectionReleasedWhileAnotherOriginWaitsIsClosed() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, free: 2, total: 2))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originA, expectedConnection: 2)
        // Nothing idle to evict: B waits.
        #expect(machine.leaseRequested(3, origin: originB, now: at(10)) == [])
        #expect(machine.waiters(originB) == [3])

        #expect(machine.connectionReleased(1, now: at(20)) == [.closeConnection(1)])
        #expect(!machine.isIdle(1))
        #expect(machine.connectionClosed(1) == [.createConnection(id: 3, origin: originB)])

        // B's waiter is now served by a dial: A's next release is parked again.
        #expect(
            machine.connectionReleased(2, now: at(30)) == [.scheduleIdleTimer(connection: 2, deadline: at(5030))]
        )
        #expect(machine.connectionEstablished(3, now: at(40)) == [.lease(connection: 3, request: 3, reused: false)])
    }

    @Test func aReleasedConnectionIsParkedWhenACloseUnderWayAlreadyMakesRoom() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, free: 2, total: 2))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        machine.leaseNew(2, origin: originA, expectedConnection: 2)
        #expect(machine.connectionReleased(2, now: at(10)) == [.scheduleIdleTimer(connection: 2, deadline: at(5010))])
        // B needs one slot: A's idle connection 2 is closed for it.
        #expect(machine.leaseRequested(3, origin: originB, now: at(20)) == [.closeConnection(2)])
        // That close covers B's need, so A keeps connection 1 warm instead of closing it too.
        #expect(machine.connectionReleased(1, now: at(30)) == [.scheduleIdleTimer(connection: 1, deadline: at(5030))])
        #expect(machine.connectionClosed(2) == [.createConnection(id: 3, origin: originB)])
        #expect(machine.isIdle(1))
    }

    @Test func atTheGlobalLimitAConnectionEstablishedWithoutWaiterIsClosedForAnotherOrigin() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, free: 2, total: 2))
        _ = machine.leaseRequested(1, origin: originA, now: t0)
        _ = machine.leaseRequested(2, origin: originA, now: t0)
        #expect(machine.waiterCancelled(2) == [.failRequest(2, .cancelled, originA)])
        #expect(machine.leaseRequested(3, origin: originB, now: at(10)) == [])

        #expect(machine.connectionEstablished(1, now: at(20)) == [.lease(connection: 1, request: 1, reused: false)])
        #expect(machine.connectionEstablished(2, now: at(30)) == [.closeConnection(2)])
        #expect(machine.connectionClosed(2) == [.createConnection(id: 3, origin: originB)])
    }

    @Test func atTheGlobalLimitAFailedDialFreesASlotForAnotherOrigin() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 2, total: 2))
        let error = dialError()
        _ = machine.leaseRequested(1, origin: originA, now: t0)
        _ = machine.leaseRequested(2, origin: originA, now: t0)
        #expect(machine.leaseRequested(3, origin: originB, now: at(10)) == [])

        #expect(
            machine.connectionFailed(1, error: error) == [
                .failRequest(1, .connectFailed(error), originA),
                .createConnection(id: 3, origin: originB),
            ]
        )
        #expect(machine.totalConnections == 2)
    }

    @Test func atTheGlobalLimitBlockedOriginsDialOldestWaiterFirst() {
        let originC = Origin(scheme: .https, host: "c.example", port: 443, tls: TLSConfiguration())
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1, total: 1))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        #expect(machine.leaseRequested(2, origin: originC, now: at(10)) == [])
        #expect(machine.leaseRequested(3, origin: originB, now: at(20)) == [])

        #expect(machine.connectionReleased(1, now: at(30)) == [.closeConnection(1)])
        #expect(machine.connectionClosed(1) == [.createConnection(id: 2, origin: originC)])
        #expect(machine.connectionEstablished(2, now: at(40)) == [.lease(connection: 2, request: 2, reused: false)])
        #expect(machine.connectionReleased(2, now: at(50)) == [.closeConnection(2)])
        #expect(machine.connectionClosed(2) == [.createConnection(id: 3, origin: originB)])
    }

    @Test func withoutGlobalLimitOriginsDoNotEvictEachOther() {
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1, total: nil))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        _ = machine.connectionReleased(1, now: at(10))
        #expect(machine.leaseRequested(2, origin: originB, now: at(20)) == [.createConnection(id: 2, origin: originB)])
        #expect(machine.isIdle(1))
        #expect(machine.totalConnections == 2)
    }

    // MARK: Origins

    @Test(arguments: originsDifferingFromA)
    func originsThatDifferNeverShareConnections(_ other: Origin) {
        #expect(other != originA)
        var machine = PoolStateMachine(limits: makeLimits(perHost: 1))
        machine.leaseNew(1, origin: originA, expectedConnection: 1)
        _ = machine.connectionReleased(1, now: at(10))

        // A's free connection is not handed to the other origin.
        #expect(machine.leaseRequested(2, origin: other, now: at(20)) == [.createConnection(id: 2, origin: other)])
        #expect(machine.isIdle(1))
        #expect(machine.connectionEstablished(2, now: at(30)) == [.lease(connection: 2, request: 2, reused: false)])

        // Each origin reuses its own connection.
        _ = machine.connectionReleased(2, now: at(40))
        #expect(
            machine.leaseRequested(3, origin: originA, now: at(50)) == [.lease(connection: 1, request: 3, reused: true)]
        )
        #expect(
            machine.leaseRequested(4, origin: other, now: at(60)) == [.lease(connection: 2, request: 4, reused: true)]
        )

        // A waiter of the other origin does not get A's released connection.
        #expect(machine.leaseRequested(5, origin: other, now: at(70)) == [])
        #expect(
            machine.connectionReleased(1, now: at(80)) == [.scheduleIdleTimer(connection: 1, deadline: at(5080))]
        )
        #expect(machine.waiters(other) == [5])
        #expect(machine.connectionReleased(2, now: at(90)) == [.lease(connection: 2, request: 5, reused: true)])
    }

    @Test func equalOriginsBuiltSeparatelyShareConnections() {
        var machine = PoolStateMachine(limits: makeLimits())
        let first = Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration(trustRoots: .pem("R")))
        let second = Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration(trustRoots: .pem("R")))
        machine.leaseNew(1, origin: first, expectedConnection: 1)
        _ = machine.connectionReleased(1, now: at(10))
        #expect(
            machine.leaseRequested(2, origin: second, now: at(20)) == [.lease(connection: 1, request: 2, reused: true)]
        )
    }
}
