"""Where attestations live: OCI 1.1 artifacts whose `subject` is the image, found through the referrers API
or, on a registry without it, the referrers tag schema (an index tagged `sha256-<hex>` of the subject). Each
envelope is also a layer of cosign's attestation manifest, tagged `sha256-<hex>.att`: where cosign, Kyverno
and policy-controller look by default.

A registry without compare-and-swap on tags cannot make a tag's read-modify-write atomic, so the
writer checks after it wrote: it reads the tag again after a pause, and when its descriptor is gone (another
writer replaced the index with one made from an older read) it merges again and writes again. Two checks
spaced further apart than a writer's read-to-write time catch a writer that read before this one wrote.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlenv.attest.dsse import MEDIA_TYPE as ENVELOPE_TYPE
from mlenv.attest.dsse import PAYLOAD_TYPE
from mlenv.errors import SourceError
from mlenv.sources.registry import OCI_INDEX, OCI_MANIFEST, ImageReference, RegistryClient

ARTIFACT_TYPE = PAYLOAD_TYPE  # policy-controller takes the referrers whose artifactType names in-toto
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
# An envelope holds one statement: an SBOM of a large image is a few MiB.
MAX_ENVELOPE = 32 << 20
# The pauses before each check that the fallback tag still lists this writer's descriptor.
CHECK_PAUSES = (0.05, 0.4)
MAX_WRITES = 10

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Subject:
    """The image an attestation is attached to: its repository and the manifest (or index) it names."""

    ref: ImageReference  # the repository, as the user named it
    digest: str
    media_type: str
    size: int

    @property
    def pinned(self) -> str:
        return f"{self.ref.registry}/{self.ref.repository}@{self.digest}"

    @property
    def fallback_tag(self) -> str:
        return self.digest.replace(":", "-")


def subject_of(client: RegistryClient, ref: ImageReference) -> Subject:
    """What `ref` names now (a tag is resolved once, here; everything after works on the digest)."""
    manifest = client.get_manifest(ref)
    return Subject(ref=ref, digest=manifest.digest, media_type=manifest.media_type, size=len(manifest.raw))


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def artifact_manifest(subject: Subject, envelope: bytes, predicate_type: str) -> bytes:
    """The OCI 1.1 image manifest of one attestation: an empty config, the envelope as its one layer."""
    return _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": EMPTY_TYPE, "digest": _sha256(EMPTY), "size": len(EMPTY)},
            "layers": [
                {
                    "mediaType": ENVELOPE_TYPE,
                    "digest": _sha256(envelope),
                    "size": len(envelope),
                }
            ],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
            "annotations": {PREDICATE_ANNOTATION: predicate_type},
        }
    )


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attach(
    client: RegistryClient,
    subject: Subject,
    envelope: bytes,
    predicate_type: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Store the envelope as a referrer of `subject`; the artifact manifest's digest."""
    client.push_blob(subject.ref, _sha256(EMPTY), EMPTY)
    client.push_blob(subject.ref, _sha256(envelope), envelope)
    raw = artifact_manifest(subject, envelope, predicate_type)
    pushed = client.put_manifest(subject.ref, _sha256(raw), raw, OCI_MANIFEST)
    if not pushed.subject_indexed:
        descriptor = {
            "mediaType": OCI_MANIFEST,
            "digest": pushed.digest,
            "size": len(raw),
            "artifactType": ARTIFACT_TYPE,
            "annotations": {PREDICATE_ANNOTATION: predicate_type},
        }
        add_to_fallback(client, subject, descriptor, sleep=sleep)
    # Also where cosign, Kyverno and policy-controller (by default) look: the `.att` tag's manifest, the
    # envelope one of its layers.
    layer = {
        "mediaType": ENVELOPE_TYPE,
        "digest": _sha256(envelope),
        "size": len(envelope),
        "annotations": {"predicateType": predicate_type},
    }
    add_to_list(client, subject, cosign_list(subject), layer, sleep=sleep)
    return pushed.digest


@dataclass(frozen=True)
class TaggedList:
    """A tag whose manifest lists entries (descriptors) that writers add to: the referrers fallback index
    (`sha256-<hex>`, entries in `manifests`) or cosign's attestation manifest (`sha256-<hex>.att`, entries in
    `layers`, each a DSSE envelope)."""

    tag: str
    key: str  # where the entries are: "manifests" or "layers"
    what: str  # for messages

    def entries(self, client: RegistryClient, subject: Subject, *, strict: bool) -> list[dict[str, Any]]:
        found = client.find_manifest(subject.ref, self.tag)
        if found is None:
            return []
        entries = found.data.get(self.key)
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            if strict:  # writing over it would drop whatever it lists: refuse instead
                raise SourceError(
                    f"{subject.ref.repository}:{self.tag} on {subject.ref.registry} is not {self.what}; "
                    "mlenv will not replace it"
                )
            return []
        return list(entries)

    def document(
        self, client: RegistryClient, subject: Subject, entries: list[dict[str, Any]]
    ) -> tuple[bytes, str]:
        if self.key == "manifests":
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            return _canonical(index), OCI_INDEX
        # cosign's layout: an image manifest whose config lists each envelope as a layer (diff_id = digest,
        # the envelopes are not compressed). No time in it: the same envelopes give the same manifest.
        config = _canonical(
            {
                "architecture": "",
                "os": "",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [e["digest"] for e in entries]},
            }
        )
        client.push_blob(subject.ref, _sha256(config), config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha256(config),
                "size": len(config),
            },
            "layers": entries,
        }
        return _canonical(manifest), OCI_MANIFEST


