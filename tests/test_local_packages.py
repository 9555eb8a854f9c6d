"""Local directory and git requirements: built on the host at lock into pure wheels, recorded with their
source (a directory's tree hash, a git ref's full commit), and stale when the source moves.

The git repository is a local one (git+file://); setuptools for the builds comes from PyPI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlenv.errors import SpecError
from mlenv.lockfile import read_lock
from mlenv.model.lock import Lock, PythonPin
from mlenv.sources.cas import ContentStore
from mlenv.spec import load_spec
from tests.helpers import run_cli

TARGET = '[target]\npython = "3.11.2"\nglibc = "2.36"\n'
GIT_IDENTITY = ("-c", "user.name=mlenv tests", "-c", "user.email=tests@mlenv.invalid")


def make_package(root: Path, name: str, version: str, dependencies: list[str]) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(f"VERSION = {version!r}\n")
    listed = ", ".join(f'"{d}"' for d in dependencies)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\ndependencies = [{listed}]\n'
    )
    return root


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repository(root: Path) -> Path:
    """A git repository of `gitlib` 1.0 (tag v1, branch main), its commit depending on idna."""
    make_package(root, "gitlib", "1.0", ["idna==3.7"])
    git("init", "-q", "-b", "main", cwd=root)
    git("add", ".", cwd=root)
    git("commit", "-q", "-m", "gitlib 1.0", cwd=root)
    git("tag", "v1", cwd=root)
    return root


def write_spec(project: Path, requirements: list[str]) -> None:
    listed = ", ".join(f'"{r}"' for r in requirements)
    (project / "mlenv.toml").write_text(f'name = "local"\n{TARGET}[python]\nrequirements = [{listed}]\n')


def lock(project: Path, cache: Path, *args: str) -> tuple[int, str]:
    result = run_cli("lock", *args, str(project), env=os.environ | {"MLENV_CACHE": str(cache)})
    return result.code, result.stderr


def pin(lock: Lock, name: str) -> PythonPin:
    (found,) = [p for p in lock.python.packages if p.name == name]
    return found


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(project, repository, cache) locked once: ./libs/featurelib and gitlib @ git+file://...@v1."""
    root = tmp_path_factory.mktemp("local")
    project = root / "project"
    make_package(project / "libs" / "featurelib", "featurelib", "0.1.0", ["six==1.16.0"])
    repository = make_repository(root / "repository")
    write_spec(project, ["./libs/featurelib", f"gitlib @ git+file://{repository}@v1"])
    code, stderr = lock(project, root / "cache")
    assert code == 0, stderr
    return project, repository, root / "cache"


@pytest.mark.network
def test_a_directory_is_built_and_recorded_with_its_tree_hash(project: tuple[Path, Path, Path]) -> None:
    path, _, cache = project
    locked = read_lock(path / "mlenv.lock")
    featurelib = pin(locked, "featurelib")
    assert featurelib.requested and featurelib.version == "0.1.0" and featurelib.sdist is None
    assert featurelib.source is not None and featurelib.source.kind == "directory"
    assert featurelib.source.url == "libs/featurelib"
    assert featurelib.source.tree_sha256 == load_spec(path).python.sources[0].tree_sha256
    (wheel,) = featurelib.wheels
    assert wheel.name == "featurelib-0.1.0-py3-none-any.whl" and wheel.built_from == "directory"
    assert ContentStore(cache / "cas").cached(wheel.sha256) is not None
    # Its dependency was resolved from the index like any other, and is not "requested".
    assert not pin(locked, "six").requested and pin(locked, "six").wheels[0].hash_source == "index"
    # The build ran on a copy: the project's tree holds no build output.
    left = {p.name for p in (path / "libs" / "featurelib").rglob("*")}
    assert not {"build", "dist", "featurelib.egg-info"} & left


