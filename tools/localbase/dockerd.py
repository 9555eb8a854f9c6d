"""A real Docker engine: the one DOCKER_HOST names, or a dockerd started here.

A started engine keeps its data root in the cache, so base images imported once are there for the next
run; it is stopped when the context ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from tools.localbase import Unavailable
from tools.localbase.cache import cache_dir


@dataclass(frozen=True, kw_only=True)
class Daemon:
    host: str
    client: docker.DockerClient


def answers(host: str) -> bool:
    try:
        docker.DockerClient(base_url=host, timeout=5).ping()
        return True
    except Exception:  # any failure means "not usable"
        return False


def start_dockerd(root: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Start dockerd with its state under `root` (or reuse one already serving there)."""
    socket = root / "docker.sock"
    host = f"unix://{socket}"
    if answers(host):
        return None, host
    log = (root / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--host",
            host,
            "--pidfile",
            str(root / "docker.pid"),
            "--storage-driver",
            "overlay2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited with {process.returncode}; see {root / 'dockerd.log'}")
        if answers(host):
            return process, host
        time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"dockerd did not answer within 60 s; see {root / 'dockerd.log'}")


@contextmanager
def engine(*, timeout: int = 600) -> Iterator[Daemon]:
    """The engine DOCKER_HOST names when it answers, else a dockerd started with its data root in the cache.

    While a started engine runs, DOCKER_HOST names it: mlenv, run as a subprocess, finds the engine the
    way a user's shell would. `timeout` is the client's, in seconds (pushes and builds are slow)."""
    existing = os.environ.get("DOCKER_HOST")
    if existing and answers(existing):
        yield Daemon(host=existing, client=docker.DockerClient(base_url=existing, timeout=timeout))
        return
    if shutil.which("dockerd") is None:
        raise Unavailable("docker", "dockerd is not installed (scripts/setup-machine installs docker.io)")
    if os.geteuid() != 0:
        raise Unavailable("docker", "starting dockerd needs root")
    process, host = start_dockerd(cache_dir("docker"))
    os.environ["DOCKER_HOST"] = host
    try:
        yield Daemon(host=host, client=docker.DockerClient(base_url=host, timeout=timeout))
    finally:
        if existing is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = existing
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
