import HTTPSAgent
import HTTPTypes

/// Requests cancelled at random moments, and a shutdown in the middle of a load.
extension RequestPlan {
    /// Routes whose requests are cancelled: a head that takes 30 ms, a body spread over 40 ms, a small
    /// body and a large one, so that cancellations land while queued, while a connection is being
    /// dialled for the request, waiting for the head, and in the middle of a body.
    static let cancelledRoutes = ["/delay/30", "/slow/50000/40", "/bytes/2200", "/bytes/262144"]

    /// Sends request `n` from another task and cancels that task after a random 0–3 ms (most), or
    /// 0–60 ms (every third), which reaches into the 40 ms of a slow body.
    func sendAndCancel(_ n: Int, agent: Agent, into outcome: inout Outcome) async {
        // The c-th cancelled request: every route on every origin in turn, every third one cancelled later.
        let c = n / (self.cancelEvery ?? 1)
        let routes = Self.cancelledRoutes
        let url = self.urls[(c / routes.count) % self.urls.count] + routes[c % routes.count]
        let request = Task {
            let response = try await agent.get(url)
            _ = try await response.body.collect(upTo: 1 << 20)
        }
        let longest = c.isMultiple(of: 3) ? 60_000 : 3_000
        try? await Task.sleep(for: .microseconds(Int.random(in: 0...longest)))
        request.cancel()
        switch await request.result {
        case .success:
            outcome.finishedBeforeCancel += 1
        case .failure(let error as AgentError) where error.code == .cancelled:
            outcome.cancelled[error.phase.displayName, default: 0] += 1
        case .failure(let error):
            outcome.fail(
                "cancelled request: \(error is AgentError ? "\((error as! AgentError).code)" : "\(type(of: error))")",
                "\(url) cancelled: \(error)"
            )
        }
    }

    /// What a shutdown in the middle of a load came to.
    struct ShutdownOutcome: Sendable, Codable {
        var requests = 0
        /// How the requests in flight ended, by error code ("ok" for those that finished first).
        var endings: [String: Int] = [:]
        var shutdownSeconds = 0.0
    }

    /// Starts `tasks` slow requests, shuts the Agent down 50 ms later, and waits for every request.
    static func shutdownUnderLoad(_ agent: Agent, urls: [String], tasks: Int) async -> ShutdownOutcome {
        await withTaskGroup(of: String.self) { group in
            for n in 0..<tasks {
                let url = urls[n % urls.count] + (n.isMultiple(of: 2) ? "/delay/500" : "/slow/100000/500")
                group.addTask {
                    do {
                        let response = try await agent.get(url)
                        _ = try await response.body.collect(upTo: 1 << 20)
                        return "ok"
                    } catch let error as AgentError {
                        return error.code.description
                    } catch {
                        return String(describing: type(of: error))
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(50))
            let started = ContinuousClock.now
            await agent.shutdown()
            let took = ContinuousClock.now - started
            var outcome = ShutdownOutcome(requests: tasks)
            outcome.shutdownSeconds = Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18
            for await ending in group { outcome.endings[ending, default: 0] += 1 }
            return outcome
        }
    }
}
