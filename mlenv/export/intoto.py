"""An in-toto Statement v1 carrying a SLSA Provenance v1 predicate.

subject: the image (its registry manifest digest when known, else its image ID) when --image is
given, else the lockfile itself. resolvedDependencies: the base image and every artifact the lock
pins (each wheel and sdist, each .deb, each model) with its sha256. The lock's sha256 is the
external parameter the build follows; the verify verdict travels as a byproduct (the report
itself, inline). Times are the lock's as-of or SOURCE_DATE_EPOCH, omitted when neither is set.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from mlenv.export.context import ExportContext, verdict
from mlenv.export.inventory import hex_digest
from mlenv.lockfile import LOCK_FILE
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.model.time import rfc3339
from mlenv.verify.expected import deb_download
from mlenv.verify.formats import as_json

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# Identifies what the externalParameters mean: "a Docker image built by mlenv from a lockfile".
BUILD_TYPE = "https://mlenv.dev/buildtypes/docker-lock/v1"
BUILDER_ID = "https://mlenv.dev/builders/mlenv-build"


def export(lock: Lock, report: Report | None, context: ExportContext) -> bytes:
    predicate: dict[str, Any] = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "lock": {"name": LOCK_FILE, "digest": {"sha256": hex_digest(context.lock_digest)}},
                "project": lock.name,
                "platform": context.platform,
            },
            "internalParameters": {"specHash": lock.spec_hash, "pythonResolver": lock.python.resolver},
            "resolvedDependencies": resolved_dependencies(lock),
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": {"mlenv": context.mlenv_version}},
            "byproducts": [_verify_byproduct(report)],
        },
    }
    if context.created is not None:
        predicate["runDetails"]["metadata"] = {"startedOn": rfc3339(context.created)}
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [_subject(context)],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    return (json.dumps(statement, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _subject(context: ExportContext) -> dict[str, Any]:
    if context.image is None:
        return {"name": LOCK_FILE, "digest": {"sha256": hex_digest(context.lock_digest)}}
    return {"name": context.image.reference, "digest": {"sha256": hex_digest(context.image.digest)}}


def resolved_dependencies(lock: Lock) -> list[dict[str, Any]]:
    """The base image, then every pinned artifact, in a fixed order (by kind, then name)."""
    out: list[dict[str, Any]] = []
    if lock.base is not None:
        out.append(
            {
                "uri": f"oci://{lock.base.registry}/{lock.base.repository}@{lock.base.digest}",
                "name": lock.base.reference,
                "digest": {"sha256": hex_digest(lock.base.digest)},
                "annotations": {"kind": "base-image"},
            }
        )
    for deb in sorted(lock.apt.packages, key=lambda p: (p.name, p.architecture)):
        entry: dict[str, Any] = {
            "name": deb.filename.rsplit("/", 1)[-1],
            "digest": {"sha256": deb.sha256},
            "annotations": {"kind": "deb", "package": deb.name, "version": deb.version},
        }
        uri = deb_download(lock, deb)
        if uri is not None:
            entry["uri"] = uri
        out.append(entry)
    for pin in sorted(lock.python.packages, key=lambda p: p.name):
        files = [*sorted(pin.wheels, key=lambda w: w.name), *((pin.sdist,) if pin.sdist else ())]
        for file in files:
            out.append(
                {
                    "uri": file.url,
                    "name": file.name,
                    "digest": {"sha256": file.sha256},
                    "annotations": {
                        "kind": "python",
                        "package": pin.name,
                        "version": pin.version,
                        "hashSource": file.hash_source,
                    },
                }
            )
    for model in sorted(lock.models, key=lambda m: m.target):
        entry = {
            "name": model.target,
            "digest": {"sha256": model.sha256},
            "annotations": {"kind": "model", "source": model.source, "strategy": model.strategy},
        }
        if model.remote:
            entry["uri"] = model.source
        out.append(entry)
    return out


def _verify_byproduct(report: Report | None) -> dict[str, Any]:
    if report is None:
        return {"name": "mlenv-verify", "annotations": {"verdict": verdict(report)}}
    content = as_json(report).encode("utf-8")
    return {
        "name": "mlenv-verify-report.json",
        "mediaType": "application/json",
        "digest": {"sha256": hashlib.sha256(content).hexdigest()},
        "content": base64.b64encode(content).decode("ascii"),
        "annotations": {"verdict": verdict(report), "drifts": len(report.drifts), "subject": report.subject},
    }
