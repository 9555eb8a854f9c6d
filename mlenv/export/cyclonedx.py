"""CycloneDX 1.5 JSON, built with the CycloneDX project's own library (cyclonedx-python-lib).

The image is the root component; it depends on its base image (whose own dpkg packages are nested
inside it), the apt closure, the Python pins, the CUDA stack and the baked models. The lock's
sha256 and the verify verdict are BOM properties. The serial number is derived from the lock and
image digests, so the same inputs give the same document.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.bom_ref import BomRef
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from mlenv.export.context import EPOCH, ExportContext, verdict
from mlenv.export.inventory import Item, hex_digest, inventory
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.model.time import rfc3339

TYPES = {
    "base-image": ComponentType.CONTAINER,
    "base-deb": ComponentType.LIBRARY,
    "deb": ComponentType.LIBRARY,
    "pypi": ComponentType.LIBRARY,
    "cuda": ComponentType.LIBRARY,
    "model": ComponentType.MACHINE_LEARNING_MODEL,
}
# Names the serial number's UUID (version 5) space; any fixed UUID would do, this one is mlenv's.
NAMESPACE = uuid.UUID("6f1c3c59-6b9e-5b7e-9a52-6d6c656e7631")


def serial_number(context: ExportContext) -> uuid.UUID:
    image = context.image.digest if context.image else ""
    return uuid.uuid5(NAMESPACE, f"cyclonedx:{context.lock_digest}:{image}:{context.platform}")


def export(lock: Lock, report: Report | None, context: ExportContext) -> bytes:
    items = inventory(lock, context)
    root = _root(lock, context)
    components = {item.ref: _component(item) for item in items.contents()}
    if items.base is not None:
        components[items.base.ref].components = [_component(item) for item in items.base_packages]
    dependencies = [
        Dependency(ref=root.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in components.values()])
    ]
    if items.base is not None:
        base = components[items.base.ref]
        dependencies.append(
            Dependency(ref=base.bom_ref, dependencies=[Dependency(ref=c.bom_ref) for c in base.components])
        )
    bom = Bom(
        serial_number=serial_number(context),
        metadata=BomMetaData(
            timestamp=context.created or EPOCH,
            component=root,
            tools=ToolRepository(
                components=[
                    Component(
                        type=ComponentType.APPLICATION,
                        name="mlenv",
                        version=context.mlenv_version,
                        purl=PackageURL(type="pypi", name="mlenv", version=context.mlenv_version),
                    )
                ]
            ),
            properties=_properties(_verify_facts(lock, report)),
        ),
        components=components.values(),
        dependencies=dependencies,
    )
    return JsonV1Dot5(bom).output_as_string(indent=2).encode("utf-8") + b"\n"


def _root(lock: Lock, context: ExportContext) -> Component:
    properties = [
        ("mlenv:lock:name", lock.name),
        ("mlenv:lock:sha256", hex_digest(context.lock_digest)),
        ("mlenv:platform", context.platform),
    ]
    if context.image is None:
        # Describing the lock alone: the image is the one `mlenv build` makes from this lock.
        return Component(
            type=ComponentType.CONTAINER,
            name=lock.name,
            version=context.lock_digest,
            bom_ref=BomRef("image"),
            properties=_properties(properties),
            description=f"the image mlenv builds from the lock {context.lock_digest}",
        )
    image = context.image
    if image.config_digest:
        properties.append(("mlenv:image:config-digest", image.config_digest))
    if image.manifest_digest:
        properties.append(("mlenv:image:manifest-digest", image.manifest_digest))
    return Component(
        type=ComponentType.CONTAINER,
        name=image.reference,
        version=image.digest,
        bom_ref=BomRef("image"),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=hex_digest(image.digest))],
        properties=_properties(properties),
    )


def _verify_facts(lock: Lock, report: Report | None) -> list[tuple[str, str]]:
    facts = [("mlenv:verify:verdict", verdict(report))]
    if report is not None:
        facts += [("mlenv:verify:subject", report.subject), ("mlenv:verify:drifts", str(len(report.drifts)))]
    if lock.as_of is not None:
        facts.append(("mlenv:lock:as-of", rfc3339(lock.as_of)))
    return facts


def _component(item: Item) -> Component:
    return Component(
        type=TYPES[item.kind],
        name=item.name,
        version=item.version,
        bom_ref=BomRef(item.ref),
        purl=PackageURL.from_string(item.purl) if item.purl else None,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=item.sha256)] if item.sha256 else None,
        external_references=[
            ExternalReference(type=ExternalReferenceType.DISTRIBUTION, url=XsUri(item.download))
        ]
        if item.download
        else None,
        properties=_properties(item.properties),
    )


def _properties(pairs: Iterable[tuple[str, str]]) -> list[Property]:
    return [Property(name=name, value=value) for name, value in pairs]
