"""apt layer of the lock: the exact closure `apt-get install --no-install-recommends` would install.

The closure is resolved against the base image's own state (its dpkg status, apt sources and
keyrings), so packages the base already has at a good version are left alone, and the ones it
has at a version too old for a new dependency are upgraded, as apt would.

One job per module: state (the base's apt files), sourceslist (their formats), relations (Depends
atoms), universe (every known version), solver (apt's MarkInstall), request (`name=version`). The
indexes come in through a SuiteFetcher (mlenv.sources.debian.archive.DebianArchive, passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mlenv.errors import ResolutionError
from mlenv.model.debian import Keyring, SourceEntry, Suite
from mlenv.model.lock import AptPin, AptSource, LockedApt
from mlenv.model.spec import AptSpec
from mlenv.resolve.apt.request import AptRequest, parse_request, request_key
from mlenv.resolve.apt.solver import Solver
from mlenv.resolve.apt.state import AptBaseState, installed_records, is_base_state_path, read_base_state
from mlenv.resolve.apt.universe import PkgKey, Universe

__all__ = [
    "AptBaseState",
    "AptRequest",
    "AptResolution",
    "SuiteFetcher",
    "fetch_suites",
    "installed_records",
    "is_base_state_path",
    "lock_apt",
    "parse_request",
    "read_base_state",
    "resolve_apt",
]


class SuiteFetcher(Protocol):
    """What the resolver needs of a Debian archive: one suite of the base's sources, fetched and checked."""

    def fetch_suite(
        self,
        entry: SourceEntry,
        *,
        architectures: Sequence[str],
        keyrings: Sequence[Keyring],
        listed: Iterable[str] = (),
        as_of: datetime | None = None,
    ) -> Suite: ...


@dataclass(frozen=True, kw_only=True)
class AptResolution:
    pins: tuple[AptPin, ...]
    sources: tuple[AptSource, ...]
    notes: tuple[str, ...] = ()
    # Of `notes`, those the archive gave of its suites (snapshot unreachable, a mirror newer than as-of):
    # `mlenv lock` states them once, in its freshness warning, instead of once per suite.
    source_notes: tuple[str, ...] = ()

    def locked(self) -> LockedApt:
        return LockedApt(sources=self.sources, packages=self.pins)


def resolve_apt(
    requests: Sequence[str],
    base: AptBaseState,
    suites: Sequence[Suite],
    *,
    prefer: Mapping[PkgKey, str] | None = None,
) -> AptResolution:
    """The closure `apt-get install --no-install-recommends REQUESTS` installs on `base` from `suites`,
    keeping the versions in `prefer` (the old lock's) where they still do (solver.py)."""
    notes = list(base.notes)
    source_notes = [note for suite in suites for note in suite.notes]
    notes += source_notes
    universe = Universe(suites, base)
    solver = Solver(universe, prefer=prefer)
    keys: list[PkgKey] = []
    for text in requests:
        request = parse_request(text)
        key = request_key(request, universe, solver, notes)
        if key not in keys:
            keys.append(key)
    solver.install(keys)

    broken = list(solver.broken())
    failing = [k for k in keys if k in solver.failures or any(v.key == k for v, _ in broken)]
    removal = ""
    if solver.removals:
        removed, why = solver.removals[0]
        removal = f"; apt would remove {solver.label(removed)} from the base ({why})"
    if failing:
        raise ResolutionError(
            f"cannot install {solver.label(failing[0])}: {solver.explain(failing[0])}{removal}"
        )
    wanted = ", ".join(solver.label(k) for k in keys)
    if broken:
        ver, why = broken[0]
        raise ResolutionError(
            f"cannot install {wanted}: {solver.label(ver.key)} {ver.version}: {why}{removal}"
        )
    if solver.removals:
        raise ResolutionError(
            f"cannot install {wanted} without changing the base{removal}",
            hint="mlenv locks installs and upgrades only",
        )

    pins = []
    for ver in solver.changes():
        record = ver.record
        if ver.suite < 0 or "Filename" not in record:
            raise ResolutionError(f"{ver.name} {ver.version} is to be installed but no index has its .deb")
        if "SHA256" not in record or "Size" not in record:
            raise ResolutionError(
                f"{ver.name} {ver.version}: its index lists no SHA256 and Size; it cannot be locked"
            )
        source = suites[ver.suite].source
        # A pin from a source no snapshot service keeps (a vendor's repository) is recorded at its URL.
        url = f"{source.mirror.rstrip('/')}/{record['Filename']}" if source.no_snapshot else None
        pins.append(
            AptPin(
                name=ver.name,
                version=ver.version,
                architecture=ver.arch,
                filename=record["Filename"],
                size=int(record["Size"]),
                sha256=record["SHA256"],
                requested=ver.key in keys,
                url=url,
            )
        )
    pins.sort(key=lambda p: (p.name, p.architecture))
    for key in keys:
        if not solver.marked(key):
            current = universe.installed.get(key)
            notes.append(
                f"{key[0]} is already the newest version in the base ({current.version if current else '?'})"
            )
    sources = tuple(sorted((s.source for s in suites), key=lambda s: (s.mirror, s.suite)))
    return AptResolution(
        pins=tuple(pins),
        sources=sources,
        notes=tuple(dict.fromkeys(notes)),
        source_notes=tuple(dict.fromkeys(source_notes)),
    )


def fetch_suites(
    base: AptBaseState, archive: SuiteFetcher, *, as_of: datetime | None = None
) -> tuple[Suite, ...]:
    """Every suite the base's sources list, fetched and checked (network, through `archive`)."""
    merged: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], SourceEntry] = {}
    for entry in base.sources:
        key = (entry.uri, entry.suite, entry.architectures, entry.signed_by)
        if key in merged:
            previous = merged[key]
            components = tuple(dict.fromkeys(previous.components + entry.components))
            merged[key] = SourceEntry(
                uri=previous.uri,
                suite=previous.suite,
                components=components,
                architectures=previous.architectures,
                signed_by=previous.signed_by,
                origin=previous.origin,
            )
        else:
            merged[key] = entry
    if not merged:
        raise ResolutionError("the base image lists no apt sources (/etc/apt/sources.list, sources.list.d)")
    listed = [e.uri for e in merged.values()]
    configured = (base.architecture, *base.foreign_architectures)
    suites = []
    for entry in merged.values():
        archs = [a for a in configured if not entry.architectures or a in entry.architectures]
        if not archs:
            continue
        suites.append(
            archive.fetch_suite(
                entry, architectures=archs, keyrings=base.keyrings, listed=listed, as_of=as_of
            )
        )
    return tuple(suites)


def lock_apt(
    spec: AptSpec,
    base: AptBaseState,
    *,
    archive: SuiteFetcher,
    as_of: datetime | None = None,
    prefer: Mapping[PkgKey, str] | None = None,
) -> AptResolution:
    """The apt section of the lock: fetch the base's indexes through `archive` (which applies the spec's
    mirror) and resolve, preferring the old lock's versions (`prefer`, (name, arch) -> version)."""
    if not spec.packages:
        return AptResolution(pins=(), sources=())
    suites = fetch_suites(base, archive, as_of=as_of)
    return resolve_apt(spec.packages, base, suites, prefer=prefer)
