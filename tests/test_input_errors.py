"""Malformed input is one error line naming the file and key, exit 2: never a traceback, never an
`internal error` (reserved for bugs), never a line a caret under it or a value of 200,000 characters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlenv.cli.app import LINE_LIMIT, one_line
from mlenv.errors import SpecError
from mlenv.spec import QUOTE_LIMIT, load_spec
from tests.helpers import run_cli

SPEC = 'name = "demo"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'


def one_error_line(args: list[str], expected: str) -> str:
    result = run_cli(*args)
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("mlenv: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert expected in result.stderr, result.stderr
    return result.stderr


CASES = {
    "mlenv.toml not UTF-8": (
        {"mlenv.toml": SPEC.encode() + b'x = "\xff\xfe"\n'},
        "mlenv.toml: not UTF-8: byte 0xff",
    ),
    "pyproject not UTF-8": (
        {"pyproject.toml": b"[tool.mlenv]\nname = '\xc3\x28'\n"},
        "pyproject.toml: not UTF-8",
    ),
    "requirements not UTF-8": (
        {
            "mlenv.toml": SPEC.encode() + b'[python]\nrequirements-files = ["r.txt"]\n',
            "r.txt": b"pandas==2.0.3\nnump\xe9y\n",
        },
        "r.txt: not UTF-8: byte 0xe9 at offset 18",
    ),
    "deep arrays": (
        {"mlenv.toml": SPEC.encode() + b"x = " + b"[" * 5000 + b"]" * 5000},
        "mlenv.toml: not valid TOML",
    ),
    "deep tables": (
        {"mlenv.toml": SPEC.encode() + b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000},
        "mlenv.toml: not valid TOML",
    ),
    "tool is a number": ({"pyproject.toml": b"tool = 5\n"}, "pyproject.toml: tool: is a int, not a table"),
    "tool.mlenv is a number": (
        {"pyproject.toml": b"[tool]\nmlenv = 5\n"},
        "pyproject.toml: tool.mlenv: missing table",
    ),
    "caret requirement": (
        {"mlenv.toml": SPEC.encode() + b'[python]\nrequirements = ["pandas >=< 2"]\n'},
        "mlenv.toml: python.requirements[0]: invalid requirement 'pandas >=< 2': ",
    ),
    "an include loop": (
        {"mlenv.toml": SPEC.encode() + b'[python]\nrequirements-files = ["a.txt"]\n', "a.txt": b"-r a.txt\n"},
        "a.txt: includes itself through -r",
    ),
    "an env name that is no shell name": (
        {"mlenv.toml": SPEC.encode() + b'[app.env]\n"A B" = "1"\n'},
        "mlenv.toml: app.env: 'A B' does not match",
    ),
    "an env value of two lines": (
        {"mlenv.toml": SPEC.encode() + b'[app.env]\nA = "1\\nRUN id"\n'},
        "mlenv.toml: app.env.A: ",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_input_is_one_line(tmp_path: Path, case: str) -> None:
    files, expected = CASES[case]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    one_error_line(["lock", "--check", str(tmp_path)], expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # nothing written


def test_a_huge_value_is_cut_in_the_error_line(tmp_path: Path) -> None:
    huge = "pandas >=< " + "9" * 200_000
    (tmp_path / "mlenv.toml").write_text(SPEC + f'[python]\nrequirements = ["{huge}"]\n')
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    assert len(str(caught.value)) < 2 * QUOTE_LIMIT + 200 and "(200011 characters)" in str(caught.value)
    line = one_error_line(["lock", "--check", str(tmp_path)], "python.requirements[0]: invalid requirement")
    assert len(line) < LINE_LIMIT


def test_the_boundary_makes_any_message_one_bounded_line() -> None:
    assert one_line("a\n   ^\r\nb ") == "a ^ b"
    assert len(one_line("x" * 10 * LINE_LIMIT)) == LINE_LIMIT + 3


def test_lock_into_a_directory_is_refused_before_resolving(tmp_path: Path) -> None:
    (tmp_path / "mlenv.toml").write_text(SPEC + '[python]\nrequirements = ["pandas==2.0.3"]\n')
    (tmp_path / "dir").mkdir()
    for extra in ([], ["--check"]):
        one_error_line(["lock", *extra, "-l", str(tmp_path / "dir"), str(tmp_path)], "--lockfile")
    assert list((tmp_path / "dir").iterdir()) == []


def test_a_lock_not_utf8_names_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "mlenv.lock"
    lock.write_bytes(b"version = 1\nname = '\xff'\n")
    one_error_line(["export", "--format", "json", "--lock", str(lock)], f"{lock}: not UTF-8: byte 0xff")
    one_error_line(["export", "--format", "json", "--lock", str(tmp_path)], "--lock")


def test_a_lock_that_is_no_regular_file_is_refused_without_reading(tmp_path: Path) -> None:
    """A FIFO would block the read for ever and /dev/zero fill memory: refused by the option's name."""
    fifo = tmp_path / "pipe.lock"
    os.mkfifo(fifo)
    (tmp_path / "mlenv.toml").write_text(SPEC)
    cases = [
        (["export", "--format", "json", "--lock", "/dev/zero"], "--lock /dev/zero: is not a regular file"),
        (
            ["verify", "docker-archive:/nonexistent.tar", "--lock", str(fifo)],
            f"--lock {fifo}: is not a regular",
        ),
        (["check", "--host", "--lock", str(fifo)], f"--lock {fifo}: is not a regular file"),
        (["lock", "--check", "-l", str(fifo), str(tmp_path)], f"--lockfile {fifo}: is not a regular file"),
    ]
    for args, expected in cases:
        one_error_line(args, expected)


def test_a_requirements_include_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "r.txt").write_text("-r pipe.txt\n")
    (tmp_path / "mlenv.toml").write_text(SPEC + '[python]\nrequirements-files = ["r.txt"]\n')
    one_error_line(["lock", "--check", str(tmp_path)], "pipe.txt: not a regular file")
