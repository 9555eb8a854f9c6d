"""What a deploy gate asks of an image: is there an mlenv verify attestation, signed by the team's key, made
for this very digest and for the expected lock, and what verdict does it carry?

Every attestation of the verify predicate type on the image is checked; the first that passes every check
answers. When none passes, the error names what failed (missing, unsigned, another key, another digest,
another lock), exit 1: a check ran and refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlenv.attest.dsse import EnvelopeError, open_envelope
from mlenv.attest.fields import field
from mlenv.attest.referrers import (
    PREDICATE_ANNOTATION,
    Subject,
    cosign_layers,
    cosign_list,
    envelope_blob,
    envelope_of,
    listed,
)
from mlenv.attest.statements import STATEMENT_TYPE, VERIFY_PREDICATE
from mlenv.errors import MlenvError, SourceError
from mlenv.export.inventory import hex_digest
from mlenv.sources.registry import RegistryClient

# Each attestation costs two requests and up to 32 MiB; a registry listing thousands would keep a gate busy
# for hours. More than this many is refused (fail closed) rather than read.
MAX_ATTESTATIONS = 64


class AttestationError(MlenvError):
    """No attestation passes the checks: the gate refuses (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Attested:
    attestation: str  # the artifact manifest's digest
    verdict: str  # match or drift
    predicate: dict[str, Any]


def check_one(
    client: RegistryClient, subject: Subject, digest: str, public_key: Any, lock_sha256: str
) -> Attested:
    """An OCI 1.1 attestation: the artifact manifest `digest`, attached to `subject`, and its envelope."""
    what = f"attestation {digest} of {subject.pinned}"
    manifest, envelope = envelope_of(client, subject, digest)
    attached_to = field(manifest, "subject", "digest")
    if attached_to != subject.digest:
        raise AttestationError(f"{what}: attached to {str(attached_to)[:80]}, not to this image")
    return check_envelope(what, digest, envelope, subject, public_key, lock_sha256)


def check_envelope(
    what: str, digest: str, envelope: bytes, subject: Subject, public_key: Any, lock_sha256: str
) -> Attested:
    """The signed statement: the key's signature, an in-toto Statement of the verify predicate, made for
    `subject`'s digest and for the lock `lock_sha256`."""
    payload = open_envelope(envelope, public_key, what)
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise AttestationError(f"{what}: the signed payload is not JSON") from None
    if field(statement, "_type") != STATEMENT_TYPE:
        raise AttestationError(f"{what}: the signed payload is not an in-toto Statement v1")
    if field(statement, "predicateType") != VERIFY_PREDICATE:
        raise AttestationError(f"{what}: signed for another predicate type than {VERIFY_PREDICATE}")
    subjects = statement.get("subject")
    digests = [field(s, "digest", "sha256") for s in subjects] if isinstance(subjects, list) else []
    if hex_digest(subject.digest) not in digests:
        shown = ", ".join(f"sha256:{d}" for d in digests if isinstance(d, str))[:200] or "no digest"
        raise AttestationError(f"{what}: signed for {shown}, not for {subject.digest}")
    predicate = statement.get("predicate")
    locked = field(predicate, "lock", "sha256")
    if locked != lock_sha256:
        raise AttestationError(
            f"{what}: made for the lock sha256:{str(locked)[:64]}, not the expected sha256:{lock_sha256}"
        )
    verdict = field(predicate, "verdict")
    if verdict not in ("match", "drift"):
        raise AttestationError(f"{what}: carries no verdict (match or drift)")
    assert isinstance(predicate, dict)
    return Attested(attestation=digest, verdict=verdict, predicate=predicate)


def check_attestations(
    client: RegistryClient, subject: Subject, public_key: Any, lock_sha256: str
) -> Attested:
    """The verify attestation of `subject` that passes every check. When several pass and one says
    `drift`, that one answers: a gate fails closed, as Kyverno does (every attestation must hold)."""
    entries, where = listed(client, subject)
    wanted = (None, VERIFY_PREDICATE)
    manifests = [e for e in entries if field(e, "annotations", PREDICATE_ANNOTATION) in wanted]
    layers = [e for e in cosign_layers(client, subject) if field(e, "annotations", "predicateType") in wanted]
    if not manifests and not layers:
        raise AttestationError(
            f"{subject.pinned}: no mlenv verify attestation "
            f"(looked in {where} and {cosign_list(subject).tag})"
        )
    passed: list[Attested] = []
    refused: list[str] = []
    found = [(check_one, e["digest"]) for e in manifests] + [(_check_layer, e["digest"]) for e in layers]
    if len(found) > MAX_ATTESTATIONS:
        raise AttestationError(
            f"{subject.pinned}: {len(found)} verify attestations listed, over the {MAX_ATTESTATIONS} mlenv "
            "reads; prune old ones"
        )
    for check, digest in found:
        try:
            passed.append(check(client, subject, digest, public_key, lock_sha256))
        except (AttestationError, EnvelopeError, SourceError) as error:
            refused.append(error.message)
    if passed:
        return next((a for a in passed if a.verdict == "drift"), passed[0])
    more = f" (and {len(refused) - 1} other attestation(s) refused)" if len(refused) > 1 else ""
    raise AttestationError(refused[0] + more)


def _check_layer(
    client: RegistryClient, subject: Subject, digest: str, public_key: Any, lock_sha256: str
) -> Attested:
    """A layer of cosign's `.att` manifest: the tag names the subject, the signed statement must too."""
    what = f"attestation {digest} in {cosign_list(subject).tag} of {subject.pinned}"
    return check_envelope(
        what, digest, envelope_blob(client, subject, digest), subject, public_key, lock_sha256
    )
