"""`mlenv check`: a real Python environment against a real lock, through the CLI as a user runs it.

The lock is made by `mlenv lock` from real PyPI for the test base's interpreter and glibc (a [target]
of python 3.11.2 and glibc 2.36, what the bookworm base image resolves to, so no engine is needed);
the environments are real venvs, made by `python -m venv` or `uv venv` and filled by `uv pip install`
from real PyPI, the way a user makes theirs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock, write_lock
from mlenv.verify.envcheck import lock_platform
from mlenv.verify.wheelfiles import record_hash
from tests.helpers import CliResult, run_cli
from tests.lockdata import full_lock
from tools.localbase.cache import cache_dir, cache_lock
from tools.localbase.images import BaseImage

SPEC = """\
name = "check-env"
as-of = 2024-07-01T00:00:00Z

[target]
python = "3.11.2"
glibc = "2.36"

[python]
requirements = ["pandas==2.0.3", "numpy==1.26.4"]
"""


def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed; it makes the environments under test")
    return found


def make_venv(
    where: Path, requirements: list[str], *, seed_pip: bool = False, python: str | None = None
) -> Path:
    """A venv at `where` holding exactly `requirements` (files copied, never linked to uv's cache, so a
    test may edit them). `seed_pip`: made by `python -m venv`, which installs pip as a user's venv has."""
    interpreter = python or sys.executable
    if seed_pip:
        subprocess.run([interpreter, "-m", "venv", str(where)], check=True)
    else:
        subprocess.run([uv(), "venv", "--quiet", "--python", interpreter, str(where)], check=True)
    if requirements:
        # --only-binary: the index's wheels, never one uv built from an sdist and keeps in its cache.
        install = [
            uv(),
            "pip",
            "install",
            "--quiet",
            "--link-mode",
            "copy",
            "--no-deps",
            "--only-binary",
            ":all:",
        ]
        subprocess.run([*install, "--python", str(where / "bin" / "python"), *requirements], check=True)
    return where


def cached_venv(name: str, requirements: list[str], **options: object) -> Path:
    """A venv made once per set of requirements and kept (tests only read it)."""
    key = hashlib.sha256(json.dumps([name, requirements, sorted(options.items())]).encode()).hexdigest()[:16]
    where = cache_dir("check-venvs") / f"{name}-{key}"
    with cache_lock(f"check-venv-{key}"):
        if not (where / "done").exists():
            shutil.rmtree(where, ignore_errors=True)
            make_venv(where, requirements, **options)  # type: ignore[arg-type]
            (where / "done").write_text("")
    return where


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("check-env")
    (directory / "mlenv.toml").write_text(SPEC)
    result = run_cli("lock", str(directory))
    assert result.code == 0, result.stderr
    return directory


@pytest.fixture(scope="module")
def pins(project: Path) -> list[str]:
    """`name==version` of every pin of the lock (pandas, numpy and their dependencies)."""
    return sorted(f"{p.name}=={p.version}" for p in read_lock(project / "mlenv.lock").python.packages)


def with_pin(pins: list[str], name: str, version: str) -> list[str]:
    return [f"{name}=={version}" if p.split("==")[0] == name else p for p in pins]


def check(project: Path, *args: str, env: dict[str, str] | None = None) -> CliResult:
    environ = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} if env is None else env
    return run_cli("check", "--lock", str(project / "mlenv.lock"), *args, env=environ)


def one_error_line(result: CliResult) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlenv: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# ---------------------------------------------------------------------------- the Must show cases


@pytest.mark.network
def test_the_venv_that_matches_exits_0_and_says_what_it_left_out(project: Path, pins: list[str]) -> None:
    venv = cached_venv("match", pins, seed_pip=True)
    result = check(project, "--venv", str(venv))
    assert result.code == 0, result.stdout + result.stderr
    assert "  [ok] python-interpreter\n  [ok] python\n" in result.stdout
    assert result.stdout.endswith(f"venv {venv}: matches the lock\n")
    major_minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    here = f"{major_minor}.{sys.version_info.micro}"
    assert major_minor == "3.11", "the lock targets 3.11: run the tests under a Python 3.11"
    if here != "3.11.2":  # a patch apart from the lock's interpreter: a note, not a drift
        assert f"note: python {here} here, 3.11.2 in the lock: a patch release apart" in result.stdout
    # `python -m venv` seeded pip: named as left out by the tooling rule, not silently dropped.
    pip = next(line for line in result.stdout.splitlines() if line.startswith("  note: not compared: pip "))
    assert "installer tooling" in pip


