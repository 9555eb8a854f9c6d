"""The official readers the export tests hold each format to (beyond the format libraries' own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from mlenv.model.schema import load_schema

SPDX_SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "spdx" / "spdx-schema-2.3.json"


def validate_spdx(document: Any) -> None:
    """Raise unless `document` is valid against the official SPDX 2.3 JSON schema (draft 7)."""
    jsonschema.Draft7Validator(json.loads(SPDX_SCHEMA.read_text())).validate(document)


def audit_validator() -> jsonschema.protocols.Validator:
    """schemas/audit.schema.json, with the lockfile and report schemas it refers to by $id."""
    registry = Registry().with_resources(
        (load_schema(name)["$id"], Resource.from_contents(load_schema(name)))
        for name in ("mlenv.lock", "report", "audit")
    )
    schema = load_schema("audit")
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)
