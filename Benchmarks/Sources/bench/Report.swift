import Foundation

/// The table of medians, in Markdown, with each client's ratio to this library's.
enum Report {
    static func table(scenarios: [Scenario], clients: [ClientKind], results: [Key: [RunResult]]) -> String {
        var lines = [
            "| Scenario | Requests | Client | ms/request | × HTTPSAgent | CPU µs/request | × HTTPSAgent | Connections | Resumed |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for scenario in scenarios {
            let baseline = results[Key(scenario: scenario.name, client: .agent)] ?? []
            let baseWall = self.median(baseline.map(\.wallMilliseconds))
            let baseCPU = self.median(baseline.map(\.cpuMicroseconds))
            for client in clients {
                let runs = results[Key(scenario: scenario.name, client: client)] ?? []
                guard !runs.isEmpty else {
                    lines.append("| \(scenario.name) | \(scenario.requests) | \(client.rawValue) | failed | | | | | |")
                    continue
                }
                let wall = self.median(runs.map(\.wallMilliseconds))
                let cpu = self.median(runs.map(\.cpuMicroseconds))
                let cells = [
                    scenario.name, String(scenario.requests), client.rawValue,
                    String(format: "%.3f", wall), self.ratio(wall, baseWall),
                    String(format: "%.0f", cpu), self.ratio(cpu, baseCPU),
                    self.range(runs.map(\.connections)), self.range(runs.map(\.resumed)),
                ]
                lines.append("| " + cells.joined(separator: " | ") + " |")
            }
        }
        return lines.joined(separator: "\n")
    }

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    private static func ratio(_ value: Double, _ baseline: Double) -> String {
        baseline.isNaN || baseline == 0 ? "–" : String(format: "%.2f", value / baseline)
    }

    /// One number when every round counted the same, else "low–high".
    private static func range(_ values: [Int]) -> String {
        let low = values.min() ?? 0
        let high = values.max() ?? 0
        return low == high ? String(low) : "\(low)–\(high)"
    }
}
