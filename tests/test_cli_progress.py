"""The CLI answers at once: progress on a terminal's stderr only, root flags after the command, help on a
bare `mlenv`, installable shell completion.

The lock runs offline (UV_OFFLINE: a target from the spec and no requirements, so uv needs no index),
in a real pseudo-terminal driven by pexpect, with stdout sent to a file so the terminal shows stderr alone.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pexpect
import pytest

from mlenv.cli.app import root_flags_first
from tests.helpers import run_cli

SPEC = 'name = "progress"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
ESCAPE = "\x1b["  # any terminal control sequence: a spinner, a cursor move, a colour


def offline_env() -> dict[str, str]:
    return {**os.environ, "UV_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "mlenv.toml").write_text(SPEC)
    return tmp_path


def lock_in_terminal(project: Path, *flags: str) -> tuple[str, str]:
    """What a terminal shows while `mlenv lock` runs (stderr), and what went to stdout (a file)."""
    stdout = project / "stdout.txt"
    command = " ".join(
        shlex.quote(word) for word in (sys.executable, "-m", "mlenv", "lock", str(project), *flags)
    )
    child = pexpect.spawn(
        "/bin/sh",
        ["-c", f"{command} > {shlex.quote(str(stdout))}"],
        env=offline_env(),
        encoding="utf-8",
        timeout=120,
        dimensions=(24, 120),
    )
    shown = child.read()
    child.close()
    assert child.exitstatus == 0, shown
    return shown, stdout.read_text()


def test_lock_shows_progress_on_a_terminal_and_none_when_piped(project: Path) -> None:
    shown, stdout = lock_in_terminal(project)
    # The last step is always drawn (rich renders a final frame before it clears the line).
    assert "lock: checking the CUDA stack, hashing models" in shown, shown
    assert ESCAPE in shown  # drawn in place, not printed as lines
    assert stdout == f"{project / 'mlenv.lock'}: written\n"  # stdout stays clean for scripts

    (project / "mlenv.lock").unlink()
    piped = run_cli("lock", str(project), env=offline_env())
    assert piped.code == 0, piped.stderr
    assert piped.stderr == ""  # no progress, and no control sequence, into a pipe or a log
    assert piped.stdout == stdout


@pytest.mark.parametrize("flag", ["-q", "--quiet"])
def test_quiet_draws_nothing_even_on_a_terminal(project: Path, flag: str) -> None:
    shown, stdout = lock_in_terminal(project, flag)  # the flag after the command, too
    assert "lock:" not in shown and ESCAPE not in shown, shown
    assert stdout.endswith(": written\n")


def test_verbose_after_the_command_is_accepted(project: Path) -> None:
    missing = project / "absent"
    after = run_cli("lock", str(missing), "-v")
    before = run_cli("-v", "lock", str(missing))
    assert after.code == before.code == 2
    assert "No such option" not in after.stderr
    assert "Traceback" in after.stderr  # -v took effect: the traceback is shown
    assert after.stderr.splitlines()[-1] == before.stderr.splitlines()[-1]


def test_root_flags_move_before_the_command_but_not_past_a_double_dash() -> None:
    assert root_flags_first(["lock", ".", "-v"]) == ["-v", "lock", "."]
    moved = root_flags_first(["build", "-q", "-t", "x", "--verbose"])
    assert moved == ["-q", "--verbose", "build", "-t", "x"]
    assert root_flags_first(["lock", "--", "-v"]) == ["lock", "--", "-v"]


def test_bare_mlenv_prints_help_and_exits_0() -> None:
    result = run_cli()
    assert result.code == 0, result.stderr
    assert "Usage: mlenv" in result.stdout and "lock" in result.stdout
    assert "error" not in result.stderr


def test_shell_completion_is_installable() -> None:
    shown = run_cli("--show-completion", "bash", env={**os.environ, "SHELL": "/bin/bash"})
    assert shown.code == 0, shown.stderr
    assert "_MLENV_COMPLETE" in shown.stdout and "complete " in shown.stdout
    # What the shell runs on TAB: the command names come back, every command registered for it.
    env = {**os.environ, "_MLENV_COMPLETE": "complete_bash", "COMP_WORDS": "mlenv lo", "COMP_CWORD": "1"}
    completed = run_cli(env=env)
    assert completed.code == 0, completed.stderr
    assert "lock" in completed.stdout.split()
