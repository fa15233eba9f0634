import HTTPTypes

/// The names of the dimensions ``MetricsObserver`` attaches, in one place so that the labels stay
/// consistent and the documentation can list them.
enum Dimension {
    /// The host a request or connection is for, e.g. "api.example.com"; only with `includeHost`.
    static let host = "host"
    /// A request phase; see ``TimedPhase``.
    static let phase = "phase"
    /// "true" when the request ran on a connection that was open before it.
    static let reused = "reused"
    /// "true" when the connection's TLS handshake resumed a session.
    static let resumed = "resumed"
    /// The status class of the response; see ``StatusClass``.
    static let statusClass = "status_class"
    /// A redirect's status code, e.g. "301".
    static let status = "status"
    /// An `AgentError.Code`, by name, e.g. "connectFailed".
    static let code = "code"
    /// A `ConnectionCloseReason`, by name, e.g. "idleTimeout".
    static let reason = "reason"
    /// A pool connection state: "connecting", "active", "free" or "closing".
    static let state = "state"

    static func flag(_ value: Bool) -> String { value ? "true" : "false" }
}

/// The phases the request timer records, one value of the `phase` dimension each.
enum TimedPhase: String, Sendable, Hashable, CaseIterable {
    case queue
    case dns
    case connect
    case tls
    case requestWrite = "request_write"
    case ttfb
    case transfer
    case total
}

/// The `status_class` dimension: the first digit of the status, or the outcome when there is none.
enum StatusClass: String, Sendable, Hashable {
    case informational = "1xx"
    case successful = "2xx"
    case redirection = "3xx"
    case clientError = "4xx"
    case serverError = "5xx"
    /// A status outside 100–599.
    case other
    /// The request failed: no complete response.
    case error

    init(_ status: HTTPResponse.Status) {
        switch status.kind {
        case .informational: self = .informational
        case .successful: self = .successful
        case .redirection: self = .redirection
        case .clientError: self = .clientError
        case .serverError: self = .serverError
        case .invalid: self = .other
        }
    }
}

/// The host part of an origin as `AgentStats.OriginStats.origin` spells it, e.g.
/// "https://[::1]:8443" → "::1", so that pool gauges share the `host` values of the request metrics.
///
/// The core formats origins as `scheme://host:port`, with brackets around an IPv6 host and the host
/// lower-cased, the same host string `ObservedRequest.host` carries.
func host(ofOrigin origin: String) -> String {
    var rest = Substring(origin)
    if let separator = rest.firstRange(of: "://") {
        rest = rest[separator.upperBound...]
    }
    if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("]") {
        rest = rest[..<colon]
    }
    if rest.hasPrefix("["), rest.hasSuffix("]") {
        rest = rest.dropFirst().dropLast()
    }
    return String(rest)
}
