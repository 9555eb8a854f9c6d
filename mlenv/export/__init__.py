"""Exports of a lock and, optionally, the verify report of an image built from it.

A registry of small modules behind one Protocol: each turns (lock, report, context) into bytes,
pure and deterministic. `export` is the one entry point: it scrubs credentials from every input
before any exporter sees them, so no format can leak one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from mlenv.export import cyclonedx, html, intoto, json, pylock, requirements, spdx
from mlenv.export.context import ExportContext, ImageIdentity, document_time
from mlenv.export.redaction import scrub
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.verify.formats import UnknownFormatError, parse_format


class Exporter(Protocol):
    def __call__(self, lock: Lock, report: Report | None, context: ExportContext, /) -> bytes: ...


class ExportFormat(StrEnum):
    CYCLONEDX = "cyclonedx"
    SPDX = "spdx"
    INTOTO = "intoto"
    HTML = "html"
    JSON = "json"
    PYLOCK = "pylock"
    REQUIREMENTS = "requirements"


FORMATS: dict[ExportFormat, Exporter] = {
    ExportFormat.CYCLONEDX: cyclonedx.export,
    ExportFormat.SPDX: spdx.export,
    ExportFormat.INTOTO: intoto.export,
    ExportFormat.HTML: html.export,
    ExportFormat.JSON: json.export,
    ExportFormat.PYLOCK: pylock.export,
    ExportFormat.REQUIREMENTS: requirements.export,
}


def export_format(name: str) -> ExportFormat:
    """`name` as an export format, or the error naming the ones there are."""
    return parse_format(ExportFormat, name, what="export format")


def export(name: str, lock: Lock, report: Report | None, context: ExportContext) -> bytes:
    """The bytes of `lock` (and `report`) in format `name`, with no credential anywhere in them."""
    return FORMATS[export_format(name)](scrub(lock), scrub(report), scrub(context))


__all__ = [
    "FORMATS",
    "ExportContext",
    "ExportFormat",
    "Exporter",
    "ImageIdentity",
    "UnknownFormatError",
    "document_time",
    "export",
    "export_format",
]
