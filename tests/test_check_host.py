"""`mlenv check --host`: the host's NVIDIA driver against the lock's min-driver by NVIDIA's rules
(toolkit floor; minor version and forward compatibility with a warning; `--strict`), through the real
CLI with a stand-in nvidia-smi on PATH (no GPU exists here). The rules' boundaries are unit-tested in
tests/resolve/test_cuda_host.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mlenv.lockfile import write_lock
from mlenv.model.facts import CudaComponent
from mlenv.model.lock import AptPin, LockedApt, LockedCuda
from mlenv.sources.hostdriver import parse_nvidia_smi, parse_proc_version
from tests.helpers import run_cli, stand_in_nvidia_smi
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


def test_new_enough_driver_passes(gpu_lock: Path, tmp_path: Path) -> None:
    result = run_cli(
        "check", "--host", "--lock", str(gpu_lock), env=stand_in_nvidia_smi(tmp_path, "535.104.05")
    )
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == (
        "NVIDIA driver 535.104.05 (nvidia-smi) meets the lock's driver floor 530.30.02 (CUDA 12.1's own; "
        "rule: toolkit floor)"
    )
    assert "warning" not in result.stderr


def test_the_exact_floor_passes_and_below_the_minor_floor_fails(gpu_lock: Path, tmp_path: Path) -> None:
    assert (
        run_cli("check", "--host", "-l", str(gpu_lock), env=stand_in_nvidia_smi(tmp_path, "530.30.02")).code
        == 0
    )
    result = run_cli("check", "--host", "-l", str(gpu_lock), env=stand_in_nvidia_smi(tmp_path, "520.61.05"))
    assert result.code == 1
    assert result.stdout.strip() == (
        "NVIDIA driver 520.61.05 (nvidia-smi) is older than the lock's driver floor 530.30.02 (CUDA 12.1's "
        "own) and CUDA 12's minor version compatibility floor 525.60.13; no compatibility rule applies"
    )


@pytest.fixture()
def cuda_124_lock(tmp_path: Path) -> Path:
    """The issue's case: a CUDA 12.4 stack (floor 550.54.14) on a 535 driver."""
    path = tmp_path / "cu124.lock"
    cuda = LockedCuda(
        requested="12.4",
        release="12.4",
        min_driver="550.54.14",
        components=(
            CudaComponent(name="runtime", version="12.4.127", source="wheel:nvidia-cuda-runtime-cu12"),
        ),
    )
    write_lock(dataclasses.replace(full_lock(), cuda=cuda), path)
    return path


def test_minor_version_compatibility_is_accepted_with_a_warning(cuda_124_lock: Path, tmp_path: Path) -> None:
    result = run_cli(
        "check", "--host", "-l", str(cuda_124_lock), env=stand_in_nvidia_smi(tmp_path, "535.104.05")
    )
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == (
        "NVIDIA driver 535.104.05 (nvidia-smi) is older than the lock's driver floor 550.54.14 (CUDA 12.4's "
        "own), accepted by CUDA 12 minor version compatibility (>= 525.60.13): it runs with a limited "
        "feature set (no JIT of PTX newer than the driver); --strict refuses it"
    )
    assert result.stderr.strip().splitlines() == [
        "mlenv: warning: the driver runs this lock only by minor version compatibility"
    ]
    strict = run_cli(
        "check",
        "--host",
        "--strict",
        "-l",
        str(cuda_124_lock),
        env=stand_in_nvidia_smi(tmp_path, "535.104.05"),
    )
    assert strict.code == 1
    assert "--strict asks for that floor" in strict.stdout and "warning" not in strict.stderr
    report = json.loads(
        run_cli(
            "check",
            "--host",
            "-l",
            str(cuda_124_lock),
            "-f",
            "json",
            env=stand_in_nvidia_smi(tmp_path, "535.104.05"),
        ).stdout
    )
    assert {
        k: report[k] for k in ("ok", "rule", "warning", "strict", "min-driver", "minor-compatibility-floor")
    } == {
        "ok": True,
        "rule": "minor-version-compatibility",
        "warning": True,
        "strict": False,
        "min-driver": "550.54.14",
        "minor-compatibility-floor": "525.60.13",
    }


def test_forward_compatibility_package_in_the_lock(cuda_124_lock: Path, tmp_path: Path) -> None:
    from mlenv.lockfile import read_lock

    lock = read_lock(cuda_124_lock)
    compat = AptPin(
        name="cuda-compat-12-4",
        version="550.54.15-1",
        architecture="amd64",
        filename="pool/main/c/cuda-compat-12-4/cuda-compat-12-4_550.54.15-1_amd64.deb",
        size=1000,
        sha256="1" * 64,
        requested=True,
    )
    path = tmp_path / "compat.lock"
    write_lock(dataclasses.replace(lock, apt=LockedApt(sources=lock.apt.sources, packages=(compat,))), path)
    old = run_cli("check", "--host", "-l", str(path), env=stand_in_nvidia_smi(tmp_path, "470.256.02"))
    assert old.code == 0, old.stdout + old.stderr
    assert "accepted by forward compatibility: apt carries cuda-compat-12-4 550.54.15" in old.stdout
    assert old.stderr.strip() == "mlenv: warning: the driver runs this lock only by forward compatibility"
    assert (
        run_cli(
            "check", "--host", "--strict", "-l", str(path), env=stand_in_nvidia_smi(tmp_path, "470.256.02")
        ).code
        == 1
    )
    # Without the package the same driver is refused.
    assert (
        run_cli(
            "check", "--host", "-l", str(cuda_124_lock), env=stand_in_nvidia_smi(tmp_path, "470.256.02")
        ).code
        == 1
    )


def test_no_driver(gpu_lock: Path, cpu_lock: Path, tmp_path: Path) -> None:
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("this machine has an NVIDIA driver")
    needs = run_cli("check", "--host", "-l", str(gpu_lock), env=stand_in_nvidia_smi(tmp_path, None))
    assert needs.code == 1 and needs.stdout.startswith("no NVIDIA GPU/driver found")
    assert "the lock needs CUDA and driver >= 530.30.02" in needs.stdout
    cpu = run_cli(
        "check", "--host", "-l", str(cpu_lock), "--format", "json", env=stand_in_nvidia_smi(tmp_path, None)
    )
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
    strict = run_cli("check", "--strict", "-l", str(gpu_lock))
    assert strict.code == 2 and strict.stderr.strip().splitlines() == [
        "mlenv: error: --strict applies to --host (the driver check)"
    ]


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
