public import NIOCore

/// Where the time of one request went: a timeline of milestones on one monotonic clock, the phases
/// between them, and facts about the connection that carried it.
///
/// Every response carries one (``AgentResponse/timing``), and so does every ``AgentError``
/// (``AgentError/timing``): a failed request reports the milestones it reached.
///
/// Milestones are offsets from ``startedAt``, the moment ``Agent/execute(_:body:observer:)`` was called, and map
/// one to one onto curl's `-w` variables:
///
/// | milestone | curl | reached when |
/// | --- | --- | --- |
/// | ``queueEnd`` | `time_queue` | a connection was in hand, or the dial of the new one began |
/// | ``dnsEnd`` | `time_namelookup` | the host name resolved (new connections only) |
/// | ``connectEnd`` | `time_connect` | TCP connected (new connections only) |
/// | ``tlsEnd`` | `time_appconnect` | the TLS handshake completed (new `https` connections only) |
/// | ``requestStart`` | `time_pretransfer` | the request head was about to be written |
/// | ``requestEnd`` | `time_posttransfer` | the last byte of the request was written |
/// | ``firstByte`` | `time_starttransfer` | the first byte of the response arrived |
/// | ``end`` | `time_total` | the last byte of the body arrived, or the request failed |
///
/// Milestones a request did not need are `nil`: a reused connection has no DNS, connect or TLS
/// milestone, a plain `http` connection no TLS one. As in curl, their cumulative values print as zero.
///
/// The phases (``queueWait``, ``dns``, ``connect``, ``tlsHandshake``, ``requestWrite``,
/// ``timeToFirstByte``, ``transfer``) are the gaps between consecutive milestones, so they add up to
/// ``total`` exactly. A phase that was under way when the request failed lasts until the failure.
///
/// A response's record is complete once its body has been read to the end (``isComplete``); until then
/// ``end`` is `nil` and ``total`` counts to the last milestone reached.
///
/// After redirects (see <doc:Redirects>) the record of the response or error covers the whole chain:
/// ``startedAt`` is the start of the first request, ``redirectTime`` is how long the earlier hops took
/// before the final one started, and the milestones are those of the final hop, placed on the chain's
/// timeline (each is at least ``redirectTime``). ``redirectTime`` and the seven phases then add up to
/// ``total``. ``hops`` holds each earlier hop's own record.
public struct RequestTiming: Sendable, Hashable {
    /// When the request started, on NIO's monotonic clock.
    public var startedAt: NIODeadline

    /// When the request stopped waiting for the pool (curl's `time_queue`).
    public var queueEnd: Duration?
    /// When the host name had resolved (curl's `time_namelookup`); `nil` on a reused connection.
    public var dnsEnd: Duration?
    /// When the TCP connection was established (curl's `time_connect`); `nil` on a reused connection.
    public var connectEnd: Duration?
    /// When the TLS handshake completed (curl's `time_appconnect`); `nil` on a reused or `http`
    /// connection.
    public var tlsEnd: Duration?
    /// When the request head was about to be written (curl's `time_pretransfer`).
    public var requestStart: Duration?
    /// When the last byte of the request (head and body) had been written (curl's `time_posttransfer`).
    ///
    /// A server may answer before an upload ends, so this can come after ``firstByte``.
    public var requestEnd: Duration?
    /// When the first byte of the response arrived (curl's `time_starttransfer`).
    public var firstByte: Duration?
    /// When the whole response head had arrived.
    public var responseHead: Duration?
    /// When the last byte of the body arrived, or the request failed (curl's `time_total`).
    public var end: Duration?

    /// Whether the request used a connection that was open before it, paying for no DNS lookup, TCP
    /// connect or TLS handshake.
    public var reusedConnection: Bool
    /// How long a reused connection had been idle in the pool before this request took it.
    public var idleTimeBeforeReuse: Duration?
    /// Whether the connection's TLS handshake resumed an earlier session. Also `true` on a reused
    /// connection whose handshake, earlier, was resumed.
    public var resumedSession: Bool
    /// How many connections the request was tried on: more than 1 when a reused connection turned out
    /// to be closed by the server and the request was sent again.
    public var attempts: Int
    /// The ``ConnectionInfo/id`` of the connection that carried the request.
    public var connectionID: Int?
    /// The server's address, e.g. "127.0.0.1".
    public var remoteAddress: String?
    /// The server's port.
    public var remotePort: Int?
    /// The local address of the connection.
    public var localAddress: String?
    /// The local port of the connection.
    public var localPort: Int?
    /// The TLS version, e.g. "TLSv1.3"; `nil` for `http`.
    public var tlsVersion: String?
    /// The TLS cipher suite, e.g. "TLS_AES_256_GCM_SHA384".
    public var tlsCipher: String?
    /// The ALPN protocol the server selected, if any.
    public var alpn: String?
    /// The response's status code, once its head arrived (curl's `http_code`).
    public var statusCode: Int?
    /// Whether the connection needs a TLS handshake (`https`), so that a missing ``tlsEnd`` on a new
    /// connection means "not reached" rather than "not needed".
    var expectsTLS = true

