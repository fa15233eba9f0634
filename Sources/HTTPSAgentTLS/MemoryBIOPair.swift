internal import COpenSSL
import NIOCore

/// The two memory BIOs an `SSL` reads ciphertext from and writes ciphertext to.
///
/// Why memory BIOs and not a socket BIO: the socket belongs to SwiftNIO, which reads and writes it
/// without blocking on its own event loop. OpenSSL only ever sees bytes we hand it (`feed`) and gives
/// back bytes we then write to the channel (`drain`); it never touches a file descriptor. A memory BIO
/// that runs dry reports "retry" rather than end-of-file, so OpenSSL answers `SSL_ERROR_WANT_READ` and
/// waits for the next `channelRead`. End-of-file is the channel's business: `TLSHandler` sees
/// `channelInactive` and decides whether the close was clean.
///
/// The pair does not own the BIOs: `SSL_set_bio` hands both to the `SSL`, and `SSL_free` frees them.
struct MemoryBIOPair {
    let incoming: OpaquePointer
    let outgoing: OpaquePointer

    init() throws(TLSSetupError) {
        guard let incoming = BIO_new(BIO_s_mem()) else {
            throw TLSSetupError(operation: "allocating the read BIO")
        }
        guard let outgoing = BIO_new(BIO_s_mem()) else {
            BIO_free(incoming)
            throw TLSSetupError(operation: "allocating the write BIO")
        }
        _ = cshim_BIO_set_mem_eof_return(incoming, -1)
        _ = cshim_BIO_set_mem_eof_return(outgoing, -1)
        self.incoming = incoming
        self.outgoing = outgoing
    }

    /// Appends ciphertext received from the network.
    func feed(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes in
            guard bytes.count > 0 else { return }
            // A memory BIO grows as needed; a write only fails when allocation does.
            let written = BIO_write(self.incoming, bytes.baseAddress, Int32(bytes.count))
            precondition(written == Int32(bytes.count), "BIO_write to a memory BIO failed")
        }
    }

    /// Ciphertext OpenSSL produced since the last call, or `nil` when there is none.
    func drain(allocator: ByteBufferAllocator) -> ByteBuffer? {
        let pending = BIO_ctrl_pending(self.outgoing)
        guard pending > 0 else { return nil }
        var buffer = allocator.buffer(capacity: pending)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { pointer in
            Int(BIO_read(self.outgoing, pointer.baseAddress, Int32(pending)))
        }
        return buffer
    }
}
