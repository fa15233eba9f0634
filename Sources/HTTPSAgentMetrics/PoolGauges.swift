import HTTPSAgent
import Metrics
import NIOConcurrencyHelpers

/// The pool meters: for each `host` value (or one set without the host dimension), the sum of the pool
/// counts of every origin that maps to it.
///
/// `AgentObserver.poolChanged(_:)` reports one origin at a time, so the last report of each origin is
/// kept and a group's meters are set to the sum over its origins. Without this, two origins of one
/// host (say ports 443 and 8443), or every origin when the host dimension is off, would overwrite each
/// other's values.
final class PoolGauges: Sendable {
    /// The counts of one origin, or the sum of a group's.
    struct Counts: Hashable, Sendable {
        var connecting = 0
        var active = 0
        var free = 0
        var closing = 0
        var waiting = 0

        init() {}

        init(_ stats: AgentStats.OriginStats) {
            self.connecting = stats.connecting
            self.active = stats.active
            self.free = stats.free
            self.closing = stats.closing
            self.waiting = stats.waiting
        }

        static func + (lhs: Counts, rhs: Counts) -> Counts {
            var sum = lhs
            sum.connecting += rhs.connecting
            sum.active += rhs.active
            sum.free += rhs.free
            sum.closing += rhs.closing
            sum.waiting += rhs.waiting
            return sum
        }

        static func - (lhs: Counts, rhs: Counts) -> Counts {
            var difference = lhs
            difference.connecting -= rhs.connecting
            difference.active -= rhs.active
            difference.free -= rhs.free
            difference.closing -= rhs.closing
            difference.waiting -= rhs.waiting
            return difference
        }
    }

    /// The meters of one group and the counts they show.
    private struct Group {
        var totals = Counts()
        let connecting: Meter
        let active: Meter
        let free: Meter
        let closing: Meter
        let waiting: Meter
    }

    private struct State {
        /// Each origin's last reported counts and the group it belongs to. Origins whose pool is empty
        /// are dropped, so this holds only origins with sockets or waiters.
        var origins: [String: (group: String?, counts: Counts)] = [:]
        /// Kept once created, so that a group's meters fall back to zero rather than vanish.
        var groups: [String?: Group] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let labels: MetricLabels
    private let includeHost: Bool
    private let factory: any MetricsFactory

    init(labels: MetricLabels, includeHost: Bool, factory: any MetricsFactory) {
        self.labels = labels
        self.includeHost = includeHost
        self.factory = factory
    }

    func update(_ stats: AgentStats.OriginStats) {
        let counts = Counts(stats)
        self.state.withLockedValue { state in
            let previous = state.origins[stats.origin]
            let key = previous.map(\.group) ?? (self.includeHost ? host(ofOrigin: stats.origin) : nil)
            if counts == Counts() {
                state.origins[stats.origin] = nil
            } else {
                state.origins[stats.origin] = (key, counts)
            }
            var group = state.groups[key] ?? self.makeGroup(host: key)
            group.totals = group.totals - (previous?.counts ?? Counts()) + counts
            // Set under the lock: two reports racing each other must not leave the meters showing the
            // older sum.
            group.connecting.set(group.totals.connecting)
            group.active.set(group.totals.active)
            group.free.set(group.totals.free)
            group.closing.set(group.totals.closing)
            group.waiting.set(group.totals.waiting)
            state.groups[key] = group
        }
    }

    private func makeGroup(host: String?) -> Group {
        let hostDimension = host.map { [(Dimension.host, $0)] } ?? []
        func connections(_ state: String) -> Meter {
            Meter(
                label: self.labels.poolConnections,
                dimensions: [(Dimension.state, state)] + hostDimension,
                factory: self.factory
            )
        }
        return Group(
            connecting: connections("connecting"),
            active: connections("active"),
            free: connections("free"),
            closing: connections("closing"),
            waiting: Meter(label: self.labels.poolWaiting, dimensions: hostDimension, factory: self.factory)
        )
    }
}
