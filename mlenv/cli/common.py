"""What several commands share: finding the project, reading a fresh lock, the progress line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from mlenv.errors import LockfileError, MlenvError
from mlenv.lockfile import LOCK_FILE, loads, lock_digest, read_lock_bytes
from mlenv.model.lock import Lock
from mlenv.model.spec import Spec
from mlenv.resolve.freshness import stale_reasons
from mlenv.spec import load_spec, not_utf8


class StaleLockError(MlenvError):
    """The lock no longer matches the spec: a check that found a difference, hence exit 1."""

    exit_code = 1


@dataclass(frozen=True)
class Project:
    spec: Spec
    lock: Lock
    lock_path: Path
    lock_digest: str

    @property
    def directory(self) -> Path:
        return Path(self.spec.project_dir)


def fresh_project(location: Path, lockfile: Path | None = None) -> Project:
    """The spec and its lock, refusing a stale lock (exit 1) before anything is built from it."""
    spec = load_spec(location)
    path = lockfile or Path(spec.project_dir, LOCK_FILE)
    data, lock = read_lock_input(path, "--lockfile")
    reasons = stale_reasons(spec, lock)
    if reasons:
        raise StaleLockError(f"{path} is stale: {reasons[0]}", hint="run `mlenv lock`")
    return Project(spec=spec, lock=lock, lock_path=path, lock_digest=lock_digest(data))


def locked_platforms(lock: Lock, chosen: list[str] | None, option: str = "--platform") -> tuple[str, ...]:
    """The platforms a command works on: those `option` names (each one the lock has), else every locked
    one, in the lock's order."""
    if not chosen:
        return lock.target.platforms
    for platform in chosen:
        if platform not in lock.target.platforms:
            locked = ", ".join(lock.target.platforms)
            raise MlenvError(
                f"{option} {platform}: not a platform of the lock (it has {locked})",
                hint="add it to [base] platforms in mlenv.toml and run `mlenv lock`",
            )
    return tuple(dict.fromkeys(chosen))


def locked_platform(lock: Lock, chosen: str | None, option: str = "--platform") -> str:
    """The one platform a command works on: the one `option` names (the lock must have it), else the first."""
    return locked_platforms(lock, [chosen] if chosen else None, option)[0]


def lock_text(data: bytes, path: Path) -> str:
    """A lock's bytes as text; a lock that is not UTF-8 was not written by mlenv, and says where it breaks."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LockfileError(str(path), None, not_utf8(error)) from None


def refuse_directory(path: Path, option: str) -> None:
    """One line for `-l DIR` before any work (a resolution, an image read) is done for nothing."""
    if path.is_dir():
        raise MlenvError(f"{option} {path}: is a directory; it takes a file path")


def read_lock_input(path: Path, option: str) -> tuple[bytes, Lock]:
    """The bytes of the lock a command reads, and the lock. Only a regular file: a FIFO would block the
    read forever and /dev/zero would fill memory, where one line naming the option is due."""
    refuse_directory(path, option)
    if path.exists() and not path.is_file():
        raise MlenvError(f"{option} {path}: is not a regular file; a lock is read from a file")
    data = read_lock_bytes(path)
    return data, loads(lock_text(data, path), path=str(path))


def say(message: str) -> None:
    """Progress and status for people: stderr, so stdout stays clean for --format json."""
    typer.echo(message, err=True)
