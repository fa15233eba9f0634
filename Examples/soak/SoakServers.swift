import HTTPSAgentTestSupport
import NIOCore

/// The four origins of a soak run, each a TLS ``TestHTTPServer`` on loopback with its own habits.
struct SoakServers {
    private let servers: [TestHTTPServer]

    /// - A steady keep-alive server.
    /// - One that closes an idle connection after a random 0–20 ms: most reuses race its close.
    /// - One that closes after every 5th request on a connection (`Connection: close`).
    /// - One that closes an idle connection after a random 0–200 ms.
    static func start(_ certificates: TestCertificates) async throws -> SoakServers {
        let tls = certificates.serverOptions()
        var jittery = TestHTTPServer.Configuration(tls: tls, closeIdleAfter: .milliseconds(20))
        jittery.closesIdleAtRandom = true
        var lazy = TestHTTPServer.Configuration(tls: tls, closeIdleAfter: .milliseconds(200))
        lazy.closesIdleAtRandom = true
        var servers: [TestHTTPServer] = []
        for configuration in [
            TestHTTPServer.Configuration(tls: tls),
            jittery,
            TestHTTPServer.Configuration(tls: tls, maxRequestsPerConnection: 5),
            lazy,
        ] {
            servers.append(try await TestHTTPServer.start(configuration))
        }
        return SoakServers(servers: servers)
    }

    /// "https://localhost:PORT" of each server.
    var baseURLs: [String] { self.servers.map { $0.url("") } }

    var stats: [TestHTTPServer.Stats] { self.servers.map(\.stats) }

    /// Waits (up to 10 s) until no server has a connection open; whether that happened.
    func waitUntilNoneOpen() async -> Bool {
        for server in self.servers where !(await server.waitUntil(timeout: .seconds(10)) { $0.open == 0 }) {
            return false
        }
        return true
    }

    func shutdown() async throws {
        for server in self.servers {
            try await server.shutdown()
        }
    }
}
