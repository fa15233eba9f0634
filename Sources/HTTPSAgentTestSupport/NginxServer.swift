import Foundation

/// nginx as a subprocess on loopback, configured for TLS with session resumption, whose access log
/// records `$connection` and `$ssl_session_reused` for every request: the server's own count of new
/// versus resumed TLS sessions.
package final class NginxServer: @unchecked Sendable {
    /// One access-log line.
    package struct LogEntry: Sendable, Hashable {
        /// nginx's connection serial number.
        package var connection: Int
        /// `$ssl_session_reused`: true for "r".
        package var sessionReused: Bool
        /// `$ssl_protocol`, e.g. "TLSv1.3".
        package var protocolVersion: String
    }

    /// Why a test that needs nginx is skipped here, or `nil` when the binary is there.
    package static var unavailableReason: String? {
        Self.executable == nil ? "nginx is not installed (apt-get install -y nginx)" : nil
    }

    private static let executable: String? = {
        for path in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return nil
    }()

    private let process: Process
    private let directory: String
    /// The port it listens on (127.0.0.1).
    package let port: Int

    /// Starts nginx serving `GET /` (a small body) over TLS with the given certificate files, and waits,
    /// on a thread of its own, until it listens.
    ///
    /// - Parameters:
    ///   - certificatePath: PEM certificate chain.
    ///   - keyPath: PEM private key.
    ///   - protocols: nginx's `ssl_protocols`, e.g. "TLSv1.3" or "TLSv1.2".
    ///   - sessionTickets: `ssl_session_tickets`; the shared session cache is on either way.
    ///   - keepAlive: `keepalive_timeout` 30 s when true, 0 (close after each response) when false.
    package static func start(
        certificatePath: String,
        keyPath: String,
        protocols: String = "TLSv1.2 TLSv1.3",
        sessionTickets: Bool = true,
        keepAlive: Bool = true
    ) async throws -> NginxServer {
        try await runBlocking {
            try NginxServer(
                certificatePath: certificatePath,
                keyPath: keyPath,
                protocols: protocols,
                sessionTickets: sessionTickets,
                keepAlive: keepAlive
            )
        }
    }

    private init(
        certificatePath: String,
        keyPath: String,
        protocols: String,
        sessionTickets: Bool,
        keepAlive: Bool
    ) throws {
        guard let executable = Self.executable else {
            throw StartError(description: Self.unavailableReason ?? "nginx not found")
        }
        let directory = NSTemporaryDirectory() + "https-agent-nginx-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory + "/tmp", withIntermediateDirectories: true)
        var lastError = ""
        // The port is found by binding and closing; another process may take it meanwhile, so retry.
        for _ in 0..<5 {
            let port = try Self.freePort()
            let configuration = """
                daemon off;
                master_process off;
                worker_processes 1;
                error_log \(directory)/error.log warn;
                pid \(directory)/nginx.pid;
                events { worker_connections 256; }
                http {
                    log_format reuse '$connection $ssl_session_reused $ssl_protocol';
                    access_log \(directory)/access.log reuse;
                    client_body_temp_path \(directory)/tmp/body;
                    proxy_temp_path \(directory)/tmp/proxy;
                    fastcgi_temp_path \(directory)/tmp/fastcgi;
                    uwsgi_temp_path \(directory)/tmp/uwsgi;
                    scgi_temp_path \(directory)/tmp/scgi;
                    keepalive_timeout \(keepAlive ? 30 : 0);
                    server {
                        listen 127.0.0.1:\(port) ssl;
                        ssl_certificate \(certificatePath);
                        ssl_certificate_key \(keyPath);
                        ssl_protocols \(protocols);
                        ssl_session_cache shared:AGENT:1m;
                        ssl_session_timeout 10m;
                        ssl_session_tickets \(sessionTickets ? "on" : "off");
                        location / { return 200 "hello from nginx\\n"; }
                    }
                }

                """
            try configuration.write(toFile: directory + "/nginx.conf", atomically: true, encoding: .utf8)
            try? FileManager.default.removeItem(atPath: directory + "/nginx.pid")  // from an attempt that failed
            let process = Process()
            // Under `timeout`, so that a test run that dies cannot leave nginx behind for long.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
            process.arguments = ["-k", "5", "600", executable, "-p", directory, "-c", directory + "/nginx.conf"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            process.standardInput = FileHandle.nullDevice
            try process.run()
            if Self.waitUntilListening(port: port, process: process, pidFile: directory + "/nginx.pid") {
                self.process = process
                self.directory = directory
                self.port = port
                return
            }
            Self.kill(process)
            lastError = (try? String(contentsOfFile: directory + "/error.log", encoding: .utf8)) ?? "no error log"
        }
        try? FileManager.default.removeItem(atPath: directory)
        throw StartError(description: "nginx did not start listening: \(lastError)")
    }

    struct StartError: Error, CustomStringConvertible {
        var description: String
    }

    /// Every access-log line so far.
    package func accessLog() -> [LogEntry] {
        let text = (try? String(contentsOfFile: self.directory + "/access.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 3, let connection = Int(fields[0]) else { return nil }
            return LogEntry(connection: connection, sessionReused: fields[1] == "r", protocolVersion: String(fields[2]))
        }
    }

    /// Stops nginx and removes its files.
    package func stop() {
        Self.kill(self.process)
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    deinit {
        self.stop()
    }

    private static func kill(_ process: Process) {
        stopProcessUnderTimeout(process)
    }

    private static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw StartError(description: "socket() failed") }
        defer { close(descriptor) }
        guard let port = bindToFreeLoopbackPort(descriptor) else { throw StartError(description: "bind() failed") }
        return port
    }

    /// Polls a TCP connect to the port for up to 10 s while the process runs, once nginx has written its
    /// pid file. It writes that only after binding its port, so the connect cannot reach another server
    /// that took the port meanwhile (nginx then fails to bind and exits).
    private static func waitUntilListening(port: Int, process: Process, pidFile: String) -> Bool {
        for _ in 0..<1000 {
            guard process.isRunning else { return false }
            guard FileManager.default.fileExists(atPath: pidFile) else {
                usleep(10_000)
                continue
            }
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = in_port_t(UInt16(port).bigEndian)
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
