"""`mlenv attest docker://REF --key KEY`: verify the image against the lock, then sign and attach the verdict,
SLSA provenance and the CycloneDX SBOM to the image's digest in its registry.

The tag is resolved once; the image verified is the digest it named then (docker://REPO@DIGEST), and the
attestations are attached to that digest, so a tag moved meanwhile cannot get another image's attestation.
A drifted image is attested too (its verdict says drift, which a gate refuses); the exit code is then 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mlenv import __version__
from mlenv.attest.keys import load_private_key, passphrase_from_environment
from mlenv.attest.publish import publish
from mlenv.attest.referrers import registry_subject
from mlenv.cli.common import read_lock_input, say
from mlenv.cli.progress import for_command
from mlenv.export import ExportContext, ImageIdentity, document_time
from mlenv.lockfile import LOCK_FILE, lock_digest
from mlenv.sources.registry import RegistryClient
from mlenv.verify.image import verify_image


def attest(
    image: Annotated[str, typer.Argument(help="The image in its registry: docker://REF.")],
    key: Annotated[
        Path, typer.Option("--key", "-k", help="The private key (mlenv keygen or cosign generate-key-pair).")
    ],
    lock: Annotated[Path, typer.Option("--lock", "-l", help="The lockfile to verify against.")] = Path(
        LOCK_FILE
    ),
    platform: Annotated[str | None, typer.Option(help="Platform of a multi-platform image.")] = None,
    project: Annotated[
        Path | None,
        typer.Option(
            help="The project directory whose app tree the image's copy must equal (default: the lock's)."
        ),
    ] = None,
) -> None:
    """Verify IMAGE, then attach signed attestations (verdict, provenance, SBOM) to its digest. The passphrase
    of the key is read from MLENV_KEY_PASSWORD. Exit 1 when the image drifted (attested as such)."""
    data, locked = read_lock_input(lock, "--lock")
    signing_key = load_private_key(key, passphrase_from_environment())  # before any long work
    client = RegistryClient()
    subject = registry_subject(client, image, "IMAGE")
    chosen = platform or locked.target.platforms[0]
    digest = lock_digest(data)
    with for_command():
        report, observed = verify_image(
            locked,
            f"docker://{subject.pinned}",
            lock_digest=digest,
            platform=chosen,
            project_dir=project if project is not None else lock.resolve().parent,
        )
    assert observed.image is not None
    context = ExportContext(
        lock_digest=digest,
        platform=chosen,
        mlenv_version=__version__,
        created=document_time(locked.as_of, os.environ.get("SOURCE_DATE_EPOCH")),
        image=ImageIdentity(
            reference=subject.pinned,
            config_digest=observed.image.config_digest,
            manifest_digest=subject.digest,
        ),
        facts=observed.facts,
    )
    for kind, stored in publish(client, subject, locked, report, context, signing_key):
        typer.echo(f"{kind} {stored}")
    verdict = (
        "reproduces the lock exactly"
        if report.ok
        else f"drifted from the lock ({len(report.drifts)} drift(s))"
    )
    say(f"attested {subject.pinned}: {verdict}; signed with {key}")
    if not report.ok:
        raise typer.Exit(1)
