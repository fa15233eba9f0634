/// The state of one HTTP/1.1 connection, which carries one request at a time.
///
/// A pure value: events in, an action out; no I/O, no clocks. ``HTTP1ClientHandler`` feeds it the
/// channel's events and performs the actions. It decides the two things that keep reuse safe: a
/// connection becomes idle again only after the whole response was received, the whole request was
/// written, and both sides allowed keep-alive; anything else (an error, an unsolicited byte, an
/// abandoned body, an early response, bytes after the response's end) closes it.
struct HTTP1ConnectionStateMachine {
    /// Legal moves: idle → inFlight → idle | closing; any → closing → closed; any → closed.
    enum State {
        /// Ready for a request. Any inbound byte now is unsolicited and closes the connection.
        case idle
        /// A request is being written or its response read.
        case inFlight(Exchange)
        /// We asked the channel to close; waiting for `channelInactive`.
        case closing
        /// The channel is closed.
        case closed
    }

    struct Exchange {
        var requestID: UInt64
        var requestKeepAlive: Bool
        var requestComplete: Bool
        var response: ResponseProgress
    }

    enum ResponseProgress {
        case awaitingHead
        case body(keepAlive: Bool, closeDelimited: Bool)
    }

    /// How a failed exchange failed, for the handler to turn into an ``AgentError``.
    enum Failure {
        /// The channel closed.
        case closed
        /// An error from the pipeline (TLS, decoder, I/O).
        case error(any Error)
        /// The caller cancelled or abandoned the request.
        case cancelled
        /// The request body could not be sent (the caller's sequence threw, or had the wrong length).
        case requestBody(AgentError)
        /// The Agent is shutting down.
        case shutdown
    }

    /// What to do after an exchange ends.
    enum Then {
        /// Hand the connection back to the pool: it is idle and reusable.
        case release
        /// Close the channel.
        case close
        /// The channel is already closed: tell the pool.
        case reportClosed
    }

    enum Action {
        case none
        /// Write the request (head, and the body if it is in memory).
        case writeRequest
        /// The connection cannot take the request; nothing was written.
        case rejectRequest
        /// Deliver the response head and open the body stream.
        case deliverHead(closeDelimited: Bool)
        case forwardBody
        /// The body is complete.
        case finishBody(Then)
        /// Fail the caller who awaits the response head.
        case failHead(Failure, Then)
        /// Fail the body stream the caller reads, which may be `closeDelimited`.
        case failBody(Failure, closeDelimited: Bool, Then)
        case close
        case reportClosed
    }

    private(set) var state: State = .idle

    var isIdle: Bool {
        if case .idle = self.state { return true }
        return false
    }

    // MARK: - Requests

    mutating func requestStarted(id: UInt64, keepAlive: Bool) -> Action {
        switch self.state {
        case .idle:
            self.state = .inFlight(
                Exchange(requestID: id, requestKeepAlive: keepAlive, requestComplete: false, response: .awaitingHead)
            )
            return .writeRequest
        case .closing, .closed:
            return .rejectRequest
        case .inFlight(let exchange):
            preconditionFailure("request \(id) started while request \(exchange.requestID) is in flight")
        }
    }

    /// Whether request `id` is in flight and its body may still be written.
    func acceptsRequestBody(id: UInt64) -> Bool {
        guard case .inFlight(let exchange) = self.state else { return false }
        return exchange.requestID == id && !exchange.requestComplete
    }

    /// Whether request `id` is the one in flight.
    func isCurrent(id: UInt64) -> Bool {
        guard case .inFlight(let exchange) = self.state else { return false }
        return exchange.requestID == id
    }

    mutating func requestFullyWritten(id: UInt64) -> Action {
        guard case .inFlight(var exchange) = self.state, exchange.requestID == id else { return .none }
        exchange.requestComplete = true
        self.state = .inFlight(exchange)
        return .none
    }

    /// The caller cancelled the request or gave up on its body.
    mutating func requestAbandoned(id: UInt64) -> Action {
        guard case .inFlight(let exchange) = self.state, exchange.requestID == id else { return .none }
        self.state = .closing
        switch exchange.response {
        case .awaitingHead:
            return .failHead(.cancelled, .close)
        case .body(_, let closeDelimited):
            return .failBody(.cancelled, closeDelimited: closeDelimited, .close)
        }
    }

