import Foundation
import HTTPSAgent
import HTTPSAgentTestSupport
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Edge cases of the timing record and the observer events, each found failing in a review.
@Suite("Timing and events in edge cases")
struct TimingEdgeCaseTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    /// A task cancelled before the request starts still reports `requestQueued` before `requestFailed`.
    @Test func cancelledBeforeStartStillReportsQueuedFirst() async throws {
        let observer = RecordingObserver()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            _ = try await agent.get("https://127.0.0.1:9/")
        }
        _ = await task.result
        await agent.shutdown()
        #expect(observer.events == ["queued GET /", "failed cancelled complete=true"])
    }

    /// Cancelling the task reading a body throws an error that carries the request's timing.
    @Test(.timeLimit(.minutes(1))) func cancelledBodyReadCarriesTiming() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            // A body that takes 100 s: on a loaded machine the cancel below can come seconds late.
            let response = try await agent.get(server.url("/slow/100000/100000"))
            let reader = Task { _ = try await response.body.collect(upTo: 1 << 20) }
            try await Task.sleep(for: .milliseconds(100))
            reader.cancel()
            let error = await agentError { try await reader.value }
            #expect(error?.code == .cancelled)
            let timing = try #require(error?.timing, "the cancelled body's error has no timing")
            #expect(timing.responseHead != nil && timing.end != nil)
        }
    }

    /// `responseBodyTooLarge` raised by the reader carries the byte counts received so far.
    @Test func tooLargeErrorCarriesByteCounts() async throws {
        let failedTiming = NIOLockedValueBox<RequestTiming?>(nil)
        final class Capture: AgentObserver {
            let box: NIOLockedValueBox<RequestTiming?>
            init(_ box: NIOLockedValueBox<RequestTiming?>) { self.box = box }
            func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {
                self.box.withLockedValue { $0 = timing }
            }
        }
        let server = try await environment.tlsServer()
        let agent = Agent(configuration: environment.configuration(), observers: [Capture(failedTiming)])
        // Refused on its Content-Length while the body still streams: the request fails then.
        let slow = try await agent.get(server.url("/slow/100000/20000"))  // a piece every 2 s
        let refused = await agentError { _ = try await slow.body.collect(upTo: 10) }
        #expect(refused?.code == .responseBodyTooLarge)
        let timing = try #require(refused?.timing)
        #expect(timing.responseHead != nil)
        #expect(timing.wireBytesReceived > 0, "the head arrived")
        let reported = try #require(failedTiming.withLockedValue { $0 })
        #expect(reported.wireBytesReceived == timing.wireBytesReceived)

        // Refused after a chunk was read: the body bytes delivered are counted.
        let chunked = try await agent.get(server.url("/chunked/100000"))
        let tooLong = await agentError { _ = try await chunked.body.collect(upTo: 10) }
        #expect(tooLong?.code == .responseBodyTooLarge)
        #expect(try #require(tooLong?.timing).bodyBytesReceived > 0)
        await agent.shutdown()
        try await server.shutdown()
    }

    /// A server closing an idle TLS connection without `close_notify` is reported as `closedByServer`.
    @Test func idleCloseWithoutCloseNotifyIsClosedByServer() async throws {
        let observer = RecordingObserver()
        let server = try await environment.tlsServer()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        _ = try await agent.get(server.url("/bytes-unclean/10")).text()
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasPrefix("closed ") } })
        await agent.shutdown()
        try await server.shutdown()
        #expect(observer.events.filter { $0.hasPrefix("closed ") } == ["closed 1 closedByServer"])
    }

    /// A connection dialled for a request that went away is parked; the next request reuses it and is told
    /// how long it was idle.
    @Test func parkedDialIsReusedWithAnIdleTime() async throws {
        final class CancelOnConnect: AgentObserver {
            let task = NIOLockedValueBox<Task<Void, any Error>?>(nil)
            func connectStarted(_ connection: ObservedConnection, address: String) {
                self.task.withLockedValue { $0 }?.cancel()
            }
        }
        let observer = RecordingObserver()
        let canceller = CancelOnConnect()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration(), observers: [observer])
            // Hold the lock while creating the task so the hook cannot miss it.
            let task = canceller.task.withLockedValue { box in
                let task = Task<Void, any Error> {
                    _ = try await agent.execute(
                        HTTPRequest(method: .get, url: server.url("/hello")),
                        observer: canceller
                    )
                }
                box = task
                return task
            }
            let cancelled = await agentError { try await task.value }
            #expect(cancelled?.code == .cancelled)
            // The dial carries on and parks its connection.
            #expect(await AgentLifecycleTests.waitFor { agent.stats.origins.first?.free == 1 })
            observer.clear()
            let response = try await agent.get(server.url("/hello"))
            _ = try await response.text()
            let timing = response.timing
            #expect(timing.reusedConnection)
            #expect(timing.idleTimeBeforeReuse != nil, "reused connection without an idle time")
            #expect(observer.events.contains("acquired reused=true idle=true"))
            await agent.shutdown()
        }
    }

    /// `requestEnd` and `requestBodyWritten` wait until the last byte reached the socket, not the queue.
    @Test func requestEndWaitsForTheBytesToBeWritten() async throws {
        let server = try await ScriptedTCPServer.start(.acceptAndNeverRead)
        let observer = RecordingObserver()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        let task = Task {
            _ = try await agent.execute(
                HTTPRequest(method: .post, url: "http://127.0.0.1:\(server.port)/upload"),
                body: .bytes(ByteBuffer(repeating: 1, count: 64 << 20))
            )
        }
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains("headWritten") })
        try await Task.sleep(for: .milliseconds(300))
        task.cancel()
        let error = await agentError { try await task.value }
        await agent.shutdown()
        try await server.shutdown()
        #expect(error?.code == .cancelled)
        let timing = try #require(error?.timing)
        #expect(timing.requestEnd == nil, "64 MiB 'written' to a peer that read nothing")
        #expect(!observer.events.contains { $0.hasPrefix("bodyWritten") })
    }

    /// A shutdown during a dial ends the connection's events with `connectionFailed`.
    @Test func shutdownDuringDialReportsTheConnectionAndItsPhases() async throws {
        let server = try await ScriptedTCPServer.start(.acceptAndHang)
        let observer = RecordingObserver()
        var configuration = environment.configuration()
        configuration.tlsHandshakeTimeout = .seconds(30)
        let agent = Agent(configuration: configuration, observers: [observer])
        let task = Task { _ = try await agent.get("https://127.0.0.1:\(server.port)/") }
        #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasPrefix("tlsStarted") } })
        await agent.shutdown()
        let error = await agentError { try await task.value }
        try await server.shutdown()
        #expect(error?.code == .shutdown)
        #expect(observer.events.contains { $0.hasPrefix("connectionFailed") }, "\(observer.events)")
        // The waiting request is failed by the shutdown itself, before the dial ends: it reports its
        // queue time; the dial's phases are in the connection's events.
        #expect(try #require(error?.timing).end != nil)
    }
}

