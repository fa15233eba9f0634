import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore

/// One request's timing record and observers, fed by the Agent (queue, lease) and by the connection's
/// handler (writes, first byte, head, end).
///
/// Every milestone is taken from `NIODeadline.now()`. The record is behind a lock because the
/// response's owner may read it from any task while the event loop still writes to it. Observers are
/// called after the lock is released.
///
/// A tracker follows one hop of a redirect chain. Observers get the hop's own record; the caller (the
/// response's ``timing``, an error's timing) gets it placed on the chain's timeline, after the earlier
/// hops.
final class RequestTracker: Sendable {
    let request: ObservedRequest
    let observers: [any AgentObserver]
    /// The hops before this one; `nil` for the first.
    let chain: RedirectChain?
    private let state: NIOLockedValueBox<State>

    private struct State {
        var timing: RequestTiming
        var ended = false
    }

    init(request: ObservedRequest, observers: [any AgentObserver], now: NIODeadline, chain: RedirectChain? = nil) {
        self.request = request
        self.observers = observers
        self.chain = chain
        self.state = NIOLockedValueBox(State(timing: RequestTiming(startedAt: now)))
    }

    /// The record as it stands, as the caller sees it: covering the redirects before this hop, if any.
    var timing: RequestTiming {
        self.chained(self.state.withLockedValue { $0.timing })
    }

    /// This hop's own record as it stands. One that has not ended yet (its body was dropped and the
    /// connection is still failing it) ends at `now` in the copy returned.
    func hopTiming(now: NIODeadline) -> RequestTiming {
        var timing = self.state.withLockedValue { $0.timing }
        if timing.end == nil {
            timing.end = self.offset(now, from: timing.startedAt)
        }
        return timing
    }

    private func chained(_ timing: RequestTiming) -> RequestTiming {
        guard let chain else { return timing }
        return timing.placed(after: chain.hops, chainStart: chain.startedAt)
    }

    @inline(__always)
    private func emit(_ event: (any AgentObserver, ObservedRequest) -> Void) {
        for observer in self.observers {
            event(observer, self.request)
        }
    }

    /// `instant - start`, never negative.
    private func offset(_ instant: NIODeadline, from start: NIODeadline) -> Duration {
        let (later, earlier) = (instant.uptimeNanoseconds, start.uptimeNanoseconds)
        return later > earlier ? .nanoseconds(Int64(truncatingIfNeeded: later - earlier)) : .zero
    }

    // MARK: - From the Agent

    func queued() {
        self.emit { $0.requestQueued($1) }
    }

    /// The request got a connection. A new connection's dial steps are placed on the request's timeline,
    /// clamped to its start when the dial began before the request did.
    func acquired(_ connection: HTTP1Connection, reused: Bool, info: ConnectionInfo, now: NIODeadline) {
        let idle = reused ? connection.idleSince.map { self.offset(now, from: $0) } : nil
        self.state.withLockedValue { state in
            // In place: the record is large, and this runs for every request.
            state.timing.reusedConnection = reused
            state.timing.idleTimeBeforeReuse = idle
            state.timing.connectionID = connection.id
            state.timing.remoteAddress = info.remoteAddress
            state.timing.remotePort = info.remotePort
            state.timing.localAddress = connection.localIP
            state.timing.localPort = connection.localPort
            state.timing.tlsVersion = info.tls?.version
            state.timing.tlsCipher = info.tls?.cipher
            state.timing.alpn = info.tls?.alpn
            state.timing.resumedSession = info.tls?.sessionResumed ?? false
            if reused {
                state.timing.expectsTLS = connection.timeline.expectsTLS
                state.timing.queueEnd = self.offset(now, from: state.timing.startedAt)
                state.timing.dnsEnd = nil
                state.timing.connectEnd = nil
                state.timing.tlsEnd = nil
            } else {
                self.placeDial(connection.timeline, in: &state.timing)
            }
        }
        self.emit { $0.connectionAcquired($1, connection: info, idleTime: idle) }
    }

    /// A reused connection turned out to be closed and the request goes to another one: forget the
    /// first connection's facts and milestones, keep the start.
    func retrying() {
        self.state.withLockedValue { state in
            var fresh = RequestTiming(startedAt: state.timing.startedAt)
            fresh.attempts = state.timing.attempts + 1
            state.timing = fresh
        }
    }

