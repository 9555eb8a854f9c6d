"""What of the project directory goes into the image: the app copy and the baked models, as tar entries.

The build packs exactly these entries into app.tar and models.tar, and verify expects exactly these
files under the workdir, so the two read the project through this one function and cannot disagree
about what was filtered out. Modes are the ones the reproducible tar writes: 0755 for directories and
executable files, 0644 for the rest; owners are root.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlenv.errors import BuildError
from mlenv.model.lock import Lock

SKIP_NAMES = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache", ".DS_Store"}
)
SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Entry:
    arcname: str  # path inside the archive, no leading slash
    source: Path | None  # a file to read, or None for a directory


def entry_mode(entry: Entry) -> int:
    """The permission bits the reproducible tar gives `entry`."""
    if entry.source is None:
        return 0o755
    return 0o755 if entry.source.stat().st_mode & stat.S_IXUSR else 0o644


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


def app_entries(lock: Lock, project_dir: Path) -> list[Entry]:
    """The app copy (app.tar): each `app.copy` path of the project, under the workdir."""
    workdir = lock.app.workdir.strip("/")
    entries: list[Entry] = []
    for relative in lock.app.copy:
        source = project_dir / relative
        if not source.exists():
            raise BuildError(f"app.copy names {relative}, which does not exist in {project_dir}")
        entries += tree_entries(source, f"{workdir}/{relative.strip('/')}")
    return entries


def model_entries(lock: Lock, project_dir: Path) -> list[Entry]:
    """The baked models (models.tar), each at its target."""
    entries: list[Entry] = []
    for model in lock.models:
        if model.strategy != "bake":
            continue
        source = project_dir / model.source
        if not source.is_file():
            raise BuildError(f"model {model.source} is missing", hint="train or fetch it, then `mlenv lock`")
        entries += tree_entries(source, model.target.strip("/"))
    return entries