@pytest.mark.network
def test_a_changed_tree_makes_the_lock_stale_and_the_same_tree_fresh_again(
    project: tuple[Path, Path, Path],
) -> None:
    path, _, _ = project
    module = path / "libs" / "featurelib" / "featurelib" / "__init__.py"
    original = module.read_text()
    assert run_cli("lock", "--check", str(path)).code == 0
    try:
        module.write_text(original + "CHANGED = True\n")
        stale = run_cli("lock", "--check", str(path))
        assert stale.code == 1
        assert "python.sources (built on the host)" in stale.stderr and "./libs/featurelib" in stale.stderr
        (module.parent / "__pycache__").mkdir(exist_ok=True)
    finally:
        module.write_text(original)
    (module.parent / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")  # caches are not the tree
    assert run_cli("lock", "--check", str(path)).code == 0


@pytest.mark.network
def test_a_git_ref_is_pinned_to_its_full_commit(project: tuple[Path, Path, Path]) -> None:
    path, repository, cache = project
    gitlib = pin(read_lock(path / "mlenv.lock"), "gitlib")
    assert gitlib.source is not None and gitlib.source.kind == "vcs"
    assert gitlib.source.url == f"file://{repository}" and gitlib.source.requested_revision == "v1"
    assert gitlib.source.commit_id == git("rev-parse", "v1^{commit}", cwd=repository)
    assert gitlib.wheels[0].built_from == "vcs" and gitlib.wheels[0].name == "gitlib-1.0-py3-none-any.whl"
    assert pin(read_lock(path / "mlenv.lock"), "idna").version == "3.7"
    text = (path / "mlenv.lock").read_text()
    assert f'commit-id = "{gitlib.source.commit_id}"' in text


@pytest.mark.network
def test_a_branch_that_moved_locks_its_new_commit(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repository")
    project = tmp_path / "project"
    project.mkdir()
    write_spec(project, [f"git+file://{repository}@main#egg=gitlib"])
    assert lock(project, tmp_path / "cache")[0] == 0
    first = pin(read_lock(project / "mlenv.lock"), "gitlib")
    (repository / "pyproject.toml").write_text(
        (repository / "pyproject.toml").read_text().replace('version = "1.0"', 'version = "1.1"')
    )
    git("commit", "-q", "-am", "gitlib 1.1", cwd=repository)
    code, stderr = lock(project, tmp_path / "cache")
    assert code == 0, stderr
    moved = pin(read_lock(project / "mlenv.lock"), "gitlib")
    assert moved.source is not None and first.source is not None
    assert moved.source.commit_id == git("rev-parse", "main", cwd=repository) != first.source.commit_id
    assert moved.version == "1.1" and moved.wheels[0].sha256 != first.wheels[0].sha256


def test_an_unknown_ref_is_refused_at_lock_in_one_line(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repository")
    project = tmp_path / "project"
    project.mkdir()
    write_spec(project, [f"gitlib @ git+file://{repository}@no-such-tag"])
    code, stderr = lock(project, tmp_path / "cache")
    assert code == 2
    assert stderr.splitlines() == [
        f"mlenv: error: git+file://{repository}@no-such-tag: the remote has no branch or tag 'no-such-tag' "
        "(hint: name a branch, a tag or a full 40-hex commit after the last @)"
    ]
    assert "Traceback" not in stderr and not (project / "mlenv.lock").exists()


@pytest.mark.network
def test_a_commit_that_builds_another_package_is_refused(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repository")
    project = tmp_path / "project"
    project.mkdir()
    write_spec(project, [f"otherlib @ git+file://{repository}@v1"])
    code, stderr = lock(project, tmp_path / "cache")
    assert code == 2 and "builds gitlib, not otherlib" in stderr.splitlines()[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "-e ./libs/featurelib",
            "an editable requirement (-e ./libs/featurelib): an image holds an installed",
        ),
        ("../outside", "'../outside' is outside the project directory"),
        ("./libs/missing", "'./libs/missing' is not a directory with a pyproject.toml or setup.py"),
        ("demo @ git+https://user:secret@example.invalid/demo@v1", "without credentials in the URL"),
        (
            "demo @ hg+https://example.invalid/demo",
            "is not supported yet: mlenv pins each file by the sha256",
        ),
    ],
)
def test_what_cannot_be_built_is_refused_with_the_line(tmp_path: Path, line: str, expected: str) -> None:
    project = tmp_path / "project"
    make_package(project / "libs" / "featurelib", "featurelib", "0.1.0", [])
    (project / "requirements.txt").write_text(f"six==1.16.0\n{line}\n")
    (project / "mlenv.toml").write_text(
        f'name = "x"\n{TARGET}[python]\nrequirements-files = ["requirements.txt"]\n'
    )
    with pytest.raises(SpecError) as caught:
        load_spec(project)
    assert "requirements.txt:2: " in str(caught.value) and expected in str(caught.value)
    assert "secret" not in str(caught.value)


def test_a_requirements_file_path_is_read_against_its_own_directory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_package(project / "libs" / "featurelib", "featurelib", "0.1.0", [])
    (project / "reqs").mkdir()
    (project / "reqs" / "base.txt").write_text("../libs/featurelib\n")
    (project / "mlenv.toml").write_text(
        f'name = "x"\n{TARGET}[python]\nrequirements-files = ["reqs/base.txt"]\n'
    )
    (source,) = load_spec(project).python.sources
    assert source.kind == "directory" and source.location == "libs/featurelib"
    assert source.tree_sha256 is not None and len(source.tree_sha256) == 64


@pytest.mark.network
def test_a_directory_and_a_commit_build_the_same_wheel_bytes_in_an_empty_store(
    project: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from mlenv.sources.python.hostbuild import HostBuilder

    path, _, _ = project
    locked = read_lock(path / "mlenv.lock")
    builder = HostBuilder(
        ContentStore(tmp_path / "empty"),
        project_dir=path,
        python_version=locked.target.python,
        index_url=locked.python.index_url,
    )
    spec = load_spec(path)
    for requirement in spec.python.sources:
        built, source = builder.from_source(requirement)
        assert built.file == pin(locked, built.name).wheels[0]
        assert source == pin(locked, built.name).source


@pytest.mark.network
def test_a_package_built_from_a_directory_and_required_from_the_index_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_package(project / "libs" / "six", "six", "9.0", [])
    write_spec(project, ["six==1.16.0", "./libs/six"])
    code, stderr = lock(project, tmp_path / "cache")
    assert code == 2
    assert stderr.splitlines() == [
        "mlenv: error: six is required twice: built from ./libs/six and an index requirement "
        "(hint: keep one of them)"
    ]


def test_a_git_dependency_of_a_pyproject_is_built_at_lock(tmp_path: Path) -> None:
    from mlenv.model.spec import SourceRequirement

    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\n'
        'dependencies = ["six==1.16.0", "gitlib @ git+https://example.invalid/gitlib.git@v1.2"]\n'
        f"[tool.mlenv]\n{TARGET.replace('[target]', '[tool.mlenv.target]')}"
    )
    python = load_spec(tmp_path).python
    assert python.requirements == ("six==1.16.0",)
    assert python.sources == (
        SourceRequirement(
            kind="vcs", location="https://example.invalid/gitlib.git", name="gitlib", revision="v1.2"
        ),
    )


@pytest.mark.network
def test_a_built_wheel_for_another_python_is_refused_at_lock(tmp_path: Path) -> None:
    project = tmp_path / "project"
    package = make_package(project / "libs" / "oldlib", "oldlib", "1.0", [])
    (package / "setup.cfg").write_text("[bdist_wheel]\npython_tag = py2\n")
    write_spec(project, ["./libs/oldlib"])
    code, stderr = lock(project, tmp_path / "cache")
    assert code == 2
    assert stderr.splitlines() == [
        "mlenv: error: oldlib 1.0: the wheel built on the host, oldlib-1.0-py2-none-any.whl, "
        "does not install on CPython 3.11.2 linux/amd64"
    ]
