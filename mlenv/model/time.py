"""The one spelling of a moment that mlenv writes: RFC 3339, UTC, whole seconds, with a Z."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: datetime) -> str:
    """`2024-07-01T00:00:00Z`: the form lockfiles, image labels, SBOMs and provenance all accept.

    A naive datetime is refused rather than read as the host's local time, which would make the
    same input print differently on two machines."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()}: a time without a timezone has no single RFC 3339 spelling")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_at(epoch: int) -> str:
    """`rfc3339` of a number of seconds since 1970 (SOURCE_DATE_EPOCH)."""
    return rfc3339(datetime.fromtimestamp(epoch, tz=UTC))
