"""`mlenv check --host`: can this machine's NVIDIA driver run the lock's CUDA stack?

Exit 0 when it can (or the lock is CPU-only), 1 when the driver is too old or missing for a lock
that needs CUDA. The driver is read here, at the edge; the decision is `driver_verdict`, pure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlenv.cli.common import read_lock_input
from mlenv.errors import MlenvError
from mlenv.lockfile import LOCK_FILE
from mlenv.resolve.cuda import driver_verdict
from mlenv.sources.hostdriver import host_driver_version
from mlenv.verify.formats import DataFormat, parse_format

DEFAULT_LOCK = Path(LOCK_FILE)


def check(
    host: Annotated[bool, typer.Option("--host", help="Check this machine's NVIDIA driver.")] = False,
    lock: Annotated[Path, typer.Option("--lock", "-l", help="The lockfile to check against.")] = DEFAULT_LOCK,
    output_format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
) -> None:
    """Check the host against the lock: exit 0 = it can run it, 1 = it cannot."""
    if not host:
        raise MlenvError("say what to check: --host (the NVIDIA driver of this machine)")
    chosen = parse_format(DataFormat, output_format)
    cuda = read_lock_input(lock, "--lock")[1].cuda
    driver = host_driver_version()
    verdict = driver_verdict(cuda, driver)
    if chosen is DataFormat.JSON:
        typer.echo(
            json.dumps(
                {
                    "ok": verdict.ok,
                    "driver": driver[0] if driver else None,
                    "driver-source": driver[1] if driver else None,
                    "min-driver": cuda.min_driver,
                    "message": verdict.message,
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        typer.echo(verdict.message)
    if not verdict.ok:
        raise typer.Exit(1)
