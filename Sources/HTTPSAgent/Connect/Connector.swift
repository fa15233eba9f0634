import HTTPSAgentTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Opens connections: DNS, TCP connect across the host's addresses, the TLS handshake, then the
/// HTTP/1.1 pipeline.
struct Connector: Sendable {
    let group: any EventLoopGroup
    let resolver: SystemResolver
    let contexts: SSLContextCache
    let connectTimeout: TimeAmount
    let tlsHandshakeTimeout: TimeAmount
    /// How long an exchange may go without a byte from the server; `nil` waits forever.
    var readIdleTimeout: TimeAmount? = nil
    /// The limits on a response head's size and field count.
    var responseHeadLimits = ResponseHeadLimits()
    /// Where TLS sessions are found and kept; `nil` disables resumption.
    let sessionCache: TLSSessionCache?
    /// Run between the TLS handshake and adding the HTTP handlers, to let tests hold a connection in
    /// that gap.
    var _testBeforeInstallingHTTP: (@Sendable (any Channel) async -> Void)? = nil

    /// Opens connection `id` to `origin`.
    ///
    /// `established` is called on the connection's event loop, in the same tick the HTTP handler joins
    /// the pipeline, so the pool learns of the connection before any close of it can be reported.
    ///
    /// - Throws: ``AgentError`` for DNS, connect and TLS failures, ``AgentError/Code/connectionClosed``
    ///   when the connection closed after the handshake but before it was ready, and
    ///   ``AgentError/Code/shutdown`` when cancelled. Errors carry the steps that completed
    ///   (``AgentError/dialTimeline``).
    func connect(
        id: Int,
        origin: Origin,
        delegate: any HTTP1ConnectionDelegate,
        events: ConnectionObservers,
        established: @escaping @Sendable (HTTP1Connection) -> Void
    ) async throws(AgentError) {
        var timeline = ConnectionTimeline(dialStart: .now(), expectsTLS: origin.tls != nil)
        do {
            events.emit { $0.dnsStarted($1) }
            let addresses = try await self.resolver.resolve(host: origin.host, port: origin.port)
            timeline.dnsEnd = .now()
            if !events.isEmpty {
                let described = addresses.map(Self.describe)
                events.emit { $0.dnsFinished($1, addresses: described) }
            }
            try Task.checkCancellation()
            let channel = try await self.connectTCP(to: addresses, origin: origin, events: events)
            timeline.connectEnd = .now()
            do {
                var tlsInfo: TLSInfo?
                var tlsHandler: NIOLoopBound<TLSHandler>?
                if let tls = origin.tls {
                    let (info, handler) = try await self.handshake(
                        on: channel,
                        origin: origin,
                        configuration: tls,
                        events: events
                    )
                    timeline.tlsEnd = .now()
                    events.emit { $0.tlsFinished($1, tls: info) }
                    tlsInfo = info
                    tlsHandler = handler
                }
                if let hook = self._testBeforeInstallingHTTP {
                    await hook(channel)
                }
                try await self.installHTTP(
                    on: channel,
                    id: id,
                    origin: origin,
                    tls: tlsInfo,
                    tlsHandler: tlsHandler,
                    timeline: timeline,
                    delegate: delegate,
                    events: events,
                    established: established
                )
            } catch {
                channel.close(promise: nil)
                throw error
            }
        } catch var error as AgentError {
            error.dialTimeline = timeline
            let failed = error
            events.emit { $0.connectionFailed($1, error: failed) }
            throw error
        } catch {
            // Dials are cancelled only when the Agent shuts down; anything else is unexpected here.
            var failed = AgentError(
                code: error is CancellationError ? .shutdown : .connectFailed,
                phase: timeline.dnsEnd == nil ? .dns : timeline.connectEnd == nil ? .connect : .tlsHandshake,
                host: origin.host,
                port: origin.port,
                message: error is CancellationError
                    ? "the Agent was shut down while connecting" : "the connection could not be set up",
                underlying: error is CancellationError ? nil : String(describing: error)
            )
            failed.dialTimeline = timeline
            let reported = failed
            events.emit { $0.connectionFailed($1, error: reported) }
            throw failed
        }
    }

    // MARK: - TCP

    /// How long an attempt runs alone before the next address is tried alongside it (RFC 8305 §5
    /// recommends 250 ms).
    static let connectionAttemptDelay: TimeAmount = .milliseconds(250)

    private enum Attempt: Sendable {
        case connected(any Channel)
        case failed(String, timedOut: Bool)
        /// The stagger delay passed without an outcome from the attempts under way.
        case delayElapsed
    }

