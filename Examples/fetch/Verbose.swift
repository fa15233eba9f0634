import ArgumentParser
import HTTPSAgent
import HTTPTypes
import Synchronization

/// How much `fetch` tells on standard error beyond errors.
struct DisplayOptions: ParsableArguments {
    @Flag(
        name: .shortAndLong,
        help: ArgumentHelp(
            "Verbose: print on standard error, as curl does, what happens on the way.",
            discussion: """
                Lines starting with * tell of DNS, connects, TLS handshakes (with session resumption) and \
                connection reuse; > lines show the request head, < lines the response head.
                """
        )
    )
    var verbose = false
}

/// curl's `-v`: what happens for each request, from the Agent's observer events, on standard error.
///
/// Two kinds of observer feed it. One installed on the Agent (``observers``) reports every connection:
/// its DNS answer, connects, TLS handshake and close. One per request (``request(_:bodyLength:)``) knows
/// the ``HTTPRequest`` and prints its head when it is written, since the events name the request but do
/// not carry its header fields. For the same reason the response head is printed from the response
/// ``Agent/execute(_:body:observer:)`` returned (``VerboseRequest/received(_:)``).
///
/// Events arrive on event-loop threads, several at once for parallel requests, so every event's lines
/// are written under one lock, in one piece. A connection's lines that come after a response head
/// arrived but before it was printed (its close, say, when the body was short) wait for it, so that the
/// output reads in the order things happened.
///
/// With `tagged`, for requests that run at once, request lines start with `[N]` (the request's number)
/// and connection lines with `[#N]` (the connection's), since their lines interleave.
final class Verbose: Sendable {
    private enum Pending {
        case lines(String)
        /// The request's response head arrived; its lines are not printed yet.
        case awaitingHead(request: UInt64)
    }

    private struct State {
        /// Per connection, what waits for a response head to be printed first.
        var pending: [Int: [Pending]] = [:]
        var hosts: [Int: String] = [:]
        var closed: Set<Int> = []
    }

    private let state = Mutex(State())
    private let configuration: Agent.Configuration
    private let tagged: Bool
    private let write: @Sendable (String) -> Void

    /// - Parameters:
    ///   - configuration: the Agent's configuration, for what the library adds to requests and how it
    ///     verifies certificates.
    ///   - tagged: whether to mark each line with its request or connection (when requests run at once).
    ///   - write: where the text goes, whole lines at a time; standard error unless a test says otherwise.
    init(
        configuration: Agent.Configuration,
        tagged: Bool = false,
        write: @escaping @Sendable (String) -> Void = Terminal.writeStandardError
    ) {
        self.configuration = configuration
        self.tagged = tagged
        self.write = write
    }

    /// The observer to install on the Agent: it reports connections.
    var observers: [any AgentObserver] { [ConnectionLines(log: self)] }

    /// The observer to pass with `request` to ``Agent/execute(_:body:observer:)``; it prints the request
    /// head when it is written. Then call its ``VerboseRequest/received(_:)`` and
    /// ``VerboseRequest/finished(_:)``.
    ///
    /// - Parameters:
    ///   - request: the request as given to the Agent.
    ///   - bodyLength: the length of its body, if it has one.
    func request(_ request: HTTPRequest, bodyLength: Int? = nil) -> VerboseRequest {
        VerboseRequest(log: self, request: request, bodyLength: bodyLength)
    }

    // MARK: - Output

    /// Writes `lines` now, or after the response head the connection is waiting for.
    fileprivate func emit(_ lines: [String], connection: Int?, tag: String?) {
        let text = self.text(lines, tag: tag)
        self.state.withLock { state in
            if let connection, state.pending[connection] != nil {
                state.pending[connection]!.append(.lines(text))
            } else {
                self.write(text)
            }
        }
    }

    /// Holds the connection's later lines until the request's response head is printed.
    fileprivate func awaitHead(request: UInt64, connection: Int) {
        self.state.withLock { $0.pending[connection, default: []].append(.awaitingHead(request: request)) }
    }

