"""`mlenv lock` on an Ubuntu 22.04-style base (the python test base with Ubuntu's os-release, sources.list
and keyrings, and NVIDIA's CUDA repository in sources.list.d with its own keyring), its apt packages from a
local archive laid out as Ubuntu's and a local repository laid out as NVIDIA's (tests/resolve/ubuntu_archive).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from tests.helpers import derive_image, run_cli, session_tag
from tests.resolve.ubuntu_archive import UbuntuServed, ubuntu_served_fixture  # noqa: F401  (the fixture)
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, push_image
from tools.localbase.registry import Registry
from tools.localbase.ubuntu import CUDA_KEYRING, UBUNTU_TRUSTED, ubuntu_base_context

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

SPEC = """\
name = "ubuntu-cuda-apt"

[base]
image = "{base}"
platforms = ["linux/amd64"]

[apt]
packages = ["hello", "libgomp1", "tree", "figlet"]
mirror = "{mirror}"

[cuda]
version = "none"
"""


@pytest.fixture(scope="module")
def ubuntu_base(
    docker_daemon: Daemon,
    registry: Registry,
    base_image_python: BaseImage,
    ubuntu_served: UbuntuServed,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The Ubuntu-style base, pushed to the session's registry (its cuda source names this run's port)."""
    context = tmp_path_factory.mktemp("ubuntu-base")
    lines = ubuntu_base_context(
        context,
        archive_key=ubuntu_served.archive_key.binary,
        cuda_key=ubuntu_served.cuda_key.binary,
        cuda_uri=ubuntu_served.cuda_uri(),
    )
    local = session_tag("jammy-style", base_image_python.ref, ubuntu_served.url.rsplit(":", 1)[1])
    derive_image(docker_daemon, context, base_image_python.local, local, lines)
    push_image(docker_daemon.client, local, registry.host, "mlenv-test/jammy-style", "1")
    return f"{registry.host}/mlenv-test/jammy-style:1"


def test_lock_on_an_ubuntu_base_records_the_ubuntu_pockets_and_the_nvidia_repository(
    ubuntu_base: str, ubuntu_served: UbuntuServed, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mlenv.toml").write_text(SPEC.format(base=ubuntu_base, mirror=ubuntu_served.mirror))
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr[-3000:]
    lock = read_lock(project / "mlenv.lock")

    assert [(p.os_id, p.os_version) for p in lock.base.platforms] == [("ubuntu", "22.04")]
    by_suite = {s.suite: s for s in lock.apt.sources}
    assert sorted(by_suite) == ["/", "jammy", "jammy-security", "jammy-updates"]
    for pocket in ("jammy", "jammy-updates", "jammy-security"):
        source = by_suite[pocket]
        assert source.mirror == ubuntu_served.mirror and source.signed_by == UBUNTU_TRUSTED
        assert source.components == ("main", "restricted", "universe", "multiverse")
        assert source.snapshot is not None and source.snapshot.startswith(
            "https://snapshot.ubuntu.com/ubuntu/"
        )
    cuda = by_suite["/"]
    assert cuda.mirror == ubuntu_served.cuda_uri() and cuda.signed_by == CUDA_KEYRING
    assert cuda.no_snapshot and cuda.snapshot is None and cuda.components == ()

    pins = {p.name: p for p in lock.apt.packages}
    assert {"hello", "libgomp1", "tree", "figlet"} <= set(pins)
    assert all(pins[n].requested for n in ("hello", "libgomp1", "tree", "figlet"))
    figlet = ubuntu_served.debs["figlet"]
    assert pins["figlet"].url == f"{ubuntu_served.cuda_uri()}/{figlet.path.name}"
    assert pins["figlet"].sha256 == figlet.control.split("SHA256: ")[1].split()[0]
    assert pins["hello"].filename.startswith("pool/main/h/hello/") and pins["hello"].url is None
    # A second lock reads the same: `lock --check` finds it current.
    check = run_cli("lock", str(project), "--check")
    assert check.code == 0, check.stderr[-2000:]
