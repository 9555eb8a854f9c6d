"""The engine fixture: the one DOCKER_HOST names, or a dockerd the session starts (and stops at its end)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.infra import required
from tools.localbase.dockerd import Daemon, engine


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[Daemon]:
    with required(), engine(timeout=600) as daemon:
        yield daemon