/// Checks that are expected to pass: invariants the diff gets right, kept as regression tests.
@Suite("Timing and events: one end per request")
struct TimingOneEndTests {
    let environment: TestEnvironment

    init() throws {
        self.environment = try TestEnvironment()
    }

    @Test func staleConnectionRetryEndsOnceWithAFreshRecord() async throws {
        let response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        let server = try await ScriptedTCPServer.start(.answerFirstThenDropSecond(response: response))
        let observer = RecordingObserver()
        let agent = Agent(configuration: environment.configuration(), observers: [observer])
        let plain = "http://127.0.0.1:\(server.port)/"
        _ = try await agent.get(plain).text()
        observer.clear()
        let second = try await agent.get(plain)
        _ = try await second.text()
        await agent.shutdown()
        try await server.shutdown()
        let timing = second.timing
        expectConsistent(timing)
        #expect(timing.attempts == 2)
        #expect(timing.reusedConnection == false)
        #expect(
            observer.events.filter { $0.hasPrefix("finished") || $0.hasPrefix("failed") } == ["finished complete=true"]
        )
        #expect(observer.events.filter { $0.hasPrefix("queued") }.count == 1)
    }

    @Test func headAnd204EndOnce() async throws {
        let observer = RecordingObserver()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration(), observers: [observer])
            let head = try await agent.execute(HTTPRequest(method: .head, url: server.url("/bytes/100")))
            _ = try await head.text()
            expectConsistent(head.timing)
            #expect(head.timing.isComplete)
            let noContent = try await agent.get(server.url("/status/204"))
            _ = try await noContent.text()
            expectConsistent(noContent.timing)
            await agent.shutdown()
        }
        #expect(observer.events.filter { $0.hasPrefix("finished") }.count == 2)
        #expect(!observer.events.contains { $0.hasPrefix("failed") })
    }

    @Test func droppedBodyFailsOnce() async throws {
        let observer = RecordingObserver()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration(), observers: [observer])
            do {
                _ = try await agent.get(server.url("/slow/100000/20000"))
            }
            #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasPrefix("failed") } })
            await agent.shutdown()
        }
        #expect(
            observer.events.filter { $0.hasPrefix("failed") || $0.hasPrefix("finished") } == [
                "failed cancelled complete=true"
            ]
        )
        // The dropped body's connection is closed as not reusable.
        #expect(observer.events.contains("closed 1 notReusable"))
    }

    /// tooLarge fails the tracker, then consumerGone abandons the exchange and the handler fails it again:
    /// only the first may reach observers, with its own code.
    @Test func tooLargeFailsOnceWithItsCode() async throws {
        let observer = RecordingObserver()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration(), observers: [observer])
            let response = try await agent.get(server.url("/slow/100000/20000"))
            await #expect(throws: AgentError.self) { _ = try await response.body.collect(upTo: 10) }
            #expect(await AgentLifecycleTests.waitFor { observer.events.contains { $0.hasPrefix("closed") } })
            await agent.shutdown()
        }
        #expect(
            observer.events.filter { $0.hasPrefix("failed") || $0.hasPrefix("finished") }
                == ["failed responseBodyTooLarge complete=true"]
        )
    }

    /// A connection dialled before this request started, handed to it new: its dial milestones are clamped
    /// to the request's start, so no phase is negative.
    @Test func dialStartedBeforeTheRequestIsClamped() async throws {
        final class Hook: AgentObserver {
            let first = NIOLockedValueBox<Task<Void, any Error>?>(nil)
            let second = NIOLockedValueBox<Task<RequestTiming, any Error>?>(nil)
            let start: @Sendable () -> Task<RequestTiming, any Error>
            init(start: @escaping @Sendable () -> Task<RequestTiming, any Error>) { self.start = start }
            func connectStarted(_ connection: ObservedConnection, address: String) {
                guard let first = self.first.withLockedValue({ $0 }) else { return }
                first.cancel()
                self.second.withLockedValue { $0 = self.start() }
                // Hold the dial (this runs in the dial's task) so that the second request queues for it.
                usleep(300_000)
            }
        }
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration())
            let url = server.url("/hello")
            let hook = Hook {
                Task {
                    let response = try await agent.get(url)
                    _ = try await response.text()
                    return response.timing
                }
            }
            let first = hook.first.withLockedValue { box in
                let task = Task<Void, any Error> {
                    _ = try await agent.execute(HTTPRequest(method: .get, url: url), observer: hook)
                }
                box = task
                return task
            }
            _ = await first.result
            #expect(await AgentLifecycleTests.waitFor { hook.second.withLockedValue { $0 } != nil })
            let timing = try await hook.second.withLockedValue { $0 }!.value
            expectConsistent(timing)
            #expect(timing.reusedConnection == false)
            #expect(timing.queueWait == .zero)
            await agent.shutdown()
        }
    }

    /// Hooks run outside the tracker's lock: a hook may read the response's timing (here from another
    /// thread, so that a held lock shows up as a wait rather than a deadlock).
    @Test func requestFailedHookRunsOutsideTheTrackerLock() async throws {
        final class Reader: AgentObserver {
            let response = NIOLockedValueBox<AgentResponse?>(nil)
            let blocked = NIOLockedValueBox<Bool?>(nil)
            func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {
                guard let response = self.response.withLockedValue({ $0 }) else { return }
                let done = DispatchSemaphore(value: 0)
                Thread.detachNewThread {
                    _ = response.timing
                    done.signal()
                }
                let result = done.wait(timeout: .now() + 5)
                self.blocked.withLockedValue { $0 = result == .timedOut }
            }
        }
        let reader = Reader()
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { _, server in
            let agent = Agent(configuration: environment.configuration(), observers: [reader])
            let response = try await agent.get(server.url("/slow/100000/20000"))
            reader.response.withLockedValue { $0 = response }
            await #expect(throws: AgentError.self) { _ = try await response.body.collect(upTo: 10) }
            await agent.shutdown()
            // The Agent keeps its observer, and the response its connection: let go of the cycle.
            reader.response.withLockedValue { $0 = nil }
        }
        #expect(reader.blocked.withLockedValue { $0 } == false)
    }

    /// `idleTimeBeforeReuse` counts from the release, which comes after the previous request's end.
    @Test func idleTimeIsMeasuredFromTheRelease() async throws {
        try await withAgent(environment.configuration(), server: environment.tlsServer()) { agent, server in
            let first = try await agent.get(server.url("/delay/200"))
            _ = try await first.text()
            let second = try await agent.get(server.url("/hello"))
            _ = try await second.text()
            let (a, b) = (first.timing, second.timing)
            #expect(b.reusedConnection)
            // From the first request's end to the second's acquiring the connection, on one clock.
            let startGap = Duration.nanoseconds(
                Int64(b.startedAt.uptimeNanoseconds) - Int64(a.startedAt.uptimeNanoseconds)
            )
            let bound = startGap + b.queueEnd! - a.end!
            let idle = try #require(b.idleTimeBeforeReuse)
            #expect(idle <= bound, "idle \(idle) > \(bound) since the previous request ended")
        }
    }
}
