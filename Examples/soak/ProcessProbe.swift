#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the process holds, from Linux's `/proc/self`.
enum ProcessProbe {
    /// What each open descriptor refers to (`readlink` of `/proc/self/fd/N`), by number.
    static func descriptorTargets() -> [Int: String] {
        guard let directory = opendir("/proc/self/fd") else { return [:] }
        let own = dirfd(directory)
        defer { closedir(directory) }
        var targets: [Int: String] = [:]
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let number = Int(name), number != own else { continue }
            var buffer = [CChar](repeating: 0, count: 512)
            let length = readlink("/proc/self/fd/\(number)", &buffer, buffer.count - 1)
            targets[number] =
                length > 0 ? String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        }
        return targets
    }

    /// Resident set size in bytes: the second field of `/proc/self/statm`, in pages.
    static func residentBytes() -> Int {
        guard let file = fopen("/proc/self/statm", "r") else { return -1 }
        defer { fclose(file) }
        var size = 0
        var resident = 0
        guard readStatm(file, &size, &resident) else { return -1 }
        return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    private static func readStatm(_ file: UnsafeMutablePointer<FILE>, _ size: inout Int, _ resident: inout Int) -> Bool
    {
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, Int32(line.count), file) != nil else { return false }
        let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .split(separator: " ")
        guard fields.count >= 2, let first = Int(fields[0]), let second = Int(fields[1]) else { return false }
        size = first
        resident = second
        return true
    }
}
