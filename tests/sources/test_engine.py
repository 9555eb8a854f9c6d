"""The engine source without an engine: what a broken connection becomes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from mlenv.errors import SourceError
from mlenv.sources.engine import Engine


class CutApi:
    """A low-level API whose build stream breaks after one line, as when dockerd restarts mid-build."""

    def build(self, **options: Any) -> Iterator[dict[str, Any]]:
        yield {"stream": "Step 1/2 : FROM x\n"}
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(0 bytes read)")


class CutClient:
    api = CutApi()


def test_a_cut_build_stream_is_a_source_error_not_a_crash() -> None:
    engine = Engine(CutClient())  # type: ignore[arg-type]
    stream = engine.build(path=".", tag="x:1")
    assert next(stream) == {"stream": "Step 1/2 : FROM x\n"}
    with pytest.raises(SourceError, match="docker build could not run: .*Connection broken"):
        next(stream)
