"""Requirements as the ecosystem writes them: a uv-style pyproject (dependencies, extras, PEP 735 groups),
pip-compile --generate-hashes output, `-c` constraints; a wrong hash refused; a stale lock naming the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlenv.errors import SpecError
from mlenv.lockfile import read_lock
from mlenv.model.target import Target
from mlenv.resolve.python import requested_names
from mlenv.spec import load_spec, spec_hash
from tests.helpers import run_cli

TARGET = '[target]\npython = "3.11.2"\nglibc = "2.36"\n'

PYPROJECT = """\
[project]
name = "Fraud_Detector"
version = "0.1.0"
dependencies = ["six==1.16.0", "iniconfig==2.0.0; python_version >= '3.8'"]

[project.optional-dependencies]
serve = ["idna==3.7"]
all = ["fraud-detector[serve]", "certifi==2024.2.2"]
unused = ["urllib3==2.2.1"]

[dependency-groups]
test = ["pluggy==1.4.0", {include-group = "lint"}]
lint = ["tomli==2.0.1"]
docs = ["charset-normalizer==3.3.2"]

[tool.mlenv]
[tool.mlenv.target]
python = "3.11.2"
glibc = "2.36"

[tool.mlenv.python]
extras = ["all"]
groups = ["test"]
"""


def spec_env() -> dict[str, str]:
    """pip and pip-compile as a user on a plain machine runs them: real PyPI, no machine-wide pip.conf."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def pip_compile(project: Path, source: str, *args: str) -> str:
    """Real `pip-compile --generate-hashes` output for `source` (a requirements.in in `project`)."""
    (project / "requirements.in").write_text(source)
    command = [sys.executable, "-m", "piptools", "compile", "--generate-hashes", "--strip-extras", "-q"]
    command += ["--no-config", "--index-url", "https://pypi.org/simple", *args]
    command += ["--output-file", "requirements.txt", "requirements.in"]
    subprocess.run(command, cwd=project, env=spec_env(), check=True, capture_output=True)
    return (project / "requirements.txt").read_text()


def hashes_of(compiled: str) -> dict[str, set[str]]:
    """{package: its --hash digests} of pip-compile output."""
    found: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=[a-z0-9])", compiled):
        name = re.match(r"([a-z0-9._-]+)==", block)
        if name:
            found[name[1]] = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return found


def lock(project: Path, *args: str) -> tuple[int, str]:
    result = run_cli("lock", *args, str(project))
    return result.code, result.stderr + result.stdout


def test_pyproject_dependencies_extras_and_groups_are_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    spec = load_spec(tmp_path)
    assert spec.name == "fraud-detector"  # [project].name, normalised; never repeated in [tool.mlenv]
    assert spec.python.requirements == (
        "certifi==2024.2.2",  # extra `all`
        "idna==3.7",  # extra `serve`, through all's `fraud-detector[serve]`
        'iniconfig==2.0.0; python_version >= "3.8"',  # [project].dependencies keep their markers
        "pluggy==1.4.0",  # group `test`
        "six==1.16.0",
        "tomli==2.0.1",  # group `lint`, included by `test`
    )
    # Choosing another group changes what is locked, so the hash; an unknown one is named.
    other = PYPROJECT.replace('groups = ["test"]', 'groups = ["docs"]')
    (tmp_path / "pyproject.toml").write_text(other)
    assert "charset-normalizer==3.3.2" in load_spec(tmp_path).python.requirements
    assert spec_hash(load_spec(tmp_path)) != spec_hash(spec)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.replace('extras = ["all"]', 'extras = ["gpu"]'))
    with pytest.raises(
        SpecError, match=r"python.extras\[0\]: no extra 'gpu' .*\(it has: all, serve, unused\)"
    ):
        load_spec(tmp_path)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.replace('groups = ["test"]', 'groups = ["tset"]'))
    with pytest.raises(SpecError, match=r"python.groups\[0\]: no group 'tset' in \[dependency-groups\]"):
        load_spec(tmp_path)
    dynamic = PYPROJECT.replace('version = "0.1.0"', 'version = "0.1.0"\ndynamic = ["dependencies"]')
    (tmp_path / "pyproject.toml").write_text(dynamic)
    with pytest.raises(SpecError, match="project.dynamic: dependencies are dynamic"):
        load_spec(tmp_path)


