"""Progress drawn on stderr with rich, for a person at a terminal; nothing for a pipe or with --quiet.

stdout stays clean (it carries --format json and tags); rich is imported only when something is drawn,
so `mlenv --version` and a piped run never pay for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlenv.progress import SILENT, Progress, Task, showing

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

_state = {"quiet": False}


def configure(*, quiet: bool) -> None:
    """The root options of this run (`mlenv -q`); read when a command starts its progress."""
    _state["quiet"] = quiet


def wanted() -> bool:
    """Draw only for a person: stderr is a terminal and --quiet was not given."""
    return not _state["quiet"] and sys.stderr.isatty()


class _RichTask:
    def __init__(self, bars: RichProgress, task_id: Any) -> None:
        self._bars = bars
        self._id = task_id

    def advance(self, amount: int) -> None:
        self._bars.advance(self._id, amount)


class Terminal:
    """A spinner line for the current step and a bar with bytes for each open task."""

    def __init__(self, bars: RichProgress) -> None:
        self._bars = bars
        self._step: Any = None

    def step(self, text: str) -> None:
        if self._step is None:
            self._step = self._bars.add_task(text, total=None, measured=False)
        else:
            self._bars.update(self._step, description=text)

    @contextmanager
    def task(self, text: str, total: int | None) -> Iterator[Task]:
        task_id = self._bars.add_task(text, total=total, measured=True)
        try:
            yield _RichTask(self._bars, task_id)
        finally:
            self._bars.remove_task(task_id)


def _bars() -> RichProgress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
    )
    from rich.progress import Progress as RichProgress
    from rich.progress import Task as RichTask
    from rich.text import Text

    class Bytes(ProgressColumn):
        """Bytes done (of the total) for a download; nothing for a step, which has no amount."""

        def __init__(self) -> None:
            super().__init__()
            self._download = DownloadColumn()

        def render(self, task: RichTask) -> Text:
            return self._download.render(task) if task.fields.get("measured") else Text("")

    return RichProgress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        Bytes(),
        console=Console(stderr=True),
        transient=True,  # the bars leave when the command ends; the lines it printed stay
    )


@contextmanager
def for_command() -> Iterator[Progress]:
    """The Progress of one command, installed for the library's steps for as long as the command runs."""
    if not wanted():
        with showing(SILENT) as silent:
            yield silent
        return
    bars = _bars()
    with bars, showing(Terminal(bars)) as shown:
        yield shown
