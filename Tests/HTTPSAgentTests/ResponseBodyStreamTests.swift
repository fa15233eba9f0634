import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import HTTPSAgent

/// Records what a body stream asks of its connection.
private final class FakeProducer: ResponseBodyProducer {
    enum Call: Equatable, Sendable {
        case resumeReading(UInt64)
        case abandon(UInt64)
    }

    private let recorded = NIOLockedValueBox<[Call]>([])

    var calls: [Call] { self.recorded.withLockedValue { $0 } }

    func resumeReading(request: UInt64) {
        self.recorded.withLockedValue { $0.append(.resumeReading(request)) }
    }

    func abandon(request: UInt64) {
        self.recorded.withLockedValue { $0.append(.abandon(request)) }
    }
}

private struct Boom: Error, Equatable {}

private let requestID: UInt64 = 42

private func makeStream(_ producer: FakeProducer, high: Int = 1024, low: Int = 512) -> ResponseBodyStream {
    ResponseBodyStream(
        producer: producer,
        requestID: requestID,
        host: "example.com",
        port: 8443,
        highWatermark: high,
        lowWatermark: low
    )
}

private func bytes(_ text: String) -> ByteBuffer {
    ByteBuffer(string: text)
}

/// Gives a task just started the chance to reach its first suspension. Only makes the interesting
/// interleaving likely; no expectation depends on it.
private func letOtherTasksRun() async throws {
    try await Task.sleep(for: .milliseconds(5))
}

@Suite("ResponseBodyStream", .timeLimit(.minutes(1)))
struct ResponseBodyStreamTests {
    // MARK: - Delivery

    /// A response kept after its body ended must not keep the connection's objects alive: the stream lets
    /// go of its producer once the body is complete, failed or abandoned.
    @Test(arguments: ["complete", "failed", "abandoned"])
    func aStreamLetsGoOfItsProducerOnceTheBodyEnds(ending: String) {
        weak var weakProducer: FakeProducer?
        let stream: ResponseBodyStream
        do {
            let producer = FakeProducer()
            weakProducer = producer
            stream = makeStream(producer)
        }
        #expect(weakProducer != nil, "held while the body streams")
        switch ending {
        case "complete": stream.finish(nil)
        case "failed": stream.finish(Boom())
        default: stream.consumerGone()
        }
        #expect(weakProducer == nil)
        withExtendedLifetime(stream) {}
    }

