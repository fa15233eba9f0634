import ArgumentParser
import HTTPSAgent

/// The pool's knobs, timeouts, and how many requests to send and how many at once.
struct ConnectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Send the list of URLs N times over, in order (default 1).", valueName: "N"))
    var `repeat` = 1

    @Option(
        help: ArgumentHelp(
            "Run up to N transfers at once (default 1: one after the other).",
            discussion: """
                With N > 1 each body is written whole when its transfer ends, in the order they end, so \
                bodies never interleave.
                """,
            valueName: "N"
        )
    )
    var parallel = 1

    @Option(
        name: .customLong("max-sockets"),
        help: ArgumentHelp("The most connections open to one host at once (default 10).", valueName: "N")
    )
    var maxSockets: Int?

    @Option(
        name: .customLong("max-free-sockets"),
        help: ArgumentHelp("The most idle connections kept per host (default 10).", valueName: "N")
    )
    var maxFreeSockets: Int?

    @Flag(name: .customLong("no-keepalive"), help: "Close every connection after its response.")
    var noKeepAlive = false

    @Option(
        name: .customLong("connect-timeout"),
        help: ArgumentHelp(
            "The most time, in seconds, for the TCP connect and again for the TLS handshake (default 10).",
            valueName: "SECONDS"
        )
    )
    var connectTimeout: Double?

    @Option(
        name: [.customShort("m"), .customLong("max-time")],
        help: ArgumentHelp(
            "The most time, in seconds, one transfer may take, from its start to its last body byte.",
            valueName: "SECONDS"
        )
    )
    var maxTime: Double?

    func validate() throws {
        if self.repeat < 1 { throw ValidationError("--repeat must be at least 1") }
        if self.parallel < 1 { throw ValidationError("--parallel must be at least 1") }
        if let maxSockets, maxSockets < 1 { throw ValidationError("--max-sockets must be at least 1") }
        if let maxFreeSockets, maxFreeSockets < 0 { throw ValidationError("--max-free-sockets must be 0 or more") }
        for (name, value) in [("--connect-timeout", self.connectTimeout), ("--max-time", self.maxTime)] {
            if let value, !(value > 0 && value < 1_000_000) {
                throw ValidationError("\(name) must be a number of seconds above 0")
            }
        }
    }

    /// Sets the pool limits and timeouts given on the command line.
    func apply(to configuration: inout Agent.Configuration) {
        if let maxSockets { configuration.maxSocketsPerHost = maxSockets }
        if let maxFreeSockets { configuration.maxFreeSocketsPerHost = maxFreeSockets }
        if self.noKeepAlive { configuration.keepAlive = false }
        if let connectTimeout {
            // curl's --connect-timeout covers TCP and TLS; the Agent bounds each step on its own.
            configuration.connectTimeout = Self.duration(connectTimeout)
            configuration.tlsHandshakeTimeout = Self.duration(connectTimeout)
        }
    }

    /// -m as a Duration.
    var maxTimeDuration: Duration? { self.maxTime.map(Self.duration) }

    private static func duration(_ seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }
}
