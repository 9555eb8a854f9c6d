"""Reading untrusted JSON documents (key files, envelopes, manifests): a field by its path, base64 values.

Both answer None for anything malformed, so the caller refuses it in its own words."""

from __future__ import annotations

import base64
import binascii
from typing import Any


def field(document: Any, *keys: str) -> Any:
    """document[k1][k2]..., or None where a level is not an object or lacks the key."""
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def base64_bytes(value: Any, *, url_safe_too: bool = False) -> bytes | None:
    """The bytes of a standard base64 string (and of URL-safe base64 with `url_safe_too`: DSSE allows
    both), or None."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        if not url_safe_too:
            return None
    try:
        return base64.urlsafe_b64decode(value)
    except (binascii.Error, ValueError):
        return None