def test_mlenv_toml_reads_a_pyproject_as_a_requirements_file(tmp_path: Path) -> None:
    pyproject = PYPROJECT.split("[tool.mlenv]")[0]
    (tmp_path / "pyproject.toml").write_text(pyproject)
    (tmp_path / "mlenv.toml").write_text(
        f'name = "svc"\n{TARGET}[python]\nrequirements-files = ["pyproject.toml"]\nextras = ["serve"]\n'
    )
    spec = load_spec(tmp_path)
    assert spec.name == "svc"
    assert "idna==3.7" in spec.python.requirements and "certifi==2024.2.2" not in spec.python.requirements
    (tmp_path / "mlenv.toml").write_text(f'name = "svc"\n{TARGET}[python]\ngroups = ["test"]\n')
    with pytest.raises(SpecError, match=r"python.groups: chooses from a pyproject.toml, but none is read"):
        load_spec(tmp_path)


def test_two_specs_are_refused_naming_both_and_init_does_not_add_one(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    result = run_cli("init", str(tmp_path))
    assert result.code == 2 and "tool.mlenv: already holds this project's spec" in result.stderr
    assert not (tmp_path / "mlenv.toml").exists()
    (tmp_path / "mlenv.toml").write_text(f'name = "other"\n{TARGET}')
    for location in (tmp_path, tmp_path / "mlenv.toml", tmp_path / "pyproject.toml"):
        with pytest.raises(SpecError) as caught:
            load_spec(location)
        message = str(caught.value)
        assert (
            f"two specs: {tmp_path / 'mlenv.toml'} and [tool.mlenv] in {tmp_path / 'pyproject.toml'}"
            in message
        )


def test_init_from_a_pyproject_and_from_pip_compile_output(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.split("[tool.mlenv]")[0])
    result = run_cli("init", str(tmp_path), "--from", str(tmp_path / "pyproject.toml"))
    assert result.code == 0, result.stderr
    assert "six==1.16.0" in load_spec(tmp_path).python.requirements
    # Without --from, a pyproject with [project].dependencies is where the spec takes them from.
    (tmp_path / "mlenv.toml").unlink()
    assert run_cli("init", str(tmp_path)).code == 0
    assert 'requirements-files = ["pyproject.toml"]' in (tmp_path / "mlenv.toml").read_text()
    assert "six==1.16.0" in load_spec(tmp_path).python.requirements
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    (hashed / "constraints.txt").write_text("urllib3<2\n")
    (hashed / "requirements.txt").write_text(
        "# via pip-compile\n-c constraints.txt\n"
        "idna==3.7 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "    # via requests\n"
    )
    result = run_cli("init", str(hashed), "--from", str(hashed / "requirements.txt"))
    assert result.code == 0, result.stderr
    python = load_spec(hashed).python
    assert python.requirements == ("idna==3.7",) and python.constraints == ("urllib3<2",)
    assert python.hashes == (("idna", ("a" * 64, "b" * 64)),)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # A git requirement is built at lock now (tests/test_local_packages.py); -e is not, by rule.
        ("-e ./pkg", "an editable requirement (-e ./pkg): an image holds an installed copy"),
        (
            "./wheels/demo-1.0-py3-none-any.whl",
            "a local path requirement './wheels/demo-1.0-py3-none-any.whl'",
        ),
        (
            "--find-links /opt/wheels",
            "option '--find-links' is not supported: mlenv locks files from indexes",
        ),
        (
            "--extra-index-url https://example.invalid/simple",
            "--extra-index-url 'https://example.invalid/simple' is not the spec's [python] extra-index-urls",
        ),
        ("idna==3.7 --hash=md5:abcd", "--hash=md5: only sha256 hashes are checked"),
    ],
)
def test_what_is_not_read_yet_is_refused_with_the_line(tmp_path: Path, line: str, expected: str) -> None:
    # pip-compile writes the index it used; the spec's own index is read without complaint.
    (tmp_path / "requirements.txt").write_text(f"--index-url https://pypi.org/simple/\nsix==1.16.0\n{line}\n")
    (tmp_path / "mlenv.toml").write_text(
        f'name = "x"\n{TARGET}[python]\nrequirements-files = ["requirements.txt"]\n'
    )
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path)
    assert f"requirements.txt:3: {expected}" in str(caught.value)


def test_a_marker_that_excludes_the_target_asks_for_nothing(tmp_path: Path) -> None:
    (tmp_path / "mlenv.toml").write_text(
        f'name = "x"\n{TARGET}[python]\n'
        'requirements = ["six==1.16.0", "pywin32==306; sys_platform == \'win32\'"]\n'
    )
    python = load_spec(tmp_path).python
    target = Target(platforms=("linux/amd64", "linux/arm64"), python="3.11.2", glibc="2.36")
    assert requested_names(python) == {"six", "pywin32"}
    assert requested_names(python, target) == {"six"}


