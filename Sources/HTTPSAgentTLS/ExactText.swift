#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Byte-for-byte comparison of text that names or holds key material: file paths and PEM text.
///
/// Swift's `String` equality is Unicode canonical equivalence, so `"café.pem"` written with a
/// precomposed "é" equals the same name written with "e" and a combining accent. On Linux those are
/// two different files, which may hold different certificates. Connection and context reuse keyed on
/// such text must not treat them as one (the class of curl's CVE-2021-22924), so it compares UTF-8
/// bytes instead.
package enum ExactText {
    package static func equal(_ lhs: String, _ rhs: String) -> Bool {
        // Called on every lookup of a pool key: one memcmp, not a walk over two UTF-8 views.
        var lhs = lhs
        var rhs = rhs
        return lhs.withUTF8 { left in
            rhs.withUTF8 { right in
                left.count == right.count
                    && (left.isEmpty || memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0)
            }
        }
    }

    package static func hash(_ text: String, into hasher: inout Hasher) {
        var text = text
        text.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
        hasher.combine(text.utf8.count)
    }
}
