/// One fuzz input, decoded: how the client behaves, and the server's bytes cut into reads.
///
/// Layout (every input is valid; missing bytes count as zero):
///
/// | bytes | meaning |
/// | --- | --- |
/// | 0 | options, see ``Options`` |
/// | 1 | the number of cuts, `k = byte & 7` |
/// | 2 ..< 2 + 2k | each cut: a big-endian offset into the server's bytes (modulo their length + 1) |
/// | the rest | the server's bytes, delivered as reads that end at the cuts |
///
/// The seed corpus (`Tests/Fuzz/corpus`, from ``FuzzSeeds``) is in this layout.
public struct FuzzInput: Sendable {
    /// How the client side behaves, from the first byte.
    public struct Options: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// Bits 0-1: how the caller reads each body (see ``Reader``).
        static let readerMask = Options(rawValue: 0b11)
        /// The requests are `HEAD`: a response to them has no body, whatever it declares.
        public static let head = Options(rawValue: 1 << 2)
        /// Decompression off: no `Accept-Encoding`, bodies are delivered as received.
        public static let noDecompression = Options(rawValue: 1 << 3)
        /// Small limits: a head of at most 512 bytes and 8 fields, at most 64 KiB decoded.
        public static let tightLimits = Options(rawValue: 1 << 4)
        /// The Agent does not keep connections alive: requests say `Connection: close`.
        public static let noKeepAlive = Options(rawValue: 1 << 5)
        /// The connection ends with a reset (ECONNRESET) instead of a close.
        public static let endWithReset = Options(rawValue: 1 << 6)
        /// The request's deadline (`requestTimeout`) passes after the last read, before the end.
        public static let deadlinePasses = Options(rawValue: 1 << 7)
    }

    /// How the caller reads a response's body.
    public enum Reader: UInt8, Sendable {
        /// Iterates it to the end.
        case iterate = 0
        /// `collect(upTo: 4096)`.
        case collect = 1
        /// Takes one buffer, then drops the response.
        case takeOneThenDrop = 2
        /// Cancels its task once the head is in, then iterates.
        case cancelAfterHead = 3
    }

    public var options: Options
    /// The server's bytes, one element per read.
    public var reads: [[UInt8]]

    public var reader: Reader { Reader(rawValue: self.options.rawValue & Options.readerMask.rawValue)! }

    public init(_ bytes: some Collection<UInt8>) {
        var rest = bytes[...]
        self.options = Options(rawValue: rest.popFirst() ?? 0)
        let cutCount = Int((rest.popFirst() ?? 0) & 7)
        var offsets: [Int] = []
        for _ in 0..<cutCount {
            let high = Int(rest.popFirst() ?? 0)
            let low = Int(rest.popFirst() ?? 0)
            offsets.append(high << 8 | low)
        }
        let data = Array(rest)
        let cuts = Set(offsets.map { $0 % (data.count + 1) }).sorted()
        var reads: [[UInt8]] = []
        var start = 0
        for cut in cuts + [data.count] where cut > start {
            reads.append(Array(data[start..<cut]))
            start = cut
        }
        self.reads = reads
    }

    /// Encodes an input, e.g. for the seed corpus: `cuts` are offsets into `data`.
    public static func encode(options: Options, cuts: [Int] = [], data: [UInt8]) -> [UInt8] {
        precondition(cuts.count <= 7 && cuts.allSatisfy { $0 >= 0 && $0 <= UInt16.max })
        var bytes = [options.rawValue, UInt8(cuts.count)]
        for cut in cuts {
            bytes.append(UInt8(cut >> 8))
            bytes.append(UInt8(cut & 0xFF))
        }
        return bytes + data
    }
}
