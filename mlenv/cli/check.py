"""`mlenv check`: the Python environment you run in (default) or this machine's NVIDIA driver (`--host`)
against the lock.

The environment is `--venv DIR`, `--python PATH`, else the active one ($VIRTUAL_ENV, else `python3` on
PATH; see observe.localenv for why never mlenv's own interpreter). Exit 0 when it matches, 1 on a drift,
2 on bad input. `--host`: exit 0 when the driver can run the lock's CUDA stack by one of NVIDIA's rules
(the toolkit's floor; minor version compatibility or forward compatibility with a warning on stderr) or
the lock is CPU-only, 1 when it is too old or missing; `--strict` asks for the toolkit's floor. The driver
is read here, at the edge; the decision is `driver_verdict`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlenv.cli.common import read_lock_input
from mlenv.errors import MlenvError
from mlenv.lockfile import LOCK_FILE, lock_digest
from mlenv.verify.formats import DataFormat, parse_format

DEFAULT_LOCK = Path(LOCK_FILE)


def check(
    host: Annotated[bool, typer.Option("--host", help="Check this machine's NVIDIA driver.")] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="With --host: ask for the toolkit's own driver floor (no minor or forward compatibility).",
        ),
    ] = False,
    python: Annotated[
        str | None, typer.Option("--python", help="Check this interpreter's environment (a venv's or not).")
    ] = None,
    venv: Annotated[str | None, typer.Option("--venv", help="Check this virtual environment.")] = None,
    files: Annotated[
        bool, typer.Option("--files", help="Also check every installed file's hash (RECORD, locked wheels).")
    ] = False,
    lock: Annotated[Path, typer.Option("--lock", "-l", help="The lockfile to check against.")] = DEFAULT_LOCK,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
) -> None:
    """Check your Python environment (or, with --host, the NVIDIA driver) against the lock: exit 0 =
    matches, 1 = drift."""
    chosen = parse_format(DataFormat, output_format)
    if host:
        if python is not None or venv is not None or files:
            raise MlenvError(
                "--host checks this machine's NVIDIA driver; it takes no --python, --venv or --files"
            )
        _check_host(lock, chosen, strict=strict)
        return
    if strict:
        raise MlenvError("--strict applies to --host (the driver check)")
    if python is not None and venv is not None:
        raise MlenvError("--python and --venv both name an environment; give one")
    _check_environment(lock, chosen, python=python, venv=venv, files=files)


def _check_environment(
    lock: Path, chosen: DataFormat, *, python: str | None, venv: str | None, files: bool
) -> None:
    from mlenv.observe.localenv import choose_environment, host_fs, read_environment
    from mlenv.verify.envcheck import as_json_data, as_text, check_environment

    data, locked = read_lock_input(lock, "--lock")
    fs = host_fs()
    env = choose_environment(python=python, venv=venv, environ=os.environ, fs=fs)
    found = read_environment(fs, env, check_files=files)
    result = check_environment(locked, env, found, lock_digest=lock_digest(data), files=files, fs=fs)
    if chosen is DataFormat.JSON:
        sys.stdout.write(json.dumps(as_json_data(result), indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(as_text(result, lock=str(lock)))
    if not result.report.ok:
        raise typer.Exit(1)


def _check_host(lock: Path, chosen: DataFormat, *, strict: bool) -> None:
    from mlenv.resolve.cuda import driver_verdict, forward_compat
    from mlenv.sources.hostdriver import host_driver_version

    locked = read_lock_input(lock, "--lock")[1]
    cuda = locked.cuda
    compat = forward_compat(locked)
    driver = host_driver_version()
    verdict = driver_verdict(cuda, driver, strict=strict, compat=compat)
    if chosen is DataFormat.JSON:
        typer.echo(
            json.dumps(
                {
                    "ok": verdict.ok,
                    "rule": verdict.rule,
                    "warning": verdict.warning,
                    "strict": strict,
                    "driver": driver[0] if driver else None,
                    "driver-source": driver[1] if driver else None,
                    "min-driver": cuda.min_driver,
                    "minor-compatibility-floor": verdict.compat_floor,
                    "forward-compatibility": [
                        {"package": c.package, "driver": c.driver, "where": c.where} for c in compat
                    ],
                    "message": verdict.message,
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        typer.echo(verdict.message)
    if verdict.warning:
        sys.stderr.write(
            f"mlenv: warning: the driver runs this lock only by {verdict.rule.replace('-', ' ')}\n"
        )
    if not verdict.ok:
        raise typer.Exit(1)
