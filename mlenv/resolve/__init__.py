"""Spec -> Lock: resolve every layer of the environment, one module per layer.

The resolution itself lives in mlenv.resolve.lock. This package imports nothing: a submodule that
`mlenv lock --check` needs (freshness, python) must not load the base reader, the apt solver and the
observer with it. The names below stay importable from here, loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlenv.resolve.lock import Sources, WheelRequires, resolve_lock, target_from_spec

__all__ = ["Sources", "WheelRequires", "resolve_lock", "target_from_spec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("mlenv.resolve.lock"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
