"""Model artifacts of the lock: local files are hashed, remote ones carry the spec's sha256."""

from __future__ import annotations

from pathlib import Path

from mlenv.errors import SpecError
from mlenv.files import file_sha256, inside
from mlenv.model.lock import LockedModel
from mlenv.model.spec import ModelSpec, Spec
from mlenv.spec import quoted


def lock_model(spec: Spec, index: int, model: ModelSpec) -> LockedModel:
    if model.remote:
        assert model.sha256 is not None  # the spec reader requires it for URLs
        return LockedModel(
            source=model.source, target=model.target, strategy=model.strategy, sha256=model.sha256
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
    )


def lock_models(spec: Spec) -> tuple[LockedModel, ...]:
    return tuple(lock_model(spec, index, model) for index, model in enumerate(spec.app.models))
