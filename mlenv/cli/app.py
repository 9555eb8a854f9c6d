"""The typer root and the one error boundary that maps errors to exit codes.

0 = done / matches, 1 = a check ran and found differences (stale lock, drift), 2 = error. A user
mistake gets one line on stderr; the traceback only with -v. SIGINT and SIGTERM unwind the stack like an
error does, so every temporary file and directory (and a resolver child) is cleaned up on the way out.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Any

import typer
from typer.exceptions import TyperException

from mlenv.errors import MlenvError

app = typer.Typer(
    name="mlenv",
    help="Lock, build and verify ML environments: production runs exactly the image you tested.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Set by the shell when it asks mlenv for completions (click's `_{PROG}_COMPLETE`).
COMPLETE_VARIABLE = "_MLENV_COMPLETE"

# An error line is read by a person and grepped by CI: one line, cut here (a quoted value inside it is
# already cut to 200 characters where it is made; this bounds what a library's message may add).
LINE_LIMIT = 1000


class Stopped(BaseException):
    """A signal asked mlenv to stop. A BaseException, so no `except Exception` swallows it and click does
    not turn it into its own Abort (which prints an empty line first); `finally` blocks and context
    managers still run, removing temporary directories, and subprocess.run kills its child."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    # A second Ctrl-C while the first unwinds would interrupt the cleanup it is waiting for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(signum)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise Stopped while a command runs; the previous handlers come back after."""
    wanted = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {signum: signal.signal(signum, _stop) for signum in wanted}
    except ValueError:  # not the main thread (an embedding program): leave signals to it
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def one_line(text: str) -> str:
    """`text` as one bounded line: line breaks (a library's caret under a requirement) become spaces."""
    line = re.sub(r"\s*[\r\n]+\s*", " ", text).strip()
    return line if len(line) <= LINE_LIMIT else line[:LINE_LIMIT] + "..."


def _version(value: bool) -> None:
    if value:
        from mlenv import __version__  # here: reading the package metadata costs other commands ~10 ms

        typer.echo(f"mlenv {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug output.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or spinners on stderr.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    from mlenv.cli.progress import configure  # here: `mlenv --version` never loads it

    configure(quiet=quiet)


# Command name -> the module that implements it (a function of the same name). Listed in help order.
COMMANDS = (
    "init",
    "lock",
    "dockerfile",
    "build",
    "verify",
    "inspect",
    "check",
    "diff",
    "export",
    "vault",
    "attest",
    "keygen",
)


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


def click_command(args: list[str]) -> Any:
    """The click command typer makes of `app`. When a command runs, its options are coerced without
    pydantic (mlenv.cli.coerce); `mlenv --version` and help coerce nothing that needs it."""
    command = typer.main.get_command(app)
    if _requested_command(args) in COMMANDS:
        from mlenv.cli.coerce import use_plain_values

        use_plain_values(command)
    return command


# Options of mlenv itself that a user may also type after the command (`mlenv lock -v`); no command has
# an option of the same spelling, so moving them in front of the command changes no command's meaning.
ROOT_FLAGS = frozenset({"-v", "--verbose", "-q", "--quiet"})


def root_flags_first(args: list[str]) -> list[str]:
    """`args` with mlenv's own flags moved before the command; nothing after `--` is touched."""
    end = args.index("--") if "--" in args else len(args)
    head = args[:end]
    flags = [word for word in head if word in ROOT_FLAGS]
    return flags + [word for word in head if word not in ROOT_FLAGS] + args[end:]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error leaves here as one line on stderr and an exit code."""
    args = root_flags_first(sys.argv[1:] if argv is None else argv)
    # A bare `mlenv` asks what mlenv does: help and exit 0 (click's no-args help is a usage error, which
    # printed an empty error line). A shell asking for completions also passes no arguments: leave it be.
    if not args and COMPLETE_VARIABLE not in os.environ:
        args = ["--help"]
    verbose = "-v" in args or "--verbose" in args
    try:
        with _stop_on_signals():
            register_commands(args)
            code = click_command(args).main(args=args, prog_name="mlenv", standalone_mode=False)
    except MlenvError as error:
        if verbose:
            traceback.print_exc()
        typer.echo(f"mlenv: error: {one_line(str(error))}", err=True)
        sys.exit(error.exit_code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (Stopped, typer.Abort, KeyboardInterrupt) as stopped:
        signum = stopped.signum if isinstance(stopped, Stopped) else signal.SIGINT
        typer.echo("mlenv: interrupted" if signum == signal.SIGINT else "mlenv: terminated", err=True)
        sys.exit(128 + signum)  # the shell's convention for "ended by signal N"
    except TyperException as error:  # usage mistakes: unknown command or option, bad value
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        typer.echo(f"mlenv: error: {one_line(message)}", err=True)
        sys.exit(2)
    except Exception as error:  # a bug in mlenv, not a user mistake: say so and how to report it
        if verbose:
            traceback.print_exc()
        typer.echo(
            f"mlenv: internal error: {one_line(f'{error.__class__.__name__}: {error}')} "
            "(re-run with -v for details)",
            err=True,
        )
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
