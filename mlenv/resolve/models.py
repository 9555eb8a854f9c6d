"""Model artifacts of the lock: local files are hashed and read (never executed); remote ones carry the
spec's sha256 and are fetched into the artifact cache to be read the same way. What a file says about its
producer is held against the Python pins (model/producers.py): a model the locked environment cannot
load is refused here, before anything is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from mlenv.errors import BuildError, MlenvError, SourceError, SpecError
from mlenv.files import file_sha256, inside
from mlenv.model.lock import LockedModel, LockedPython
from mlenv.model.modelfacts import ModelFacts
from mlenv.model.producers import ONNX_RUNTIMES, ProducerProblem, producer_problems
from mlenv.model.spec import ModelSpec, Spec
from mlenv.model.urls import redact
from mlenv.sources.cas import ContentStore
from mlenv.sources.http import download_chunks
from mlenv.spec import quoted


def lock_model(spec: Spec, index: int, model: ModelSpec) -> LockedModel:
    if model.remote:
        assert model.sha256 is not None  # the spec reader requires it for URLs
        return LockedModel(
            source=model.source,
            target=model.target,
            strategy=model.strategy,
            sha256=model.sha256,
            accept_producer=model.accept_producer,
        )
    # The spec reader refuses a source out of the project; checked again where the file is read, so a
    # Spec built by other code cannot have a host file hashed into a lock either.
    path = inside(Path(spec.project_dir), model.source)
    if path is None:
        raise SpecError(
            spec.path, f"app.models[{index}].source", f"{quoted(model.source)} is outside the project"
        )
    if not path.is_file():
        raise SpecError(
            spec.path,
            f"app.models[{index}].source",
            f"no such file: {model.source}",
            hint="create the model first (see the example's train script)",
        )
    digest = file_sha256(path)
    if model.sha256 is not None and model.sha256 != digest:
        raise SpecError(spec.path, f"app.models[{index}].sha256", f"does not match {model.source} ({digest})")
    return LockedModel(
        source=model.source,
        target=model.target,
        strategy=model.strategy,
        sha256=digest,
        size=path.stat().st_size,
        facts=_read(spec, index, model, path),
        accept_producer=model.accept_producer,
    )


def fetch_remote(
    spec: Spec, index: int, model: LockedModel, *, store: ContentStore, warn: Callable[[str], None]
) -> LockedModel:
    """A remote model fetched into the content-addressed cache (once per sha256; the spec's sha256 is
    checked before the file is used) and read like a local one. A model that cannot be fetched from
    here (a URL only production reaches) is locked unread, with one warning: its producer is unchecked."""
    key = f"app.models[{index}]"
    try:
        path = store.fetch(model.sha256, lambda: download_chunks(model.source), what=redact(model.source))
    except SourceError as error:
        warn(f"{spec.path}: {key}: {error.message}; which library version wrote it is not checked")
        return model
    except BuildError as error:
        raise SpecError(spec.path, f"{key}.sha256", error.message) from None
    spec_model = spec.app.models[index]
    return dataclasses.replace(model, size=path.stat().st_size, facts=_read(spec, index, spec_model, path))


def _read(spec: Spec, index: int, model: ModelSpec, path: Path) -> ModelFacts:
    """The file's own account of itself. A file the reader refuses (malformed, hostile) is a spec
    error naming the model: the lock would otherwise vouch for a file nobody could check."""
    # The model readers come with the image observer's package (~0.1 s of imports): a lock without
    # models does not pay for them.
    from mlenv.observe.models import read_model

    try:
        with path.open("rb") as stream:
            facts = read_model(stream, name=redact(model.source))
    except OSError as error:
        raise SpecError(
            spec.path, f"app.models[{index}].source", f"cannot read {redact(model.source)}: {error.strerror}"
        ) from None
    except MlenvError as error:
        raise SpecError(spec.path, f"app.models[{index}].source", error.message) from None
    return facts


def recorded(facts: ModelFacts) -> ModelFacts:
    """The part of `facts` a lock records (see LockedModel.facts)."""
    return ModelFacts(format=facts.format, producers=facts.producers, details=facts.details, note=facts.note)


def lock_models(
    spec: Spec,
    python: LockedPython,
    *,
    warn: Callable[[str], None] = lambda _: None,
    store: ContentStore | None = None,
) -> tuple[LockedModel, ...]:
    """Every model of the spec, locked and held against the Python pins: a refusal is a SpecError
    naming the model, the version that wrote it and the one the lock pins; a patch difference, a format
    without a producer version or a remote model that cannot be fetched is one warning each. Remote
    models are fetched into `store` (default: the artifact cache, where `mlenv build` looks too)."""
    pins = {pin.name: pin.version for pin in python.packages}
    locked = []
    for index, model in enumerate(spec.app.models):
        entry = lock_model(spec, index, model)
        key, shown = f"app.models[{index}]", redact(model.source)
        if entry.remote:
            entry = fetch_remote(spec, index, entry, store=store or ContentStore(), warn=warn)
        if entry.facts is None:
            locked.append(entry)
            continue
        for problem in producer_problems(entry.facts, pins, accepted=dict(entry.accept_producer)):
            if problem.severity == "refuse":
                raise SpecError(spec.path, key, f"{shown}: {problem.text}", hint=_hint(problem))
            warn(f"{spec.path}: {key}: {shown}: {problem.text}")
        locked.append(dataclasses.replace(entry, facts=recorded(entry.facts)))
    return tuple(locked)


def _hint(problem: ProducerProblem) -> str | None:
    """How to resolve a refusal: re-save, pin the writer's version, or accept this one mismatch."""
    library, written, pinned = problem.library, problem.written, problem.pinned
    if library is None:
        return "never load this file; save the model again from a trusted training run"
    if library in ONNX_RUNTIMES:
        return f"pin a newer {library}, or export the model for an older opset"
    if written is None:
        return f"add {library} to the requirements"
    accept = f'or accept it in the spec: accept-producer = {{ {library} = "{written}" }}'
    if pinned is None:
        return f"add {library}=={written} to the requirements, {accept}"
    return f"re-save it with {library} {pinned}, pin {library}=={written}, {accept}"
