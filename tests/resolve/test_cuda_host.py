"""The host driver verdict by NVIDIA's rules (pure): the toolkit's own floor, minor version
compatibility (accepted with a warning, refused by strict), forward compatibility through a
cuda-compat-X-Y package the lock carries, and the cases where none applies."""

from __future__ import annotations

import dataclasses

import pytest

from mlenv.model.facts import AptFact, CudaComponent
from mlenv.model.lock import AptPin, LockedApt, LockedCuda
from mlenv.resolve.cuda import (
    ForwardCompat,
    driver_floors,
    driver_verdict,
    forward_compat,
    minor_compat_floor,
    toolkit_floor,
    wheel_release,
)
from tests.lockdata import full_lock

SMI = "nvidia-smi"
# A CUDA 12.4 stack from NVIDIA's wheels: floor 550.54.14 (Table 3), 12.x minor compatibility 525.60.13.
CUDA_124 = LockedCuda(
    requested="12.4",
    release="12.4",
    min_driver="550.54.14",
    components=(CudaComponent(name="runtime", version="12.4.127", source="wheel:nvidia-cuda-runtime-cu12"),),
)
COMPAT_124 = ForwardCompat(package="cuda-compat-12-4", release="12.4", driver="550.54.15", where="apt")


def test_the_floors_come_from_the_table() -> None:
    assert toolkit_floor("12.4") == CUDA_124.min_driver
    assert minor_compat_floor(12) == "525.60.13" and minor_compat_floor(11) == "450.80.02"
    assert minor_compat_floor(10) is None
    floors = driver_floors()
    assert floors.sources["forward-compatibility-url"].startswith("https://docs.nvidia.com/deploy/")
    assert "Major Component Versions" in floors.sources["toolkit-versioned"]
    assert floors.compat_directory.format(release="12.4") == "/usr/local/cuda-12.4/compat"
    # The toolkit-versioned wheels: nvJitLink and cuBLAS count, cuDNN and NCCL (own versions) do not.
    assert wheel_release("nvidia-nvjitlink-cu12", "12.5.82") == "12.5"
    assert wheel_release("nvidia-cublas-cu12", "12.1.3.1") == "12.1"
    assert wheel_release("nvidia-cudnn-cu12", "9.1.0.70") is None
    assert wheel_release("nvidia-nccl-cu12", "2.20.5") is None


@pytest.mark.parametrize(
    ("driver", "strict", "ok", "rule", "warning"),
    [
        ("550.54.14", False, True, "toolkit", False),  # exactly the floor
        ("560.35.03", True, True, "toolkit", False),
        ("550.54.13", False, True, "minor-version-compatibility", True),  # one below the floor
        ("535.104.05", False, True, "minor-version-compatibility", True),  # the driver
        ("525.60.13", False, True, "minor-version-compatibility", True),  # exactly the 12.x floor
        ("535.104.05", True, False, "minor-version-compatibility", False),
        ("525.60.12", False, False, "none", False),  # one below the 12.x floor
        ("470.256.02", False, False, "none", False),  # a CUDA 11 driver
    ],
)
def test_rules_at_their_boundaries(driver: str, strict: bool, ok: bool, rule: str, warning: bool) -> None:
    verdict = driver_verdict(CUDA_124, (driver, SMI), strict=strict)
    assert (verdict.ok, verdict.rule, verdict.warning) == (ok, rule, warning)
    assert verdict.message.startswith(f"NVIDIA driver {driver} (nvidia-smi) ")
    assert "550.54.14" in verdict.message  # every message names the floor


def test_messages_name_driver_floor_and_rule() -> None:
    assert driver_verdict(CUDA_124, ("550.54.14", SMI)).message == (
        "NVIDIA driver 550.54.14 (nvidia-smi) meets the lock's driver floor 550.54.14 (CUDA 12.4's own; "
        "rule: toolkit floor)"
    )
    assert driver_verdict(CUDA_124, ("535.104.05", SMI)).message == (
        "NVIDIA driver 535.104.05 (nvidia-smi) is older than the lock's driver floor 550.54.14 (CUDA 12.4's "
        "own), accepted by CUDA 12 minor version compatibility (>= 525.60.13): it runs with a limited "
        "feature set (no JIT of PTX newer than the driver); --strict refuses it"
    )
    assert driver_verdict(CUDA_124, ("535.104.05", SMI), strict=True).message == (
        "NVIDIA driver 535.104.05 (nvidia-smi) is older than the lock's driver floor 550.54.14 (CUDA 12.4's "
        "own); --strict asks for that floor (without --strict it is accepted by CUDA 12 minor version "
        "compatibility (>= 525.60.13): it runs with a limited feature set (no JIT of PTX newer than the "
        "driver))"
    )
    assert driver_verdict(CUDA_124, ("470.256.02", SMI)).message == (
        "NVIDIA driver 470.256.02 (nvidia-smi) is older than the lock's driver floor 550.54.14 (CUDA 12.4's "
        "own) and CUDA 12's minor version compatibility floor 525.60.13; no compatibility rule applies"
    )


