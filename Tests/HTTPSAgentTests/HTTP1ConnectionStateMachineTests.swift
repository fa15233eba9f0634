import Testing

@testable import HTTPSAgent

private typealias Machine = HTTP1ConnectionStateMachine

// MARK: - Comparable mirrors of the machine's values (tests only)

/// ``HTTP1ConnectionStateMachine/Failure`` made comparable: errors by description, request body
/// errors by code.
private enum Fail: Equatable, Sendable {
    case closed
    case error(String)
    case cancelled
    case requestBody(AgentError.Code)
    case shutdown

    init(_ failure: Machine.Failure) {
        switch failure {
        case .closed: self = .closed
        case .error(let error): self = .error(String(describing: error))
        case .cancelled: self = .cancelled
        case .requestBody(let error): self = .requestBody(error.code)
        case .shutdown: self = .shutdown
        }
    }
}

/// ``HTTP1ConnectionStateMachine/Action`` made comparable.
private enum Step: Equatable, Sendable {
    case none
    case writeRequest
    case rejectRequest
    case deliverHead(closeDelimited: Bool)
    case forwardBody
    case finishBody(Machine.Then)
    case failHead(Fail, Machine.Then)
    case failBody(Fail, closeDelimited: Bool, Machine.Then)
    case close
    case reportClosed

    init(_ action: Machine.Action) {
        switch action {
        case .none: self = .none
        case .writeRequest: self = .writeRequest
        case .rejectRequest: self = .rejectRequest
        case .deliverHead(let closeDelimited): self = .deliverHead(closeDelimited: closeDelimited)
        case .forwardBody: self = .forwardBody
        case .finishBody(let then): self = .finishBody(then)
        case .failHead(let failure, let then): self = .failHead(Fail(failure), then)
        case .failBody(let failure, let closeDelimited, let then):
            self = .failBody(Fail(failure), closeDelimited: closeDelimited, then)
        case .close: self = .close
        case .reportClosed: self = .reportClosed
        }
    }
}

/// ``HTTP1ConnectionStateMachine/State`` made comparable.
private enum Snapshot: Equatable {
    case idle
    case awaitingHead(id: UInt64, keepAlive: Bool, complete: Bool)
    case body(id: UInt64, complete: Bool, reusable: Bool, closeDelimited: Bool)
    case closing
    case closed

    init(_ machine: Machine) {
        switch machine.state {
        case .idle: self = .idle
        case .closing: self = .closing
        case .closed: self = .closed
        case .inFlight(let exchange):
            switch exchange.response {
            case .awaitingHead:
                self = .awaitingHead(
                    id: exchange.requestID,
                    keepAlive: exchange.requestKeepAlive,
                    complete: exchange.requestComplete
                )
            case .body(let keepAlive, let closeDelimited):
                self = .body(
                    id: exchange.requestID,
                    complete: exchange.requestComplete,
                    reusable: keepAlive,
                    closeDelimited: closeDelimited
                )
            }
        }
    }
}

private struct Boom: Error, CustomStringConvertible {
    var description: String { "boom" }
}

private let bodyError = AgentError(code: .requestBodyFailed, phase: .requestWrite, message: "the sequence threw")

/// The states a connection can be in when an event arrives. The request in flight, if any, has id 1.
private enum Fixture: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case idle
    /// Request written completely, no response yet.
    case awaitingHead
    /// Request body still being written, no response yet.
    case awaitingHeadWritingBody
    /// Keep-alive response with a Content-Length or chunked body.
    case body
    /// Response whose body ends with the connection.
    case closeDelimitedBody
    case closing
    case closed

    var testDescription: String { self.rawValue }

    func make() -> Machine {
        var machine = Machine()
        switch self {
        case .idle:
            break
        case .awaitingHead, .awaitingHeadWritingBody, .body, .closeDelimitedBody:
            _ = machine.requestStarted(id: 1, keepAlive: true)
            if self != .awaitingHeadWritingBody {
                _ = machine.requestFullyWritten(id: 1)
            }
            if self == .body || self == .closeDelimitedBody {
                _ = machine.responseHeadReceived(keepAlive: true, closeDelimited: self == .closeDelimitedBody)
            }
        case .closing:
            _ = machine.closeRequested(failure: .cancelled)
        case .closed:
            _ = machine.channelInactive()
        }
        return machine
    }

    var isInFlight: Bool {
        switch self {
        case .awaitingHead, .awaitingHeadWritingBody, .body, .closeDelimitedBody: true
        case .idle, .closing, .closed: false
        }
    }
}

