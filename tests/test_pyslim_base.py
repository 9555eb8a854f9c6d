"""The fraud detector on a python:3.11-slim-layout base (tools/localbase/pyslim.py: CPython 3.11.2 built
from Debian's source package into /usr/local with --enable-shared, pip from ensurepip, the build
dependencies purged), the base most users start from: lock, build, verify and inspect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from tests.helpers import lock_and_build, run_cli
from tests.infra import required
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage
from tools.localbase.project import copy_example, train_fraud_model
from tools.localbase.pyslim import MAJOR_MINOR, PYTHON_VERSION, SlimBase, make_slim_base
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

SITE = f"/usr/local/lib/python{MAJOR_MINOR}/site-packages"


@dataclass(frozen=True)
class SlimProject:
    project: Path
    tag: str


@pytest.fixture(scope="module")
def slim_base(docker_daemon: Daemon, registry: Registry, base_image_minbase: BaseImage) -> SlimBase:
    with required():
        return make_slim_base(docker_daemon, registry, base_image_minbase)


@pytest.fixture(scope="module")
def slim_project(slim_base: SlimBase, tmp_path_factory: pytest.TempPathFactory) -> SlimProject:
    project = copy_example("fraud-detector", tmp_path_factory.mktemp("pyslim"), base={"image": slim_base.ref})
    with required():
        train_fraud_model(project)
    return SlimProject(project=project, tag=lock_and_build(project, "fraud-pyslim"))


def _run(daemon: Daemon, image: str, script: str) -> str:
    output = daemon.client.containers.run(image, ["sh", "-c", script], remove=True, entrypoint=[], user="0")
    return bytes(output).decode()


def test_the_base_is_laid_out_as_the_official_slim_image(slim_base: SlimBase, docker_daemon: Daemon) -> None:
    config = docker_daemon.client.images.get(slim_base.local).attrs["Config"]
    assert f"PYTHON_VERSION={PYTHON_VERSION}" in config["Env"]
    assert config["Cmd"] == ["python3"]
    script = (
        "python -c 'import sys, sysconfig; print(sys.executable, sys.version.split()[0], "
        'sysconfig.get_config_var("Py_ENABLE_SHARED"), sysconfig.get_path("purelib"))\'; '
        "readlink /usr/local/bin/python /usr/local/bin/python3; command -v pip; "
        # The extension modules load: the purge kept the libraries they link.
        "python -c 'import bz2, ctypes, curses, dbm.gnu, lzma, pyexpat, readline, sqlite3, ssl, uuid, zlib' "
        "&& echo 'extensions load'; "
        "ldconfig -p | grep -c 'libpython3.11.so.1.0 .*/usr/local/lib/'; "
        "command -v gcc make wget || echo 'no build tools'"
    )
    lines = _run(docker_daemon, slim_base.local, script).splitlines()
    assert lines == [
        f"/usr/local/bin/python {PYTHON_VERSION} 1 {SITE}",
        "python3",
        f"python{MAJOR_MINOR}",
        "/usr/local/bin/pip",
        "extensions load",
        "1",
        "no build tools",
    ]


def test_the_lock_reads_the_interpreter_under_usr_local(slim_project: SlimProject) -> None:
    lock = read_lock(slim_project.project / "mlenv.lock")
    assert lock.base is not None
    assert [p.python for p in lock.base.platforms] == [PYTHON_VERSION]
    assert lock.target.python == PYTHON_VERSION
    # The base has no Debian python3: every apt pin is the spec's or what they pull in, none a python3.
    assert not [p.name for p in lock.apt.packages if p.name.startswith(("python3", "libpython3"))]
    # The purge took gcc's libgomp1 with it, so the spec's libgomp1 is a pin of the lock, not the base's.
    requested = {p.name for p in lock.apt.packages if p.requested}
    assert requested == {"libgomp1", "curl"}
    assert "libgomp1" not in {p.name for p in lock.base.platforms[0].packages}
    assert "python3" not in {p.name for p in lock.base.platforms[0].packages}


def test_the_image_verifies_and_serves_the_model(slim_project: SlimProject, docker_daemon: Daemon) -> None:
    verified = run_cli(
        "verify", f"docker-daemon:{slim_project.tag}", "--lock", str(slim_project.project / "mlenv.lock")
    )
    assert verified.code == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
    # The venv's interpreter is the base's /usr/local one, and it loads the model the app serves.
    script = (
        "readlink -f /opt/venv/bin/python; "
        "/opt/venv/bin/python -c 'import joblib; "
        'print(type(joblib.load("/app/models/model.joblib")).__name__)\''
    )
    lines = _run(docker_daemon, slim_project.tag, script).splitlines()
    assert lines[0] == f"/usr/local/bin/python{MAJOR_MINOR}"
    assert lines[1:] == ["Pipeline"]


def test_inspect_reports_the_base_interpreter_and_its_site(slim_project: SlimProject) -> None:
    result = run_cli("inspect", f"docker-daemon:{slim_project.tag}", "--format", "json")
    assert result.code == 0, result.stderr[-2000:]
    facts = json.loads(result.stdout)
    interpreters = {i["path"]: i["version"] for i in facts["interpreters"]}
    sites = {i["path"]: i["sites"] for i in facts["interpreters"]}
    assert interpreters[f"/usr/local/bin/python{MAJOR_MINOR}"] == PYTHON_VERSION
    assert sites[f"/usr/local/bin/python{MAJOR_MINOR}"] == [SITE]
    assert sites["/opt/venv/bin/python"] == ["/opt/venv/lib/python3.11/site-packages"]
    assert interpreters["/usr/local/bin/python3"] == PYTHON_VERSION
    assert "/usr/bin/python3" not in interpreters
    dist_sites = {d["name"]: d["site"] for d in facts["python_dists"]}
    assert dist_sites["pip"] == SITE  # ensurepip's, the base's own
    assert dist_sites["lightgbm"] == "/opt/venv/lib/python3.11/site-packages"
    text = run_cli("inspect", f"docker-daemon:{slim_project.tag}")
    line = f"python: /usr/local/bin/python{MAJOR_MINOR} {PYTHON_VERSION} (sites: {SITE})"
    assert line in text.stdout.splitlines()