    fileprivate func connectionSeen(_ connection: ObservedConnection) {
        self.state.withLock { $0.hosts[connection.id] = connection.host }
    }

    fileprivate func connectionClosed(_ id: Int) {
        self.state.withLock { _ = $0.closed.insert(id) }
    }

    /// Whether the connection was reported closed, and the host it connects to.
    fileprivate func connection(_ id: Int) -> (closed: Bool, host: String?) {
        self.state.withLock { ($0.closed.contains(id), $0.hosts[id]) }
    }

    /// Prints the request's response head, then the lines that waited for it.
    fileprivate func printHead(_ lines: [String], request: UInt64?, connection: Int) {
        let head = self.text(lines, tag: request.map { String($0) })
        self.state.withLock { state in
            guard var pending = state.pending[connection],
                let marker = pending.firstIndex(where: { entry in
                    if case .awaitingHead(let waiting) = entry { waiting == request } else { false }
                })
            else {
                self.write(head)
                return
            }
            pending[marker] = .lines(head)
            // Print up to the next response head still waiting, if any: another request's, when the
            // connection already carried one more while this task had not printed yet.
            var text = ""
            while case .lines(let lines)? = pending.first {
                text += lines
                pending.removeFirst()
            }
            if !text.isEmpty {
                self.write(text)
            }
            state.pending[connection] = pending.isEmpty ? nil : pending
        }
    }

    private func text(_ lines: [String], tag: String?) -> String {
        let prefix = self.tagged ? tag.map { "[\($0)] " } ?? "" : ""
        return lines.map { prefix + $0 + "\n" }.joined()
    }

    fileprivate var tls: TLSConfiguration { self.configuration.tls }
    fileprivate var keepAlive: Bool { self.configuration.keepAlive }
    /// Whether the Agent adds `Accept-Encoding` to requests that have none.
    fileprivate var asksForCompression: Bool { self.configuration.decompression.isEnabled }
}

// MARK: - Connection events

/// Reports every connection of the Agent.
private struct ConnectionLines: AgentObserver {
    let log: Verbose

    private func say(_ connection: ObservedConnection, _ lines: String...) {
        self.log.emit(lines, connection: connection.id, tag: "#\(connection.id)")
    }

    func dnsStarted(_ connection: ObservedConnection) {
        self.log.connectionSeen(connection)
    }

    func dnsFinished(_ connection: ObservedConnection, addresses: [String]) {
        let hosts = addresses.map { Self.split($0).address }
        let v6 = hosts.filter { $0.contains(":") }
        let v4 = hosts.filter { !$0.contains(":") }
        self.say(
            connection,
            "* Host \(connection.host):\(connection.port) was resolved.",
            "* IPv6: \(v6.isEmpty ? "(none)" : v6.joined(separator: ", "))",
            "* IPv4: \(v4.isEmpty ? "(none)" : v4.joined(separator: ", "))"
        )
    }

    func connectStarted(_ connection: ObservedConnection, address: String) {
        self.say(connection, "*   Trying \(address)...")
    }

    func connectFinished(_ connection: ObservedConnection, address: String, failure: String?) {
        let (ip, port) = Self.split(address)
        if var failure {
            // The failure reads "ADDRESS (reason)"; the line names the address already.
            if failure.hasPrefix(address + " (") && failure.hasSuffix(")") {
                failure = String(failure.dropFirst(address.count + 2).dropLast())
            }
            self.say(connection, "* connect to \(ip) port \(port) failed: \(failure)")
        } else {
            self.say(connection, "* Connected to \(connection.host) (\(ip)) port \(port) (#\(connection.id))")
        }
    }

    func tlsStarted(_ connection: ObservedConnection, offeringSession: Bool) {
        if offeringSession {
            self.say(connection, "* TLS handshake: offering a cached session")
        }
    }

