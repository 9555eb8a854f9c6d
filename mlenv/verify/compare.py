"""EnvFacts x EnvFacts -> Report: one comparison engine for verify (lock vs image), diff (lock vs
lock) and check (lock vs running environment). Pure: no IO.

`expected` says what should be; only the parts it states are compared (an empty apt set in the
expectation still means "no packages"). Each difference is one typed Drift.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

from mlenv.model.facts import ConfigFact, EnvFacts, HealthcheckFact
from mlenv.model.modelfacts import ModelFacts
from mlenv.model.producers import producer_problems
from mlenv.model.report import LAYERS, Drift, Layer, Report, base_layer_name
from mlenv.verify.credentials import masked

K = TypeVar("K", bound=Hashable)


def compare(expected: EnvFacts, actual: EnvFacts, *, subject: str) -> Report:
    drifts = [
        *_base(expected, actual),
        *_os(expected, actual),
        *_apt(expected, actual),
        *_interpreters(expected, actual),
        *_python(expected, actual),
        *_python_files(expected, actual),
        *_keyed("cuda", {c.name: c.version for c in expected.cuda}, {c.name: c.version for c in actual.cuda}),
        *_models(expected, actual),
        *_labels(expected, actual),
        *_config(expected, actual),
    ]
    # The config layer is compared only where the expectation states a config (verify, not diff).
    # The files layer is verify's file accounting (verify.files), not a comparison of facts.
    layers = tuple(
        layer for layer in LAYERS if layer != "files" and (layer != "config" or expected.config is not None)
    )
    return Report(subject=subject, layers=layers, drifts=tuple(sorted(drifts, key=_order)))


def _order(drift: Drift) -> tuple[int, str, str]:
    return LAYERS.index(drift.layer), drift_subject(drift), drift.kind


def _base(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    want = expected.layer_diff_ids
    have = actual.layer_diff_ids[: len(want)]
    if want and have != want:
        index = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), len(have))
        yield Drift(
            layer="base",
            kind="layers",
            subject=base_layer_name(index + 1, len(want)),
            expected=want[index],
            actual=have[index] if index < len(have) else None,
        )


def _os(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    for field in ("os_id", "os_version", "architecture", "glibc"):
        want, have = getattr(expected, field), getattr(actual, field)
        if want is not None and want != have:
            yield Drift(
                layer="os", kind="version", subject=field.replace("_", "-"), expected=want, actual=have
            )


def _apt(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    """Packages keyed by (name, architecture). One present under another architecture is reported
    once, as an arch drift, instead of as a missing and an extra package."""
    want = {(p.name, p.architecture): p.version for p in expected.apt}
    have = {(p.name, p.architecture): p.version for p in actual.apt}
    missing = set(want) - set(have)
    extra = set(have) - set(want)
    for key in sorted(missing):
        other = next((k for k in sorted(extra) if k[0] == key[0]), None)
        if other is not None:
            missing.discard(key)
            extra.discard(other)
            yield Drift(
                layer="apt",
                kind="arch",
                subject=key[0],
                architecture=key[1],
                expected=want[key],
                actual_architecture=other[1],
                actual=have[other],
            )
    for name, arch in sorted(missing):
        yield Drift(layer="apt", kind="missing", subject=name, architecture=arch, expected=want[(name, arch)])
    for name, arch in sorted(extra):
        yield Drift(layer="apt", kind="extra", subject=name, architecture=arch, actual=have[(name, arch)])
    for name, arch in sorted(set(want) & set(have)):
        if want[(name, arch)] != have[(name, arch)]:
            yield Drift(
                layer="apt",
                kind="version",
                subject=name,
                architecture=arch,
                expected=want[(name, arch)],
                actual=have[(name, arch)],
            )


def _keyed(layer: Layer, want: Mapping[str, str], have: Mapping[str, str]) -> Iterable[Drift]:
    """missing / extra / version drifts between two name -> version maps."""
    for key in sorted(set(want) - set(have)):
        yield Drift(layer=layer, kind="missing", subject=key, expected=want[key])
    for key in sorted(set(have) - set(want)):
        yield Drift(layer=layer, kind="extra", subject=key, actual=have[key])
    for key in sorted(set(want) & set(have)):
        if want[key] != have[key]:
            yield Drift(layer=layer, kind="version", subject=key, expected=want[key], actual=have[key])


def _interpreters(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    found = {i.path: i.version for i in actual.interpreters}
    for interpreter in expected.interpreters:
        version = found.get(interpreter.path)
        if version != interpreter.version:
            yield Drift(
                layer="python-interpreter",
                kind="missing" if version is None else "version",
                subject=interpreter.path,
                expected=interpreter.version,
                actual=version,
            )


def _sites(expected: EnvFacts) -> frozenset[str]:
    return frozenset(d.site for d in expected.python_dists)


def _python(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    sites = _sites(expected)
    yield from _keyed(
        "python",
        {d.name: d.version for d in expected.python_dists},
        {d.name: d.version for d in actual.python_dists if d.site in sites},
    )


def _python_files(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    """Files of the image's distributions that do not match their RECORD. The observer checked the
    hashes, so the drift names the file; there is no value on either side to show."""
    sites = _sites(expected)
    for dist in sorted((d for d in actual.python_dists if d.site in sites), key=lambda d: d.name):
        for path in dist.modified_files:
            yield Drift(layer="python-files", kind="modified", subject=dist.name, file=path)
        for path in dist.missing_files:
            yield Drift(layer="python-files", kind="deleted", subject=dist.name, file=path)


def _models(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    """Each model by its sha256, then by what wrote it: the image's copy against the library the image
    installs (the rule `mlenv lock` refuses by, model/producers.py, with the lock's accept-producer),
    and against the producers the lock recorded."""
    found = {a.path: a for a in actual.artifacts}
    sites = _sites(expected)
    installed = {d.name: d.version for d in actual.python_dists if d.site in sites}
    for artifact in sorted(expected.artifacts, key=lambda a: a.path):
        have = found.get(artifact.path)
        if have is None or have.sha256 != artifact.sha256:
            yield Drift(
                layer="models",
                kind="missing" if have is None else "modified",
                subject=artifact.path,
                expected=artifact.sha256,
                actual=None if have is None else have.sha256,
            )
        if have is None:
            continue
        # The same bytes say the same: a copy too large to keep is judged by the lock's reading of it.
        model = have.model or (artifact.model if have.sha256 == artifact.sha256 else None)
        if model is None:
            continue
        accepted = dict(artifact.accept_producer)
        for problem in producer_problems(model, installed, accepted=accepted, where="image"):
            if problem.severity == "refuse":
                said, _, against = problem.text.partition("; ")
                yield Drift(
                    layer="models",
                    kind="producer",
                    subject=artifact.path,
                    expected=against or None,
                    actual=said,
                )
        # Only another file can have other producers: the same bytes read by a newer reader than the one
        # that made the lock may say more, which is no drift of the image.
        changed = have.sha256 != artifact.sha256
        if changed and artifact.model is not None and _writers(model) != _writers(artifact.model):
            yield Drift(
                layer="models",
                kind="version",
                subject=f"{artifact.path} producers",
                expected=_writers(artifact.model),
                actual=_writers(model),
            )


def _writers(model: ModelFacts) -> str:
    """`lightgbm, scikit-learn 1.4.2`: who wrote a model, as a drift shows it."""
    names = [f"{p.library} {p.version}" if p.version else p.library for p in model.producers]
    return ", ".join(names) if names else f"{model.format} (no producer recorded)"


def _labels(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    found = dict(actual.labels)
    for key, value in sorted(expected.labels):
        if found.get(key) != value:
            yield Drift(
                layer="labels",
                kind="missing" if key not in found else "version",
                subject=key,
                expected=value,
                actual=found.get(key),
            )


def _shown(value: object) -> str | None:
    """A config value as a report shows it: JSON for lists and healthchecks, None for an unset field."""
    if value is None:
        return None
    if isinstance(value, HealthcheckFact):
        return json.dumps(dataclasses.asdict(value), sort_keys=True)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return str(value)


def _config(expected: EnvFacts, actual: EnvFacts) -> Iterable[Drift]:
    """Every run-time field of the image config against what the lock and the locked base's config
    determine. Labels the labels layer checks are left to it, so a drift is reported once; the
    architecture is the os layer's."""
    want = expected.config
    if want is None:
        return
    have = actual.config or ConfigFact()
    for name, field in _SCALARS:
        a, b = getattr(want, field), getattr(have, field)
        if a != b:
            yield Drift(layer="config", kind="changed", subject=name, expected=_shown(a), actual=_shown(b))
    yield from _config_map("Env", dict(want.env), dict(have.env))
    checked = {key for key, _ in expected.labels}
    yield from _config_map(
        "Labels",
        {k: v for k, v in want.labels if k not in checked},
        {k: v for k, v in have.labels if k not in checked},
    )
    for name, field in (("ExposedPorts", "exposed_ports"), ("Volumes", "volumes")):
        a, b = set(getattr(want, field)), set(getattr(have, field))
        for item in sorted(a - b):
            yield Drift(layer="config", kind="missing", subject=f"{name} {item}", expected=item)
        for item in sorted(b - a):
            yield Drift(layer="config", kind="extra", subject=f"{name} {item}", actual=item)


_SCALARS = (
    ("User", "user"),
    ("Cmd", "cmd"),
    ("Entrypoint", "entrypoint"),
    ("WorkingDir", "working_dir"),
    ("Healthcheck", "healthcheck"),
    ("StopSignal", "stop_signal"),
    ("os", "os"),
)


def _config_map(name: str, want: Mapping[str, str], have: Mapping[str, str]) -> Iterable[Drift]:
    """Env or Labels, key by key. A value that holds a credential is shown masked: the drift says the
    variable changed, and a report never carries the secret (the policy finding names it too)."""
    for key in sorted(set(want) - set(have)):
        yield Drift(layer="config", kind="missing", subject=f"{name} {key}", expected=masked(key, want[key]))
    for key in sorted(set(have) - set(want)):
        yield Drift(layer="config", kind="extra", subject=f"{name} {key}", actual=masked(key, have[key]))
    for key in sorted(set(want) & set(have)):
        if want[key] != have[key]:
            yield Drift(
                layer="config",
                kind="changed",
                subject=f"{name} {key}",
                expected=masked(key, want[key]),
                actual=masked(key, have[key]),
            )


# ---------------------------------------------------------------------------- how a drift reads


def drift_subject(drift: Drift) -> str:
    """What drifted, as one name: `curl:amd64` for an apt package, `pandas: pandas/__init__.py` for a
    file of a distribution, else the subject itself. An arch drift is about the bare package name."""
    if drift.file is not None:
        return f"{drift.subject}: {drift.file}"
    if drift.architecture is not None and drift.kind != "arch":
        return f"{drift.subject}:{drift.architecture}"
    return drift.subject


def expected_text(drift: Drift) -> str | None:
    """The lock's side of `drift` as a reader sees it (None: the lock has nothing there)."""
    if drift.layer == "python-files":
        return "hash in RECORD" if drift.kind == "modified" else "listed in RECORD"
    if drift.kind == "arch":
        return f"{drift.architecture} {drift.expected}"
    return drift.expected


def actual_text(drift: Drift) -> str | None:
    """The image's side of `drift` as a reader sees it (None: the image has nothing there)."""
    if drift.layer == "python-files":
        return "different content" if drift.kind == "modified" else None
    if drift.kind == "arch":
        return f"{drift.actual_architecture} {drift.actual}"
    return drift.actual


def drift_line(drift: Drift) -> str:
    """One human line per drift, naming the layer, the thing and both sides."""
    expected, actual = expected_text(drift), actual_text(drift)
    if drift.kind == "missing":
        detail = f"missing (expected {expected})"
    elif drift.kind == "extra":
        detail = f"extra (found {actual}, not in the lock)"
    elif drift.kind == "changed":
        detail = f"expected {expected or 'unset'}, found {actual or 'unset'}"
    elif drift.kind == "producer":
        detail = f"{actual}; {expected}" if expected else f"{actual}"
    elif drift.kind in ("modified", "deleted"):
        detail = f"{drift.kind} ({expected}; found {actual or 'nothing'})"
    else:
        detail = f"{drift.kind}: expected {expected}, found {actual}"
    return f"{drift.layer}: {drift_subject(drift)}: {detail}"
