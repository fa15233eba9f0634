import HTTPTypes

/// Decides, response by response, whether a request's redirect chain goes on, and builds the next
/// request when it does. It does no I/O: ``Agent/execute(_:body:observer:redirects:)`` sends what it
/// says and discards the bodies.
///
/// The rules are ``RedirectPolicy``'s: which statuses, the method and body of the next request,
/// credentials only to the first origin, no `https` to `http` unless allowed, a limit and loop
/// detection.
struct RedirectFollower {
    /// What to do with a response.
    enum Decision {
        /// Return it to the caller: not a redirect the Agent follows.
        case deliver
        /// Discard its body and send ``RedirectFollower/request`` (already updated) next.
        case follow
        /// Discard its body and fail the chain with this error.
        case refuse(AgentError)
    }

    let policy: RedirectPolicy
    /// The request of the current hop.
    private(set) var request: HTTPRequest
    /// Its body; `nil` once a redirect changed the method to `GET`.
    private(set) var body: RequestBody?
    /// Redirects followed so far.
    private(set) var followed = 0
    /// The caller's header fields, which every hop starts from.
    private let fields: HTTPFields
    /// Whether a redirect turned the request into a `GET` (or `HEAD`) without a body; it stays one.
    private var bodyDropped = false
    /// What a chain keeps track of, worked out at the first redirect: most requests never get one.
    private var chain: Chain?

    private struct Chain {
        /// The current hop's URL.
        var url: RequestURL
        /// The first request's origin: the only one that gets its credentials.
        var firstOrigin: OriginKey?
        /// "METHOD scheme://host:port/path?query" of every request made in the chain.
        var seen: Set<String> = []

        init(first request: HTTPRequest) {
            self.url = RequestURL(request)
            let target = try? RequestTarget(request)
            self.firstOrigin = target.map(OriginKey.init)
            if let target {
                self.seen.insert(RedirectFollower.key(request.method, self.url, target))
            }
        }
    }

    /// The current hop's URL.
    var url: RequestURL {
        self.chain?.url ?? RequestURL(self.request)
    }

    /// Statuses whose `Location` is followed.
    static let followedStatuses: Set<Int> = [301, 302, 303, 307, 308]
    /// Fields that describe a request body, dropped with it.
    static let bodyFields: [HTTPField.Name] = [
        .contentType, .contentLength, .contentEncoding, .contentLanguage, .contentLocation, .transferEncoding,
        .expect,
    ]
    /// Fields that carry credentials, sent to the first origin only.
    static let credentialFields: [HTTPField.Name] = [.authorization, .proxyAuthorization, .cookie]

    init(request: HTTPRequest, body: RequestBody?, policy: RedirectPolicy) {
        self.policy = policy
        self.request = request
        self.body = body
        self.fields = request.headerFields
    }

    /// Decides what to do with `response`, the answer to ``request``, and on ``Decision/follow`` moves to
    /// the next request.
    mutating func decide(_ response: HTTPResponse) -> Decision {
        guard self.policy.isEnabled, Self.followedStatuses.contains(response.status.code),
            let location = response.headerFields[.location],
            location.contains(where: { $0 != " " && $0 != "\t" })
        else { return .deliver }

        var chain = self.chain ?? Chain(first: self.request)
        let code = response.status.code
        let method = self.request.method
        var nextMethod = method
        var dropsBody = false
        if code == 303 {
            nextMethod = method == .head ? .head : .get
            dropsBody = true
        } else if (code == 301 || code == 302) && method == .post {
            nextMethod = .get
            dropsBody = true
        }
        if !dropsBody, case .stream = self.body?.storage {
            // A streamed body has been consumed; the caller gets the redirect and decides.
            return .deliver
        }

        let next: RequestURL
        let target: RequestTarget
        do throws(RequestURL.ResolutionError) {
            next = try chain.url.resolving(location)
            target = try Self.target(next)
        } catch {
            return .refuse(
                self.error(.invalidRedirect, "the redirect's Location \"\(location)\" is unusable: \(error.message)")
            )
        }
        if chain.url.scheme == "https" && next.scheme == "http" && !self.policy.allowsHTTPSToHTTP {
            return .refuse(
                self.error(
                    .insecureRedirect,
                    "refused to follow a \(code) redirect from https to \(next) (allowsHTTPSToHTTP is off)"
                )
            )
        }
        let key = Self.key(nextMethod, next, target)
        if chain.seen.contains(key) {
            return .refuse(
                self.error(
                    .redirectLoop,
                    "redirect loop: \(code) to \(nextMethod.rawValue) \(next), which this chain already requested "
                        + "(after \(self.followed) redirect\(self.followed == 1 ? "" : "s"))"
                )
            )
        }
        if self.followed >= self.policy.maxRedirects {
            return .refuse(
                self.error(
                    .tooManyRedirects,
                    "stopped after \(self.followed) redirect\(self.followed == 1 ? "" : "s"), the limit; "
                        + "the next was a \(code) to \(next)"
                )
            )
        }

        self.bodyDropped = self.bodyDropped || dropsBody
        var fields = self.fields
        if self.bodyDropped {
            for name in Self.bodyFields { fields[name] = nil }
        }
        if OriginKey(target) != chain.firstOrigin {
            for name in Self.credentialFields { fields[name] = nil }
        }
        self.request = HTTPRequest(
            method: nextMethod,
            scheme: next.scheme,
            authority: next.authority,
            path: next.pathAndQuery,
            headerFields: fields
        )
        if self.bodyDropped { self.body = nil }
        chain.url = next
        chain.seen.insert(key)
        self.chain = chain
        self.followed += 1
        return .follow
    }

    // MARK: - Helpers

    /// Scheme, normalised host and port: what makes two URLs the same origin for credentials.
    private struct OriginKey: Hashable {
        var scheme: Origin.Scheme
        var host: String
        var port: Int

        init(_ target: RequestTarget) {
            self.scheme = target.scheme
            self.host = target.host
            self.port = target.port
        }
    }

    /// Where `url` goes, checked as a request's target is (host characters, port, no credentials).
    private static func target(_ url: RequestURL) throws(RequestURL.ResolutionError) -> RequestTarget {
        guard let scheme = Origin.Scheme(rawValue: url.scheme) else {
            throw RequestURL.ResolutionError(message: "unsupported scheme \"\(url.scheme)\"")
        }
        do {
            return try RequestTarget(scheme: scheme, authority: url.authority)
        } catch {
            throw RequestURL.ResolutionError(message: error.message)
        }
    }

    fileprivate static func key(_ method: HTTPRequest.Method, _ url: RequestURL, _ target: RequestTarget) -> String {
        "\(method.rawValue) \(target.scheme.rawValue)://\(target.host):\(target.port)\(url.pathAndQuery)"
    }

    /// An error of the chain at the current hop, whose request the server received.
    private func error(_ code: AgentError.Code, _ message: String) -> AgentError {
        let target = try? RequestTarget(self.request)
        return AgentError(
            code: code,
            phase: .redirect,
            host: target?.host,
            port: target?.port,
            message: message,
            requestMayHaveBeenSent: true
        )
    }
}