    @Test func yieldsAreDeliveredInOrderThenTheEnd() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        #expect(stream.yield(bytes("one")))
        #expect(stream.yield(bytes("two")))
        #expect(stream.yield(bytes("three")))
        #expect(!stream.isFinished)
        stream.finish(nil)
        #expect(stream.isFinished)
        #expect(try await stream.next() == bytes("one"))
        #expect(try await stream.next() == bytes("two"))
        #expect(try await stream.next() == bytes("three"))
        #expect(try await stream.next() == nil)
        #expect(try await stream.next() == nil)
        #expect(producer.calls.isEmpty)
    }

    @Test func yieldsAfterTheEndAreDropped() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        stream.finish(nil)
        #expect(stream.yield(bytes("late")))
        stream.finish(Boom())
        #expect(try await stream.next() == nil)
    }

    @Test func finishWithErrorThrowsItAfterTheBufferedData() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        _ = stream.yield(bytes("partial"))
        stream.finish(Boom())
        #expect(stream.isFinished)
        #expect(try await stream.next() == bytes("partial"))
        await #expect(throws: Boom.self) { try await stream.next() }
        await #expect(throws: Boom.self) { try await stream.next() }
        #expect(producer.calls.isEmpty)
    }

    @Test func waitingConsumerIsResumedDirectlyByAYield() async throws {
        // With a high watermark of one byte, a buffered yield asks the producer to pause (returns
        // false); a yield handed straight to a waiting consumer does not. Retry until the consumer was
        // seen waiting, with growing pauses for it to get there.
        var handedOver = false
        for attempt in 0..<12 where !handedOver {
            let producer = FakeProducer()
            let stream = makeStream(producer, high: 1, low: 1)
            let consumer = Task { try await stream.next() }
            try await Task.sleep(for: .milliseconds(1 << min(attempt, 7)))
            handedOver = stream.yield(bytes("x"))
            #expect(try await consumer.value == bytes("x"))
            if handedOver {
                #expect(producer.calls.isEmpty)
            }
        }
        #expect(handedOver, "the consumer never waited for a yield")
    }

    @Test(arguments: [false, true])
    func waitingConsumerIsWokenByTheEnd(failed: Bool) async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let consumer = Task { try await stream.next() }
        try await letOtherTasksRun()
        stream.finish(failed ? Boom() : nil)
        if failed {
            await #expect(throws: Boom.self) { try await consumer.value }
        } else {
            #expect(try await consumer.value == nil)
        }
        #expect(producer.calls.isEmpty)
    }

    // MARK: - Backpressure

    @Test func yieldAsksToPauseAtTheHighWatermarkAndResumesOnceBelowTheLowWatermark() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer, high: 8, low: 4)
        #expect(stream.yield(bytes("aaa")))  // 3 buffered
        #expect(stream.yield(bytes("bbb")))  // 6
        #expect(!stream.yield(bytes("ccc")))  // 9: pause
        #expect(!stream.yield(bytes("ddd")))  // 12: bytes already read still arrive; still paused
        #expect(producer.calls.isEmpty)

        #expect(try await stream.next() == bytes("aaa"))  // 9 left
        #expect(try await stream.next() == bytes("bbb"))  // 6 left
        #expect(producer.calls.isEmpty)
        #expect(try await stream.next() == bytes("ccc"))  // 3 left: below 4
        #expect(producer.calls == [.resumeReading(requestID)])
        #expect(try await stream.next() == bytes("ddd"))
        #expect(producer.calls == [.resumeReading(requestID)])

        #expect(stream.yield(bytes("eee")))
        #expect(producer.calls == [.resumeReading(requestID)])
    }

    @Test func watermarksAreInclusiveAtTheTopAndExclusiveAtTheBottom() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer, high: 8, low: 4)
        #expect(stream.yield(bytes("1234")))
        #expect(!stream.yield(bytes("5678")))  // exactly 8
        #expect(try await stream.next() == bytes("1234"))  // exactly 4 left: not below
        #expect(producer.calls.isEmpty)
        #expect(try await stream.next() == bytes("5678"))
        #expect(producer.calls == [.resumeReading(requestID)])
    }

    @Test func eachPauseIsFollowedByOneResume() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer, high: 4, low: 2)
        for round in 1...3 {
            #expect(!stream.yield(bytes("wxyz")))
            #expect(try await stream.next() == bytes("wxyz"))
            #expect(producer.calls == Array(repeating: .resumeReading(requestID), count: round))
        }
    }

    @Test func noResumeWithoutAPause() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer, high: 8, low: 4)
        for _ in 0..<5 {
            #expect(stream.yield(bytes("ab")))
            #expect(try await stream.next() == bytes("ab"))
        }
        #expect(producer.calls.isEmpty)
    }

    @Test func aPausedProducerIsResumedWhateverTheInterleavingWithAStartingConsumer() async throws {
        // A consumer's next() races a yield that reaches the high watermark. In every interleaving,
        // once the consumer holds the only buffer, a producer told to pause must be told to resume.
        // A lost resume shows in one interleaving only, so a regression is not caught by every run.
        var paused = 0
        var neverResumed = 0
        for _ in 0..<2_000 {
            let producer = FakeProducer()
            let stream = makeStream(producer, high: 1, low: 1)
            let consumer = Task.detached { try await stream.next() }
            let keepReading = stream.yield(bytes("x"))
            #expect(try await consumer.value == bytes("x"))
            if !keepReading {
                paused += 1
                if producer.calls != [.resumeReading(requestID)] { neverResumed += 1 }
            }
        }
        #expect(neverResumed == 0, "\(neverResumed) of \(paused) pauses were never followed by resumeReading")
    }

    // MARK: - The consumer going away

    @Test func consumerGoneWhileStreamingAbandonsOnceAndDropsLaterYields() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        _ = stream.yield(bytes("unread"))
        stream.consumerGone()
        #expect(producer.calls == [.abandon(requestID)])
        stream.consumerGone()
        #expect(producer.calls == [.abandon(requestID)])

        #expect(stream.yield(bytes("dropped")))
        stream.finish(nil)
        #expect(!stream.isFinished)
        let error = await #expect(throws: AgentError.self) { try await stream.next() }
        #expect(error?.code == .cancelled)
        #expect(producer.calls == [.abandon(requestID)])
    }

    @Test(arguments: [false, true])
    func consumerGoneAfterTheEndDoesNotAbandon(failed: Bool) {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        _ = stream.yield(bytes("unread"))
        stream.finish(failed ? Boom() : nil)
        stream.consumerGone()
        #expect(producer.calls.isEmpty)
    }

    @Test func cancellingAWaitingConsumerThrowsCancelledAndAbandons() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let consumer = Task { try await stream.next() }
        try await letOtherTasksRun()
        consumer.cancel()
        let error = await #expect(throws: AgentError.self) { try await consumer.value }
        #expect(error?.code == .cancelled)
        #expect(error?.phase == .responseBody)
        #expect(error?.host == "example.com")
        #expect(error?.port == 8443)
        #expect(producer.calls == [.abandon(requestID)])

        #expect(stream.yield(bytes("dropped")))
        let again = await #expect(throws: AgentError.self) { try await stream.next() }
        #expect(again?.code == .cancelled)
        #expect(producer.calls == [.abandon(requestID)])
    }

    @Test func aTaskCancelledBeforeCallingNextGetsCancelled() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let consumer = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            #expect(Task.isCancelled)
            return try await stream.next()
        }
        let error = await #expect(throws: AgentError.self) { try await consumer.value }
        #expect(error?.code == .cancelled)
        #expect(producer.calls == [.abandon(requestID)])
    }

    @Test func cancellationAfterTheEndDoesNotAbandon() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        stream.finish(nil)
        let consumer = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await stream.next()
        }
        #expect(try await consumer.value == nil)
        #expect(producer.calls.isEmpty)
    }

    // MARK: - ResponseBody: one iteration

    @Test func aSecondIteratorFailsWithBodyAlreadyConsumed() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: nil)
        _ = stream.yield(bytes("data"))
        stream.finish(nil)

        var first = body.makeAsyncIterator()
        var second = body.makeAsyncIterator()
        let error = await #expect(throws: AgentError.self) { try await second.next() }
        #expect(error?.code == .bodyAlreadyConsumed)
        #expect(error?.host == "example.com")
        #expect(error?.port == 8443)

        #expect(try await first.next() == bytes("data"))
        #expect(try await first.next() == nil)
    }

    @Test func iteratingAfterCollectFails() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: 2)
        _ = stream.yield(bytes("ok"))
        stream.finish(nil)
        #expect(try await body.collect(upTo: 100) == bytes("ok"))

        let error = await #expect(throws: AgentError.self) {
            for try await _ in body {}
        }
        #expect(error?.code == .bodyAlreadyConsumed)
        let again = await #expect(throws: AgentError.self) { try await body.collect(upTo: 100) }
        #expect(again?.code == .bodyAlreadyConsumed)
    }

    @Test func forAwaitDeliversEveryChunk() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: nil)
        let consumer = Task {
            var chunks: [String] = []
            for try await chunk in body {
                chunks.append(String(buffer: chunk))
            }
            return chunks
        }
        for part in ["a", "bc", "def"] {
            _ = stream.yield(bytes(part))
            await Task.yield()
        }
        stream.finish(nil)
        #expect(try await consumer.value == ["a", "bc", "def"])
        #expect(producer.calls.isEmpty)
    }

    // MARK: - ResponseBody.collect(upTo:)

    @Test func collectJoinsTheChunksUpToAnExactLimit() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: 6)
        #expect(body.expectedLength == 6)
        for part in ["ab", "cd", "ef"] { _ = stream.yield(bytes(part)) }
        stream.finish(nil)
        #expect(try await body.collect(upTo: 6) == bytes("abcdef"))
        #expect(producer.calls.isEmpty)
    }

    @Test func collectOfAnEmptyBodyIsEmpty() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: 0)
        stream.finish(nil)
        #expect(try await body.collect(upTo: 0).readableBytes == 0)
    }

    @Test func collectRefusesADeclaredLengthAboveTheLimitBeforeReading() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: 10)
        _ = stream.yield(bytes("0123"))
        let error = await #expect(throws: AgentError.self) { try await body.collect(upTo: 9) }
        #expect(error?.code == .responseBodyTooLarge)
        #expect(error?.phase == .responseBody)
        #expect(error?.host == "example.com")
        #expect(producer.calls == [.abandon(requestID)])
    }

    @Test(arguments: [nil, 4] as [Int?])
    func collectStopsWhenStreamedBytesExceedTheLimit(declared: Int?) async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: declared)
        _ = stream.yield(bytes("abcd"))
        _ = stream.yield(bytes("efgh"))
        let error = await #expect(throws: AgentError.self) { try await body.collect(upTo: 6) }
        #expect(error?.code == .responseBodyTooLarge)
        #expect(producer.calls == [.abandon(requestID)])
        #expect(stream.yield(bytes("more")))
        #expect(producer.calls == [.abandon(requestID)])
    }

    @Test func collectOfACompleteBodyOverTheLimitDoesNotAbandon() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: nil)
        _ = stream.yield(bytes("abcdefgh"))
        stream.finish(nil)
        let error = await #expect(throws: AgentError.self) { try await body.collect(upTo: 7) }
        #expect(error?.code == .responseBodyTooLarge)
        #expect(producer.calls.isEmpty)
    }

    @Test func collectRethrowsTheStreamError() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        let body = ResponseBody(stream: stream, expectedLength: nil)
        _ = stream.yield(bytes("abc"))
        stream.finish(Boom())
        await #expect(throws: Boom.self) { try await body.collect(upTo: 100) }
    }

    @Test func collectWaitsForDataStillToCome() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer, high: 4, low: 2)
        let body = ResponseBody(stream: stream, expectedLength: 12)
        let consumer = Task { try await body.collect(upTo: 12) }
        for part in ["abcd", "efgh", "ijkl"] {
            _ = stream.yield(bytes(part))
            await Task.yield()
        }
        stream.finish(nil)
        #expect(try await consumer.value == bytes("abcdefghijkl"))
        #expect(!producer.calls.contains(.abandon(requestID)))
    }

    // MARK: - Dropping the body

    @Test func droppingAnUnreadBodyWhileStreamingAbandons() {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        do {
            let body = ResponseBody(stream: stream, expectedLength: nil)
            #expect(body.expectedLength == nil)
        }
        #expect(producer.calls == [.abandon(requestID)])
    }

    @Test func aLiveIteratorKeepsTheBodyAlive() {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        var iterator: ResponseBody.AsyncIterator?
        do {
            let body = ResponseBody(stream: stream, expectedLength: nil)
            iterator = body.makeAsyncIterator()
        }
        withExtendedLifetime(iterator) {
            #expect(producer.calls.isEmpty)
        }
        iterator = nil
        #expect(producer.calls == [.abandon(requestID)])
    }

    @Test func droppingACompleteBodyDoesNotAbandon() async throws {
        let producer = FakeProducer()
        let stream = makeStream(producer)
        do {
            let body = ResponseBody(stream: stream, expectedLength: nil)
            _ = stream.yield(bytes("tail"))
            stream.finish(nil)
            var iterator = body.makeAsyncIterator()
            #expect(try await iterator.next() == bytes("tail"))
        }
        #expect(producer.calls.isEmpty)
    }
}
