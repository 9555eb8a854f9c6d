"""`mlenv lock` against a base image in the loopback registry: digest pinned, target read from it."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from tests.helpers import run_cli
from tools.localbase.images import BaseImage
from tools.localbase.project import copy_example, train_fraud_model
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]


@pytest.fixture(scope="module")
def locked_example(base_image_python: BaseImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_example(
        "fraud-detector", tmp_path_factory.mktemp("base"), base={"image": base_image_python.ref}
    )
    train_fraud_model(project)
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    return project


def test_base_digest_is_the_pushed_digest(
    locked_example: Path, base_image_python: BaseImage, docker_daemon
) -> None:
    lock = read_lock(locked_example / "mlenv.lock")
    assert lock.base is not None and lock.base.digest == base_image_python.digest
    platform = lock.base.platforms[0]
    assert (
        list(platform.diff_ids)
        == docker_daemon.client.images.get(base_image_python.local).attrs["RootFS"]["Layers"]
    )
    assert (platform.os_id, platform.os_version, platform.glibc) == ("debian", "12", "2.36")
    assert platform.python == "3.11.2"
    assert {p.name for p in platform.packages} >= {"libc6", "python3.11", "dpkg"}


def test_target_comes_from_the_base(locked_example: Path) -> None:
    lock = read_lock(locked_example / "mlenv.lock")
    assert (lock.target.source, lock.target.python, lock.target.glibc) == ("base-image", "3.11.2", "2.36")


def test_apt_closure_is_locked_with_hashes(locked_example: Path) -> None:
    lock = read_lock(locked_example / "mlenv.lock")
    pins = {p.name: p for p in lock.apt.packages}
    assert pins["libgomp1"].requested and pins["curl"].requested
    assert any(not p.requested for p in pins.values())  # curl pulls in libcurl4 and more
    assert all(len(p.sha256) == 64 and p.filename.startswith("pool/") for p in pins.values())


def test_auth_registry_with_docker_config(
    auth_base_image: BaseImage, auth_registry: Registry, tmp_path: Path
) -> None:
    project = copy_example("fraud-detector", tmp_path, base={"image": auth_base_image.ref}, apt=None)
    (project / "models").mkdir(exist_ok=True)
    (project / "models" / "model.joblib").write_bytes(pickle.dumps("stand-in"))
    denied = run_cli("lock", str(project), env=_env(DOCKER_CONFIG=str(tmp_path / "no-config")))
    assert denied.code == 2 and auth_registry.host in denied.stderr and "credentials" in denied.stderr
    assert auth_registry.password not in denied.stderr
    allowed = run_cli("lock", str(project), env=_env(DOCKER_CONFIG=str(auth_registry.docker_config)))
    assert allowed.code == 0, allowed.stderr
    lock = read_lock(project / "mlenv.lock")
    assert lock.base is not None and lock.base.digest == auth_base_image.digest


def _env(**extra: str) -> dict[str, str]:
    import os

    return {**os.environ, **extra}
