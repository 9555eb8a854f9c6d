"""Validate parsed TOML/JSON against the published JSON Schemas, reporting the first error's key path."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from datetime import date, datetime, time
from functools import cache
from importlib.resources import files
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

# What jsonschema imports for formats mlenv's schemas do not use (only date-time): uri, iri, duration,
# color, json-pointer, uri-template, hostname (fqdn).
UNUSED_FORMAT_LIBRARIES = (
    "rfc3986_validator",
    "rfc3987",
    "isoduration",
    "webcolors",
    "jsonpointer",
    "uri_template",
    "fqdn",
)


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema published as schemas/<name>.schema.json."""
    text = files("mlenv").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def key_path(parts: Iterable[str | int]) -> str:
    """`["python", "packages", 3, "wheels"]` -> `python.packages[3].wheels` (pypa/packaging style)."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # A key outside TOML's bare-key grammar is quoted as TOML quotes it, so a hostile key (a
            # newline, a dot) cannot break the one error line or pass for another path.
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part)
            out += f".{name}" if out else name
    return out


def as_json_value(value: Any) -> Any:
    """TOML values as JSON sees them: datetimes become RFC 3339 strings, tables stay plain."""
    if isinstance(value, dict):
        return {str(k): as_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json_value(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat().replace("+00:00", "Z")
    return value


def first_error(instance: Any, schema_name: str) -> tuple[str, str] | None:
    """(key path, message) of the most relevant schema violation, or None when valid."""
    # Imported here, not at the top: jsonschema's import builds format grammars (most of a second), and
    # commands that never validate (`mlenv --version`, `--help`) must not pay for it. Of that, 1.0 s is
    # rfc3987_syntax building its lark grammar for the iri formats, which no mlenv schema uses (only
    # date-time): blocked unless already imported, so jsonschema leaves those two formats unchecked.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    # The other format libraries jsonschema looks for cost `lock --check` ~20 ms: kept out while it
    # imports (their formats then go unchecked, none used here), and importable again after.
    blocked = [name for name in UNUSED_FORMAT_LIBRARIES if name not in sys.modules]
    sys.modules.update(dict.fromkeys(blocked))  # type: ignore[arg-type]
    try:
        import jsonschema
        from jsonschema.exceptions import best_match
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]

    schema = load_schema(schema_name)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    error = best_match(validator.iter_errors(as_json_value(instance)))
    if error is None:
        return None
    where = key_path(error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        message = error.message.replace("Additional properties are not allowed", "unknown key")
    elif error.validator == "format" and error.validator_value == "date-time":
        message = (
            f"{error.instance!r} is not an RFC 3339 date-time with a timezone (e.g. 2025-06-01T00:00:00Z)"
        )
    else:
        message = error.message
    return where, message
