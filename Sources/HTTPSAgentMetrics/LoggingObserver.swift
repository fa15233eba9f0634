public import HTTPSAgent
public import HTTPTypes
public import Logging

/// Writes an Agent's request and connection events to a swift-log `Logger`.
///
/// ```swift
/// var logger = Logger(label: "my-service.http")
/// logger.logLevel = .debug
/// let agent = Agent(configuration: .init(), observers: [LoggingObserver(logger: logger)])
/// ```
///
/// At `debug`: a request started, got a connection (opened for it, or reused), finished or failed; a
/// connection failed to open or closed. At `trace`: each step in between (DNS, TCP connect attempts, TLS, the request head and
/// body written, the first response byte, the response head and body, pool changes). Above `debug`
/// nothing is logged, and a disabled level costs one level check per event.
///
/// Metadata keys share the prefix `https_agent.`: every request event carries `https_agent.request_id`
/// (`ObservedRequest.id`), every connection event `https_agent.connection_id`
/// (`ObservedConnection.id`), and "connection opened" and "connection reused" both, which ties a
/// request to its connection.
/// Other keys: `method`, `host`, `port`, `path` (without the query, which may hold secrets), `reused`,
/// `idle_time`, `status`, `bytes`, `duration` (seconds), `error_code`, `error_phase`, `address`,
/// `addresses`, `failure`, `offering_session`, `tls_version`, `tls_cipher`, `tls_resumed`, `reason`,
/// `origin`, `connecting`, `active`, `free`, `closing`, `waiting`. Failures also pass the
/// `AgentError` as the log event's error.
public struct LoggingObserver: AgentObserver {
    /// The logger events go to; its level decides which are written.
    public var logger: Logger

    /// Creates an observer that writes to `logger`.
    ///
    /// - Parameter logger: the logger to write to. Set its level to `debug` or `trace` to see events.
    public init(logger: Logger) {
        self.logger = logger
    }

    // MARK: - Requests

    /// Logs "request started" at debug.
    public func requestQueued(_ request: ObservedRequest) {
        self.logger.debug(
            "request started",
            metadata: [
                MetadataKey.requestID: "\(request.id)",
                MetadataKey.method: "\(request.method.rawValue)",
                MetadataKey.host: "\(request.host)",
                MetadataKey.port: "\(request.port)",
                MetadataKey.path: "\(Self.pathWithoutQuery(request.path))",
            ]
        )
    }

    /// Logs "connection opened" (a new connection) or "connection reused" (a pooled one) at debug, with
    /// both ids.
    ///
    /// A new connection is logged with its server address and TLS facts; a reused one with how long it
    /// sat free.
    public func connectionAcquired(_ request: ObservedRequest, connection: ConnectionInfo, idleTime: Duration?) {
        self.logger.debug(
            connection.isReused ? "connection reused" : "connection opened",
            metadata: {
                var metadata: Logger.Metadata = [
                    MetadataKey.requestID: "\(request.id)",
                    MetadataKey.connectionID: "\(connection.id)",
                    MetadataKey.reused: "\(connection.isReused)",
                ]
                if let idleTime { metadata[MetadataKey.idleTime] = "\(Self.seconds(idleTime))" }
                if !connection.isReused {
                    if let address = connection.remoteAddress { metadata[MetadataKey.address] = "\(address)" }
                    if let tls = connection.tls {
                        metadata[MetadataKey.tlsVersion] = "\(tls.version)"
                        metadata[MetadataKey.tlsResumed] = "\(tls.sessionResumed)"
                    }
                }
                return metadata
            }()
        )
    }

    /// Logs "request head written" at trace.
    public func requestHeadWritten(_ request: ObservedRequest) {
        self.logger.trace("request head written", metadata: [MetadataKey.requestID: "\(request.id)"])
    }

    /// Logs "request body written" at trace.
    public func requestBodyWritten(_ request: ObservedRequest, bytes: Int) {
        self.logger.trace(
            "request body written",
            metadata: [MetadataKey.requestID: "\(request.id)", MetadataKey.bytes: "\(bytes)"]
        )
    }

