"""The typer root and the one error boundary that maps errors to exit codes.

0 = done / matches, 1 = a check ran and found differences (stale lock, drift), 2 = error. A user
mistake gets one line on stderr; the traceback only with -v.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Annotated

import typer
from typer.exceptions import TyperException

from mlenv import __version__
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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug output.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["verbose"] = verbose


# Command name -> the module that implements it (a function of the same name). Listed in help order.
COMMANDS = ("init", "lock", "dockerfile", "build", "verify", "inspect", "check", "export")


def _requested_command(argv: list[str]) -> str | None:
    """The command the arguments name, if any: the first word that is not an option."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def register_commands(argv: list[str]) -> None:
    """Import only the command that runs, so start-up pays for that command alone.

    `mlenv --version` imports no command; `mlenv lock ...` imports mlenv.cli.lock only. When no
    known command is named (help, a typo, completion), every command is registered so typer can list
    them or say which exist.
    """
    wanted = _requested_command(argv)
    names = (wanted,) if wanted in COMMANDS else ("--version",) if "--version" in argv else COMMANDS
    for name in names:
        if name in COMMANDS:
            module = importlib.import_module(f"mlenv.cli.{name}")
            app.command(name)(getattr(module, name))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error leaves here as one line on stderr and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    try:
        register_commands(args)
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
        typer.echo(
            f"mlenv: internal error: {error.__class__.__name__}: {error} (re-run with -v for details)",
            err=True,
        )
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
