import ArgumentParser
import HTTPSAgent

/// curl's `-L/--location` and `--max-redirs`: whether the Agent follows redirects for fetch.
///
/// As in curl, fetch does not follow redirects unless given `-L`: the 3xx response is the result, its
/// body written like any other. With `-L` the Agent follows up to `--max-redirs` (curl's default, 50)
/// and refuses `https` to `http` unless `--redirect-to-http` is given, where curl would follow.
struct RedirectOptions: ParsableArguments {
    @Flag(
        name: [.customShort("L"), .customLong("location")],
        help: ArgumentHelp(
            "Follow redirects (301, 302, 303, 307, 308).",
            discussion: """
                303, and 301/302 after a POST, continue as GET without the body; 307 and 308 resend it. \
                Authorization and Cookie go to the first URL's origin only; https to http is refused \
                unless --redirect-to-http. Exit 47 after too many redirects or on a loop.
                """
        )
    )
    var location = false

    // Unconditional, so that curl's `--max-redirs -1` reads -1 as the value rather than a flag.
    @Option(
        name: .customLong("max-redirs"),
        parsing: .unconditional,
        help: ArgumentHelp("With -L, follow at most N redirects (default 50; -1: no limit).", valueName: "N")
    )
    var maxRedirs = 50

    @Flag(
        name: .customLong("redirect-to-http"),
        help: "With -L, also follow a redirect from https to http (curl does by default)."
    )
    var redirectToHTTP = false

    func validate() throws {
        if self.maxRedirs < -1 { throw ValidationError("--max-redirs must be -1 (no limit) or more") }
    }

    /// Sets the Agent's redirect policy: none without -L.
    func apply(to configuration: inout Agent.Configuration) {
        configuration.redirects =
            self.location
            ? .follow(max: self.maxRedirs < 0 ? Int.max : self.maxRedirs, allowHTTPSToHTTP: self.redirectToHTTP)
            : .disabled
    }

    /// curl's exit code for a redirect the Agent refused, if `error` is one.
    static func curlExitCode(for error: AgentError) -> Int32? {
        switch error.code {
        // CURLE_TOO_MANY_REDIRECTS; a loop would reach the limit in curl.
        case .tooManyRedirects, .redirectLoop: 47
        // CURLE_UNSUPPORTED_PROTOCOL, as curl with --proto-redir refusing http.
        case .insecureRedirect: 1
        // CURLE_URL_MALFORMAT.
        case .invalidRedirect: 3
        default: nil
        }
    }
}
