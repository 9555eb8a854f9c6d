"""Python-lock time: mlenv vs `uv pip compile` vs `pip-compile` on the same ML set, warm caches.

Targets (issue 2): mlenv <= 1.2x uv, and pip-compile >= 5x mlenv.

Only the Python layer is timed: the spec gives [target] python/glibc and no base image. mlenv's Python
resolution is called the way `mlenv lock` calls it (`resolve_python(spec, target_from_spec(spec))`,
in-process, interpreter start-up excluded); `mlenv lock` end to end is timed too (a new process, which also
resolves the CUDA section), with its start-up (`mlenv --version`) shown alone. Every tool runs once to warm
its cache, then in rounds (each tool once per round); medians are shown. Each lock is fresh: uv's output
file and mlenv's lock are removed first, since both read them as preferences (uv is ~0.7 s faster on set A
with its previous output); the re-lock over each tool's own previous output is timed beside it.
mlenv's warm-up fills its cache of the wheels' Requires-Dist (by sha256, read by range requests of each
wheel's METADATA, the index serving no PEP 658 files), so the timed CLI runs read no metadata, as uv's
timed runs use its warm cache.

Anchors on this machine, and why torch is left out for pip-compile: the reachable PyPI serves no PEP 658
metadata, so pip-compile downloads every wheel to read its metadata, torch's 539 MB wheel and the multi-GB
nvidia-* wheels included (with --use-feature=fast-deps too: pip fetches the full wheels at the end of its
resolve). uv gets the metadata without the whole wheels (a run takes under a second and its cache stays
far below torch's size), so mlenv and uv lock the full set; the
pip-compile comparison is made on the same set without torch, by all three tools. pip-compile runs with
the machine's pip configuration disabled (it adds local extra indexes and a constraint file here), so all
three resolve from pypi.org alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from _common import load_note, median, print_table, report_ratio, run, timed

from mlenv.cli.lock import python_backend
from mlenv.resolve.lock import target_from_spec
from mlenv.resolve.python import resolve_python
from mlenv.spec import load_spec

ML_SET = ("torch", "transformers", "scikit-learn", "pandas", "lightgbm", "fastapi")
WITHOUT_TORCH = tuple(name for name in ML_SET if name != "torch")
INDEX = "https://pypi.org/simple"
# The host's interpreter and glibc are the target, so pip-compile (which resolves for the interpreter it
# runs in) answers the same question as uv and mlenv.
PYTHON = ".".join(str(part) for part in sys.version_info[:3])
GLIBC = platform.libc_ver()[1]
UV_PLATFORM = f"{platform.machine()}-manylinux_{GLIBC.replace('.', '_')}"  # what mlenv passes for glibc 2.36
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
Pins = frozenset[str]


def pins_of(requirements_text: str) -> Pins:
    return frozenset(
        f"{m[1].lower().replace('_', '-')}=={m[2]}"
        for line in requirements_text.splitlines()
        if (m := PIN.match(line))
    )


def write_project(directory: Path, requirements: tuple[str, ...]) -> Path:
    directory.mkdir(parents=True)
    listed = ", ".join(f'"{name}"' for name in requirements)
    (directory / "mlenv.toml").write_text(
        f'name = "bench-lock"\n\n[target]\npython = "{PYTHON}"\nglibc = "{GLIBC}"\n\n'
        f"[python]\nrequirements = [{listed}]\n"
    )
    (directory / "requirements.in").write_text("".join(f"{name}\n" for name in requirements))
    return directory


def mlenv_python(project: Path) -> tuple[float, Pins]:
    spec = load_spec(project)
    backend = python_backend(spec.python.resolver)
    seconds, locked = timed(lambda: resolve_python(spec, target_from_spec(spec), backend))
    return seconds, frozenset(f"{p.name}=={p.version}" for p in locked.packages)


def mlenv_cli(project: Path) -> tuple[float, Pins]:
    (project / "mlenv.lock").unlink(missing_ok=True)  # a fresh resolve every time, as uv's below
    seconds, _ = run([sys.executable, "-m", "mlenv", "lock", str(project)])
    return seconds, frozenset()


def mlenv_relock(project: Path) -> tuple[float, Pins]:
    """`mlenv lock` over its own lock, as a user re-runs it: the old pins are uv's preferences."""
    if not (project / "mlenv.lock").is_file():
        run([sys.executable, "-m", "mlenv", "lock", str(project)])
    seconds, _ = run([sys.executable, "-m", "mlenv", "lock", str(project)])
    return seconds, frozenset()


def uv(project: Path) -> tuple[float, Pins]:
    """A fresh `uv pip compile`: uv reads an existing output file as preferences, which makes it
    about 0.7 s faster on set A here, so the file is removed first, as mlenv's lock is."""
    (project / "uv.txt").unlink(missing_ok=True)
    return _uv(project)


def uv_relock(project: Path) -> tuple[float, Pins]:
    """`uv pip compile` over its own previous output, the counterpart of mlenv_relock."""
    if not (project / "uv.txt").is_file():
        _uv(project)
    return _uv(project)


def _uv(project: Path) -> tuple[float, Pins]:
    output = project / "uv.txt"
    # The flags mlenv passes, and the hashes a lock needs; uv's own config and UV_* variables left out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    seconds, _ = run(
        [
            "uv",
            "pip",
            "compile",
            str(project / "requirements.in"),
            "--generate-hashes",
            "--no-header",
            "--no-config",
            "--quiet",
            "--python-version",
            PYTHON,
            "--python-platform",
            UV_PLATFORM,
            "--index-url",
            INDEX,
            "--output-file",
            str(output),
        ],
        env=env,
    )
    return seconds, pins_of(output.read_text())


