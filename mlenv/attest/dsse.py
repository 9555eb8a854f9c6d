"""DSSE envelopes (Dead Simple Signing Envelope v1): sign a payload, and open one with a public key.

The signature is over PAE(payloadType, payload), never over the JSON of the envelope, so what is
checked is exactly the bytes that are then parsed. ECDSA P-256 with SHA-256, the signature DER-encoded,
as cosign signs; keyid is left empty as cosign leaves it (a keyid is a hint, never trusted).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mlenv.attest.fields import base64_bytes
from mlenv.errors import MlenvError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


class EnvelopeError(MlenvError):
    """An envelope that is malformed, unsigned or signed by another key: a check that failed (exit 1)."""

    exit_code = 1


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign(payload: bytes, private_key: Any, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The envelope's JSON bytes (keys sorted: the same payload and signature give the same bytes)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = private_key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode("ascii")}],
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode("ascii")


def open_envelope(raw: bytes, public_key: Any, what: str) -> bytes:
    """The payload of the envelope `raw` when one of its signatures verifies with `public_key`.

    `what` names the envelope in the error (the attestation's digest and image)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeError(f"{what}: not a DSSE envelope (not JSON)") from None
    if not isinstance(envelope, dict):
        raise EnvelopeError(f"{what}: not a DSSE envelope")
    payload_type = envelope.get("payloadType")
    payload = base64_bytes(envelope.get("payload"), url_safe_too=True)
    if payload_type != PAYLOAD_TYPE or payload is None:
        raise EnvelopeError(f"{what}: not a DSSE envelope of an in-toto statement")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError(f"{what}: unsigned (the envelope carries no signature)")
    message = pae(payload_type, payload)
    for entry in signatures:
        signature = base64_bytes(entry.get("sig"), url_safe_too=True) if isinstance(entry, dict) else None
        if not signature:
            continue
        try:
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):  # ValueError: a signature that is not DER
            continue
        return payload
    raise EnvelopeError(
        f"{what}: no signature verifies with the given key (signed by another key, or the payload changed)"
    )
