"""Is a lock still the lock of its spec? Answered without the network, for `mlenv lock --check`.

Two questions: did the spec change since the lock was made (its hash), and does the lock still say
what the spec says? The second compares every field the spec determines (the lock's projection onto
the spec) with what locking this spec would write there, so a hand edit of `name`, `app.user` or an
index URL is stale even when `spec-hash` was left alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlenv.files import file_sha256
from mlenv.model.lock import Lock
from mlenv.model.spec import Spec
from mlenv.model.target import Target
from mlenv.model.time import rfc3339
from mlenv.model.urls import redact
from mlenv.resolve.python import requested_names
from mlenv.spec import spec_hash

Projection = dict[str, object]


def spec_projection(spec: Spec, target: Target | None = None) -> Projection:
    """What `mlenv lock` writes from the spec alone, by lock key (the resolver adds the rest).

    With the lock's `target`, requirements whose marker excludes it are not counted as requested,
    as `mlenv lock` did not count them."""
    projection: Projection = {
        "name": spec.name,
        "as-of": spec.as_of,
        "target.source": "base-image" if spec.base is not None else "spec",
        "target.platforms": sorted(spec.base.platforms if spec.base is not None else spec.target.platforms),
        "base.reference": spec.base.image if spec.base is not None else None,
        "python.resolver": spec.python.resolver,
        "python.venv": spec.python.venv,
        "python.index-url": redact(spec.python.index_url),
        "python.extra-index-urls": [redact(u) for u in spec.python.extra_index_urls],
        "python.packages (requested)": sorted(requested_names(spec.python, target)),
        "python.sources (built on the host)": sorted(
            _source_shown(r.kind, r.location, r.tree_sha256, r.revision) for r in spec.python.sources
        ),
        "cuda.requested": spec.cuda.version or "none",
        "app.copy": sorted(spec.app.copy),
        "app.workdir": spec.app.workdir,
        "app.cmd": list(spec.app.cmd),
        "app.port": spec.app.port,
        "app.healthcheck": spec.app.healthcheck,
        "app.user": spec.app.user,
        "app.env": sorted(spec.app.env),
        "models": sorted(
            (m.target, m.source, m.strategy, m.sha256 if m.remote else None) for m in spec.app.models
        ),
    }
    if spec.base is None:
        # Without a base the target is the spec's own; with one it is read from the base.
        projection["target.python"] = spec.target.python
        projection["target.glibc"] = spec.target.glibc
    return projection


def lock_projection(lock: Lock, keys: set[str] | None = None) -> Projection:
    """The same keys, read from the lock."""
    projection: Projection = {
        "name": lock.name,
        "as-of": lock.as_of,
        "target.source": lock.target.source,
        "target.platforms": sorted(lock.target.platforms),
        "base.reference": lock.base.reference if lock.base is not None else None,
        "python.resolver": lock.python.resolver,
        "python.venv": lock.python.venv,
        "python.index-url": lock.python.index_url,
        "python.extra-index-urls": list(lock.python.extra_index_urls),
        # A directory or git pin is named by its build, not by the spec: compared by its source below.
        "python.packages (requested)": sorted(
            p.name for p in lock.python.packages if p.requested and p.source is None
        ),
        "python.sources (built on the host)": sorted(
            _source_shown(p.source.kind, p.source.url, p.source.tree_sha256, p.source.requested_revision)
            for p in lock.python.packages
            if p.source is not None
        ),
        "cuda.requested": lock.cuda.requested,
        "app.copy": sorted(lock.app.copy),
        "app.workdir": lock.app.workdir,
        "app.cmd": list(lock.app.cmd),
        "app.port": lock.app.port,
        "app.healthcheck": lock.app.healthcheck,
        "app.user": lock.app.user,
        "app.env": sorted(lock.app.env),
        "models": sorted(
            (m.target, m.source, m.strategy, m.sha256 if m.remote else None) for m in lock.models
        ),
        "target.python": lock.target.python,
        "target.glibc": lock.target.glibc,
    }
    return {k: v for k, v in projection.items() if keys is None or k in keys}


def _source_shown(kind: str, location: str, tree: str | None, revision: str | None) -> str:
    """A directory with its tree hash (a changed file is a changed source), a git URL with its ref."""
    if kind == "directory":
        return f"./{location} (tree sha256 {(tree or '')[:12]})"
    return f"git+{redact(location)}@{revision or 'HEAD'}"


def projection_reasons(spec: Spec, lock: Lock) -> list[str]:
    """One line per spec-determined lock field that differs from what the spec says."""
    wanted = spec_projection(spec, lock.target)
    found = lock_projection(lock, set(wanted))
    name = Path(spec.path).name
    return [
        f"{key}: the lock says {_shown(found[key])}, {name} says {_shown(wanted[key])}"
        for key in wanted
        if found[key] != wanted[key]
    ]


def stale_reasons(spec: Spec, lock: Lock) -> list[str]:
    """Why `lock` no longer matches `spec` (empty when it is fresh)."""
    reasons = []
    differing = projection_reasons(spec, lock)
    if lock.spec_hash != spec_hash(spec):
        reasons.append(_changed(spec, lock, spec_file_differs=bool(differing)))
    reasons += differing
    locked = {m.target: m for m in lock.models}
    for model in spec.app.models:
        entry = locked.get(model.target)
        if entry is None or model.remote:
            continue
        path = Path(spec.project_dir, model.source)
        if not path.is_file():
            reasons.append(f"model file {model.source} is missing")
        elif file_sha256(path) != entry.sha256:
            reasons.append(f"model file {model.source} changed (sha256 differs from the lock)")
    return reasons


def _changed(spec: Spec, lock: Lock, *, spec_file_differs: bool) -> str:
    """Which file changed, when the spec's hash differs: a requirements file (or pyproject.toml)
    whose requirement, constraint or hash the lock's pins no longer meet is named with what it asks;
    otherwise the spec file, which holds everything else the hash covers."""
    pins = {pin.name: pin for pin in lock.python.packages}
    origins: dict[str, list[str]] = {}
    for package, where in spec.python.origins:
        origins.setdefault(package, []).append(where)
    hashes = dict(spec.python.hashes)
    requested = requested_names(spec.python, lock.target)
    sources = sorted({where for _, where in spec.python.origins} - {spec.path})
    # file(s) -> the first requirement stated there that the lock does not meet
    unmet: dict[tuple[str, ...], str] = {}
    for text in (*spec.python.requirements, *spec.python.constraints):
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        pin = pins.get(name)
        if text in spec.python.requirements and name not in requested:
            continue  # its marker excludes the target: nothing was locked for it
        if pin is None or not requirement.specifier.contains(pin.version, prereleases=True):
            problem = f"{text} (the lock has {f'{name} {pin.version}' if pin else 'no ' + name})"
        elif name in hashes and any(
            file.sha256 not in hashes[name] for file in (*pin.wheels, *([pin.sdist] if pin.sdist else []))
        ):
            problem = f"other --hash values for {name}"
        else:
            continue
        for where in origins.get(name, [spec.path]):
            unmet.setdefault((where,), problem)
    asked = {canonicalize_name(Requirement(text).name) for text in spec.python.requirements}
    for pin in lock.python.packages:
        if pin.requested and pin.name not in asked and pin.source is None:
            # The file that dropped it asks for nothing now: any of them may have.
            unmet.setdefault((spec.path, *sources), f"{pin.name} is no longer asked for")
    if not unmet:
        # Nothing the lock pins contradicts a requirement: the change is elsewhere in the spec file
        # (certain when a field of it differs from the lock), or a requirement that the pins still
        # meet, a loosened bound, in any of the files.
        candidates = (spec.path,) if spec_file_differs else (spec.path, *sources)
        files = " or ".join(_shown_path(spec, where) for where in candidates)
        return f"{files} changed since the lock was made (spec-hash differs)"
    return "; ".join(
        f"{' or '.join(_shown_path(spec, w) for w in where)} changed since the lock was made: {problem}"
        for where, problem in sorted(unmet.items())
    )


def _shown_path(spec: Spec, where: str) -> str:
    """A source file as the user names it: relative to the project when inside it."""
    path = Path(where)
    try:
        return str(path.relative_to(spec.project_dir))
    except ValueError:
        return path.name if path == Path(spec.path) else where


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _shown(value: object) -> str:
    """A projected value as the lock's reader would write it (JSON): `"2024-07-01T00:00:00Z"`, `null`,
    lists for tuples; a newline in a hand-edited value stays an escape inside the one line."""
    return json.dumps(_plain(value), ensure_ascii=False)


def apt_as_of_gap(lock: Lock) -> str | None:
    """One line when the lock's apt pins could not be resolved at its `as-of`: no snapshot archive
    answered, so they come from a mirror dated after as-of (its sources say resolved-from = "mirror").

    Debian's indexes carry no per-package dates, so which pins are newer than as-of cannot be told
    without the snapshot: every pin of such a lock is named as possibly newer."""
    if lock.as_of is None or not lock.apt.packages:
        return None
    dates = sorted(
        when
        for source in lock.apt.sources
        if source.resolved_from == "mirror" and source.snapshot_timestamp
        for when in [_snapshot_time(source.snapshot_timestamp)]
        if when is not None and when > lock.as_of
    )
    if not dates:
        return None
    pins = ", ".join(f"{p.name} {p.version}" for p in sorted(lock.apt.packages, key=lambda p: p.name))
    return (
        f"apt: no snapshot archive answered for as-of {rfc3339(lock.as_of)}; the "
        f"{len(lock.apt.packages)} apt pins come from the mirror as of {rfc3339(dates[-1])} and may be "
        f"newer than as-of: {pins}"
    )


def _snapshot_time(stamp: str) -> datetime | None:
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
