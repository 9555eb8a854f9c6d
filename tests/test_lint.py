"""The code stays lint- and type-clean: ruff (rules and the 110-column limit from pyproject.toml) and mypy.

Run as tests so that the README's one test command, and so CI, enforce them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TREES = ["mlenv", "tests", "bench", "scripts", "tools"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=False)


def _ruff() -> str:
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: `pip install -e '.[test]'` brings it", pytrace=False)
    return found


def test_ruff_finds_nothing() -> None:
    result = _run(_ruff(), "check", "--no-cache", "--output-format", "concise", *TREES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    result = _run(_ruff(), "format", "--check", "--no-cache", *TREES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = _run(sys.executable, "-m", "mypy")  # files and options: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr
