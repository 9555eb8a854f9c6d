"""Python layer of the lock: pins with hashes for every platform of the target, never the host."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlenv.errors import ResolutionError
from mlenv.model.lock import LockedPython, PinSource, PythonPin
from mlenv.model.spec import PythonSpec, Spec
from mlenv.model.target import (
    Target,
    marker_environment,
    python_tuple,
    target_tags,
    wheel_installs,
)
from mlenv.model.urls import redact
from mlenv.progress import current
from mlenv.sources.python.backend import PythonRequest, ResolverBackend
from mlenv.sources.python.hostbuild import BuiltWheel, HostBuilder, runtime_requirements


def requested_names(python: PythonSpec, target: Target | None = None) -> frozenset[str]:
    """The packages the spec asks for; with `target`, only those whose marker holds on one of its
    platforms (`pywin32; sys_platform == "win32"` in a pip-compile file asks for nothing on Linux)."""
    names = set()
    for text in python.requirements:
        requirement = Requirement(text)
        marker = requirement.marker
        if (
            target is None
            or marker is None
            or any(marker.evaluate(marker_environment(target, p)) for p in target.platforms)
        ):
            names.add(canonicalize_name(requirement.name))
    return frozenset(names)


def resolve_python(
    spec: Spec,
    target: Target,
    backend: ResolverBackend,
    *,
    preferences: tuple[tuple[str, str], ...] = (),
    upgrade_packages: tuple[str, ...] = (),
    builder: HostBuilder | None = None,
) -> LockedPython:
    """Resolve the spec's requirements once per target platform (through `backend`, the resolver the spec
    names) and merge them into one pin set. `preferences` (the old lock's pins) are kept where they still
    satisfy the spec, except those of `upgrade_packages` (`name` or `name==version`).

    Directory and git requirements, and pins that have only an sdist, are built on the host into pure
    wheels (`builder`, by default one over the user's content store): see sources/python/hostbuild.py."""
    builder = builder or _default_builder(spec, target)
    local = []
    for requirement in spec.python.sources:
        shown = f"./{requirement.location}" if requirement.kind == "directory" else requirement.location
        current().step(f"lock: building {redact(shown)} into a wheel on the host")
        local.append(builder.from_source(requirement))
        _check_installs(local[-1][0], target)
    _refuse_twice(local, requested_names(spec.python))
    # The resolver sees what the built wheels need, not the wheels themselves: they are on no index.
    needs = tuple(r for built, _ in local for r in runtime_requirements(built.requires_dist))
    per_platform = []
    for platform in sorted(target.platforms):
        request = PythonRequest(
            requirements=spec.python.requirements + needs,
            constraints=spec.python.constraints,
            python_version=target.python,
            glibc=target.glibc,
            platform=platform,
            index_url=spec.python.index_url,
            extra_index_urls=spec.python.extra_index_urls,
            as_of=spec.as_of,
            as_of_exceptions=spec.python.as_of_exceptions,
            preferences=preferences,
            upgrade_packages=upgrade_packages,
        )
        per_platform.append((platform, backend.resolve(request)))
    requested = requested_names(spec.python, target) | {built.name for built, _ in local}
    pins = keep_pinned_hashes(merge_platforms(per_platform, target), spec.python)
    pins = [_with_built_wheel(pin, target, builder) for pin in pins]
    built_names = {built.name for built, _ in local}
    pins = sorted(
        [pin for pin in pins if pin.name not in built_names]
        + [_local_pin(built, source, spec.python.index_url) for built, source in local],
        key=lambda pin: pin.name,
    )
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
                source=p.source,
            )
            for p in pins
        ),
    )


def _check_installs(built: BuiltWheel, target: Target) -> None:
    """A pure wheel can still be for another Python (`py2-none-any`): refused here, not at build."""
    for platform in sorted(target.platforms):
        if not wheel_installs(built.file.name, target_tags(target, platform)):
            raise ResolutionError(
                f"{built.name} {built.version}: the wheel built on the host, {built.file.name}, "
                f"does not install on CPython {target.python} {platform}"
            )