def test_forward_compatibility_package() -> None:
    # A CUDA 11 branch driver, below the 12.x minor floor: the compat package's libcuda 550.54.15 runs it.
    verdict = driver_verdict(CUDA_124, ("470.256.02", SMI), compat=(COMPAT_124,))
    assert (verdict.ok, verdict.rule, verdict.warning) == (True, "forward-compatibility", True)
    assert verdict.message == (
        "NVIDIA driver 470.256.02 (nvidia-smi) is older than the lock's driver floor 550.54.14 (CUDA 12.4's "
        "own) and CUDA 12's minor version compatibility floor 525.60.13, accepted by forward compatibility: "
        "apt carries cuda-compat-12-4 550.54.15, whose libcuda.so in /usr/local/cuda-12.4/compat runs the "
        "stack on NVIDIA Data Center GPUs, select NGC Server Ready RTX SKUs and Jetson boards only; --strict "
        "refuses it"
    )
    strict = driver_verdict(CUDA_124, ("470.256.02", SMI), compat=(COMPAT_124,), strict=True)
    assert (strict.ok, strict.rule) == (False, "forward-compatibility")
    # Minor version compatibility is tried first: it needs no particular GPU.
    assert driver_verdict(CUDA_124, ("535.104.05", SMI), compat=(COMPAT_124,)).rule == (
        "minor-version-compatibility"
    )
    # A compat package older than the floor does not help, and says why.
    old = dataclasses.replace(COMPAT_124, package="cuda-compat-12-2", release="12.2", driver="535.54.03")
    refused = driver_verdict(CUDA_124, ("470.256.02", SMI), compat=(old,))
    assert (refused.ok, refused.rule) == (False, "none")
    assert refused.message.endswith(
        "no compatibility rule applies; cuda-compat-12-2 535.54.03 (apt) does not help: "
        "it is older than the floor"
    )


def test_compat_packages_are_read_from_the_base_and_the_apt_closure() -> None:
    lock = full_lock()
    assert forward_compat(lock) == ()
    assert lock.base is not None
    platform = dataclasses.replace(
        lock.base.platforms[0],
        packages=(
            *lock.base.platforms[0].packages,
            AptFact(name="cuda-compat-12-4", version="550.54.15-1", architecture="amd64"),
        ),
    )
    in_base = dataclasses.replace(lock, base=dataclasses.replace(lock.base, platforms=(platform,)))
    assert forward_compat(in_base) == (
        ForwardCompat(
            package="cuda-compat-12-4",
            release="12.4",
            driver="550.54.15",
            where=f"base image {lock.base.reference}",
        ),
    )
    pin = AptPin(
        name="cuda-compat-12-6",
        version="1:560.35.05-1",
        architecture="amd64",
        filename="pool/c/cuda-compat-12-6_560.35.05-1_amd64.deb",
        size=1,
        sha256="0" * 64,
        requested=True,
    )
    by_apt = dataclasses.replace(lock, apt=LockedApt(packages=(pin,)))
    assert forward_compat(by_apt) == (
        ForwardCompat(package="cuda-compat-12-6", release="12.6", driver="560.35.05", where="apt"),
    )
    # cuda-compat itself (no MAJOR-MINOR) and look-alikes are not the package.
    other = dataclasses.replace(pin, name="cuda-compat-tools")
    assert forward_compat(dataclasses.replace(lock, apt=LockedApt(packages=(other,)))) == ()


def test_no_driver_cpu_only_and_no_floor() -> None:
    missing = driver_verdict(CUDA_124, None)
    assert (missing.ok, missing.rule) == (False, "no-driver")
    assert missing.message.endswith("the lock needs CUDA and driver >= 550.54.14")
    cpu = LockedCuda(requested="none")
    assert driver_verdict(cpu, None).rule == "cpu-only" and driver_verdict(cpu, None).ok
    assert driver_verdict(cpu, ("470.1", SMI), strict=True).ok
    unknown = dataclasses.replace(CUDA_124, min_driver=None)
    assert driver_verdict(unknown, ("470.1", SMI)).rule == "no-floor"


def test_an_old_lock_without_release_takes_the_major_from_its_components() -> None:
    # lock-version 1 locks before `release`: requested = "none" with a CUDA stack.
    old = dataclasses.replace(CUDA_124, requested="none", release=None)
    assert driver_verdict(old, ("535.104.05", SMI)).rule == "minor-version-compatibility"