    /// Logs "first response byte" at trace.
    public func firstResponseByte(_ request: ObservedRequest) {
        self.logger.trace("first response byte", metadata: [MetadataKey.requestID: "\(request.id)"])
    }

    /// Logs "response head received" at trace.
    public func responseHeadReceived(_ request: ObservedRequest, status: HTTPResponse.Status) {
        self.logger.trace(
            "response head received",
            metadata: [MetadataKey.requestID: "\(request.id)", MetadataKey.status: "\(status.code)"]
        )
    }

    /// Logs "response body finished" at trace.
    public func responseBodyFinished(_ request: ObservedRequest, bytes: Int) {
        self.logger.trace(
            "response body finished",
            metadata: [MetadataKey.requestID: "\(request.id)", MetadataKey.bytes: "\(bytes)"]
        )
    }

    /// Logs "request finished" at debug, with the total time and the connection.
    public func requestFinished(_ request: ObservedRequest, timing: RequestTiming) {
        self.logger.debug(
            "request finished",
            metadata: {
                var metadata: Logger.Metadata = [
                    MetadataKey.requestID: "\(request.id)",
                    MetadataKey.duration: "\(Self.seconds(timing.total))",
                    MetadataKey.reused: "\(timing.reusedConnection)",
                    MetadataKey.bytes: "\(timing.bodyBytesReceived)",
                ]
                if let id = timing.connectionID { metadata[MetadataKey.connectionID] = "\(id)" }
                return metadata
            }()
        )
    }

    /// Logs "request failed" at debug, with the error's code and phase.
    public func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {
        self.logger.debug(
            "request failed",
            error: error,
            metadata: {
                var metadata: Logger.Metadata = [
                    MetadataKey.requestID: "\(request.id)",
                    MetadataKey.errorCode: "\(error.code)",
                    MetadataKey.errorPhase: "\(error.phase.rawValue)",
                    MetadataKey.duration: "\(Self.seconds(timing.total))",
                ]
                if let id = timing.connectionID { metadata[MetadataKey.connectionID] = "\(id)" }
                return metadata
            }()
        )
    }

    /// Logs "request redirected" at debug, with the redirect's status and where it leads (scheme,
    /// authority and path; no query, which may hold secrets).
    public func requestRedirected(_ request: ObservedRequest, response: HTTPResponse, next: HTTPRequest) {
        let path = next.path.map { String($0.prefix { $0 != "?" }) } ?? "/"
        self.logger.debug(
            "request redirected",
            metadata: [
                MetadataKey.requestID: "\(request.id)",
                MetadataKey.status: "\(response.status.code)",
                MetadataKey.location: "\(next.scheme ?? "")://\(next.authority ?? "")\(path)",
            ]
        )
    }

    // MARK: - Connections

    /// Logs "DNS lookup started" at trace.
    public func dnsStarted(_ connection: ObservedConnection) {
        self.logger.trace("DNS lookup started", metadata: Self.metadata(connection))
    }

    /// Logs "DNS lookup finished" at trace, with the addresses.
    public func dnsFinished(_ connection: ObservedConnection, addresses: [String]) {
        self.logger.trace(
            "DNS lookup finished",
            metadata: Self.metadata(connection, [MetadataKey.addresses: .array(addresses.map { .string($0) })])
        )
    }

    /// Logs "TCP connect started" at trace.
    public func connectStarted(_ connection: ObservedConnection, address: String) {
        self.logger.trace(
            "TCP connect started",
            metadata: Self.metadata(connection, [MetadataKey.address: "\(address)"])
        )
    }

    /// Logs "TCP connect finished" or "TCP connect failed" at trace.
    public func connectFinished(_ connection: ObservedConnection, address: String, failure: String?) {
        if let failure {
            self.logger.trace(
                "TCP connect failed",
                metadata: Self.metadata(
                    connection,
                    [MetadataKey.address: "\(address)", MetadataKey.failure: "\(failure)"]
                )
            )
        } else {
            self.logger.trace(
                "TCP connect finished",
                metadata: Self.metadata(connection, [MetadataKey.address: "\(address)"])
            )
        }
    }

