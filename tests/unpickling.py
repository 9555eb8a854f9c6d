"""Loaders that must stay unused: pickle's, _pickle's and joblib's, replaced by traps that record a call.

mlenv learns what a model holds without unpickling it; a test that uses `poison_loaders` asserts after
it ran that the record is empty.
"""

from __future__ import annotations

import _pickle
import pickle
import sys
import types

import pytest

LOADERS = ("load", "loads", "Unpickler", "_load", "_loads", "_Unpickler")


def poison_loaders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every loader by a trap; returns the list each trap appends its name to when called."""
    calls: list[str] = []

    def trap(name: str) -> object:
        def called(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise AssertionError(f"{name} was called: mlenv must never unpickle a model")

        return called

    for module in (pickle, _pickle):
        for attribute in LOADERS:
            if hasattr(module, attribute):
                monkeypatch.setattr(module, attribute, trap(f"{module.__name__}.{attribute}"))
    try:
        import joblib  # type: ignore[import-not-found, unused-ignore]

        monkeypatch.setattr(joblib, "load", trap("joblib.load"))
    except ImportError:
        # Not installed here: a stand-in whose load is a trap catches an `import joblib` in mlenv.
        stub = types.ModuleType("joblib")
        stub.load = trap("joblib.load")  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "joblib", stub)
    return calls