    /// The request body could not be sent; the request fails and the connection closes.
    mutating func requestBodyFailed(id: UInt64, error: AgentError) -> Action {
        guard case .inFlight(let exchange) = self.state, exchange.requestID == id else { return .none }
        self.state = .closing
        switch exchange.response {
        case .awaitingHead:
            return .failHead(.requestBody(error), .close)
        case .body(_, let closeDelimited):
            // The server answered early; its response stands, but the connection is not reusable.
            return .failBody(.requestBody(error), closeDelimited: closeDelimited, .close)
        }
    }

    // MARK: - Response

    mutating func responseHeadReceived(keepAlive: Bool, closeDelimited: Bool) -> Action {
        switch self.state {
        case .inFlight(var exchange):
            guard case .awaitingHead = exchange.response else {
                preconditionFailure("a second response head during one exchange")
            }
            let reusable = keepAlive && exchange.requestKeepAlive && !closeDelimited
            exchange.response = .body(keepAlive: reusable, closeDelimited: closeDelimited)
            self.state = .inFlight(exchange)
            return .deliverHead(closeDelimited: closeDelimited)
        case .idle:
            // A response nobody asked for: the framing of this connection is unknown from now on.
            self.state = .closing
            return .close
        case .closing, .closed:
            return .none
        }
    }

    mutating func responseBodyReceived() -> Action {
        switch self.state {
        case .inFlight(let exchange):
            guard case .body = exchange.response else { preconditionFailure("body bytes before the head") }
            return .forwardBody
        case .idle:
            self.state = .closing
            return .close
        case .closing, .closed:
            return .none
        }
    }

    /// The response is complete; `bytesFollow` if the server sent bytes after its end (framing gone
    /// wrong: a Content-Length shorter than the body, a body after a 204), which make the connection
    /// unusable.
    mutating func responseEndReceived(bytesFollow: Bool) -> Action {
        switch self.state {
        case .inFlight(let exchange):
            guard case .body(let keepAlive, _) = exchange.response else {
                preconditionFailure("response end before the head")
            }
            if keepAlive && exchange.requestComplete && !bytesFollow {
                self.state = .idle
                return .finishBody(.release)
            }
            // Not reusable, bytes after the end, or the server answered before our request body was fully
            // sent.
            self.state = .closing
            return .finishBody(.close)
        case .idle:
            self.state = .closing
            return .close
        case .closing, .closed:
            return .none
        }
    }

    // MARK: - Channel

    mutating func errorCaught(_ error: any Error) -> Action {
        switch self.state {
        case .idle:
            self.state = .closing
            return .close
        case .inFlight(let exchange):
            self.state = .closing
            switch exchange.response {
            case .awaitingHead:
                return .failHead(.error(error), .close)
            case .body(_, let closeDelimited):
                return .failBody(.error(error), closeDelimited: closeDelimited, .close)
            }
        case .closing, .closed:
            return .none
        }
    }

    mutating func channelInactive() -> Action {
        let previous = self.state
        self.state = .closed
        switch previous {
        case .idle, .closing:
            return .reportClosed
        case .inFlight(let exchange):
            switch exchange.response {
            case .awaitingHead:
                return .failHead(.closed, .reportClosed)
            case .body(_, let closeDelimited):
                return .failBody(.closed, closeDelimited: closeDelimited, .reportClosed)
            }
        case .closed:
            return .none
        }
    }

    /// The pool or the Agent wants the connection closed (idle timeout, shutdown, too many free).
    mutating func closeRequested(failure: Failure) -> Action {
        switch self.state {
        case .idle:
            self.state = .closing
            return .close
        case .inFlight(let exchange):
            self.state = .closing
            switch exchange.response {
            case .awaitingHead:
                return .failHead(failure, .close)
            case .body(_, let closeDelimited):
                return .failBody(failure, closeDelimited: closeDelimited, .close)
            }
        case .closing, .closed:
            return .none
        }
    }
}
