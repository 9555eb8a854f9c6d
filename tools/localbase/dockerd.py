"""A real Docker engine: the one DOCKER_HOST names, or a dockerd started here.

A started engine keeps its data root in the cache, so base images imported once are there for the next
run; sessions that run at the same time share it, and the last one to finish stops it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker

from tools.localbase import Unavailable
from tools.localbase.cache import cache_dir, cache_lock


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
    """The engine DOCKER_HOST names when it answers, else the dockerd whose data root is in the cache.

    While the cached engine is in use, DOCKER_HOST names it: mlenv, run as a subprocess, finds the engine
    the way a user's shell would. `timeout` is the client's, in seconds (pushes and builds are slow)."""
    root = cache_dir("docker")
    cached = f"unix://{root / 'docker.sock'}"
    existing = os.environ.get("DOCKER_HOST")
    if existing and existing != cached and answers(existing):
        yield Daemon(host=existing, client=docker.DockerClient(base_url=existing, timeout=timeout))
        return
    if shutil.which("dockerd") is None:
        raise Unavailable("docker", "dockerd is not installed (scripts/setup-machine installs docker.io)")
    if os.geteuid() != 0:
        raise Unavailable("docker", "starting dockerd needs root")
    # Sessions share the cached engine: each holds a shared lock on `users` while it uses it, and the
    # last one out (the only one that can take the lock exclusively) stops it. A session that started
    # it and leaves first would otherwise stop it under the others' feet.
    with (root / "users").open("a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        with cache_lock("dockerd-start"):  # two sessions starting at once start one engine
            process, host = start_dockerd(root)
        os.environ["DOCKER_HOST"] = host
        try:
            yield Daemon(host=host, client=docker.DockerClient(base_url=host, timeout=timeout))
        finally:
            if existing is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = existing
            if _last_user(users):
                _stop(root, process)


def _last_user(users: IO[str]) -> bool:
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _stop(root: Path, process: subprocess.Popen[bytes] | None) -> None:
    """Stop the cached engine: the process this session started, or the one its pidfile names."""
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        return
    try:
        pid = int((root / "docker.pid").read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return  # already gone
    if not command[0].endswith(b"dockerd") or str(root / "data").encode() not in command:
        return  # the pid was reused by another program: not ours to stop
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
