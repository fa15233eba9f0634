package import HTTPSAgentTLS
import NIOConcurrencyHelpers
package import NIOCore
import NIOHTTP1
import NIOPosix

/// An in-process HTTP/1.1 server on loopback, plain or TLS, for tests and the `fetch --demo`.
///
/// It counts what a client's claims must be checked against: connections accepted, open now, the most
/// open at once, requests served, and for TLS full versus resumed handshakes (OpenSSL's
/// `SSL_session_reused` on the server's side). Every response carries `X-Connection-ID` (the server's
/// number for the connection, from 1) and `X-Request-Number` (on that connection, from 1), and echoes
/// a request's `Connection` header as `X-Request-Connection`. Over TLS, `X-TLS-Resumed` (1 or 0) and
/// `X-TLS-SNI` (the name the client sent, or "-") report the server's view of the handshake.
///
/// Routes:
/// - `/` and `/hello`: "hello".
/// - `/bytes/N`: N bytes with a Content-Length.
/// - `/chunked/N`: N bytes, chunked.
/// - `/eof/N`: N bytes ended by closing the connection (no Content-Length, not chunked).
/// - `/eof-unclean/N`: the same, but the TCP connection is shut without a TLS `close_notify`.
/// - `/bytes-unclean/N`: N bytes with a Content-Length, then a TCP shutdown without `close_notify`.
/// - `/truncate/N`: announces N bytes, sends half, then closes.
/// - `/delay/MS`: "delayed" after MS milliseconds.
/// - `/slow/N/MS`: N bytes in 10 pieces spread over MS milliseconds.
/// - `/timed/WAIT/N/MS`: nothing for WAIT milliseconds, then the head and N bytes over MS milliseconds.
/// - `/close`: "bye" with `Connection: close`, then closes.
/// - `/http10`: an HTTP/1.0 response without keep-alive.
/// - `/status/CODE`: an empty response with that status.
/// - `/echo`: the request body back, with `X-Request-Method`.
/// - `/stream-echo`: answers at once (chunked) and echoes each piece of the body as it arrives.
/// - `/reject-upload`: answers 413 and closes as soon as the request head arrives, body unread.
/// - `/redirect/CODE?to=URL`, `/chain/N`, `/loop/a`, `/inspect`: redirects and what a request carried;
///   see `TestHTTPServer+Redirects.swift`.
///
/// `HEAD` is answered without a body on `/`, `/hello`, `/bytes/N`, `/close` and `/status/CODE`.
package final class TestHTTPServer: Sendable {
    /// How the server behaves.
    package struct Configuration: Sendable {
        /// TLS server options; `nil` serves plain HTTP.
        package var tls: TLSContextOptions?
        /// The address to listen on.
        package var host: String
        /// The port to listen on; 0 picks a free one.
        package var port: Int
        /// Close a connection that has been idle for this long after a response.
        package var closeIdleAfter: TimeAmount?
        /// Close idle connections after a random time between zero and ``closeIdleAfter`` instead, drawn
        /// anew after every response: a server whose idle closes no client can predict.
        package var closesIdleAtRandom = false
        /// Close a connection after it served this many requests (with `Connection: close` on the last).
        package var maxRequestsPerConnection: Int?
        /// Send `Keep-Alive: timeout=N` with every kept-alive response.
        package var keepAliveHint: Int?

        package init(
            tls: TLSContextOptions? = nil,
            host: String = "127.0.0.1",
            port: Int = 0,
            closeIdleAfter: TimeAmount? = nil,
            maxRequestsPerConnection: Int? = nil,
            keepAliveHint: Int? = nil
        ) {
            self.tls = tls
            self.host = host
            self.port = port
            self.closeIdleAfter = closeIdleAfter
            self.maxRequestsPerConnection = maxRequestsPerConnection
            self.keepAliveHint = keepAliveHint
        }
    }

    /// Counters, as the server saw things.
    package struct Stats: Sendable, Hashable {
        /// Connections accepted since start.
        package var accepted = 0
        /// Connections open now.
        package var open = 0
        /// The most connections open at one time.
        package var maxOpen = 0
        /// Requests answered.
        package var requests = 0
        /// TLS handshakes completed without resumption.
        package var fullHandshakes = 0
        /// TLS handshakes that resumed a session.
        package var resumedHandshakes = 0
    }

    private let channel: any Channel
    private let counters: NIOLockedValueBox<Stats>
    package let configuration: Configuration

    /// The port the server listens on.
    package let port: Int

    private init(channel: any Channel, counters: NIOLockedValueBox<Stats>, configuration: Configuration) {
        self.channel = channel
        self.counters = counters
        self.configuration = configuration
        self.port = channel.localAddress?.port ?? 0
    }

    /// Starts a server on an ephemeral port.
    package static func start(
        _ configuration: Configuration = Configuration(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> TestHTTPServer {
        let counters = NIOLockedValueBox(Stats())
        let context = try configuration.tls.map { try SSLContextBox(options: $0) }
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let connectionNumber = counters.withLockedValue { stats in
                        stats.accepted += 1
                        stats.open += 1
                        stats.maxOpen = max(stats.maxOpen, stats.open)
                        return stats.accepted
                    }
                    channel.closeFuture.whenComplete { _ in
                        counters.withLockedValue { $0.open -= 1 }
                    }
                    let sync = channel.pipeline.syncOperations
                    if let context {
                        try sync.addHandler(
                            TLSHandler(connection: SSLConnectionBox(context: context, serverHostname: nil))
                        )
                    }
                    // Every route frames its own responses, so that `/eof` really ends by close.
                    var encoding = HTTPResponseEncoder.Configuration()
                    encoding.automaticallySetFramingHeaders = false
                    try sync.addHandler(HTTPResponseEncoder(configuration: encoding))
                    try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                    try sync.addHandler(
                        TestServerHandler(
                            connectionNumber: connectionNumber,
                            configuration: configuration,
                            counters: counters
                        )
                    )
                }
            }
            .bind(host: configuration.host, port: configuration.port)
            .get()
        return TestHTTPServer(channel: channel, counters: counters, configuration: configuration)
    }

    /// The server's counters now.
    package var stats: Stats {
        self.counters.withLockedValue { $0 }
    }

    /// `https://localhost:PORT` or `http://127.0.0.1:PORT`, depending on TLS.
    package func url(_ path: String = "/", host: String? = nil) -> String {
        let scheme = self.configuration.tls == nil ? "http" : "https"
        let shownHost = host ?? (self.configuration.tls == nil ? self.configuration.host : "localhost")
        return "\(scheme)://\(shownHost):\(self.port)\(path)"
    }

    /// Waits until `condition` holds for the stats, polling every 10 ms, for up to `timeout`.
    ///
    /// The timeout only bounds a failing wait; a generous one keeps tests stable on a loaded machine.
    /// - Returns: whether the condition held in time.
    @discardableResult
    package func waitUntil(timeout: Duration = .seconds(30), _ condition: (Stats) -> Bool) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if condition(self.stats) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition(self.stats)
    }

    /// Stops listening and closes every connection.
    package func shutdown() async throws {
        try await self.channel.close()
    }
}

