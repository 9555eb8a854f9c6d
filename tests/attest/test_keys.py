"""Key files as cosign writes them: a published vector read, cosign's format written, the rest refused.

The vector is go-securesystemslib's own test of its `encrypted` package (the format cosign's key files
use): decrypting it proves mlenv reads cosign's format, not only its own. The checks of what mlenv writes
open the file with PyNaCl and the standard library's scrypt, following the format, not mlenv's reader.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlenv.attest.keys import KeyFileError, decrypt_private_key, load_private_key, load_public_key
from tests.helpers import run_cli

# go-securesystemslib encrypted_test.go, TestDecrypt: "supersecret" opens "reallyimportant".
VECTOR = (
    b'{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},'
    b'"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},'
    b'"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}'
)


def test_reads_the_published_vector_of_cosigns_key_format() -> None:
    assert decrypt_private_key(VECTOR, b"supersecret", Path("v.key")) == b"reallyimportant"
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        decrypt_private_key(VECTOR, b"supersecre", Path("v.key"))


def test_refuses_scrypt_parameters_it_does_not_know_before_running_scrypt() -> None:
    hostile = VECTOR.replace(b'"N":32768', b'"N":1073741824')
    with pytest.raises(KeyFileError, match="unsupported scrypt parameters"):
        decrypt_private_key(hostile, b"supersecret", Path("v.key"))


def keygen(tmp_path: Path, password: str = "correct horse") -> tuple[Path, Path]:
    result = run_cli("keygen", str(tmp_path / "team"), env={**os.environ, "MLENV_KEY_PASSWORD": password})
    assert result.code == 0, result.stderr
    return tmp_path / "team.key", tmp_path / "team.pub"


def test_keygen_writes_cosigns_format_which_the_format_itself_opens(tmp_path: Path) -> None:
    private, public = keygen(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    text = private.read_text()
    match = re.fullmatch(
        r"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n([A-Za-z0-9+/=\n]+)\n"
        r"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
        text,
    )
    assert match, text[:80]
    document = json.loads(base64.b64decode(match.group(1)))
    params = document["kdf"]["params"]
    assert document["kdf"]["name"] == "scrypt" and document["cipher"]["name"] == "nacl/secretbox"
    key = hashlib.scrypt(
        b"correct horse",
        salt=base64.b64decode(document["kdf"]["salt"]),
        n=params["N"],
        r=params["r"],
        p=params["p"],
        maxmem=256 << 20,
        dklen=32,
    )
    der = nacl.secret.SecretBox(key).decrypt(
        base64.b64decode(document["ciphertext"]), base64.b64decode(document["cipher"]["nonce"])
    )
    opened = serialization.load_der_private_key(der, password=None)
    assert isinstance(opened, ec.EllipticCurvePrivateKey) and isinstance(opened.curve, ec.SECP256R1)
    published = serialization.load_pem_public_key(public.read_bytes())
    assert published.public_numbers() == opened.public_key().public_numbers()
    # and mlenv's own reader agrees
    assert load_private_key(private, b"correct horse").private_numbers() == opened.private_numbers()
    assert load_public_key(public).public_numbers() == published.public_numbers()


def test_keygen_never_replaces_a_key_and_needs_the_passphrase_variable(tmp_path: Path) -> None:
    private, _ = keygen(tmp_path)
    before = private.read_bytes()
    again = run_cli("keygen", str(tmp_path / "team"), env={**os.environ, "MLENV_KEY_PASSWORD": "x"})
    assert again.code == 2 and again.stderr.count("\n") == 1 and "exists" in again.stderr
    assert private.read_bytes() == before
    env = {k: v for k, v in os.environ.items() if k != "MLENV_KEY_PASSWORD"}
    unset = run_cli("keygen", str(tmp_path / "other"), env=env)
    assert unset.code == 2 and "MLENV_KEY_PASSWORD is not set" in unset.stderr
    assert not (tmp_path / "other.key").exists() and not (tmp_path / "other.pub").exists()


def test_a_private_key_is_refused_where_the_public_one_belongs(tmp_path: Path) -> None:
    private, _ = keygen(tmp_path)
    with pytest.raises(KeyFileError, match="holds a private key"):
        load_public_key(private)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "not a private key"),
        (b"\xff\xfe", "not ASCII"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a private key"),
        (
            b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nbm90IGpzb24=\n"
            b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
            "not the JSON cosign writes",
        ),
        (b"x" * (70 << 10), "over 64 KiB"),
    ],
)
def test_broken_key_files_are_one_line_naming_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=problem) as caught:
        load_private_key(path, b"pw")
    assert str(caught.value).startswith(str(path))


def test_a_wrong_passphrase_names_the_file_and_shows_no_key_byte(tmp_path: Path) -> None:
    private, _ = keygen(tmp_path)
    secret = private.read_text()
    with pytest.raises(KeyFileError) as caught:
        load_private_key(private, b"wrong")
    message = str(caught.value)
    assert message.startswith(f"{private}: wrong passphrase")
    body = "".join(secret.splitlines()[1:-1])
    assert not any(body[i : i + 16] in message for i in range(0, len(body) - 16, 8))
