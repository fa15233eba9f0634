#if DEBUG
// The harness drives the connection's internal types as the Agent does, which only a build with
// testability (a debug build) exposes; a release build of the package compiles this target empty.
@testable import HTTPSAgent
import HTTPTypes
import NIOCore
import NIOEmbedded

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs one fuzz input through the response path a real connection has, minus the socket and TLS:
/// the pipeline ``Connector`` installs (byte guard, NIO's HTTP/1 codec, ``HTTP1ClientHandler``) on an
/// `EmbeddedChannel`, requests sent through ``HTTP1Connection`` as the Agent sends them, and each
/// response read through ``AgentResponse`` and its body (decoding gzip and deflate) by a task.
///
/// Deterministic and single-threaded: the channel's event loop and the reading tasks (on an
/// ``InlineTaskExecutor``) run only when the harness pumps them, after each read. When a response ends
/// with the connection reusable, the next request goes out on it (up to three), so later reads answer
/// it. At the end the connection is closed (or reset) and everything is pumped until quiet.
///
/// A crash, a precondition failure, or an unbounded allocation in the library is a finding; so is any
/// of the ``Report/violations`` this checks afterwards (a reader left waiting forever, a connection
/// reported closed more than once, a body longer than it declared, ...). The fuzz entry point traps on
/// those; the regression test expects none.
public enum ResponsePathFuzzer {
    /// What happened to one request.
    public struct Exchange: Sendable {
        /// The final response's status code, if a head was delivered.
        public var status: Int?
        /// The encoding the Agent removed, if it decoded the body.
        public var decodedEncoding: String?
        /// The body bytes the caller read (at most the first 1 KiB are kept in ``body``).
        public var bodyBytes = 0
        public var body: [UInt8] = []
        /// The code of the ``AgentError`` the request or its body failed with, if any.
        public var errorCode: String?
        /// Whether the reading task ran to its end.
        public var finished = false
    }

    /// What one input did.
    public struct Report: Sendable {
        public var exchanges: [Exchange] = []
        /// How many times the connection went back to the pool.
        public var released = 0
        /// How many times it was reported closed.
        public var closed = 0
        /// Broken expectations, in words; empty when all is well.
        public var violations: [String] = []
    }

    static let host = "fuzz.example"
    static let maxRequests = 3

    /// Runs `bytes` (see ``FuzzInput`` for their layout) and reports what happened.
    public static func run(_ bytes: some Collection<UInt8>) -> Report {
        let run = Run(FuzzInput(bytes))
        return run.go()
    }
}

/// One input's run. Everything in it happens on the calling thread (see ``InlineTaskExecutor``); the
/// reading tasks share it, hence the unchecked `Sendable`.
private final class Run: HTTP1ConnectionDelegate, @unchecked Sendable {
    let input: FuzzInput
    let executor = InlineTaskExecutor()
    let channel = EmbeddedChannel()
    var report = ResponsePathFuzzer.Report()
    var connection: HTTP1Connection!
    var deadline: NIODeadline?
    /// The server's bytes fed so far.
    var bytesFed = 0

    init(_ input: FuzzInput) {
        self.input = input
    }

    var decompression: Decompression {
        if self.input.options.contains(.noDecompression) { return .disabled }
        if self.input.options.contains(.tightLimits) {
            return Decompression(isEnabled: true, maxDecodedBytes: 64 * 1024)
        }
        return .enabled
    }

