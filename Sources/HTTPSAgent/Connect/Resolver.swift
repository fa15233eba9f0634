import HTTPSAgentTLS
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Resolves host names with the system resolver (`getaddrinfo`), on NIO's blocking-I/O thread pool so
/// that event loops never block on DNS.
struct SystemResolver: Sendable {
    let threadPool: NIOThreadPool

    init(threadPool: NIOThreadPool = .singleton) {
        self.threadPool = threadPool
    }

    /// The addresses of `host`, in the order the system prefers them (RFC 6724), without duplicates.
    /// An IP literal is returned as is, without a lookup.
    ///
    /// - Throws: ``AgentError`` with code ``AgentError/Code/dnsFailed``.
    func resolve(host: String, port: Int) async throws -> [SocketAddress] {
        if IPAddressLiteral.isIPAddress(host) {
            do {
                return [try SocketAddress(ipAddress: host, port: port)]
            } catch {
                throw Self.failure(host: host, port: port, reason: String(describing: error))
            }
        }
        let result = try await self.threadPool.runIfActive { Self.getaddrinfo(host: host, port: port) }
        switch result {
        case .success(let addresses) where !addresses.isEmpty:
            return addresses
        case .success:
            throw Self.failure(host: host, port: port, reason: "no addresses found")
        case .failure(let reason):
            throw Self.failure(host: host, port: port, reason: reason)
        }
    }

    private enum Lookup: Sendable {
        case success([SocketAddress])
        case failure(String)
    }

    private static func getaddrinfo(host: String, port: Int) -> Lookup {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        hints.ai_protocol = Int32(IPPROTO_TCP)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(host, String(port), &hints, &list)
        guard status == 0 else {
            return .failure(String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var cursor = list
        while let entry = cursor?.pointee {
            cursor = entry.ai_next
            guard let raw = entry.ai_addr else { continue }
            let address: SocketAddress
            switch entry.ai_family {
            case AF_INET:
                address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    SocketAddress($0.pointee, host: host)
                }
            case AF_INET6:
                address = raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    SocketAddress($0.pointee, host: host)
                }
            default:
                continue
            }
            if !addresses.contains(address) {
                addresses.append(address)
            }
        }
        return .success(addresses)
    }

    private static func failure(host: String, port: Int, reason: String) -> AgentError {
        AgentError(
            code: .dnsFailed,
            phase: .dns,
            host: host,
            port: port,
            message: "could not resolve \(host): \(reason)"
        )
    }
}
