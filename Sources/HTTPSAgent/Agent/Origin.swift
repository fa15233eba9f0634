/// The key of a connection pool: everything that must be equal for two requests to share a connection.
///
/// A connection is only ever reused for a request with an equal origin: same scheme, same normalised
/// host, same port, and (for `https`) an equal ``TLSConfiguration``, so trust roots, verification mode,
/// versions and client certificate all take part. A missed match costs a new connection; a false
/// match would send a request to a server verified under other rules, so every field is compared.
struct Origin: Sendable, Hashable, CustomStringConvertible {
    enum Scheme: String, Sendable, Hashable {
        case http
        case https

        var defaultPort: Int { self == .https ? 443 : 80 }
    }

    var scheme: Scheme
    /// Lower-cased, without a trailing dot, without IPv6 brackets.
    var host: String
    var port: Int
    /// `nil` for `http`.
    var tls: TLSConfiguration?

    /// Scheme, host and port only. Equality still compares the TLS configuration too; leaving it out
    /// of the hash keeps PEM text from being hashed on every lease and release, and the origins of one
    /// Agent share one configuration anyway.
    func hash(into hasher: inout Hasher) {
        hasher.combine(self.scheme)
        hasher.combine(self.host)
        hasher.combine(self.port)
    }

    var description: String {
        let shownHost = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "\(self.scheme.rawValue)://\(shownHost):\(self.port)"
    }
}
