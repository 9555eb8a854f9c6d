"""Reproducible tar archives: sorted entries, one fixed mtime, root ownership, normalised modes.

The legacy builder's COPY stamps directories with the build time; ADD of a local tar keeps the
tar's times, so everything mlenv puts in an image arrives this way.
"""

from __future__ import annotations

import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SKIP_NAMES = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache", ".DS_Store"}
)
SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Entry:
    arcname: str  # path inside the archive, no leading slash
    source: Path | None  # a file to read, or None for a directory


def tree_entries(source: Path, arcname: str) -> list[Entry]:
    """Entries for a file or directory tree placed at `arcname`, with parent directories."""
    entries = [
        Entry(str(parent), None) for parent in reversed(PurePosixPath(arcname).parents) if str(parent) != "."
    ]
    if source.is_file():
        return entries + [Entry(arcname, source)]
    entries.append(Entry(arcname, None))
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part in SKIP_NAMES for part in relative.parts) or path.name.endswith(SKIP_SUFFIXES):
            continue
        if path.is_symlink():
            continue  # a link could point outside the project; copy real files only
        entries.append(Entry(f"{arcname}/{relative.as_posix()}", None if path.is_dir() else path))
    return entries


def write_tar(destination: Path, entries: Iterable[Entry], *, mtime: int) -> None:
    """Write `entries` (deduplicated, sorted by name) as a tar with fixed metadata."""
    unique = {e.arcname.strip("/"): e for e in entries}
    with tarfile.open(destination, "w", format=tarfile.GNU_FORMAT) as archive:
        for name in sorted(unique):
            entry = unique[name]
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.source is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
                continue
            executable = entry.source.stat().st_mode & stat.S_IXUSR
            info.mode = 0o755 if executable else 0o644
            info.size = entry.source.stat().st_size
            with entry.source.open("rb") as handle:
                archive.addfile(info, handle)
