import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where bodies go: standard output or a file, written whole buffer by whole buffer.
///
/// Transfers running in parallel share one sink, so each `write` holds a lock until its buffer is out.
final class OutputSink: Sendable {
    struct WriteError: Error, CustomStringConvertible {
        var description: String
    }

    private let descriptor: Int32
    private let ownsDescriptor: Bool
    private let lock = Mutex(())
    /// What the sink writes to, for messages: a path or "standard output".
    let name: String

    /// Opens `path` for writing (created or truncated), or standard output when `path` is nil or "-".
    init(path: String?) throws(WriteError) {
        if let path, path != "-" {
            let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                throw WriteError(description: "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            self.descriptor = descriptor
            self.ownsDescriptor = true
            self.name = path
        } else {
            self.descriptor = STDOUT_FILENO
            self.ownsDescriptor = false
            self.name = "standard output"
        }
    }

    /// - Throws: ``WriteError``.
    func write(_ buffer: ByteBuffer) throws {
        try buffer.withUnsafeReadableBytes { try self.write($0) }
    }

    /// - Throws: ``WriteError``.
    func write(_ text: String) throws {
        var text = text
        try text.withUTF8 { try self.write(UnsafeRawBufferPointer($0)) }
    }

    private func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        try self.lock.withLock { _ in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(self.descriptor, base + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw WriteError(description: "cannot write to \(self.name): \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
    }

    deinit {
        if self.ownsDescriptor {
            Glibc.close(self.descriptor)
        }
    }
}

/// Small terminal helpers.
enum Terminal {
    static func isTTY(_ descriptor: Int32) -> Bool { isatty(descriptor) == 1 }

    /// Writes `line` and a newline to standard error in one call, so lines from parallel transfers
    /// never mix.
    static func standardError(_ line: String) {
        Self.writeAll(STDERR_FILENO, line + "\n")
    }

    /// Writes `text` as is, unbuffered, so that it stays in order with bodies written to standard output.
    static func standardOutput(_ text: String) {
        Self.writeAll(STDOUT_FILENO, text)
    }

    /// Writes `text` to standard error as it is, in one piece (no line feed added).
    static func writeStandardError(_ text: String) {
        Self.writeAll(STDERR_FILENO, text)
    }

    private static func writeAll(_ descriptor: Int32, _ text: String) {
        var text = text
        text.withUTF8 { bytes in
            guard let base = bytes.baseAddress else { return }
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(descriptor, base + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                offset += written
            }
        }
    }

    static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let value = Double(seconds) * 1000 + Double(attoseconds) / 1e15
        let rounded = (value * 10).rounded() / 10
        return "\(rounded) ms"
    }
}
