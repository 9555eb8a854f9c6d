"""A real Docker engine for the tests: the one DOCKER_HOST names, or a dockerd the session starts.

The started engine keeps its data root in the test cache, so base images built once are there for
the next run; it is stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.conftest import missing
from tests.infra.cache import cache_dir


@dataclass(frozen=True)
class Daemon:
    host: str
    client: docker.DockerClient


def _answers(host: str) -> bool:
    try:
        docker.DockerClient(base_url=host, timeout=5).ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


def start_dockerd(root: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Start dockerd with its state under `root` (or reuse one already serving there)."""
    socket = root / "docker.sock"
    host = f"unix://{socket}"
    if _answers(host):
        return None, host
    log = (root / "dockerd.log").open("ab")
    process = subprocess.Popen(
        ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"), "--host", host,
         "--pidfile", str(root / "docker.pid"), "--storage-driver", "overlay2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {process.returncode}; see {root / 'dockerd.log'}")
        if _answers(host):
            return process, host
        time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"dockerd did not answer within 60 s; see {root / 'dockerd.log'}")


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[Daemon]:
    existing = os.environ.get("DOCKER_HOST")
    if existing and _answers(existing):
        yield Daemon(host=existing, client=docker.DockerClient(base_url=existing, timeout=600))
        return
    if shutil.which("dockerd") is None:
        missing("docker", "dockerd is not installed (scripts/setup-machine installs docker.io)")
    if os.geteuid() != 0:
        missing("docker", "starting dockerd needs root")
    process, host = start_dockerd(cache_dir("docker"))
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host  # mlenv's own code finds the engine the way a user's shell would
    try:
        yield Daemon(host=host, client=docker.DockerClient(base_url=host, timeout=600))
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
