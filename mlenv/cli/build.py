"""`mlenv build`: refuse a stale lock, render, fetch, build hermetically, normalise, verify;
with --check-reproducible, build twice and compare."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlenv import __version__
from mlenv.build.context import refuse_secret_files
from mlenv.build.image import build_image, default_tag
from mlenv.build.reproducible import check_reproducible as reproducible_build
from mlenv.build.reproducible import format_text
from mlenv.cli.common import fresh_project, say
from mlenv.cli.progress import for_command
from mlenv.errors import MlenvError
from mlenv.sources import engine
from mlenv.verify.formats import DataFormat, as_text, parse_format
from mlenv.verify.image import verify_image
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
) -> None:
    """Build the image from mlenv.lock on the Docker engine, with the network off."""
    as_json = parse_format(DataFormat, output_format) is DataFormat.JSON
    if check_reproducible and not normalise:
        raise MlenvError(
            "--check-reproducible needs the normalisation: without it the build time is in the config",
            hint="drop --no-normalise",
        )
    current = fresh_project(project)
    refuse_secret_files(current.lock.app.copy, current.directory, allow=current.spec.app.allow)
    refuse_unmet_libraries(current.lock, progress=say)  # before the engine is called: nothing is sent to it
    name = tag or default_tag(current.lock, current.lock_digest)
    with for_command(), engine.connect() as docker_engine:
        if check_reproducible:
            built, report = reproducible_build(
                current.lock,
                engine=docker_engine,
                lock_digest=current.lock_digest,
                project_dir=current.directory,
                tag=name,
                progress=say,
                mlenv_version=__version__,
            )
            if not report.identical:
                if as_json:
                    show(built.tag, built.image_id, reproducible=False, kept=[report.a, report.b])
                else:
                    sys.stdout.write(format_text(report))
                say(f"kept both images for inspection: {report.a} and {report.b}")
                raise typer.Exit(1)
            say(format_text(report).rstrip())
        else:
            built = build_image(
                current.lock,
                engine=docker_engine,
                lock_digest=current.lock_digest,
                project_dir=current.directory,
                tag=name,
                no_cache=no_cache,
                normalise=normalise,
                progress=say,
                mlenv_version=__version__,
            )
    say(f"built {built.tag} ({built.image_id})")
    if verify:
        with for_command():
            verdict, _ = verify_image(
                current.lock,
                f"docker-daemon:{built.tag}",
                lock_digest=current.lock_digest,
                project_dir=current.directory,
            )
        if not verdict.ok:
            sys.stderr.write(as_text(verdict))
            if as_json:
                show(built.tag, built.image_id, verified=False)
            raise typer.Exit(1)
        say(f"verified: {built.tag} reproduces {current.lock_path.name} exactly")
    if as_json:
        show(
            built.tag,
            built.image_id,
            verified=True if verify else None,
            reproducible=True if check_reproducible else None,
        )
    else:
        typer.echo(built.image_id if check_reproducible else built.tag)


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
