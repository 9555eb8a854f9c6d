"""Key pairs as cosign writes them: an ECDSA P-256 private key encrypted under a passphrase, and its
public key as PEM (PKIX), so `cosign`, Kyverno and policy-controller take mlenv's keys and mlenv takes theirs.

The private key file is PEM of type ENCRYPTED SIGSTORE PRIVATE KEY (cosign before 2.0 wrote ENCRYPTED
COSIGN PRIVATE KEY; both are read) whose body is JSON: scrypt parameters and salt, a nacl/secretbox
nonce, and the PKCS#8 DER of the key sealed with the scrypt-derived key (the format of
go-securesystemslib's `encrypted` package). PyNaCl does the secretbox: `cryptography` has no
XSalsa20-Poly1305.

No byte of a private key or passphrase reaches a message: every failure is a sentence naming the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlenv.attest.fields import base64_bytes, field
from mlenv.errors import MlenvError

PASSWORD_VARIABLE = "MLENV_KEY_PASSWORD"
PRIVATE_PEM = "ENCRYPTED SIGSTORE PRIVATE KEY"
PRIVATE_PEM_TYPES = frozenset({PRIVATE_PEM, "ENCRYPTED COSIGN PRIVATE KEY"})
# The parameter sets go-securesystemslib reads (legacy, standard, OWASP); anything else is refused
# before scrypt runs, so a hostile key file cannot ask for gigabytes of memory.
SCRYPT_PARAMETERS = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
WRITE_PARAMETERS = (65536, 8, 1)
SALT_SIZE = 32
# A key file is under 1 KiB; reading a larger one whole is refused.
MAX_KEY_FILE = 64 << 10

_PEM = re.compile(
    r"-----BEGIN (?P<type>[A-Z0-9 ]+)-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)\s*-----END (?P=type)-----"
)


class KeyFileError(MlenvError):
    """A key file that cannot be read, decrypted or used (exit 2): named, its bytes never shown."""


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes


def _pem_blocks(text: str) -> list[tuple[str, bytes]]:
    blocks = []
    for match in _PEM.finditer(text):
        try:
            body = base64.b64decode("".join(match.group("body").split()), validate=True)
        except (binascii.Error, ValueError):
            continue
        blocks.append((match.group("type"), body))
    return blocks


def _read_key_file(path: Path, what: str) -> str:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: is not a regular file; a {what} is read from a file")
        if info.st_size > MAX_KEY_FILE:
            raise KeyFileError(f"{path}: over {MAX_KEY_FILE >> 10} KiB; not a {what}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such {what}", hint="make one with `mlenv keygen`") from None
    except OSError as error:
        raise KeyFileError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a PEM {what} (not ASCII)") from None


def passphrase_from_environment() -> bytes:
    """The passphrase in MLENV_KEY_PASSWORD (it may be empty, as cosign allows); unset is an error, not
    a silent empty passphrase."""
    value = os.environ.get(PASSWORD_VARIABLE)
    if value is None:
        raise KeyFileError(
            f"{PASSWORD_VARIABLE} is not set: it holds the private key's passphrase",
            hint=f"export {PASSWORD_VARIABLE}=... (an empty value means no passphrase)",
        )
    return value.encode("utf-8")


def _scrypt(passphrase: bytes, salt: bytes, parameters: tuple[int, int, int]) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    n, r, p = parameters
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def generate(passphrase: bytes) -> KeyPair:
    """A new P-256 key pair; the private key sealed under `passphrase`."""
    import nacl.secret
    import nacl.utils
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt = os.urandom(SALT_SIZE)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = nacl.secret.SecretBox(_scrypt(passphrase, salt, WRITE_PARAMETERS)).encrypt(der, nonce)
    n, r, p = WRITE_PARAMETERS
    document = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed.ciphertext),
    }
    body = json.dumps(document, separators=(",", ":")).encode("ascii")
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private_pem=_pem(PRIVATE_PEM, body), public_pem=public)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pem(kind: str, body: bytes) -> bytes:
    text = base64.b64encode(body).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return ("\n".join([f"-----BEGIN {kind}-----", *lines, f"-----END {kind}-----"]) + "\n").encode("ascii")


def decrypt_private_key(sealed: bytes, passphrase: bytes, path: Path) -> bytes:
    """The PKCS#8 DER inside a cosign-format key body, or an error naming `path`."""
    import nacl.exceptions
    import nacl.secret

    try:
        document = json.loads(sealed)
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(f"{path}: the encrypted key is not the JSON cosign writes") from None
    parameters = (
        field(document, "kdf", "params", "N"),
        field(document, "kdf", "params", "r"),
        field(document, "kdf", "params", "p"),
    )
    if field(document, "kdf", "name") != "scrypt" or field(document, "cipher", "name") != "nacl/secretbox":
        raise KeyFileError(f"{path}: the key is sealed with another method than scrypt and nacl/secretbox")
    if parameters not in SCRYPT_PARAMETERS:
        raise KeyFileError(f"{path}: unsupported scrypt parameters; mlenv reads cosign's three sets")
    salt = base64_bytes(field(document, "kdf", "salt"))
    nonce = base64_bytes(field(document, "cipher", "nonce"))
    ciphertext = base64_bytes(field(document, "ciphertext"))
    if salt is None or ciphertext is None or nonce is None or len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFileError(f"{path}: the encrypted key lacks its salt, nonce or ciphertext")
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, parameters))
    try:
        return bytes(box.decrypt(ciphertext, nonce))
    except nacl.exceptions.CryptoError:
        raise KeyFileError(
            f"{path}: wrong passphrase, or the key file was changed",
            hint=f"the passphrase is read from {PASSWORD_VARIABLE}",
        ) from None


def load_private_key(path: Path, passphrase: bytes) -> Any:
    """The P-256 signing key in `path` (cosign's format), decrypted with `passphrase`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    blocks = [
        (kind, body)
        for kind, body in _pem_blocks(_read_key_file(path, "private key"))
        if kind in PRIVATE_PEM_TYPES
    ]
    if len(blocks) != 1:
        raise KeyFileError(
            f"{path}: not a private key as `mlenv keygen` or `cosign generate-key-pair` writes"
        )
    der = decrypt_private_key(blocks[0][1], passphrase, path)
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: the decrypted key is not a PKCS#8 private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path}: not an ECDSA P-256 key; mlenv signs with P-256")
    return key


def load_public_key(path: Path) -> Any:
    """The P-256 public key in `path` (PEM, PKIX). A file holding a private key is refused: a public key
    is handed around, and mistaking one for the other would spread the private one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    blocks = _pem_blocks(_read_key_file(path, "public key"))
    if any("PRIVATE" in kind for kind, _ in blocks):
        raise KeyFileError(f"{path}: holds a private key; --key takes the public key (the .pub file)")
    public = [body for kind, body in blocks if kind == "PUBLIC KEY"]
    if len(public) != 1:
        raise KeyFileError(f"{path}: not one PEM public key (-----BEGIN PUBLIC KEY-----)")
    try:
        key = serialization.load_der_public_key(public[0])
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: the PEM public key does not parse") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path}: not an ECDSA P-256 public key")
    return key
