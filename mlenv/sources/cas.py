"""A content-addressed cache of downloaded artifacts, shared between projects.

Files are named by their sha256 and checked on every read: a corrupted or tampered cache entry is
dropped and fetched again, never used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from mlenv.errors import BuildError

CHUNK = 1 << 20


def default_cache_dir() -> Path:
    root = os.environ.get("MLENV_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "mlenv")
    return Path(root).expanduser() / "cas"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ContentStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def get(self, sha256: str) -> Path | None:
        """The cached file with this sha256, verified now; None when absent or corrupt (then removed)."""
        path = self.path_for(sha256)
        if not path.is_file():
            return None
        if file_sha256(path) != sha256:
            path.unlink(missing_ok=True)
            return None
        return path

    def put_stream(self, sha256: str, chunks: Iterable[bytes], *, what: str) -> Path:
        """Store a download, checking its sha256 before it becomes visible in the cache."""
        target = self.path_for(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise BuildError(f"{what}: sha256 is {digest.hexdigest()}, the lock says {sha256}",
                                 hint="the file changed upstream or in transit; it was not used")
            os.replace(temp, target)
        finally:
            Path(temp).unlink(missing_ok=True)
        return target

    def fetch(self, sha256: str, download: Callable[[], Iterable[bytes]], *, what: str) -> Path:
        return self.get(sha256) or self.put_stream(sha256, download(), what=what)
