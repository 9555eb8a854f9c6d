"""Builds whose cost follows what changed, on the real engine.

The fraud image (tests/infra/fraud.py) is the clean build. A copy of the project with one app file edited
is built next: its lock is the same, so the dependency image is found by the digest of its inputs and
reused, the engine gets only the app's tar and a config, and the build's own verify reads only the layers
the build wrote. `mlenv verify` of the same image reads every layer and agrees. `docker build` of the
rendered Dockerfile, by hand, gives an image verify accepts too: the two ways to build cannot part.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import WRITE_HOME_AND_CACHES, Built, lock_and_build, lock_tag, run_cli
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]


def edited_copy(fraud_image: Built, where: Path) -> Path:
    """The fraud project again (spec, lock, model), one line added to app/main.py."""
    project = where / "fraud-detector"
    shutil.copytree(fraud_image.project, project, ignore=shutil.ignore_patterns("__pycache__"))
    main = project / "app" / "main.py"
    main.write_text(main.read_text() + "\nREBUILD_EDIT = 1\n")
    return project


def test_an_app_edit_rebuilds_only_the_app_layer_and_verifies_only_what_it_wrote(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    project = edited_copy(fraud_image, tmp_path)
    tag = lock_tag("fraud", project / "mlenv.lock", "app-edit")
    built = run_cli("build", str(project), "--tag", tag, "--format", "json")
    assert built.code == 0, built.stderr[-2000:]
    assert json.loads(built.stdout)["verified"] is True
    assert "dependency layers: reusing mlenv-deps:" in built.stderr
    assert "verify: read the 2 layers this build wrote; the " in built.stderr  # app and entrypoint tars
    assert "below them were verified for this lock before" in built.stderr

    before = docker_daemon.client.images.get(fraud_image.tag).attrs["RootFS"]["Layers"]
    after = docker_daemon.client.images.get(tag).attrs["RootFS"]["Layers"]
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [len(before) - 2]  # the app tar's layer; the entrypoint tar's above it is the same

    # `mlenv verify` reads every layer of it and agrees; against the unedited app tree it names the file.
    lock = str(project / "mlenv.lock")
    ok = run_cli("verify", f"docker-daemon:{tag}", "--lock", lock, "--project", str(project))
    assert ok.code == 0, ok.stdout + ok.stderr
    other = run_cli("verify", f"docker-daemon:{tag}", "--lock", lock, "--project", str(fraud_image.project))
    assert other.code == 1
    assert "/app/app/main.py" in other.stdout


def test_the_service_user_can_write_its_home_and_every_cache(
    fraud_image: Built, docker_daemon: Daemon
) -> None:
    out = docker_daemon.client.containers.run(
        fraud_image.tag, ["-c", WRITE_HOME_AND_CACHES], entrypoint="/bin/sh", remove=True, network_mode="none"
    )
    assert out.decode().strip() == "10001 /home/app"
    env = docker_daemon.client.images.get(fraud_image.tag).attrs["Config"]["Env"]
    assert not [e for e in env if e.startswith("NVIDIA_")]  # the fraud lock has no CUDA


def test_docker_build_of_the_rendered_dockerfile_gives_an_image_verify_accepts(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    rendered = run_cli("dockerfile", str(fraud_image.project), "-o", str(context))
    assert rendered.code == 0, rendered.stderr
    tag = lock_tag("fraud", fraud_image.lock, "by-hand")
    env = {"DOCKER_HOST": docker_daemon.host, "PATH": "/usr/bin:/bin"}
    build = subprocess.run(
        ["docker", "build", "--network", "none", "--quiet", "-t", tag, str(context)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    result = run_cli("verify", f"docker-daemon:{tag}", "--lock", str(fraud_image.lock))
    assert result.code == 0, result.stdout + result.stderr


def test_a_lock_without_as_of_or_apt_packages_builds_and_verifies(
    base_image_python: BaseImage, tmp_path: Path
) -> None:
    """Day 0 (no as-of): useradd leaves the shadow's last-change day empty; no apt packages: no system
    stage, so none of its generated files are expected. Both were false drifts."""
    project = tmp_path / "plain"
    project.mkdir()
    (project / "mlenv.toml").write_text(
        f'name = "plain"\n[base]\nimage = "{base_image_python.ref}"\nplatforms = ["linux/amd64"]\n'
        '[python]\nrequirements = ["six==1.16.0"]\n[cuda]\nversion = "none"\n'
    )
    tag = lock_and_build(project, "plain")
    result = run_cli("verify", f"docker-daemon:{tag}", "--lock", str(project / "mlenv.lock"))
    assert result.code == 0, result.stdout + result.stderr
