"""File IO every layer shares: atomic writes (an interrupted run leaves the old file or the new one, never
half of one), paths kept inside a project, the sha256 of a file, and JSON caches of derived data."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from mlenv.errors import MlenvError

CHUNK = 1 << 20
T = TypeVar("T")


def inside(root: Path, relative: str) -> Path | None:
    """`relative` resolved against `root`, symlinks followed, or None when the result leaves `root`.

    An absolute path, `../..` and a symlink pointing out of the project all resolve outside it; a file of
    the host must never be hashed into a lock or packed into an image because a spec named it.
    """
    if not relative or os.path.isabs(relative):
        return None
    base = root.resolve()
    try:
        resolved = (base / relative).resolve()
    except (OSError, RuntimeError):  # a symlink loop resolves nowhere
        return None
    return resolved if resolved == base or resolved.is_relative_to(base) else None


@contextmanager
def atomic_writer(path: Path, *, mode: int | None = None, durable: bool = True) -> Iterator[BinaryIO]:
    """A handle on a temporary file beside `path` that replaces `path` when the block ends without error.

    An exception inside the block (a hash that does not match, say) removes the temporary file and leaves
    `path` as it was. `mode` None keeps the mode `path` has, or 0o644 for a new file. `durable` flushes the
    data to disk before the rename; a cache whose every read is verified may skip that.

    A symlink is written through; a device or FIFO (`/dev/null`, a pipe) is written into directly, since
    renaming a regular file over it would replace the node itself.
    """
    try:
        info = path.stat()  # through symlinks: what a write would land in
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(21, "Is a directory", str(path))
    if info is not None and not stat.S_ISREG(info.st_mode):
        # Opened by its own name: /dev/stdout on a pipe resolves to no path (/proc/self/fd/pipe:[N]).
        with path.open("wb") as direct:
            yield direct
        return
    # A symlink to a file (or to where one will be) is written through: the link stays what it was.
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is None:
            mode = info.st_mode & 0o7777 if info is not None else 0o644
        os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it over `path`.

    Every OS failure (a directory that is not writable, a full disk, /dev/full) is one error line naming
    the path: the only thing inside the block is the write, so an OSError is always about `path`.
    """
    try:
        with atomic_writer(path, durable=durable) as handle:
            handle.write(data)
    except OSError as error:
        raise MlenvError(f"{path}: cannot write: {error.strerror or error}") from None


def json_cached(
    path: Path, decode: Callable[[Any], T], derive: Callable[[], T], encode: Callable[[T], Any]
) -> T:
    """What `derive` makes, kept as JSON at `path` (a cache of what is derived from a file known by its
    sha256): read back through `decode` when the file is there and decodes; an entry that does not
    (OSError, ValueError, TypeError, KeyError) is derived again and rewritten, atomically."""
    try:
        return decode(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    value = derive()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path, durable=False) as out:
        out.write(json.dumps(encode(value)).encode())
    return value


@contextmanager
def work_directory(name: str) -> Iterator[Path]:
    """A temporary directory `mlenv-NAME-PID-*`, removed when the block ends, however it ends.

    A signal mlenv handles unwinds through here; SIGKILL cannot be handled, so the directories that an
    earlier, killed run (its pid no longer alive) left behind are removed first.
    """
    _remove_orphans(name)
    with tempfile.TemporaryDirectory(prefix=f"mlenv-{name}-{os.getpid()}-") as work:
        yield Path(work)


def _remove_orphans(name: str) -> None:
    for left in Path(tempfile.gettempdir()).glob(f"mlenv-{name}-*-*"):
        pid = left.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(left, ignore_errors=True)  # another user's directory is theirs to remove


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
