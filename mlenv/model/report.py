"""The outcome of a comparison: typed drifts, one per difference, grouped by layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Drift:
    layer: str  # "base", "os", "apt", "python", "python-files", "cuda", "models", "labels"
    kind: str  # "missing", "extra", "version", "arch", "modified", ...
    subject: str
    expected: str | None
    actual: str | None


@dataclass(frozen=True, kw_only=True)
class Report:
    subject: str  # what was checked, e.g. the image reference
    layers: tuple[str, ...]  # every layer that was compared, drift or not
    drifts: tuple[Drift, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.drifts
