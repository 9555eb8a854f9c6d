"""Progress of long steps, for whoever runs them: what the library reports, never how it is shown.

The library calls `current()` at a step that can pass a second (resolving, fetching, building, reading
layers); the CLI edge installs a drawing Progress for the length of one command with `showing(...)`
(mlenv.cli.progress: rich on a terminal, nothing when stderr is piped or with --quiet). A context
variable rather than a parameter, so a step deep in a layer needs no argument threaded through every
caller, and an embedding program that installs nothing gets the silent default.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Protocol


class Task(Protocol):
    """One measured piece of work (a download): advanced by the amount done since the last call."""

    def advance(self, amount: int) -> None: ...


class Progress(Protocol):
    def step(self, text: str) -> None:
        """What is being done now; replaces the step shown before."""
        ...

    def task(self, text: str, total: int | None) -> AbstractContextManager[Task]:
        """A measured piece of work of `total` units (bytes), or an unknown total; shown while open."""
        ...


class _SilentTask:
    def advance(self, amount: int) -> None:
        del amount


class Silent:
    """Shows nothing: the default, and what a piped stderr or --quiet gets."""

    def step(self, text: str) -> None:
        del text

    @contextmanager
    def task(self, text: str, total: int | None) -> Iterator[Task]:
        del text, total
        yield _SilentTask()


SILENT = Silent()
_CURRENT: ContextVar[Progress | None] = ContextVar("mlenv_progress", default=None)


def current() -> Progress:
    """The Progress installed by whoever runs this step; SILENT when nobody installed one."""
    return _CURRENT.get() or SILENT


@contextmanager
def showing(progress: Progress) -> Iterator[Progress]:
    """`progress` receives every step reported inside the block; the previous one comes back after."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)
