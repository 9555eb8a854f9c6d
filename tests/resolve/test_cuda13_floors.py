"""CUDA 13.x in the driver table: the Table 3 rows and the 13.x minor version compatibility floor, the
floor a CUDA 13 torch stack (PyPI's torch 2.15.0, which pins cuda-toolkit[...]==13.2.2) locks, which
CUDA 13 wheels carry the toolkit's version (cuBLAS and CCCL no longer do), and `mlenv check --host` on
such a lock with a stand-in nvidia-smi (the real CLI; no GPU exists here)."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from packaging.requirements import Requirement

from mlenv.lockfile import write_lock
from mlenv.model.lock import LockedCuda, PythonPin
from mlenv.model.target import Target
from mlenv.resolve.cuda import lock_cuda, minor_compat_floor, toolkit_floor, wheel_release
from tests.helpers import run_cli, stand_in_nvidia_smi
from tests.lockdata import full_lock, wheel_pin

TARGET = Target(platforms=("linux/amd64",), python="3.11.2", glibc="2.36")
X86 = "cp311-cp311-manylinux_2_28_x86_64"

# The CUDA lines of torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl's METADATA.
TORCH_215_REQUIRES = (
    "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.2.2; "
    'platform_system == "Linux"',
    'nvidia-cudnn-cu13==9.26.0.51; platform_system == "Linux"',
    'nvidia-nccl-cu13==2.30.7; platform_system == "Linux"',
)


def pin(name: str, version: str) -> PythonPin:
    return wheel_pin(name, version, tag=X86, requested=name == "torch")


def torch_stack(toolkit: str) -> tuple[LockedCuda, tuple[str, ...]]:
    """The CUDA section (and warnings) of torch 2.15.0 whose cuda-toolkit pin is `toolkit`."""
    requires = tuple(line.replace("==13.2.2", f"=={toolkit}") for line in TORCH_215_REQUIRES)
    pins = (
        pin("torch", "2.15.0"),
        pin("cuda-toolkit", toolkit),
        pin("nvidia-cudnn-cu13", "9.26.0.51"),
        pin("nvidia-nccl-cu13", "2.30.7"),
    )
    resolution = lock_cuda(
        requested=None,
        cudnn=None,
        pins=pins,
        requested_names=frozenset({"torch"}),
        requires={"linux/amd64": {"torch": requires}},
        target=TARGET,
        base=None,
    )
    return resolution.locked, resolution.warnings


def test_the_13x_rows_and_the_minor_compatibility_floor() -> None:
    # Table 3 of the CUDA 13.2 Update 2 release notes, Linux x86_64 column.
    assert [toolkit_floor(r) for r in ("13.0", "13.0.1", "13.0.2", "13.1", "13.1.1")] == [
        "580.65.06",
        "580.82.07",
        "580.95.05",
        "590.44.01",
        "590.48.01",
    ]
    assert [toolkit_floor(r) for r in ("13.2", "13.2.0", "13.2.1", "13.2.2")] == [
        "595.45.04",
        "595.45.04",
        "595.58.03",
        "595.71.05",
    ]
    assert toolkit_floor("13.3") is None  # no NVIDIA text for it was read: not guessed
    assert minor_compat_floor(13) == "580" and minor_compat_floor(12) == "525.60.13"


def test_a_cuda_13_torch_stack_takes_its_release_floor() -> None:
    cuda, warnings = torch_stack("13.2.2")
    assert (cuda.release, cuda.torch_label, cuda.min_driver) == ("13.2", "+cu132", "595.45.04")
    assert not any("driver table" in w for w in warnings)
    # A 13.x release the table lacks falls back to the 13.x minor version compatibility floor, saying so
    # (before the 13.x rows every CUDA 13 lock recorded no min-driver at all).
    later, notes = torch_stack("13.3.1")
    assert (later.release, later.min_driver) == ("13.3", "580")
    assert (
        "CUDA 13.3 is not in mlenv's driver table (cuda-driver-floor.toml); min-driver is the CUDA minor "
        "version compatibility floor 580"
    ) in notes


def test_which_cuda_13_wheels_carry_the_toolkit_version() -> None:
    # The CUDA 13 wheels have no -cu13 suffix; their versions are those of CUDA 13.2 Update 2's Table 1.
    assert wheel_release("nvidia-cuda-runtime", "13.2.86") == "13.2"
    assert wheel_release("nvidia-nvjitlink", "13.5.37") == "13.5"
    assert wheel_release("nvidia-cuda-nvrtc", "13.2.86") == "13.2"
    # cuBLAS 13.4.1.3 ships in CUDA 13.2 Update 2, CCCL 13.3.4.3.1 in CUDA 13.4: neither names its CUDA.
    assert wheel_release("nvidia-cublas", "13.4.1.3") is None
    assert wheel_release("nvidia-cuda-cccl", "13.3.4.3.1") is None
    # CUDA 12's cuBLAS and CCCL still count.
    assert wheel_release("nvidia-cublas-cu12", "12.1.3.1") == "12.1"
    assert wheel_release("nvidia-cuda-cccl-cu12", "12.4.127") == "12.4"


def _requires_dist(wheel: bytes) -> tuple[str, ...]:
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = BytesParser().parsebytes(archive.read(name), headersonly=True)
    return tuple(str(value) for value in message.get_all("Requires-Dist") or ())


@pytest.mark.network
@pytest.mark.parametrize("toolkit", ["13.0.2", "13.2.2", "13.5.0"])
def test_pypi_cuda_toolkit_pins_agree_with_the_list(toolkit: str) -> None:
    """NVIDIA's metapackage pins every wheel of its release: each one the table counts as
    toolkit-versioned must be of that release, and cuBLAS (its own version) must not be counted."""
    project = requests.get("https://pypi.org/pypi/cuda-toolkit/json", timeout=60)
    project.raise_for_status()
    url = next(f["url"] for f in project.json()["releases"][toolkit] if f["filename"].endswith(".whl"))
    wheel = requests.get(urljoin(project.url, url), timeout=60)  # this index answers relative URLs
    wheel.raise_for_status()
    pinned: dict[str, str] = {}
    for line in _requires_dist(wheel.content):
        requirement = Requirement(line)
        exact = [s.version.removesuffix(".*") for s in requirement.specifier if s.operator == "=="]
        if exact:
            pinned[requirement.name] = exact[0]
    counted = {name: wheel_release(name, version) for name, version in pinned.items()}
    release = ".".join(toolkit.split(".")[:2])
    assert {name for name, r in counted.items() if r is not None} >= {"nvidia-cuda-runtime", "nvidia-nvtx"}
    assert {r for r in counted.values() if r is not None} == {release}
    assert counted["nvidia-cublas"] is None and not pinned["nvidia-cublas"].startswith(f"{release}.")


@pytest.fixture()
def cuda_132_lock(tmp_path: Path) -> Path:
    """A lock whose CUDA section is the one lock_cuda gives torch 2.15.0 (CUDA 13.2, floor 595.45.04)."""
    path = tmp_path / "cu132.lock"
    write_lock(dataclasses.replace(full_lock(), cuda=torch_stack("13.2.2")[0]), path)
    return path


def test_check_host_at_the_13x_floor_passes(cuda_132_lock: Path, tmp_path: Path) -> None:
    result = run_cli(
        "check", "--host", "-l", str(cuda_132_lock), env=stand_in_nvidia_smi(tmp_path, "595.45.04")
    )
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == (
        "NVIDIA driver 595.45.04 (nvidia-smi) meets the lock's driver floor 595.45.04 (CUDA 13.2's own; "
        "rule: toolkit floor)"
    )
    assert "warning" not in result.stderr


def test_check_host_below_the_floor_on_a_580_driver_warns(cuda_132_lock: Path, tmp_path: Path) -> None:
    result = run_cli(
        "check", "--host", "-l", str(cuda_132_lock), env=stand_in_nvidia_smi(tmp_path, "580.95.05")
    )
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == (
        "NVIDIA driver 580.95.05 (nvidia-smi) is older than the lock's driver floor 595.45.04 (CUDA 13.2's "
        "own), accepted by CUDA 13 minor version compatibility (>= 580): it runs with a limited feature "
        "set (no JIT of PTX newer than the driver); --strict refuses it"
    )
    assert result.stderr.strip().splitlines() == [
        "mlenv: warning: the driver runs this lock only by minor version compatibility"
    ]
    strict = run_cli(
        "check",
        "--host",
        "--strict",
        "-l",
        str(cuda_132_lock),
        env=stand_in_nvidia_smi(tmp_path, "580.95.05"),
    )
    assert strict.code == 1


def test_check_host_refuses_a_12x_driver(cuda_132_lock: Path, tmp_path: Path) -> None:
    result = run_cli(
        "check", "--host", "-l", str(cuda_132_lock), env=stand_in_nvidia_smi(tmp_path, "575.57.08")
    )
    assert result.code == 1
    assert result.stdout.strip() == (
        "NVIDIA driver 575.57.08 (nvidia-smi) is older than the lock's driver floor 595.45.04 (CUDA 13.2's "
        "own) and CUDA 13's minor version compatibility floor 580; no compatibility rule applies"
    )
