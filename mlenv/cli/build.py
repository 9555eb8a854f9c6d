"""`mlenv build`: refuse a stale lock, render, fetch, build hermetically, normalise, verify;
with --check-reproducible, build twice and compare."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from mlenv import __version__
from mlenv.build.context import refuse_secret_files
from mlenv.build.image import BuiltImage, build_image, default_tag
from mlenv.build.index import platform_tag
from mlenv.build.reproducible import check_reproducible as reproducible_build
from mlenv.build.reproducible import format_text
from mlenv.build.vault import open_vault, vault_store
from mlenv.cli.common import Project, fresh_project, locked_platforms, say
from mlenv.cli.progress import for_command
from mlenv.errors import MlenvError
from mlenv.model.report import Report
from mlenv.sources import engine
from mlenv.verify.formats import DataFormat, as_text, parse_format
from mlenv.verify.image import verify_image, verify_local
from mlenv.verify.native import refuse_unmet_libraries


def build(
    project: Annotated[Path, typer.Argument(help="Project directory or spec file.")] = Path("."),
    tag: Annotated[
        str | None, typer.Option("--tag", "-t", help="Image tag (default NAME:<lock sha256 prefix>).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build every step again.")] = False,
    normalise: Annotated[
        bool,
        typer.Option(help="Rewrite build times in the image config so its ID depends on the lock alone."),
    ] = True,
    verify: Annotated[bool, typer.Option(help="Verify the built image against the lock.")] = True,
    check_reproducible: Annotated[
        bool,
        typer.Option(
            "--check-reproducible",
            help="Build twice without cache and compare the images layer by layer and "
            "file by file; exit 1 naming what differs.",
        ),
    ] = False,
    output_format: Annotated[
        str, typer.Option("--format", "-f", help="text (the tag) or json (tag, image ID, verdicts).")
    ] = "text",
    vault: Annotated[
        str | None,
        typer.Option(
            "--vault", help="Take every artifact from this vault (REF or dir:PATH); no other network."
        ),
    ] = None,
    push: Annotated[
        bool, typer.Option("--push", help="Push the verified image to the registry its tag names.")
    ] = False,
    attest: Annotated[
        bool,
        typer.Option(
            "--attest", help="With --push: attach signed attestations to the pushed digest (needs --key)."
        ),
    ] = False,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="With --attest: the private key (MLENV_KEY_PASSWORD).")
    ] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            help="Build this locked platform (repeat for several; default: every platform of the lock).",
        ),
    ] = None,
) -> None:
    """Build the image from mlenv.lock on the Docker engine, with the network off: one image per locked
    platform (a platform not the engine's own runs its build steps under emulation)."""
    as_json = parse_format(DataFormat, output_format) is DataFormat.JSON
    signing_key = attest_key(push=push, attest=attest, verify=verify, key=key)
    if check_reproducible and not normalise:
        raise MlenvError(
            "--check-reproducible needs the normalisation: without it the build time is in the config",
            hint="drop --no-normalise",
        )
    current = fresh_project(project)
    platforms = locked_platforms(current.lock, platform)
    refuse_secret_files(current.lock.app.copy, current.directory, allow=current.spec.app.allow)
    store = vault_store(open_vault(vault)) if vault is not None else None  # the vault, and no other network
    for chosen in platforms:  # before the engine: nothing sent to it
        refuse_unmet_libraries(current.lock, platform=chosen, progress=say, store=store)
    name = tag or default_tag(current.lock, current.lock_digest)
    # One platform keeps the tag; several get one tag each (the engine's store holds one platform per
    # tag), and --push writes the index of them under the tag itself.
    tags = {p: name if len(platforms) == 1 else platform_tag(name, p) for p in platforms}
    built: dict[str, BuiltImage] = {}
    verdicts: dict[str, Report] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(for_command())
        docker_engine = stack.enter_context(engine.connect())
        for chosen in platforms:
            if len(platforms) > 1:
                say(f"platform {chosen}: building {tags[chosen]}")
            if check_reproducible:
                image, report = reproducible_build(
                    current.lock,
                    engine=docker_engine,
                    lock_digest=current.lock_digest,
                    project_dir=current.directory,
                    tag=tags[chosen],
                    progress=say,
                    mlenv_version=__version__,
                    platform=chosen,
                )
                if not report.identical:
                    if as_json:
                        show(image.tag, image.image_id, reproducible=False, kept=[report.a, report.b])
                    else:
                        sys.stdout.write(format_text(report))
                    say(f"kept both images for inspection: {report.a} and {report.b}")
                    raise typer.Exit(1)
                say(format_text(report).rstrip())
            else:
                work = stack.enter_context(tempfile.TemporaryDirectory(prefix="mlenv-final-"))
                image = build_image(
                    current.lock,
                    engine=docker_engine,
                    lock_digest=current.lock_digest,
                    project_dir=current.directory,
                    tag=tags[chosen],
                    no_cache=no_cache,
                    normalise=normalise,
                    progress=say,
                    mlenv_version=__version__,
                    work=Path(work),
                    store=store,
                    platform=chosen,
                )
            built[chosen] = image
            say(f"built {image.tag} ({image.image_id})")
            if verify:
                verdicts[chosen] = verdict = self_verify(current, image, chosen)
                if not verdict.ok:
                    sys.stderr.write(as_text(verdict))
                    if as_json:
                        show(image.tag, image.image_id, verified=False)
                    raise typer.Exit(1)
                say(f"verified: {image.tag} reproduces {current.lock_path.name} exactly ({chosen})")
        index = None
        if push:
            pushed = {}
            for chosen, image in built.items():
                pushed[chosen] = docker_engine.push(image.tag)
                say(f"pushed {image.tag} ({pushed[chosen]})")
                if signing_key is not None:
                    attest_pushed(current, image, chosen, pushed[chosen], verdicts[chosen], signing_key)
            if len(platforms) > 1:
                from mlenv.build.index import push_index
                from mlenv.sources.registry import RegistryClient

                index = push_index(RegistryClient(), name, pushed)
                say(f"pushed {name} ({index}): the index of {', '.join(platforms)}")
    if len(platforms) > 1:
        if as_json:
            show_platforms(name, built, index=index, verified=True if verify else None)
        else:
            typer.echo(
                "\n".join(image.image_id if check_reproducible else image.tag for image in built.values())
            )
        return
    image = built[platforms[0]]
    if as_json:
        show(
            image.tag,
            image.image_id,
            verified=True if verify else None,
            reproducible=True if check_reproducible else None,
        )
    else:
        typer.echo(image.image_id if check_reproducible else image.tag)


def attest_key(*, push: bool, attest: bool, verify: bool, key: Path | None) -> Any:
    """The signing key for --attest, read (and its passphrase checked) before anything is built."""
    if not attest:
        if key is not None:
            raise MlenvError("--key is for --attest: the key the pushed image's attestations are signed with")
        return None
    if not push or not verify:
        raise MlenvError("--attest attests the pushed, verified image: it needs --push and the verify")
    if key is None:
        raise MlenvError("--attest needs --key: the private key to sign with")
    from mlenv.attest.keys import load_private_key, passphrase_from_environment

    return load_private_key(key, passphrase_from_environment())


def attest_pushed(
    current: Project, built: BuiltImage, platform: str, digest: str, verdict: Report, signing_key: Any
) -> None:
    """Attach the build's own verdict to the pushed digest. It applies to that digest because the registry's
    manifest names the built image's config (its ID), which commits to every layer's diff_id."""
    from mlenv.attest.publish import publish
    from mlenv.attest.referrers import subject_of
    from mlenv.export import ExportContext, ImageIdentity, document_time
    from mlenv.sources.registry import ImageReference, RegistryClient

    client = RegistryClient()
    reference = ImageReference.parse(built.tag)
    subject = subject_of(client, dataclasses.replace(reference, digest=digest))
    config = client.get_manifest(subject.ref, subject.digest).data.get("config")
    if not isinstance(config, dict) or config.get("digest") != built.image_id:
        raise MlenvError(
            f"{built.tag}@{digest}: the registry's manifest does not name the built image's config"
        )
    context = ExportContext(
        lock_digest=current.lock_digest,
        platform=platform,
        mlenv_version=__version__,
        created=document_time(current.lock.as_of, os.environ.get("SOURCE_DATE_EPOCH")),
        image=ImageIdentity(reference=subject.pinned, config_digest=built.image_id, manifest_digest=digest),
    )
    for kind, stored in publish(client, subject, current.lock, verdict, context, signing_key, progress=say):
        say(f"attested {kind}: {stored}")


def self_verify(current: Project, built: BuiltImage, platform: str) -> Report:
    """The build's own verify: from the files it loaded and the layers remembered for this lock, when it
    can (a rebuild reads only what changed); else the image read through the engine, as `mlenv verify`
    reads it, which remembers the layers for the next build."""
    if built.local is not None:
        checked = verify_local(
            current.lock,
            built.local,
            platform=platform,
            lock_digest=current.lock_digest,
            project_dir=current.directory,
        )
        if checked is not None:
            verdict, observed = checked
            assert observed.image is not None
            read = sum(1 for layer in built.local.layers if layer.tar is not None)
            say(
                f"verify: read the {read} layers this build wrote; the {len(observed.image.indexes) - read} "
                "below them were verified for this lock before (remembered by diff_id)"
            )
            return verdict
    verdict, _ = verify_image(
        current.lock,
        f"docker-daemon:{built.tag}",
        lock_digest=current.lock_digest,
        platform=platform,
        project_dir=current.directory,
    )
    return verdict


def show(
    tag: str,
    image_id: str,
    *,
    verified: bool | None = None,
    reproducible: bool | None = None,
    kept: list[str] | None = None,
) -> None:
    """The build as JSON on stdout; null for a check that was not run."""
    shown: dict[str, object] = {
        "tag": tag,
        "image-id": image_id,
        "verified": verified,
        "reproducible": reproducible,
    }
    if kept is not None:
        shown["kept"] = kept  # both builds of a failed reproducibility check, for inspection
    typer.echo(json.dumps(shown, indent=2))


def show_platforms(
    tag: str, built: dict[str, BuiltImage], *, index: str | None, verified: bool | None
) -> None:
    """A multi-platform build as JSON: each platform's tag and image ID, and the pushed index (or null)."""
    shown = {
        "tag": tag,
        "index-digest": index,
        "platforms": {p: {"tag": b.tag, "image-id": b.image_id} for p, b in built.items()},
        "verified": verified,
    }
    typer.echo(json.dumps(shown, indent=2))
