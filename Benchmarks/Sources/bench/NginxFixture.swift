import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// nginx on 127.0.0.1, started by the benchmark with a test CA it makes with the `openssl` command, and
/// one server block (one port) per kind of connection handling. Its access log is the count of
/// connections and resumed TLS sessions that every scenario reports.
final class NginxFixture {
    /// How a server block treats connections.
    enum Block: CaseIterable {
        /// Keep-alive, up to 1,000,000 requests per connection.
        case keepAlive
        /// A new connection per request (`keepalive_timeout 0`), no session cache and no tickets: every
        /// connection is a full handshake.
        case fullHandshake
        /// A new connection per request, TLS 1.3 only, session cache and tickets on.
        case resumeTLS13
        /// A new connection per request, TLS 1.2 only, session cache and tickets on.
        case resumeTLS12

        var configuration: String {
            switch self {
            case .keepAlive:
                """
                ssl_protocols TLSv1.2 TLSv1.3;
                        keepalive_timeout 60s;
                        keepalive_requests 1000000;
                        ssl_session_cache off;
                        ssl_session_tickets off;
                """
            case .fullHandshake:
                """
                ssl_protocols TLSv1.2 TLSv1.3;
                        keepalive_timeout 0;
                        ssl_session_cache off;
                        ssl_session_tickets off;
                """
            case .resumeTLS13:
                """
                ssl_protocols TLSv1.3;
                        keepalive_timeout 0;
                        ssl_session_cache shared:BENCH13:10m;
                        ssl_session_timeout 10m;
                        ssl_session_tickets on;
                """
            case .resumeTLS12:
                """
                ssl_protocols TLSv1.2;
                        keepalive_timeout 0;
                        ssl_session_cache shared:BENCH12:10m;
                        ssl_session_timeout 10m;
                        ssl_session_tickets on;
                """
            }
        }
    }

    /// One access-log line.
    struct LogEntry {
        var port: Int
        /// nginx's connection serial number.
        var connection: Int
        /// `$connection_requests`: 1 for a connection's first request.
        var connectionRequests: Int
        /// `$ssl_session_reused` was "r".
        var sessionReused: Bool
        var status: Int
        var bodyBytes: Int
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static let smallSize = 2_200
    static let largeSize = 786_432

    let directory: String
    let caPath: String
    private(set) var ports: [Block: Int] = [:]
    private var process: Process?
    private var logOffset: UInt64 = 0

    /// Makes the certificates and files and starts nginx, pinned to `cpu` when given.
    init(cpu: Int?) throws {
        guard let executable = Self.nginxExecutable else {
            throw Failure(description: "nginx is not installed: apt-get install -y nginx")
        }
        var template = Array("/tmp/https-agent-bench-XXXXXX".utf8CString)
        guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw Failure(description: "cannot create a temporary directory in /tmp")
        }
        self.directory = String(cString: created)
        self.caPath = self.directory + "/ca.pem"
        do {
            try self.makeCertificates()
            try FileManager.default.createDirectory(atPath: self.directory + "/www", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: self.directory + "/tmp", withIntermediateDirectories: true)
            try Self.bytes(Self.smallSize).write(to: URL(fileURLWithPath: self.directory + "/www/small"))
            try Self.bytes(Self.largeSize).write(to: URL(fileURLWithPath: self.directory + "/www/large"))
            try self.start(executable: executable, cpu: cpu)
        } catch {
            self.stop()
            throw error
        }
    }

    func url(_ block: Block, path: String) -> String {
        "https://127.0.0.1:\(self.ports[block]!)/\(path)"
    }

    /// Marks the end of the log: ``entriesSinceMark(expecting:)`` returns what comes after.
    func mark() {
        self.logOffset = (try? FileManager.default.attributesOfItem(atPath: self.logPath)[.size] as? UInt64) ?? 0
    }

    /// The log lines written since ``mark()``. nginx writes a line after it has sent the response,
    /// so the last ones may land just after the client has read them: waits up to 2 s for `count`.
    func entriesSinceMark(expecting count: Int) -> [LogEntry] {
        var entries: [LogEntry] = []
        for _ in 0..<200 {
            entries = self.readEntries()
            if entries.count >= count { break }
            usleep(10_000)
        }
        return entries
    }

    /// Stops nginx and removes its directory.
    func stop() {
        if let process = self.process {
            Self.kill(process)
        }
        self.process = nil
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    deinit {
        self.stop()
    }

    private var logPath: String { self.directory + "/access.log" }

    private func readEntries() -> [LogEntry] {
        guard let handle = FileHandle(forReadingAtPath: self.logPath) else { return [] }
        defer { try? handle.close() }
        guard (try? handle.seek(toOffset: self.logOffset)) != nil,
            let data = try? handle.readToEnd()
        else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 6, let port = Int(fields[0]), let connection = Int(fields[1]),
                let requests = Int(fields[2]), let status = Int(fields[4]), let bytes = Int(fields[5])
            else { return nil }
            return LogEntry(
                port: port,
                connection: connection,
                connectionRequests: requests,
                sessionReused: fields[3] == "r",
                status: status,
                bodyBytes: bytes
            )
        }
    }