/// Answers requests on one server connection.
final class TestServerHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let connectionNumber: Int
    private let configuration: TestHTTPServer.Configuration
    private let counters: NIOLockedValueBox<TestHTTPServer.Stats>
    private var requestHead: HTTPRequestHead?
    private(set) var requestBody = ByteBuffer()
    private var requestsOnConnection = 0
    private var tlsResumed: Bool?
    private var tlsServerName: String?
    private var requestConnectionHeader: String?
    private var streamingEcho = false
    /// A HEAD response carries the GET response's headers and no body.
    private var respondingToHead = false
    private var idleTimer: Scheduled<Void>?

    init(
        connectionNumber: Int,
        configuration: TestHTTPServer.Configuration,
        counters: NIOLockedValueBox<TestHTTPServer.Stats>
    ) {
        self.connectionNumber = connectionNumber
        self.configuration = configuration
        self.counters = counters
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSHandshakeCompletedEvent {
            self.tlsResumed = event.info.sessionReused
            self.tlsServerName = event.info.serverName
            self.counters.withLockedValue { stats in
                if event.info.sessionReused { stats.resumedHandshakes += 1 } else { stats.fullHandshakes += 1 }
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.idleTimer?.cancel()
            self.requestHead = head
            self.requestBody.clear()
            self.streamingEcho = head.uri.hasPrefix("/stream-echo")
            if self.streamingEcho {
                // Answer at once and echo each piece as it arrives: the response runs while we upload.
                var response = self.head(.ok, close: false)
                response.headers.add(name: "Transfer-Encoding", value: "chunked")
                context.writeAndFlush(self.wrapOutboundOut(.head(response)), promise: nil)
            } else if head.uri.hasPrefix("/reject-upload") {
                // Refuse before reading the body, and close, as servers do for too-large uploads.
                self.requestHead = nil
                self.counters.withLockedValue { $0.requests += 1 }
                self.send(context, status: .payloadTooLarge, body: ByteBuffer(string: "too large"), close: true)
            }
        case .body(var buffer):
            if self.streamingEcho {
                context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            } else {
                self.requestBody.writeBuffer(&buffer)
            }
        case .end:
            guard let head = self.requestHead else { return }
            self.requestHead = nil
            self.requestsOnConnection += 1
            self.counters.withLockedValue { $0.requests += 1 }
            if self.streamingEcho {
                self.streamingEcho = false
                self.finish(context, close: !head.isKeepAlive)
            } else {
                self.respond(to: head, context: context)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: - Routes

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let parts = request.uri.split(separator: "?")[0].split(separator: "/").map(String.init)
        let route = parts.first ?? ""
        let number = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        self.respondingToHead = request.method == .HEAD
        var lastRequest = !request.isKeepAlive
        self.requestConnectionHeader = request.headers.first(name: "connection")
        if let max = self.configuration.maxRequestsPerConnection, self.requestsOnConnection >= max {
            lastRequest = true
        }
        switch route {
        case "", "hello":
            self.send(context, body: ByteBuffer(string: "hello"), close: lastRequest)
        case "bytes":
            self.send(context, body: Self.payload(number), close: lastRequest)
        case "chunked":
            var head = self.head(.ok, close: lastRequest)
            head.headers.add(name: "Transfer-Encoding", value: "chunked")
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            var sent = 0
            while sent < number {
                let size = min(number - sent, 4096)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(Self.payload(size, offset: sent)))), promise: nil)
                sent += size
            }
            self.finish(context, close: lastRequest)
        case "eof", "eof-unclean":
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "Connection", value: "close")
            self.addCommonHeaders(&head)
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(Self.payload(number)))), promise: nil)
            let unclean = route == "eof-unclean"
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                Self.close(context, unclean: unclean)
            }
        case "bytes-unclean":
            // A complete Content-Length response, then a TCP close without close_notify.
            var head = self.head(.ok, close: false)
            head.headers.add(name: "Content-Length", value: String(number))
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(Self.payload(number)))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                Self.close(context, unclean: true)
            }
        case "truncate":
            var head = self.head(.ok, close: true)
            head.headers.add(name: "Content-Length", value: String(number))
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(Self.payload(number / 2)))))
                .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case "delay":
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(number))) {
                self.send(context, body: ByteBuffer(string: "delayed"), close: lastRequest)
            }
        case "slow":
            let milliseconds = parts.count > 2 ? Int(parts[2]) ?? 0 : 0
            self.sendSlowly(context, total: number, over: milliseconds, close: lastRequest)
        case "timed":
            let total = parts.count > 2 ? Int(parts[2]) ?? 0 : 0
            let milliseconds = parts.count > 3 ? Int(parts[3]) ?? 0 : 0
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(number))) {
                self.sendSlowly(context, total: total, over: milliseconds, close: lastRequest)
            }
        case "close":
            self.send(context, body: ByteBuffer(string: "bye"), close: true)
        case "http10":
            var head = HTTPResponseHead(version: .http1_0, status: .ok)
            let body = ByteBuffer(string: "old")
            head.headers.add(name: "Content-Length", value: String(body.readableBytes))
            self.addCommonHeaders(&head)
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        case "status":
            self.send(
                context,
                status: HTTPResponseStatus(statusCode: number),
                // An error page for errors; none for the rest, as 204 and 304 must not have one.
                body: ByteBuffer(string: number >= 400 ? "status \(number)" : ""),
                close: lastRequest
            )
        case "gzip", "zlib", "zlib-split", "rawdeflate", "gzip2", "bomb", "gzip-cut", "gzip-junk":
            self.sendEncoded(route, count: number, request: request, context: context, close: lastRequest)
        case "redirect", "chain", "loop", "inspect":
            // Redirect routes: TestHTTPServer+Redirects.swift.
            self.respondRedirectRoute(route, parts: parts, request: request, context: context, close: lastRequest)
        case "headers":
            // The request line and header fields as received, one per line: for clients' header tests.
            var text = "\(request.method.rawValue) \(request.uri)\n"
            for (name, value) in request.headers { text += "\(name): \(value)\n" }
            self.send(context, body: ByteBuffer(string: text), close: lastRequest)
        case "echo":
            var head = self.head(.ok, close: lastRequest)
            head.headers.add(name: "X-Request-Method", value: request.method.rawValue)
            if let encoding = request.headers.first(name: "transfer-encoding") {
                head.headers.add(name: "X-Request-Transfer-Encoding", value: encoding)
            }
            head.headers.add(name: "Content-Length", value: String(self.requestBody.readableBytes))
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(self.requestBody))), promise: nil)
            self.finish(context, close: lastRequest)
        default:
            self.send(
                context,
                status: .notFound,
                body: ByteBuffer(string: "no route \(request.uri)"),
                close: lastRequest
            )
        }
    }

    // MARK: - Helpers

    private static let zerosMember = Compressor.compress(
        [UInt8](repeating: 0, count: 10_000_000),
        format: .gzip,
        level: 9
    )

    /// Compressed bodies: `/gzip/N`, `/zlib/N` and `/rawdeflate/N` send N payload bytes encoded (as
    /// "gzip", "deflate" and "deflate"); `/gzip2/N` two gzip members of N bytes each; `/bomb/N` N gzip
    /// members of 10 MB of zeros each (about 10 kB apiece); `/gzip-cut/N` a gzip stream missing its last
    /// 10 bytes; `/gzip-junk/N` bytes that are not gzip at all; `/zlib-split/N` as `/zlib/N` with its
    /// first byte sent alone. Sent chunked in 4 KiB pieces, so the
    /// client decodes as they come (HEAD gets a Content-Length instead).
    private func sendEncoded(
        _ route: String,
        count: Int,
        request: HTTPRequestHead,
        context: ChannelHandlerContext,
        close: Bool
    ) {
        let plain = Array(Self.payload(count).readableBytesView)
        var encoding = "gzip"
        var body: [UInt8]
        switch route {
        case "zlib", "zlib-split":
            encoding = "deflate"
            body = Compressor.compress(plain, format: .zlib)
        case "rawdeflate":
            encoding = "deflate"
            body = Compressor.compress(plain, format: .rawDeflate)
        case "gzip2":
            body = Compressor.compress(plain, format: .gzip) + Compressor.compress(plain, format: .gzip)
        case "bomb":
            // N gzip members of 10 MB of zeros each, about 10 kB apiece.
            // Appended member by member: a per-byte join is slow in debug builds and this runs on the
            // event loop every test server shares.
            body = []
            body.reserveCapacity(Self.zerosMember.count * count)
            for _ in 0..<count { body.append(contentsOf: Self.zerosMember) }
        case "gzip-cut":
            body = Array(Compressor.compress(plain, format: .gzip).dropLast(10))
        case "gzip-junk":
            body = Array("this is not gzip at all, just text".utf8)
        default:
            body = Compressor.compress(plain, format: .gzip)
        }
        var head = self.head(.ok, close: close)
        head.headers.add(name: "Content-Encoding", value: encoding)
        if self.respondingToHead {
            head.headers.add(name: "Content-Length", value: String(body.count))
        } else {
            head.headers.add(name: "Transfer-Encoding", value: "chunked")
        }
        if let accepted = request.headers.first(name: "accept-encoding") {
            head.headers.add(name: "X-Request-Accept-Encoding", value: accepted)
        }
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        if route == "zlib-split" && !self.respondingToHead {
            // The first byte alone, the rest 100 ms later: the client must wait for a second byte to tell
            // zlib-wrapped deflate from raw.
            context.writeAndFlush(
                self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body.prefix(1))))),
                promise: nil
            )
            let rest = ByteBuffer(bytes: body.dropFirst())
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(100)) {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(rest))), promise: nil)
                self.finish(context, close: close)
            }
            return
        }
        if !self.respondingToHead {
            var offset = 0
            while offset < body.count {
                let piece = body[offset..<min(offset + 4096, body.count)]
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: piece)))), promise: nil)
                offset += piece.count
            }
        }
        self.finish(context, close: close)
    }

    func head(_ status: HTTPResponseStatus, close: Bool) -> HTTPResponseHead {
        var head = HTTPResponseHead(version: .http1_1, status: status)
        if close { head.headers.add(name: "Connection", value: "close") }
        self.addCommonHeaders(&head)
        return head
    }

    private func addCommonHeaders(_ head: inout HTTPResponseHead) {
        head.headers.add(name: "X-Connection-ID", value: String(self.connectionNumber))
        head.headers.add(name: "X-Request-Number", value: String(self.requestsOnConnection))
        if let connection = self.requestConnectionHeader {
            head.headers.add(name: "X-Request-Connection", value: connection)
        }
        if let hint = self.configuration.keepAliveHint {
            head.headers.add(name: "Keep-Alive", value: "timeout=\(hint), max=1000")
        }
        if let resumed = self.tlsResumed {
            head.headers.add(name: "X-TLS-Resumed", value: resumed ? "1" : "0")
            head.headers.add(name: "X-TLS-SNI", value: self.tlsServerName ?? "-")
        }
    }

    func send(_ context: ChannelHandlerContext, status: HTTPResponseStatus = .ok, body: ByteBuffer, close: Bool) {
        var head = self.head(status, close: close)
        head.headers.add(name: "Content-Length", value: String(body.readableBytes))
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 && !self.respondingToHead {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        self.finish(context, close: close)
    }

    private func sendSlowly(_ context: ChannelHandlerContext, total: Int, over milliseconds: Int, close: Bool) {
        var head = self.head(.ok, close: close)
        head.headers.add(name: "Content-Length", value: String(total))
        context.writeAndFlush(self.wrapOutboundOut(.head(head)), promise: nil)
        let pieces = 10
        let loop = context.eventLoop.assumeIsolated()
        var offset = 0
        for piece in 0..<pieces {
            let size = total / pieces + (piece < total % pieces ? 1 : 0)
            let pieceOffset = offset
            offset += size
            loop.scheduleTask(in: .milliseconds(Int64(milliseconds * (piece + 1) / pieces))) {
                let bytes = Self.payload(size, offset: pieceOffset)
                context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
                if piece == pieces - 1 {
                    self.finish(context, close: close)
                }
            }
        }
    }

    func finish(_ context: ChannelHandlerContext, close: Bool) {
        let written = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if close {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else if var idle = self.configuration.closeIdleAfter {
            if self.configuration.closesIdleAtRandom {
                idle = .nanoseconds(.random(in: 0...idle.nanoseconds))
            }
            self.idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: idle) {
                context.close(promise: nil)
            }
        }
    }

    /// Closes the connection; `unclean` shuts the TCP connection down under TLS without sending
    /// `close_notify` (the TLS handler passes a half-close straight through).
    private static func close(_ context: ChannelHandlerContext, unclean: Bool) {
        if unclean {
            context.close(mode: .output, promise: nil)
        } else {
            context.close(promise: nil)
        }
    }

    /// `count` bytes of a repeating alphabet starting at `offset`, so truncation and reordering are visible.
    static func payload(_ count: Int, offset: Int = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        guard count > 0 else { return buffer }
        buffer.reserveCapacity(count)
        let start = offset % 26
        let pattern = Self.pattern
        var remaining = count
        var position = start
        while remaining > 0 {
            let take = min(remaining, pattern.count - position)
            buffer.writeBytes(pattern[position..<(position + take)])
            remaining -= take
            position = (position + take) % 26
        }
        return buffer
    }

    /// The alphabet repeated to a size that makes large payloads cheap to build.
    private static let pattern: [UInt8] = Array(repeating: Array("abcdefghijklmnopqrstuvwxyz".utf8), count: 2520)
        .flatMap { $0 }
}
