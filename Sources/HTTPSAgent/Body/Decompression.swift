/// Whether the Agent asks for compressed responses and decodes them, and how far it lets a body grow
/// when decoded.
///
/// When enabled (the default), a request without an `Accept-Encoding` field is sent with
/// `Accept-Encoding: gzip, deflate`, and a response with `Content-Encoding: gzip` (or `x-gzip`) or
/// `deflate` (zlib-wrapped or raw) has its body decoded as it streams: nothing is buffered beyond one
/// received buffer's output. Such a response loses its `Content-Encoding` and `Content-Length`
/// fields, which describe the encoded bytes, and ``AgentResponse/decodedContentEncoding`` names the
/// encoding that was removed. ``RequestTiming/bodyBytesReceived`` counts the bytes as received and
/// ``RequestTiming/decodedBodyBytes`` the bytes delivered.
///
/// A request that sets its own `Accept-Encoding` gets the body exactly as the server sent it: whoever
/// asks for an encoding decodes it. This is the rule Go's `net/http` follows. A request with a `Range`
/// field is not given `Accept-Encoding`, and a `206` response is never decoded: a piece of a compressed
/// stream cannot be decoded on its own.
///
/// Limits guard against decompression bombs, a few kilobytes that decode to gigabytes. Going past
/// one fails the body with ``AgentError/Code/decompressionLimitExceeded`` and closes the connection.
public struct Decompression: Sendable, Hashable {
    /// Whether requests ask for and responses get decoding.
    public var isEnabled: Bool
    /// The most decoded bytes one body may produce; `nil` for no fixed cap.
    public var maxDecodedBytes: Int?
    /// The most decoded bytes per encoded byte, once a body has decoded to more than 1 MiB; `nil` for
    /// no ratio limit, and values below 1 count as 1. Text compresses 5 to 20 times, long runs of one
    /// byte up to 1,000 times.
    public var maxRatio: Int?

    /// Decoded bytes allowed whatever the ratio, so small, very repetitive documents always decode.
    let ratioFloor = 1 << 20

    /// Creates a setting.
    ///
    /// - Parameters:
    ///   - isEnabled: whether to ask for and decode compressed bodies.
    ///   - maxDecodedBytes: the most bytes one decoded body may have; `nil` for no fixed cap.
    ///   - maxRatio: the most decoded bytes per encoded byte beyond the first MiB; `nil` for none.
    public init(isEnabled: Bool, maxDecodedBytes: Int? = nil, maxRatio: Int? = 100) {
        self.isEnabled = isEnabled
        self.maxDecodedBytes = maxDecodedBytes
        self.maxRatio = maxRatio
    }

    /// gzip and deflate decoded, with a ratio limit of 100 beyond the first MiB and no fixed cap.
    public static let enabled = Decompression(isEnabled: true)

    /// Bodies are delivered as received and no `Accept-Encoding` is added.
    public static let disabled = Decompression(isEnabled: false)

    /// The value sent as `Accept-Encoding`.
    static let acceptEncoding = "gzip, deflate"

    /// The format to decode a response with `contentEncoding` in, if it is one this Agent asked for.
    static func format(contentEncoding: String) -> Inflater.Format? {
        switch contentEncoding.lowercased().filter({ $0 != " " && $0 != "\t" }) {
        case "gzip", "x-gzip": .gzip
        case "deflate": .deflate
        default: nil
        }
    }
}
