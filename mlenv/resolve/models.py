"""Model artifacts of the lock: local files are hashed, remote ones carry the spec's sha256."""

from __future__ import annotations

from pathlib import Path

from mlenv.errors import SpecError
from mlenv.files import file_sha256
from mlenv.model.lock import LockedModel
from mlenv.model.spec import ModelSpec, Spec


def lock_model(spec: Spec, index: int, model: ModelSpec) -> LockedModel:
    if model.remote:
        assert model.sha256 is not None  # the spec reader requires it for URLs
        return LockedModel(
            source=model.source, target=model.target, strategy=model.strategy, sha256=model.sha256
        )
    path = Path(spec.project_dir, model.source)
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