@pytest.mark.network
def test_pandas_153_is_a_drift_naming_both_versions(project: Path, pins: list[str]) -> None:
    venv = cached_venv("pandas-1.5.3", with_pin(pins, "pandas", "1.5.3"))
    result = check(project, "--venv", str(venv))
    assert result.code == 1, result.stdout + result.stderr
    assert "  [DRIFT] python\n      python: pandas: version: expected 2.0.3, found 1.5.3\n" in result.stdout
    assert result.stdout.endswith(f"venv {venv}: 1 drift(s) from the lock\n")


@pytest.mark.network
def test_an_extra_package_is_reported(project: Path, pins: list[str]) -> None:
    venv = cached_venv("extra", [*pins, "idna==3.7"])
    result = check(project, "--venv", str(venv), "--format", "json")
    assert result.code == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "drift"
    assert [(d["layer"], d["kind"], d["subject"], d["actual"]) for d in report["drifts"]] == [
        ("python", "extra", "idna", "3.7")
    ]
    assert report["drifts"][0]["message"] == "python: idna: extra (found 3.7, not in the lock)"
    assert report["environment"]["kind"] == "venv" and report["environment"]["chosen-by"] == "--venv"


@pytest.mark.network
def test_another_minor_python_is_a_drift(project: Path, pins: list[str], tmp_path: Path) -> None:
    """The same lock with its interpreter moved to 3.12 (written by mlenv's own lock writer): the 3.11 venv
    that matched is now a drift of the interpreter, named with both versions."""
    lock = read_lock(project / "mlenv.lock")
    moved = dataclasses.replace(lock, target=dataclasses.replace(lock.target, python="3.12.1"))
    write_lock(moved, tmp_path / "mlenv.lock")
    venv = cached_venv("match", pins, seed_pip=True)
    result = check(tmp_path, "--venv", str(venv))
    assert result.code == 1, result.stdout + result.stderr
    here = ".".join(str(n) for n in sys.version_info[:3])
    assert (
        f"  [DRIFT] python-interpreter\n      python-interpreter: {venv}/bin/python: version: "
        f"expected 3.12.1, found {here}\n" in result.stdout
    )


@pytest.mark.network
@pytest.mark.docker
@pytest.mark.registry
def test_a_lock_made_against_the_test_base_image(
    base_image_python: BaseImage, pins: list[str], tmp_path: Path
) -> None:
    """The same spec with the bookworm python base instead of a [target]: the lock takes 3.11.2 and glibc
    2.36 from the image and pins the same versions, so the venv that matched still matches."""
    spec = SPEC.replace(
        '[target]\npython = "3.11.2"\nglibc = "2.36"\n', f'[base]\nimage = "{base_image_python.ref}"\n'
    )
    (tmp_path / "mlenv.toml").write_text(spec)
    locked = run_cli("lock", str(tmp_path))
    assert locked.code == 0, locked.stderr
    lock = read_lock(tmp_path / "mlenv.lock")
    assert (lock.target.source, lock.target.python, lock.target.glibc) == ("base-image", "3.11.2", "2.36")
    assert sorted(f"{p.name}=={p.version}" for p in lock.python.packages) == pins
    result = check(tmp_path, "--venv", str(cached_venv("match", pins, seed_pip=True)), "--files")
    assert result.code == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------- --files


