"""Spec -> Lock: the whole resolution, layer by layer (each layer's module beside this one), through
the `Sources` the caller hands in."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlenv.errors import ResolutionError
from mlenv.model.lock import Lock, LockedApp, LockedApt, LockedCuda, LockedPython
from mlenv.model.spec import AppSpec, ResolverName, Spec
from mlenv.model.target import Target
from mlenv.progress import current
from mlenv.resolve.cuda import BaseCuda, Requires, check_request, fetch_requires, lock_cuda, needs_metadata
from mlenv.resolve.models import lock_models
from mlenv.resolve.python import requested_names, resolve_python
from mlenv.resolve.upgrade import Upgrade, apt_preferences, python_preferences, unknown_upgrades
from mlenv.sources.python.backend import ResolverBackend
from mlenv.sources.registry import RegistryClient
from mlenv.spec import spec_hash

if TYPE_CHECKING:
    # The base image, its filesystem and the apt solver are imported where a spec needs them: a lock of the
    # Python layer alone (no [base], no [apt]) does not pay ~0.25 s of imports for them.
    from mlenv.observe.fs.rootfs import ImageFS
    from mlenv.resolve.apt import AptBaseState, SuiteFetcher
    from mlenv.resolve.base import BaseImage

# wheel URLs -> each wheel's Requires-Dist lines (None where the index serves no metadata)
WheelRequires = Callable[[list[str]], Mapping[str, "tuple[str, ...] | None"]]


@dataclass(frozen=True, kw_only=True)
class Sources:
    """Everything the resolver reads from, made by the caller (cli/lock.py) and passed in, so a test can
    hand it a local registry, a recorded archive or a stub backend."""

    registry: RegistryClient  # pins the base and reads its files: one client, each manifest fetched once
    debian: Callable[[str | None], SuiteFetcher]  # the archive for the spec's apt mirror (None: the image's)
    python: Callable[[ResolverName], ResolverBackend]  # the Python resolver the spec names
    wheel_requires: WheelRequires  # for the CUDA checks of torch & co.


def target_from_spec(spec: Spec) -> Target:
    if spec.target.python is None or spec.target.glibc is None:
        raise ResolutionError("no target: give [target] python and glibc, or a base image to read them from")
    return Target(
        platforms=spec.target.platforms, python=spec.target.python, glibc=spec.target.glibc, source="spec"
    )


def locked_app(app: AppSpec) -> LockedApp:
    return LockedApp(
        copy=app.copy,
        workdir=app.workdir,
        cmd=app.cmd,
        port=app.port,
        healthcheck=app.healthcheck,
        user=app.user,
        env=app.env,
    )


def apt_base_state(fs: ImageFS) -> AptBaseState:
    """The base image's apt state, read from its (never extracted) filesystem."""
    from mlenv.resolve.apt import read_base_state

    def read(path: str) -> bytes | None:
        try:
            return fs.read_bytes(path) if fs.is_file(path) else None
        except LookupError:  # the observer did not keep this file's content
            return None

    def listdir(path: str) -> list[str]:
        return fs.listdir(path) if fs.is_dir(path) else []

    return read_base_state(read, listdir)


def base_cuda(base: BaseImage) -> BaseCuda | None:
    """The CUDA stack of the base (the same on every platform, or the lock could not say one stack)."""
    from mlenv.observe.probes.cuda import library_bytes

    stacks = {platform: facts.cuda for platform, facts in sorted(base.facts.items())}
    if len(set(stacks.values())) > 1:
        raise ResolutionError(
            f"base image {base.locked.reference} carries a different CUDA stack per platform"
        )
    platform, components = next(iter(stacks.items()))
    if not components:
        return None
    return BaseCuda(
        reference=base.locked.reference,
        components=components,
        cudnn_bytes=library_bytes(base.filesystems[platform], "libcudnn"),
    )


def _stderr_warning(message: str) -> None:
    sys.stderr.write(f"mlenv: warning: {message}\n")


def resolve_cuda(
    spec: Spec,
    python: LockedPython,
    target: Target,
    base: BaseCuda | None,
    wheel_requires: WheelRequires,
    warn: Callable[[str], None],
) -> LockedCuda:
    requires: Requires = {}
    if needs_metadata(python.packages):
        requires = fetch_requires(python.packages, target, wheel_requires)
    resolution = lock_cuda(
        requested=spec.cuda.version,
        cudnn=spec.cuda.cudnn,
        pins=python.packages,
        requested_names=requested_names(spec.python),
        requires=requires,
        target=target,
        base=base,
    )
    for message in resolution.warnings:
        warn(message)
    return resolution.locked


def resolve_lock(
    spec: Spec,
    sources: Sources,
    *,
    warn: Callable[[str], None] = _stderr_warning,
    previous: Lock | None = None,
    upgrade: Upgrade | None = None,
) -> Lock:
    """Resolve the spec into a Lock, reading the base, the apt archive and the Python index through
    `sources`. Warnings (a lock that works but deserves a look) go to `warn`, one line each.

    `previous` (the old lock) is a preference: every pin of it that still satisfies the spec is kept,
    except what `upgrade` lets move (upgrade.py), so a re-lock moves only what it must."""
    upgrade = upgrade or Upgrade()
    steps = current()
    base = None
    if spec.base is not None:
        from mlenv.resolve.base import resolve_base, target_from_base

        steps.step(f"lock: reading base image {spec.base.image}")
        base = resolve_base(spec, sources.registry)
    target = target_from_base(spec, base.locked) if base is not None else target_from_spec(spec)
    cuda_base = base_cuda(base) if base is not None else None
    check_request(spec.cuda.version, spec.python.requirements, cuda_base)
    apt = LockedApt()
    if spec.apt.packages:
        if base is None:
            raise ResolutionError("apt packages need a base image to resolve against: add [base] image")
        from mlenv.resolve.apt import lock_apt

        steps.step(f"lock: resolving {len(spec.apt.packages)} apt packages against {spec.apt.mirror}")
        states = {platform: apt_base_state(fs) for platform, fs in base.filesystems.items()}
        archive = sources.debian(spec.apt.mirror)
        prefer = apt_preferences(previous, upgrade)
        resolutions = [
            lock_apt(spec.apt, state, archive=archive, as_of=spec.as_of, prefer=prefer)
            for _, state in sorted(states.items())
        ]
        # The solver's notes (a virtual package's provider chosen, a base package it could not read):
        # once each, though every platform's resolution may give the same one.
        for note in dict.fromkeys(n for r in resolutions for n in r.notes if n not in r.source_notes):
            warn(note)
        apt = LockedApt(
            sources=resolutions[0].sources,
            packages=tuple(
                sorted({p for r in resolutions for p in r.pins}, key=lambda p: (p.name, p.architecture))
            ),
        )
    steps.step(f"lock: resolving Python packages with {spec.python.resolver} for {target.python}")
    python = resolve_python(
        spec,
        target,
        sources.python(spec.python.resolver),
        preferences=python_preferences(previous, upgrade),
        upgrade_packages=upgrade.python,
    )
    steps.step("lock: checking the CUDA stack, hashing models")
    lock = Lock(
        name=spec.name,
        spec_hash=spec_hash(spec),
        as_of=spec.as_of,
        target=target,
        base=base.locked if base is not None else None,
        apt=apt,
        python=python,
        cuda=resolve_cuda(spec, python, target, cuda_base, sources.wheel_requires, warn),
        app=locked_app(spec.app),
        models=lock_models(spec, python, warn=warn),
    )
    for message in unknown_upgrades(previous, lock, upgrade):
        warn(message)
    return lock
