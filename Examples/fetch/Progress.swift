#if canImport(Glibc)
import Glibc
#endif

/// A download progress bar on standard error: bytes so far, the rate, and with a known length the
/// percentage, a bar and the time left.
///
/// It is redrawn in place with `\r`, at most ten times a second, and its line is ended with a newline by
/// ``finish()``. It is drawn only for a person watching a terminal: make it with
/// ``forStandardError(silent:verbose:bodyToTerminal:)``.
///
/// One transfer at a time: ``start(contentLength:)``, ``advance(by:)`` per chunk, then ``finish()``.
// Unchecked: fetch draws a bar only when transfers run one after another (no --parallel), so one task
// at a time uses it.
final class ProgressBar: @unchecked Sendable {
    /// The least time between two redraws.
    static let redrawInterval = Duration.milliseconds(100)
    /// Characters in the bar itself.
    static let barWidth = 20

    private let clock = ContinuousClock()
    private var contentLength: Int?
    private var bytes = 0
    private var startedAt: ContinuousClock.Instant?
    private var drawnAt: ContinuousClock.Instant?
    /// The length of the line last drawn, so that a shorter one can blank its tail.
    private var drawnWidth = 0

    private init() {}

    /// A bar when standard error is a terminal, and nothing else goes there: not with `-s` or `-v`, and
    /// not when the body goes to that terminal too, where the bar would garble it (curl's rule).
    ///
    /// - Parameters:
    ///   - silent: `-s` was given.
    ///   - verbose: `-v` was given.
    ///   - bodyToTerminal: the body goes to standard output and that is a terminal.
    /// - Returns: the bar, or `nil` when none should be drawn.
    static func forStandardError(silent: Bool, verbose: Bool, bodyToTerminal: Bool) -> ProgressBar? {
        guard Terminal.isTTY(STDERR_FILENO), !silent, !verbose, !bodyToTerminal else { return nil }
        return ProgressBar()
    }

    /// A transfer begins: its body is `contentLength` bytes long, if that is known.
    func start(contentLength: Int?) {
        self.contentLength = contentLength
        self.bytes = 0
        self.startedAt = self.clock.now
        self.drawnAt = nil
        self.drawnWidth = 0
        self.draw(final: false)
    }

    /// `count` more bytes of the body arrived.
    func advance(by count: Int) {
        guard let drawnAt = self.drawnAt else { return }
        self.bytes += count
        if drawnAt.duration(to: self.clock.now) >= Self.redrawInterval {
            self.draw(final: false)
        }
    }

    /// The transfer ended: draws the last state and ends the line. Does nothing if no transfer is under
    /// way, so it may be called again, e.g. from a `defer` for the error path.
    func finish() {
        guard self.startedAt != nil else { return }
        self.draw(final: true)
        Terminal.writeStandardError("\n")
        self.startedAt = nil
        self.drawnAt = nil
    }

    // MARK: - Drawing

    private func draw(final: Bool) {
        guard let startedAt = self.startedAt else { return }
        let now = self.clock.now
        self.drawnAt = now
        let elapsed = startedAt.duration(to: now).seconds
        let rate = elapsed > 0 ? Double(self.bytes) / elapsed : 0
        var line: String
        if let total = self.contentLength, total > 0 {
            let fraction = min(1, Double(self.bytes) / Double(total))
            let percent = String(Int(fraction * 100))
            let filled = Int(fraction * Double(Self.barWidth))
            line = String(repeating: " ", count: 3 - percent.count) + percent + "% ["
            line += String(repeating: "#", count: filled) + String(repeating: "-", count: Self.barWidth - filled)
            line += "] \(Self.size(self.bytes)) / \(Self.size(total))  \(Self.size(Int(rate)))/s"
            if final {
                line += "  in \(Self.clockTime(elapsed))"
            } else if rate > 0 {
                line += "  ETA \(Self.clockTime(Double(max(0, total - self.bytes)) / rate))"
            }
        } else {
            line = "\(Self.size(self.bytes))  \(Self.size(Int(rate)))/s"
            if final {
                line += "  in \(Self.clockTime(elapsed))"
            }
        }
        let padding = String(repeating: " ", count: max(0, self.drawnWidth - line.count))
        self.drawnWidth = line.count
        Terminal.writeStandardError("\r" + line + padding)
    }

    /// "512 B", "1.5 KiB", "20.0 MiB".
    static func size(_ bytes: Int) -> String {
        var value = Double(bytes)
        for unit in ["B", "KiB", "MiB", "GiB"] {
            if value < 1024 || unit == "GiB" {
                if unit == "B" { return "\(bytes) B" }
                let tenths = Int((value * 10).rounded())
                return "\(tenths / 10).\(tenths % 10) \(unit)"
            }
            value /= 1024
        }
        return "\(bytes) B"
    }

    /// "0:07", "12:30", "1:02:03".
    static func clockTime(_ seconds: Double) -> String {
        let whole = Int(seconds.rounded())
        let (hours, minutes, rest) = (whole / 3600, whole / 60 % 60, whole % 60)
        let secondsText = (rest < 10 ? "0" : "") + String(rest)
        if hours > 0 {
            return "\(hours):" + (minutes < 10 ? "0" : "") + "\(minutes):" + secondsText
        }
        return "\(minutes):" + secondsText
    }
}

extension Duration {
    /// Whole and fractional seconds.
    fileprivate var seconds: Double {
        let (seconds, attoseconds) = self.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
