import ArgumentParser
import HTTPSAgent

#if canImport(Glibc)
import Glibc
#endif

/// `fetch`'s TLS and session flags: trust roots, `-k`, a client certificate, and the TLS session cache
/// (off, or kept in a file across runs).
struct TLSOptions: ParsableArguments {
    @Option(
        name: .customLong("cacert"),
        help: ArgumentHelp("Trust the CA certificates in this PEM file instead of the system's.", valueName: "FILE")
    )
    var caCertificate: String?

    @Flag(
        name: [.customShort("k"), .customLong("insecure")],
        help: "Do not verify the server's certificate: the connection is then NOT authenticated."
    )
    var insecure = false

    @Option(
        name: .customLong("cert"),
        help: ArgumentHelp(
            "Present the client certificate chain (leaf first) in this PEM file when the server asks for one.",
            discussion: "Without --key, FILE must also hold the private key.",
            valueName: "FILE"
        )
    )
    var certificate: String?

    @Option(name: .customLong("key"), help: ArgumentHelp("The private key of --cert, PEM.", valueName: "FILE"))
    var privateKey: String?

    @Flag(
        name: .customLong("no-session-cache"),
        help: "Do not resume TLS sessions: every connection does a full handshake."
    )
    var noSessionCache = false

    @Option(
        name: .customLong("session-file"),
        help: ArgumentHelp(
            "Load TLS sessions from PATH (if it exists) and save them there at the end, so the next run resumes.",
            discussion: """
                The file is written with mode 0600 and holds session secrets: keep it as private as a key. \
                A file that cannot be read as a session file is ignored with a warning and left as it is. \
                Sessions made with --cert are not saved.
                """,
            valueName: "PATH"
        )
    )
    var sessionFile: String?

    func validate() throws {
        if self.privateKey != nil && self.certificate == nil {
            throw ValidationError("--key needs --cert: give the client certificate with --cert FILE")
        }
        if self.sessionFile != nil && self.noSessionCache {
            throw ValidationError("--session-file and --no-session-cache contradict each other: give one")
        }
        if let certificate = self.certificate {
            let text = try Self.readSmallFile(certificate, option: "--cert")
            if self.privateKey == nil && !text.contains("PRIVATE KEY-----") {
                throw ValidationError("--cert \(certificate) holds no private key: give it with --key FILE")
            }
        }
        if let privateKey = self.privateKey {
            _ = try Self.readSmallFile(privateKey, option: "--key")
        }
    }

    /// Puts the flags into `configuration`, loads the session file, and warns about `-k` (always, even
    /// with `-s`: nobody should forget that verification is off).
    ///
    /// - Returns: the session file to save at the end of the run (``SessionFile/save()``), whatever
    ///   happened to the transfers.
    func apply(to configuration: inout Agent.Configuration) -> SessionFile {
        if let caCertificate {
            configuration.tls.trustRoots = .file(caCertificate)
        }
        if self.insecure {
            configuration.tls.certificateVerification = .none
            Terminal.standardError(
                "fetch: WARNING: -k/--insecure: the server's certificate is not verified, so the connection is "
                    + "NOT authenticated: anyone on the path can pose as the server and read or change the traffic"
            )
        }
        if let certificate {
            configuration.tls.clientCertificate = .files(
                certificateChain: certificate,
                privateKey: self.privateKey ?? certificate
            )
        }
        if self.noSessionCache {
            configuration.sessionCache = nil
        }
        guard let path = self.sessionFile, let cache = configuration.sessionCache else {
            return SessionFile(path: nil, cache: nil)
        }
        return SessionFile.open(path, into: cache)
    }

    /// Reads a file of at most 1 MiB, or says in a validation error why it cannot.
    private static func readSmallFile(_ path: String, option: String) throws -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw ValidationError("\(option) \(path): cannot open it: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while bytes.count < 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else {
                throw ValidationError("\(option) \(path): cannot read it: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            bytes += chunk.prefix(count)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The `--session-file` of a run: loaded at the start, saved at the end.
///
/// A file that exists but is refused (corrupt, truncated, not a session file, or not private) is left
/// alone: the path may be a typo for some other file of the user's, and a file others can write to has
/// to be looked at by a person. The run goes on with an empty cache and does not save.
struct SessionFile {
    /// Where to save, or `nil` for nothing to do.
    let path: String?
    let cache: TLSSessionCache?

    /// Loads `path` into `cache` if the file exists; warns and gives up on the file if it is refused.
    static func open(_ path: String, into cache: TLSSessionCache) -> SessionFile {
        var info = stat()
        if lstat(path, &info) != 0 && errno == ENOENT {
            return SessionFile(path: path, cache: cache)  // the first run: save creates it
        }
        do {
            try cache.load(from: path)
            return SessionFile(path: path, cache: cache)
        } catch {
            Terminal.standardError(
                "fetch: warning: ignoring the \(error); starting without saved sessions and leaving the file as it is"
            )
            return SessionFile(path: nil, cache: nil)
        }
    }

    /// Writes the cache to the file (mode 0600, replaced atomically); a failure is a warning, not a
    /// failed run, since the transfers themselves are done.
    func save() {
        guard let path, let cache else { return }
        do {
            try cache.save(to: path)
        } catch {
            Terminal.standardError("fetch: warning: TLS sessions not saved: \(error)")
        }
    }
}
