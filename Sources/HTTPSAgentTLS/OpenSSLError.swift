internal import COpenSSL

/// One entry of OpenSSL's thread-local error queue, in words.
package struct OpenSSLErrorEntry: Sendable, Hashable, CustomStringConvertible {
    /// OpenSSL's packed error code.
    package var code: UInt
    /// The reason in words, e.g. "certificate verify failed".
    package var reason: String
    /// The whole line as OpenSSL formats it, e.g. "error:0A000086:SSL routines::certificate verify failed".
    package var line: String

    package var description: String { self.line }

    /// The number of the TLS alert the peer sent, if this entry records one (e.g. 116,
    /// `certificate_required`); `nil` for an error found on this side.
    package var receivedAlert: Int? {
        let alert = cshim_ERR_received_alert(self.code)
        return alert < 0 ? nil : Int(alert)
    }
}

/// Drains OpenSSL's error queue into Swift values.
///
/// OpenSSL keeps errors in a queue per thread. Event-loop threads serve many connections, so an error
/// left in the queue would be blamed on the next connection that fails on this thread. Every call that
/// can fail clears the queue before it runs and drains it right after it fails, here and only here.
enum OpenSSLErrorQueue {
    /// Empties the queue, discarding anything a previous call left behind.
    static func clear() {
        ERR_clear_error()
    }

    /// Removes and returns every entry in the queue, oldest first.
    static func drain() -> [OpenSSLErrorEntry] {
        var entries: [OpenSSLErrorEntry] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            entries.append(Self.entry(for: code))
        }
        return entries
    }

    static func entry(for code: UInt) -> OpenSSLErrorEntry {
        var buffer = [CChar](repeating: 0, count: 256)
        buffer.withUnsafeMutableBufferPointer { pointer in
            ERR_error_string_n(code, pointer.baseAddress, pointer.count)
        }
        let line = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let reason = ERR_reason_error_string(code).map { String(cString: $0) } ?? line
        return OpenSSLErrorEntry(code: code, reason: reason, line: line)
    }
}

/// A failure while building an `SSL_CTX` or another OpenSSL object from a configuration.
package struct TLSSetupError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What we were doing, e.g. "loading the trust roots from /etc/ca.pem".
    package var operation: String
    /// The OpenSSL errors that explain the failure (may be empty).
    package var openSSLErrors: [OpenSSLErrorEntry]

    package init(operation: String, openSSLErrors: [OpenSSLErrorEntry] = OpenSSLErrorQueue.drain()) {
        self.operation = operation
        self.openSSLErrors = openSSLErrors
    }

    package var description: String {
        if let last = self.openSSLErrors.last {
            return "\(self.operation) failed: \(last.reason)"
        }
        return "\(self.operation) failed"
    }
}