    /// Connects to the first address that answers, Happy Eyeballs style (RFC 8305): attempts start in
    /// order, a new one every ``connectionAttemptDelay`` or as soon as the previous one fails; the first
    /// to connect wins and the others are closed.
    func connectTCP(
        to addresses: [SocketAddress],
        origin: Origin,
        events: ConnectionObservers = .none
    ) async throws -> any Channel {
        let ordered = Self.interleaveFamilies(addresses)
        let outcome: Result<any Channel, AgentError> = await withTaskGroup(of: Attempt.self) { group in
            var next = 0
            var running = 0
            var failures: [String] = []
            var allTimedOut = true
            var winner: (any Channel)?

            func startNext() {
                let address = ordered[next]
                next += 1
                running += 1
                group.addTask { await self.attempt(address, events: events) }
                if next < ordered.count {
                    group.addTask {
                        try? await Task.sleep(for: .nanoseconds(Self.connectionAttemptDelay.nanoseconds))
                        return .delayElapsed
                    }
                }
            }

            if !ordered.isEmpty { startNext() }
            while winner == nil, let result = await group.next() {
                switch result {
                case .connected(let channel):
                    winner = channel
                case .failed(let description, let timedOut):
                    running -= 1
                    failures.append(description)
                    allTimedOut = allTimedOut && timedOut
                    if next < ordered.count && !Task.isCancelled {
                        startNext()
                    } else if running == 0 {
                        group.cancelAll()
                    }
                case .delayElapsed:
                    if next < ordered.count && !Task.isCancelled {
                        startNext()
                    }
                }
            }
            group.cancelAll()
            // Attempts that connected after the winner are not needed.
            while let late = await group.next() {
                if case .connected(let channel) = late { channel.close(promise: nil) }
            }
            if let winner {
                return .success(winner)
            }
            let count = failures.count
            return .failure(
                AgentError(
                    code: allTimedOut && count > 0 ? .connectTimeout : .connectFailed,
                    phase: .connect,
                    host: origin.host,
                    port: origin.port,
                    message: count <= 1
                        ? "could not connect to \(failures.first ?? "the host")"
                        : "could not connect to any of \(count) addresses: \(failures.joined(separator: ", "))"
                )
            )
        }
        switch outcome {
        case .success(let channel):
            if Task.isCancelled {
                channel.close(promise: nil)
                throw CancellationError()
            }
            return channel
        case .failure(let error):
            try Task.checkCancellation()
            throw error
        }
    }

    /// One TCP connect. Cancelling the task aborts it, even while the SYN goes unanswered.
    private func attempt(_ address: SocketAddress, events: ConnectionObservers) async -> Attempt {
        if events.isEmpty {
            return await self.attempt(address)
        }
        let described = Self.describe(address)
        events.emit { $0.connectStarted($1, address: described) }
        let result = await self.attempt(address)
        switch result {
        case .connected:
            events.emit { $0.connectFinished($1, address: described, failure: nil) }
        case .failed(let failure, _):
            events.emit { $0.connectFinished($1, address: described, failure: failure) }
        case .delayElapsed:
            break
        }
        return result
    }

