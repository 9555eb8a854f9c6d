"""Registry fixtures: Debian's docker-registry on 127.0.0.1, plain and with htpasswd auth, one per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.infra import required
from tools.localbase.registry import Registry, serve_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with required(), serve_registry(tmp_path_factory.mktemp("registry")) as served:
        yield served


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with (
        required(),
        serve_registry(tmp_path_factory.mktemp("auth-registry"), auth=("mlenv", "s3cret-pa55")) as served,
    ):
        yield served
