"""Helpers shared by tests: running the CLI as a user would, naming and deriving test images.

Example projects and the trained model come from tools/localbase.project (bench/ and the demo use them too).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlenv.lockfile import lock_digest
from tools.localbase.dockerd import Daemon


@dataclass(frozen=True, kw_only=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run `python -m mlenv ARGS` as a user would: a separate process, real exit code and streams."""
    result = subprocess.run(
        [sys.executable, "-m", "mlenv", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    return CliResult(code=result.returncode, stdout=result.stdout, stderr=result.stderr)


@dataclass(frozen=True, kw_only=True)
class Built:
    project: Path
    lock: Path
    tag: str


def lock_tag(name: str, lock: Path, variant: str | None = None) -> str:
    """A test image's tag, named by its lock's sha256 (and `variant` for images derived from that lock).

    Two sessions sharing one engine lock against their own loopback registry, whose port is in the lock,
    so their tags never collide; within a session one lock always names the same image."""
    digest = lock_digest(lock.read_bytes()).removeprefix("sha256:")[:20]
    return f"mlenv-test/{name}:{digest if variant is None else f'{variant}-{digest}'}"


def session_tag(name: str, base_ref: str, variant: str) -> str:
    """The tag of a test image made without a lock (a few Dockerfile lines on a base image).

    Named by the sha256 of the session's base image reference, which holds this session's registry port,
    so another session sharing the engine neither builds over it nor removes it."""
    digest = hashlib.sha256(base_ref.encode()).hexdigest()[:20]
    return f"mlenv-test/{name}:{variant}-{digest}"


def lock_and_build(project: Path, name: str) -> str:
    """`mlenv lock` then `mlenv build` the project; returns the tag built, `lock_tag(name, its lock)`."""
    locked = run_cli("lock", str(project))
    assert locked.code == 0, f"mlenv lock {project}: {locked.stderr[-2000:]}"
    tag = lock_tag(name, project / "mlenv.lock")
    built = run_cli("build", str(project), "--tag", tag)
    assert built.code == 0, f"mlenv build {project} --tag {tag}: {built.stderr[-2000:]}"
    return tag


def derive_image(daemon: Daemon, context: Path, base_tag: str, tag: str, lines: list[str]) -> str:
    """An image made of a few Dockerfile lines (as root) on top of `base_tag`, built with no network.

    The base's user is restored after the lines, so the image differs from `base_tag` only by them."""
    user = daemon.client.images.get(base_tag).attrs["Config"].get("User") or "root"
    (context / "Dockerfile").write_text(
        "\n".join([f"FROM {base_tag}", "USER root", *lines, f"USER {user}"]) + "\n"
    )
    daemon.client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none")
    return tag


def stand_in_nvidia_smi(tmp_path: Path, driver: str | None) -> dict[str, str]:
    """An environment whose PATH has only a stand-in nvidia-smi reporting `driver` (or none) before the
    system's: no GPU is reachable from these machines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if driver is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f'#!/bin/sh\n[ "$1" = --query-gpu=driver_version ] || exit 9\necho {driver}\n')
        smi.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


# Run as the image's user (`/bin/sh -c`): fails unless HOME and every ML cache a torch or Hugging Face
# service writes to is writable; prints the user's id and HOME last.
WRITE_HOME_AND_CACHES = (
    'set -e; for d in "$HOME" "$XDG_CACHE_HOME"; do touch "$d/probe"; done; '
    'mkdir -p "$HF_HOME/hub" "$TORCH_HOME/hub" "$TRITON_CACHE_DIR"; touch "$HF_HOME/hub/x" '
    '"$TORCH_HOME/hub/x" "$TRITON_CACHE_DIR/x"; echo "$(id -u) $HOME"'
)
