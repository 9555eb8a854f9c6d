"""`mlenv verify IMAGE`: prove an image reproduces the lock (exit 0), or list each drift (exit 1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlenv.errors import MlenvError

# The rest of verify (0.6 s to import, measured) is imported inside the command, after a daemon image's
# save is requested: dockerd exports the whole image before it sends a byte, so the imports overlap that.
if TYPE_CHECKING:
    from mlenv.model.report import Report
    from mlenv.sources.engine import SaveRequest
    from mlenv.verify.formats import ReportFormat


def verify(
    image: Annotated[
        str,
        typer.Argument(
            help="docker-daemon:NAME, docker-archive:PATH, oci:PATH[:TAG], "
            "docker://REF, or a bare daemon name."
        ),
    ],
    lock: Annotated[
        Path | None,
        typer.Option(
            "--lock", "-l", help="The lockfile to verify against (default: ./mlenv.lock).", show_default=False
        ),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text, json or junit.")] = "text",
    platform: Annotated[str | None, typer.Option(help="Platform of a multi-platform image.")] = None,
    policy: Annotated[
        str,
        typer.Option(
            help="warn: policy findings (root user, no HEALTHCHECK, secrets...) are reported, exit unchanged;"
            " fail: a finding alone exits 1 too."
        ),
    ] = "warn",
    project: Annotated[
        Path | None,
        typer.Option(
            help="The project directory whose app tree the image's copy must equal (default: the lock's)."
        ),
    ] = None,
    attestation: Annotated[
        bool,
        typer.Option(
            "--attestation",
            help="Do not read the image: check its signed mlenv verify attestation in the registry "
            "(with --key) and show the verdict it carries.",
        ),
    ] = False,
    key: Annotated[
        Path | None, typer.Option("--key", "-k", help="With --attestation: the team's public key (PEM).")
    ] = None,
) -> None:
    """Check IMAGE against the lock, layer by layer. Exit 0 = reproduces it exactly, 1 = drift (or, with
    --policy fail, a policy finding)."""
    requested = None if attestation or key is not None else _request_save(image)
    try:
        from mlenv.cli.common import locked_platform, read_lock_input
        from mlenv.cli.progress import for_command
        from mlenv.lockfile import LOCK_FILE, lock_digest
        from mlenv.verify.formats import FORMATS, PolicyMode, ReportFormat, parse_format
        from mlenv.verify.image import verify_platforms

        lock = lock if lock is not None else Path(LOCK_FILE)
        chosen = parse_format(ReportFormat, output_format)
        gate = parse_format(PolicyMode, policy, what="policy", option="--policy")
        if attestation or key is not None:
            from mlenv.cli.attestation import verify_attestation  # here: a plain verify never loads it

            verify_attestation(image, lock, key, chosen)
            return
        data, locked = read_lock_input(lock, "--lock")
        with for_command():
            reports = verify_platforms(
                locked,
                image,
                lock_digest=lock_digest(data),
                platform=locked_platform(locked, platform) if platform is not None else None,
                project_dir=project if project is not None else lock.resolve().parent,
                requested=requested,
            )
    finally:
        if requested is not None:
            requested.close()  # taken over by the read (which closed it), or not used at all
    sys.stdout.write(FORMATS[chosen](reports[0]) if len(reports) == 1 else several(chosen, reports))
    if any(not r.ok or (gate is PolicyMode.FAIL and r.findings) for r in reports):
        raise typer.Exit(1)


def _request_save(image: str) -> SaveRequest | None:
    """The save of a daemon image, requested before anything else is done (dockerd exported the fraud
    image for 6.7 of the 8.6 s of its `docker save`, measured, and verify's imports and lock took 0.7 s
    before this). None for another transport, or when the request fails: the read fails the same way
    later, after the lock and options are checked, so errors come in the order they always did."""
    from mlenv.sources.location import parse_location

    try:
        location = parse_location(image)
        if location.transport != "docker-daemon":
            return None
        from mlenv.sources.engine import request_save

        return request_save(location.target)
    except MlenvError:
        return None


def several(chosen: ReportFormat, reports: list[Report]) -> str:
    """The reports of a multi-platform image: text one after another; JSON an array of reports (each one
    as report.schema.json describes); JUnit one document holding every platform's suites."""
    from mlenv.verify.formats import FORMATS, ReportFormat, as_data, junit_documents

    if chosen is ReportFormat.JSON:
        return json.dumps([as_data(r) for r in reports], indent=2, sort_keys=True) + "\n"
    if chosen is ReportFormat.JUNIT:
        return junit_documents([FORMATS[chosen](r) for r in reports])
    return "".join(FORMATS[chosen](r) for r in reports)
