"""What a re-lock may move: the old lock is a preference, as uv's and pip-compile's old output is.

`mlenv lock` keeps every pin of the old lock that still satisfies the spec; `--upgrade-package NAME`
(`-P`, also `NAME==VERSION`) lets one Python package move (and what it drags along), `--upgrade-apt
NAME` one apt package, `--upgrade` everything. This module turns those flags and the old lock into the
preferences each resolver takes; it does no IO. The apt request parser is imported only where an apt
flag or pin is read: importing the apt solver costs ~0.25 s that a Python-only lock need not pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlenv.errors import MlenvError
from mlenv.model.lock import Lock

if TYPE_CHECKING:
    from mlenv.resolve.apt.universe import PkgKey


@dataclass(frozen=True, kw_only=True)
class Upgrade:
    """The upgrade flags of `mlenv lock`, checked (see parse_upgrade)."""

    everything: bool = False  # --upgrade: the old lock is no preference at all
    python: tuple[str, ...] = ()  # --upgrade-package: canonical `name` or `name==version`
    apt: tuple[str, ...] = ()  # --upgrade-apt: `name` or `name:arch`

    def python_names(self) -> frozenset[str]:
        return frozenset(Requirement(text).name for text in self.python)


def parse_upgrade(*, everything: bool, python: list[str], apt: list[str]) -> Upgrade:
    """The flags as given on the command line; a value that is not a package is one MlenvError."""
    packages = []
    for text in python:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            requirement = None
        specifiers = list(requirement.specifier) if requirement is not None else []
        if (
            requirement is None
            or requirement.extras
            or requirement.url
            or requirement.marker
            or len(specifiers) > 1
            or (specifiers and specifiers[0].operator != "==")
        ):
            raise MlenvError(
                f"--upgrade-package {text!r} is not NAME or NAME==VERSION",
                hint="e.g. -P numpy or -P numpy==1.26.4",
            )
        name = canonicalize_name(requirement.name)
        packages.append(f"{name}=={specifiers[0].version}" if specifiers else name)
    if apt:
        from mlenv.resolve.apt.request import parse_request
    names = []
    for text in apt:
        try:
            request = parse_request(text)
        except MlenvError:
            request = None
        if request is None or request.version is not None:
            raise MlenvError(
                f"--upgrade-apt {text!r} is not NAME or NAME:ARCH", hint="e.g. --upgrade-apt curl"
            )
        names.append(text.strip())
    return Upgrade(
        everything=everything, python=tuple(dict.fromkeys(packages)), apt=tuple(dict.fromkeys(names))
    )


def python_preferences(previous: Lock | None, upgrade: Upgrade) -> tuple[tuple[str, str], ...]:
    """(name, version) of each Python pin of the old lock the resolver should keep if it can."""
    if previous is None or upgrade.everything:
        return ()
    moving = upgrade.python_names()
    return tuple(
        sorted((pin.name, pin.version) for pin in previous.python.packages if pin.name not in moving)
    )


def apt_preferences(previous: Lock | None, upgrade: Upgrade) -> dict[PkgKey, str]:
    """(name, architecture) -> version of each apt pin of the old lock the solver should keep if it can;
    `--upgrade-apt NAME` frees every architecture of NAME, `NAME:ARCH` that one."""
    if previous is None or upgrade.everything:
        return {}
    from mlenv.resolve.apt.request import parse_request

    moving = [parse_request(text) for text in upgrade.apt]
    return {
        (pin.name, pin.architecture): pin.version
        for pin in previous.apt.packages
        if not any(
            m.name == pin.name and (m.architecture is None or pin.architecture in (m.architecture, "all"))
            for m in moving
        )
    }


def unknown_upgrades(previous: Lock | None, new: Lock, upgrade: Upgrade) -> list[str]:
    """One warning per upgrade flag that names a package neither lock has (a typo moves nothing)."""
    warnings = []
    old_python = {p.name for p in previous.python.packages} if previous is not None else set()
    new_python = {p.name for p in new.python.packages}
    for text in upgrade.python:
        name = Requirement(text).name
        if name not in old_python | new_python:
            warnings.append(f"--upgrade-package {text}: {name} is not a Python package of the lock")
    old_apt = {p.name for p in previous.apt.packages} if previous is not None else set()
    new_apt = {p.name for p in new.apt.packages}
    if upgrade.apt:
        from mlenv.resolve.apt.request import parse_request
    for text in upgrade.apt:
        name = parse_request(text).name
        if name not in old_apt | new_apt:
            warnings.append(f"--upgrade-apt {text}: {name} is not an apt package of the lock")
    return warnings


def lock_changes(previous: Lock, new: Lock) -> list[str]:
    """What a re-lock moved, one line per package as uv prints it: `python: urllib3 1.26.13 -> 1.26.20`,
    `apt: + libpng16-16 1.6.39-2+deb12u6`, `python: - six 1.16.0`; sorted by layer and name."""
    apt_old = {(p.name, p.architecture): p.version for p in previous.apt.packages}
    apt_new = {(p.name, p.architecture): p.version for p in new.apt.packages}
    # An apt pin is named with its architecture only where the locks hold more than one.
    several = len({arch for _, arch in apt_old.keys() | apt_new.keys() if arch != "all"}) > 1
    layers = (
        ("apt", apt_old, apt_new),
        (
            "python",
            {(p.name, ""): p.version for p in previous.python.packages},
            {(p.name, ""): p.version for p in new.python.packages},
        ),
    )
    lines = []
    for layer, old, now in layers:
        for key in sorted(old.keys() | now.keys()):
            name = f"{key[0]}:{key[1]}" if several and key[1] not in ("", "all") else key[0]
            if key not in now:
                lines.append(f"{layer}: - {name} {old[key]}")
            elif key not in old:
                lines.append(f"{layer}: + {name} {now[key]}")
            elif old[key] != now[key]:
                lines.append(f"{layer}: {name} {old[key]} -> {now[key]}")
    return lines
