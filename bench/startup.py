"""Start-up: `mlenv --version` and `mlenv lock --check` beside `python -c pass` and `uv --version`.

Targets (issue 19): `mlenv --version` <= 4x `python -c pass`, `mlenv lock --check` <= 8x `python -c pass`.
`uv --version` is shown for scale (a compiled binary: the floor a CLI can reach). Every command is a new
process run as a user runs it, `python -m mlenv` with the same interpreter as the anchor, so the ratios
measure mlenv's own imports and work, not a launcher shim. The four commands alternate within each round,
so a change in the machine's load hits all of them; medians are shown.

`lock --check` reads a real lock: a Python-only project (target from the spec, the fraud detector's
requirements and a web stack) locked once with PyPI and kept between runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from _common import bench_dir, load_note, median, print_table, report_ratio, run
from uv import find_uv_bin

SPEC = """\
name = "startup"

[target]
python = "3.11.2"
glibc = "2.36"

[python]
requirements = [
    "scikit-learn==1.5.2", "pandas==2.2.3", "joblib==1.4.2", "fastapi==0.115.0", "uvicorn==0.30.6",
]
"""


def locked_project() -> Path:
    """The project `lock --check` reads, locked on first use (a changed SPEC is locked again)."""
    project = bench_dir("startup")
    spec = project / "mlenv.toml"
    if not spec.is_file() or spec.read_text() != SPEC or not (project / "mlenv.lock").is_file():
        spec.write_text(SPEC)
        run([sys.executable, "-m", "mlenv", "lock", str(project)])
    return project


def seconds(command: Sequence[str]) -> float:
    return run(command, check=False)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats
    project = locked_project()
    check = run([sys.executable, "-m", "mlenv", "lock", "--check", str(project)], check=False)[1]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "uv --version": [find_uv_bin(), "--version"],
        "mlenv --version": [sys.executable, "-m", "mlenv", "--version"],
        "mlenv lock --check": [sys.executable, "-m", "mlenv", "lock", "--check", str(project)],
    }
    for command in commands.values():  # once each to warm the page cache and the bytecode caches
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            times[name].append(seconds(command))
    medians = {name: median(values) for name, values in times.items()}
    anchor = medians["python -c pass"]
    print_table(
        f"start-up, median of {repeats} ({load_note()})",
        [(name, f"{value * 1000:7.1f} ms  {value / anchor:5.2f}x python") for name, value in medians.items()]
        + [("lock --check said", f"exit {check.returncode}: {(check.stdout + check.stderr).strip()[:80]}")],
    )
    print("\nratios")
    report_ratio("mlenv --version / python -c pass", medians["mlenv --version"] / anchor, at_most=4)
    report_ratio("mlenv lock --check / python -c pass", medians["mlenv lock --check"] / anchor, at_most=8)
    print(f"  (uv --version / python -c pass: {medians['uv --version'] / anchor:.2f})")


if __name__ == "__main__":
    main()
