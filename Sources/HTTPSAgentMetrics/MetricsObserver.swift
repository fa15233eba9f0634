public import HTTPSAgent
public import HTTPTypes
public import Metrics
import NIOConcurrencyHelpers

/// Reports an Agent's requests, connections and pools to swift-metrics.
///
/// Install it on the Agent, so that it also receives the pool changes:
///
/// ```swift
/// let agent = Agent(configuration: .init(), observers: [MetricsObserver()])
/// ```
///
/// Every label starts with `prefix` (default `https_agent`). Dimensions have few values: the path never
/// appears, and the `host` dimension (the host a request names, e.g. "api.example.com") can be turned
/// off with `includeHost: false` for a client that talks to many hosts.
///
/// | label | type | dimensions | recorded |
/// | --- | --- | --- | --- |
/// | `<prefix>_request_phase_duration` | timer (ns) | phase, host, reused, resumed, status_class | per phase of a request |
/// | `<prefix>_connections_opened_total` | counter | host | a connection was established |
/// | `<prefix>_connections_reused_total` | counter | host | a request took a pooled connection |
/// | `<prefix>_connections_closed_total` | counter | reason, host | a connection closed |
/// | `<prefix>_connections_failed_total` | counter | code, host | opening a connection failed |
/// | `<prefix>_tls_handshakes_total` | counter | resumed, host | a TLS handshake completed |
/// | `<prefix>_errors_total` | counter | code, phase, host | a request failed |
/// | `<prefix>_redirects_total` | counter | status, host | a redirect was followed (each hop is also a request) |
/// | `<prefix>_pool_connections` | meter | state, host | sockets per state |
/// | `<prefix>_pool_waiting_requests` | meter | host | requests waiting for a connection |
///
/// The request timer records, for a request that completed, the phases of `RequestTiming`: `queue`,
/// `dns`, `connect`, `tls`, `request_write`, `ttfb`, `transfer`, and `total`. `dns`, `connect` and `tls`
/// are recorded only on a new connection (on a reused one they are zero by definition and would drag
/// the distribution down), and `tls` only for `https`. `status_class` is "2xx" and so on. A request that
/// failed records only `total`, with `status_class` "error", because the phase it failed in lasts until
/// the failure and would skew that phase's distribution; its code and phase go to `<prefix>_errors_total`.
///
/// A connection counts as opened once it is established (TCP, and TLS for `https`), whether or not a
/// request ends up using it; each request that takes a pooled connection counts as a reuse. The pool
/// meters sum the origins that share a
/// `host` value, or all origins without the host dimension; they need the observer on the Agent, because
/// only the Agent's observers receive `AgentObserver.poolChanged(_:)`.
///
/// Metric objects are created once per set of dimension values and cached; an event costs a lock and a
/// dictionary lookup plus what the metrics backend does.
public struct MetricsObserver: AgentObserver {
    private let store: MetricsStore

    /// Creates an observer that reports to `factory`.
    ///
    /// - Parameters:
    ///   - prefix: the start of every metric label, followed by `_`. Default: "https_agent".
    ///   - includeHost: whether metrics carry a `host` dimension. Default: `true`.
    ///   - factory: where metrics go; `nil` (the default) takes `MetricsSystem.factory` once, now: the
    ///     globally bootstrapped factory, or the one bound with `withMetricsFactory` around this call.
    public init(prefix: String = "https_agent", includeHost: Bool = true, factory: (any MetricsFactory)? = nil) {
        self.store = MetricsStore(
            labels: MetricLabels(prefix: prefix),
            includeHost: includeHost,
            factory: factory ?? MetricsSystem.factory
        )
    }

    // MARK: - Requests

    /// Counts a reuse when the connection came from the pool.
    public func connectionAcquired(_ request: ObservedRequest, connection: ConnectionInfo, idleTime: Duration?) {
        if connection.isReused {
            self.store.counters(.reused(host: self.store.host(request.host))).increment()
        }
    }

    /// Records the request's phases.
    public func requestFinished(_ request: ObservedRequest, timing: RequestTiming) {
        let status = timing.statusCode.map { HTTPResponse.Status(code: $0) }
        var key = TimerKey(
            phase: .total,
            host: self.store.host(request.host),
            reused: timing.reusedConnection,
            resumed: timing.resumedSession,
            status: status.map(StatusClass.init) ?? .other
        )
        func record(_ phase: TimedPhase, _ duration: Duration) {
            key.phase = phase
            self.store.timers(key).record(duration: duration)
        }
        record(.queue, timing.queueWait)
        if !timing.reusedConnection {
            record(.dns, timing.dns)
            record(.connect, timing.connect)
            if request.scheme == "https" {
                record(.tls, timing.tlsHandshake)
            }
        }
        record(.requestWrite, timing.requestWrite)
        record(.ttfb, timing.timeToFirstByte)
        record(.transfer, timing.transfer)
        record(.total, timing.total)
    }

    /// Counts the error and records the request's total time with `status_class` "error".
    public func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {
        let host = self.store.host(request.host)
        self.store.counters(.error(code: error.code, phase: error.phase, host: host)).increment()
        let key = TimerKey(
            phase: .total,
            host: host,
            reused: timing.reusedConnection,
            resumed: timing.resumedSession,
            status: .error
        )
        self.store.timers(key).record(duration: timing.total)
    }

    /// Counts a followed redirect by its status code, under the host that sent it.
    public func requestRedirected(_ request: ObservedRequest, response: HTTPResponse, next: HTTPRequest) {
        self.store.counters(.redirect(status: response.status.code, host: self.store.host(request.host))).increment()
    }

    // MARK: - Connections

    /// Counts the connection as opened.
    public func connectionEstablished(_ connection: ObservedConnection, info: ConnectionInfo) {
        self.store.counters(.opened(host: self.store.host(connection.host))).increment()
    }

    /// Counts the handshake, full or resumed.
    public func tlsFinished(_ connection: ObservedConnection, tls: TLSInfo) {
        let host = self.store.host(connection.host)
        self.store.counters(.handshake(resumed: tls.sessionResumed, host: host)).increment()
    }

    /// Counts the failure by its code.
    public func connectionFailed(_ connection: ObservedConnection, error: AgentError) {
        self.store.counters(.failed(code: error.code, host: self.store.host(connection.host))).increment()
    }

    /// Counts the close by its reason.
    public func connectionClosed(_ connection: ObservedConnection, reason: ConnectionCloseReason) {
        self.store.counters(.closed(reason: reason, host: self.store.host(connection.host))).increment()
    }

    // MARK: - Pools

    /// Sets the pool meters of the origin's group.
    public func poolChanged(_ pool: AgentStats.OriginStats) {
        self.store.pools.update(pool)
    }
}

/// The state an observer and its copies share: cached metric objects and pool counts.
final class MetricsStore: Sendable {
    let includeHost: Bool
    let timers: MetricCache<TimerKey, Timer>
    let counters: MetricCache<CounterKey, Counter>
    let pools: PoolGauges

    init(labels: MetricLabels, includeHost: Bool, factory: any MetricsFactory) {
        self.includeHost = includeHost
        self.timers = MetricCache { labels.timer($0, factory: factory) }
        self.counters = MetricCache { labels.counter($0, factory: factory) }
        self.pools = PoolGauges(labels: labels, includeHost: includeHost, factory: factory)
    }

    /// The value of the `host` dimension, or `nil` without one.
    @inline(__always)
    func host(_ host: String) -> String? {
        self.includeHost ? host : nil
    }
}
