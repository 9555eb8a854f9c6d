"""NVIDIA's driver table as data (mlenv/data/cuda-driver-floor.toml): the driver each CUDA release needs,
the floor of minor version compatibility per major, the forward-compatibility package, and which NVIDIA
wheels carry the toolkit's own version (so their release counts in the floor)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files

DRIVER_TABLE = "cuda-driver-floor.toml"


@dataclass(frozen=True, kw_only=True)
class DriverFloors:
    toolkit: Mapping[str, str]  # "12.1" (GA) or "12.4.1" (an update) -> minimum Linux driver
    minor_compatibility: Mapping[str, str]  # "12" -> driver for CUDA minor version compatibility
    sources: Mapping[str, str]
    toolkit_versioned: tuple[str, ...] = ()  # nvidia-* wheel stems whose version is the toolkit release
    # A CUDA major whose list differs ("13": cuBLAS and CCCL no longer carry the toolkit's version).
    toolkit_versioned_by_major: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    compat_package: str = r"^cuda-compat-(\d+)-(\d+)$"  # NVIDIA's forward-compatibility package
    compat_directory: str = "/usr/local/cuda-{release}/compat"  # where the package puts libcuda.so
    compat_gpus: str = ""  # the GPUs forward compatibility applies to


@cache
def driver_floors() -> DriverFloors:
    """The table shipped as package data (see its header for NVIDIA's sources)."""
    data = tomllib.loads(files("mlenv").joinpath("data", DRIVER_TABLE).read_text(encoding="utf-8"))
    forward = data["forward-compatibility"]
    versioned = data["toolkit-versioned"]
    return DriverFloors(
        toolkit=data["toolkit"],
        minor_compatibility=data["minor-compatibility"],
        sources=data["source"],
        toolkit_versioned=tuple(versioned["wheels"]),
        toolkit_versioned_by_major={
            major: tuple(stems) for major, stems in versioned.get("major", {}).items()
        },
        compat_package=forward["package"],
        compat_directory=forward["directory"],
        compat_gpus=forward["gpus"],
    )


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def toolkit_floor(release: str, floors: DriverFloors | None = None) -> str | None:
    """The driver CUDA `release` needs ("12.4.1" -> its update's row, "12.4" or "12.4.0" -> GA), None
    when the table does not know the release."""
    table = (floors or driver_floors()).toolkit
    parts = release.split(".")
    if len(parts) >= 3 and ".".join(parts[:3]) in table:
        return table[".".join(parts[:3])]
    return table.get(major_minor(release))


def minor_compat_floor(major: int, floors: DriverFloors | None = None) -> str | None:
    """The driver a CUDA `major`.x stack runs on under minor version compatibility (12 -> 525.60.13)."""
    return (floors or driver_floors()).minor_compatibility.get(str(major))


def driver_satisfies(driver: str, floor: str) -> bool:
    return version_key(driver) >= version_key(floor)


def wheel_release(name: str, version: str, floors: DriverFloors | None = None) -> str | None:
    """The CUDA release an NVIDIA wheel belongs to when its version is the toolkit's own
    (nvidia-nvjitlink-cu12 12.5.82 -> "12.5", nvidia-cuda-runtime 13.2.86 -> "13.2"); None for the ones
    versioned on their own (cuDNN, NCCL; cuBLAS from CUDA 13). The list is that of the version's major."""
    table = floors or driver_floors()
    stem = re.sub(r"-cu\d+$", "", name)
    major = version.split(".", 1)[0]
    versioned = table.toolkit_versioned_by_major.get(major, table.toolkit_versioned)
    return major_minor(version) if stem in versioned else None
