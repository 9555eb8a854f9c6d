"""`mlenv keygen [PREFIX]`: write PREFIX.key (encrypted, mode 0600) and PREFIX.pub, as cosign writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlenv.attest.keys import generate, passphrase_from_environment
from mlenv.cli.common import say
from mlenv.errors import MlenvError
from mlenv.files import atomic_writer


def keygen(
    prefix: Annotated[
        Path, typer.Argument(help="Write PREFIX.key and PREFIX.pub (default: mlenv.key, mlenv.pub).")
    ] = Path("mlenv"),
    force: Annotated[bool, typer.Option("--force", help="Replace key files that exist.")] = False,
) -> None:
    """Make an ECDSA P-256 key pair for `mlenv attest`; the passphrase is read from MLENV_KEY_PASSWORD."""
    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private, public):
        if path.exists() and not force:
            raise MlenvError(f"{path}: exists; mlenv keygen does not replace a key", hint="pass --force")
    pair = generate(passphrase_from_environment())
    replacing = private.exists()
    try:
        # The private key is created 0600 (the temporary file already is) before a byte is written.
        with atomic_writer(private, mode=0o600) as handle:
            handle.write(pair.private_pem)
        with atomic_writer(public, mode=0o644) as handle:
            handle.write(pair.public_pem)
    except OSError as error:
        if not replacing:  # never half a new pair: a private key without its public one
            private.unlink(missing_ok=True)
        raise MlenvError(f"{prefix}: cannot write the key pair: {error.strerror or error}") from None
    say(f"wrote {private} (private, encrypted; keep it secret) and {public} (public; give it to verifiers)")
    typer.echo(str(public))
