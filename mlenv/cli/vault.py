"""`mlenv vault push REF`: store every artifact the lock pins (wheels, .debs, baked models, the base
image's manifests and layers) in an OCI registry or a directory (`dir:PATH`), for `mlenv build --vault`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlenv.cli.common import fresh_project, say
from mlenv.cli.progress import for_command
from mlenv.errors import MlenvError


def vault(
    action: Annotated[str, typer.Argument(help="push: store the lock's artifacts in REF.")],
    ref: Annotated[
        str, typer.Argument(help="An OCI registry reference (registry/repository[:tag]) or dir:PATH.")
    ],
    project: Annotated[Path, typer.Argument(help="Project directory or spec file.")] = Path("."),
    lockfile: Annotated[
        Path | None, typer.Option("--lockfile", "-l", help="Lock path (default: beside the spec).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
) -> None:
    """Store every artifact the lock pins in a vault (an OCI artifact in a registry, or dir:PATH)."""
    from mlenv.verify.formats import DataFormat, parse_format

    as_json = parse_format(DataFormat, output_format) is DataFormat.JSON
    if action != "push":
        raise MlenvError(f"vault {action!r}: unknown action", hint="`mlenv vault push REF`")
    from mlenv.build.vault import parse_vault_ref, push_vault
    from mlenv.sources.cas import ContentStore
    from mlenv.sources.registry import RegistryClient

    current = fresh_project(project, lockfile)
    client = RegistryClient()
    target = parse_vault_ref(ref, lambda: client)
    with for_command():
        pushed = push_vault(
            current.lock,
            current.directory,
            target,
            client=client,
            store=ContentStore(),
            progress=say,
        )
    if as_json:
        shown = {"vault": pushed.name, "digest": pushed.digest, "files": pushed.files, "bytes": pushed.size}
        typer.echo(json.dumps(shown, indent=2))
    else:
        typer.echo(f"{pushed.name}@{pushed.digest}: {pushed.files} files, {pushed.size} bytes")
