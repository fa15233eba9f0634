import HTTPSAgentTestSupport
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import HTTPSAgent

private let origin = Origin(scheme: .https, host: "life.example", port: 443, tls: TLSConfiguration())
private let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

private func at(_ seconds: Int64) -> NIODeadline { start + .seconds(seconds) }

private func limits(
    lifetime: TimeAmount? = nil,
    maxRequests: Int? = nil,
    idle: TimeAmount? = .seconds(30)
) -> PoolLimits {
    PoolLimits(
        maxSocketsPerHost: 4,
        maxFreeSocketsPerHost: 4,
        maxTotalSockets: nil,
        idleTimeout: idle,
        scheduling: .lifo,
        poolWaitTimeout: nil,
        maxConnectionLifetime: lifetime,
        maxRequestsPerConnection: maxRequests
    )
}

/// The pool's decisions on connection lifetime, request counts and the server's keep-alive hint.
@Suite("Connection lifetime: decisions")
struct ConnectionLifetimeDecisionTests {
    /// Leases request `request` over a new connection `id` made at `now`.
    private func leaseNew(
        _ machine: inout PoolStateMachine,
        _ request: UInt64,
        id: Int,
        now: NIODeadline,
        jitter: Double = 0
    ) {
        #expect(
            machine.leaseRequested(request, origin: origin, now: now) == [.createConnection(id: id, origin: origin)]
        )
        #expect(
            machine.connectionEstablished(id, now: now, jitter: jitter)
                == [.lease(connection: id, request: request, reused: false)]
        )
    }

    @Test func aConnectionIsClosedAfterItsLastAllowedRequest() {
        var machine = PoolStateMachine(limits: limits(maxRequests: 2))
        self.leaseNew(&machine, 1, id: 1, now: at(0))
        #expect(machine.connectionReleased(1, now: at(1)) == [.scheduleIdleTimer(connection: 1, deadline: at(31))])
        #expect(
            machine.leaseRequested(2, origin: origin, now: at(2)) == [.lease(connection: 1, request: 2, reused: true)]
        )
        // The second request was its last: it finishes, then the connection goes.
        #expect(machine.connectionReleased(1, now: at(3)) == [.closeConnection(1, reason: .expired)])
        #expect(machine.leaseRequested(3, origin: origin, now: at(4)) == [.createConnection(id: 2, origin: origin)])
    }

    @Test func aLeaseHandedBackUnusedDoesNotCountAndKeepsTheHint() {
        var machine = PoolStateMachine(limits: limits(maxRequests: 1))
        self.leaseNew(&machine, 1, id: 1, now: at(0))
        // Its requester went away before sending anything: the connection still has its one request.
        #expect(
            machine.connectionReleased(1, now: at(1), unused: true) == [
                .scheduleIdleTimer(connection: 1, deadline: at(31))
            ]
        )
        #expect(
            machine.leaseRequested(2, origin: origin, now: at(2)) == [.lease(connection: 1, request: 2, reused: true)]
        )
        #expect(machine.connectionReleased(1, now: at(3)) == [.closeConnection(1, reason: .expired)])

        var hinted = PoolStateMachine(limits: limits())
        self.leaseNew(&hinted, 1, id: 1, now: at(0))
        _ = hinted.connectionReleased(1, now: at(1), keepAliveHint: .seconds(5))
        #expect(
            hinted.leaseRequested(2, origin: origin, now: at(2)) == [.lease(connection: 1, request: 2, reused: true)]
        )
        // Handed back unused: the server's hint from before still bounds its idle time.
        #expect(
            hinted.connectionReleased(1, now: at(3), unused: true) == [
                .scheduleIdleTimer(connection: 1, deadline: at(7))
            ]
        )
    }

    @Test func aWaiterDoesNotGetAWornOutConnection() {
        var machine = PoolStateMachine(limits: limits(maxRequests: 1))
        self.leaseNew(&machine, 1, id: 1, now: at(0))
        // Request 2 waits behind nothing: a second connection is dialled for it at once.
        #expect(machine.leaseRequested(2, origin: origin, now: at(1)) == [.createConnection(id: 2, origin: origin)])
        #expect(machine.connectionReleased(1, now: at(2)) == [.closeConnection(1, reason: .expired)])
    }

    @Test func aConnectionPastItsLifetimeFinishesItsRequestThenCloses() {
        var machine = PoolStateMachine(limits: limits(lifetime: .seconds(100)))
        self.leaseNew(&machine, 1, id: 1, now: at(0))
        // Free before its end: the idle timer is set for whichever comes first.
        #expect(machine.connectionReleased(1, now: at(90)) == [.scheduleIdleTimer(connection: 1, deadline: at(100))])
        #expect(
            machine.leaseRequested(2, origin: origin, now: at(95)) == [.lease(connection: 1, request: 2, reused: true)]
        )
        // Its lifetime ends while it carries request 2: released at 105, it is closed.
        #expect(machine.connectionReleased(1, now: at(105)) == [.closeConnection(1, reason: .expired)])
    }

    @Test func aFreeConnectionPastItsLifetimeIsClosedNotLeased() {
        var machine = PoolStateMachine(limits: limits(lifetime: .seconds(100), idle: nil))
        self.leaseNew(&machine, 1, id: 1, now: at(0))
        #expect(machine.connectionReleased(1, now: at(10)) == [.scheduleIdleTimer(connection: 1, deadline: at(100))])
        // The timer is late (or not yet run) and a request comes: it gets a new connection.
        #expect(
            machine.leaseRequested(2, origin: origin, now: at(101))
                == [.closeConnection(1, reason: .expired), .createConnection(id: 2, origin: origin)]
        )
    }

    @Test func theIdleTimerClosesAnExpiredFreeConnectionAsExpired() {
        var machine = PoolStateMachine(limits: limits(lifetime: .seconds(100)))
        self.leaseNew(&machine, 1, id: 1, now: at(0))
        _ = machine.connectionReleased(1, now: at(90))
        #expect(
            machine.idleTimerFired(1, now: at(99)) == [.scheduleIdleTimer(connection: 1, deadline: at(100))],
            "too early"
        )
        #expect(machine.idleTimerFired(1, now: at(100)) == [.closeConnection(1, reason: .expired)])
    }

    @Test func jitterShortensTheLifetimeByUpToATenth() {
        var machine = PoolStateMachine(limits: limits(lifetime: .seconds(100), idle: nil))
        self.leaseNew(&machine, 1, id: 1, now: at(0), jitter: 0.5)
        self.leaseNew(&machine, 2, id: 2, now: at(0), jitter: 0.999)
        #expect(machine.connectionReleased(1, now: at(10)) == [.scheduleIdleTimer(connection: 1, deadline: at(95))])
        let second = machine.connectionReleased(2, now: at(10))
        guard case .scheduleIdleTimer(2, let deadline) = second.first, second.count == 1 else {
            Issue.record("expected one idle timer, got \(second)")
            return
        }
        #expect(deadline > at(90) && deadline < at(91))
    }

    @Test func theServersKeepAliveHintLessAMarginBoundsTheIdleTime() {
        var machine = PoolStateMachine(limits: limits())
        self.leaseNew(&machine, 1, id: 1, now: at(0))
        // "Keep-Alive: timeout=5": closed at 4 s, before the server's own close at 5 s.
        #expect(
            machine.connectionReleased(1, now: at(10), keepAliveHint: .seconds(5))
                == [.scheduleIdleTimer(connection: 1, deadline: at(14))]
        )
        #expect(machine.idleTimerFired(1, now: at(14)) == [.closeConnection(1, reason: nil)])
        // A hint within the margin: not worth keeping at all.
        self.leaseNew(&machine, 2, id: 2, now: at(20))
        #expect(
            machine.connectionReleased(2, now: at(21), keepAliveHint: .seconds(1))
                == [.closeConnection(2, reason: .idleTimeout)]
        )
        // A hint longer than our idle timeout changes nothing.
        self.leaseNew(&machine, 3, id: 3, now: at(30))
        #expect(
            machine.connectionReleased(3, now: at(31), keepAliveHint: .seconds(300))
                == [.scheduleIdleTimer(connection: 3, deadline: at(61))]
        )
    }

    @Test func keepAliveFieldParsing() {
        #expect(HTTP1ClientHandler.keepAliveTimeout("timeout=5, max=100") == .seconds(5))
        #expect(HTTP1ClientHandler.keepAliveTimeout("max=100,  Timeout = 15 ") == .seconds(15))
        #expect(HTTP1ClientHandler.keepAliveTimeout("timeout=abc") == nil)
        #expect(HTTP1ClientHandler.keepAliveTimeout("timeout=-1") == nil)
        #expect(HTTP1ClientHandler.keepAliveTimeout("") == nil)
    }
}

