/// Whether the Agent follows redirects, how many, and whether it may leave `https` for `http`.
///
/// With ``follow(max:allowHTTPSToHTTP:)`` (the default, 10 redirects), a `301`, `302`, `303`, `307` or
/// `308` response with a `Location` field is not returned: the Agent discards its body and sends the
/// next request, and returns the first response that is not such a redirect. The rules:
///
/// - `303` turns any method but `HEAD` into `GET` without a body; `301` and `302` turn `POST` into
///   `GET` without a body, as browsers, Go and `curl -L` do. The body's fields (`Content-Type`,
///   `Content-Length`, `Content-Encoding`, `Content-Language`, `Content-Location`, `Transfer-Encoding`,
///   `Expect`) go with it. Every other case keeps the method and the body.
/// - A request whose body must be sent again but was given as a stream (``RequestBody/stream(_:length:)``)
///   cannot be replayed: the redirect is then returned to the caller as it is.
/// - `Authorization`, `Proxy-Authorization` and `Cookie` are sent only to the origin of the first
///   request (its scheme, host and port), never to another one the chain leads to.
/// - `https` to `http` fails with ``AgentError/Code/insecureRedirect`` unless ``allowsHTTPSToHTTP``.
/// - The chain fails with ``AgentError/Code/tooManyRedirects`` past ``maxRedirects``, and with
///   ``AgentError/Code/redirectLoop`` when a redirect leads back to a request (method and URL) the chain
///   already made.
///
/// Why following is the default: a service calling an API wants the answer, not the redirect, and the
/// clients such services use (Go's `net/http`, AsyncHTTPClient, URLSession, OkHttp) follow by default;
/// Node's `http` and curl, which do not, are lower-level tools. The rules above keep what following
/// could leak or downgrade from happening silently. Pass ``disabled`` to get every response as sent,
/// for the whole Agent (``Agent/Configuration/redirects``) or one request
/// (``Agent/execute(_:body:observer:redirects:)``).
///
/// See <doc:Redirects>.
public struct RedirectPolicy: Sendable, Hashable {
    /// Whether redirects are followed at all.
    public var isEnabled: Bool
    /// The most redirects one request follows; the next one fails with
    /// ``AgentError/Code/tooManyRedirects``. curl: `--max-redirs`.
    public var maxRedirects: Int
    /// Whether a redirect from `https` to `http` is followed. Credentials are not sent to it either way,
    /// since it is another origin.
    public var allowsHTTPSToHTTP: Bool

    /// Follows up to `max` redirects.
    ///
    /// - Parameters:
    ///   - max: the most redirects one request follows; 0 makes any redirect fail with
    ///     ``AgentError/Code/tooManyRedirects``. Must not be negative.
    ///   - allowHTTPSToHTTP: whether to follow a redirect from `https` to `http`.
    /// - Returns: the policy.
    public static func follow(max: Int = 10, allowHTTPSToHTTP: Bool = false) -> RedirectPolicy {
        precondition(max >= 0, "a negative redirect limit: \(max)")
        return RedirectPolicy(isEnabled: true, maxRedirects: max, allowsHTTPSToHTTP: allowHTTPSToHTTP)
    }

    /// Redirects are returned to the caller like any other response.
    public static let disabled = RedirectPolicy(isEnabled: false, maxRedirects: 0, allowsHTTPSToHTTP: false)

    /// Ten redirects, never from `https` to `http`.
    public static let `default` = RedirectPolicy.follow()

    /// The most bytes of a redirect's body read and thrown away so that its connection can be reused; a
    /// longer body is dropped, which closes the connection, rather than read to its end.
    static let discardLimit = 64 * 1024
}