def pip_compile(project: Path) -> tuple[float, Pins]:
    output = project / "pip-compile.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    seconds, _ = run(
        [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--generate-hashes",
            "--no-header",
            "--quiet",
            "--no-config",
            "--index-url",
            INDEX,
            "--output-file",
            str(output),
            str(project / "requirements.in"),
        ],
        cwd=project,
        env=env,
    )
    pins = pins_of(output.read_text())
    if any(pin.startswith(("torch==", "nvidia-")) for pin in pins):
        print("  WARNING: pip-compile pinned torch/nvidia wheels: it downloaded them", file=sys.stderr)
    return seconds, pins


def measure(
    actions: dict[str, Callable[[Path], tuple[float, Pins]]], project: Path, repeats: int
) -> dict[str, tuple[float, Pins]]:
    """One warm-up run of each action, then `repeats` rounds that run each once, in turn: a change in the
    machine's load hits every tool alike. Returns each action's median seconds and its pins."""
    pins = {name: action(project)[1] for name, action in actions.items()}
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            times[name].append(action(project)[0])
    for name, runs in times.items():
        print(f"  {name}: {', '.join(f'{t:.2f}' for t in runs)} s", flush=True)
    return {name: (median(runs), pins[name]) for name, runs in times.items()}


def mlenv_start_up(_: Path) -> tuple[float, Pins]:
    """`mlenv --version`: what every command pays before it does anything."""
    seconds, _ = run([sys.executable, "-m", "mlenv", "--version"])
    return seconds, frozenset()


def compare_pins(label: str, ours: Pins, theirs: Pins) -> str:
    if ours == theirs:
        return f"same {len(ours)} pins as {label}"
    return (
        f"pins differ from {label}: {len(ours - theirs)} only in mlenv, {len(theirs - ours)} only in {label}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed rounds of uv and mlenv")
    parser.add_argument("--pip-compile-repeats", type=int, default=3, help="timed pip-compile runs (slow)")
    args = parser.parse_args()
    print(f"target: CPython {PYTHON}, {UV_PLATFORM}; {load_note()}")
    with tempfile.TemporaryDirectory(prefix="mlenv-bench-lock-") as work:
        full = write_project(Path(work, "full"), ML_SET)
        reduced = write_project(Path(work, "without-torch"), WITHOUT_TORCH)
        print(f"set A: {', '.join(ML_SET)}", flush=True)
        a = measure(
            {
                "uv": uv,
                "mlenv": mlenv_python,
                "cli": mlenv_cli,
                "start-up": mlenv_start_up,
                "uv re-lock": uv_relock,
                "cli re-lock": mlenv_relock,
            },
            full,
            args.repeats,
        )
        print(f"set B: {', '.join(WITHOUT_TORCH)}", flush=True)
        b = measure({"uv": uv, "mlenv": mlenv_python, "cli": mlenv_cli}, reduced, args.repeats)
        b |= measure({"pip-compile": pip_compile}, reduced, args.pip_compile_repeats)

    print_table(
        f"set A, {len(a['mlenv'][1])} pins (medians, warm caches)",
        [
            ("uv pip compile --generate-hashes", f"{a['uv'][0]:7.2f} s"),
            (
                "mlenv Python lock (resolve_python)",
                f"{a['mlenv'][0]:7.2f} s   {compare_pins('uv', a['mlenv'][1], a['uv'][1])}",
            ),
            ("mlenv lock, CLI end to end", f"{a['cli'][0]:7.2f} s"),
            ("  of which start-up (mlenv --version)", f"{a['start-up'][0]:7.2f} s"),
            ("uv pip compile over its previous output", f"{a['uv re-lock'][0]:7.2f} s"),
            ("mlenv lock over its previous lock", f"{a['cli re-lock'][0]:7.2f} s"),
        ],
    )
    print_table(
        f"set B (A without torch), {len(b['mlenv'][1])} pins",
        [
            ("uv pip compile --generate-hashes", f"{b['uv'][0]:7.2f} s"),
            (
                "mlenv Python lock (resolve_python)",
                f"{b['mlenv'][0]:7.2f} s   {compare_pins('pip-compile', b['mlenv'][1], b['pip-compile'][1])}",
            ),
            ("mlenv lock, CLI end to end", f"{b['cli'][0]:7.2f} s"),
            ("pip-compile --generate-hashes", f"{b['pip-compile'][0]:7.2f} s"),
        ],
    )
    print("\nratios")
    report_ratio("mlenv / uv (set A)", a["mlenv"][0] / a["uv"][0], at_most=1.2)
    report_ratio("mlenv CLI / uv (set A)", a["cli"][0] / a["uv"][0], at_most=1.2)
    report_ratio("mlenv CLI / uv, re-lock (set A)", a["cli re-lock"][0] / a["uv re-lock"][0], at_most=1.2)
    report_ratio("mlenv / uv (set B)", b["mlenv"][0] / b["uv"][0], at_most=1.2)
    report_ratio("pip-compile / mlenv (set B)", b["pip-compile"][0] / b["mlenv"][0], at_least=5)
    report_ratio("pip-compile / mlenv CLI (set B)", b["pip-compile"][0] / b["cli"][0], at_least=5)
    print(f"\n{load_note()} (after the run); other sessions share this machine, so times are noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
