"""The lock as a list of things an SBOM names: each with its package URL, version and sha256.

Shared by CycloneDX, SPDX and HTML so the three never disagree about what the image contains.
For one platform: the base image, the base's own dpkg packages that the apt closure does not
replace, the apt closure, the Python pins (with the wheel that installs on this platform), the CUDA
stack and the baked models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from packageurl import PackageURL

from mlenv.model.lock import BasePlatform, Lock, PythonFile, PythonPin
from mlenv.model.spec import DEFAULT_INDEX_URL
from mlenv.model.target import target_tags, wheel_installs

Kind = Literal["base-image", "base-deb", "deb", "pypi", "cuda", "model"]
ARCHES = {"linux/amd64": "amd64", "linux/arm64": "arm64"}


@dataclass(frozen=True, kw_only=True)
class Item:
    kind: Kind
    name: str
    version: str | None  # None for a model: its sha256 is its identity
    purl: str | None
    sha256: str | None  # hex digest of the artifact (the .deb, the wheel, the model, the manifest)
    download: str | None  # where the artifact was fetched from, when the lock says
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        """A stable identifier, unique within one inventory (bom-ref, SPDXID stem)."""
        key = self.purl or f"{self.kind}:{self.name}@{self.version}"
        return f"{self.kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@dataclass(frozen=True, kw_only=True)
class Inventory:
    base: Item | None
    base_packages: tuple[Item, ...]
    apt: tuple[Item, ...]
    python: tuple[Item, ...]
    cuda: tuple[Item, ...]
    models: tuple[Item, ...]

    def contents(self) -> tuple[Item, ...]:
        """What the image holds directly (the base's packages are inside the base)."""
        return (*((self.base,) if self.base else ()), *self.apt, *self.python, *self.cuda, *self.models)


def hex_digest(digest: str) -> str:
    """`sha256:abc` -> `abc`."""
    return digest.split(":", 1)[1] if ":" in digest else digest


def inventory(lock: Lock, platform: str) -> Inventory:
    base = _base_platform(lock, platform)
    distro = f"{base.os_id}-{base.os_version}" if base else None
    namespace = base.os_id if base else "debian"
    pins = [(p.name, p.architecture) for p in lock.apt.packages]
    return Inventory(
        base=_base_item(lock, base),
        base_packages=tuple(
            Item(
                kind="base-deb",
                name=p.name,
                version=p.version,
                purl=_deb_purl(namespace, p.name, p.version, p.architecture, distro),
                sha256=None,
                download=None,
                properties=(("mlenv:architecture", p.architecture),),
            )
            for p in sorted(base.packages if base else (), key=lambda p: (p.name, p.architecture))
            # The closure replaces (upgrades) a base package of its name and architecture, as verify expects.
            if not any(name == p.name and p.architecture in (arch, "all") for name, arch in pins)
        ),
        apt=tuple(
            Item(
                kind="deb",
                name=p.name,
                version=p.version,
                purl=_deb_purl(namespace, p.name, p.version, p.architecture, distro),
                sha256=p.sha256,
                download=mirror_url(lock, p.filename),
                properties=(("mlenv:architecture", p.architecture), ("mlenv:requested", _yes(p.requested))),
            )
            for p in sorted(lock.apt.packages, key=lambda p: (p.name, p.architecture))
        ),
        python=tuple(
            _python_item(lock, pin, platform) for pin in sorted(lock.python.packages, key=lambda p: p.name)
        ),
        cuda=tuple(
            Item(
                kind="cuda",
                name=_cuda_name(c.name),
                version=c.version,
                purl=PackageURL(
                    type="generic", namespace="nvidia", name=_cuda_name(c.name), version=c.version
                ).to_string(),
                sha256=None,
                download=None,
                properties=(("mlenv:source", c.source),),
            )
            for c in sorted(lock.cuda.components, key=lambda c: (c.name, c.source))
        ),
        models=tuple(
            Item(
                kind="model",
                name=m.target,
                version=None,
                purl=None,
                sha256=m.sha256,
                download=m.source if "://" in m.source else None,
                properties=(("mlenv:source", m.source), ("mlenv:strategy", m.strategy)),
            )
            for m in sorted(lock.models, key=lambda m: m.target)
        ),
    )


def _base_platform(lock: Lock, platform: str) -> BasePlatform | None:
    if lock.base is None:
        return None
    return next((p for p in lock.base.platforms if p.platform == platform), None)


def _base_item(lock: Lock, base: BasePlatform | None) -> Item | None:
    if lock.base is None:
        return None
    name = lock.base.repository.rsplit("/", 1)[-1]
    qualifiers = {"repository_url": f"{lock.base.registry}/{lock.base.repository}"}
    digest = lock.base.digest
    if base is not None:
        # The platform's own manifest is what the build pulled; the index digest names all platforms.
        qualifiers["arch"] = ARCHES.get(base.platform, base.platform)
        digest = base.manifest_digest
    properties = [("mlenv:reference", lock.base.reference), ("mlenv:index-digest", lock.base.digest)]
    if base is not None:
        properties += [
            ("mlenv:config-digest", base.config_digest),
            ("mlenv:os", f"{base.os_id} {base.os_version}"),
        ]
    return Item(
        kind="base-image",
        name=lock.base.reference,
        version=digest,
        purl=PackageURL(type="oci", name=name, version=digest, qualifiers=qualifiers).to_string(),
        sha256=hex_digest(digest),
        download=None,
        properties=tuple(properties),
    )


def _deb_purl(namespace: str, name: str, version: str, arch: str, distro: str | None) -> str:
    qualifiers = {"arch": arch}
    if distro:
        qualifiers["distro"] = distro
    return PackageURL(
        type="deb", namespace=namespace, name=name, version=version, qualifiers=qualifiers
    ).to_string()


def mirror_url(lock: Lock, filename: str) -> str | None:
    """Where the .deb `filename` (a pool path) was fetched from: the first apt source's mirror."""
    if not lock.apt.sources:
        return None
    mirror = min(lock.apt.sources, key=lambda s: (s.mirror, s.suite)).mirror
    return f"{mirror.rstrip('/')}/{filename}"


def installed_file(lock: Lock, pin: PythonPin, platform: str) -> PythonFile | None:
    """The wheel of `pin` that installs on `platform` (what `mlenv build` installs), else the sdist."""
    tags = target_tags(lock.target, platform)
    wheel = next((w for w in sorted(pin.wheels, key=lambda w: w.name) if wheel_installs(w.name, tags)), None)
    return wheel or pin.sdist


def _python_item(lock: Lock, pin: PythonPin, platform: str) -> Item:
    qualifiers = {} if pin.index.rstrip("/") == DEFAULT_INDEX_URL else {"repository_url": pin.index}
    file = installed_file(lock, pin, platform)
    properties = [("mlenv:requested", _yes(pin.requested)), ("mlenv:index", pin.index)]
    if pin.marker:
        properties.append(("mlenv:marker", pin.marker))
    if file is not None:
        properties.append(("mlenv:file", file.name))
    return Item(
        kind="pypi",
        name=pin.name,
        version=pin.version,
        purl=PackageURL(type="pypi", name=pin.name, version=pin.version, qualifiers=qualifiers).to_string(),
        sha256=file.sha256 if file else None,
        download=file.url if file else None,
        properties=tuple(properties),
    )


def _cuda_name(name: str) -> str:
    return "cuda-runtime" if name == "runtime" else name


def _yes(value: bool) -> str:
    return "true" if value else "false"
