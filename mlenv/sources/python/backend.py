"""The contract between mlenv and a Python resolver backend (uv, pip-tools)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mlenv.model.lock import PythonPin
from mlenv.model.spec import ResolverName


@dataclass(frozen=True, kw_only=True)
class PythonRequest:
    """Resolve `requirements` for one target platform (not the host)."""

    requirements: tuple[str, ...]
    constraints: tuple[str, ...] = ()  # pip `-c` lines: bound versions, ask for nothing
    python_version: str  # full, e.g. "3.11.2"
    glibc: str
    platform: str  # "linux/amd64"
    index_url: str
    extra_index_urls: tuple[str, ...] = ()
    as_of: datetime | None = None
    # (package, its own cut-off or None for none): a package let past `as_of` (uv's exclude-newer-package)
    as_of_exceptions: tuple[tuple[str, datetime | None], ...] = ()
    # (name, version) pins of the old lock: kept where they still satisfy the requirements, as both
    # resolvers keep the pins of an existing output file
    preferences: tuple[tuple[str, str], ...] = ()
    # `name` or `name==version`: packages let go of their preference (--upgrade-package)
    upgrade_packages: tuple[str, ...] = ()


class ResolverBackend(Protocol):
    name: ResolverName

    def resolve(self, request: PythonRequest) -> list[PythonPin]:
        """Pins for the request with every file of each pin for the target; `requested` left False."""
        ...


def requirements_input(request: PythonRequest, work: Path) -> str:
    """The requirements.in both resolvers read: the requirements, and a `-c` file of the constraints."""
    lines = [f"{r}\n" for r in request.requirements]
    if request.constraints:
        constraints = work / "constraints.txt"
        constraints.write_text("".join(f"{c}\n" for c in request.constraints), encoding="utf-8")
        lines.append(f"-c {constraints}\n")
    return "".join(lines)
