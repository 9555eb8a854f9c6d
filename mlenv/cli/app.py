"""The typer root and the one error boundary that maps errors to exit codes.

0 = done / matches, 1 = a check ran and found differences (stale lock, drift), 2 = error. A user
mistake gets one line on stderr; the traceback only with -v.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer
from typer.exceptions import TyperException

from mlenv import __version__
from mlenv.cli import build as build_command
from mlenv.cli import check as check_command
from mlenv.cli import dockerfile as dockerfile_command
from mlenv.cli import export as export_command
from mlenv.cli import init as init_command
from mlenv.cli import inspect as inspect_command
from mlenv.cli import lock as lock_command
from mlenv.cli import verify as verify_command
from mlenv.errors import MlenvError

app = typer.Typer(
    name="mlenv",
    help="Lock, build and verify ML environments: production runs exactly the image you tested.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"verbose": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlenv {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug output.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["verbose"] = verbose


app.command("init")(init_command.init)
app.command("lock")(lock_command.lock)
app.command("dockerfile")(dockerfile_command.dockerfile)
app.command("build")(build_command.build)
app.command("verify")(verify_command.verify)
app.command("inspect")(inspect_command.inspect)
app.command("check")(check_command.check)
app.command("export")(export_command.export)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error leaves here as one line on stderr and an exit code."""
    verbose = "-v" in (argv or sys.argv[1:]) or "--verbose" in (argv or sys.argv[1:])
    try:
        code = app(args=argv, prog_name="mlenv", standalone_mode=False)
    except MlenvError as error:
        if verbose:
            traceback.print_exc()
        typer.echo(f"mlenv: error: {error}", err=True)
        sys.exit(error.exit_code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("mlenv: interrupted", err=True)
        sys.exit(130)
    except TyperException as error:  # usage mistakes: unknown command or option, bad value
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        typer.echo(f"mlenv: error: {message}", err=True)
        sys.exit(2)
    except Exception as error:  # a bug in mlenv, not a user mistake: say so and how to report it
        if verbose:
            traceback.print_exc()
        typer.echo(f"mlenv: internal error: {error.__class__.__name__}: {error} (re-run with -v for details)",
                   err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
