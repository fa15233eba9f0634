import Foundation
import HTTPSAgentFuzzing

// Two builds of one target. `.ci/fuzz` builds it with `-sanitize=fuzzer,address -D HTTPSAGENT_FUZZING`:
// then `main` hands over to libFuzzer, which calls `LLVMFuzzerTestOneInput` with each input. A normal
// build (what `swift build` and CI do) makes a command that replays inputs instead.

#if DEBUG
/// libFuzzer's entry point: runs one input and traps if the harness saw something wrong (a crash in the
/// library traps by itself).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponsePath(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let report = ResponsePathFuzzer.run(UnsafeBufferPointer(start: data, count: size))
    if !report.violations.isEmpty {
        fatalError("response path: " + report.violations.joined(separator: "; "))
    }
    return 0
}
#endif

#if HTTPSAGENT_FUZZING
// libFuzzer's driver, for a program that has its own `main` (SwiftPM gives every executable one):
// `int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *, size_t))`.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt
#endif

/// With `-D HTTPSAGENT_FUZZING`, libFuzzer's command line (see `.ci/fuzz`). Otherwise:
/// `fuzz-response [--verbose] PATH...` replays inputs (files, or every file in a directory) through
/// the harness and exits 1 if any broke an expectation. `fuzz-response --write-seeds DIR` writes the
/// seed corpus.
@main
struct ResponseFuzz {
    static func main() throws {
        #if HTTPSAGENT_FUZZING
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzResponsePath))
        #elseif DEBUG
        var arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--write-seeds", arguments.count == 2 {
            try writeSeeds(to: arguments[1])
            return
        }
        let verbose = arguments.first == "--verbose"
        if verbose { arguments.removeFirst() }
        guard !arguments.isEmpty else {
            print("usage: fuzz-response [--verbose] FILE_OR_DIRECTORY... | --write-seeds DIRECTORY")
            exit(2)
        }
        var failures = 0
        var count = 0
        for path in try files(arguments) {
            let report = ResponsePathFuzzer.run(try Data(contentsOf: URL(fileURLWithPath: path)))
            count += 1
            if !report.violations.isEmpty {
                failures += 1
                print("FAIL \(path): \(report.violations.joined(separator: "; ")) (\(describe(report)))")
            } else if verbose {
                print("ok   \(path): \(describe(report))")
            }
        }
        print("\(count) inputs, \(failures) failed")
        exit(failures == 0 ? 0 : 1)
        #else
        print("fuzz-response needs a debug build: the harness uses the library's internal types")
        exit(2)
        #endif
    }

    #if DEBUG
    static func files(_ paths: [String]) throws -> [String] {
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: path])
            }
            if isDirectory.boolValue {
                let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }
                files += names.sorted().map { "\(path)/\($0)" }
            } else {
                files.append(path)
            }
        }
        return files
    }

    static func describe(_ report: ResponsePathFuzzer.Report) -> String {
        let exchanges = report.exchanges.map { exchange in
            let status = exchange.status.map(String.init) ?? "no head"
            let decoded = exchange.decodedEncoding.map { " \($0)-decoded" } ?? ""
            let outcome = exchange.errorCode.map { "error \($0)" } ?? "ok"
            return "\(status), \(exchange.bodyBytes) body bytes\(decoded), \(outcome)"
        }
        return exchanges.joined(separator: " | ") + "; released \(report.released)"
    }

    static func writeSeeds(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for seed in FuzzSeeds.all {
            try Data(seed.input).write(to: URL(fileURLWithPath: "\(directory)/\(seed.name)"))
        }
        print("\(FuzzSeeds.all.count) seeds written to \(directory)")
    }
    #endif
}
