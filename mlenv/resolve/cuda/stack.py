"""CUDA layer of the lock: which CUDA stack the environment carries, where each part comes from, the
minimum NVIDIA driver it needs, and the cross-checks that refuse a stack that cannot work.

Versions are read, never assumed: from the resolved nvidia-* pins, from the Requires-Dist of the
locked wheels (torch pins nvidia-cudnn-cu12==8.9.2.26; the PyPI default build has no +cuXYZ label,
so its variant is read from what it requires), and from the base image as the observer sees it (env,
dpkg, library file names). The driver floor comes from mlenv/data/cuda-driver-floor.toml. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlenv.errors import ResolutionError
from mlenv.model.cuda import merge, wheel_component
from mlenv.model.facts import CudaComponent
from mlenv.model.lock import LockedCuda, PythonPin
from mlenv.model.target import Target
from mlenv.resolve.cuda.edges import Edge, Requires, edges, exact_pin
from mlenv.resolve.cuda.floors import (
    DRIVER_TABLE,
    driver_floors,
    major_minor,
    minor_compat_floor,
    toolkit_floor,
    version_key,
    wheel_release,
)
from mlenv.resolve.cuda.variants import (
    PYTORCH_INDEX,
    cuda_label,
    label_release,
    requirement_label,
    torch_hint,
    torch_index,
    version_label,
)

_NVIDIA_WHEEL = re.compile(r"^nvidia-.+-cu(\d+)$")


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
            f'[cuda] version = "{requested}" but {base.describe()}',
            hint=f'ask for version = "{major_minor(base_release.version)}", '
            "or use a base image of the requested CUDA",
        )
    for text in requirements:
        if canonicalize_name(Requirement(text).name) != "torch":
            continue
        label = requirement_label(text)
        release = label_release(label) if label else None
        if release is None:
            if label is not None and requested not in (None, "none"):
                raise ResolutionError(
                    f'{text} asks the +{label} build but [cuda] version = "{requested}"',
                    hint=torch_hint(requested, None),
                )
            continue
        if requested == "none":
            raise ResolutionError(
                f'{text} is a CUDA {release} build but [cuda] version = "none" (CPU-only)',
                hint=f'ask for version = "{release}", or require torch +cpu from {PYTORCH_INDEX}cpu',
            )
        if requested is not None and _request_mismatch(requested, release):
            raise ResolutionError(
                f'{text} is the CUDA {release} build but [cuda] version = "{requested}"',
                hint=torch_hint(requested, release),
            )
        if base_release is not None and version_key(release)[0] != version_key(base_release.version)[0]:
            assert base is not None
            raise ResolutionError(
                f"{text} is the CUDA {release} build but {base.describe()}; CUDA major versions must match"
            )


def _wheel_major(name: str) -> int | None:
    match = _NVIDIA_WHEEL.match(name)
    return int(match.group(1)) if match else None


def _looked_at(requirer: str, name: str) -> bool:
    """The edges this module reads: torch's own, and those to an NVIDIA wheel or NVIDIA's metapackage."""
    return requirer == "torch" or _wheel_major(name) is not None or name == "cuda-toolkit"


def _torch_variant(torch: PythonPin, found: list[Edge]) -> tuple[str | None, str | None]:
    """(label such as "cu121" or "cpu", CUDA release or None) of the locked torch build.

    The label is the version's own (+cu118) when it has one; PyPI's builds have none, so it is read
    from the nvidia-cuda-runtime pin the build requires (PyPI's torch 2.3.1 for Linux x86_64 requires
    nvidia-cuda-runtime-cu12==12.1.105: it is the cu121 build)."""
    label = version_label(torch.version)
    if label is not None:
        return label, label_release(label)
    brought = [canonicalize_name(e.requirement.name) for e in found if e.requirer == "torch"]
    runtime = [
        exact_pin(e.requirement)
        for e in found
        if e.requirer == "torch"
        and (
            wheel_component(canonicalize_name(e.requirement.name)) == "runtime"
            # Newer builds (2.15 on PyPI) pin NVIDIA's metapackage, cuda-toolkit[cudart,...]==13.2.2,
            # whose version is the CUDA release, instead of nvidia-cuda-runtime-cuXY.
            or canonicalize_name(e.requirement.name) == "cuda-toolkit"
        )
    ]
    pinned = sorted({v for v in runtime if v is not None}, key=version_key)
    if pinned:
        return cuda_label(pinned[-1]), major_minor(pinned[-1])
    if any(name.startswith(("nvidia-", "cuda-")) for name in brought):
        return None, None  # it brings CUDA, but no runtime pin says which release: unknown, not cpu
    if brought:
        return "cpu", None  # its metadata was read and it requires no CUDA runtime
    return None, None


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB"


def _required_as(name: str, found: list[Edge]) -> list[Edge]:
    return [e for e in found if canonicalize_name(e.requirement.name) == name]


def _how_required(wanted: list[Edge]) -> str:
    return ", ".join(f"{e.by} ({e.requirement.specifier or 'any version'})" for e in wanted)


@dataclass(frozen=True, kw_only=True)
class _Stack:
    """What the pins bring, read once and shared by the checks below."""

    nvidia: tuple[PythonPin, ...]  # NVIDIA's -cuNN wheels, by name
    wheels: dict[str, CudaComponent]  # component -> the first wheel that carries it
    wheel_major: int | None
    runtime: PythonPin | None  # the pin of the runtime wheel
    torch: PythonPin | None
    label: str | None  # torch's variant ("cu121", "cpu"), None when unknown
    torch_release: str | None
    base_release: CudaComponent | None
    bringer: str | None  # what brings CUDA, for messages
    wheel_cuda: str | None  # the release the wheels (or torch's variant) are
    release: str | None  # the stack's release: the wheels', else the base's


def _read_stack(
    pins: tuple[PythonPin, ...], found: list[Edge], requested_names: frozenset[str], base: BaseCuda | None
) -> _Stack:
    nvidia = tuple(sorted((p for p in pins if _wheel_major(p.name) is not None), key=lambda p: p.name))
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
    runtime = next((p for p in nvidia if wheel_runtime and f"wheel:{p.name}" == wheel_runtime.source), None)
    torch = next((p for p in pins if p.name == "torch"), None)
    label, torch_release = _torch_variant(torch, found) if torch is not None else (None, None)
    base_release = base.release if base is not None else None
    # What brings CUDA, for messages: torch's variant when torch is there, else the runtime wheel (with
    # what asked for it when the spec did not: an extra's lower bound is no pin).
    if torch_release is not None:
        assert torch is not None
        bringer: str | None = f"torch {torch.version} from {torch.index} (the {label} build)"
    elif runtime is not None:
        wanted = _required_as(runtime.name, found) if runtime.name not in requested_names else []
        via = f", required as {_how_required(wanted)}," if wanted else ""
        bringer = f"{runtime.name} {runtime.version}{via}"
    elif nvidia:
        bringer = f"{nvidia[0].name} {nvidia[0].version}"
    else:
        bringer = None
    wheel_cuda = torch_release or (major_minor(wheel_runtime.version) if wheel_runtime else None)
    return _Stack(
        nvidia=nvidia,
        wheels=wheels,
        wheel_major=majors[0] if majors else None,
        runtime=runtime,
        torch=torch,
        label=label,
        torch_release=torch_release,
        base_release=base_release,
        bringer=bringer,
        wheel_cuda=wheel_cuda,
        release=wheel_cuda or (major_minor(base_release.version) if base_release is not None else None),
    )


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
    found = edges(requires, target, frozenset(p.name for p in pins), _looked_at)
    stack = _read_stack(pins, found, requested_names, base)
    warnings: list[str] = []
    if stack.torch is not None and stack.label is None:
        warnings.append(
            f"torch {stack.torch.version}: its index serves no wheel metadata, so its CUDA variant is not "
            "recorded"
        )
    unread = _unread(pins, requires) if stack.nvidia else []
    if unread:
        shown = ", ".join(unread[:5]) + (f" and {len(unread) - 5} more" if len(unread) > 5 else "")
        they = (
            "they pin the NVIDIA wheels they bring"
            if len(unread) > 1
            else "it pins the NVIDIA wheels it brings"
        )
        warnings.append(f"the index serves no wheel metadata for {shown}: whether {they} is not checked")
    warnings += _against_request(requested, stack, base, requested_names, found)
    warnings += _against_base(stack, base)
    components = merge({c.name: c for c in base.components} if base is not None else {}, stack.wheels)
    _check_cudnn(cudnn, components)
    warnings += _unpinned(list(stack.nvidia), requested_names, found)

    parts = [(f"the stack (CUDA {r})", r) for r in (stack.wheel_cuda,) if r is not None]
    if stack.base_release is not None and base is not None:
        parts.append((f"base image {base.reference}", stack.base_release.version))
    parts += [
        (f"{p.name} {p.version}", release)
        for p in stack.nvidia
        if (release := wheel_release(p.name, p.version)) is not None
    ]
    min_driver, driver_notes = _min_driver(parts, stack.wheel_major, stack.release)
    warnings += driver_notes
    return CudaResolution(
        locked=LockedCuda(
            requested=requested or "none",
            release=stack.release,
            components=components,
            min_driver=min_driver,
            torch_label=f"+{stack.label}" if stack.label else None,
            torch_index=stack.torch.index if stack.torch is not None and stack.label else None,
        ),
        warnings=tuple(warnings),
    )


def _against_request(
    requested: str | None,
    stack: _Stack,
    base: BaseCuda | None,
    requested_names: frozenset[str],
    found: list[Edge],
) -> list[str]:
    """The stack against [cuda] version: a refusal that names what was found and what to ask for, or
    the warning of an unset version."""
    bringer, wheel_cuda = stack.bringer, stack.wheel_cuda
    if requested == "none":
        if bringer is not None:
            raise ResolutionError(
                f'[cuda] version = "none" (CPU-only) but {bringer} brings CUDA '
                f"{wheel_cuda or stack.wheel_major}",
                hint=(f'ask for version = "{wheel_cuda}", or ' if wheel_cuda else "")
                + f"for torch, require torch +cpu from {PYTORCH_INDEX}cpu",
            )
        if stack.base_release is not None and base is not None:
            return [f'[cuda] version = "none" but {base.describe()}; its CUDA goes unused']
        return []
    if requested is None:
        if bringer is None and stack.base_release is None:
            return []
        advice = f'; set [cuda] version = "{stack.release}" to have it checked' if stack.release else ""
        held = _held_by(stack.runtime, requested_names, found) if stack.torch_release is None else None
        return [
            f"[cuda] version is not set, but the environment carries CUDA "
            f"{stack.release or stack.wheel_major}{held or ''}{advice}"
        ]
    if wheel_cuda is not None and _request_mismatch(requested, wheel_cuda):
        if stack.torch_release is not None:
            hint = (
                f'ask for version = "{wheel_cuda}", or require torch +{cuda_label(requested)} from '
                f"{torch_index(requested)} (add it to [python] extra-index-urls)"
            )
        else:
            assert stack.runtime is not None
            hint = (
                f'ask for version = "{wheel_cuda}", or hold the runtime at CUDA {requested}: require '
                f"{stack.runtime.name}=={requested}.* in [python] requirements"
            )
        raise ResolutionError(
            f'{bringer} is CUDA {wheel_cuda}, but [cuda] version = "{requested}"', hint=hint
        )
    major = stack.wheel_major
    if wheel_cuda is None and major is not None and major != version_key(requested)[0]:
        raise ResolutionError(
            f'{bringer} is built for CUDA {major} but [cuda] version = "{requested}"',
            hint=f"use the -cu{version_key(requested)[0]} wheels, or ask for a CUDA {major} version",
        )
    if bringer is None and stack.base_release is None:
        raise ResolutionError(
            f'[cuda] version = "{requested}" but nothing brings CUDA: no nvidia-* '
            "wheels were resolved and the base image has none",
            hint="require torch (PyPI's Linux x86_64 build carries CUDA), or use a CUDA base",
        )
    return []


def _against_base(stack: _Stack, base: BaseCuda | None) -> list[str]:
    """The wheels against the base's CUDA: majors must match; a second toolkit or cuDNN is flagged."""
    notes: list[str] = []
    if base is None:
        return notes
    if stack.base_release is not None and stack.wheel_major is not None:
        base_major = version_key(stack.base_release.version)[0]
        if base_major != stack.wheel_major:
            raise ResolutionError(
                f"{base.describe()} but {stack.bringer} is built for CUDA "
                f"{stack.wheel_cuda or stack.wheel_major}; CUDA major versions must match",
                hint=f"use wheels of the base's CUDA major (-cu{base_major}), or a base of the wheels' CUDA",
            )
        if stack.wheel_cuda is not None and major_minor(stack.base_release.version) != stack.wheel_cuda:
            notes.append(
                f"{base.describe()} but {stack.bringer} is CUDA {stack.wheel_cuda}; the wheels bring their "
                "own libraries, so the base's toolkit is unused weight"
            )
    system, wheel = base.get("cudnn"), stack.wheels.get("cudnn")
    if system is not None and wheel is not None:
        pin = next(p for p in stack.nvidia if p.name == wheel.source.removeprefix("wheel:"))
        wheel_size = max((w.size or 0 for w in pin.wheels), default=0)
        notes.append(
            f"two cuDNN stacks in one image: the base's cuDNN {system.version} ({system.source}, "
            f"{_mb(base.cudnn_bytes)}) and {pin.name} {wheel.version} ({_mb(wheel_size)} wheel); "
            "Python code loads the wheel's, the base's is dead weight"
        )
    return notes


