"""Sign a verified image's statements and attach them to its digest: what `mlenv attest` and
`mlenv build --push --attest` share once they hold a verify report for exactly that digest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlenv.attest.dsse import sign
from mlenv.attest.referrers import Subject, attach
from mlenv.attest.statements import statements
from mlenv.export import ExportContext
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.sources.registry import RegistryClient


def publish(
    client: RegistryClient,
    subject: Subject,
    lock: Lock,
    report: Report,
    context: ExportContext,
    signing_key: Any,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[str, str]]:
    """(kind, artifact digest) of each statement attached: the verdict, provenance, the SBOM."""
    repository = f"{subject.ref.registry}/{subject.ref.repository}"
    stored = []
    for statement in statements(lock, report, context, repository=repository, digest=subject.digest):
        if progress is not None:
            progress(f"attest: sign and attach the {statement.kind} statement")
        digest = attach(client, subject, sign(statement.payload, signing_key), statement.predicate_type)
        stored.append((statement.kind, digest))
    return stored