    func go() -> ResponsePathFuzzer.Report {
        let limits =
            self.input.options.contains(.tightLimits)
            ? ResponseHeadLimits(maxSize: 512, maxFieldCount: 8) : ResponseHeadLimits()
        let handler = HTTP1ClientHandler(
            connectionID: 1,
            host: ResponsePathFuzzer.host,
            port: 443,
            delegate: self,
            events: .none,
            headLimits: limits
        )
        do {
            // As the connector does: connected first, then the HTTP handlers.
            try self.channel.connect(to: SocketAddress(ipAddress: "192.0.2.1", port: 443)).wait()
            try handler.addHTTPHandlers(to: self.channel.pipeline.syncOperations)
        } catch {
            self.report.violations.append("the harness could not set up its channel: \(error)")
            return self.report
        }
        self.connection = HTTP1Connection(
            id: 1,
            channel: self.channel,
            host: ResponsePathFuzzer.host,
            port: 443,
            tls: nil,
            timeline: ConnectionTimeline(dialStart: .now(), expectsTLS: false),
            handler: handler
        )

        self.startRequest()
        self.pump()
        for read in self.input.reads {
            guard self.channel.isActive else { break }
            self.bytesFed += read.count
            _ = try? self.channel.writeInbound(ByteBuffer(bytes: read))
            self.pump()
            // The response ended and the connection is free again: the next request goes out on it.
            if self.report.released == self.report.exchanges.count,
                self.report.exchanges.count < ResponsePathFuzzer.maxRequests, self.channel.isActive
            {
                self.startRequest()
                self.pump()
            }
        }
        if let deadline, self.input.options.contains(.deadlinePasses) {
            self.channel.embeddedEventLoop.advanceTime(to: deadline + .seconds(1))
            self.pump()
        }
        if self.channel.isActive {
            if self.input.options.contains(.endWithReset) {
                self.channel.pipeline.fireErrorCaught(
                    IOError(errnoCode: ECONNRESET, reason: "read(descriptor:pointer:size:)")
                )
                self.pump()
            }
            self.channel.close(promise: nil)
            self.pump()
        }
        self.checkEnd()
        // The connection's handler holds this run as its delegate, as a real one holds the pool.
        self.connection = nil
        return self.report
    }

    /// Runs the event loop and the reading tasks until neither has anything left to do.
    func pump() {
        for _ in 0..<100_000 {
            self.channel.embeddedEventLoop.run()
            // The requests' bytes: nobody reads them.
            while (try? self.channel.readOutbound(as: IOData.self)) != nil {}
            if !self.executor.runQueued() { return }
        }
        self.report.violations.append("the event loop and the readers keep waking each other: a livelock")
    }

    // MARK: - Requests

    func startRequest() {
        let index = self.report.exchanges.count
        self.report.exchanges.append(ResponsePathFuzzer.Exchange())
        let request = HTTPRequest(
            method: self.input.options.contains(.head) ? .head : .get,
            scheme: "https",
            authority: ResponsePathFuzzer.host,
            path: "/\(index)"
        )
        var prepared: PreparedRequest
        do {
            prepared = try PreparedRequest(
                request,
                body: nil,
                agentKeepAlive: !self.input.options.contains(.noKeepAlive),
                decompression: self.decompression
            )
        } catch {
            self.report.violations.append("the harness's request was rejected: \(error)")
            return
        }
        if self.input.options.contains(.deadlinePasses) {
            // The embedded loop's clock reaches it only when the harness moves it there.
            let deadline = NIODeadline.now() + .seconds(30)
            prepared.deadline = deadline
            self.deadline = deadline
        }
        let tracker = RequestTracker(
            request: ObservedRequest(
                id: UInt64(index + 1),
                method: request.method,
                scheme: "https",
                host: ResponsePathFuzzer.host,
                port: 443,
                path: "/\(index)"
            ),
            observers: [],
            now: .now()
        )
        let info = ConnectionInfo(id: 1, isReused: index > 0)
        tracker.acquired(self.connection, reused: index > 0, info: info, now: .now())
        let connection = self.connection!
        let sent = prepared
        Task(executorPreference: self.executor) {
            do {
                let received = try await connection.execute(sent, id: UInt64(index + 1), tracker: tracker)
                let response = AgentResponse(received, connection: info, tracker: tracker, decoding: sent.decoding)
                try await self.read(response, index: index, limits: sent.decoding)
            } catch {
                self.failed(index, error)
            }
            self.report.exchanges[index].finished = true
        }
    }

