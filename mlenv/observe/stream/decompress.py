"""Byte-stream plumbing for the observer: decompression by magic number, a background stage that
overlaps decompression with tar parsing, and a buffered reader over an iterator of chunks.

Layers are read in one pass and never written to disk. On two cores the pass is bound by inflate,
so the decompressing stage runs in its own thread (zlib, zstd and hashlib release the GIL) while
the caller parses and hashes; the two meet through a small bounded queue.
"""

from __future__ import annotations

import bz2
import lzma
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

READ_SIZE = 1 << 18  # compressed bytes read at a time
OUT_SIZE = 1 << 20  # most decompressed bytes produced per chunk, so a bomb cannot fill memory
QUEUE_DEPTH = 16

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"


# Streams pass either bytes or views into bytes (a member's data inside an outer archive).
Chunk = bytes | memoryview


class StreamError(Exception):
    """The bytes are not what they should be (truncated, corrupt, unsupported compression)."""


def read_chunks(stream: object, size: int = READ_SIZE) -> Iterator[bytes]:
    """Chunks of a binary file-like object (anything with read(n)), until EOF."""
    read: Callable[[int], bytes] = stream.read  # type: ignore[attr-defined]
    while True:
        chunk = read(size)
        if not chunk:
            return
        yield chunk


def compression_of(head: bytes) -> str:
    """'gzip', 'zstd', 'xz', 'bzip2' or 'none', from the first bytes of a stream."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return "none"


def _zstd_factory() -> Callable[[], Any]:
    # Python 3.14 has zstd in the standard library; before that the maintained binding is `zstandard`.
    try:
        from compression import zstd  # type: ignore[import-not-found, unused-ignore]

        return zstd.ZstdDecompressor  # type: ignore[no-any-return, unused-ignore]
    except ImportError:
        pass
    try:
        import zstandard  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise StreamError(
            "the layer is zstd-compressed; reading it needs the 'zstandard' package (pip install zstandard)"
        ) from None
    return lambda: zstandard.ZstdDecompressor().decompressobj()


def _factory(kind: str) -> Callable[[], Any]:
    if kind == "gzip":
        return lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if kind == "zstd":
        return _zstd_factory()
    if kind == "xz":
        return lzma.LZMADecompressor
    if kind == "bzip2":
        return bz2.BZ2Decompressor
    raise ValueError(kind)


def peek_head(chunks: Iterator[Chunk], need: int) -> tuple[bytes, Iterator[Chunk]]:
    """The first `need` bytes (fewer at EOF) and an iterator that still yields everything."""
    head = b""
    taken: list[Chunk] = []
    while len(head) < need:
        chunk = next(chunks, None)
        if chunk is None:
            break
        taken.append(chunk)
        head += bytes(chunk[:need])

    def replay() -> Iterator[Chunk]:
        yield from taken
        yield from chunks

    return head[:need], replay()


def decompressed(chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """The decompressed bytes of a stream whose compression is recognised by its magic number.

    Concatenated members/frames (pigz, parallel zstd) are followed to the end, as tar readers do.
    """
    head, stream = peek_head(iter(chunks), 6)
    kind = compression_of(head)
    if kind == "none":
        yield from stream
        return
    make = _factory(kind)
    # zstandard's decompressobj takes no max_length; its output per call is bounded by its input chunk.
    bounded = kind != "zstd" or make.__module__.startswith("compression")
    decompressor = make()
    fed = False
    taken = produced = 0
    from mlenv.observe.limits import check_ratio  # limits builds on this module's StreamError

    try:
        for data in stream:
            taken += len(data)
            while data:
                if decompressor.eof:
                    if not bytes(data).strip(b"\x00"):
                        break  # zero padding after the last member, as some writers leave
                    decompressor, fed = make(), False
                fed = True
                out = decompressor.decompress(data, OUT_SIZE) if bounded else decompressor.decompress(data)
                if out:
                    produced += len(out)
                    check_ratio(taken, produced, kind)
                    yield out
                if decompressor.eof:
                    data = decompressor.unused_data
                elif kind == "gzip":
                    data = decompressor.unconsumed_tail  # type: ignore[attr-defined, unused-ignore]
                else:
                    # lzma, bz2 and zstd keep unread input inside; drain their output before feeding more.
                    data = b""
                    while bounded and not decompressor.eof and not decompressor.needs_input:  # type: ignore[attr-defined, unused-ignore]
                        out = decompressor.decompress(b"", OUT_SIZE)
                        if not out:
                            break
                        produced += len(out)
                        check_ratio(taken, produced, kind)
                        yield out
                    if decompressor.eof:
                        data = decompressor.unused_data
    except StreamError:
        raise  # a limit crossed (check_ratio): already the line to show
    except Exception as error:
        # zlib.error, lzma.LZMAError, OSError (bz2), zstandard.ZstdError: no common base; all mean corrupt.
        raise StreamError(f"corrupt {kind} data: {error}") from None
    if fed and not decompressor.eof:
        raise StreamError(f"truncated {kind} data")


class Background:
    """Runs an iterator in a worker thread, handing its items over through a bounded queue.

    Errors raised by the worker are re-raised in the consumer. Closing the consumer side (or
    leaving it by an exception) stops the worker at its next item.
    """

    _DONE = object()

    def __init__(
        self, source: Iterator[Chunk], *, depth: int = QUEUE_DEPTH, name: str = "mlenv-layer"
    ) -> None:
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as error:
            self._error = error
        finally:
            self._put(self._DONE)

    def __iter__(self) -> Iterator[Chunk]:
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    break
                yield item  # type: ignore[misc]
        finally:
            self.close()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class ChunkReader:
    """Sequential reads over an iterator of chunks without re-copying what is not read."""

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self._chunks = iter(chunks)
        self._buf: Chunk = b""
        self._view = memoryview(b"")
        self._pos = 0
        self.offset = 0  # bytes consumed so far, for error messages
        self.member: str | None = None  # the tar member being read (set by the tar reader), for errors

    def _next(self) -> Chunk | None:
        try:
            return next(self._chunks, None)
        except StreamError as error:
            # Decompression fails (or a limit is crossed) inside some member: say which.
            if self.member is None or "member " in str(error):
                raise
            raise type(error)(f"member {self.member[:200]!r}: {error}") from None

    def _refill(self) -> bool:
        chunk = self._next()
        while chunk is not None and not chunk:
            chunk = self._next()
        if chunk is None:
            return False
        self._buf = chunk
        self._view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
        self._pos = 0
        return True

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes, or fewer only at the end of the stream."""
        _check_size(size)
        end = self._pos + size
        if end <= len(self._buf):
            data = bytes(self._buf[self._pos : end])
            self._pos = end
            self.offset += size
            return data
        parts = [bytes(self._buf[self._pos :])]
        have = len(parts[0])
        self._pos = len(self._buf)
        while have < size and self._refill():
            take = min(size - have, len(self._buf))
            parts.append(bytes(self._buf[:take]))
            self._pos = take
            have += take
        self.offset += have
        return b"".join(parts)

    def peek(self, size: int) -> bytes:
        """Up to `size` next bytes without consuming them (fewer only at the end of the stream)."""
        while len(self._buf) - self._pos < size:
            rest = bytes(self._buf[self._pos :])
            if not self._refill():
                self._buf, self._view, self._pos = rest, memoryview(rest), 0
                break
            joined = rest + bytes(self._buf)
            self._buf, self._view, self._pos = joined, memoryview(joined), 0
        return bytes(self._buf[self._pos : self._pos + size])

    def views(self, size: int) -> Iterator[memoryview]:
        """`size` bytes as views into the chunks (valid until the next read); short only at EOF."""
        _check_size(size)
        remaining = size
        while remaining > 0:
            if self._pos >= len(self._buf) and not self._refill():
                return
            take = min(remaining, len(self._buf) - self._pos)
            view = self._view[self._pos : self._pos + take]
            self._pos += take
            self.offset += take
            remaining -= take
            yield view

    def contiguous(self, size: int) -> memoryview | None:
        """A view of the next `size` bytes when they lie in the current chunk (the common case for
        small files), consumed; None otherwise, consuming nothing."""
        _check_size(size)
        end = self._pos + size
        if end <= len(self._buf):
            view = self._view[self._pos : end]
            self._pos = end
            self.offset += size
            return view
        return None

    def skip(self, size: int) -> int:
        skipped = 0
        for view in self.views(size):
            skipped += len(view)
        return skipped

    def drain(self) -> None:
        while self._refill():
            self.offset += len(self._buf)
            self._pos = len(self._buf)


def _check_size(size: int) -> None:
    # A negative count from a crafted header would never reach the end of a read loop.
    if size < 0:
        raise StreamError(f"a negative length ({size}) to read")
