"""A bad image reference is one line and exit 2, whichever transport it comes through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.observe.layers import docker_archive, image_config, layer_tar, sha
from tools.localbase.images import BaseImage
from tools.localbase.registry import Registry

LAYER = layer_tar([("dir", "etc"), ("file", "etc/os-release", b"ID=debian\nVERSION_ID=12\n")])


def one_line_error(*args: str, env: dict[str, str] | None = None) -> str:
    result = run_cli("inspect", *args, env=env)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert result.stderr.startswith("mlenv: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    return result.stderr


def test_archive_errors(tmp_path: Path) -> None:
    assert "no such file" in one_line_error(f"docker-archive:{tmp_path}/absent.tar")
    good = docker_archive(tmp_path / "good.tar", [LAYER], image_config([LAYER]))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    assert str(truncated) in one_line_error(f"docker-archive:{truncated}")
    config = image_config([LAYER])
    config["rootfs"]["diff_ids"][0] = sha(b"another layer")  # the blob no longer matches its digest
    corrupt = docker_archive(tmp_path / "corrupt.tar", [LAYER], config)
    assert "layer 1 content is sha256:" in one_line_error(f"docker-archive:{corrupt}")


@pytest.mark.docker
def test_unknown_daemon_image(docker_daemon) -> None:  # type: ignore[no-untyped-def]
    assert "mlenv-test/no-such-image:1" in one_line_error("docker-daemon:mlenv-test/no-such-image:1")


@pytest.mark.registry
def test_registry_errors(
    registry: Registry, auth_base_image: BaseImage, auth_registry: Registry, tmp_path: Path
) -> None:
    assert f"{registry.host}/nothing/here:1 not found" in one_line_error(
        f"docker://{registry.host}/nothing/here:1"
    )
    assert "127.0.0.1:9" in one_line_error("docker://127.0.0.1:9/mlenv-test/x:1")
    anonymous = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "no-config")}
    denied = one_line_error(f"docker://{auth_base_image.ref}", env=anonymous)
    assert auth_registry.host in denied and "credentials" in denied