    /// Bytes written to the socket for this request, TLS record overhead included.
    public var wireBytesSent: Int
    /// Bytes read from the socket for this response, TLS record overhead included.
    public var wireBytesReceived: Int
    /// Bytes of request body sent, as the caller gave them.
    public var bodyBytesSent: Int
    /// Bytes of response body received, after removing the chunked framing and before any decoding:
    /// for a compressed body, its compressed size.
    public var bodyBytesReceived: Int
    /// For a body the Agent decodes (see ``Decompression``): the decoded bytes delivered so far to
    /// the body's reader; `nil` for a body delivered as received. Decoding happens as the body is read,
    /// so this is final once the reader has reached the body's end, which can be after ``end``.
    public var decodedBodyBytes: Int?

    /// How long the redirects before this request took: from ``startedAt`` to the start of the final hop
    /// (curl's `time_redirect`). Zero without redirects.
    ///
    /// It is the first phase of the record: ``redirectTime`` and the seven phases from ``queueWait`` to
    /// ``transfer`` add up to ``total``.
    public var redirectTime: Duration
    /// The records of the hops that answered with a redirect the Agent followed, in order, each on its own
    /// timeline (its ``startedAt`` is when that hop started). Empty without redirects. The milestones,
    /// connection facts and byte counts of this record are those of the final hop.
    public var hops: [RequestTiming]
    /// How many redirects were followed before the final hop (curl's `num_redirects`): the number of
    /// ``hops``.
    public var redirectCount: Int { self.hops.count }

    /// Creates a record, e.g. to stand in for the Agent in a test. Every milestone starts `nil`.
    public init(startedAt: NIODeadline) {
        self.startedAt = startedAt
        self.reusedConnection = false
        self.resumedSession = false
        self.attempts = 1
        self.wireBytesSent = 0
        self.wireBytesReceived = 0
        self.bodyBytesSent = 0
        self.bodyBytesReceived = 0
        self.redirectTime = .zero
        self.hops = []
    }

    /// Whether the request ended: its body was received in full, or it failed.
    public var isComplete: Bool { self.end != nil }

    // MARK: - Phases

    /// Time spent waiting for a connection: for a free one, for a slot under the pool's limits, or for
    /// the request ahead in line. Zero when the request started its own dial at once. After redirects,
    /// the final hop's wait: it starts at ``redirectTime``.
    public var queueWait: Duration { self.phase(0) }
    /// Time spent resolving the host name; zero on a reused connection.
    public var dns: Duration { self.phase(1) }
    /// Time spent on TCP connects, including attempts on addresses that failed; zero on a reused
    /// connection.
    public var connect: Duration { self.phase(2) }
    /// Time spent on the TLS handshake; zero on a reused or `http` connection.
    public var tlsHandshake: Duration { self.phase(3) }
    /// Time from the connection being ready to the request being written (or, if the server answered
    /// first, to the first response byte).
    public var requestWrite: Duration { self.phase(4) }
    /// Time from the request being written to the first byte of the response: the server's think time
    /// plus one round trip.
    public var timeToFirstByte: Duration { self.phase(5) }
    /// Time from the first response byte to the last byte of the body (or the failure).
    public var transfer: Duration { self.phase(6) }
    /// Time from the start to ``end``, or to the last milestone reached while the body still streams.
    public var total: Duration { self.boundaries[7] }