    /// A dial this request waited for failed before a connection was handed to it: place the steps it
    /// reached on the request's timeline.
    private func placeDial(_ line: ConnectionTimeline, in timing: inout RequestTiming) {
        let start = timing.startedAt
        timing.queueEnd = self.offset(line.dialStart, from: start)
        timing.dnsEnd = line.dnsEnd.map { self.offset($0, from: start) }
        timing.connectEnd = line.connectEnd.map { self.offset($0, from: start) }
        timing.tlsEnd = line.tlsEnd.map { self.offset($0, from: start) }
        timing.expectsTLS = line.expectsTLS
    }

    /// The request failed. Reports the failure once and returns `error` with the timing attached.
    func fail(_ error: AgentError, now: NIODeadline = .now()) -> AgentError {
        var error = error
        let (timing, first): (RequestTiming, Bool) = self.state.withLockedValue { state in
            if state.ended { return (state.timing, false) }
            state.ended = true
            if let line = error.dialTimeline, state.timing.queueEnd == nil {
                self.placeDial(line, in: &state.timing)
            }
            state.timing.end = self.offset(now, from: state.timing.startedAt)
            return (state.timing, true)
        }
        error.dialTimeline = nil
        if first {
            // Observers see the hop: its own record, in the error too.
            var reported = error
            reported.timing = timing
            self.emit { $0.requestFailed($1, error: reported, timing: timing) }
        }
        error.timing = self.chained(timing)
        return error
    }

    // MARK: - From the handler (on the event loop)

    /// Updates the record unless the request already ended; returns whether it had not.
    @inline(__always)
    private func update(_ body: (inout RequestTiming) -> Void) -> Bool {
        self.state.withLockedValue { state in
            guard !state.ended else { return false }
            body(&state.timing)
            return true
        }
    }

    func requestStarting(now: NIODeadline) {
        _ = self.update { $0.requestStart = self.offset(now, from: $0.startedAt) }
    }

    func requestHeadWritten() {
        if !self.observers.isEmpty, !self.isEnded {
            self.emit { $0.requestHeadWritten($1) }
        }
    }

    /// The last byte of the request reached the socket.
    func requestWritten(bodyBytes: Int, now: NIODeadline) {
        let open = self.update { timing in
            timing.requestEnd = self.offset(now, from: timing.startedAt)
            timing.bodyBytesSent = bodyBytes
        }
        if open {
            self.emit { $0.requestBodyWritten($1, bytes: bodyBytes) }
        }
    }

    func firstByte(now: NIODeadline) {
        if self.update({ $0.firstByte = self.offset(now, from: $0.startedAt) }) {
            self.emit { $0.firstResponseByte($1) }
        }
    }

    /// The Agent follows the redirect in `response`: `next` is the request it sends next.
    func redirected(response: HTTPResponse, next: HTTPRequest) {
        self.emit { $0.requestRedirected($1, response: response, next: next) }
    }

    func responseHead(_ status: HTTPResponse.Status, now: NIODeadline) {
        let open = self.update { timing in
            timing.responseHead = self.offset(now, from: timing.startedAt)
            timing.statusCode = status.code
        }
        if open {
            self.emit { $0.responseHeadReceived($1, status: status) }
        }
    }

    private var isEnded: Bool { self.state.withLockedValue { $0.ended } }

    /// Byte counts so far: as body bytes arrive, and when the exchange ends, however it ends. Kept up to
    /// date even after a failure reported by the body's reader, so the response's record ends exact.
    func bytes(wireSent: Int, wireReceived: Int, bodyReceived: Int) {
        self.state.withLockedValue { state in
            state.timing.wireBytesSent = wireSent
            state.timing.wireBytesReceived = wireReceived
            state.timing.bodyBytesReceived = bodyReceived
        }
    }

    /// The body's reader decoded `bytes` bytes so far. Recorded after the end of the exchange too.
    func decoded(bytes: Int) {
        self.state.withLockedValue { $0.timing.decodedBodyBytes = bytes }
    }

    /// The body's last byte arrived.
    func finished(bodyBytes: Int, now: NIODeadline) {
        let timing: RequestTiming? = self.state.withLockedValue { state in
            if state.ended { return nil }
            state.ended = true
            state.timing.end = self.offset(now, from: state.timing.startedAt)
            return state.timing
        }
        guard let timing else { return }
        self.emit { $0.responseBodyFinished($1, bytes: bodyBytes) }
        self.emit { $0.requestFinished($1, timing: timing) }
    }
}

/// The hops of a redirect chain before the current one.
struct RedirectChain: Sendable {
    /// When the first hop started.
    var startedAt: NIODeadline
    /// Each earlier hop's own record.
    var hops: [RequestTiming]
}
