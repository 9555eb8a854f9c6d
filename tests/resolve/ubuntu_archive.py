"""A signed archive laid out as Ubuntu's and a flat repository laid out as NVIDIA's CUDA one, served on
127.0.0.1 (tools/localbase/ubuntu.py writes and serves them: real bookworm .debs, signed with keys made
there). Shared by the resolver tests and the `mlenv lock` test on an Ubuntu-style base."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import missing
from tools.localbase.ubuntu import UbuntuServed, served_ubuntu

__all__ = ["UbuntuServed", "ubuntu_served_fixture"]

# Which real .deb each pocket and component holds: one in each, so a pin names the pocket it came from.
LAYOUT = {
    "jammy": {"main": ("hello",)},
    "jammy-updates": {"main": ("libgomp1",)},
    "jammy-security": {"universe": ("tree",)},
}
CUDA_PACKAGES = ("figlet",)


@pytest.fixture(scope="module", name="ubuntu_served")
def ubuntu_served_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UbuntuServed]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None or shutil.which("dpkg-deb") is None:
        missing("gpg", "gpg, gpgv and dpkg-deb are needed to make and verify the test archives")
    with served_ubuntu(tmp_path_factory.mktemp("ubuntu-archive"), LAYOUT, CUDA_PACKAGES) as served:
        yield served
