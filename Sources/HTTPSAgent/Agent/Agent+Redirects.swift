public import HTTPTypes
import NIOCore

extension Agent {
    /// Sends a request, following redirects as `redirects` says instead of as ``Configuration/redirects``
    /// does, and returns once the final response head has arrived.
    ///
    /// Everything else is as in ``execute(_:body:observer:)``. With ``RedirectPolicy/disabled`` every
    /// response is returned as it came; otherwise a `301`, `302`, `303`, `307` or `308` with a `Location`
    /// is followed by the rules of ``RedirectPolicy``: its body is read and thrown away (up to 64 KiB;
    /// a longer one is dropped, which closes its connection), then the next request goes out, on a
    /// pooled connection when there is one for its origin. The response returned is the first that is
    /// not followed: ``AgentResponse/url`` is its URL, ``AgentResponse/redirectCount`` the redirects
    /// followed, and its ``AgentResponse/timing`` covers the whole chain, with each earlier hop's record
    /// in ``RequestTiming/hops``.
    ///
    /// Each hop is a request of its own for observers, with its own id and record; see
    /// ``AgentObserver/requestRedirected(_:response:next:)``.
    ///
    /// - Parameters:
    ///   - request: method, scheme, authority, path and header fields.
    ///   - body: the request body, if any. A streamed body cannot be sent twice: a redirect that needs it
    ///     again (`307`, `308`, or `301`/`302` of another method than `POST`) is returned as it is.
    ///   - observer: told of the events of every hop, in addition to the Agent's ``observers``.
    ///   - redirects: whether and how far to follow redirects, for this request only.
    /// - Returns: the final response head, its streamed body, and facts about its connection.
    /// - Throws: ``AgentError``; for a redirect it refuses, ``AgentError/Code/tooManyRedirects``,
    ///   ``AgentError/Code/redirectLoop``, ``AgentError/Code/insecureRedirect`` or
    ///   ``AgentError/Code/invalidRedirect``, in phase ``AgentError/Phase/redirect``, naming the host that
    ///   sent the redirect, with the chain's timing.
    public func execute(
        _ request: HTTPRequest,
        body: RequestBody? = nil,
        observer: (any AgentObserver)? = nil,
        redirects: RedirectPolicy
    ) async throws -> AgentResponse {
        var follower = RedirectFollower(request: request, body: body, policy: redirects)
        do {
            return try await self.follow(&follower, observer: observer)
        } catch var error as AgentError where error.timing != nil {
            // A request that started: name the URL it was at.
            error.url = error.url ?? follower.url.description
            throw error
        }
    }

    /// Sends the follower's requests until one is not followed.
    private func follow(
        _ follower: inout RedirectFollower,
        observer: (any AgentObserver)?
    ) async throws -> AgentResponse {
        let start = NIODeadline.now()
        var observers = self.observers
        if let observer { observers.append(observer) }
        var hops: [RequestTiming] = []
        while true {
            let chain = hops.isEmpty ? nil : RedirectChain(startedAt: start, hops: hops)
            let response: AgentResponse
            let tracker: RequestTracker
            do {
                (response, tracker) = try await self.send(
                    follower.request,
                    body: follower.body,
                    observers: observers,
                    start: hops.isEmpty ? start : .now(),
                    chain: chain
                )
            } catch var error as AgentError where error.timing == nil && chain != nil {
                // Rejected before it started (the next request did not check out): the chain's time so far.
                var empty = RequestTiming(startedAt: .now())
                empty.end = .zero
                error.timing = empty.placed(after: hops, chainStart: start)
                throw error
            }
            switch follower.decide(response.head) {
            case .deliver:
                return response
            case .follow:
                await Self.discardBody(of: response, tracker: tracker)
                if Task.isCancelled {
                    var error = AgentError(
                        code: .cancelled,
                        phase: .redirect,
                        host: tracker.request.host,
                        port: tracker.request.port,
                        message: "the task was cancelled while following a redirect",
                        requestMayHaveBeenSent: true
                    )
                    error.timing = tracker.hopTiming(now: .now()).placed(after: hops, chainStart: start)
                    throw error
                }
                hops.append(tracker.hopTiming(now: .now()))
                tracker.redirected(response: response.head, next: follower.request)
            case .refuse(var error):
                await Self.discardBody(of: response, tracker: tracker)
                error.timing = tracker.hopTiming(now: .now()).placed(after: hops, chainStart: start)
                throw error
            }
        }
    }

    /// Reads and throws away a redirect's body, so that its connection goes back to the pool. One longer
    /// than ``RedirectPolicy/discardLimit`` is dropped instead, which closes the connection; the hop then
    /// ends here, as failed (cancelled), so that its observers hear of its end before the next hop. A body
    /// that fails to arrive has closed its connection already and is not an error of the chain.
    private static func discardBody(of response: AgentResponse, tracker: RequestTracker) async {
        let stream = response.body.handle.stream
        let limit = RedirectPolicy.discardLimit
        func drop() {
            let error = AgentError(
                code: .cancelled,
                phase: .responseBody,
                host: tracker.request.host,
                port: tracker.request.port,
                message: "the redirect's body is longer than \(limit) bytes: dropped, and its connection closed",
                requestMayHaveBeenSent: true
            )
            _ = tracker.fail(error)
            stream.consumerGone()
        }
        if let expected = response.body.expectedLength, expected > limit {
            drop()
            return
        }
        var discarded = 0
        do {
            // The raw stream: a compressed body is not worth decoding to throw away.
            while let chunk = try await stream.next() {
                discarded += chunk.readableBytes
                if discarded > limit {
                    drop()
                    return
                }
            }
        } catch {
            return
        }
    }
}
