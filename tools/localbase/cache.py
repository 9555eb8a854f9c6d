"""Where what is slow to make (debootstrap trees, the Docker data root, training venvs) is kept."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """MLENV_TEST_CACHE (default ~/.cache/mlenv-tests) joined with `parts`, created on first use."""
    root = Path(os.environ.get("MLENV_TEST_CACHE", "~/.cache/mlenv-tests")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Serialise building one cache entry across processes (parallel sessions share the cache)."""
    with (cache_dir("locks") / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
