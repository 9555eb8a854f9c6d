"""Base image fixtures: Debian bookworm (minbase, and with python3; one for two platforms) made by
tools/localbase."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.infra import required
from tools.localbase.dockerd import Daemon
from tools.localbase.images import (
    BaseImage,
    debootstrap_rootfs,
    make_base_image,
    push_image,
    repository,
    rootfs_tar,
)
from tools.localbase.multiarch import ARCHITECTURES, IndexImage, make_index_image
from tools.localbase.registry import Registry


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the two-platform base's trees (about 7 minutes of emulated debootstrap on a fresh machine,
    on one core) while the tests before their first user run, when the session has one: the fixture then
    finds them cached, or waits on their cache lock."""
    if any("multiarch_base_image" in getattr(item, "fixturenames", ()) for item in session.items):
        threading.Thread(target=_prepare_trees, name="multiarch-trees", daemon=True).start()


def _prepare_trees() -> None:
    try:
        for arch in ARCHITECTURES:
            rootfs_tar(debootstrap_rootfs("python", arch))
    except Exception:  # the fixture builds them again and reports what is missing
        return


@pytest.fixture(scope="session")
def base_rootfs_minbase() -> Path:
    with required():
        return debootstrap_rootfs("minbase")


@pytest.fixture(scope="session")
def base_rootfs_python() -> Path:
    with required():
        return debootstrap_rootfs("python")


@pytest.fixture(scope="session")
def base_image_minbase(docker_daemon: Daemon, registry: Registry) -> BaseImage:
    with required():
        return make_base_image(docker_daemon, registry, "minbase")


@pytest.fixture(scope="session")
def base_image_python(docker_daemon: Daemon, registry: Registry) -> BaseImage:
    with required():
        return make_base_image(docker_daemon, registry, "python")


@pytest.fixture(scope="session")
def multiarch_base_image(registry: Registry) -> IndexImage:
    """The python base for linux/amd64 and linux/arm64 (debootstrap's second stage under qemu) as one
    index in the registry."""
    with required():
        return make_index_image(registry, "python")


@pytest.fixture(scope="session")
def auth_base_image(
    docker_daemon: Daemon, auth_registry: Registry, base_image_python: BaseImage
) -> BaseImage:
    """The python base image pushed to the registry that requires credentials."""
    assert auth_registry.username is not None and auth_registry.password is not None
    auth = {"username": auth_registry.username, "password": auth_registry.password}
    name = repository("python")
    digest = push_image(
        docker_daemon.client, base_image_python.local, auth_registry.host, name, "1", auth=auth
    )
    return BaseImage(
        name="python-auth",
        local=base_image_python.local,
        ref=f"{auth_registry.host}/{name}:1",
        digest=digest,
        archive=base_image_python.archive,
        oci=base_image_python.oci,
        rootfs=base_image_python.rootfs,
    )