def _edit(venv: Path, relative: str, *, fix_record: bool) -> None:
    """Append a line to an installed file; with `fix_record`, also rewrite its RECORD line to match."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    target = site / relative
    data = target.read_bytes() + b"\nimport os  # changed after install\n"
    target.write_bytes(data)
    if fix_record:
        record = next(site.glob("pandas-*.dist-info")) / "RECORD"
        lines = []
        for line in record.read_text().splitlines():
            if line.startswith(relative + ","):
                line = f"{relative},{record_hash(data)},{len(data)}"
            lines.append(line)
        record.write_text("\n".join(lines) + "\n")


@pytest.mark.network
def test_files_catches_a_modified_installed_file(project: Path, pins: list[str], tmp_path: Path) -> None:
    venv = make_venv(tmp_path / "venv", pins)
    clean = check(project, "--venv", str(venv), "--files")
    assert clean.code == 0, clean.stdout + clean.stderr
    assert "  [ok] python-files\n" in clean.stdout
    # Every wheel uv installed here is one the lock pins, so none was left to its own RECORD alone.
    assert "own RECORD only" not in clean.stdout

    _edit(venv, "pandas/__init__.py", fix_record=False)
    assert check(project, "--venv", str(venv)).code == 0  # versions alone still match: --files is the check
    result = check(project, "--venv", str(venv), "--files")
    assert result.code == 1, result.stdout + result.stderr
    assert (
        "python-files: pandas: pandas/__init__.py: modified (hash in RECORD; found different content)"
        in result.stdout
    )


@pytest.mark.network
def test_files_catches_a_file_changed_with_its_record_line(
    project: Path, pins: list[str], tmp_path: Path
) -> None:
    """The installed RECORD is the environment's own word; the locked wheel's bytes are the lock's."""
    venv = make_venv(tmp_path / "venv", pins)
    _edit(venv, "pandas/core/frame.py", fix_record=True)
    result = check(project, "--venv", str(venv), "--files", "--format", "json")
    assert result.code == 1, result.stdout + result.stderr
    drifts = json.loads(result.stdout)["drifts"]
    assert [(d["layer"], d["kind"], d["subject"], d["file"]) for d in drifts] == [
        ("python-files", "modified", "pandas", "pandas/core/frame.py")
    ]


@pytest.mark.network
def test_a_wheel_the_lock_does_not_pin_is_checked_against_its_own_record_only(
    project: Path, pins: list[str], tmp_path: Path
) -> None:
    """six installed from its sdist (a wheel built here, of the same py2.py3-none-any tags) is not the
    locked wheel: the note names it and says why, and its files are still held to its own RECORD."""
    venv = make_venv(tmp_path / "venv", [p for p in pins if not p.startswith("six==")])
    six = next(p for p in pins if p.startswith("six=="))
    # --no-cache: the wheel built here stays out of uv's cache, where other installs of six would find it.
    install = [uv(), "pip", "install", "--quiet", "--no-cache", "--link-mode", "copy", "--no-deps"]
    install += ["--no-binary", "six"]
    subprocess.run([*install, "--python", str(venv / "bin" / "python"), six], check=True)
    result = check(project, "--venv", str(venv), "--files")
    assert result.code == 0, result.stdout + result.stderr
    version = six.split("==")[1]
    assert (
        "own RECORD only (the installed wheel is not a file the lock pins): "
        f"six {version} (another build of the locked wheel's tags: its WHEEL file is not the locked wheel's)"
    ) in result.stdout

    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "six.py").write_bytes((site / "six.py").read_bytes() + b"# changed\n")
    changed = check(project, "--venv", str(venv), "--files")
    assert changed.code == 1
    assert "python-files: six: six.py: modified" in changed.stdout


# ---------------------------------------------------------------------------- which environment


@pytest.mark.network
def test_python_path_of_a_venv_is_that_venv_read_from_its_files(project: Path, pins: list[str]) -> None:
    venv = cached_venv("match", pins, seed_pip=True)
    result = check(project, "--python", str(venv / "bin" / "python"))
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"check venv {venv} (python ")
    assert "chosen by --python" in result.stdout.splitlines()[0]


@pytest.mark.network
def test_the_default_is_the_active_venv_then_python3_on_path(project: Path, pins: list[str]) -> None:
    venv = cached_venv("match", pins, seed_pip=True)
    bare = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    active = check(project, env={**bare, "VIRTUAL_ENV": str(venv)})
    assert active.code == 0, active.stdout + active.stderr
    assert "chosen by $VIRTUAL_ENV" in active.stdout.splitlines()[0]
    on_path = check(project, env={**bare, "PATH": f"{venv / 'bin'}:{bare.get('PATH', '')}"})
    assert on_path.code == 0, on_path.stdout + on_path.stderr
    assert on_path.stdout.startswith(f"check venv {venv} (python ")
    assert "chosen by python3 on PATH" in on_path.stdout.splitlines()[0]


