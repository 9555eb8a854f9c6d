"""The test infrastructure itself: the engine, the registry and the base images are real and usable."""

from __future__ import annotations

import pytest
import requests

from tools.localbase.images import BaseImage
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]


def test_base_image_is_pushed_and_pullable_by_digest(base_image_python: BaseImage, docker_daemon) -> None:
    pulled = docker_daemon.client.images.pull(
        base_image_python.ref.rsplit(":", 1)[0] + "@" + base_image_python.digest
    )
    assert pulled.id == docker_daemon.client.images.get(base_image_python.local).id
    assert base_image_python.archive.stat().st_size > 10_000_000
    assert (base_image_python.oci / "index.json").is_file()


def test_auth_registry_refuses_anonymous(auth_registry: Registry) -> None:
    assert requests.get(f"{auth_registry.url}/v2/", timeout=5).status_code == 401
    answer = requests.get(
        f"{auth_registry.url}/v2/", auth=(auth_registry.username, auth_registry.password), timeout=5
    )
    assert answer.status_code == 200