@Suite("HTTP1ConnectionStateMachine")
struct HTTP1ConnectionStateMachineTests {
    // MARK: - Fixtures are what they claim

    @Test func fixturesReachTheirStates() {
        #expect(Snapshot(Fixture.idle.make()) == .idle)
        #expect(Snapshot(Fixture.awaitingHead.make()) == .awaitingHead(id: 1, keepAlive: true, complete: true))
        #expect(
            Snapshot(Fixture.awaitingHeadWritingBody.make()) == .awaitingHead(id: 1, keepAlive: true, complete: false)
        )
        #expect(
            Snapshot(Fixture.body.make()) == .body(id: 1, complete: true, reusable: true, closeDelimited: false)
        )
        #expect(
            Snapshot(Fixture.closeDelimitedBody.make())
                == .body(id: 1, complete: true, reusable: false, closeDelimited: true)
        )
        #expect(Snapshot(Fixture.closing.make()) == .closing)
        #expect(Snapshot(Fixture.closed.make()) == .closed)
    }

    // MARK: - Starting requests

    @Test func requestOnIdleConnectionIsWritten() {
        var machine = Machine()
        #expect(machine.isIdle)
        #expect(Step(machine.requestStarted(id: 7, keepAlive: false)) == .writeRequest)
        #expect(Snapshot(machine) == .awaitingHead(id: 7, keepAlive: false, complete: false))
        #expect(!machine.isIdle)
    }

    @Test(arguments: [Fixture.closing, .closed])
    fileprivate func requestOnClosingOrClosedConnectionIsRejected(_ fixture: Fixture) {
        var machine = fixture.make()
        #expect(Step(machine.requestStarted(id: 2, keepAlive: true)) == .rejectRequest)
        #expect(Snapshot(machine) == Snapshot(fixture.make()))
        #expect(!machine.isCurrent(id: 2))
        #expect(!machine.acceptsRequestBody(id: 2))
    }

    // MARK: - Queries

    @Test(arguments: Fixture.allCases)
    fileprivate func queriesInEachState(_ fixture: Fixture) {
        let machine = fixture.make()
        #expect(machine.isIdle == (fixture == .idle))
        #expect(machine.isCurrent(id: 1) == fixture.isInFlight)
        #expect(!machine.isCurrent(id: 2))
        #expect(machine.acceptsRequestBody(id: 1) == (fixture == .awaitingHeadWritingBody))
        #expect(!machine.acceptsRequestBody(id: 2))
    }

    @Test func requestBodyIsAcceptedUntilFullyWrittenEvenAfterAnEarlyResponseHead() {
        var machine = Machine()
        _ = machine.requestStarted(id: 3, keepAlive: true)
        #expect(machine.acceptsRequestBody(id: 3))
        #expect(
            Step(machine.responseHeadReceived(keepAlive: true, closeDelimited: false))
                == .deliverHead(closeDelimited: false)
        )
        #expect(machine.acceptsRequestBody(id: 3))
        #expect(Step(machine.requestFullyWritten(id: 3)) == .none)
        #expect(!machine.acceptsRequestBody(id: 3))
        #expect(machine.isCurrent(id: 3))
    }

    @Test(arguments: Fixture.allCases)
    fileprivate func requestFullyWrittenForAnotherRequestIsIgnored(_ fixture: Fixture) {
        var machine = fixture.make()
        #expect(Step(machine.requestFullyWritten(id: 2)) == .none)
        #expect(Snapshot(machine) == Snapshot(fixture.make()))
    }

    // MARK: - Complete exchanges

    @Test func keepAliveExchangeReleasesTheConnectionForTheNextRequest() {
        var machine = Machine()
        #expect(Step(machine.requestStarted(id: 1, keepAlive: true)) == .writeRequest)
        #expect(Step(machine.requestFullyWritten(id: 1)) == .none)
        #expect(
            Step(machine.responseHeadReceived(keepAlive: true, closeDelimited: false))
                == .deliverHead(closeDelimited: false)
        )
        #expect(Step(machine.responseBodyReceived()) == .forwardBody)
        #expect(Step(machine.responseBodyReceived()) == .forwardBody)
        #expect(Step(machine.responseEndReceived(bytesFollow: false)) == .finishBody(.release))
        #expect(machine.isIdle)
        #expect(!machine.isCurrent(id: 1))

        #expect(Step(machine.requestStarted(id: 2, keepAlive: true)) == .writeRequest)
        #expect(Step(machine.requestFullyWritten(id: 2)) == .none)
        #expect(
            Step(machine.responseHeadReceived(keepAlive: true, closeDelimited: false))
                == .deliverHead(closeDelimited: false)
        )
        #expect(Step(machine.responseEndReceived(bytesFollow: false)) == .finishBody(.release))
        #expect(machine.isIdle)
    }

    @Test(
        "A response that is not reusable closes the connection",
        arguments: [
            (requestKeepAlive: false, responseKeepAlive: true, closeDelimited: false),
            (requestKeepAlive: true, responseKeepAlive: false, closeDelimited: false),
            (requestKeepAlive: false, responseKeepAlive: false, closeDelimited: false),
            (requestKeepAlive: true, responseKeepAlive: true, closeDelimited: true),
        ]
    )
    func notReusableResponseCloses(requestKeepAlive: Bool, responseKeepAlive: Bool, closeDelimited: Bool) {
        var machine = Machine()
        _ = machine.requestStarted(id: 1, keepAlive: requestKeepAlive)
        _ = machine.requestFullyWritten(id: 1)
        #expect(
            Step(machine.responseHeadReceived(keepAlive: responseKeepAlive, closeDelimited: closeDelimited))
                == .deliverHead(closeDelimited: closeDelimited)
        )
        #expect(Snapshot(machine) == .body(id: 1, complete: true, reusable: false, closeDelimited: closeDelimited))
        #expect(Step(machine.responseBodyReceived()) == .forwardBody)
        #expect(Step(machine.responseEndReceived(bytesFollow: false)) == .finishBody(.close))
        #expect(Snapshot(machine) == .closing)
        #expect(Step(machine.requestStarted(id: 2, keepAlive: true)) == .rejectRequest)
        #expect(Step(machine.channelInactive()) == .reportClosed)
        #expect(Snapshot(machine) == .closed)
    }

    @Test func bytesAfterTheResponseEndCloseAReusableConnection() {
        var machine = Machine()
        _ = machine.requestStarted(id: 1, keepAlive: true)
        _ = machine.requestFullyWritten(id: 1)
        _ = machine.responseHeadReceived(keepAlive: true, closeDelimited: false)
        #expect(Snapshot(machine) == .body(id: 1, complete: true, reusable: true, closeDelimited: false))
        // The body completes: the response stands, but the connection is not handed out again.
        #expect(Step(machine.responseEndReceived(bytesFollow: true)) == .finishBody(.close))
        #expect(Snapshot(machine) == .closing)
        #expect(Step(machine.requestStarted(id: 2, keepAlive: true)) == .rejectRequest)
    }

    @Test func earlyResponseBeforeTheRequestBodyWasWrittenCloses() {
        var machine = Machine()
        _ = machine.requestStarted(id: 1, keepAlive: true)
        #expect(
            Step(machine.responseHeadReceived(keepAlive: true, closeDelimited: false))
                == .deliverHead(closeDelimited: false)
        )
        #expect(Step(machine.responseBodyReceived()) == .forwardBody)
        #expect(Step(machine.responseEndReceived(bytesFollow: false)) == .finishBody(.close))
        #expect(Snapshot(machine) == .closing)
        #expect(!machine.acceptsRequestBody(id: 1))
    }

    @Test func earlyResponseHeadWithTheRequestFinishedBeforeItsEndReleases() {
        var machine = Machine()
        _ = machine.requestStarted(id: 1, keepAlive: true)
        #expect(
            Step(machine.responseHeadReceived(keepAlive: true, closeDelimited: false))
                == .deliverHead(closeDelimited: false)
        )
        _ = machine.requestFullyWritten(id: 1)
        #expect(Step(machine.responseEndReceived(bytesFollow: false)) == .finishBody(.release))
        #expect(machine.isIdle)
    }

    // MARK: - Unsolicited and late response parts

    @Test(arguments: ["head", "body", "end"])
    func unsolicitedResponsePartWhileIdleCloses(_ part: String) {
        var machine = Machine()
        let action: Machine.Action
        switch part {
        case "head": action = machine.responseHeadReceived(keepAlive: true, closeDelimited: false)
        case "body": action = machine.responseBodyReceived()
        default: action = machine.responseEndReceived(bytesFollow: false)
        }
        #expect(Step(action) == .close)
        #expect(Snapshot(machine) == .closing)
        #expect(Step(machine.requestStarted(id: 1, keepAlive: true)) == .rejectRequest)
    }

    @Test(arguments: [Fixture.closing, .closed])
    fileprivate func responsePartsAfterCloseAreIgnored(_ fixture: Fixture) {
        var machine = fixture.make()
        let expected = Snapshot(machine)
        #expect(Step(machine.responseHeadReceived(keepAlive: true, closeDelimited: false)) == .none)
        #expect(Step(machine.responseBodyReceived()) == .none)
        #expect(Step(machine.responseEndReceived(bytesFollow: false)) == .none)
        #expect(Snapshot(machine) == expected)
    }

    // MARK: - Abandoned requests and failed request bodies

    @Test func abandonWhileAwaitingHeadFailsTheHeadAndCloses() {
        var machine = Fixture.awaitingHead.make()
        #expect(Step(machine.requestAbandoned(id: 1)) == .failHead(.cancelled, .close))
        #expect(Snapshot(machine) == .closing)
    }

    @Test(arguments: [false, true])
    func abandonDuringTheBodyFailsTheBodyAndCloses(closeDelimited: Bool) {
        var machine = (closeDelimited ? Fixture.closeDelimitedBody : .body).make()
        #expect(
            Step(machine.requestAbandoned(id: 1)) == .failBody(.cancelled, closeDelimited: closeDelimited, .close)
        )
        #expect(Snapshot(machine) == .closing)
    }

    @Test(arguments: Fixture.allCases)
    fileprivate func abandonOrBodyFailureOfAnotherRequestIsIgnored(_ fixture: Fixture) {
        var machine = fixture.make()
        let expected = Snapshot(machine)
        #expect(Step(machine.requestAbandoned(id: 2)) == .none)
        #expect(Step(machine.requestBodyFailed(id: 2, error: bodyError)) == .none)
        #expect(Snapshot(machine) == expected)
    }

    @Test func abandonOfAFinishedRequestDoesNotDisturbTheNextOne() {
        var machine = Fixture.body.make()
        #expect(Step(machine.responseEndReceived(bytesFollow: false)) == .finishBody(.release))
        // The consumer of request 1 drops its body late: the connection is idle and stays reusable.
        #expect(Step(machine.requestAbandoned(id: 1)) == .none)
        #expect(machine.isIdle)
        _ = machine.requestStarted(id: 2, keepAlive: true)
        #expect(Step(machine.requestAbandoned(id: 1)) == .none)
        #expect(Step(machine.requestBodyFailed(id: 1, error: bodyError)) == .none)
        #expect(Snapshot(machine) == .awaitingHead(id: 2, keepAlive: true, complete: false))
        #expect(machine.isCurrent(id: 2))
        #expect(!machine.isCurrent(id: 1))
    }

    @Test func requestBodyFailureWhileAwaitingHeadFailsTheHeadAndCloses() {
        var machine = Fixture.awaitingHeadWritingBody.make()
        #expect(
            Step(machine.requestBodyFailed(id: 1, error: bodyError))
                == .failHead(.requestBody(.requestBodyFailed), .close)
        )
        #expect(Snapshot(machine) == .closing)
        #expect(!machine.acceptsRequestBody(id: 1))
    }

    @Test(arguments: [false, true])
    func requestBodyFailureAfterAnEarlyResponseFailsTheBodyAndCloses(closeDelimited: Bool) {
        var machine = Machine()
        _ = machine.requestStarted(id: 1, keepAlive: true)
        _ = machine.responseHeadReceived(keepAlive: true, closeDelimited: closeDelimited)
        let mismatch = AgentError(code: .requestBodyLengthMismatch, phase: .requestWrite, message: "too short")
        #expect(
            Step(machine.requestBodyFailed(id: 1, error: mismatch))
                == .failBody(.requestBody(.requestBodyLengthMismatch), closeDelimited: closeDelimited, .close)
        )
        #expect(Snapshot(machine) == .closing)
    }

    // MARK: - Pipeline errors

    @Test func errorWhileIdleCloses() {
        var machine = Machine()
        #expect(Step(machine.errorCaught(Boom())) == .close)
        #expect(Snapshot(machine) == .closing)
    }

    @Test(arguments: [Fixture.awaitingHead, .awaitingHeadWritingBody])
    fileprivate func errorWhileAwaitingHeadFailsTheHead(_ fixture: Fixture) {
        var machine = fixture.make()
        #expect(Step(machine.errorCaught(Boom())) == .failHead(.error("boom"), .close))
        #expect(Snapshot(machine) == .closing)
    }

    @Test(arguments: [false, true])
    func errorDuringTheBodyFailsTheBody(closeDelimited: Bool) {
        var machine = (closeDelimited ? Fixture.closeDelimitedBody : .body).make()
        #expect(Step(machine.errorCaught(Boom())) == .failBody(.error("boom"), closeDelimited: closeDelimited, .close))
        #expect(Snapshot(machine) == .closing)
    }

    @Test(arguments: [Fixture.closing, .closed])
    fileprivate func errorAfterCloseIsIgnored(_ fixture: Fixture) {
        var machine = fixture.make()
        #expect(Step(machine.errorCaught(Boom())) == .none)
        #expect(Snapshot(machine) == Snapshot(fixture.make()))
    }

    // MARK: - The channel going inactive

    @Test(
        arguments: [
            (Fixture.idle, Step.reportClosed),
            (.awaitingHead, .failHead(.closed, .reportClosed)),
            (.awaitingHeadWritingBody, .failHead(.closed, .reportClosed)),
            (.body, .failBody(.closed, closeDelimited: false, .reportClosed)),
            (.closeDelimitedBody, .failBody(.closed, closeDelimited: true, .reportClosed)),
            (.closing, .reportClosed),
            (.closed, .none),
        ]
    )
    fileprivate func channelInactiveInEachState(_ fixture: Fixture, expected: Step) {
        var machine = fixture.make()
        #expect(Step(machine.channelInactive()) == expected)
        #expect(Snapshot(machine) == .closed)
        #expect(!machine.isCurrent(id: 1))
        // Exactly one report: a second inactive event does nothing.
        #expect(Step(machine.channelInactive()) == .none)
        #expect(Step(machine.requestStarted(id: 2, keepAlive: true)) == .rejectRequest)
    }

    @Test func errorThenInactiveReportsTheCloseOnce() {
        var machine = Fixture.body.make()
        #expect(Step(machine.errorCaught(Boom())) == .failBody(.error("boom"), closeDelimited: false, .close))
        #expect(Step(machine.requestAbandoned(id: 1)) == .none)
        #expect(Step(machine.channelInactive()) == .reportClosed)
        #expect(Step(machine.channelInactive()) == .none)
    }

    // MARK: - Close requested by the pool or the Agent

    @Test(
        arguments: [
            (Fixture.idle, Step.close),
            (.awaitingHead, .failHead(.shutdown, .close)),
            (.awaitingHeadWritingBody, .failHead(.shutdown, .close)),
            (.body, .failBody(.shutdown, closeDelimited: false, .close)),
            (.closeDelimitedBody, .failBody(.shutdown, closeDelimited: true, .close)),
            (.closing, .none),
            (.closed, .none),
        ]
    )
    fileprivate func shutdownInEachState(_ fixture: Fixture, expected: Step) {
        var machine = fixture.make()
        #expect(Step(machine.closeRequested(failure: .shutdown)) == expected)
        #expect(Snapshot(machine) == (fixture == .closed ? .closed : .closing))
        #expect(Step(machine.requestStarted(id: 2, keepAlive: true)) == .rejectRequest)
    }

    @Test func closeRequestedPassesItsFailureThrough() {
        var awaiting = Fixture.awaitingHead.make()
        #expect(Step(awaiting.closeRequested(failure: .cancelled)) == .failHead(.cancelled, .close))
        var reading = Fixture.body.make()
        #expect(
            Step(reading.closeRequested(failure: .error(Boom())))
                == .failBody(.error("boom"), closeDelimited: false, .close)
        )
    }

    @Test func closingThenInactiveReportsClosedAndIgnoresLateEvents() {
        var machine = Machine()
        #expect(Step(machine.closeRequested(failure: .cancelled)) == .close)
        #expect(Step(machine.closeRequested(failure: .shutdown)) == .none)
        #expect(Step(machine.requestAbandoned(id: 1)) == .none)
        #expect(Step(machine.channelInactive()) == .reportClosed)
        #expect(Step(machine.closeRequested(failure: .shutdown)) == .none)
        #expect(Snapshot(machine) == .closed)
    }
}