    private func attempt(_ address: SocketAddress) async -> Attempt {
        let pending = PendingConnect()
        let future = ClientBootstrap(group: self.group)
            .connectTimeout(self.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                // Runs before the connect starts: from here on a cancellation can close the socket.
                pending.register(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteCounter())
                }
            }
            .connect(to: address)
        do {
            let channel = try await withTaskCancellationHandler {
                try await future.get()
            } onCancel: {
                pending.cancel()
            }
            if Task.isCancelled {
                channel.close(promise: nil)
                return .failed("\(Self.describe(address)) (cancelled)", timedOut: false)
            }
            return .connected(channel)
        } catch let error as ChannelError {
            if case .connectTimeout = error {
                return .failed(
                    "\(Self.describe(address)) (timed out after \(self.connectTimeout.seconds) s)",
                    timedOut: true
                )
            }
            return .failed("\(Self.describe(address)) (\(error))", timedOut: false)
        } catch let error as IOError {
            return .failed("\(Self.describe(address)) (\(Self.describe(error)))", timedOut: false)
        } catch {
            return .failed("\(Self.describe(address)) (\(error))", timedOut: false)
        }
    }

    /// Alternates address families, starting with the system's first choice (RFC 8305 §4), so one
    /// unreachable family does not hold up the other for long.
    static func interleaveFamilies(_ addresses: [SocketAddress]) -> [SocketAddress] {
        guard let first = addresses.first else { return [] }
        let preferred = addresses.filter { $0.protocol == first.protocol }
        let other = addresses.filter { $0.protocol != first.protocol }
        var result: [SocketAddress] = []
        result.reserveCapacity(addresses.count)
        for index in 0..<max(preferred.count, other.count) {
            if index < preferred.count { result.append(preferred[index]) }
            if index < other.count { result.append(other[index]) }
        }
        return result
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return address.protocol == .inet6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    private static func describe(_ error: IOError) -> String {
        switch error.errnoCode {
        case ECONNREFUSED: "connection refused"
        case ENETUNREACH: "network unreachable"
        case EHOSTUNREACH: "host unreachable"
        case ETIMEDOUT: "timed out"
        default: error.description
        }
    }

    // MARK: - TLS

    /// Runs the TLS handshake on `channel`.
    ///
    /// - Returns: what the handshake negotiated, and the handler, which keeps the error that ends the
    ///   connection from here on (``TLSHandler/fatalFailure``) for whoever learns of the close later.
    private func handshake(
        on channel: any Channel,
        origin: Origin,
        configuration: TLSConfiguration,
        events: ConnectionObservers
    ) async throws
        -> (TLSInfo, NIOLoopBound<TLSHandler>)
    {
        let context: SSLContextBox
        do throws(TLSSetupError) {
            context = try self.contexts.context(for: configuration.contextOptions)
        } catch {
            throw Self.configurationError(error, origin: origin)
        }
        let promise = channel.eventLoop.makePromise(of: TLSConnectionInfo.self)
        let timeout = self.tlsHandshakeTimeout
        let timeoutError = AgentError(
            code: .tlsHandshakeTimeout,
            phase: .tlsHandshake,
            host: origin.host,
            port: origin.port,
            message: "the TLS handshake did not complete within \(timeout.seconds) s"
        )
        let closedEarly = AgentError(
            code: .tlsHandshakeFailed,
            phase: .tlsHandshake,
            host: origin.host,
            port: origin.port,
            message: "the server closed the connection during the TLS handshake"
        )
        // The key (and its digest) only when there is a cache to look in: an Agent without one pays nothing.
        let cached = self.sessionCache.map { cache in
            (
                cache,
                SessionKey(
                    host: origin.host,
                    port: origin.port,
                    serverName: IPAddressLiteral.isIPAddress(origin.host) ? nil : origin.host,
                    alpn: context.options.alpnProtocols,
                    configurationIdentity: context.identity
                )
            )
        }
        let persistable = !context.hasClientCertificate
        let installed = channel.eventLoop.submit {
            guard channel.isActive else { throw closedEarly }
            // The SSL object lives on the channel's event loop from birth.
            let connection: SSLConnectionBox
            do throws(TLSSetupError) {
                connection = try SSLConnectionBox(context: context, serverHostname: origin.host)
            } catch {
                throw Self.configurationError(error, origin: origin)
            }
            var offered = false
            if let (cache, sessionKey) = cached {
                if let session = cache.take(sessionKey) {
                    connection.offer(session)
                    offered = true
                }
                connection.onNewSession = { session in
                    cache.store(session, for: sessionKey, persistable: persistable)
                }
                connection.onFatalError = {
                    cache.invalidate(sessionKey)
                }
            }
            let timer = channel.eventLoop.scheduleTask(in: timeout) {
                promise.fail(timeoutError)
                channel.close(promise: nil)
            }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            let handler = TLSHandler(connection: connection, handshakePromise: promise)
            try channel.pipeline.syncOperations.addHandler(handler)
            return (offered, NIOLoopBound(handler, eventLoop: channel.eventLoop))
        }
        // If the handler never made it into the pipeline, nothing else will complete the promise.
        installed.cascadeFailure(to: promise)
        let (offeredSession, handler) = try await installed.get()
        events.emit { $0.tlsStarted($1, offeringSession: offeredSession) }
        // A handshake that offered a session and failed in any way (an alert, a reset, a timeout) drops
        // its key's sessions: one a server or middlebox chokes on must not be offered again and again.
        if offeredSession, let (cache, sessionKey) = cached {
            promise.futureResult.whenFailure { _ in cache.invalidate(sessionKey) }
        }
        do {
            let info = try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                channel.close(promise: nil)
            }
            let negotiated = TLSInfo(
                version: info.protocolVersion,
                cipher: info.cipher,
                alpn: info.alpn,
                sessionResumed: info.sessionReused
            )
            return (negotiated, handler)
        } catch let failure as TLSFailure {
            throw Self.handshakeError(failure, host: origin.host, port: origin.port)
        } catch let error as AgentError {
            throw error
        } catch {
            try Task.checkCancellation()
            throw AgentError(
                code: .tlsHandshakeFailed,
                phase: .tlsHandshake,
                host: origin.host,
                port: origin.port,
                message: "the connection failed during the TLS handshake",
                underlying: String(describing: error)
            )
        }
    }

    private static func configurationError(_ error: TLSSetupError, origin: Origin) -> AgentError {
        AgentError(
            code: .tlsConfigurationInvalid,
            phase: .tlsHandshake,
            host: origin.host,
            port: origin.port,
            message: error.description
        )
    }

    /// The error for a TLS failure that ended a handshake, ours or the server's.
    ///
    /// A TLS 1.3 server checks the client's certificate after the client's side of the handshake is
    /// done, so its refusal (``TLSFailure/Kind-swift.enum/rejectedAfterHandshake``, e.g. "tlsv13 alert
    /// certificate required") arrives while the connection is being set up, while it waits for its first
    /// request or after that request was written, depending on timing. Each of those places reports it
    /// through here, as ``AgentError/Code/tlsHandshakeFailed`` in the TLS handshake phase: what happened
    /// is that the server refused the handshake (as a TLS 1.2 server refusing the same client would, and
    /// as a code a caller can act on), not that the connection broke. The server cannot have acted on a
    /// request written meanwhile: it aborted before reading any application data.
    static func handshakeError(_ failure: TLSFailure, host: String, port: Int) -> AgentError {
        var error: AgentError
        switch failure.kind {
        case .certificateVerificationFailed:
            error = AgentError(
                code: .certificateVerificationFailed,
                phase: .tlsHandshake,
                host: host,
                port: port,
                message: failure.description
            )
            error.verifyResult = failure.verifyResult
            error.verifyResultDescription = failure.verifyResultDescription
        case .closedDuringHandshake:
            error = AgentError(
                code: .tlsHandshakeFailed,
                phase: .tlsHandshake,
                host: host,
                port: port,
                message: "the server closed the connection during the TLS handshake"
            )
        case .rejectedAfterHandshake:
            error = AgentError(
                code: .tlsHandshakeFailed,
                phase: .tlsHandshake,
                host: host,
                port: port,
                message: "the server rejected the handshake after our side completed it: \(failure.description)"
            )
        case .handshakeFailed, .protocolError, .uncleanShutdown:
            error = AgentError(
                code: .tlsHandshakeFailed,
                phase: .tlsHandshake,
                host: host,
                port: port,
                message: failure.description
            )
        }
        error.tlsReason = failure.reason
        return error
    }

    // MARK: - HTTP

    private func installHTTP(
        on channel: any Channel,
        id: Int,
        origin: Origin,
        tls: TLSInfo?,
        tlsHandler: NIOLoopBound<TLSHandler>?,
        timeline: ConnectionTimeline,
        delegate: any HTTP1ConnectionDelegate,
        events: ConnectionObservers,
        established: @escaping @Sendable (HTTP1Connection) -> Void
    ) async throws {
        try await channel.eventLoop.submit {
            guard channel.isActive else {
                // Closed since the handshake, with nobody in the pipeline yet to hear why: the TLS handler
                // kept the reason. Reported as a request that found its connection closed would report it.
                throw HTTP1ClientHandler.notSentError(
                    host: origin.host,
                    port: origin.port,
                    cause: tlsHandler?.value.fatalFailure
                )
            }
            let sync = channel.pipeline.syncOperations
            let handler = HTTP1ClientHandler(
                connectionID: id,
                host: origin.host,
                port: origin.port,
                delegate: delegate,
                counter: try? sync.handler(type: ByteCounter.self),
                events: events,
                readIdleTimeout: self.readIdleTimeout,
                headLimits: self.responseHeadLimits
            )
            try handler.addHTTPHandlers(to: sync)
            let connection = HTTP1Connection(
                id: id,
                channel: channel,
                host: origin.host,
                port: origin.port,
                tls: tls,
                timeline: timeline,
                handler: handler
            )
            if !events.isEmpty {
                let info = ConnectionInfo(
                    id: id,
                    isReused: false,
                    remoteAddress: connection.remoteIP,
                    remotePort: connection.remotePort,
                    tls: tls
                )
                events.emit { $0.connectionEstablished($1, info: info) }
            }
            established(connection)
        }.get()
    }
}

/// The channel of a connect under way, so that a cancellation can close it before the connect ends.
private final class PendingConnect: Sendable {
    private let state = NIOLockedValueBox<(channel: (any Channel)?, cancelled: Bool)>((nil, false))

    func register(_ channel: any Channel) {
        let cancelled = self.state.withLockedValue { state in
            state.channel = channel
            return state.cancelled
        }
        if cancelled { channel.close(promise: nil) }
    }

    func cancel() {
        let channel = self.state.withLockedValue { state in
            state.cancelled = true
            return state.channel
        }
        channel?.close(promise: nil)
    }
}

extension TimeAmount {
    /// Whole and fractional seconds, for messages.
    var seconds: Double { Double(self.nanoseconds) / 1_000_000_000 }
}
