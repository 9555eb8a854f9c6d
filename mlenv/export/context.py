"""What every exporter is given besides the lock and the verify report, and the one time they may print.

Exporters are pure: the CLI gathers these facts (the lockfile's sha256, the image's identity, the
environment's SOURCE_DATE_EPOCH) and passes them in, so the same inputs always give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlenv.errors import MlenvError
from mlenv.model.facts import EnvFacts
from mlenv.model.report import Report

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class ImageIdentity:
    """The image an export describes, as the observer read it."""

    reference: str  # as the user wrote it (credentials removed)
    config_digest: str | None  # the image ID
    manifest_digest: str | None  # known for docker://, OCI layouts and OCI archives

    @property
    def digest(self) -> str:
        """The digest that names this image where it lives: the registry's manifest digest when there is
        one (what `docker pull REF@DIGEST` takes), else the image ID."""
        digest = self.manifest_digest or self.config_digest
        if digest is None:
            raise MlenvError(f"{self.reference}: the observer found neither a manifest nor a config digest")
        return digest


@dataclass(frozen=True, kw_only=True)
class ExportContext:
    lock_digest: str  # "sha256:<hex>" of the lockfile's bytes: the lock's identity everywhere
    platform: str  # the platform described (base image, wheels); the lock's first unless chosen
    mlenv_version: str
    created: datetime | None = None  # the lock's as-of, else SOURCE_DATE_EPOCH; never the clock
    image: ImageIdentity | None = None  # set with --image
    facts: EnvFacts | None = None  # what the image holds, set with --image
    # Why the lock no longer matches its spec (empty: fresh); None when no spec was found to judge by.
    stale: tuple[str, ...] | None = None
    # Extras the spec asks for, by normalised name: the lock records pins, not how they were asked for.
    extras: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The folder beside the export holding the wheels the lock records as built on the host (no index has
    # them), written by the CLI with -o; None (stdout) leaves such pins out of installable exports.
    wheel_folder: Path | None = None


def document_time(as_of: datetime | None, source_date_epoch: str | None) -> datetime | None:
    """The time formats that require one print: the lock's as-of, else SOURCE_DATE_EPOCH, else None.

    Never the wall clock: an export of the same lock and image must be the same bytes tomorrow."""
    if as_of is not None:
        return as_of.astimezone(UTC)
    if source_date_epoch is None or not source_date_epoch.strip():
        return None
    try:
        return datetime.fromtimestamp(int(source_date_epoch), tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise MlenvError(
            f"SOURCE_DATE_EPOCH: {source_date_epoch!r} is not a number of seconds since 1970"
        ) from None


def freshness(context: ExportContext) -> str:
    """`fresh`, `stale: REASON`, or `not checked` when no spec was found beside the lock."""
    if context.stale is None:
        return "not checked (no spec found)"
    return f"stale: {context.stale[0]}" if context.stale else "fresh"


def verdict(report: Report | None) -> str:
    """`match`, `drift`, or `not-verified` when the export describes the lock alone."""
    if report is None:
        return "not-verified"
    return "match" if report.ok else "drift"
