"""Exports of a lock and, optionally, the verify report of an image built from it.

A registry of small modules behind one Protocol: each turns (lock, report, context) into bytes,
pure and deterministic. `export` is the one entry point: it scrubs credentials from every input
before any exporter sees them, so no format can leak one.
"""

from __future__ import annotations

from typing import Protocol

from mlenv.errors import MlenvError
from mlenv.export import cyclonedx, html, intoto, json, pylock, spdx
from mlenv.export.context import ExportContext, ImageIdentity, document_time
from mlenv.export.redaction import scrub
from mlenv.model.lock import Lock
from mlenv.model.report import Report


class Exporter(Protocol):
    def __call__(self, lock: Lock, report: Report | None, context: ExportContext, /) -> bytes: ...


FORMATS: dict[str, Exporter] = {
    "cyclonedx": cyclonedx.export,
    "spdx": spdx.export,
    "intoto": intoto.export,
    "html": html.export,
    "json": json.export,
    "pylock": pylock.export,
}


class UnknownFormatError(MlenvError):
    def __init__(self, name: str) -> None:
        super().__init__(f"--format: unknown export format {name!r}; choose one of {', '.join(FORMATS)}")


def export(name: str, lock: Lock, report: Report | None, context: ExportContext) -> bytes:
    """The bytes of `lock` (and `report`) in format `name`, with no credential anywhere in them."""
    if name not in FORMATS:
        raise UnknownFormatError(name)
    return FORMATS[name](scrub(lock), scrub(report), scrub(context))


__all__ = [
    "FORMATS",
    "ExportContext",
    "Exporter",
    "ImageIdentity",
    "UnknownFormatError",
    "document_time",
    "export",
]
