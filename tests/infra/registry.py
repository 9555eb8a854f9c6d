"""Debian's docker-registry (CNCF distribution) on 127.0.0.1: plain, and with htpasswd auth."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import missing

BINARY = "docker-registry"


@dataclass(frozen=True)
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


def start_registry(directory: Path, *, auth: tuple[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Registry]:
    """Serve a registry with storage under `directory`; returns the process and how to reach it."""
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
        hashed = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True)
        (directory / "htpasswd").write_text(hashed.stdout)
        config.append(f"auth: {{htpasswd: {{realm: mlenv-test, path: {directory / 'htpasswd'}}}}}")
        docker_config = directory / "docker-config"
        docker_config.mkdir()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        registry = Registry(host=registry.host, username=user, password=password, docker_config=docker_config)
    (directory / "config.yml").write_text("\n".join(config) + "\n")
    log = (directory / "registry.log").open("ab")
    process = subprocess.Popen([BINARY, "serve", str(directory / "config.yml")], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
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


def _serve(tmp: Path, auth: tuple[str, str] | None) -> Iterator[Registry]:
    if shutil.which(BINARY) is None:
        missing("registry", f"{BINARY} is not installed (scripts/setup-machine installs it)")
    process, registry = start_registry(tmp, auth=auth)
    try:
        yield registry
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _serve(tmp_path_factory.mktemp("registry"), None)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _serve(tmp_path_factory.mktemp("auth-registry"), ("mlenv", "s3cret-pa55"))
