"""`mlenv check --host`: the host's NVIDIA driver against the lock's min-driver, through the real CLI
with a stand-in nvidia-smi on PATH (no GPU exists here)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from mlenv.lockfile import write_lock
from mlenv.model.lock import LockedCuda
from mlenv.sources.hostdriver import parse_nvidia_smi, parse_proc_version
from tests.helpers import run_cli
from tests.lockdata import full_lock


@pytest.fixture()
def gpu_lock(tmp_path: Path) -> Path:
    path = tmp_path / "gpu.lock"
    write_lock(full_lock(), path)  # CUDA 12.1 stack, min-driver 530.30.02
    return path


@pytest.fixture()
def cpu_lock(tmp_path: Path) -> Path:
    path = tmp_path / "cpu.lock"
    write_lock(dataclasses.replace(full_lock(), cuda=LockedCuda(requested="none")), path)
    return path


def host(tmp_path: Path, driver: str | None) -> dict[str, str]:
    """An environment whose PATH has only a stand-in nvidia-smi (or none) before the system's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if driver is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f'#!/bin/sh\n[ "$1" = --query-gpu=driver_version ] || exit 9\necho {driver}\n')
        smi.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_new_enough_driver_passes(gpu_lock: Path, tmp_path: Path) -> None:
    result = run_cli("check", "--host", "--lock", str(gpu_lock), env=host(tmp_path, "535.104.05"))
    assert result.code == 0, result.stderr
    assert (
        result.stdout.strip()
        == "NVIDIA driver 535.104.05 (nvidia-smi) satisfies the lock's minimum 530.30.02"
    )


def test_the_exact_floor_passes_and_one_below_fails(gpu_lock: Path, tmp_path: Path) -> None:
    assert run_cli("check", "--host", "-l", str(gpu_lock), env=host(tmp_path, "530.30.02")).code == 0
    result = run_cli("check", "--host", "-l", str(gpu_lock), env=host(tmp_path, "525.85.12"))
    assert result.code == 1
    assert result.stdout.startswith(
        "NVIDIA driver 525.85.12 (nvidia-smi) is older than the lock's minimum 530.30.02"
    )


def test_no_driver(gpu_lock: Path, cpu_lock: Path, tmp_path: Path) -> None:
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver")
    needs = run_cli("check", "--host", "-l", str(gpu_lock), env=host(tmp_path, None))
    assert needs.code == 1 and needs.stdout.startswith("no NVIDIA GPU/driver found")
    assert "the lock needs CUDA and driver >= 530.30.02" in needs.stdout
    cpu = run_cli("check", "--host", "-l", str(cpu_lock), "--format", "json", env=host(tmp_path, None))
    assert cpu.code == 0
    report = json.loads(cpu.stdout)
    assert report["ok"] is True and report["driver"] is None and report["min-driver"] is None
    assert report["message"].startswith("no NVIDIA GPU/driver found")


def test_usage_errors_are_one_line(gpu_lock: Path, tmp_path: Path) -> None:
    # Without --host, check reads the Python environment (tests/test_check_env.py); the two do not mix.
    result = run_cli("check", "--host", "--venv", str(tmp_path), "-l", str(gpu_lock))
    assert result.code == 2 and result.stderr.strip().splitlines() == [
        "mlenv: error: --host checks this machine's NVIDIA driver; it takes no --python, --venv or --files"
    ]
    missing = run_cli("check", "--host", "-l", str(tmp_path / "nope.lock"))
    assert missing.code == 2 and "nope.lock: no such file" in missing.stderr


def test_driver_version_parsers() -> None:
    assert parse_nvidia_smi("535.104.05\n535.104.05\n") == "535.104.05"
    assert (
        parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
        is None
    )
    proc = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert parse_proc_version(proc) == "535.104.05"
    open_module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build\n"
    assert parse_proc_version(open_module) == "550.54.14"
    assert parse_proc_version("") is None
