"""What an image holds, as the list of things an SBOM names: each with its package URL, version and sha256.

The items are verify's own projection of the lock (mlenv.verify.expected.image_contents), put in
the words CycloneDX and SPDX share, so an SBOM lists exactly what verify expects the image to hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from mlenv.export.context import ExportContext
from mlenv.model.lock import Lock
from mlenv.verify.expected import BaseImage, Cuda, Deb, Dist, ImageContents, Model, image_contents

Kind = Literal["base-image", "base-deb", "deb", "pypi", "cuda", "model"]


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


def inventory(lock: Lock, context: ExportContext) -> Inventory:
    """The SBOM items of the image `lock` builds for the context's platform."""
    return items(image_contents(lock, context.platform, lock_digest=context.lock_digest))


def items(contents: ImageContents) -> Inventory:
    return Inventory(
        base=_base_item(contents.base) if contents.base else None,
        base_packages=tuple(_deb_item(d, "base-deb") for d in contents.base_packages),
        apt=tuple(_deb_item(d, "deb") for d in contents.apt),
        python=tuple(_python_item(d) for d in contents.python),
        cuda=tuple(_cuda_item(c) for c in contents.cuda),
        models=tuple(_model_item(m) for m in contents.models),
    )


def _base_item(base: BaseImage) -> Item:
    properties = [("mlenv:reference", base.locked.reference), ("mlenv:index-digest", base.locked.digest)]
    if base.platform is not None:
        properties += [
            ("mlenv:config-digest", base.platform.config_digest),
            ("mlenv:os", f"{base.platform.os_id} {base.platform.os_version}"),
        ]
    return Item(
        kind="base-image",
        name=base.locked.reference,
        version=base.digest,
        purl=base.purl,
        sha256=hex_digest(base.digest),
        download=None,
        properties=tuple(properties),
    )


def _deb_item(deb: Deb, kind: Literal["base-deb", "deb"]) -> Item:
    properties = [("mlenv:architecture", deb.fact.architecture)]
    if deb.pin is not None:
        properties.append(("mlenv:requested", _yes(deb.pin.requested)))
    return Item(
        kind=kind,
        name=deb.fact.name,
        version=deb.fact.version,
        purl=deb.purl,
        sha256=deb.sha256,
        download=deb.download,
        properties=tuple(properties),
    )


def _python_item(dist: Dist) -> Item:
    pin, file = dist.pin, dist.file
    properties = [("mlenv:requested", _yes(pin.requested)), ("mlenv:index", pin.index)]
    if pin.marker:
        properties.append(("mlenv:marker", pin.marker))
    if file is not None:
        properties.append(("mlenv:file", file.name))
    return Item(
        kind="pypi",
        name=dist.fact.name,
        version=dist.fact.version,
        purl=dist.purl,
        sha256=file.sha256 if file else None,
        download=file.url if file else None,
        properties=tuple(properties),
    )


def _cuda_item(cuda: Cuda) -> Item:
    return Item(
        kind="cuda",
        name=cuda.name,
        version=cuda.fact.version,
        purl=cuda.purl,
        sha256=None,
        download=None,
        properties=(("mlenv:source", cuda.fact.source),),
    )


def _model_item(model: Model) -> Item:
    locked = model.locked
    return Item(
        kind="model",
        name=locked.target,
        version=None,
        purl=None,
        sha256=locked.sha256,
        download=model.download,
        properties=(("mlenv:source", locked.source), ("mlenv:strategy", locked.strategy)),
    )


def _yes(value: bool) -> str:
    return "true" if value else "false"
