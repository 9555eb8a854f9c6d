"""Reproducible tar archives: sorted entries, one fixed mtime, root ownership, normalised modes.

The legacy builder's COPY stamps directories with the build time; ADD of a local tar keeps the
tar's times, so everything mlenv puts in an image arrives this way.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path

# What the project's trees hold for the image is listed in observe (verify expects the same entries).
from mlenv.observe.fs.apptree import Entry, entry_mode, tree_entries


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
                info.mode = entry_mode(entry)
                archive.addfile(info)
                continue
            info.mode = entry_mode(entry)
            info.size = entry.source.stat().st_size
            with entry.source.open("rb") as handle:
                archive.addfile(info, handle)


__all__ = ["Entry", "tree_entries", "write_tar"]