@pytest.mark.network
def test_python_path_of_a_plain_interpreter_is_asked_for_its_sys_path(project: Path, tmp_path: Path) -> None:
    """An interpreter outside any venv: its own site-packages, where none of the pins is installed."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    result = check(project, "--python", str(base), "--format", "json")
    assert result.code in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["environment"]["kind"] == "interpreter"
    assert report["environment"]["interpreter"] == str(base)
    assert any(site.endswith("site-packages") for site in report["environment"]["sites"])


# ---------------------------------------------------------------------------- bad input: one line, exit 2


@pytest.fixture()
def small_lock(tmp_path: Path) -> Path:
    path = tmp_path / "mlenv.lock"
    write_lock(full_lock(), path)
    return path


def test_a_venv_that_is_not_there(small_lock: Path, tmp_path: Path) -> None:
    result = run_cli("check", "-l", str(small_lock), "--venv", str(tmp_path / "nothing"))
    assert result.code == 2
    assert one_error_line(result) == f"mlenv: error: --venv {tmp_path / 'nothing'}: no such directory"


def test_a_directory_that_is_not_a_venv(small_lock: Path, tmp_path: Path) -> None:
    result = run_cli("check", "-l", str(small_lock), "--venv", str(tmp_path))
    assert result.code == 2
    assert (
        one_error_line(result)
        == f"mlenv: error: --venv {tmp_path}: not a virtual environment (no pyvenv.cfg)"
    )


def test_an_active_venv_that_is_gone(small_lock: Path, tmp_path: Path) -> None:
    env = {**os.environ, "VIRTUAL_ENV": str(tmp_path / "gone")}
    result = run_cli("check", "-l", str(small_lock), env=env)
    assert result.code == 2
    assert one_error_line(result) == f"mlenv: error: $VIRTUAL_ENV {tmp_path / 'gone'}: no such directory"


def test_an_interpreter_that_is_not_one(small_lock: Path, tmp_path: Path) -> None:
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho not json\n")
    fake.chmod(0o755)
    result = run_cli("check", "-l", str(small_lock), "--python", str(fake))
    assert result.code == 2
    assert (
        one_error_line(result) == f"mlenv: error: --python {fake}: did not answer like a Python 3 interpreter"
    )


@pytest.mark.parametrize("content", [b"\xff\xfe not a lock", b"lock-version = 'x'\n", None])
def test_an_unreadable_lock(tmp_path: Path, content: bytes | None) -> None:
    lock = tmp_path / "mlenv.lock"
    if content is not None:
        lock.write_bytes(content)
    venv = tmp_path / "venv"
    venv.mkdir()
    result = run_cli("check", "-l", str(lock), "--venv", str(venv))
    assert result.code == 2
    assert str(lock) in one_error_line(result)


# ---------------------------------------------------------------------------- without the network


def test_a_venv_with_system_site_packages_reads_the_base_sites_too(small_lock: Path, tmp_path: Path) -> None:
    """Such a venv imports from the base interpreter's site-packages as well: its bin/python is asked."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True
    )
    result = run_cli("check", "-l", str(small_lock), "--venv", str(venv), "--format", "json")
    assert result.code == 1, result.stderr  # the small lock's pandas is installed in neither
    report = json.loads(result.stdout)
    sites = report["environment"]["sites"]
    assert (
        str(
            venv.resolve()
            / "lib"
            / f"python{sys.version_info.major}.{sys.version_info.minor}"
            / "site-packages"
        )
        in sites
    )
    assert any(not site.startswith(str(venv.resolve())) for site in sites)
    assert any("include-system-site-packages = true" in note for note in report["notes"])
    assert "python: pandas: missing (expected 2.0.3)" in [d["message"] for d in report["drifts"]]


def test_the_lock_platform_is_this_machines_else_named_in_a_note() -> None:
    lock = full_lock()  # linux/arm64 and linux/amd64
    assert lock_platform(lock, system="Linux", machine="aarch64") == ("linux/arm64", None)
    assert lock_platform(lock, system="Linux", machine="x86_64") == ("linux/amd64", None)
    chosen, note = lock_platform(lock, system="Darwin", machine="arm64")
    assert chosen == "linux/arm64"
    assert note == (
        "this machine is Darwin arm64, which the lock does not target: pins and their markers were judged "
        "for linux/arm64"
    )
