"""File IO every layer shares: atomic writes (an interrupted run leaves the old file or the new one, never
half of one) and the sha256 of a file."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


@contextmanager
def atomic_writer(path: Path, *, mode: int | None = None, durable: bool = True) -> Iterator[BinaryIO]:
    """A handle on a temporary file beside `path` that replaces `path` when the block ends without error.

    An exception inside the block (a hash that does not match, say) removes the temporary file and leaves
    `path` as it was. `mode` None keeps the mode `path` has, or 0o644 for a new file. `durable` flushes the
    data to disk before the rename; a cache whose every read is verified may skip that.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is None:
            mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    with atomic_writer(path, durable=durable) as handle:
        handle.write(data)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
