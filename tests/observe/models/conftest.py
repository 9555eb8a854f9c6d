"""The model reader's tests: real model files made once per session, and loaders that must stay unused.

Every test here runs with pickle's and joblib's loaders replaced by ones that record the call: the
reader must learn everything without unpickling, so after each test the record must be empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra import required
from tests.unpickling import poison_loaders
from tools.localbase import models


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    calls = poison_loaders(monkeypatch)
    yield calls
    assert calls == [], f"the reader unpickled: {calls}"


class Made:
    """Model files written by the real libraries, each made on first use and kept for the session."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._made: dict[tuple[object, ...], Path] = {}

    def get(self, kind: str, **options: object) -> Path:
        key = (kind, *sorted(options.items()))
        if key not in self._made:
            make = getattr(models, f"{kind}_model")
            with required():
                self._made[key] = make(self.directory, **options)
        return self._made[key]


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    return Made(tmp_path_factory.mktemp("models"))
