"""Base layer of the lock: the spec's image reference pinned by digest, with the facts read from it.

The Python target (interpreter version, glibc, architecture) comes from these facts, so packages
are resolved for what the container will actually run.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlenv.errors import ResolutionError
from mlenv.model.facts import EnvFacts
from mlenv.model.lock import BasePlatform, LockedBase
from mlenv.model.spec import Spec
from mlenv.model.target import Target
from mlenv.observe import inspect_image
from mlenv.observe.fs.rootfs import ImageFS
from mlenv.resolve.apt import is_base_state_path
from mlenv.sources.registry import ImageReference, RegistryClient

# Where a Python image's own interpreter lives, most specific first (python:3.x-slim, then Debian's).
INTERPRETER_PATHS = ("/usr/local/bin/python3", "/usr/bin/python3")


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    """The pinned base and, per platform, its facts and filesystem (the apt resolver reads it)."""

    locked: LockedBase
    facts: dict[str, EnvFacts]
    filesystems: dict[str, ImageFS]


def base_python(facts: EnvFacts, reference: str) -> str:
    found = {i.path: i.version for i in facts.interpreters}
    for path in INTERPRETER_PATHS:
        if path in found:
            return found[path]
    raise ResolutionError(
        f"base image {reference} has no python3 in {' or '.join(INTERPRETER_PATHS)}",
        hint="use a Python base (e.g. python:3.11-slim) or one with Debian's python3 and python3-venv",
    )


def resolve_base(spec: Spec, registry: RegistryClient) -> BaseImage:
    """Pin the spec's base by digest and read each platform's facts, both through `registry` (which
    keeps what it fetched by digest, so each manifest and config is fetched once)."""
    assert spec.base is not None
    reference = ImageReference.parse(spec.base.image)
    platforms, facts, filesystems = [], {}, {}
    top_digest = None
    for platform in sorted(spec.base.platforms):
        resolved = registry.resolve(reference, platform=platform)
        top_digest = top_digest or resolved.digest
        if resolved.digest != top_digest:
            raise ResolutionError(
                f"base image {spec.base.image} changed while it was being locked; lock again"
            )
        pinned = f"docker://{reference.registry}/{reference.repository}@{resolved.manifest_digest}"
        observed = inspect_image(
            pinned, platform=platform, keep=is_base_state_path, registry=registry, check_files=False
        )
        image_facts = observed.facts
        if image_facts.os_id is None or image_facts.os_version is None:
            raise ResolutionError(
                f"base image {spec.base.image} has no /etc/os-release; mlenv needs to know its OS"
            )
        platforms.append(
            BasePlatform(
                platform=platform,
                manifest_digest=resolved.manifest_digest,
                config_digest=resolved.config_digest,
                diff_ids=tuple(resolved.diff_ids),
                os_id=image_facts.os_id,
                os_version=image_facts.os_version,
                glibc=image_facts.glibc,
                python=base_python(image_facts, spec.base.image),
                packages=image_facts.apt,
            )
        )
        facts[platform] = image_facts
        filesystems[platform] = observed.fs
    assert top_digest is not None
    locked = LockedBase(
        reference=spec.base.image,
        registry=reference.registry,
        repository=reference.repository,
        digest=top_digest,
        platforms=tuple(platforms),
    )
    return BaseImage(locked=locked, facts=facts, filesystems=filesystems)


def target_from_base(spec: Spec, base: LockedBase) -> Target:
    """The resolver's target from the base's facts; a [target] in the spec must agree with them."""
    pythons = {p.python for p in base.platforms}
    glibcs = {p.glibc for p in base.platforms}
    if len(pythons) != 1 or len(glibcs) != 1 or None in glibcs:
        raise ResolutionError(
            f"base image {base.reference} differs between platforms "
            f"(python {sorted(map(str, pythons))}, glibc {sorted(map(str, glibcs))}) "
            "or has no glibc; mlenv needs one target"
        )
    python, glibc = pythons.pop(), glibcs.pop()
    assert python is not None and glibc is not None
    for key, wanted, found in (
        ("target.python", spec.target.python, python),
        ("target.glibc", spec.target.glibc, glibc),
    ):
        if wanted is not None and wanted != found:
            raise ResolutionError(
                f"{spec.path}: {key} is {wanted} but base image {base.reference} has {found}",
                hint="remove [target]: it is read from the base image",
            )
    return Target(
        platforms=tuple(p.platform for p in base.platforms), python=python, glibc=glibc, source="base-image"
    )
