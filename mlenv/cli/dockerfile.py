"""`mlenv dockerfile [-o DIR]`: render the build context from the lock without building."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from mlenv import __version__
from mlenv.build.context import prepare_context, refuse_secret_files
from mlenv.cli.common import fresh_project, locked_platform, say
from mlenv.errors import MlenvError
from mlenv.model.lock import for_platform
from mlenv.render import FetchMode, render
from mlenv.sources.cas import ContentStore


def dockerfile(
    project: Annotated[Path, typer.Argument(help="Project directory or spec file.")] = Path("."),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the whole build context here.")
    ] = None,
    fetch: Annotated[
        str,
        typer.Option(
            help="host: hermetic, artifacts fetched and checked on the host; "
            "build: the Dockerfile fetches from the locked URLs."
        ),
    ] = "host",
    platform: Annotated[
        str | None,
        typer.Option(help="The locked platform to render for (its .debs and wheels; default: the first)."),
    ] = None,
) -> None:
    """Render the Dockerfile (stdout), or with -o the whole build context, from mlenv.lock."""
    if fetch not in ("host", "build"):
        raise MlenvError(f"--fetch must be 'host' or 'build', not {fetch!r}")
    mode: FetchMode = "host" if fetch == "host" else "build"
    current = fresh_project(project)
    chosen = locked_platform(current.lock, platform)
    lock = for_platform(current.lock, chosen)
    rendered = render(lock, lock_digest=current.lock_digest, mlenv_version=__version__, fetch=mode)
    if output is None:
        sys.stdout.write(rendered.get("Dockerfile").decode())
        return
    refuse_secret_files(current.lock.app.copy, current.directory, allow=current.spec.app.allow)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MlenvError(f"{output}: exists and is not an empty directory", hint="choose a new directory")
    output.parent.mkdir(parents=True, exist_ok=True)
    # Assembled beside the target and renamed into place: a failed fetch leaves no half context.
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as work:
        staging = Path(work, "context")
        prepare_context(
            lock,
            rendered,
            current.directory,
            staging,
            fetch_mode=mode,
            platform=chosen,
            store=ContentStore(),
            progress=say,
        )
        if output.exists():
            output.rmdir()
        staging.rename(output)
    say(f"wrote the build context to {output} (docker build {output})")
