"""The dependency edges of the locked wheels (their Requires-Dist), markers evaluated per platform,
extras included: `jax[cuda12]` brings the nvidia-* wheels through jax-cuda12-plugin's `with_cuda`
extra, and those edges are checked for pins like any other."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlenv.model.lock import PythonPin
from mlenv.model.target import Target, marker_environment, target_tags, wheel_installs

# pin name -> Requires-Dist lines of its wheel for one platform; platform -> that map.
Requires = Mapping[str, Mapping[str, tuple[str, ...]]]
_EXTRA = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")  # PEP 508: every requirement starts with its name
# (requirer, required name) -> whether the caller looks at that edge
Wanted = Callable[[str, str], bool]


@dataclass(frozen=True, kw_only=True)
class Edge:
    requirer: str
    requirement: Requirement
    extra: str | None = None  # the requirer's extra the edge comes through, None for a plain one

    @property
    def by(self) -> str:
        """The requirer as a user writes it: "jax-cuda12-plugin[with_cuda]"."""
        return f"{self.requirer}[{self.extra}]" if self.extra else self.requirer


def _parsed(lines: Iterable[str]) -> list[Requirement]:
    found = []
    for line in lines:
        try:
            found.append(Requirement(line))
        except InvalidRequirement:
            continue  # a malformed line in someone's metadata says nothing we can use
    return found


def _could_give(requirer: str, lines: tuple[str, ...], wanted: Wanted) -> tuple[str, ...]:
    """The lines that can give a wanted edge, found without parsing them (parsing every line of every
    wheel was most of a lock's CUDA step: transformers alone declares hundreds of extras' lines). A line
    whose name is wanted, and every line of an extra such a line is in: whether that extra was taken
    depends on all of them. A line whose name cannot be read is kept, for the parser to judge."""

    read = [
        (
            line,
            (m := _NAME.match(line)) is None or wanted(requirer, canonicalize_name(m[1])),
            {canonicalize_name(e) for e in _EXTRA.findall(line)},
        )
        for line in lines
    ]
    needed = set().union(*(extras for _, direct, extras in read if direct))
    return tuple(line for line, direct, extras in read if direct or extras & needed)


def _platform_edges(
    requirer: str, lines: tuple[str, ...], environment: dict[str, str], locked: frozenset[str] | None
) -> list[Edge]:
    """One requirer's edges on one platform. An extra counts as taken when every package it requires
    here is locked: the lock does not record which extras the resolver took, but an extra whose
    requirements were all resolved is indistinguishable from one that was (and one with a missing
    package was certainly not)."""
    plain: list[Edge] = []
    by_extra: dict[str, list[Requirement]] = {}
    for requirement in _parsed(lines):
        marker = requirement.marker
        if marker is None or marker.evaluate(environment):
            plain.append(Edge(requirer=requirer, requirement=requirement))
            continue
        if locked is None:
            continue
        for extra in sorted({canonicalize_name(e) for e in _EXTRA.findall(str(marker))}):
            if marker.evaluate({**environment, "extra": extra}):
                by_extra.setdefault(extra, []).append(requirement)
    taken = [
        Edge(requirer=requirer, requirement=requirement, extra=extra)
        for extra, requirements in sorted(by_extra.items())
        if locked is not None and all(canonicalize_name(r.name) in locked for r in requirements)
        for requirement in requirements
    ]
    return plain + taken


def edges(
    requires: Requires, target: Target, locked: frozenset[str] | None = None, wanted: Wanted | None = None
) -> list[Edge]:
    """Every dependency a locked wheel declares for the target, markers evaluated per platform; with
    `locked` (the locked names), also those of the extras that were taken; with `wanted`, only the
    edges it wants (the same ones as without it: other lines are skipped, not judged differently)."""
    found: dict[tuple[str, str], Edge] = {}
    for platform in sorted(requires):
        environment = marker_environment(target, platform)
        for requirer in sorted(requires[platform]):
            lines = requires[platform][requirer]
            if wanted is not None:
                lines = _could_give(requirer, lines, wanted)
            for edge in _platform_edges(requirer, lines, environment, locked):
                if wanted is not None and not wanted(requirer, canonicalize_name(edge.requirement.name)):
                    continue
                found.setdefault((requirer, str(edge.requirement)), edge)
    return [found[key] for key in sorted(found)]


def exact_pin(requirement: Requirement) -> str | None:
    for specifier in requirement.specifier:
        if specifier.operator in ("==", "===") and not specifier.version.endswith(".*"):
            return specifier.version
    return None


def fetch_requires(
    pins: Iterable[PythonPin],
    target: Target,
    fetch: Callable[[list[str]], Mapping[str, tuple[str, ...] | None]],
) -> Requires:
    """Requires-Dist of one installable wheel per pin and platform, through `fetch` (`URL#sha256=HEX` of
    each wheel -> its lines, None where none could be read)."""
    chosen: dict[str, dict[str, str]] = {}
    for platform in sorted(target.platforms):
        tags = target_tags(target, platform)
        for pin in pins:
            by_name = sorted(pin.wheels, key=lambda w: w.name)
            # A wheel built on the host has no URL to read; built pure, it brings no CUDA library either.
            installable = [w for w in by_name if w.url and wheel_installs(w.name, tags)]
            wheel = installable[0] if installable else None
            if wheel is not None:
                # Named with the PEP 503 hash fragment: what is read of a wheel is kept by its sha256
                # (mlenv.sources.python.requires), so the next lock of the same wheels reads nothing.
                url = wheel.url.split("#", 1)[0]
                chosen.setdefault(platform, {})[pin.name] = f"{url}#sha256={wheel.sha256}"
    answers = fetch(sorted({url for by_pin in chosen.values() for url in by_pin.values()}))
    return {
        platform: {name: lines for name, url in by_pin.items() if (lines := answers.get(url)) is not None}
        for platform, by_pin in chosen.items()
    }


def needs_metadata(pins: Iterable[PythonPin]) -> bool:
    """Only a lock with NVIDIA wheels or torch asks the index for wheel metadata; an extra that brings
    NVIDIA wheels (jax[cuda12]) locks them, so they are seen here."""
    return any(p.name == "torch" or p.name.startswith("nvidia-") for p in pins)
