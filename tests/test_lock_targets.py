"""Python pins are for the TARGET: checked against pip's own resolver, for foreign targets, and bad input.

The oracle is pip itself: `pip install --dry-run --report` asked for the target's Python and every
manylinux platform tag the target's glibc accepts (pip matches platform tags exactly, so each level
is named) must select the same name==version set as the lock.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from mlenv.lockfile import read_lock
from tests.helpers import run_cli
from tools.localbase.project import EXAMPLES, copy_example

pytestmark = pytest.mark.network

GLIBC_MINOR = 36  # the target: CPython 3.11, x86_64, glibc 2.36 (Debian bookworm)


def manylinux_tags(glibc_minor: int, machine: str) -> list[str]:
    """Every manylinux tag a glibc 2.<minor> system accepts, legacy aliases included (PEP 600)."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 4, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    return tags + [f"{alias}_{machine}" for alias, minor in legacy.items() if minor <= glibc_minor]


def project_without_cutoff(tmp_path: Path, **changes: object) -> Path:
    """The example without `as-of`: pip has no upload cut-off, so both resolve against today's index."""
    project = copy_example("fraud-detector", tmp_path, base=None, apt=None, as_of=None, **changes)
    (project / "models").mkdir(exist_ok=True)
    (project / "models" / "model.joblib").write_bytes(pickle.dumps("stand-in"))
    return project


def test_pins_equal_what_pip_selects_for_the_target(tmp_path: Path) -> None:
    project = project_without_cutoff(tmp_path, target={"python": "3.11.2", "glibc": f"2.{GLIBC_MINOR}"})
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    locked = {(p.name, p.version) for p in read_lock(project / "mlenv.lock").python.packages}

    report = tmp_path / "pip-report.json"
    platforms = [arg for tag in manylinux_tags(GLIBC_MINOR, "x86_64") for arg in ("--platform", tag)]
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--only-binary=:all:",
            *platforms,
            "--disable-pip-version-check",
            "--target",
            str(tmp_path / "never-written"),
            "-r",
            str(EXAMPLES / "fraud-detector" / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    selected = {
        (canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"])
        for item in json.loads(report.read_text())["install"]
    }
    assert len(selected) >= 15
    assert locked == selected, f"only in the lock: {locked - selected}; only pip: {selected - locked}"


def test_a_foreign_target_gets_its_own_wheels(tmp_path: Path) -> None:
    # This host is CPython 3.11 on x86_64; the target is CPython 3.12 on aarch64.
    project = tmp_path / "foreign"
    project.mkdir()
    (project / "mlenv.toml").write_text(
        'name = "foreign"\n[target]\npython = "3.12.4"\nglibc = "2.36"\nplatforms = ["linux/arm64"]\n'
        '[python]\nrequirements = ["scikit-learn==1.4.2", "pandas==2.2.2", "numpy==1.26.4", '
        '"lightgbm==4.3.0"]\n'
    )
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    lock = read_lock(project / "mlenv.lock")
    assert lock.target.platforms == ("linux/arm64",) and lock.python.requires_python == "==3.12.*"
    extensions = {"numpy", "pandas", "scikit-learn", "scipy"}  # CPython extension modules: cp312 ABI
    for pin in lock.python.packages:
        assert pin.wheels, f"{pin.name} has no wheel"
        for wheel in pin.wheels:
            tags = parse_wheel_filename(wheel.name)[3]
            if pin.name in extensions:
                assert {t.interpreter for t in tags} == {"cp312"}, wheel.name
            assert all(t.platform == "any" or t.platform.endswith("_aarch64") for t in tags), wheel.name
    pins = {p.name: p for p in lock.python.packages}
    assert extensions <= set(pins) and all(not w.name.endswith("-any.whl") for w in pins["lightgbm"].wheels)


@pytest.mark.parametrize(
    ("requirement", "index", "expected"),
    [
        ("surely-no-such-package-mlenv-test==1.0", None, "surely-no-such-package-mlenv-test"),
        ("pandas==0.0.0.1", None, "pandas"),
        ("pandas==2.0.3", "http://127.0.0.1:9/simple", "127.0.0.1:9"),
    ],
)
def test_resolution_errors_are_one_line_and_write_nothing(
    tmp_path: Path, requirement: str, index: str | None, expected: str
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    index_line = f'index-url = "{index}"\n' if index else ""
    (project / "mlenv.toml").write_text(
        f'name = "p"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
        f'[python]\n{index_line}requirements = ["{requirement}"]\n'
    )
    result = run_cli("lock", str(project))
    assert result.code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert expected in result.stderr
    assert sorted(p.name for p in project.iterdir()) == ["mlenv.toml"]


def test_check_on_a_malformed_lock_is_an_error(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "mlenv.toml").write_text(
        'name = "p"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n[python]\nrequirements = ["six==1.16.0"]\n'
    )
    broken = b"lock-version = 1\nname = [\n"
    (project / "mlenv.lock").write_bytes(broken)
    result = run_cli("lock", "--check", str(project))
    assert result.code == 2 and result.stderr.count("\n") == 1 and "mlenv.lock" in result.stderr
    assert (project / "mlenv.lock").read_bytes() == broken