    private static let nginxExecutable: String? = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Deterministic filler, not compressible to nothing.
    private static func bytes(_ count: Int) -> Data {
        var state: UInt32 = 2_463_534_242
        return Data(
            (0..<count).map { _ in
                state ^= state << 13
                state ^= state >> 17
                state ^= state << 5
                return UInt8(truncatingIfNeeded: state)
            }
        )
    }

    /// A P-256 CA and a certificate for 127.0.0.1 and localhost that it signs, by the `openssl` command.
    private func makeCertificates() throws {
        let d = self.directory
        try """
        basicConstraints = critical, CA:FALSE
        keyUsage = critical, digitalSignature
        extendedKeyUsage = serverAuth
        subjectAltName = IP:127.0.0.1, DNS:localhost

        """.write(toFile: d + "/server.ext", atomically: true, encoding: .utf8)
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        try Self.run(
            "/usr/bin/openssl",
            ["req", "-x509"] + key + [
                "-keyout", d + "/ca.key", "-out", self.caPath, "-days", "7", "-subj", "/CN=https-agent bench CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ]
        )
        try Self.run(
            "/usr/bin/openssl",
            ["req"] + key + ["-keyout", d + "/server.key", "-out", d + "/server.csr", "-subj", "/CN=localhost"]
        )
        try Self.run(
            "/usr/bin/openssl",
            [
                "x509", "-req", "-in", d + "/server.csr", "-CA", self.caPath, "-CAkey", d + "/ca.key",
                "-CAcreateserial", "-out", d + "/server.pem", "-days", "7", "-extfile", d + "/server.ext",
            ]
        )
    }

    private func start(executable: String, cpu: Int?) throws {
        let d = self.directory
        var lastError = ""
        for _ in 0..<5 {
            var ports: [Block: Int] = [:]
            for block in Block.allCases {
                ports[block] = try Self.freePort()
            }
            let servers = Block.allCases.map { block in
                """
                    server {
                        listen 127.0.0.1:\(ports[block]!) ssl;
                        ssl_certificate \(d)/server.pem;
                        ssl_certificate_key \(d)/server.key;
                        \(block.configuration)
                        location / { root \(d)/www; }
                    }
                """
            }
            let configuration = """
                daemon off;
                master_process off;
                worker_processes 1;
                error_log \(d)/error.log warn;
                pid \(d)/nginx.pid;
                events { worker_connections 1024; }
                http {
                    log_format bench '$server_port $connection $connection_requests $ssl_session_reused $status $body_bytes_sent';
                    access_log \(d)/access.log bench;
                    default_type application/octet-stream;
                    client_body_temp_path \(d)/tmp/body;
                    proxy_temp_path \(d)/tmp/proxy;
                    fastcgi_temp_path \(d)/tmp/fastcgi;
                    uwsgi_temp_path \(d)/tmp/uwsgi;
                    scgi_temp_path \(d)/tmp/scgi;
                \(servers.joined(separator: "\n"))
                }

                """
            try configuration.write(toFile: d + "/nginx.conf", atomically: true, encoding: .utf8)
            let process = Process()
            // Under `timeout`, so that a benchmark that dies cannot leave nginx behind for long.
            var arguments = ["/usr/bin/timeout", "-k", "5", "3600", executable, "-p", d, "-c", d + "/nginx.conf"]
            if let cpu { arguments = ["-c", String(cpu)] + arguments }
            process.executableURL = URL(fileURLWithPath: cpu == nil ? arguments.removeFirst() : "/usr/bin/taskset")
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            try process.run()
            if ports.values.allSatisfy({ Self.waitUntilListening(port: $0, process: process) }) {
                self.process = process
                self.ports = ports
                return
            }
            Self.kill(process)
            lastError = (try? String(contentsOfFile: d + "/error.log", encoding: .utf8)) ?? "no error log"
        }
        throw Failure(description: "nginx did not start listening on 127.0.0.1: \(lastError)")
    }

    /// SIGKILL to the process group that Foundation started `timeout` and nginx in: a child of a Swift
    /// concurrency thread may have SIGTERM blocked, and then ignores a polite stop.
    private static func kill(_ process: Process) {
        guard process.isRunning else { return }
        Glibc.kill(-process.processIdentifier, SIGKILL)
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    private static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(executable) \(arguments.prefix(2).joined(separator: " ")) failed")
        }
    }

    private static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket() failed") }
        defer { close(descriptor) }
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0 else { throw Failure(description: "bind() on 127.0.0.1 failed") }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return address
    }

    /// Polls a TCP connect to the port for up to 10 s while the process runs.
    private static func waitUntilListening(port: Int, process: Process) -> Bool {
        for _ in 0..<1000 {
            guard process.isRunning else { return false }
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: port)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            close(descriptor)
            if connected == 0 { return true }
            usleep(10_000)
        }
        return false
    }
}
