"""The target a lock is resolved for: platforms, interpreter and glibc, and which wheel tags install
there (pure)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from mlenv.errors import ResolutionError

DEFAULT_PLATFORM = "linux/amd64"
TargetSource = Literal["spec", "base-image"]


@dataclass(frozen=True, kw_only=True)
class Target:
    """What the Python resolver resolved for."""

    platforms: tuple[str, ...]
    python: str  # full version, e.g. "3.11.2"
    glibc: str
    implementation: str = "cpython"
    source: TargetSource = "spec"


ARCHITECTURES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
DEB_ARCHITECTURES = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


def deb_architecture(platform: str) -> str:
    """`linux/arm64` -> `arm64` (Debian's name, which .debs and dpkg use)."""
    machine(platform)  # one error for a platform mlenv does not support
    return DEB_ARCHITECTURES[platform]


def machine(platform: str) -> str:
    """`linux/amd64` -> `x86_64` (the name wheel tags and uname use)."""
    try:
        return ARCHITECTURES[platform]
    except KeyError:
        raise ResolutionError(
            f"unsupported platform {platform!r}; mlenv supports {', '.join(ARCHITECTURES)}"
        ) from None


def glibc_minor(glibc: str) -> int:
    major, _, minor = glibc.partition(".")
    if major != "2" or not minor.isdigit():
        raise ResolutionError(f"unsupported glibc version {glibc!r}")
    return int(minor)


def python_tuple(version: str) -> tuple[int, int]:
    major, minor, *_ = version.split(".")
    return int(major), int(minor)


def platform_tags(glibc: str, platform: str) -> list[str]:
    """Platform tags a target accepts, most specific first (manylinux_2_N down to the legacy aliases)."""
    arch = machine(platform)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc_minor(glibc), 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for minor, alias in legacy.items():
        if minor <= glibc_minor(glibc) and (arch == "x86_64" or alias == "manylinux2014"):
            tags.append(f"{alias}_{arch}")
    return tags


def target_tags(target: Target, platform: str) -> frozenset[Tag]:
    """Every wheel tag that installs on `target` for one of its platforms."""
    return _tags(target.python, target.glibc, platform)


@functools.cache
def _tags(python: str, glibc: str, platform: str) -> frozenset[Tag]:
    # About 1 ms a call, and a lock asks once per wheel: computed once per (python, glibc, platform).
    version = python_tuple(python)
    platforms = platform_tags(glibc, platform)
    return frozenset(cpython_tags(version, platforms=platforms)) | frozenset(
        compatible_tags(version, interpreter=f"cp{version[0]}{version[1]}", platforms=platforms)
    )


def wheel_installs(filename: str, tags: frozenset[Tag]) -> bool:
    _, _, _, wheel_tags = parse_wheel_filename(filename)
    return not tags.isdisjoint(wheel_tags)


def marker_environment(target: Target, platform: str) -> dict[str, str]:
    """PEP 508 marker values of the target (not of this host)."""
    major, minor = python_tuple(target.python)
    return {
        "python_version": f"{major}.{minor}",
        "python_full_version": target.python,
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine(platform),
        "platform_release": "",
        "platform_version": "",
        "implementation_name": target.implementation,
        "implementation_version": target.python,
        "platform_python_implementation": "CPython",
        "extra": "",
    }
