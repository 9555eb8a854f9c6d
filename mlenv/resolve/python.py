"""Python layer of the lock: pins with hashes for every platform of the target, never the host."""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlenv.errors import ResolutionError
from mlenv.model.lock import LockedPython, PythonPin
from mlenv.model.spec import PythonSpec, Spec
from mlenv.model.target import Target, python_tuple, target_tags, wheel_installs
from mlenv.model.urls import redact
from mlenv.sources.python.backend import PythonRequest, ResolverBackend


def requested_names(python: PythonSpec) -> frozenset[str]:
    return frozenset(canonicalize_name(Requirement(r).name) for r in python.requirements)


def resolve_python(spec: Spec, target: Target, backend: ResolverBackend) -> LockedPython:
    """Resolve the spec's requirements once per target platform (through `backend`, the resolver the spec
    names) and merge them into one pin set."""
    per_platform = []
    for platform in sorted(target.platforms):
        request = PythonRequest(
            requirements=spec.python.requirements,
            python_version=target.python,
            glibc=target.glibc,
            platform=platform,
            index_url=spec.python.index_url,
            extra_index_urls=spec.python.extra_index_urls,
            as_of=spec.as_of,
        )
        per_platform.append((platform, backend.resolve(request)))
    requested = requested_names(spec.python)
    pins = merge_platforms(per_platform, target)
    unknown = requested - {pin.name for pin in pins}
    if unknown:
        raise ResolutionError(f"the resolver did not pin requested package(s): {', '.join(sorted(unknown))}")
    major, minor = python_tuple(target.python)
    return LockedPython(
        resolver=backend.name,
        requires_python=f"=={major}.{minor}.*",
        venv=spec.python.venv,
        index_url=redact(spec.python.index_url),
        extra_index_urls=tuple(redact(u) for u in spec.python.extra_index_urls),
        packages=tuple(
            PythonPin(
                name=p.name,
                version=p.version,
                marker=p.marker,
                index=p.index,
                requested=p.name in requested,
                wheels=p.wheels,
                sdist=p.sdist,
            )
            for p in pins
        ),
    )


def merge_platforms(per_platform: list[tuple[str, list[PythonPin]]], target: Target) -> list[PythonPin]:
    """One pin per package for all platforms, keeping only files that install on the target.

    The same package must resolve to the same version on every platform: a lock where amd64 and
    arm64 differ would not be one environment.
    """
    merged: dict[str, PythonPin] = {}
    for platform, pins in per_platform:
        tags = target_tags(target, platform)
        for pin in pins:
            wheels = tuple(w for w in pin.wheels if wheel_installs(w.name, tags))
            if not wheels and pin.sdist is None:
                raise ResolutionError(
                    f"{pin.name}=={pin.version} has no wheel or sdist that installs on "
                    f"CPython {target.python} {platform} glibc {target.glibc}"
                )
            previous = merged.get(pin.name)
            if previous is not None and previous.version != pin.version:
                raise ResolutionError(
                    f"{pin.name} resolves to {previous.version} on one platform and "
                    f"{pin.version} on {platform}; pin it in the spec"
                )
            if previous is not None:
                by_name = {w.name: w for w in previous.wheels + wheels}
                wheels = tuple(by_name[n] for n in sorted(by_name))
            merged[pin.name] = PythonPin(
                name=pin.name,
                version=pin.version,
                marker=pin.marker,
                index=pin.index,
                requested=False,
                wheels=wheels,
                sdist=pin.sdist,
            )
    return [merged[name] for name in sorted(merged)]
