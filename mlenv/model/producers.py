"""Can the environment load a model? The rule `mlenv lock` refuses by and verify reports by. Pure, no IO.

A model is loaded by the library that wrote it. scikit-learn promises nothing across minor releases (a
1.5 pickle fails in 1.4 with `No module named '_loss'`), so a producer pinned at another major or minor
version is refused; a patch difference loads in practice and is one warning. A producer missing from
the environment is refused. A per-model `accept-producer = { LIBRARY = "VERSION" }` accepts one known
mismatch: the exact version named, so a later model written by yet another version is refused again.
An ONNX file names its converter, not its loader: it is held against the onnxruntime pinned, whose
releases each support a maximum IR version and opset (ONNX_RUNTIME below). A pickle that imports
something that runs code on load is refused whatever wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

from mlenv.model.modelfacts import ModelFacts

Severity = Literal["refuse", "warn"]
Where = Literal["lock", "image"]

# The distributions that provide the `onnxruntime` module (the GPU and DirectML builds are the same
# runtime release for release).
ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")

# onnxruntime release (major, minor) -> (max IR version, max ai.onnx opset, max ai.onnx.ml opset) it
# implements. Transcribed from onnxruntime's published compatibility table, "ONNX opset support"
# (https://onnxruntime.ai/docs/reference/compatibility.html), joined with onnx's own release table
# (https://github.com/onnx/onnx/blob/main/docs/Versioning.md, "Released Versions") where the first gives
# only the ONNX release. A release newer than the last row is checked against the last row (a warning
# says so); one older than the first cannot load what mlenv is asked about.
ONNX_RUNTIME: Mapping[tuple[int, int], tuple[int, int, int]] = {
    (1, 0): (6, 11, 2),
    (1, 1): (6, 11, 2),
    (1, 2): (6, 11, 2),
    (1, 3): (7, 12, 2),
    (1, 4): (7, 12, 2),
    (1, 5): (7, 12, 2),
    (1, 6): (7, 13, 2),
    (1, 7): (7, 13, 2),
    (1, 8): (7, 14, 2),
    (1, 9): (8, 15, 2),
    (1, 10): (8, 15, 2),
    (1, 11): (8, 16, 2),
    (1, 12): (8, 17, 3),
    (1, 13): (8, 17, 3),
    (1, 14): (8, 18, 3),
    (1, 15): (9, 19, 3),
    (1, 16): (9, 19, 3),
    (1, 17): (9, 20, 4),
    (1, 18): (10, 21, 4),
    (1, 19): (10, 21, 4),
    (1, 20): (10, 22, 4),
    (1, 21): (10, 22, 4),
    (1, 22): (11, 23, 5),
}
ONNX_DOMAINS = {"": "ai.onnx", "ai.onnx": "ai.onnx", "ai.onnx.ml": "ai.onnx.ml"}


@dataclass(frozen=True, kw_only=True)
class ProducerProblem:
    """One reason the environment may not load a model. `text` is a phrase without the model's name
    ("written by scikit-learn 1.5.2; the lock pins scikit-learn 1.4.2"): the caller says which model."""

    severity: Severity
    text: str
    library: str | None = None  # None for an unsafe pickle
    written: str | None = None  # the version that wrote the model; None when the file records none
    pinned: str | None = None  # the version the environment has; None when it has none


def producer_problems(
    facts: ModelFacts,
    pins: Mapping[str, str],
    *,
    accepted: Mapping[str, str] | None = None,
    where: Where = "lock",
) -> tuple[ProducerProblem, ...]:
    """Why an environment with `pins` (normalised name -> version) may not load the model `facts`
    describes, refusals first. `accepted` is the model's accept-producer (library -> the written version
    accepted); `where` words the environment: what the lock pins, or what the image installs."""
    accepted = accepted or {}
    problems: list[ProducerProblem] = []
    if facts.unsafe:
        problems.append(
            ProducerProblem(
                severity="refuse",
                text=f"an unsafe pickle: it imports {', '.join(facts.unsafe)}, which can run code on load",
            )
        )
    if facts.format == "unknown":
        # A file the reader does not recognise says nothing about what wrote it: unchecked, said once.
        why = facts.note or "mlenv does not read this format"
        problems.append(
            ProducerProblem(severity="warn", text=f"which library wrote it is not checked: {why}")
        )
    if facts.format == "onnx":
        problems += _onnx(facts, pins, where)
    else:
        for producer in facts.producers:
            problem = _producer(
                facts, producer.library, producer.version, pins.get(producer.library), accepted, where
            )
            if problem is not None:
                problems.append(problem)
    libraries = {p.library for p in facts.producers}
    # The other libraries a pickle imports (numpy, joblib): loading fails without them, but the
    # reader maps modules to projects by a table, so a miss is worth a look rather than a refusal.
    for key, library in facts.details:
        if key == "needs" and library not in libraries and library not in pins:
            problems.append(
                ProducerProblem(
                    severity="warn",
                    library=library,
                    text=f"it imports {library}; {_has(library, None, where)}",
                )
            )
    for library, version in sorted(accepted.items()):
        if library not in libraries:
            problems.append(
                ProducerProblem(
                    severity="warn",
                    library=library,
                    text=f"accept-producer names {library} {version}, which did not write this model",
                )
            )
    return tuple(sorted(problems, key=lambda p: p.severity != "refuse"))


def _has(library: str, version: str | None, where: Where) -> str:
    if version is None:
        return f"{library} is not in the lock" if where == "lock" else f"the image has no {library}"
    return f"the lock pins {library} {version}" if where == "lock" else f"the image has {library} {version}"


def _producer(
    facts: ModelFacts,
    library: str,
    written: str | None,
    pinned: str | None,
    accepted: Mapping[str, str],
    where: Where,
) -> ProducerProblem | None:
    by = f"written by {library} {written}" if written is not None else f"written by {library}"
    if written is not None and accepted.get(library) == written:
        return None
    if pinned is None:
        return ProducerProblem(
            severity="refuse", library=library, written=written, text=f"{by}; {_has(library, None, where)}"
        )
    if written is None:
        # The format does not say which version wrote it: the library is there, the version unproven.
        return ProducerProblem(
            severity="warn",
            library=library,
            pinned=pinned,
            text=f"{facts.format} records no {library} version, so {pinned} is not proven to load it",
        )
    step = _step(written, pinned)
    if step is None:
        return None
    return ProducerProblem(
        severity="refuse" if step == "minor" else "warn",
        library=library,
        written=written,
        pinned=pinned,
        text=f"{by}; {_has(library, pinned, where)}" + ("" if step == "minor" else ", a patch release apart"),
    )


def _step(written: str, pinned: str) -> Literal["minor", "patch"] | None:
    """None when the versions are the same release; "patch" when only what follows major.minor differs."""
    try:
        a, b = Version(written), Version(pinned)
    except InvalidVersion:
        return None if written == pinned else "minor"
    if a.release[:2] != b.release[:2] or a.epoch != b.epoch:
        return "minor"
    return None if a.public == b.public else "patch"


def _onnx(facts: ModelFacts, pins: Mapping[str, str], where: Where) -> list[ProducerProblem]:
    found = next(((name, pins[name]) for name in ONNX_RUNTIMES if name in pins), None)
    if found is None:
        return [
            ProducerProblem(
                severity="refuse",
                library="onnxruntime",
                text=f"an ONNX model; {_has('onnxruntime', None, where)}",
            )
        ]
    name, version = found
    try:
        release = Version(version).release
    except InvalidVersion:
        text = f"{name} {version} is not a PEP 440 version; its ONNX support is unknown"
        return [ProducerProblem(severity="warn", library=name, pinned=version, text=text)]
    key = (release[0], release[1] if len(release) > 1 else 0)
    problems: list[ProducerProblem] = []
    newest = max(ONNX_RUNTIME)
    if key not in ONNX_RUNTIME and key > newest:
        problems.append(
            ProducerProblem(
                severity="warn",
                library=name,
                pinned=version,
                text=f"{name} {version} is newer than mlenv's table; checked as {newest[0]}.{newest[1]}",
            )
        )
        key = newest
    limits = ONNX_RUNTIME.get(key)
    if limits is None:
        limits = (0, 0, 0)  # older than every row: it supports nothing mlenv can vouch for
    max_ir, max_opset, max_ml = limits
    details = dict(facts.details)
    wants: list[tuple[str, int, int]] = []
    if details.get("ir_version", "").isdigit():
        wants.append(("IR version", int(details["ir_version"]), max_ir))
    for key_name, value in sorted(details.items()):
        if key_name.startswith("opset:") and value.isdigit():
            domain = ONNX_DOMAINS.get(key_name.removeprefix("opset:"))
            if domain is not None:
                wants.append((f"{domain} opset", int(value), max_opset if domain == "ai.onnx" else max_ml))
    for what, needed, supported in wants:
        if needed > supported:
            problems.append(
                ProducerProblem(
                    severity="refuse",
                    library=name,
                    written=str(needed),
                    pinned=version,
                    text=f"needs {what} {needed}; {_has(name, version, where)}, which supports {supported}",
                )
            )
    return problems
