"""`mlenv lock` re-locks apt as it does Python: the old lock's pins stay, --upgrade-apt moves one,
--upgrade moves all, end to end against a base image in the loopback registry and the real mirror.

The test base's sources list bookworm alone (one version of each package), so the base here is the
python test base with Debian's image sources (bookworm, bookworm-updates, bookworm-security), where
the packages below are served at two versions: the point release's and a newer update."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlenv.lockfile import read_lock
from mlenv.resolve.apt import fetch_suites, read_base_state
from mlenv.resolve.apt.sourceslist import parse_deb822_sources
from mlenv.resolve.apt.universe import Universe
from mlenv.sources.debian.archive import DebianArchive
from tests.helpers import run_cli
from tests.resolve.test_upgrade_apt import tree_reader
from tools.localbase.images import BaseImage, push_image
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
PACKAGES = ("unzip", "zip", "patch")
SPEC = """\
name = "apt-upgrades"

[base]
image = "{image}"

[apt]
packages = [{packages}]
"""


@pytest.fixture(scope="module")
def sources_base(base_image_python: BaseImage, docker_daemon: Any, registry: Registry) -> str:
    """The python test base with Debian's image sources, pushed to the loopback registry."""
    client = docker_daemon.client
    script = (
        "rm -f /etc/apt/sources.list && "
        f"cat > /etc/apt/sources.list.d/debian.sources <<'EOF'\n{DEBIAN_SOURCES}EOF"
    )
    container = client.containers.run(base_image_python.local, ["sh", "-c", script], detach=True)
    try:
        assert container.wait()["StatusCode"] == 0, container.logs()
        container.commit(repository="mlenv-test/upgrade-sources", tag="1")
    finally:
        container.remove(force=True)
    push_image(client, "mlenv-test/upgrade-sources:1", registry.host, "mlenv-test/upgrade-sources", "1")
    return f"{registry.host}/mlenv-test/upgrade-sources:1"


def write_spec(project: Path, image: str, packages: list[str]) -> None:
    quoted = ", ".join(f'"{p}"' for p in packages)
    project.joinpath("mlenv.toml").write_text(SPEC.format(image=image, packages=quoted))


def lock(project: Path, *flags: str) -> str:
    result = run_cli("lock", str(project), *flags)
    assert result.code == 0, result.stderr
    return result.stderr


def apt_text(project: Path) -> str:
    """The lock's apt tables, as written."""
    text = project.joinpath("mlenv.lock").read_text()
    return "".join(c for c in re.split(r"(?m)^(?=\[)", text) if c.startswith(("[apt", "[[apt")))


def versions(project: Path) -> dict[str, str]:
    return {p.name: p.version for p in read_lock(project / "mlenv.lock").apt.packages}


@pytest.fixture(scope="module")
def newest(sources_base: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    project = tmp_path_factory.mktemp("newest")
    write_spec(project, sources_base, list(PACKAGES))
    lock(project)
    return versions(project)


@pytest.fixture(scope="module")
def older(base_image_python: BaseImage) -> dict[str, str]:
    """name -> the second-newest version the mirror serves for the base with these sources."""
    state = read_base_state(*tree_reader(base_image_python.rootfs))
    origin = "/etc/apt/sources.list.d/debian.sources"
    state = replace(state, sources=parse_deb822_sources(DEBIAN_SOURCES, origin=origin))
    universe = Universe(fetch_suites(state, DebianArchive()), state)
    served = {name: [v.version for v in universe.versions((name, state.architecture))] for name in PACKAGES}
    assert all(len(v) >= 2 for v in served.values()), f"one version served: choose other packages {served}"
    return {name: versions[1] for name, versions in served.items()}


@pytest.fixture(scope="module")
def old_project(
    sources_base: str,
    newest: dict[str, str],
    older: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """Locked with an older served version of each package named in the spec, then relaxed to names."""
    project = tmp_path_factory.mktemp("old")
    write_spec(project, sources_base, [f"{name}={older[name]}" for name in PACKAGES])
    lock(project)
    old = versions(project)
    assert all(old[name] != newest[name] for name in PACKAGES), (old, newest)
    write_spec(project, sources_base, list(PACKAGES))
    return project


@pytest.fixture
def project(old_project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(old_project, tmp_path / "project"))


def test_relaxing_the_versions_keeps_the_apt_section_byte_identical(project: Path) -> None:
    before = apt_text(project)
    assert "unzip" in before
    stderr = lock(project)
    assert apt_text(project) == before
    assert not [line for line in stderr.splitlines() if line.startswith("apt:")]


def test_upgrade_apt_moves_one(project: Path, newest: dict[str, str]) -> None:
    old = versions(project)
    stderr = lock(project, "--upgrade-apt", "unzip")
    now = versions(project)
    assert {n for n in now if now[n] != old.get(n)} == {"unzip"}
    assert now["unzip"] == newest["unzip"]
    assert f"apt: unzip {old['unzip']} -> {newest['unzip']}" in stderr.splitlines()


def test_upgrade_moves_all(project: Path, newest: dict[str, str]) -> None:
    lock(project, "--upgrade")
    assert versions(project) == newest
