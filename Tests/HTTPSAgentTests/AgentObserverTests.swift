import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Writes every event down as a line of text, in arrival order.
final class RecordingObserver: AgentObserver {
    private let box = NIOLockedValueBox<[String]>([])
    /// Called inside each request event; lets a test call back into the Agent from a hook.
    let onEvent: @Sendable () -> Void
    let recordPoolChanges: Bool

    init(recordPoolChanges: Bool = false, onEvent: @escaping @Sendable () -> Void = {}) {
        self.recordPoolChanges = recordPoolChanges
        self.onEvent = onEvent
    }

    var events: [String] { self.box.withLockedValue { $0 } }

    func clear() { self.box.withLockedValue { $0 = [] } }

    private func record(_ line: String) {
        self.box.withLockedValue { $0.append(line) }
        self.onEvent()
    }

    func requestQueued(_ request: ObservedRequest) { record("queued \(request.method) \(request.path)") }
    func connectionAcquired(_ request: ObservedRequest, connection: ConnectionInfo, idleTime: Duration?) {
        record("acquired reused=\(connection.isReused) idle=\(idleTime != nil)")
    }
    func dnsStarted(_ connection: ObservedConnection) { record("dnsStarted \(connection.host)") }
    func dnsFinished(_ connection: ObservedConnection, addresses: [String]) { record("dnsFinished \(addresses)") }
    func connectStarted(_ connection: ObservedConnection, address: String) { record("connectStarted \(address)") }
    func connectFinished(_ connection: ObservedConnection, address: String, failure: String?) {
        record("connectFinished \(address) failed=\(failure != nil)")
    }
    func tlsStarted(_ connection: ObservedConnection, offeringSession: Bool) {
        record("tlsStarted offering=\(offeringSession)")
    }
    func tlsFinished(_ connection: ObservedConnection, tls: TLSInfo) {
        record("tlsFinished resumed=\(tls.sessionResumed)")
    }
    func connectionEstablished(_ connection: ObservedConnection, info: ConnectionInfo) {
        record("established \(info.id) reused=\(info.isReused)")
    }
    func connectionFailed(_ connection: ObservedConnection, error: AgentError) {
        record("connectionFailed \(error.code)")
    }
    func connectionClosed(_ connection: ObservedConnection, reason: ConnectionCloseReason) {
        record("closed \(connection.id) \(reason)")
    }
    func requestHeadWritten(_ request: ObservedRequest) { record("headWritten") }
    func requestBodyWritten(_ request: ObservedRequest, bytes: Int) { record("bodyWritten \(bytes)") }
    func firstResponseByte(_ request: ObservedRequest) { record("firstByte") }
    func responseHeadReceived(_ request: ObservedRequest, status: HTTPResponse.Status) { record("head \(status.code)") }
    func responseBodyFinished(_ request: ObservedRequest, bytes: Int) { record("bodyFinished \(bytes)") }
    func requestFinished(_ request: ObservedRequest, timing: RequestTiming) {
        record("finished complete=\(timing.isComplete)")
    }
    func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {
        record("failed \(error.code) complete=\(timing.isComplete)")
    }
    func poolChanged(_ pool: AgentStats.OriginStats) {
        if self.recordPoolChanges {
            record("pool active=\(pool.active) free=\(pool.free) waiting=\(pool.waiting)")
        }
    }
}

