"""Whether this machine's NVIDIA driver runs the lock's CUDA stack, by NVIDIA's rules (pure: the driver
version is read in sources/hostdriver.py).

Three rules, tried in this order; the verdict names the one that applied:
- the toolkit's own floor: the driver is at least the lock's min-driver (every feature works);
- minor version compatibility: below that, but at least the floor of the stack's CUDA major
  (525.60.13 for 12.x): it runs with a limited feature set, accepted with a warning;
- forward compatibility: the image carries NVIDIA's cuda-compat-X-Y package, whose libcuda.so is of a
  driver new enough for the stack and newer than the host's: it runs, on data center GPUs only,
  accepted with a warning.
`strict` accepts only the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mlenv.model.lock import Lock, LockedCuda
from mlenv.resolve.cuda.floors import (
    driver_floors,
    driver_satisfies,
    major_minor,
    minor_compat_floor,
    version_key,
)

Rule = Literal[
    "cpu-only",
    "no-driver",
    "no-floor",
    "toolkit",
    "minor-version-compatibility",
    "forward-compatibility",
    "none",
]


@dataclass(frozen=True, kw_only=True)
class ForwardCompat:
    """NVIDIA's forward-compatibility package as the lock carries it."""

    package: str  # cuda-compat-12-4
    release: str  # "12.4"
    driver: str  # the driver its libcuda.so comes from: 550.54.15 (of the package version 550.54.15-1)
    where: str  # "base image REF" or "apt"


@dataclass(frozen=True, kw_only=True)
class DriverVerdict:
    ok: bool
    message: str
    rule: Rule
    warning: bool = False  # ok, but only by a compatibility rule
    compat_floor: str | None = None  # the minor version compatibility floor of the stack's major


def _upstream(version: str) -> str:
    """dpkg's version without epoch and revision: "1:550.54.15-1" -> "550.54.15"."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def forward_compat(lock: Lock) -> tuple[ForwardCompat, ...]:
    """The cuda-compat-X-Y packages of the base's dpkg set and of the locked apt closure."""
    pattern = re.compile(driver_floors().compat_package)
    found: dict[str, ForwardCompat] = {}
    carried: list[tuple[str, str, str]] = []
    if lock.base is not None:
        for platform in lock.base.platforms:
            carried += [(p.name, p.version, f"base image {lock.base.reference}") for p in platform.packages]
    carried += [(p.name, p.version, "apt") for p in lock.apt.packages]
    for name, version, where in carried:
        match = pattern.match(name)
        if match and name not in found:
            release = f"{match.group(1)}.{match.group(2)}"
            found[name] = ForwardCompat(package=name, release=release, driver=_upstream(version), where=where)
    return tuple(found[name] for name in sorted(found))


def _stack_release(cuda: LockedCuda) -> str | None:
    if cuda.release is not None:
        return cuda.release
    for name in ("cuda", "runtime"):
        component = next((c for c in cuda.components if c.name == name), None)
        if component is not None:
            return major_minor(component.version)
    return None


def driver_verdict(
    cuda: LockedCuda,
    driver: tuple[str, str] | None,
    *,
    strict: bool = False,
    compat: tuple[ForwardCompat, ...] = (),
) -> DriverVerdict:
    """Whether a host driver ((version, where it was read) or None) runs the lock's CUDA stack."""
    needs_cuda = cuda.min_driver is not None or bool(cuda.components)
    release = _stack_release(cuda)
    major = version_key(release)[0] if release is not None else None
    compat_floor = minor_compat_floor(major) if major is not None else None
    if driver is None:
        if not needs_cuda:
            return DriverVerdict(
                ok=True,
                rule="cpu-only",
                message="no NVIDIA GPU/driver found; the lock is CPU-only, none is needed",
            )
        return DriverVerdict(
            ok=False,
            rule="no-driver",
            compat_floor=compat_floor,
            message="no NVIDIA GPU/driver found (no nvidia-smi, no "
            "/proc/driver/nvidia/version); the lock needs CUDA and driver >= "
            f"{cuda.min_driver or 'unknown'}",
        )
    version, source = driver
    found = f"NVIDIA driver {version} ({source})"
    if not needs_cuda:
        return DriverVerdict(ok=True, rule="cpu-only", message=f"{found}; the lock is CPU-only")
    if cuda.min_driver is None:
        return DriverVerdict(
            ok=True,
            rule="no-floor",
            message=f"{found}; the lock records no minimum driver, so nothing to compare",
        )
    floor = cuda.min_driver
    stack = f"CUDA {release}" if release is not None else "the stack"
    if driver_satisfies(version, floor):
        return DriverVerdict(
            ok=True,
            rule="toolkit",
            compat_floor=compat_floor,
            message=f"{found} meets the lock's driver floor {floor} ({stack}'s own; rule: toolkit floor)",
        )
    below = f"{found} is older than the lock's driver floor {floor} ({stack}'s own)"
    minor_ok = compat_floor is not None and driver_satisfies(version, compat_floor)
    if minor_ok:
        rule_text = (
            f"CUDA {major} minor version compatibility (>= {compat_floor}): it runs with a limited "
            "feature set (no JIT of PTX newer than the driver)"
        )
        if strict:
            return DriverVerdict(
                ok=False,
                rule="minor-version-compatibility",
                compat_floor=compat_floor,
                message=f"{below}; --strict asks for that floor "
                f"(without --strict it is accepted by {rule_text})",
            )
        return DriverVerdict(
            ok=True,
            warning=True,
            rule="minor-version-compatibility",
            compat_floor=compat_floor,
            message=f"{below}, accepted by {rule_text}; --strict refuses it",
        )
    minor_text = (
        f" and CUDA {major}'s minor version compatibility floor {compat_floor}" if compat_floor else ""
    )
    usable = [
        c
        for c in compat
        if driver_satisfies(c.driver, floor) and version_key(c.driver) > version_key(version)
    ]
    if usable:
        package = usable[-1]
        floors = driver_floors()
        rule_text = (
            f"forward compatibility: {package.where} carries {package.package} {package.driver}, whose "
            f"libcuda.so in {floors.compat_directory.format(release=package.release)} runs the stack on "
            f"{floors.compat_gpus} only"
        )
        if strict:
            return DriverVerdict(
                ok=False,
                rule="forward-compatibility",
                compat_floor=compat_floor,
                message=f"{below}{minor_text}; --strict asks for that floor (without --strict it is "
                f"accepted by {rule_text})",
            )
        return DriverVerdict(
            ok=True,
            warning=True,
            rule="forward-compatibility",
            compat_floor=compat_floor,
            message=f"{below}{minor_text}, accepted by {rule_text}; --strict refuses it",
        )
    unusable = "".join(
        f"; {c.package} {c.driver} ({c.where}) does not help: "
        + (
            "it is older than the floor"
            if not driver_satisfies(c.driver, floor)
            else "the host's driver is newer"
        )
        for c in compat
    )
    return DriverVerdict(
        ok=False,
        rule="none",
        compat_floor=compat_floor,
        message=f"{below}{minor_text}; no compatibility rule applies{unusable}",
    )