    /// The eight boundaries of the seven phases, from the start of the final hop (``redirectTime``, zero
    /// without redirects) to the end.
    ///
    /// A milestone the request did not need (DNS, connect and TLS on a reused connection, TLS for
    /// `http`) equals the one before it, so its phase lasts zero. The first milestone the request did not
    /// reach equals ``end`` when the request failed (the phase it failed in lasted until the failure), and
    /// so do the ones after it.
    private var boundaries: InlineArray<8, Duration> {
        var written = self.requestEnd
        if let first = self.firstByte, written.map({ first < $0 }) ?? true {
            written = first
        }
        let reused = self.reusedConnection
        let milestones: InlineArray<6, Duration?> = [
            self.queueEnd,
            reused ? self.queueEnd : self.dnsEnd,
            reused ? self.queueEnd : self.connectEnd,
            reused ? self.queueEnd : (self.expectsTLS ? self.tlsEnd : self.connectEnd),
            written,
            self.firstByte,
        ]
        var result = InlineArray<8, Duration>(repeating: self.redirectTime)
        var stopped = false
        for index in milestones.indices {
            let previous = result[index]
            if !stopped, let milestone = milestones[index] {
                result[index + 1] = Swift.max(previous, milestone)
            } else {
                stopped = true
                result[index + 1] = Swift.max(previous, self.end ?? previous)
            }
        }
        result[7] = Swift.max(result[6], self.end ?? result[6])
        return result
    }

    private func phase(_ index: Int) -> Duration {
        let boundaries = self.boundaries
        return boundaries[index + 1] - boundaries[index]
    }
}

extension RequestTiming {
    /// The names ``curlVariable(_:)`` knows, in curl's order.
    public static let curlVariableNames = [
        "time_queue", "time_namelookup", "time_connect", "time_appconnect", "time_pretransfer",
        "time_posttransfer", "time_starttransfer", "time_total", "time_redirect",
    ]

    /// The value of one of curl's `-w` timing variables, in seconds.
    ///
    /// Milestones the request did not reach or did not need are zero, as in curl: on a reused
    /// connection `time_namelookup`, `time_connect` and `time_appconnect` are 0.
    ///
    /// After redirects the values mean what they mean in curl with `-L`: `time_total` is the whole
    /// chain (``total``), `time_redirect` is ``redirectTime``, and each milestone variable, from
    /// `time_queue` to `time_starttransfer`, adds up every hop's milestone measured from that hop's own
    /// start ("the time from each request is added together", in curl's words). Those sums are not
    /// points on the chain's timeline: read ``hops`` and the milestones for that.
    ///
    /// - Parameter name: one of ``curlVariableNames``, e.g. `"time_starttransfer"`.
    /// - Returns: seconds, or `nil` for a name that is not a timing variable.
    public func curlVariable(_ name: String) -> Double? {
        switch name {
        case "time_total": return self.total.seconds
        case "time_redirect": return self.redirectTime.seconds
        default: break
        }
        guard let final = self.milestone(named: name) else { return nil }
        // The final hop's milestone from its own start, plus each earlier hop's from its start.
        var sum = final.map { $0 - self.redirectTime } ?? .zero
        for hop in self.hops {
            sum += hop.milestone(named: name).flatMap { $0 } ?? .zero
        }
        return sum.seconds
    }

    /// The milestone behind a curl variable: `nil` for an unknown name, `.some(nil)` when not reached.
    private func milestone(named name: String) -> Duration?? {
        switch name {
        case "time_queue": self.queueEnd
        case "time_namelookup": self.dnsEnd
        case "time_connect": self.connectEnd
        case "time_appconnect": self.tlsEnd
        case "time_pretransfer": self.requestStart
        case "time_posttransfer": self.requestEnd
        case "time_starttransfer": self.firstByte
        default: nil
        }
    }

    /// This hop's record placed after earlier hops: started at `chainStart`, its milestones moved by the
    /// time from `chainStart` to its own start, which becomes ``redirectTime``.
    func placed(after hops: [RequestTiming], chainStart: NIODeadline) -> RequestTiming {
        guard !hops.isEmpty else { return self }
        let (own, chain) = (self.startedAt.uptimeNanoseconds, chainStart.uptimeNanoseconds)
        let shift: Duration = own > chain ? .nanoseconds(Int64(truncatingIfNeeded: own - chain)) : .zero
        var placed = self
        placed.startedAt = chainStart
        placed.redirectTime = shift
        placed.hops = hops
        for path in [
            \RequestTiming.queueEnd, \.dnsEnd, \.connectEnd, \.tlsEnd, \.requestStart, \.requestEnd, \.firstByte,
            \.responseHead, \.end,
        ] {
            placed[keyPath: path] = placed[keyPath: path].map { $0 + shift }
        }
        return placed
    }
}

extension Duration {
    /// Whole and fractional seconds.
    var seconds: Double {
        let (seconds, attoseconds) = self.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
