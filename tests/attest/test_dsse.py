"""DSSE envelopes: the PAE of the specification's example; mlenv's envelopes opened by securesystemslib."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

from mlenv.attest.dsse import EnvelopeError, open_envelope, pae, sign

PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1","subject":[]}'


def sslib_key(public_key: ec.EllipticCurvePublicKey) -> SSlibKey:
    """securesystemslib's verifier for `public_key`, with the empty keyid cosign and mlenv write (it
    matches signatures to keys by keyid)."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SSlibKey("", "ecdsa", "ecdsa-sha2-nistp256", {"public": pem.decode()})


def test_pae_is_the_specifications_encoding() -> None:
    # DSSE protocol.md: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_securesystemslib_verifies_mlenvs_envelope_and_refuses_another_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    envelope = json.loads(sign(PAYLOAD, key))
    verifier = sslib_key(key.public_key())
    opened = Envelope.from_dict(json.loads(json.dumps(envelope)))
    assert opened.verify([verifier], 1)
    assert opened.payload == PAYLOAD
    other = sslib_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(VerificationError):
        Envelope.from_dict(json.loads(json.dumps(envelope))).verify([other], 1)


def test_open_envelope_refuses_a_changed_payload_another_key_and_no_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = sign(PAYLOAD, key)
    assert open_envelope(raw, key.public_key(), "a") == PAYLOAD
    envelope = json.loads(raw)
    changed = dict(envelope, payload=base64.b64encode(PAYLOAD.replace(b"[]", b"[1]")).decode())
    with pytest.raises(EnvelopeError, match="no signature verifies"):
        open_envelope(json.dumps(changed).encode(), key.public_key(), "a")
    with pytest.raises(EnvelopeError, match="no signature verifies"):
        open_envelope(raw, ec.generate_private_key(ec.SECP256R1()).public_key(), "a")
    with pytest.raises(EnvelopeError, match="unsigned"):
        open_envelope(json.dumps(dict(envelope, signatures=[])).encode(), key.public_key(), "a")
    garbage = dict(envelope, signatures=[{"keyid": "", "sig": base64.b64encode(b"\x30\x00").decode()}])
    with pytest.raises(EnvelopeError, match="no signature verifies"):
        open_envelope(json.dumps(garbage).encode(), key.public_key(), "a")
    with pytest.raises(EnvelopeError, match="not JSON"):
        open_envelope(b"\xff", key.public_key(), "a")
    assert EnvelopeError("x").exit_code == 1
