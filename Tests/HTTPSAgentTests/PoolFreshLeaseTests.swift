import NIOCore
import Testing

@testable import HTTPSAgent

/// A request sent again after its reused connection turned out to be closed asks for a fresh lease:
/// a connection dialled for it, never a free or released one, which has idled as long and may be
/// closed too.
@Suite("PoolStateMachine: fresh leases")
struct PoolFreshLeaseTests {
    let origin = Origin(scheme: .https, host: "a.example", port: 443, tls: TLSConfiguration())
    let now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    func machine(perHost: Int) -> PoolStateMachine {
        PoolStateMachine(
            limits: PoolLimits(
                maxSocketsPerHost: perHost,
                maxFreeSocketsPerHost: 4,
                maxTotalSockets: nil,
                idleTimeout: nil,
                scheduling: .lifo,
                poolWaitTimeout: nil
            )
        )
    }

    /// Request `request` gets new connection `id`, which it then releases: `id` is free.
    func makeFree(_ machine: inout PoolStateMachine, request: UInt64, id: Int) {
        #expect(
            machine.leaseRequested(request, origin: self.origin, now: self.now) == [
                .createConnection(id: id, origin: self.origin)
            ]
        )
        #expect(
            machine.connectionEstablished(id, now: self.now) == [
                .lease(connection: id, request: request, reused: false)
            ]
        )
        #expect(machine.connectionReleased(id, now: self.now) == [])
    }

    @Test func aFreshLeaseLeavesAFreeConnectionAlone() {
        var machine = self.machine(perHost: 4)
        self.makeFree(&machine, request: 1, id: 1)
        #expect(
            machine.leaseRequested(2, origin: self.origin, now: self.now, fresh: true)
                == [.createConnection(id: 2, origin: self.origin)]
        )
        #expect(machine.connectionEstablished(2, now: self.now) == [.lease(connection: 2, request: 2, reused: false)])
        #expect(machine.isIdle(1))
        // An ordinary request still takes the free one.
        #expect(
            machine.leaseRequested(3, origin: self.origin, now: self.now) == [
                .lease(connection: 1, request: 3, reused: true)
            ]
        )
    }

    @Test func atTheLimitTheOldestFreeConnectionMakesRoom() {
        var machine = self.machine(perHost: 2)
        #expect(machine.leaseRequested(1, origin: self.origin, now: self.now).count == 1)
        #expect(machine.leaseRequested(2, origin: self.origin, now: self.now).count == 1)
        _ = machine.connectionEstablished(1, now: self.now)
        _ = machine.connectionEstablished(2, now: self.now)
        _ = machine.connectionReleased(1, now: self.now)
        _ = machine.connectionReleased(2, now: self.now)
        #expect(
            machine.leaseRequested(3, origin: self.origin, now: self.now, fresh: true) == [
                .closeConnection(1, reason: nil)
            ]
        )
        #expect(machine.isIdle(2))
        #expect(machine.connectionClosed(1) == [.createConnection(id: 3, origin: self.origin)])
        #expect(machine.connectionEstablished(3, now: self.now) == [.lease(connection: 3, request: 3, reused: false)])
    }

    @Test func aFreshWaiterFirstInLineGetsTheNextSlot() {
        var machine = self.machine(perHost: 1)
        #expect(machine.leaseRequested(1, origin: self.origin, now: self.now).count == 1)
        _ = machine.connectionEstablished(1, now: self.now)
        #expect(machine.leaseRequested(2, origin: self.origin, now: self.now, fresh: true) == [])
        #expect(machine.leaseRequested(3, origin: self.origin, now: self.now) == [])
        // The fresh waiter is first in line: the used connection is closed for its dial, not handed to the
        // newer waiter (which would let a stream of newer requests starve it).
        #expect(machine.connectionReleased(1, now: self.now) == [.closeConnection(1, reason: nil)])
        #expect(machine.connectionClosed(1) == [.createConnection(id: 2, origin: self.origin)])
        #expect(machine.connectionEstablished(2, now: self.now) == [.lease(connection: 2, request: 2, reused: false)])
        // Then the ordinary waiter gets that connection once it is free.
        #expect(machine.connectionReleased(2, now: self.now) == [.lease(connection: 2, request: 3, reused: true)])
    }

    @Test func aReleasedConnectionGoesToAnOrdinaryWaiterWhileTheFreshOneIsBeingDialled() {
        var machine = self.machine(perHost: 2)
        #expect(machine.leaseRequested(1, origin: self.origin, now: self.now).count == 1)
        _ = machine.connectionEstablished(1, now: self.now)
        // A dial for the fresh waiter is under way (a slot was free); the ordinary one waits behind it.
        #expect(
            machine.leaseRequested(2, origin: self.origin, now: self.now, fresh: true)
                == [.createConnection(id: 2, origin: self.origin)]
        )
        #expect(machine.leaseRequested(3, origin: self.origin, now: self.now) == [])
        #expect(machine.connectionReleased(1, now: self.now) == [.lease(connection: 1, request: 3, reused: true)])
        #expect(machine.connectionEstablished(2, now: self.now) == [.lease(connection: 2, request: 2, reused: false)])
    }

    @Test func atTheGlobalLimitTheOriginsOwnFreeConnectionMakesRoom() {
        var machine = PoolStateMachine(
            limits: PoolLimits(
                maxSocketsPerHost: 10,
                maxFreeSocketsPerHost: 4,
                maxTotalSockets: 1,
                idleTimeout: nil,
                scheduling: .lifo,
                poolWaitTimeout: nil
            )
        )
        self.makeFree(&machine, request: 1, id: 1)
        #expect(
            machine.leaseRequested(2, origin: self.origin, now: self.now, fresh: true) == [
                .closeConnection(1, reason: nil)
            ]
        )
        #expect(machine.connectionClosed(1) == [.createConnection(id: 2, origin: self.origin)])
    }

    @Test func aCancelledFreshWaiterLeavesNothingBehind() {
        var machine = self.machine(perHost: 1)
        #expect(machine.leaseRequested(1, origin: self.origin, now: self.now).count == 1)
        _ = machine.connectionEstablished(1, now: self.now)
        #expect(machine.leaseRequested(2, origin: self.origin, now: self.now, fresh: true) == [])
        #expect(machine.waiterCancelled(2) == [.failRequest(2, .cancelled, self.origin)])
        // Released with nobody waiting: kept free, not closed for a waiter that is gone.
        #expect(machine.connectionReleased(1, now: self.now) == [])
        #expect(machine.isIdle(1))
    }
}
