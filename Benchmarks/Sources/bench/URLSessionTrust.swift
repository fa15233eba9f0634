import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// URLSession on Linux verifies servers through libcurl, which reads the CA bundle it was built with
/// (`/etc/ssl/certs/ca-certificates.crt`) and cannot be given another in code: FoundationNetworking
/// has no API for it, reads `URLSessionCertificateAuthorityInfoFile` only on Android, and libcurl
/// ignores `SSL_CERT_FILE`. So, as root, the benchmark runs itself in a private mount namespace
/// (`unshare --mount`) and bind-mounts, over that path, the system bundle plus the test CA. Nothing
/// outside this process sees the change, and it ends with the process.
enum URLSessionTrust {
    static let environmentKey = "HTTPS_AGENT_BENCH_MOUNT_NAMESPACE"
    static let systemBundle = "/etc/ssl/certs/ca-certificates.crt"

    /// Execs this program again under `unshare --mount` when that is possible and not done yet;
    /// returns only when it is not.
    static func reexecInPrivateMountNamespace() {
        guard ProcessInfo.processInfo.environment[Self.environmentKey] == nil, getuid() == 0,
            FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
            let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        else { return }
        setenv(Self.environmentKey, "1", 1)
        let arguments =
            ["/usr/bin/unshare", "--mount", "--propagation", "private", executable]
            + CommandLine.arguments.dropFirst()
        var cArguments = arguments.map { strdup($0) }
        cArguments.append(nil)
        execv("/usr/bin/unshare", cArguments)
        // Still here: exec failed; go on without URLSession.
        unsetenv(Self.environmentKey)
    }

    /// Makes libcurl trust `caPath` too. Returns why it could not, or `nil`.
    static func install(caPath: String, directory: String) -> String? {
        guard ProcessInfo.processInfo.environment[Self.environmentKey] == "1" else {
            return "URLSession cannot be told to trust the test CA on Linux without root and unshare"
        }
        guard FileManager.default.fileExists(atPath: Self.systemBundle) else {
            return "\(Self.systemBundle) does not exist (apt-get install -y ca-certificates)"
        }
        do {
            let system = try String(contentsOfFile: Self.systemBundle, encoding: .utf8)
            let test = try String(contentsOfFile: caPath, encoding: .utf8)
            let bundle = directory + "/curl-bundle.pem"
            try (system + "\n" + test).write(toFile: bundle, atomically: true, encoding: .utf8)
            let mount = Process()
            mount.executableURL = URL(fileURLWithPath: "/usr/bin/mount")
            mount.arguments = ["--bind", bundle, Self.systemBundle]
            mount.standardOutput = FileHandle.nullDevice
            mount.standardError = FileHandle.nullDevice
            try mount.run()
            mount.waitUntilExit()
            return mount.terminationStatus == 0 ? nil : "mount --bind over \(Self.systemBundle) failed"
        } catch {
            return "preparing the CA bundle for URLSession: \(error)"
        }
    }
}