    /// Reads a response as the input's reader does, and checks what it got.
    func read(_ response: AgentResponse, index: Int, limits: Decompression?) async throws {
        let status = response.status.code
        self.report.exchanges[index].status = status
        self.report.exchanges[index].decodedEncoding = response.decodedContentEncoding
        if (100..<200).contains(status) && status != 101 {
            self.violation(index, "an informational head (\(status)) was delivered as the response")
        }
        let readsAll: Bool
        switch self.input.reader {
        case .iterate:
            for try await buffer in response.body { self.received(buffer, index) }
            readsAll = true
        case .collect:
            self.received(try await response.body.collect(upTo: 4096), index)
            readsAll = true
        case .takeOneThenDrop:
            var iterator = response.body.makeAsyncIterator()
            if let buffer = try await iterator.next() { self.received(buffer, index) }
            readsAll = false
        case .cancelAfterHead:
            withUnsafeCurrentTask { $0?.cancel() }
            for try await buffer in response.body { self.received(buffer, index) }
            readsAll = true
        }
        guard readsAll else { return }
        // The body ended without an error.
        let bytes = self.report.exchanges[index].bodyBytes
        if let expected = response.body.expectedLength, bytes != expected {
            self.violation(index, "the body has \(bytes) bytes, but its declared length is \(expected)")
        }
        if response.decodedContentEncoding == nil, bytes > self.bytesFed {
            self.violation(index, "the body has \(bytes) bytes, more than the server sent (\(self.bytesFed))")
        }
        if let max = limits?.maxDecodedBytes, bytes > max {
            self.violation(index, "the decoded body has \(bytes) bytes, over its limit of \(max)")
        }
        let timing = response.timing
        if timing.end == nil {
            self.violation(index, "the body ended but the timing record did not")
        }
        if let head = timing.responseHead, let end = timing.end, end < head {
            self.violation(index, "the timing record ends (\(end)) before the head arrived (\(head))")
        }
        if let first = timing.firstByte, let head = timing.responseHead, head < first {
            self.violation(index, "the head arrived (\(head)) before the first byte (\(first))")
        }
    }

    func received(_ buffer: ByteBuffer, _ index: Int) {
        self.report.exchanges[index].bodyBytes += buffer.readableBytes
        let room = 1024 - self.report.exchanges[index].body.count
        if room > 0 {
            self.report.exchanges[index].body += buffer.readableBytesView.prefix(room)
        }
    }

    func failed(_ index: Int, _ error: any Error) {
        guard let error = error as? AgentError else {
            self.violation(index, "failed with an error that is not an AgentError: \(error)")
            return
        }
        self.report.exchanges[index].errorCode = error.code.description
    }

    func violation(_ index: Int, _ message: String) {
        self.report.violations.append("request \(index): \(message)")
    }

    // MARK: - The end

    func checkEnd() {
        for (index, exchange) in self.report.exchanges.enumerated() where !exchange.finished {
            self.violation(index, "its reader still waits after the connection closed: it would hang")
        }
        if self.report.closed != 1 {
            self.report.violations.append("the connection was reported closed \(self.report.closed) times, not once")
        }
        if self.channel.isActive {
            self.report.violations.append("the channel is still open after the harness closed it")
        }
    }

    // MARK: - HTTP1ConnectionDelegate

    func connectionReleased(_ id: Int, keepAliveHint: TimeAmount?) {
        if self.report.closed > 0 {
            self.report.violations.append("the connection was released after it was reported closed")
        }
        if self.report.released >= self.report.exchanges.count {
            self.report.violations.append("the connection was released more often than requests went out on it")
        }
        self.report.released += 1
    }

    func connectionClosed(_ id: Int, reason: ConnectionCloseReason) {
        self.report.closed += 1
    }
}
#endif