    func tlsFinished(_ connection: ObservedConnection, tls: TLSInfo) {
        let verified =
            switch self.log.tls.certificateVerification {
            case .full: "*  SSL certificate verify ok."
            case .noHostnameVerification: "*  SSL certificate verify ok (the host name was not checked)."
            case .none: "*  SSL certificate not verified: verification is off."
            }
        self.say(
            connection,
            "* SSL connection using \(tls.version) / \(tls.cipher) / ALPN \(tls.alpn ?? "(none)")",
            tls.sessionResumed ? "* SSL session resumed" : "* full TLS handshake",
            verified
        )
    }

    func connectionFailed(_ connection: ObservedConnection, error: AgentError) {
        var lines: [String] = []
        if let problem = error.verifyResultDescription {
            lines.append("* SSL certificate problem: \(problem)")
        }
        lines.append("* Connection #\(connection.id) failed: \(error)")
        self.log.emit(lines, connection: connection.id, tag: "#\(connection.id)")
    }

    func connectionClosed(_ connection: ObservedConnection, reason: ConnectionCloseReason) {
        self.log.connectionClosed(connection.id)
        self.say(connection, "* Connection #\(connection.id) to host \(connection.host) closed (\(reason))")
    }

    /// "127.0.0.1:443" or "[::1]:443" as address and port.
    static func split(_ address: String) -> (address: String, port: String) {
        guard let colon = address.lastIndex(of: ":") else { return (address, "") }
        var host = address[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
        }
        return (String(host), String(address[address.index(after: colon)...]))
    }
}

// MARK: - Request events

/// Reports one request: connection reuse, its head as written, its response head, whether the
/// connection stays open, and failures after the dial.
///
/// With -L it reports every hop the same way: the Agent tells it of each redirect it follows
/// (``requestRedirected(_:response:next:)``), with the redirect's head to print and the request sent
/// next, whose head the next hop then shows.
final class VerboseRequest: AgentObserver {
    private struct State {
        var request: UInt64?
        var connection: Int?
        /// The request of the current hop, and the length of the body it carries.
        var current: HTTPRequest
        var bodyLength: Int?
        /// The status of a response head that arrived and is not printed yet.
        var unprintedStatus: HTTPResponse.Status?
        /// Whether the current hop failed (a redirect's body too long to read).
        var hopFailed = false
    }

    private let log: Verbose
    private let state: Mutex<State>

    fileprivate init(log: Verbose, request: HTTPRequest, bodyLength: Int?) {
        self.log = log
        self.state = Mutex(State(current: request, bodyLength: bodyLength))
    }

    /// Prints the response head. Call it as soon as ``Agent/execute(_:body:observer:)`` returns.
    func received(_ response: AgentResponse) {
        self.printHead(response.head, connection: response.connection.id)
    }

    /// The request failed after a response head arrived that was not returned (a redirect the Agent
    /// refused): prints its status line, so that the connection's later lines are not held back.
    func failed() {
        let (id, connection, status) = self.state.withLock { ($0.request, $0.connection, $0.unprintedStatus) }
        guard let connection, let status else { return }
        self.state.withLock { $0.unprintedStatus = nil }
        self.log.printHead(
            ["< HTTP/1.1 \(status.code) \(status.reasonPhrase)", "<"],
            request: id,
            connection: connection
        )
    }

    private func printHead(_ head: HTTPResponse, connection: Int) {
        var lines = ["< HTTP/1.1 \(head.status.code) \(head.status.reasonPhrase)"]
        for field in head.headerFields {
            lines.append("< \(field.name.rawName): \(field.value)")
        }
        lines.append("<")
        let id = self.state.withLock { state in
            state.unprintedStatus = nil
            return state.request
        }
        self.log.printHead(lines, request: id, connection: connection)
    }

