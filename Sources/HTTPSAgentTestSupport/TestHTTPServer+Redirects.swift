import NIOCore
import NIOHTTP1

/// Routes for redirect tests:
///
/// - `/redirect/CODE?to=REF`: status CODE with `Location: REF` (REF percent-decoded from the query, so
///   it can be absolute, `//host/p`, `/p`, `p`, `?q`…) and a short body. `&size=N` sends N body bytes
///   instead, with a Content-Length, or chunked with `&chunked=1`.
/// - `/chain/N`: a `302` to `/chain/N-1` (keeping the query), until `/chain/0` answers 200 "chain done";
///   `?code=C` uses status C for the redirects.
/// - `/loop/a` and `/loop/b`: `302`s to each other, by relative references; `/loop/NAME` redirects to
///   itself.
/// - `/inspect`: 200 with `X-Request-Method`, and a body of the request line, the header fields one per
///   line, a blank line and the request body: what a redirected request arrived with.
extension TestServerHandler {
    func respondRedirectRoute(
        _ route: String,
        parts: [String],
        request: HTTPRequestHead,
        context: ChannelHandlerContext,
        close: Bool
    ) {
        let query = Self.query(of: request.uri)
        // A HEAD response has the fields of the GET response and no body.
        let withBody = request.method != .HEAD
        switch route {
        case "redirect":
            let code = parts.count > 1 ? Int(parts[1]) ?? 302 : 302
            let size = query["size"].flatMap { Int($0) }
            let body = size.map { Self.payload($0) } ?? ByteBuffer(string: "redirecting")
            self.redirect(
                context,
                code: code,
                to: query["to"] ?? "/",
                body: body,
                chunked: query["chunked"] == "1",
                withBody: withBody,
                close: close
            )
        case "chain":
            let remaining = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            guard remaining > 0 else {
                self.send(context, body: ByteBuffer(string: "chain done"), close: close)
                return
            }
            let rest = request.uri.firstIndex(of: "?").map { String(request.uri[$0...]) } ?? ""
            let code = query["code"].flatMap { Int($0) } ?? 302
            self.redirect(context, code: code, to: "/chain/\(remaining - 1)\(rest)", withBody: withBody, close: close)
        case "loop":
            let name = parts.count > 1 ? parts[1] : "a"
            let next = name == "a" ? "b" : name == "b" ? "a" : name
            self.redirect(context, code: 302, to: next, withBody: withBody, close: close)
        default:
            var text = "\(request.method.rawValue) \(request.uri)\n"
            for (name, value) in request.headers { text += "\(name): \(value)\n" }
            text += "\n"
            var body = ByteBuffer(string: text)
            var received = self.requestBody
            body.writeBuffer(&received)
            var head = self.head(.ok, close: close)
            head.headers.add(name: "X-Request-Method", value: request.method.rawValue)
            head.headers.add(name: "Content-Length", value: String(body.readableBytes))
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            if withBody {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            }
            self.finish(context, close: close)
        }
    }

    private func redirect(
        _ context: ChannelHandlerContext,
        code: Int,
        to location: String,
        body: ByteBuffer = ByteBuffer(string: "redirecting"),
        chunked: Bool = false,
        withBody: Bool,
        close: Bool
    ) {
        var head = self.head(HTTPResponseStatus(statusCode: code), close: close)
        head.headers.add(name: "Location", value: location)
        if chunked {
            head.headers.add(name: "Transfer-Encoding", value: "chunked")
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            var rest = withBody ? body : ByteBuffer()
            while rest.readableBytes > 0, let piece = rest.readSlice(length: min(rest.readableBytes, 16 * 1024)) {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(piece))), promise: nil)
            }
            self.finish(context, close: close)
        } else {
            head.headers.add(name: "Content-Length", value: String(body.readableBytes))
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
            if withBody {
                context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            }
            self.finish(context, close: close)
        }
    }

    /// The query's `name=value` pairs, percent-decoded.
    private static func query(of uri: String) -> [String: String] {
        guard let mark = uri.firstIndex(of: "?") else { return [:] }
        var result: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let name = pair.prefix { $0 != "=" }
            let value = pair.dropFirst(name.count + 1)
            result[Self.percentDecoded(name)] = Self.percentDecoded(value)
        }
        return result
    }

    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
