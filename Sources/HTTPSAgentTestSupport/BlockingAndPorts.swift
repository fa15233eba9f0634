import Foundation

/// Runs `body`, which blocks (waits for a subprocess, reads a pipe to its end), on a thread of its own.
///
/// Swift concurrency runs every test on as many threads as there are cores, two on CI. A test that
/// blocks one of them stalls every other test's continuations, timers included, for as long as it
/// blocks; under a parallel run that turns into spurious timeouts far from the blocking test.
package func runBlocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// Stops a process started under `timeout(1)`. `timeout` puts itself and its child in a process group
/// of their own, so SIGKILL to that group ends both at once, whatever signals the spawning thread had
/// blocked (and so passed on). The process is reaped by Foundation on its own thread; nothing here
/// waits for that, so that callers on the concurrency pool never block.
func stopProcessUnderTimeout(_ process: Process) {
    guard process.isRunning else { return }
    kill(-process.processIdentifier, SIGKILL)
    kill(process.processIdentifier, SIGKILL)
}

/// Binds `descriptor` to a free port on 127.0.0.1 and returns the port, or `nil` if `bind` fails.
func bindToFreeLoopbackPort(_ descriptor: Int32) -> Int? {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
    }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    guard bound == 0, named == 0 else { return nil }
    return Int(UInt16(bigEndian: address.sin_port))
}
