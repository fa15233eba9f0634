// The continuations of the request path (pool leases, body reads). Debug builds, which run the tests,
// use checked continuations, which trap on a second resume and report one never resumed; release
// builds use unsafe ones, which skip those checks and the allocation they need on every wait.

#if DEBUG
typealias ThrowingContinuation<T> = CheckedContinuation<T, any Error>

func withThrowingContinuation<T>(_ body: (ThrowingContinuation<T>) -> Void) async throws -> T {
    try await withCheckedThrowingContinuation(body)
}
#else
typealias ThrowingContinuation<T> = UnsafeContinuation<T, any Error>

func withThrowingContinuation<T>(_ body: (ThrowingContinuation<T>) -> Void) async throws -> T {
    try await withUnsafeThrowingContinuation(body)
}
#endif
