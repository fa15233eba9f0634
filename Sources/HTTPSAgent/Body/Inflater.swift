internal import CZlib
import NIOCore

/// Decodes a gzip or deflate body as its buffers arrive, with a cap on what it will produce.
///
/// The only file that calls zlib. One owner (a body's iterator) drives it from one task at a time;
/// it owns its `z_stream` and ends it in `deinit`.
final class Inflater {
    enum Format: Sendable, Hashable {
        /// RFC 1952; several members in a row are decoded one after the other, as gunzip does.
        case gzip
        /// RFC 1950 (zlib-wrapped), as the HTTP spec says, or raw RFC 1951, as some servers send:
        /// told apart by the first two bytes.
        case deflate
    }

    struct Failure: Error {
        enum Kind { case corrupt, limitExceeded }
        var kind: Kind
        var message: String
    }

    private let stream: UnsafeMutablePointer<z_stream>
    private let format: Format
    private let limits: Decompression
    private var started = false
    /// Between gzip members, or after the end of a deflate stream.
    private var atStreamEnd = false
    /// Encoded bytes consumed so far.
    private(set) var encodedBytes = 0
    /// Decoded bytes produced so far.
    private(set) var decodedBytes = 0

    /// zlib's window size, the largest there is: any conforming stream decodes with it.
    private static let windowBits: Int32 = 15
    private static let outputPiece = 16_384

    init(format: Format, limits: Decompression) {
        self.format = format
        self.limits = limits
        self.stream = .allocate(capacity: 1)
        self.stream.initialize(to: z_stream())
    }

    deinit {
        if self.started {
            inflateEnd(self.stream)
        }
        self.stream.deinitialize(count: 1)
        self.stream.deallocate()
    }

    /// Encoded bytes given with ``feed(_:)`` and not yet taken by zlib.
    private var pending = ByteBuffer()
    /// Whether the last inflate call filled all the space it had: zlib may hold more output.
    private var outputMayBeWaiting = false

    /// Whether ``produce(upTo:)`` has nothing left to work on until the next ``feed(_:)``.
    var needsInput: Bool {
        (self.pending.readableBytes == 0 && !self.outputMayBeWaiting) || self.awaitingDeflateHeader
    }

    /// A deflate body's first byte arrived alone: the second is needed to tell zlib-wrapped from raw.
    private var awaitingDeflateHeader: Bool {
        !self.started && self.format == .deflate && self.pending.readableBytes == 1
    }

    /// Hands over the next encoded buffer. Call only when ``needsInput``.
    func feed(_ input: ByteBuffer) {
        if self.pending.readableBytes == 0 {
            self.pending = input
        } else {
            // Only a lone first byte of a deflate body waits here for the next buffer.
            var input = input
            self.pending.writeBuffer(&input)
        }
    }