@pytest.mark.network
def test_uv_style_pyproject_locks_its_extras_and_groups(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    code, output = lock(tmp_path)
    assert code == 0, output
    locked = read_lock(tmp_path / "mlenv.lock")
    requested = {p.name: p.version for p in locked.python.packages if p.requested}
    assert requested == {
        "certifi": "2024.2.2",
        "idna": "3.7",
        "iniconfig": "2.0.0",
        "pluggy": "1.4.0",
        "six": "1.16.0",
        "tomli": "2.0.1",
    }
    assert locked.name == "fraud-detector"
    assert run_cli("lock", "--check", str(tmp_path)).code == 0
    # A changed pin in a chosen group is named in the file it is in.
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.replace("pluggy==1.4.0", "pluggy==1.5.0"))
    check = run_cli("lock", "--check", str(tmp_path))
    assert check.code == 1
    assert "pyproject.toml changed since the lock was made: pluggy==1.5.0 (the lock has pluggy 1.4.0)" in (
        check.stderr
    )


@pytest.mark.network
def test_pip_compile_hashed_output_with_a_constraint_locks_the_pinned_files(tmp_path: Path) -> None:
    (tmp_path / "constraints.txt").write_text("urllib3<2\n")
    compiled = pip_compile(tmp_path, "requests==2.31.0\n", "-c", "constraints.txt")
    assert "--hash=sha256:" in compiled and "\\\n" in compiled and "# via" in compiled
    (tmp_path / "mlenv.toml").write_text(
        f'name = "x"\n{TARGET}[python]\nrequirements-files = ["requirements.txt"]\n'
    )
    code, output = lock(tmp_path)
    assert code == 0, output
    locked = read_lock(tmp_path / "mlenv.lock")
    pinned = hashes_of(compiled)
    versions = {p.name: p.version for p in locked.python.packages}
    assert set(versions) == set(pinned) and versions["urllib3"].startswith("1.")
    for package in locked.python.packages:
        files = [*package.wheels, *([package.sdist] if package.sdist else [])]
        assert files and all(f.sha256 in pinned[package.name] for f in files), package.name

    # The staleness reason names the file that changed, not mlenv.toml.
    (tmp_path / "requirements.txt").write_text(compiled.replace("requests==2.31.0", "requests==2.32.0"))
    check = run_cli("lock", "--check", str(tmp_path))
    assert check.code == 1
    assert "requirements.txt changed since the lock was made: requests==2.32.0" in check.stderr + check.stdout
    assert "mlenv.toml changed" not in check.stderr + check.stdout


@pytest.mark.network
def test_a_constraint_bounds_a_version_without_asking_for_the_package(tmp_path: Path) -> None:
    (tmp_path / "constraints.txt").write_text("urllib3<2\n")
    (tmp_path / "requirements.txt").write_text("-c constraints.txt\nrequests==2.31.0\n")
    (tmp_path / "mlenv.toml").write_text(
        f'name = "x"\n{TARGET}[python]\nrequirements-files = ["requirements.txt"]\n'
    )
    code, output = lock(tmp_path)
    assert code == 0, output
    packages = {p.name: p for p in read_lock(tmp_path / "mlenv.lock").python.packages}
    assert packages["urllib3"].version.startswith("1.") and not packages["urllib3"].requested
    assert packages["requests"].requested
    (tmp_path / "constraints.txt").write_text("urllib3>=2\n")
    check = run_cli("lock", "--check", str(tmp_path))
    assert check.code == 1 and "constraints.txt changed since the lock was made: urllib3>=2" in check.stderr


@pytest.mark.network
def test_a_hash_the_index_does_not_serve_is_refused_naming_the_package(tmp_path: Path) -> None:
    compiled = pip_compile(tmp_path, "idna==3.7\n")
    digest = sorted(hashes_of(compiled)["idna"])[0]
    (tmp_path / "requirements.txt").write_text(compiled.replace(digest, "0" * 64))
    (tmp_path / "mlenv.toml").write_text(
        f'name = "x"\n{TARGET}[python]\nrequirements-files = ["requirements.txt"]\n'
    )
    code, output = lock(tmp_path)
    assert code == 2 and not (tmp_path / "mlenv.lock").exists()
    assert f"idna==3.7: --hash=sha256:{'0' * 64} in {tmp_path / 'requirements.txt'} is not a file" in output
