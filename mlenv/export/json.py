"""The audit bundle: the lock, what the image holds, the verify report and the tool, in one JSON
document (schemas/audit.schema.json). Everything an auditor needs to re-check a verdict offline."""

from __future__ import annotations

import json
import tomllib

from mlenv.export.context import ExportContext, verdict
from mlenv.lockfile import dumps
from mlenv.model.facts import facts_data
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.model.schema import as_json_value
from mlenv.verify.formats import as_data

AUDIT_VERSION = 1


def export(lock: Lock, report: Report | None, context: ExportContext) -> bytes:
    image = context.image
    bundle = {
        "audit-version": AUDIT_VERSION,
        "tool": {"name": "mlenv", "version": context.mlenv_version},
        "platform": context.platform,
        "verdict": verdict(report),
        # The lock as mlenv writes it, read back: the same keys the lockfile schema describes.
        "lock": {"sha256": context.lock_digest, "content": as_json_value(tomllib.loads(dumps(lock)))},
        "image": None
        if image is None
        else {
            "reference": image.reference,
            "config-digest": image.config_digest,
            "manifest-digest": image.manifest_digest,
        },
        "facts": None if context.facts is None else facts_data(context.facts),
        "report": None if report is None else as_data(report),
    }
    return (json.dumps(bundle, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
