"""CUDA layer of the lock: which CUDA stack the environment carries, where each part comes from, the
minimum NVIDIA driver it needs, and the cross-checks that refuse a stack that cannot work.

Versions are read, never assumed: from the resolved nvidia-* pins, from the Requires-Dist of the
locked wheels (torch pins nvidia-cudnn-cu12==8.9.2.26; the PyPI default build has no +cuXYZ label,
so its variant is read from what it requires), and from the base image as the observer sees it (env,
dpkg, library file names). The driver floor comes from mlenv/data/cuda-driver-floor.toml.

Everything here is pure except `fetch_requires`, which is handed the metadata fetcher.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from mlenv.errors import ResolutionError
from mlenv.model.facts import CudaComponent
from mlenv.model.lock import LockedCuda, PythonPin
from mlenv.model.target import Target, marker_environment, target_tags, wheel_installs
from mlenv.observe.probes.cuda import merge, wheel_component

DRIVER_TABLE = "cuda-driver-floor.toml"
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
_NVIDIA_WHEEL = re.compile(r"^nvidia-.+-cu(\d+)$")
_CUDA_LABEL = re.compile(r"^cu(\d)(\d+)$")

# pin name -> Requires-Dist lines of its wheel for one platform; platform -> that map.
Requires = Mapping[str, Mapping[str, tuple[str, ...]]]


# --------------------------------------------------------------------------- the driver table


@dataclass(frozen=True, kw_only=True)
class DriverFloors:
    toolkit: Mapping[str, str]  # "12.1" (GA) or "12.4.1" (an update) -> minimum Linux driver
    minor_compatibility: Mapping[str, str]  # "12" -> driver for CUDA minor version compatibility
    sources: Mapping[str, str]


@cache
def driver_floors() -> DriverFloors:
    """The table shipped as package data (see its header for NVIDIA's sources)."""
    data = tomllib.loads(files("mlenv").joinpath("data", DRIVER_TABLE).read_text(encoding="utf-8"))
    return DriverFloors(
        toolkit=data["toolkit"], minor_compatibility=data["minor-compatibility"], sources=data["source"]
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


def driver_satisfies(driver: str, floor: str) -> bool:
    return version_key(driver) >= version_key(floor)


# --------------------------------------------------------------------------- torch variants


def cuda_label(release: str) -> str:
    """PyTorch's variant label of a CUDA release: "12.1" -> "cu121"."""
    major, minor = major_minor(release).split(".")
    return f"cu{major}{minor}"


def label_release(label: str) -> str | None:
    """ "cu121" -> "12.1", "cu118" -> "11.8"; None for "cpu", "rocm6.0" and the like."""
    match = _CUDA_LABEL.match(label) if len(label) > 4 else None
    return f"{match.group(1)}{match.group(2)[0]}.{match.group(2)[1:]}" if match else None


def _torch_hint(requested: str) -> str:
    return f"require torch +{cuda_label(requested)} from {torch_index(requested)}"


def torch_index(release: str) -> str:
    """Where PyTorch publishes the build for a CUDA release (not reachable from every network)."""
    return f"{PYTORCH_INDEX}{cuda_label(release)}"


def requirement_label(text: str) -> str | None:
    """The local label a requirement pins: 'torch==2.3.1+cu118' -> 'cu118'."""
    for specifier in Requirement(text).specifier:
        if specifier.operator in ("==", "===") and "+" in specifier.version:
            return specifier.version.split("+", 1)[1].rstrip(".*")
    return None


def version_label(version: str) -> str | None:
    try:
        return Version(version).local
    except InvalidVersion:
        return None


# --------------------------------------------------------------------------- metadata edges


@dataclass(frozen=True, kw_only=True)
class Edge:
    requirer: str
    requirement: Requirement


def edges(requires: Requires, target: Target) -> list[Edge]:
    """Every dependency a locked wheel declares for the target, markers evaluated per platform."""
    found: dict[tuple[str, str], Edge] = {}
    for platform in sorted(requires):
        environment = marker_environment(target, platform)
        for requirer in sorted(requires[platform]):
            for line in requires[platform][requirer]:
                try:
                    requirement = Requirement(line)
                except InvalidRequirement:
                    continue  # a malformed line in someone's metadata says nothing we can use
                if requirement.marker is not None and not requirement.marker.evaluate(environment):
                    continue
                edge = Edge(requirer=requirer, requirement=requirement)
                found.setdefault((requirer, str(requirement)), edge)
    return [found[key] for key in sorted(found)]


def exact_pin(requirement: Requirement) -> str | None:
    for specifier in requirement.specifier:
        if specifier.operator in ("==", "===") and not specifier.version.endswith(".*"):
            return specifier.version
    return None


def fetch_requires(
    pins: Iterable[PythonPin],
    target: Target,
    fetch: Callable[[list[str]], Mapping[str, tuple[str, ...] | None]],
) -> Requires:
    """Requires-Dist of one installable wheel per pin and platform, through `fetch` (urls -> lines)."""
    chosen: dict[str, dict[str, str]] = {}
    for platform in sorted(target.platforms):
        tags = target_tags(target, platform)
        for pin in pins:
            by_name = sorted(pin.wheels, key=lambda w: w.name)
            installable = [w for w in by_name if wheel_installs(w.name, tags)]
            wheel = installable[0] if installable else None
            if wheel is not None:
                chosen.setdefault(platform, {})[pin.name] = wheel.url
    answers = fetch(sorted({url for by_pin in chosen.values() for url in by_pin.values()}))
    return {
        platform: {name: lines for name, url in by_pin.items() if (lines := answers.get(url)) is not None}
        for platform, by_pin in chosen.items()
    }


def needs_metadata(pins: Iterable[PythonPin]) -> bool:
    """Only a lock with NVIDIA wheels or torch asks the index for wheel metadata."""
    return any(p.name == "torch" or p.name.startswith("nvidia-") for p in pins)


# --------------------------------------------------------------------------- the stack


@dataclass(frozen=True, kw_only=True)
class BaseCuda:
    """What the base image brings, as the observer reads it."""

    reference: str
    components: tuple[CudaComponent, ...]
    cudnn_bytes: int = 0  # size of the libcudnn* files, for the two-stacks warning

    def get(self, name: str) -> CudaComponent | None:
        return next((c for c in self.components if c.name == name), None)

    @property
    def release(self) -> CudaComponent | None:
        """The toolkit release ("cuda" 12.1.1), else the runtime library's (12.1.105 is CUDA 12.1)."""
        return self.get("cuda") or self.get("runtime")

    def describe(self) -> str:
        release = self.release
        assert release is not None
        return f"base image {self.reference} carries CUDA {release.version} ({release.source})"


@dataclass(frozen=True, kw_only=True)
class CudaResolution:
    locked: LockedCuda
    warnings: tuple[str, ...] = ()


def _request_mismatch(requested: str, release: str) -> bool:
    return major_minor(release) != requested


def check_request(requested: str | None, requirements: Iterable[str], base: BaseCuda | None) -> None:
    """Refusals that need no resolution: a torch label, the request and the base that disagree."""
    base_release = base.release if base is not None else None
    if (
        requested not in (None, "none")
        and base_release is not None
        and _request_mismatch(requested, base_release.version)
    ):
        assert base is not None
        raise ResolutionError(
            f"[cuda] version asks {requested} but {base.describe()}",
            hint="use a base image of the requested CUDA, or set [cuda] version to the base's",
        )
    for text in requirements:
        if canonicalize_name(Requirement(text).name) != "torch":
            continue
        label = requirement_label(text)
        release = label_release(label) if label else None
        if release is None:
            if label is not None and requested not in (None, "none"):
                raise ResolutionError(
                    f"{text} asks the +{label} build but [cuda] version asks {requested}",
                    hint=_torch_hint(requested),
                )
            continue
        if requested == "none":
            raise ResolutionError(
                f'{text} is a CUDA {release} build but [cuda] version is "none" (CPU-only)',
                hint=f"require torch +cpu from {PYTORCH_INDEX}cpu",
            )
        if requested is not None and _request_mismatch(requested, release):
            raise ResolutionError(
                f"{text} is the CUDA {release} build but [cuda] version asks {requested}",
                hint=_torch_hint(requested),
            )
        if base_release is not None and version_key(release)[0] != version_key(base_release.version)[0]:
            assert base is not None
            raise ResolutionError(
                f"{text} is the CUDA {release} build but {base.describe()}; CUDA major versions must match"
            )


def _wheel_major(name: str) -> int | None:
    match = _NVIDIA_WHEEL.match(name)
    return int(match.group(1)) if match else None


def _torch_variant(torch: PythonPin, found: list[Edge]) -> tuple[str | None, str | None]:
    """(label such as "cu121" or "cpu", CUDA release or None) of the locked torch build.

    The label is the version's own (+cu118) when it has one; PyPI's builds have none, so it is read
    from the nvidia-cuda-runtime pin the build requires (PyPI's torch 2.3.1 for Linux x86_64 requires
    nvidia-cuda-runtime-cu12==12.1.105: it is the cu121 build)."""
    label = version_label(torch.version)
    if label is not None:
        return label, label_release(label)
    runtime = [
        exact_pin(e.requirement)
        for e in found
        if e.requirer == "torch" and wheel_component(canonicalize_name(e.requirement.name)) == "runtime"
    ]
    pinned = sorted({v for v in runtime if v is not None}, key=version_key)
    if pinned:
        return cuda_label(pinned[-1]), major_minor(pinned[-1])
    if any(e.requirer == "torch" for e in found):
        return "cpu", None  # its metadata was read and it requires no CUDA runtime
    return None, None


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


def lock_cuda(
    *,
    requested: str | None,
    cudnn: str | None,
    pins: tuple[PythonPin, ...],
    requested_names: frozenset[str],
    requires: Requires,
    target: Target,
    base: BaseCuda | None,
) -> CudaResolution:
    """The lock's CUDA section, or a ResolutionError naming the conflict. Warnings are returned."""
    warnings: list[str] = []
    found = edges(requires, target)
    nvidia = sorted((p for p in pins if _wheel_major(p.name) is not None), key=lambda p: p.name)
    majors = sorted({m for p in nvidia if (m := _wheel_major(p.name)) is not None})
    if len(majors) > 1:
        names = ", ".join(f"{p.name}" for p in nvidia)
        raise ResolutionError(f"the NVIDIA wheels mix CUDA majors {' and '.join(map(str, majors))}: {names}")
    wheels: dict[str, CudaComponent] = {}
    for pin in nvidia:
        component = wheel_component(pin.name)
        if component is not None and component not in wheels:
            wheels[component] = CudaComponent(name=component, version=pin.version, source=f"wheel:{pin.name}")
    wheel_runtime = wheels.get("runtime")
    wheel_release = major_minor(wheel_runtime.version) if wheel_runtime else None
    wheel_major = majors[0] if majors else None

    torch = next((p for p in pins if p.name == "torch"), None)
    label, torch_release = _torch_variant(torch, found) if torch is not None else (None, None)
    if torch is not None and label is None:
        warnings.append(
            f"torch {torch.version}: its index serves no wheel metadata, so its CUDA variant is not recorded"
        )
    base_release = base.release if base is not None and base.release is not None else None

    # What brings CUDA, for messages: torch's variant when torch is there, else the runtime wheel.
    if torch_release is not None:
        assert torch is not None
        bringer = f"torch {torch.version} from {torch.index} (the {label} build)"
    elif wheel_runtime is not None:
        bringer = f"{wheel_runtime.source.removeprefix('wheel:')} {wheel_runtime.version}"
    elif nvidia:
        bringer = f"{nvidia[0].name} {nvidia[0].version}"
    else:
        bringer = None
    wheel_cuda = torch_release or wheel_release

    if requested == "none":
        if bringer is not None:
            raise ResolutionError(
                f'[cuda] version is "none" (CPU-only) but {bringer} brings CUDA {wheel_cuda or wheel_major}',
                hint=f"for torch, require torch +cpu from {PYTORCH_INDEX}cpu",
            )
        if base_release is not None and base is not None:
            warnings.append(f'[cuda] version is "none" but {base.describe()}; its CUDA goes unused')
    elif requested is None and (bringer is not None or base_release is not None):
        found_release = wheel_cuda or (base_release.version if base_release is not None else None)
        advice = (
            f'; set [cuda] version = "{major_minor(found_release)}" to have it checked'
            if found_release
            else ""
        )
        warnings.append(
            f"[cuda] version is not set, but the environment carries CUDA "
            f"{found_release or wheel_major}{advice}"
        )
    elif requested is not None:
        if wheel_cuda is not None and _request_mismatch(requested, wheel_cuda):
            hint = (
                f"require torch +{cuda_label(requested)} from {torch_index(requested)} "
                f"(add it to [python] extra-index-urls)"
                if torch_release is not None
                else None
            )
            raise ResolutionError(
                f"[cuda] version asks {requested} but {bringer} is CUDA {wheel_cuda}", hint=hint
            )
        if wheel_cuda is None and wheel_major is not None and wheel_major != version_key(requested)[0]:
            raise ResolutionError(
                f"[cuda] version asks {requested} but {bringer} is built for CUDA {wheel_major}"
            )
        if bringer is None and base_release is None:
            raise ResolutionError(
                f"[cuda] version asks {requested} but nothing brings CUDA: no nvidia-* "
                "wheels were resolved and the base image has none",
                hint="require torch (PyPI's Linux x86_64 build carries CUDA), or use a CUDA base",
            )

    if base is not None and base_release is not None and wheel_major is not None:
        base_major = version_key(base_release.version)[0]
        if base_major != wheel_major:
            raise ResolutionError(
                f"{base.describe()} but {bringer} is built for CUDA "
                f"{wheel_cuda or wheel_major}; CUDA major versions must match",
                hint="use wheels of the base's CUDA major (-cu" + str(base_major) + "), "
                "or a base of the wheels' CUDA",
            )
        if wheel_cuda is not None and major_minor(base_release.version) != wheel_cuda:
            warnings.append(
                f"{base.describe()} but {bringer} is CUDA {wheel_cuda}; the wheels bring their "
                "own libraries, so the base's toolkit is unused weight"
            )

    if base is not None and base.get("cudnn") is not None and "cudnn" in wheels:
        system, wheel = base.get("cudnn"), wheels["cudnn"]
        assert system is not None
        pin = next(p for p in nvidia if p.name == wheel.source.removeprefix("wheel:"))
        wheel_size = max((w.size or 0 for w in pin.wheels), default=0)
        warnings.append(
            f"two cuDNN stacks in one image: the base's cuDNN {system.version} ({system.source}, "
            f"{_mb(base.cudnn_bytes)}) and {pin.name} {wheel.version} ({_mb(wheel_size)} wheel); "
            "Python code loads the wheel's, the base's is dead weight"
        )

    components = merge({c.name: c for c in base.components} if base is not None else {}, wheels)
    effective_cudnn = next((c for c in components if c.name == "cudnn"), None)
    if cudnn is not None:
        if effective_cudnn is None:
            raise ResolutionError(f"[cuda] cudnn asks {cudnn} but the environment has no cuDNN")
        if effective_cudnn.version != cudnn and not effective_cudnn.version.startswith(cudnn + "."):
            raise ResolutionError(
                f"[cuda] cudnn asks {cudnn} but the environment's cuDNN is "
                f"{effective_cudnn.version} ({effective_cudnn.source})"
            )

    warnings.extend(_unpinned(nvidia, requested_names, found))

    releases = [r for r in (wheel_cuda, base_release.version if base_release else None) if r is not None]
    min_driver, driver_notes = _min_driver(releases, wheel_major)
    warnings.extend(driver_notes)
    return CudaResolution(
        locked=LockedCuda(
            requested=requested or "none",
            components=components,
            min_driver=min_driver,
            torch_label=f"+{label}" if label else None,
            torch_index=torch.index if torch is not None and label else None,
        ),
        warnings=tuple(warnings),
    )


def _unpinned(nvidia: list[PythonPin], requested_names: frozenset[str], found: list[Edge]) -> list[str]:
    """NVIDIA wheels that nothing pins exactly: the lock pins them, but a re-lock may move them."""
    notes = []
    for pin in nvidia:
        if pin.name in requested_names:
            continue
        wanted = [e for e in found if canonicalize_name(e.requirement.name) == pin.name]
        if wanted and all(exact_pin(e.requirement) is None for e in wanted):
            by = ", ".join(f"{e.requirer} ({e.requirement.specifier or 'any version'})" for e in wanted)
            notes.append(
                f"{pin.name} is required without a version pin by {by}; locked at {pin.version} anyway"
            )
    return notes


def _min_driver(releases: list[str], wheel_major: int | None) -> tuple[str | None, list[str]]:
    """The highest floor any part of the stack needs, with notes where the table falls short."""
    floors = driver_floors()
    notes: list[str] = []
    candidates: list[str] = []
    for release in releases:
        floor = toolkit_floor(release, floors)
        if floor is None:
            fallback = floors.minor_compatibility.get(str(version_key(release)[0]))
            notes.append(
                f"CUDA {release} is not in mlenv's driver table ({DRIVER_TABLE}); "
                + (
                    f"min-driver is the CUDA minor version compatibility floor {fallback}"
                    if fallback
                    else "no minimum driver recorded"
                )
            )
            floor = fallback
        if floor is not None:
            candidates.append(floor)
    if not releases and wheel_major is not None:
        fallback = floors.minor_compatibility.get(str(wheel_major))
        if fallback is not None:
            candidates.append(fallback)
    return (max(candidates, key=version_key) if candidates else None), notes


# --------------------------------------------------------------------------- the host's driver


@dataclass(frozen=True, kw_only=True)
class DriverVerdict:
    ok: bool
    message: str


def _cuda_major(cuda: LockedCuda) -> int | None:
    for name in ("cuda", "runtime"):
        component = next((c for c in cuda.components if c.name == name), None)
        if component is not None:
            return version_key(component.version)[0]
    return None


def driver_verdict(cuda: LockedCuda, driver: tuple[str, str] | None) -> DriverVerdict:
    """Whether a host driver ((version, where it was read) or None) runs the lock's CUDA stack."""
    needs_cuda = cuda.min_driver is not None or bool(cuda.components)
    if driver is None:
        if not needs_cuda:
            return DriverVerdict(
                ok=True, message="no NVIDIA GPU/driver found; the lock is CPU-only, none is needed"
            )
        return DriverVerdict(
            ok=False,
            message="no NVIDIA GPU/driver found (no nvidia-smi, no "
            "/proc/driver/nvidia/version); the lock needs CUDA and driver >= "
            f"{cuda.min_driver or 'unknown'}",
        )
    version, source = driver
    if not needs_cuda:
        return DriverVerdict(ok=True, message=f"NVIDIA driver {version} ({source}); the lock is CPU-only")
    if cuda.min_driver is None:
        return DriverVerdict(
            ok=True,
            message=f"NVIDIA driver {version} ({source}); the lock records no "
            "minimum driver, so nothing to compare",
        )
    if driver_satisfies(version, cuda.min_driver):
        return DriverVerdict(
            ok=True,
            message=f"NVIDIA driver {version} ({source}) satisfies the lock's minimum {cuda.min_driver}",
        )
    note = ""
    major = _cuda_major(cuda)
    compatible = driver_floors().minor_compatibility.get(str(major)) if major is not None else None
    if compatible is not None and driver_satisfies(version, compatible):
        note = (
            f"; it meets CUDA {major} minor version compatibility (>= {compatible}), so most code runs "
            "with a limited feature set (no PTX JIT of newer PTX)"
        )
    return DriverVerdict(
        ok=False,
        message=f"NVIDIA driver {version} ({source}) is older than the lock's "
        f"minimum {cuda.min_driver}{note}",
    )