def _refuse_twice(local: list[tuple[BuiltWheel, PinSource]], from_index: frozenset[str]) -> None:
    """One package from one place: two sources building it, or a source and an index requirement."""
    seen: dict[str, str] = {}
    for built, source in local:
        where = f"./{source.url}" if source.kind == "directory" else f"git+{redact(source.url)}"
        if built.name in from_index or built.name in seen:
            other = seen.get(built.name, "an index requirement")
            raise ResolutionError(
                f"{built.name} is required twice: built from {where} and {other}", hint="keep one of them"
            )
        seen[built.name] = f"built from {where}"


def _default_builder(spec: Spec, target: Target) -> HostBuilder:
    from mlenv.sources.cas import ContentStore

    return HostBuilder(
        ContentStore(),
        project_dir=Path(spec.project_dir),
        python_version=target.python,
        index_url=spec.python.index_url,
        extra_index_urls=spec.python.extra_index_urls,
    )


def _with_built_wheel(pin: PythonPin, target: Target, builder: HostBuilder) -> PythonPin:
    """A pin the index serves only as an sdist gets the wheel built from it on the host (or the lock is
    refused there, with why); a pin with a wheel for every target platform is as the index has it."""
    if pin.sdist is None or all(
        any(wheel_installs(w.name, target_tags(target, platform)) for w in pin.wheels)
        for platform in target.platforms
    ):
        return pin
    current().step(f"lock: building {pin.name} {pin.version} from its sdist on the host")
    built = builder.from_sdist(pin.name, pin.version, pin.sdist)
    _check_installs(built, target)
    return replace(pin, wheels=(*pin.wheels, built.file))


def _local_pin(built: BuiltWheel, source: PinSource, index_url: str) -> PythonPin:
    return PythonPin(
        name=built.name,
        version=built.version,
        index=redact(index_url),  # where its build backend and dependencies came from
        requested=True,
        wheels=(built.file,),
        source=source,
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


def keep_pinned_hashes(pins: list[PythonPin], python: PythonSpec) -> list[PythonPin]:
    """Apply `--hash` pins (pip-compile --generate-hashes output): every pinned hash must be a file the
    index serves for that version, and the lock keeps only the pinned files.

    A hash the index does not serve is refused: it is a file nobody can fetch from there, or a file
    that was replaced, and installing with --require-hashes would fail in the build anyway."""
    if not python.hashes:
        return pins
    # Imported here: the index client loads requests, which a lock without --hash pins never needs
    # (and `import mlenv.resolve` must not load a network client, tests/test_imports.py).
    from mlenv.sources.python.index import release_files

    pinned = dict(python.hashes)
    origins = dict(python.origins)
    indexes = {redact(url): url for url in (*python.extra_index_urls, python.index_url)}
    kept = []
    for pin in pins:
        wanted = pinned.get(pin.name)
        if wanted is None:
            kept.append(pin)
            continue
        index = indexes.get(pin.index, python.index_url)
        served = {file.sha256 for file in release_files(index, pin.name, pin.version) if file.sha256}
        unknown = sorted(set(wanted) - served)
        where = origins.get(pin.name, "the spec")
        if unknown:
            raise ResolutionError(
                f"{pin.name}=={pin.version}: --hash=sha256:{unknown[0]} in {where} is not a file "
                f"{redact(index)} serves for that version",
                hint="regenerate the file (pip-compile --generate-hashes) or remove the hash",
            )
        wheels = tuple(wheel for wheel in pin.wheels if wheel.sha256 in wanted)
        sdist = pin.sdist if pin.sdist is not None and pin.sdist.sha256 in wanted else None
        if not wheels and sdist is None:
            raise ResolutionError(
                f"{pin.name}=={pin.version}: no file pinned by --hash in {where} installs on the target"
            )
        kept.append(replace(pin, wheels=wheels, sdist=sdist))
    return kept