@Suite("Observers see every lifecycle event")
struct AgentObserverTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func freshThenReusedRequestEventsInOrder() async throws {
        let observer = RecordingObserver()
        let server = try await environment.tlsServer()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        _ = try await agent.get("https://127.0.0.1:\(server.port)/hello").text()
        #expect(
            observer.events == [
                "queued GET /hello",
                "dnsStarted 127.0.0.1",
                "dnsFinished [\"127.0.0.1:\(server.port)\"]",
                "connectStarted 127.0.0.1:\(server.port)",
                "connectFinished 127.0.0.1:\(server.port) failed=false",
                "tlsStarted offering=false",
                "tlsFinished resumed=false",
                "established 1 reused=false",
                "acquired reused=false idle=false",
                "headWritten",
                "bodyWritten 0",
                "firstByte",
                "head 200",
                "bodyFinished 5",
                "finished complete=true",
            ]
        )
        observer.clear()
        let echo = try HTTPRequest(method: .post, url: "https://127.0.0.1:\(server.port)/echo")
        _ = try await agent.execute(echo, body: .string("abc")).text()
        #expect(
            observer.events == [
                "queued POST /echo", "acquired reused=true idle=true", "headWritten", "bodyWritten 3", "firstByte",
                "head 200", "bodyFinished 3", "finished complete=true",
            ]
        )
        observer.clear()
        await agent.shutdown()
        #expect(observer.events == ["closed 1 shutdown"])
        try await server.shutdown()
    }

    @Test func failedDialIsReportedOnceWithItsTiming() async throws {
        let observer = RecordingObserver()
        let port = try await unusedLoopbackPort()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        await #expect(throws: AgentError.self) { _ = try await agent.get("https://127.0.0.1:\(port)/") }
        await agent.shutdown()
        #expect(
            observer.events == [
                "queued GET /",
                "dnsStarted 127.0.0.1",
                "dnsFinished [\"127.0.0.1:\(port)\"]",
                "connectStarted 127.0.0.1:\(port)",
                "connectFinished 127.0.0.1:\(port) failed=true",
                "connectionFailed connectFailed",
                "failed connectFailed complete=true",
            ]
        )
    }

    @Test func perRequestObserverSeesOnlyItsRequest() async throws {
        let agentObserver = RecordingObserver()
        let requestObserver = RecordingObserver()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration(), observers: [agentObserver])
            _ = try await agent.get(server.url("/hello")).text()
            _ = try await agent.execute(
                HTTPRequest(method: .get, url: server.url("/bytes/7")),
                observer: requestObserver
            )
            .text()
            _ = try await agent.get(server.url("/hello")).text()
            await agent.shutdown()
        }
        #expect(
            requestObserver.events == [
                "queued GET /bytes/7", "acquired reused=true idle=true", "headWritten", "bodyWritten 0", "firstByte",
                "head 200", "bodyFinished 7", "finished complete=true",
            ]
        )
        #expect(agentObserver.events.filter { $0.hasPrefix("finished") }.count == 3)
    }

    @Test func perRequestObserverSeesTheDialItCaused() async throws {
        let requestObserver = RecordingObserver()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            _ = try await agent.execute(HTTPRequest(method: .get, url: server.url("/hello")), observer: requestObserver)
                .text()
        }
        #expect(requestObserver.events.contains("tlsFinished resumed=false"))
        #expect(requestObserver.events.contains("acquired reused=false idle=false"))
    }

    @Test func closeReasons() async throws {
        let observer = RecordingObserver()
        let server = try await environment.tlsServer()
        // No idle timeout here, so that only the free-list limit closes connections.
        let agent = Agent(
            configuration: environment.configuration(maxFreeSocketsPerHost: 1, idleTimeout: nil),
            observers: [observer]
        )
        // The server says Connection: close.
        _ = try await agent.get(server.url("/close")).text()
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains("closed 1 notReusable") })
        // A slow request holds one connection while a quick one opens a second and frees it first; the
        // free list has room for one, so the slow one's connection is closed when it is released.
        // 3 s: the quick one must come while the slow one holds its connection, even on a loaded machine.
        let slow = Task { try await agent.get(server.url("/delay/3000")).text() }
        #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.active == 1 })
        _ = try await agent.get(server.url("/hello")).text()
        _ = try await slow.value
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasSuffix(" poolLimit") } })
        await agent.shutdown()
        #expect(observer.events.filter { $0.hasSuffix(" shutdown") }.count == 1)

        // A free connection idles out.
        let idling = Agent(
            configuration: environment.configuration(idleTimeout: .milliseconds(50)),
            observers: [observer]
        )
        _ = try await idling.get(server.url("/hello")).text()
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasSuffix(" idleTimeout") } })
        await idling.shutdown()
        // A free connection the server closes (the Agent's own idle timeout is far off, so that a loaded
        // machine cannot let it win).
        let closing = try await environment.tlsServer(closeIdleAfter: .milliseconds(10))
        let patient = Agent(configuration: environment.configuration(idleTimeout: .seconds(30)), observers: [observer])
        _ = try await patient.get(closing.url("/hello")).text()
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasSuffix(" closedByServer") } })
        await patient.shutdown()
        try await server.shutdown()
        try await closing.shutdown()
    }

    @Test func hooksMayCallBackIntoTheAgent() async throws {
        // A hook that reads the Agent's stats on every event runs outside the pool's lock, or this
        // would deadlock.
        let agentBox = NIOLockedValueBox<Agent?>(nil)
        let calls = NIOLockedValueBox(0)
        let observer = RecordingObserver(recordPoolChanges: true) {
            if let agent = agentBox.withLockedValue({ $0 }) {
                _ = agent.stats
                calls.withLockedValue { $0 += 1 }
            }
        }
        let configuration = environment.configuration(maxSocketsPerHost: 2)
        try await withAgent(configuration, server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: configuration, observers: [observer])
            agentBox.withLockedValue { $0 = agent }
            // Shut down whatever happens, so that a failed request leaves no connection behind.
            let requests = await Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<20 {
                        group.addTask { _ = try await agent.get(server.url("/bytes/100")).text() }
                    }
                    try await group.waitForAll()
                }
            }.result
            await agent.shutdown()
            agentBox.withLockedValue { $0 = nil }
            try requests.get()
        }
        #expect(calls.withLockedValue { $0 } > 20 * 8)
        #expect(observer.events.contains { $0.hasPrefix("pool ") && $0.contains("waiting=") })
        #expect(observer.events.filter { $0.hasPrefix("finished") }.count == 20)
    }

    @Test func poolChangesReportCounts() async throws {
        let observer = RecordingObserver(recordPoolChanges: true)
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration(), observers: [observer])
            _ = try await agent.get(server.url("/hello")).text()
            #expect(await AgentLifecycleTests.waitFor { observer.events.last == "pool active=0 free=1 waiting=0" })
            let pools = observer.events.filter { $0.hasPrefix("pool ") }
            #expect(pools.first == "pool active=0 free=0 waiting=1")
            #expect(pools.contains("pool active=1 free=0 waiting=0"))
            await agent.shutdown()
            #expect(observer.events.last == "pool active=0 free=0 waiting=0")
        }
    }

    @Test func dialAbandonedAtShutdownIsReportedFailed() async throws {
        let observer = RecordingObserver()
        let listener = try StuckListener()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        let request = Task { try await agent.get("https://127.0.0.1:\(listener.port)/") }
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasPrefix("connectStarted") } })
        await agent.shutdown()
        await #expect(throws: AgentError.self) { try await request.value }
        #expect(observer.events.contains("connectionFailed shutdown"))
        #expect(observer.events.filter { $0.hasPrefix("failed ") }.count == 1)
        #expect(!observer.events.contains { $0.hasPrefix("established") })
        withExtendedLifetime(listener) {}
    }
}
