"""Where tests keep what is slow to make (debootstrap trees, the Docker data root) between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("MLENV_TEST_CACHE", "~/.cache/mlenv-tests")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
