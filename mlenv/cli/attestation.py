"""`mlenv verify docker://REF --attestation --key PUB`: the deploy-time check of a signed verify verdict.

Exit 0 when an attestation signed by the key, made for this digest and for the lock, says `match`; 1 when
it says `drift`, or when none passes (missing, unsigned, another key, another digest, another lock).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from mlenv.attest.check import check_attestations
from mlenv.attest.keys import load_public_key
from mlenv.attest.referrers import registry_subject
from mlenv.cli.common import read_lock_input
from mlenv.errors import MlenvError
from mlenv.export.inventory import hex_digest
from mlenv.lockfile import lock_digest
from mlenv.sources.registry import RegistryClient
from mlenv.verify.formats import ReportFormat

SHOWN_DRIFTS = 20


def verify_attestation(image: str, lock: Path, key: Path | None, chosen: ReportFormat) -> None:
    if key is None:
        raise MlenvError("--attestation needs --key: the public key the attestation must be signed with")
    if chosen is ReportFormat.JUNIT:
        raise MlenvError(
            "--attestation prints text or json; junit describes an image read, not an attestation"
        )
    data, _ = read_lock_input(lock, "--lock")
    public_key = load_public_key(key)
    client = RegistryClient()
    subject = registry_subject(client, image, "IMAGE")
    found = check_attestations(client, subject, public_key, hex_digest(lock_digest(data)))
    drifts = found.predicate.get("drifts")
    drifts = drifts if isinstance(drifts, list) else []
    if chosen is ReportFormat.JSON:
        shown = {
            "image": subject.pinned,
            "attestation": found.attestation,
            "verdict": found.verdict,
            "lock": found.predicate.get("lock"),
            "drifts": drifts,
        }
        sys.stdout.write(json.dumps(shown, indent=2, sort_keys=True) + "\n")
    else:
        typer.echo(
            f"{subject.pinned}: attestation {found.attestation} signed with {key}: "
            f"lock {lock} {found.verdict}"
            + ("" if found.verdict == "match" else f" ({len(drifts)} drift(s))")
        )
        for drift in drifts[:SHOWN_DRIFTS]:
            message = drift.get("message") if isinstance(drift, dict) else None
            typer.echo(f"  {str(message)[:300]}")
        if len(drifts) > SHOWN_DRIFTS:
            typer.echo(f"  ... and {len(drifts) - SHOWN_DRIFTS} more")
    if found.verdict != "match":
        raise typer.Exit(1)
