import HTTPSAgent
import Metrics
import NIOConcurrencyHelpers

/// Metric objects created once per set of dimension values and kept, so that an event costs a lock and
/// a dictionary lookup rather than a new metric object and a trip through the factory.
///
/// The number of entries is bounded by the dimension values: with the `host` dimension it grows with
/// the number of hosts the Agent talks to.
final class MetricCache<Key: Hashable & Sendable, Metric: AnyObject & Sendable>: Sendable {
    private let metrics = NIOLockedValueBox<[Key: Metric]>([:])
    private let make: @Sendable (Key) -> Metric

    init(make: @escaping @Sendable (Key) -> Metric) {
        self.make = make
    }

    /// The metric for `key`, created on first use.
    func callAsFunction(_ key: Key) -> Metric {
        self.metrics.withLockedValue { metrics in
            if let metric = metrics[key] { return metric }
            let metric = self.make(key)
            metrics[key] = metric
            return metric
        }
    }
}

/// One series of the request phase timer.
struct TimerKey: Hashable, Sendable {
    var phase: TimedPhase
    var host: String?
    var reused: Bool
    var resumed: Bool
    var status: StatusClass
}

/// One series of one of the counters.
enum CounterKey: Hashable, Sendable {
    case opened(host: String?)
    case reused(host: String?)
    case closed(reason: ConnectionCloseReason, host: String?)
    case failed(code: AgentError.Code, host: String?)
    case handshake(resumed: Bool, host: String?)
    case error(code: AgentError.Code, phase: AgentError.Phase, host: String?)
    case redirect(status: Int, host: String?)
}

/// The metric labels, each starting with the observer's prefix.
struct MetricLabels: Sendable {
    let phaseDuration: String
    let connectionsOpened: String
    let connectionsReused: String
    let connectionsClosed: String
    let connectionsFailed: String
    let tlsHandshakes: String
    let errors: String
    let redirects: String
    let poolConnections: String
    let poolWaiting: String

    init(prefix: String) {
        self.phaseDuration = "\(prefix)_request_phase_duration"
        self.connectionsOpened = "\(prefix)_connections_opened_total"
        self.connectionsReused = "\(prefix)_connections_reused_total"
        self.connectionsClosed = "\(prefix)_connections_closed_total"
        self.connectionsFailed = "\(prefix)_connections_failed_total"
        self.tlsHandshakes = "\(prefix)_tls_handshakes_total"
        self.errors = "\(prefix)_errors_total"
        self.redirects = "\(prefix)_redirects_total"
        self.poolConnections = "\(prefix)_pool_connections"
        self.poolWaiting = "\(prefix)_pool_waiting_requests"
    }
}

extension MetricLabels {
    func timer(_ key: TimerKey, factory: any MetricsFactory) -> Timer {
        var dimensions = [(Dimension.phase, key.phase.rawValue)]
        if let host = key.host { dimensions.append((Dimension.host, host)) }
        dimensions.append((Dimension.reused, Dimension.flag(key.reused)))
        dimensions.append((Dimension.resumed, Dimension.flag(key.resumed)))
        dimensions.append((Dimension.statusClass, key.status.rawValue))
        return Timer(label: self.phaseDuration, dimensions: dimensions, factory: factory)
    }

    func counter(_ key: CounterKey, factory: any MetricsFactory) -> Counter {
        let label: String
        var dimensions: [(String, String)] = []
        let host: String?
        switch key {
        case .opened(let name):
            (label, host) = (self.connectionsOpened, name)
        case .reused(let name):
            (label, host) = (self.connectionsReused, name)
        case .closed(let reason, let name):
            (label, host) = (self.connectionsClosed, name)
            dimensions.append((Dimension.reason, reason.description))
        case .failed(let code, let name):
            (label, host) = (self.connectionsFailed, name)
            dimensions.append((Dimension.code, code.description))
        case .handshake(let resumed, let name):
            (label, host) = (self.tlsHandshakes, name)
            dimensions.append((Dimension.resumed, Dimension.flag(resumed)))
        case .error(let code, let phase, let name):
            (label, host) = (self.errors, name)
            dimensions.append((Dimension.code, code.description))
            dimensions.append((Dimension.phase, phase.rawValue))
        case .redirect(let status, let name):
            (label, host) = (self.redirects, name)
            dimensions.append((Dimension.status, String(status)))
        }
        if let host { dimensions.append((Dimension.host, host)) }
        return Counter(label: label, dimensions: dimensions, factory: factory)
    }
}
