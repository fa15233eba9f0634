// zlib for gzip/deflate response decoding. `inflateInit2` is a macro; wrap it.
#ifndef C_ZLIB_SHIM_H
#define C_ZLIB_SHIM_H

#include <zlib.h>

static inline int cshim_inflateInit2(z_stream *stream, int windowBits) {
    return inflateInit2(stream, windowBits);
}

// For test servers that send compressed bodies: `deflateInit2` is a macro too.
static inline int cshim_deflateInit2(z_stream *stream, int level, int windowBits) {
    return deflateInit2(stream, level, Z_DEFLATED, windowBits, 8, Z_DEFAULT_STRATEGY);
}

#endif
