"""The session fixtures over tools/localbase: the engine, loopback registries, base images, the fraud image.

What they stand on lives in tools/localbase (shared with bench/ and scripts/demo.py); a component it
reports `Unavailable` skips the test locally and fails it in CI (tests.conftest.missing)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.conftest import missing
from tools.localbase import Unavailable


@contextmanager
def required() -> Iterator[None]:
    """Turn a missing component into the test policy's skip (locally) or failure (CI=true)."""
    try:
        yield
    except Unavailable as error:
        missing(error.component, error.reason)