    /// Decodes from the input fed so far and returns up to `maxBytes` decoded bytes, possibly none
    /// (when the input held only headers, or ended a gzip member).
    func produce(upTo maxBytes: Int) throws(Failure) -> ByteBuffer {
        var output = ByteBuffer()
        if self.awaitingDeflateHeader { return output }
        let input = self.pending
        let failure = input.withUnsafeReadableBytes { bytes -> Failure? in
            do throws(Failure) {
                let consumed = try self.decode(bytes, into: &output, maxOutput: maxBytes)
                self.pending.moveReaderIndex(forwardBy: consumed)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
        if self.pending.readableBytes == 0 {
            self.pending = ByteBuffer()
        }
        return output
    }

    /// Checks, once the body has ended, that the encoded stream ended too.
    func finish() throws(Failure) {
        if self.awaitingDeflateHeader {
            throw Failure(kind: .corrupt, message: "the deflate stream ends after one byte: the body was cut short")
        }
        guard self.started else {
            // An empty body is an empty document, whatever its declared encoding.
            return
        }
        guard self.atStreamEnd else {
            throw Failure(kind: .corrupt, message: "the \(self.name) stream ends early: the body was cut short")
        }
    }

    private var name: String { self.format == .gzip ? "gzip" : "deflate" }

    /// Inflates from `bytes` until `maxOutput` bytes came out or the input is used up; returns how
    /// many input bytes zlib took.
    private func decode(
        _ bytes: UnsafeRawBufferPointer,
        into output: inout ByteBuffer,
        maxOutput: Int
    ) throws(Failure) -> Int {
        guard bytes.count > 0, let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            // No input: only output zlib still holds.
            if self.started && !self.atStreamEnd {
                try self.inflate(next: nil, count: 0, into: &output, maxOutput: maxOutput)
            } else {
                self.outputMayBeWaiting = false
            }
            return 0
        }
        var offset = 0
        while offset < bytes.count && output.readableBytes < maxOutput {
            let next = base + offset
            let remaining = bytes.count - offset
            if self.atStreamEnd {
                guard self.format == .gzip else {
                    throw Failure(kind: .corrupt, message: "bytes follow the end of the deflate stream")
                }
                // Some servers pad a gzip body with zeros; anything else must be a new member.
                if UnsafeBufferPointer(start: next, count: remaining).allSatisfy({ $0 == 0 }) {
                    self.encodedBytes += remaining
                    return bytes.count
                }
                inflateReset(self.stream)
                self.atStreamEnd = false
            }
            if !self.started {
                try self.start(first: next, count: remaining)
            }
            let consumed = try self.inflate(next: next, count: remaining, into: &output, maxOutput: maxOutput)
            offset += consumed
            if consumed == 0 && output.readableBytes == 0 && !self.atStreamEnd {
                // zlib took nothing and produced nothing: it cannot make progress with this input.
                throw Failure(kind: .corrupt, message: "the \(self.name) data cannot be decoded")
            }
        }
        return offset
    }

    private func start(first: UnsafePointer<UInt8>, count: Int) throws(Failure) {
        let bits: Int32
        switch self.format {
        case .gzip:
            bits = Self.windowBits + 16
        case .deflate:
            // A zlib header: compression method 8 and a header checksum divisible by 31.
            let isZlib =
                count >= 2 && first[0] & 0x0F == 8 && (UInt16(first[0]) << 8 | UInt16(first[1])) % 31 == 0
            bits = isZlib ? Self.windowBits : -Self.windowBits
        }
        guard cshim_inflateInit2(self.stream, bits) == Z_OK else {
            throw Failure(kind: .corrupt, message: "zlib could not start (out of memory)")
        }
        self.started = true
    }

    /// Runs inflate over `count` bytes at `next` until they are used up, the stream ends, or
    /// `maxOutput` bytes are out; returns how many input bytes zlib took.
    @discardableResult
    private func inflate(
        next: UnsafePointer<UInt8>?,
        count: Int,
        into output: inout ByteBuffer,
        maxOutput: Int
    ) throws(Failure) -> Int {
        self.stream.pointee.next_in = next.map { UnsafeMutablePointer(mutating: $0) }
        self.stream.pointee.avail_in = UInt32(min(count, Int(UInt32.max)))
        let given = Int(self.stream.pointee.avail_in)
        defer {
            self.stream.pointee.next_in = nil
            self.stream.pointee.avail_in = 0
        }
        while output.readableBytes < maxOutput {
            var result: Int32 = Z_OK
            let availableBefore = Int(self.stream.pointee.avail_in)
            let room = min(Self.outputPiece, maxOutput - output.readableBytes)
            var filled = false
            let produced = output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { space in
                self.stream.pointee.next_out = space.baseAddress!.assumingMemoryBound(to: UInt8.self)
                self.stream.pointee.avail_out = UInt32(room)
                result = CZlib.inflate(self.stream, Z_NO_FLUSH)
                filled = self.stream.pointee.avail_out == 0
                return room - Int(self.stream.pointee.avail_out)
            }
            self.decodedBytes += produced
            self.encodedBytes += availableBefore - Int(self.stream.pointee.avail_in)
            self.outputMayBeWaiting = filled
            try self.checkLimits()
            switch result {
            case Z_STREAM_END:
                self.atStreamEnd = true
                self.outputMayBeWaiting = false
                return given - Int(self.stream.pointee.avail_in)
            case Z_OK:
                // Go on while zlib fills all the space it is given: more output may be waiting.
                if self.stream.pointee.avail_in == 0 && !filled {
                    return given
                }
            case Z_BUF_ERROR:
                // No progress possible without more input.
                self.outputMayBeWaiting = false
                return given - Int(self.stream.pointee.avail_in)
            default:
                let detail = self.stream.pointee.msg.map { String(cString: $0) } ?? "error \(result)"
                throw Failure(kind: .corrupt, message: "the \(self.name) data is corrupt: \(detail)")
            }
        }
        return given - Int(self.stream.pointee.avail_in)
    }

    private func checkLimits() throws(Failure) {
        if let maxBytes = self.limits.maxDecodedBytes, self.decodedBytes > maxBytes {
            throw Failure(
                kind: .limitExceeded,
                message: "the decoded body is larger than the \(maxBytes) bytes allowed"
            )
        }
        // A ratio below 1 would allow nothing past the floor (and divide by zero): it counts as 1.
        if let ratio = self.limits.maxRatio.map({ max($0, 1) }), self.decodedBytes > self.limits.ratioFloor,
            self.decodedBytes / ratio > self.encodedBytes
        {
            throw Failure(
                kind: .limitExceeded,
                message: "the body decodes to more than \(ratio) times its \(self.name) size (a decompression bomb?)"
            )
        }
    }
}
