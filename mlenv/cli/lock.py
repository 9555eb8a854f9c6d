"""`mlenv lock [--check]`: resolve the spec into mlenv.lock, or say whether the lock is stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlenv.cli.common import read_lock_input, refuse_directory
from mlenv.cli.progress import for_command
from mlenv.errors import ResolutionError
from mlenv.files import write_atomic
from mlenv.lockfile import LOCK_FILE, dump_bytes, lock_digest
from mlenv.model.spec import ResolverName
from mlenv.resolve import Sources, resolve_lock
from mlenv.resolve.freshness import apt_as_of_gap, stale_reasons
from mlenv.sources.python.backend import ResolverBackend
from mlenv.spec import load_spec


def python_backend(name: ResolverName) -> ResolverBackend:
    from mlenv.sources.python.piptools import PipToolsBackend
    from mlenv.sources.python.uv import UvBackend

    return UvBackend() if name == "uv" else PipToolsBackend()


def default_sources() -> Sources:
    """The real ones: the registries of the user's docker config, Debian mirrors, PyPI-like indexes.
    Imported here, so `lock --check` (no network) loads no HTTP client."""
    from mlenv.sources.debian.archive import DebianArchive
    from mlenv.sources.python.wheelmeta import WheelMetadata
    from mlenv.sources.registry import RegistryClient

    return Sources(
        registry=RegistryClient(),
        debian=lambda mirror: DebianArchive(mirror=mirror),
        python=python_backend,
        wheel_requires=WheelMetadata().many,
    )


def lock(
    project: Annotated[Path, typer.Argument(help="Project directory or spec file.")] = Path("."),
    lockfile: Annotated[
        Path | None, typer.Option("--lockfile", "-l", help="Lock path (default: beside the spec).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the lock is stale; never writes, no network.")
    ] = False,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
    strict_as_of: Annotated[
        bool,
        typer.Option(
            "--strict-as-of",
            help="Exit 2 (writing nothing) when apt cannot be resolved at as-of (no snapshot archive).",
        ),
    ] = False,
) -> None:
    """Resolve mlenv.toml into mlenv.lock (every layer pinned, Python files hashed for the target)."""
    as_json = wants_json(output_format)
    spec = load_spec(project)
    path = lockfile or Path(spec.project_dir, LOCK_FILE)
    refuse_directory(path, "--lockfile")
    if check:
        reasons = stale_reasons(spec, read_lock_input(path, "--lockfile")[1])
        for reason in reasons:
            typer.echo(f"stale: {reason}", err=True)
        if as_json:
            typer.echo(json.dumps({"ok": not reasons, "lockfile": str(path), "stale": reasons}, indent=2))
        if reasons:
            typer.echo(f"{path} is stale: run `mlenv lock`", err=True)
            raise typer.Exit(1)
        if not as_json:
            typer.echo(f"{path} is up to date")
        return
    with for_command():
        resolved = resolve_lock(spec, default_sources())
    gap = apt_as_of_gap(resolved)
    if gap is not None:
        if strict_as_of:
            hint = "reach a snapshot archive (MLENV_SNAPSHOT_URL), or drop --strict-as-of"
            raise ResolutionError(gap, hint=hint)
        typer.echo(f"mlenv: warning: {gap}", err=True)
    data = dump_bytes(resolved)
    unchanged = path.is_file() and path.read_bytes() == data
    if not unchanged:
        write_atomic(path, data)
    if as_json:
        shown = {"lockfile": str(path), "written": not unchanged, "lock-digest": lock_digest(data)}
        typer.echo(json.dumps(shown, indent=2))
    else:
        typer.echo(f"{path}: {'unchanged' if unchanged else 'written'}")


def wants_json(output_format: str) -> bool:
    """--format json, checked before any work; text needs no import (`lock --check` is timed at start-up)."""
    if output_format == "text":
        return False
    from mlenv.verify.formats import DataFormat, parse_format

    return parse_format(DataFormat, output_format) is DataFormat.JSON
