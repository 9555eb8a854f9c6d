"""The three in-toto Statements `mlenv attest` signs for one image digest.

- SLSA provenance v1: mlenv's in-toto export (materials: the lock's sha256, the base digest, every artifact).
- mlenv's verify verdict, a predicate type of its own (schemas/verify-attestation.schema.json): the lock's
  sha256, the verdict, every drift and policy finding. This is what a deploy gate reads.
- The CycloneDX SBOM of the image, as CycloneDX's predicate type.

Each is made by the export layer (credentials scrubbed there) and carries the same subject: the image's
repository and the digest the attestation is attached to. Pure: the same lock, report and digest give the
same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlenv.export import ExportContext, export
from mlenv.export.context import verdict
from mlenv.export.inventory import hex_digest
from mlenv.export.redaction import scrub
from mlenv.lockfile import LOCK_FILE
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.verify.formats import as_data

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
VERIFY_PREDICATE = "https://mlenv.dev/attestations/verify/v1"
PROVENANCE_PREDICATE = "https://slsa.dev/provenance/v1"
SBOM_PREDICATE = "https://cyclonedx.org/bom"


@dataclass(frozen=True)
class Statement:
    kind: str  # verify, provenance, sbom: how mlenv names it in its output
    predicate_type: str
    payload: bytes  # the statement's JSON bytes: what the envelope signs


def subject(repository: str, digest: str) -> list[dict[str, Any]]:
    """The statement's subject: the image's repository (no tag: tags move) and the attached digest."""
    return [{"name": repository, "digest": {"sha256": hex_digest(digest)}}]


def _statement(predicate_type: str, subjects: list[dict[str, Any]], predicate: Any) -> bytes:
    document = {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def verify_predicate(report: Report, context: ExportContext) -> dict[str, Any]:
    data = as_data(scrub(report))  # a drift's value may hold a credential (an Env value)
    return {
        "lock": {"name": LOCK_FILE, "sha256": hex_digest(context.lock_digest)},
        "verdict": verdict(report),
        "platform": context.platform,
        "layers": data["layers"],
        "drifts": data["drifts"],
        "findings": data["findings"],
        "verifier": {"name": "mlenv", "version": context.mlenv_version},
    }


def statements(
    lock: Lock, report: Report, context: ExportContext, *, repository: str, digest: str
) -> tuple[Statement, ...]:
    """The verify verdict first (the one a gate reads), then provenance, then the SBOM."""
    subjects = subject(repository, digest)
    provenance = json.loads(export("intoto", lock, report, context))
    sbom = json.loads(export("cyclonedx", lock, report, context))
    return (
        Statement(
            "verify",
            VERIFY_PREDICATE,
            _statement(VERIFY_PREDICATE, subjects, verify_predicate(report, context)),
        ),
        Statement(
            "provenance",
            PROVENANCE_PREDICATE,
            _statement(PROVENANCE_PREDICATE, subjects, provenance["predicate"]),
        ),
        Statement("sbom", SBOM_PREDICATE, _statement(SBOM_PREDICATE, subjects, sbom)),
    )