    /// Logs "TLS handshake started" at trace.
    public func tlsStarted(_ connection: ObservedConnection, offeringSession: Bool) {
        self.logger.trace(
            "TLS handshake started",
            metadata: Self.metadata(connection, [MetadataKey.offeringSession: "\(offeringSession)"])
        )
    }

    /// Logs "TLS handshake finished" at trace, with what it negotiated.
    public func tlsFinished(_ connection: ObservedConnection, tls: TLSInfo) {
        self.logger.trace(
            "TLS handshake finished",
            metadata: Self.metadata(
                connection,
                [
                    MetadataKey.tlsVersion: "\(tls.version)",
                    MetadataKey.tlsCipher: "\(tls.cipher)",
                    MetadataKey.tlsResumed: "\(tls.sessionResumed)",
                ]
            )
        )
    }

    /// Logs "connection failed" at debug, with the error's code and phase.
    public func connectionFailed(_ connection: ObservedConnection, error: AgentError) {
        self.logger.debug(
            "connection failed",
            error: error,
            metadata: Self.metadata(
                connection,
                [MetadataKey.errorCode: "\(error.code)", MetadataKey.errorPhase: "\(error.phase.rawValue)"]
            )
        )
    }

    /// Logs "connection closed" at debug, with the reason.
    public func connectionClosed(_ connection: ObservedConnection, reason: ConnectionCloseReason) {
        self.logger.debug("connection closed", metadata: Self.metadata(connection, [MetadataKey.reason: "\(reason)"]))
    }

    // MARK: - Pools

    /// Logs "pool changed" at trace, with the origin's counts.
    public func poolChanged(_ pool: AgentStats.OriginStats) {
        self.logger.trace(
            "pool changed",
            metadata: [
                MetadataKey.origin: "\(pool.origin)",
                MetadataKey.connecting: "\(pool.connecting)",
                MetadataKey.active: "\(pool.active)",
                MetadataKey.free: "\(pool.free)",
                MetadataKey.closing: "\(pool.closing)",
                MetadataKey.waiting: "\(pool.waiting)",
            ]
        )
    }

    // MARK: - Helpers

    private static func metadata(_ connection: ObservedConnection, _ extra: Logger.Metadata = [:]) -> Logger.Metadata {
        var metadata = extra
        metadata[MetadataKey.connectionID] = "\(connection.id)"
        metadata[MetadataKey.host] = "\(connection.host)"
        metadata[MetadataKey.port] = "\(connection.port)"
        return metadata
    }

    private static func pathWithoutQuery(_ path: String) -> Substring {
        path.firstIndex(of: "?").map { path[..<$0] } ?? Substring(path)
    }

    private static func seconds(_ duration: Duration) -> Double {
        let (seconds, attoseconds) = duration.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// The metadata keys of ``LoggingObserver``, all with one prefix.
enum MetadataKey {
    static let requestID = "https_agent.request_id"
    static let connectionID = "https_agent.connection_id"
    static let method = "https_agent.method"
    static let host = "https_agent.host"
    static let port = "https_agent.port"
    static let path = "https_agent.path"
    static let reused = "https_agent.reused"
    static let idleTime = "https_agent.idle_time"
    static let status = "https_agent.status"
    static let bytes = "https_agent.bytes"
    static let duration = "https_agent.duration"
    static let errorCode = "https_agent.error_code"
    static let errorPhase = "https_agent.error_phase"
    static let address = "https_agent.address"
    static let addresses = "https_agent.addresses"
    static let failure = "https_agent.failure"
    static let offeringSession = "https_agent.offering_session"
    static let tlsVersion = "https_agent.tls_version"
    static let tlsCipher = "https_agent.tls_cipher"
    static let tlsResumed = "https_agent.tls_resumed"
    static let reason = "https_agent.reason"
    static let location = "https_agent.location"
    static let origin = "https_agent.origin"
    static let connecting = "https_agent.connecting"
    static let active = "https_agent.active"
    static let free = "https_agent.free"
    static let closing = "https_agent.closing"
    static let waiting = "https_agent.waiting"
}