    /// The Agent follows a redirect: print its head, what became of its body and connection, and the URL
    /// of the next hop, whose head comes next.
    func requestRedirected(_ request: ObservedRequest, response: HTTPResponse, next: HTTPRequest) {
        let (connection, failed) = self.state.withLock { ($0.connection, $0.hopFailed) }
        guard let connection else { return }
        self.printHead(response, connection: connection)
        var lines = ["* Ignoring the response-body"]
        let (closed, host) = self.log.connection(connection)
        let closing = response.headerFields[.connection]?.lowercased().contains("close") == true
        if !failed && !closed && !closing {
            let name = host.map { " to host \($0)" } ?? ""
            lines.append("* Connection #\(connection)\(name) left intact")
        }
        let url = "\(next.scheme ?? "https")://\(next.authority ?? "")\(next.path ?? "/")"
        lines.append("* Issue another request to this URL: '\(url)'")
        self.say(request, lines)
        self.state.withLock { state in
            // 303, and a method changed to GET, leave the body behind.
            if response.status.code == 303 || next.method != state.current.method {
                state.bodyLength = nil
            }
            state.current = next
            state.hopFailed = false
        }
    }

    /// Says whether the connection stays open. Call it once the body has been read to its end.
    func finished(_ response: AgentResponse) {
        let id = response.connection.id
        let (closed, host) = self.log.connection(id)
        // A connection that closes says so itself, when it does.
        let closing = response.headerFields[.connection]?.lowercased().contains("close") == true
        if !closed && !closing {
            let name = host.map { " to host \($0)" } ?? ""
            self.log.emit(["* Connection #\(id)\(name) left intact"], connection: id, tag: "#\(id)")
        }
    }

    private func say(_ request: ObservedRequest, _ lines: [String]) {
        self.log.emit(lines, connection: self.state.withLock { $0.connection }, tag: String(request.id))
    }

    func requestQueued(_ request: ObservedRequest) {
        self.state.withLock { $0.request = request.id }
    }

    func connectionAcquired(_ request: ObservedRequest, connection: ConnectionInfo, idleTime: Duration?) {
        self.state.withLock { $0.connection = connection.id }
        if connection.isReused {
            let idle = idleTime.map { " (idle \(Terminal.milliseconds($0)))" } ?? ""
            self.say(request, ["* Re-using existing connection #\(connection.id) with host \(request.host)\(idle)"])
        }
    }

    func requestHeadWritten(_ request: ObservedRequest) {
        self.say(request, self.headLines(request))
    }

    func responseHeadReceived(_ request: ObservedRequest, status: HTTPResponse.Status) {
        let connection = self.state.withLock { state in
            state.unprintedStatus = status
            return state.connection
        }
        if let connection {
            self.log.awaitHead(request: request.id, connection: connection)
        }
    }

    func requestFailed(_ request: ObservedRequest, error: AgentError, timing: RequestTiming) {
        self.state.withLock { $0.hopFailed = true }
        switch error.phase {
        case .dns, .connect, .tlsHandshake:
            break  // the connection's lines told it
        default:
            self.say(request, ["* Request failed: \(error)"])
        }
    }

    /// The head as the Agent writes it: the request line, `Host` from the authority, the caller's fields
    /// less the framing ones, which the Agent sets itself, then `Connection` and `Content-Length`.
    private func headLines(_ request: ObservedRequest) -> [String] {
        let (sent, bodyLength) = self.state.withLock { ($0.current, $0.bodyLength) }
        var lines = ["> \(request.method.rawValue) \(request.path) HTTP/1.1"]
        lines.append("> Host: \(sent.authority ?? request.host)")
        let keepAlive = self.log.keepAlive
        for field in sent.headerFields {
            switch field.name.canonicalName {
            case "host", "transfer-encoding", "content-length": continue
            case "connection" where !keepAlive: continue
            default: lines.append("> \(field.name.rawName): \(field.value)")
            }
        }
        if !keepAlive {
            lines.append("> Connection: close")
        }
        if self.log.asksForCompression && sent.headerFields[.acceptEncoding] == nil {
            lines.append("> Accept-Encoding: gzip, deflate")
        }
        let expectsBody = [.post, .put, .patch].contains(request.method)
        if let length = bodyLength, length > 0 || expectsBody {
            lines.append("> Content-Length: \(length)")
        } else if bodyLength == nil && expectsBody {
            lines.append("> Content-Length: 0")
        }
        lines.append(">")
        return lines
    }
}
