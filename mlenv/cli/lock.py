"""`mlenv lock [--check] [-P NAME] [--upgrade-apt NAME] [--upgrade]`: resolve the spec into mlenv.lock,
keeping the old lock's pins where they still satisfy it, or say whether the lock is stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from mlenv.cli.common import read_lock_input, refuse_directory
from mlenv.errors import MlenvError, ResolutionError
from mlenv.lockfile import LOCK_FILE, lock_digest
from mlenv.resolve.freshness import stale_reasons
from mlenv.spec import load_spec

# `lock --check` is timed at start-up (bench/startup.py): it needs the spec, the lock and freshness only.
# The resolver, its sources and the progress display are imported by the functions that resolve.
if TYPE_CHECKING:
    from mlenv.model.lock import Lock
    from mlenv.model.spec import ResolverName, Spec
    from mlenv.resolve.apt import SuiteFetcher
    from mlenv.resolve.lock import Sources
    from mlenv.resolve.upgrade import Upgrade
    from mlenv.sources.python.backend import ResolverBackend
    from mlenv.sources.registry import RegistryClient


def python_backend(name: ResolverName) -> ResolverBackend:
    """The resolver the spec names; only it is imported (pip-tools' reads the index over HTTP)."""
    if name == "uv":
        from mlenv.sources.python.uv import UvBackend

        return UvBackend()
    from mlenv.sources.python.piptools import PipToolsBackend

    return PipToolsBackend()


def debian_archive(mirror: str | None) -> SuiteFetcher:
    """The Debian archive of `mirror`, its client imported only by a lock that resolves apt packages."""
    from mlenv.sources.debian.archive import DebianArchive

    return DebianArchive(mirror=mirror)


class LazyRegistry:
    """The RegistryClient, made on first use: reading the docker config loads the docker SDK (~0.1 s),
    which a spec without a base image never needs."""

    def __init__(self) -> None:
        self._client: RegistryClient | None = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            from mlenv.sources.registry import RegistryClient

            self._client = RegistryClient()
        return getattr(self._client, name)


def default_sources() -> Sources:
    """The real ones: the registries of the user's docker config, Debian mirrors, PyPI-like indexes.
    Imported here, so `lock --check` (no network) loads no HTTP client."""
    from mlenv.resolve.lock import Sources
    from mlenv.sources.python.requires import CachedRequires

    return Sources(
        registry=cast("RegistryClient", LazyRegistry()),  # a RegistryClient once it is used
        debian=debian_archive,
        python=python_backend,
        wheel_requires=CachedRequires().many,
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
    upgrade_package: Annotated[
        list[str] | None,
        typer.Option(
            "--upgrade-package",
            "-P",
            metavar="NAME",
            help="Let this Python package move (NAME or NAME==VERSION; repeatable); other pins stay.",
        ),
    ] = None,
    upgrade_apt: Annotated[
        list[str] | None,
        typer.Option(
            "--upgrade-apt", metavar="NAME", help="Let this apt package move (NAME or NAME:ARCH; repeatable)."
        ),
    ] = None,
    upgrade_all: Annotated[
        bool, typer.Option("--upgrade", "-U", help="Re-resolve everything: the old lock is no preference.")
    ] = False,
) -> None:
    """Resolve mlenv.toml into mlenv.lock (every layer pinned, Python files hashed for the target).

    Pins of the existing lock that still satisfy the spec are kept; -P, --upgrade-apt, --upgrade free them.
    """
    as_json = wants_json(output_format)
    upgrade = None
    if upgrade_all or upgrade_package or upgrade_apt or not check:
        # Here, not at the top: the apt request grammar it parses with costs `lock --check` its start-up.
        from mlenv.resolve.upgrade import parse_upgrade

        upgrade = parse_upgrade(everything=upgrade_all, python=upgrade_package or [], apt=upgrade_apt or [])
        if check and (upgrade.everything or upgrade.python or upgrade.apt):
            raise MlenvError("--check resolves nothing: it takes no --upgrade, -P or --upgrade-apt")
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
    assert upgrade is not None  # parsed above whenever the lock is resolved
    write_lock(spec, path, upgrade, strict_as_of=strict_as_of, as_json=as_json)


def write_lock(spec: Spec, path: Path, upgrade: Upgrade, *, strict_as_of: bool, as_json: bool) -> None:
    """Resolve `spec` (the old lock at `path` a preference) and write the lock there unless unchanged."""
    from mlenv.cli.progress import for_command
    from mlenv.files import write_atomic
    from mlenv.lockfile import dump_bytes
    from mlenv.resolve.freshness import apt_as_of_gap
    from mlenv.resolve.lock import resolve_lock
    from mlenv.resolve.upgrade import lock_changes

    with for_command():
        previous = previous_lock(path, quiet=upgrade.everything)
        preferred = None if upgrade.everything else previous
        resolved = resolve_lock(spec, default_sources(), previous=preferred, upgrade=upgrade)
    gap = apt_as_of_gap(resolved)
    if gap is not None:
        if strict_as_of:
            hint = "reach a snapshot archive (MLENV_SNAPSHOT_URL), or drop --strict-as-of"
            raise ResolutionError(gap, hint=hint)
        typer.echo(f"mlenv: warning: {gap}", err=True)
    data = dump_bytes(resolved)
    if previous is not None:
        for line in lock_changes(previous, resolved):  # what moved, as uv says it
            typer.echo(line, err=True)
    unchanged = path.is_file() and path.read_bytes() == data
    if not unchanged:
        write_atomic(path, data)
    if as_json:
        shown = {"lockfile": str(path), "written": not unchanged, "lock-digest": lock_digest(data)}
        typer.echo(json.dumps(shown, indent=2))
    else:
        typer.echo(f"{path}: {'unchanged' if unchanged else 'written'}")


def previous_lock(path: Path, *, quiet: bool = False) -> Lock | None:
    """The existing lock, to prefer its pins; one that cannot be read is no preference: a warning (unless
    `quiet`: --upgrade prefers nothing anyway), and the lock is resolved from scratch (`mlenv lock` is how
    a broken lock is fixed, so it must not refuse)."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        return read_lock_input(path, "--lockfile")[1]
    except (MlenvError, OSError, ValueError, RecursionError) as error:
        if quiet:
            return None
        typer.echo(
            f"mlenv: warning: the existing lock is no preference, resolving from scratch: {error}", err=True
        )
        return None


def wants_json(output_format: str) -> bool:
    """--format json, checked before any work; text needs no import (`lock --check` is timed at start-up)."""
    if output_format == "text":
        return False
    from mlenv.verify.formats import DataFormat, parse_format

    return parse_format(DataFormat, output_format) is DataFormat.JSON