def _check_cudnn(cudnn: str | None, components: tuple[CudaComponent, ...]) -> None:
    """[cuda] cudnn against the cuDNN the environment loads."""
    if cudnn is None:
        return
    effective = next((c for c in components if c.name == "cudnn"), None)
    if effective is None:
        raise ResolutionError(f"[cuda] cudnn asks {cudnn} but the environment has no cuDNN")
    if effective.version != cudnn and not effective.version.startswith(cudnn + "."):
        raise ResolutionError(
            f"[cuda] cudnn asks {cudnn} but the environment's cuDNN is {effective.version} "
            f"({effective.source})"
        )


def _unread(pins: tuple[PythonPin, ...], requires: Requires) -> list[str]:
    """Locked pins (not torch, which has its own warning, nor NVIDIA's own wheels) whose Requires-Dist
    could not be read: an NVIDIA wheel they bring is then checked for pins by nobody."""
    seen = {name for by_pin in requires.values() for name in by_pin}
    return sorted(
        p.name
        for p in pins
        if p.wheels and p.name not in seen and p.name != "torch" and _wheel_major(p.name) is None
    )


def _held_by(runtime: PythonPin | None, requested_names: frozenset[str], found: list[Edge]) -> str | None:
    """ ", pinned by nothing (...)" when no requirement holds the runtime wheel, and so the CUDA release,
    at one version: a re-lock may move the whole stack to another CUDA release."""
    if runtime is None or runtime.name in requested_names:
        return None
    wanted = _required_as(runtime.name, found)
    if not wanted or any(exact_pin(e.requirement) is not None for e in wanted):
        return None  # pinned, or nothing read says what brought it (the unread-metadata warning)
    return f", pinned by nothing: {runtime.name} is required as {_how_required(wanted)}"


