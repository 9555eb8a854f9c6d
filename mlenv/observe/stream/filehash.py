"""sha256 of a layer's large files, taken in a thread of their own while the tar parser goes on.

A layer read is two threads already: one reads (and inflates, or hashes the diff_id of a plain tar), the
other parses the tar and hashes every file. The second was the whole pass's critical path (the fraud
image's 607 MB through `docker-archive:`: its parser thread busy from start to end, the reader idle half
the time). hashlib releases the GIL for any update of 2 KiB or more, so the large files' bytes, which are
most of a layer's, are hashed here on the other core while the parser reads the next headers.

The views handed over are slices of the stream's immutable chunks, so they stay valid after the parser
moves on; the queue is bounded, so at most DEPTH of them (each within a chunk of about 1 MiB) are held.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import Any

DEPTH = 16
_STOP = object()

# Called with the file's digest once its last byte is hashed (in the hashing thread).
Done = Callable[[bytes], None]


class FileHasher:
    """Hash files piece by piece in a worker thread: `update` each piece in order, then `finish` the
    file with what to do with its digest. `close` waits for every finished file's callback to run."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=DEPTH)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mlenv-file-hash", daemon=True)
        self._thread.start()

    def update(self, piece: memoryview) -> None:
        self._queue.put(piece)

    def finish(self, done: Done) -> None:
        self._queue.put(done)

    def close(self) -> None:
        """Wait until every file handed over is hashed and its callback ran; re-raise a worker error.
        Once closed, closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        hasher = hashlib.sha256()
        try:
            while (item := self._queue.get()) is not _STOP:
                if isinstance(item, memoryview):
                    hasher.update(item)
                else:
                    item(hasher.digest())
                    hasher = hashlib.sha256()
        except BaseException as error:  # handed to close(), in the caller's thread
            self._error = error
            while self._queue.get() is not _STOP:  # keep taking, so the caller's puts never block
                pass
