"""EnvFacts x EnvFacts -> Report: one comparison engine for verify (lock vs image), diff (lock vs
lock) and check (lock vs running environment). Pure: no IO.

`expected` says what should be; only the parts it states are compared (an empty apt set in the
expectation still means "no packages"). Each difference is one typed Drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from mlenv.model.facts import EnvFacts
from mlenv.model.report import Drift, Report

K = TypeVar("K", str, tuple[str, str])
LAYERS = ("base", "os", "apt", "python-interpreter", "python", "python-files", "cuda", "models", "labels")


def compare(expected: EnvFacts, actual: EnvFacts, *, subject: str) -> Report:
    drifts = [
        *_base(expected, actual),
        *_os(expected, actual),
        *_keyed("apt", {(p.name, p.architecture): p.version for p in expected.apt},
                {(p.name, p.architecture): p.version for p in actual.apt}, _apt_name, arch_aware=True),
        *_interpreters(expected, actual),
        *_python(expected, actual),
        *_python_files(expected, actual),
        *_keyed("cuda", {c.name: c.version for c in expected.cuda}, {c.name: c.version for c in actual.cuda}, str),
        *_models(expected, actual),
        *_labels(expected, actual),
    ]
    return Report(subject=subject, layers=LAYERS, drifts=tuple(sorted(drifts, key=_order)))


def _order(drift: Drift) -> tuple[int, str, str]:
    return LAYERS.index(drift.layer), drift.subject, drift.kind


def _base(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    want = expected.layer_diff_ids
    have = actual.layer_diff_ids[: len(want)]
    if want and have != want:
        index = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), len(have))
        yield Drift(layer="base", kind="layers", subject=f"layer {index + 1} of {len(want)}",
                    expected=want[index], actual=have[index] if index < len(have) else None)


def _os(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    for field in ("os_id", "os_version", "architecture", "glibc"):
        want, have = getattr(expected, field), getattr(actual, field)
        if want is not None and want != have:
            yield Drift(layer="os", kind="version", subject=field.replace("_", "-"), expected=want, actual=have)


def _apt_name(key: tuple[str, str]) -> str:
    return f"{key[0]}:{key[1]}"


def _keyed(layer: str, want: Mapping[K, str], have: Mapping[K, str], name: Callable[[K], str], *,
           arch_aware: bool = False) -> Iterable[Drift]:
    """missing / extra / version drifts between two name -> version maps.

    With `arch_aware`, keys are (name, arch) and a package present under another architecture is
    reported once as an arch drift instead of a missing + extra pair.
    """
    missing = set(want) - set(have)
    extra = set(have) - set(want)
    if arch_aware:
        for key in sorted(missing):
            other = next((k for k in sorted(extra) if k[0] == key[0]), None)
            if other is not None:
                missing.discard(key)
                extra.discard(other)
                yield Drift(layer=layer, kind="arch", subject=key[0], expected=f"{key[1]} {want[key]}",
                            actual=f"{other[1]} {have[other]}")
    for key in sorted(missing):
        yield Drift(layer=layer, kind="missing", subject=name(key), expected=want[key], actual=None)
    for key in sorted(extra):
        yield Drift(layer=layer, kind="extra", subject=name(key), expected=None, actual=have[key])
    for key in sorted(set(want) & set(have)):
        if want[key] != have[key]:
            yield Drift(layer=layer, kind="version", subject=name(key), expected=want[key], actual=have[key])


def _interpreters(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    found = {i.path: i.version for i in actual.interpreters}
    for interpreter in expected.interpreters:
        version = found.get(interpreter.path)
        if version != interpreter.version:
            yield Drift(layer="python-interpreter", kind="missing" if version is None else "version",
                        subject=interpreter.path, expected=interpreter.version, actual=version)


def _sites(expected: EnvFacts) -> frozenset[str]:
    return frozenset(d.site for d in expected.python_dists)


def _python(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    sites = _sites(expected)
    yield from _keyed("python", {d.name: d.version for d in expected.python_dists},
                      {d.name: d.version for d in actual.python_dists if d.site in sites}, str)


def _python_files(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    sites = _sites(expected)
    for dist in sorted((d for d in actual.python_dists if d.site in sites), key=lambda d: d.name):
        for path in dist.modified_files:
            yield Drift(layer="python-files", kind="modified", subject=f"{dist.name}: {path}",
                        expected="hash in RECORD", actual="different content")
        for path in dist.missing_files:
            yield Drift(layer="python-files", kind="deleted", subject=f"{dist.name}: {path}",
                        expected="listed in RECORD", actual=None)


def _models(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    found = {a.path: a.sha256 for a in actual.artifacts}
    for artifact in sorted(expected.artifacts, key=lambda a: a.path):
        have = found.get(artifact.path)
        if have != artifact.sha256:
            yield Drift(layer="models", kind="missing" if have is None else "modified", subject=artifact.path,
                        expected=artifact.sha256, actual=have)


def _labels(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    found = dict(actual.labels)
    for key, value in sorted(expected.labels):
        if found.get(key) != value:
            yield Drift(layer="labels", kind="missing" if key not in found else "version", subject=key,
                        expected=value, actual=found.get(key))


def drift_line(drift: Drift) -> str:
    """One human line per drift, naming the layer, the thing and both sides."""
    if drift.kind == "missing":
        detail = f"missing (expected {drift.expected})"
    elif drift.kind == "extra":
        detail = f"extra (found {drift.actual}, not in the lock)"
    elif drift.kind in ("modified", "deleted"):
        detail = f"{drift.kind} ({drift.expected}; found {drift.actual or 'nothing'})"
    else:
        detail = f"{drift.kind}: expected {drift.expected}, found {drift.actual}"
    return f"{drift.layer}: {drift.subject}: {detail}"
