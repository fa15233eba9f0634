import Logging
import NIOConcurrencyHelpers

/// A log handler that keeps every event, for tests to inspect.
struct RecordingLogHandler: LogHandler {
    /// One logged event.
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
        var error: (any Error)?

        /// The value of a metadata key as a string, if it is one.
        subscript(key: String) -> String? {
            if case .string(let value) = self.metadata[key] { return value }
            if case .stringConvertible(let value) = self.metadata[key] { return value.description }
            return nil
        }
    }

    /// Where the records go; shared by the copies of the handler.
    final class Store: Sendable {
        private let records = NIOLockedValueBox<[Record]>([])

        var all: [Record] { self.records.withLockedValue { $0 } }

        func append(_ record: Record) {
            self.records.withLockedValue { $0.append(record) }
        }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level

    init(store: Store, logLevel: Logger.Level) {
        self.store = store
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        self.store.append(
            Record(level: event.level, message: event.message.description, metadata: merged, error: event.error)
        )
    }

    /// A logger writing to a new store at `level`.
    static func logger(_ level: Logger.Level) -> (Logger, Store) {
        let store = Store()
        let logger = Logger(label: "test") { _ in RecordingLogHandler(store: store, logLevel: level) }
        return (logger, store)
    }
}
