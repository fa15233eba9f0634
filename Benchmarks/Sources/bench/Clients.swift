import AsyncHTTPClient
import Foundation
import HTTPSAgent
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOSSL

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The HTTP clients compared, each made fresh for every run and shut down after it.
enum ClientKind: String, CaseIterable, Sendable {
    case agent = "HTTPSAgent"
    case asyncHTTPClient = "AsyncHTTPClient"
    case urlSession = "URLSession"

    /// Each client as a user would set it up to trust the test CA, allowing `maxConnections` per host.
    func make(caPath: String, maxConnections: Int) throws -> any BenchClient {
        switch self {
        case .agent:
            AgentClient(caPath: caPath, maxConnections: maxConnections)
        case .asyncHTTPClient:
            try AHCClient(caPath: caPath, maxConnections: maxConnections)
        case .urlSession:
            URLSessionClient(maxConnections: maxConnections)
        }
    }
}

protocol BenchClient: Sendable {
    /// GETs `url`, reads the whole body and returns its length; throws unless the status is 200.
    func get(_ url: String) async throws -> Int
    func shutdown() async throws
}

struct BadStatus: Error, CustomStringConvertible {
    var url: String
    var status: Int
    var description: String { "GET \(self.url): status \(self.status)" }
}

/// This library with its defaults (session cache on), but for the trust roots and the pool size.
struct AgentClient: BenchClient {
    let agent: Agent

    init(caPath: String, maxConnections: Int) {
        self.agent = Agent(
            configuration: Agent.Configuration(
                maxSocketsPerHost: maxConnections,
                maxFreeSocketsPerHost: maxConnections,
                tls: TLSConfiguration(trustRoots: .file(caPath))
            )
        )
    }

    func get(_ url: String) async throws -> Int {
        let response = try await self.agent.get(url)
        guard response.status == .ok else { throw BadStatus(url: url, status: response.status.code) }
        return try await response.body.collect(upTo: 1 << 21).readableBytes
    }

    func shutdown() async throws {
        await self.agent.shutdown()
    }
}

/// AsyncHTTPClient with its defaults on the same event-loop group (NIO's singleton), but for the trust
/// roots and the pool size (its default is 8 connections per host).
struct AHCClient: BenchClient {
    let client: HTTPClient

    init(caPath: String, maxConnections: Int) throws {
        var tls = NIOSSL.TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.connectionPool = HTTPClient.Configuration.ConnectionPool(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: maxConnections
        )
        self.client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    func get(_ url: String) async throws -> Int {
        let response = try await self.client.execute(HTTPClientRequest(url: url), timeout: .seconds(30))
        guard response.status == .ok else { throw BadStatus(url: url, status: Int(response.status.code)) }
        return try await response.body.collect(upTo: 1 << 21).readableBytes
    }

    func shutdown() async throws {
        try await self.client.shutdown()
    }
}

/// URLSession from FoundationNetworking (libcurl on Linux), ephemeral, no cache. It trusts the test CA
/// through ``URLSessionTrust``.
struct URLSessionClient: BenchClient {
    let session: URLSession

    init(maxConnections: Int) {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = maxConnections
        configuration.urlCache = nil
        self.session = URLSession(configuration: configuration)
    }

    func get(_ url: String) async throws -> Int {
        let (data, response) = try await self.session.data(from: URL(string: url)!)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else { throw BadStatus(url: url, status: status) }
        return data.count
    }

    func shutdown() async throws {
        self.session.finishTasksAndInvalidate()
    }
}