/// The same against a real server, checked by its connection counts and the close reasons observed.
@Suite("Connection lifetime: against a server")
struct ConnectionLifetimeTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    final class CloseReasons: AgentObserver {
        private let box = NIOLockedValueBox<[String]>([])
        var reasons: [String] { self.box.withLockedValue { $0 } }
        func connectionClosed(_ connection: ObservedConnection, reason: ConnectionCloseReason) {
            self.box.withLockedValue { $0.append(reason.description) }
        }
    }

    @Test func maxRequestsPerConnection() async throws {
        let server = try await environment.tlsServer()
        var configuration = environment.configuration()
        configuration.maxRequestsPerConnection = 2
        let observer = CloseReasons()
        let agent = Agent(configuration: configuration, observers: [observer])
        var reused: [Bool] = []
        for _ in 0..<5 {
            let response = try await agent.get(server.url("/hello"))
            _ = try await response.text()
            reused.append(response.connection.isReused)
        }
        #expect(reused == [false, true, false, true, false])
        #expect(server.stats.accepted == 3)
        #expect(server.stats.requests == 5)
        #expect(await AgentLifecycleTests.waitFor { observer.reasons.filter { $0 == "expired" }.count == 2 })
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func maxConnectionLifetime() async throws {
        let server = try await environment.tlsServer()
        var configuration = environment.configuration()
        configuration.maxConnectionLifetime = .milliseconds(300)
        let observer = CloseReasons()
        let agent = Agent(configuration: configuration, observers: [observer])
        _ = try await agent.get(server.url("/hello")).text()
        #expect(await AgentLifecycleTests.waitFor { observer.reasons == ["expired"] })
        let second = try await agent.get(server.url("/hello"))
        _ = try await second.text()
        #expect(!second.connection.isReused)
        #expect(server.stats.accepted == 2)
        await agent.shutdown()
        try await server.shutdown()
    }

    @Test func theServersKeepAliveHintMakesUsCloseFirst() async throws {
        // The server says 2 s and closes after 6: we close at 1 s, well before it.
        let server = try await TestHTTPServer.start(
            .init(tls: environment.certificates.serverOptions(), closeIdleAfter: .seconds(6), keepAliveHint: 2)
        )
        let observer = CloseReasons()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        _ = try await agent.get(server.url("/hello")).text()
        #expect(await AgentLifecycleTests.waitFor { observer.reasons == ["idleTimeout"] })
        let second = try await agent.get(server.url("/hello"))
        _ = try await second.text()
        #expect(!second.connection.isReused)
        #expect(server.stats.accepted == 2)
        await agent.shutdown()
        try await server.shutdown()
    }
}
