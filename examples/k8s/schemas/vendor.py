"""Trim an upstream CustomResourceDefinition to the one served version the examples target.

    git -C KYVERNO_CHECKOUT show TAG:PATH | python3 examples/k8s/schemas/vendor.py VERSION > OUT.json

Keeps the CRD's identity (group, names, scope) and that version's openAPIV3Schema; drops the other versions,
the printer columns and every `description` keyword (about 60% of the bytes, no effect on validation). A
property that is itself named "description" is kept: only schema keywords are removed. Output is JSON with
sorted keys, so re-vendoring the same upstream file gives the same bytes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml  # PyYAML: the test extra installs it

# The keywords under which a schema holds further schemas (all the CRDs here use).
SCHEMA_MAPS = ("properties",)
SCHEMA_ONE = ("items", "additionalProperties", "not")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf")


def without_descriptions(schema: Any) -> Any:
    """The schema with its `description` keywords removed, recursively; a boolean schema as it is."""
    if not isinstance(schema, dict):
        return schema
    trimmed: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in SCHEMA_MAPS:
            trimmed[key] = {name: without_descriptions(sub) for name, sub in value.items()}
        elif key in SCHEMA_ONE:
            trimmed[key] = without_descriptions(value)
        elif key in SCHEMA_LISTS:
            trimmed[key] = [without_descriptions(sub) for sub in value]
        else:
            trimmed[key] = value
    return trimmed


def trimmed_crd(crd: dict[str, Any], version: str) -> dict[str, Any]:
    found = [v for v in crd["spec"]["versions"] if v["name"] == version]
    if len(found) != 1 or not found[0]["served"]:
        raise SystemExit(f"vendor.py: the CRD has no single served version {version!r}")
    (served,) = found
    spec = crd["spec"]
    return {
        "apiVersion": crd["apiVersion"],
        "kind": crd["kind"],
        "metadata": {"name": crd["metadata"]["name"]},
        "spec": {
            "group": spec["group"],
            "names": spec["names"],
            "scope": spec["scope"],
            "versions": [
                {
                    "name": served["name"],
                    "served": served["served"],
                    "storage": served["storage"],
                    "schema": {"openAPIV3Schema": without_descriptions(served["schema"]["openAPIV3Schema"])},
                }
            ],
        },
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: vendor.py VERSION < CRD.yaml > OUT.json", file=sys.stderr)
        return 2
    crd = yaml.safe_load(sys.stdin)
    sys.stdout.write(json.dumps(trimmed_crd(crd, argv[1]), indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