def fallback_list(subject: Subject) -> TaggedList:
    return TaggedList(subject.fallback_tag, "manifests", "an OCI index")


def cosign_list(subject: Subject) -> TaggedList:
    return TaggedList(subject.fallback_tag + ".att", "layers", "an image manifest of attestations")


def add_to_fallback(
    client: RegistryClient,
    subject: Subject,
    descriptor: dict[str, Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Merge `descriptor` into the `sha256-<hex>` index, and make sure it stays there (module docstring)."""
    add_to_list(client, subject, fallback_list(subject), descriptor, sleep=sleep)


def add_to_list(
    client: RegistryClient,
    subject: Subject,
    tagged: TaggedList,
    descriptor: dict[str, Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    for _ in range(MAX_WRITES):
        entries = tagged.entries(client, subject, strict=True)
        if not any(e.get("digest") == descriptor["digest"] for e in entries):
            # Sorted by digest: what two writers make from the same entries is the same bytes.
            merged = sorted([*entries, descriptor], key=lambda e: str(e.get("digest")))
            raw, media_type = tagged.document(client, subject, merged)
            client.put_manifest(subject.ref, tagged.tag, raw, media_type)
        if _still_listed(client, subject, tagged, descriptor["digest"], sleep):
            return
    raise SourceError(
        f"cannot keep the attestation in {subject.ref.repository}:{tagged.tag} on "
        f"{subject.ref.registry}: another writer replaced it {MAX_WRITES} times"
    )


def _still_listed(
    client: RegistryClient, subject: Subject, tagged: TaggedList, digest: str, sleep: Callable[[float], None]
) -> bool:
    for pause in CHECK_PAUSES:
        sleep(pause * (1 + random.random()))  # jittered, so two writers do not check in step
        if not any(e.get("digest") == digest for e in tagged.entries(client, subject, strict=True)):
            return False
    return True


def listed(client: RegistryClient, subject: Subject) -> tuple[list[dict[str, Any]], str]:
    """The attestation descriptors attached to `subject`, and where they were found (for messages).
    Entries with a malformed digest are dropped: they name nothing mlenv would fetch."""
    found = client.referrers(subject.ref, subject.digest)
    where = "the referrers API"
    if found is None:
        found = fallback_list(subject).entries(client, subject, strict=False)
        where = f"the fallback tag {subject.fallback_tag}"
    entries = [
        e
        for e in found
        if isinstance(e.get("digest"), str)
        and _DIGEST.match(e["digest"])
        and e.get("artifactType") == ARTIFACT_TYPE
    ]
    return entries, where


def cosign_layers(client: RegistryClient, subject: Subject) -> list[dict[str, Any]]:
    """The envelope layers of the `.att` manifest (none when there is none or it is not a manifest)."""
    return [
        e
        for e in cosign_list(subject).entries(client, subject, strict=False)
        if e.get("mediaType") == ENVELOPE_TYPE
        and isinstance(e.get("digest"), str)
        and _DIGEST.match(e["digest"])
    ]


def envelope_blob(client: RegistryClient, subject: Subject, digest: str) -> bytes:
    return client.read_small_blob(subject.ref, digest, MAX_ENVELOPE, "attestation")


def envelope_of(client: RegistryClient, subject: Subject, digest: str) -> tuple[dict[str, Any], bytes]:
    """The artifact manifest `digest` and the envelope it carries (both digest-checked, bounded)."""
    manifest = client.get_manifest(subject.ref, digest)
    layers = manifest.data.get("layers")
    envelopes = [
        layer
        for layer in (layers if isinstance(layers, list) else [])
        if isinstance(layer, dict)
        and layer.get("mediaType") == ENVELOPE_TYPE
        and isinstance(layer.get("digest"), str)
    ]
    if len(envelopes) != 1:
        raise SourceError(f"attestation {digest} of {subject.pinned} carries no single DSSE envelope")
    return manifest.data, client.read_small_blob(
        subject.ref, envelopes[0]["digest"], MAX_ENVELOPE, "attestation"
    )


def registry_subject(client: RegistryClient, reference: str, option: str) -> Subject:
    """The image `reference` (docker://REF) names in its registry; attestations live nowhere else."""
    from mlenv.errors import ImageError

    if not reference.startswith("docker://"):
        raise ImageError(
            f"{option} {reference}: attestations are attached to an image in a registry; name it docker://REF"
        )
    return subject_of(client, ImageReference.parse(reference))
