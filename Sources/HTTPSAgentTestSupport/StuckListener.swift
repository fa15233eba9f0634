#if canImport(Glibc)
import Glibc
#endif

/// A loopback port where TCP connects hang: it listens with a backlog of one, already taken by a
/// connection nobody accepts, so the kernel drops further SYNs. Stands in for an unreachable address
/// without sending anything off the machine.
package final class StuckListener: @unchecked Sendable {
    private let listener: Int32
    private let filler: Int32
    /// The port connects hang on (on 127.0.0.1).
    package let port: Int

    package init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw Failure(step: "socket") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
        }
        guard bound == 0, listen(listener, 0) == 0 else {
            close(listener)
            throw Failure(step: "bind/listen")
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        // Fill the one-slot accept queue.
        let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard filler >= 0, connected == 0 else {
            close(listener)
            if filler >= 0 { close(filler) }
            throw Failure(step: "filling the accept queue")
        }
        self.listener = listener
        self.filler = filler
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit {
        close(self.filler)
        close(self.listener)
    }

    struct Failure: Error, CustomStringConvertible {
        var step: String
        var description: String { "could not set up a stuck listener: \(self.step) failed" }
    }
}
