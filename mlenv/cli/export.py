"""`mlenv export --format FORMAT [--image IMAGE] [-o PATH]`: SBOMs, provenance and audit reports.

Without --image the export describes the lock; with it, the image is verified against the lock and
the verdict (and the image's digest) goes into the export. The file is always written, with its verdict
in it; then the exit code is 1 when the lock is stale (its spec, found beside it, changed since) or the
image drifted, 0 otherwise, and 2 for bad input. A lock with no spec beside it is exported unjudged.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlenv import __version__
from mlenv.build.wheels import rebuild_missing
from mlenv.cli.common import read_lock_input, refuse_directory, say
from mlenv.errors import MlenvError
from mlenv.export import ExportContext, ExportFormat, ImageIdentity, document_time, export_format
from mlenv.export import export as render
from mlenv.export.context import freshness, verdict
from mlenv.export.requirements import WHEEL_FOLDER, built_wheel, left_out
from mlenv.files import write_atomic
from mlenv.lockfile import LOCK_FILE, lock_digest
from mlenv.model.facts import EnvFacts
from mlenv.model.lock import Lock
from mlenv.model.report import Report
from mlenv.model.spec import Spec
from mlenv.resolve.freshness import stale_reasons
from mlenv.sources.cas import ContentStore
from mlenv.spec import PYPROJECT_FILE, SPEC_FILE, find_spec_file, load_spec
from mlenv.verify.image import verify_image


def export(
    output_format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(ExportFormat)}.")],
    project: Annotated[
        Path, typer.Argument(help="Project directory (or its spec file) holding mlenv.lock.")
    ] = Path("."),
    image: Annotated[
        str | None,
        typer.Option(
            help="Verify this image (docker-daemon:, docker-archive:, oci:, "
            "docker://, or a daemon name) and describe it."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (atomically) instead of stdout; `-` is stdout."),
    ] = None,
    lock: Annotated[
        Path | None, typer.Option("--lock", "-l", help="The lockfile (default PROJECT/mlenv.lock).")
    ] = None,
    platform: Annotated[
        str | None, typer.Option(help="Platform to describe (default: the lock's first).")
    ] = None,
) -> None:
    """Export the lock, or an image verified against it: CycloneDX, SPDX, in-toto, HTML, JSON, pylock or a
    hashed requirements.txt. Exit 1 (after writing) when the lock is stale or the image drifted."""
    chosen_format = export_format(output_format)
    if output == Path("-"):
        output = None
    if output is not None:
        refuse_directory(output, "--output")
    if lock is None and not project.exists():
        raise MlenvError(f"{project}: no such project directory or spec file")
    lock_path = lock or (project if project.is_dir() else project.parent) / LOCK_FILE
    data, locked = read_lock_input(lock_path, "--lock")
    chosen = platform or locked.target.platforms[0]
    if chosen not in locked.target.platforms:
        raise MlenvError(
            f"--platform {chosen}: {lock_path} is locked for {', '.join(locked.target.platforms)}"
        )
    spec = spec_beside(lock_path.parent if lock is not None and project == Path(".") else project)
    context = ExportContext(
        lock_digest=lock_digest(data),
        platform=chosen,
        mlenv_version=__version__,
        created=document_time(locked.as_of, os.environ.get("SOURCE_DATE_EPOCH")),
        stale=None if spec is None else tuple(stale_reasons(spec, locked)),
        extras=() if spec is None else requested_extras(spec, locked),
    )
    if chosen_format in (ExportFormat.REQUIREMENTS, ExportFormat.PYLOCK):
        context = dataclasses.replace(
            context, wheel_folder=write_built_wheels(locked, lock_path.resolve().parent, output)
        )
    report = None
    if image is not None:
        report, identity, facts = audit_image(locked, image, context, lock_path.resolve().parent)
        context = dataclasses.replace(context, image=identity, facts=facts)
    content = render(chosen_format, locked, report, context)
    if output is None:
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
    else:
        write_atomic(output, content)
        say(f"wrote {chosen_format} to {output} (lock: {freshness(context)}; image: {verdict(report)})")
    failed = False
    if context.stale:
        say(f"{lock_path} is stale: {context.stale[0]}; run `mlenv lock`")
        failed = True
    if report is not None and not report.ok:
        say(f"{image}: {len(report.drifts)} drift(s) from the lock, recorded in the export")
        failed = True
    if failed:
        raise typer.Exit(code=1)


def write_built_wheels(lock: Lock, project_dir: Path, output: Path | None) -> Path | None:
    """Copy the wheels the lock records as built on the host (from the content store, rebuilt when it
    lacks them) into the wheel folder beside `output`, which the export then names; None when there is
    no such wheel, or no output file to put a folder beside (each such pin is then left out, said here)."""
    pins = [pin for pin in sorted(lock.python.packages, key=lambda p: p.name) if built_wheel(pin)]
    if not pins:
        return None
    if output is None:
        for pin in pins:
            say(f"mlenv: warning: {left_out(pin)}")
        return None
    store = ContentStore()
    rebuild_missing(lock, project_dir, store)
    folder = output.resolve().parent / WHEEL_FOLDER
    folder.mkdir(exist_ok=True)
    for pin in pins:
        wheel = built_wheel(pin)
        assert wheel is not None
        found = store.get(wheel.sha256)
        assert found is not None  # rebuild_missing put every missing built wheel into the store
        write_atomic(folder / wheel.name, found.read_bytes())
    return folder


def spec_beside(location: Path) -> Spec | None:
    """The spec the lock was made from, when the project has one: a lock copied alone is exported unjudged.
    A spec that is there but broken is bad input (exit 2), not a reason to skip the judgement."""
    folder = location if location.is_dir() else location.parent
    if location.is_dir() and not any((folder / name).is_file() for name in (SPEC_FILE, PYPROJECT_FILE)):
        return None
    try:
        path = find_spec_file(location)
    except MlenvError:  # a pyproject.toml without [tool.mlenv]: not an mlenv project
        return None
    return load_spec(path)


def requested_extras(spec: Spec, lock: Lock) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The extras the spec's requirements name, by locked package: the lock keeps pins, not extras."""
    locked = {pin.name for pin in lock.python.packages}
    found: dict[str, set[str]] = {}
    for text in spec.python.requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if requirement.extras and name in locked:
            found.setdefault(name, set()).update(canonicalize_name(e) for e in requirement.extras)
    return tuple((name, tuple(sorted(extras))) for name, extras in sorted(found.items()))


def audit_image(
    lock: Lock, reference: str, context: ExportContext, project_dir: Path
) -> tuple[Report, ImageIdentity, EnvFacts]:
    """The verify report of the image, and its identity (its digests) that an export names as its subject."""
    report, observed = verify_image(
        lock, reference, lock_digest=context.lock_digest, platform=context.platform, project_dir=project_dir
    )
    assert observed.image is not None  # an image reference always loads an image, not a directory
    identity = ImageIdentity(
        reference=reference,
        config_digest=observed.image.config_digest,
        manifest_digest=observed.image.manifest_digest,
    )
    return report, identity, observed.facts