def _unpinned(nvidia: list[PythonPin], requested_names: frozenset[str], found: list[Edge]) -> list[str]:
    """NVIDIA wheels that nothing pins exactly: the lock pins them, but a re-lock may move them. Edges
    through an extra count like the rest."""
    notes = []
    for pin in nvidia:
        if pin.name in requested_names:
            continue
        wanted = _required_as(pin.name, found)
        if wanted and all(exact_pin(e.requirement) is None for e in wanted):
            notes.append(
                f"{pin.name} is required without a version pin by {_how_required(wanted)}; "
                f"locked at {pin.version} anyway"
            )
    return notes


def _min_driver(
    parts: list[tuple[str, str]], wheel_major: int | None, stack_release: str | None
) -> tuple[str | None, list[str]]:
    """The highest floor any part of the stack needs ((what, CUDA release) pairs), with notes where the
    table falls short and where a component newer than the stack raises the floor (nvJitLink 12.5 in a
    12.1 stack needs CUDA 12.5's driver)."""
    floors = driver_floors()
    notes: list[str] = []
    needs: list[tuple[str, str, str]] = []  # (floor, what, release)
    unknown: set[str] = set()
    for what, release in parts:
        floor = toolkit_floor(release, floors)
        if floor is None:
            fallback = minor_compat_floor(version_key(release)[0], floors)
            if major_minor(release) not in unknown:
                unknown.add(major_minor(release))
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
            needs.append((floor, what, release))
    if not parts and wheel_major is not None:
        fallback = minor_compat_floor(wheel_major, floors)
        if fallback is not None:
            needs.append((fallback, f"CUDA {wheel_major} wheels", str(wheel_major)))
    if not needs:
        return None, notes
    highest = max(needs, key=lambda n: version_key(n[0]))
    # The parts of another release than the stack's that need the highest floor raise it.
    raisers = sorted(
        {
            what
            for floor, what, release in needs
            if floor == highest[0] and major_minor(release) != stack_release
        }
    )
    stack_floors = [f for f, _, release in needs if major_minor(release) == stack_release]
    if raisers and stack_floors:
        stack_floor = max(stack_floors, key=version_key)
        notes.append(
            f"{', '.join(raisers)} {'is' if len(raisers) == 1 else 'are'} CUDA {major_minor(highest[2])}, "
            f"newer than the stack's CUDA {stack_release}: min-driver is {highest[0]} "
            f"(CUDA {major_minor(highest[2])}'s), not {stack_floor}"
        )
    return highest[0], notes
