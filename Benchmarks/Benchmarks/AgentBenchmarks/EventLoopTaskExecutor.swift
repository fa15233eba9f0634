import NIOCore

/// A task executor that runs jobs on one NIO event loop.
///
/// The benchmarks run their requests under this executor, on the loop that also runs the Agent's
/// connection and the server. A request then never wakes another thread: on a small, shared machine
/// those wake-ups cost more than the request itself, and their cost swings from run to run by far
/// more than any difference between the benchmarks.
final class EventLoopTaskExecutor: TaskExecutor {
    private let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        self.eventLoop.execute {
            job.runSynchronously(on: self.asUnownedTaskExecutor())
        }
    }
}
