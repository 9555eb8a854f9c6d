"""Base image fixtures: Debian bookworm (minbase, and with python3; one for two platforms) made by
tools/localbase."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra import required
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, debootstrap_rootfs, make_base_image, push_image, repository
from tools.localbase.multiarch import IndexImage, make_index_image
from tools.localbase.registry import Registry


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
