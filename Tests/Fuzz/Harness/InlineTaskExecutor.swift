#if DEBUG
import NIOConcurrencyHelpers

/// A task executor that runs nothing by itself: its jobs wait until ``runQueued()`` runs them on the
/// calling thread.
///
/// Tasks started with it as their executor preference run on the fuzz harness's thread only, between
/// the harness's steps, so that one input always takes the same path: no thread pool, no timing.
/// Together with an `EmbeddedChannel` (whose event loop also runs on demand) the whole response path,
/// its async consumer included, runs deterministically on one thread.
final class InlineTaskExecutor: TaskExecutor, @unchecked Sendable {
    // Only ever used from the harness's thread; the lock is there in case a job is queued from
    // elsewhere, which would be a finding of its own (see `runQueued`).
    private let jobs = NIOLockedValueBox<[UnownedJob]>([])

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.jobs.withLockedValue { $0.append(job) }
    }

    /// Runs the queued jobs, and the jobs they queue, until none is left; returns whether it ran any.
    func runQueued() -> Bool {
        var ran = false
        while let job = self.jobs.withLockedValue({ $0.isEmpty ? nil : $0.removeFirst() }) {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
            ran = true
        }
        return ran
    }
}
#endif
