"""joblib's compressions, recognised by their magic bytes and inflated as a bounded stream.

joblib.dump(compress=...) writes one compressed stream of the pickle (the compressor is chosen by
name, the loader tells it by the first bytes). The output is produced in bounded pieces and handed to
the pickle walk as it comes, so neither a multi-GB model nor a bomb is ever held in memory; a bomb
is refused by its ratio once it inflates past a grace size.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from mlenv.observe.limits import check_inflation
from mlenv.observe.stream.decompress import StreamError

OUT_SIZE = 1 << 20  # most bytes produced per decompress call
# Real model weights compress 1.1-10x (floats); a stream inflating past 200x once it produced the grace
# amount is a bomb (deflate tops out near 1030x, bz2 and lzma go far higher on zeros).
MAX_RATIO = 200
RATIO_GRACE = 256 << 20
# Uncompressed size of one model: the largest real ones are hundreds of GiB.
MAX_MODEL_BYTES = 1 << 40

# (joblib's compressor name, magic) in the order joblib's loader tests them.
MAGICS = (
    ("zlib", b"\x78"),
    ("gzip", b"\x1f\x8b"),
    ("bz2", b"BZh"),
    ("xz", b"\xfd7zXZ\x00"),
    ("lzma", b"\x5d\x00\x00"),
    ("lz4", b"\x04\x22\x4d\x18"),
)


def compression_of(head: bytes) -> str | None:
    """joblib's name for the compression of a stream starting with `head`, or None."""
    for kind, magic in MAGICS:
        if head.startswith(magic):
            return kind
    return None


def _lz4() -> Any:
    try:
        import lz4.frame
    except ImportError:
        raise StreamError("reading an lz4-compressed joblib file needs the 'lz4' package") from None
    return lz4.frame.LZ4FrameDecompressor()


_FACTORIES: dict[str, Callable[[], Any]] = {
    "zlib": lambda: zlib.decompressobj(wbits=zlib.MAX_WBITS),
    "gzip": lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS),
    "bz2": bz2.BZ2Decompressor,
    "xz": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ),
    "lzma": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE),
    "lz4": _lz4,
}


def inflate(kind: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The decompressed bytes of one `kind` stream (StreamError when corrupt, truncated or a bomb).

    Bytes after the stream's end are ignored, as joblib's reader stops there."""
    decompressor = _FACTORIES[kind]()
    zlib_like = kind in ("zlib", "gzip")
    taken = produced = 0
    try:
        for chunk in chunks:
            taken += len(chunk)
            data = chunk
            while True:
                out = decompressor.decompress(data, OUT_SIZE)
                if out:
                    produced += len(out)
                    check_inflation(
                        taken,
                        produced,
                        f"the {kind} stream",
                        most=MAX_MODEL_BYTES,
                        ratio=MAX_RATIO,
                        grace=RATIO_GRACE,
                    )
                    yield out
                if decompressor.eof:
                    return
                if zlib_like:
                    data = decompressor.unconsumed_tail
                    if not data:
                        break
                else:
                    data = b""
                    if decompressor.needs_input:
                        break
    except StreamError:
        raise
    except Exception as error:
        # zlib.error, lzma.LZMAError, OSError (bz2), RuntimeError (lz4): no common base; all mean corrupt.
        raise StreamError(f"corrupt {kind} data: {error}") from None
    raise StreamError(f"truncated {kind} data: the stream ends before its last block")
