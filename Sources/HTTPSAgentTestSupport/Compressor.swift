internal import CZlib
import NIOCore

/// Compresses bytes the way servers do, so tests can serve gzip and deflate bodies.
package enum Compressor {
    package enum Format: Sendable {
        /// RFC 1952.
        case gzip
        /// RFC 1950: deflate inside a zlib header and checksum, as HTTP's "deflate" means.
        case zlib
        /// RFC 1951 alone, as some servers send "deflate".
        case rawDeflate
    }

    /// `bytes` compressed in one go, as one stream (one gzip member).
    package static func compress(_ bytes: [UInt8], format: Format, level: Int32 = 6) -> [UInt8] {
        let windowBits: Int32 =
            switch format {
            case .gzip: 15 + 16
            case .zlib: 15
            case .rawDeflate: -15
            }
        // zlib keeps a pointer back to its z_stream, so the struct needs a stable address.
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        defer {
            deflateEnd(stream)
            stream.deinitialize(count: 1)
            stream.deallocate()
        }
        precondition(cshim_deflateInit2(stream, level, windowBits) == Z_OK, "deflateInit2 failed")
        var output = [UInt8](repeating: 0, count: Int(deflateBound(stream, UInt(bytes.count))) + 64)
        var input = bytes
        let written = input.withUnsafeMutableBufferPointer { inputBuffer in
            output.withUnsafeMutableBufferPointer { outputBuffer in
                stream.pointee.next_in = inputBuffer.baseAddress
                stream.pointee.avail_in = UInt32(inputBuffer.count)
                stream.pointee.next_out = outputBuffer.baseAddress
                stream.pointee.avail_out = UInt32(outputBuffer.count)
                let result = deflate(stream, Z_FINISH)
                precondition(result == Z_STREAM_END, "deflate did not finish: \(result)")
                return outputBuffer.count - Int(stream.pointee.avail_out)
            }
        }
        return Array(output[0..<written])
    }
}
