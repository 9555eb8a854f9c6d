"""Debian's docker-registry (CNCF distribution) on 127.0.0.1: plain, or with htpasswd auth."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tools.localbase import Unavailable

BINARY = "docker-registry"


@dataclass(frozen=True, kw_only=True)
class Registry:
    host: str  # "127.0.0.1:PORT"
    username: str | None = None
    password: str | None = None
    docker_config: Path | None = None  # a DOCKER_CONFIG directory holding the credentials

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(directory: Path, auth: tuple[str, str] | None) -> tuple[subprocess.Popen[bytes], Registry]:
    port = _free_port()
    config = [
        "version: 0.1",
        "log: {level: warn}",
        f"storage: {{filesystem: {{rootdirectory: {directory / 'storage'}}}, delete: {{enabled: true}}}}",
        f"http: {{addr: 127.0.0.1:{port}}}",
    ]
    registry = Registry(host=f"127.0.0.1:{port}")
    if auth is not None:
        user, password = auth
        hashed = subprocess.run(
            ["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True
        )
        (directory / "htpasswd").write_text(hashed.stdout)
        config.append(f"auth: {{htpasswd: {{realm: mlenv-test, path: {directory / 'htpasswd'}}}}}")
        docker_config = directory / "docker-config"
        docker_config.mkdir()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        registry = Registry(host=registry.host, username=user, password=password, docker_config=docker_config)
    (directory / "config.yml").write_text("\n".join(config) + "\n")
    log = (directory / "registry.log").open("ab")
    process = subprocess.Popen(
        [BINARY, "serve", str(directory / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{registry.url}/v2/", timeout=2).status_code in (200, 401):
                return process, registry
        except requests.RequestException:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"docker-registry did not start; see {directory / 'registry.log'}")


@contextmanager
def serve_registry(directory: Path, *, auth: tuple[str, str] | None = None) -> Iterator[Registry]:
    """A registry with its storage and config under `directory` (which must exist), stopped on exit.

    With `auth` (user, password) it requires those credentials, and `docker_config` holds them."""
    if shutil.which(BINARY) is None:
        raise Unavailable("registry", f"{BINARY} is not installed (scripts/setup-machine installs it)")
    if auth is not None and shutil.which("htpasswd") is None:
        raise Unavailable(
            "registry", "htpasswd is not installed (apache2-utils); needed for an auth registry"
        )
    process, registry = _start(directory, auth)
    try:
        yield registry
    finally:
        process.terminate()
        process.wait(timeout=10)
