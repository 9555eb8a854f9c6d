"""Is a lock still the lock of its spec? Answered without the network, for `mlenv lock --check`."""

from __future__ import annotations

from pathlib import Path

from mlenv.files import file_sha256
from mlenv.model.lock import Lock
from mlenv.model.spec import Spec
from mlenv.spec import spec_hash


def stale_reasons(spec: Spec, lock: Lock) -> list[str]:
    """Why `lock` no longer matches `spec` (empty when it is fresh)."""
    reasons = []
    if lock.spec_hash != spec_hash(spec):
        reasons.append(f"{Path(spec.path).name} changed since the lock was made (spec-hash differs)")
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
