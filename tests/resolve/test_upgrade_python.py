"""Re-locks move only what they must, against real PyPI, through `mlenv lock` as a user runs it.

Moves are made observable by locking first at an old as-of (2023-01-01) and then removing it: every
package here has had many releases since, so a fresh resolve moves most pins, while a re-lock that
prefers the old lock moves none; -P moves one; --upgrade moves many; as-of-exceptions let one past."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from tests.helpers import run_cli

pytestmark = pytest.mark.network

OLD = "as-of = 2023-01-01T00:00:00Z"
SPEC = """\
name = "upgrades"
{as_of}

[target]
python = "{python}"
glibc = "2.36"

[python]
{python_table}
requirements = [{requirements}]
"""
REQUIREMENTS = ["requests", "packaging", "click"]


def write_spec(
    project: Path,
    requirements: list[str],
    *,
    as_of: str = OLD,
    python: str = "3.11.2",
    python_table: str = "",
) -> None:
    quoted = ", ".join(f'"{r}"' for r in requirements)
    project.joinpath("mlenv.toml").write_text(
        SPEC.format(as_of=as_of, python=python, python_table=python_table, requirements=quoted)
    )


def lock(project: Path, *flags: str) -> str:
    result = run_cli("lock", str(project), *flags)
    assert result.code == 0, result.stderr
    return result.stderr


def blocks(project: Path) -> dict[str, str]:
    """name -> the exact text of its [[python.packages]] table in mlenv.lock (wheels and hashes included)."""
    text = project.joinpath("mlenv.lock").read_text()
    found = {}
    for chunk in re.split(r"(?m)^(?=\[)", text):
        if chunk.startswith("[[python.packages]]"):
            name = re.search(r'(?m)^name = "([^"]+)"$', chunk)
            assert name is not None
            found[name.group(1)] = chunk
    return found


def versions(project: Path) -> dict[str, str]:
    return {p.name: p.version for p in read_lock(project / "mlenv.lock").python.packages}


def moved(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Packages whose block changed or appeared."""
    return {name for name, block in after.items() if before.get(name) != block}


@pytest.fixture(scope="module")
def old_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Locked at as-of 2023-01-01, then as-of removed from the spec (the lock is now stale)."""
    project = tmp_path_factory.mktemp("upgrade")
    write_spec(project, REQUIREMENTS)
    lock(project)
    write_spec(project, REQUIREMENTS, as_of="")
    return project


@pytest.fixture
def project(old_project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(old_project, tmp_path / "project"))


@pytest.fixture(scope="module")
def fresh(old_project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the relaxed spec resolves to with no old lock: the newest of everything."""
    project = tmp_path_factory.mktemp("fresh")
    shutil.copy(old_project / "mlenv.toml", project / "mlenv.toml")
    lock(project)
    return versions(project)


def test_relaxing_as_of_moves_nothing_that_still_satisfies(project: Path, fresh: dict[str, str]) -> None:
    before = blocks(project)
    old = versions(project)
    assert len(old) >= 7
    lock(project)
    assert blocks(project) == before  # every pin byte-identical, wheels and hashes included
    # ...where a resolve from scratch moves most of them: the test could fail.
    assert len({n for n in old if fresh.get(n) != old[n]}) >= 5, (old, fresh)
    assert run_cli("lock", "--check", str(project)).code == 0


def test_adding_a_requirement_moves_only_it_and_its_new_dependencies(project: Path) -> None:
    lock(project)  # the relaxed spec's lock (its spec-hash), pins as they were
    before, text = blocks(project), project.joinpath("mlenv.lock").read_text()
    write_spec(project, [*REQUIREMENTS, "requests-toolbelt"], as_of="")
    lock(project)
    after = blocks(project)
    # requests-toolbelt needs requests, which the lock already pins at a version that satisfies it.
    assert moved(before, after) == {"requests-toolbelt"}
    assert set(before) <= set(after)
    # The rest of the lock is byte-identical: take out the new table and the spec-hash line.
    rest = project.joinpath("mlenv.lock").read_text().replace(after["requests-toolbelt"], "")
    spec_hash = re.compile(r"(?m)^spec-hash = .*$")
    assert spec_hash.sub("", rest) == spec_hash.sub("", text)


def test_upgrade_package_moves_one(project: Path, fresh: dict[str, str]) -> None:
    before, old = blocks(project), versions(project)
    assert fresh["urllib3"] != old["urllib3"]
    stderr = lock(project, "-P", "urllib3")
    assert moved(before, blocks(project)) == {"urllib3"}
    # requests 2.28.1 (kept) caps urllib3 below 1.27: it moves as far as the kept pins allow.
    new = versions(project)["urllib3"]
    assert new != old["urllib3"] and new.startswith("1.26."), new
    assert "warning" not in stderr
    assert f"python: urllib3 {old['urllib3']} -> {new}" in stderr.splitlines()  # what moved, as uv says


def test_upgrade_package_to_a_version(project: Path) -> None:
    before = blocks(project)
    lock(project, "--upgrade-package", "IDNA==3.6")
    assert moved(before, blocks(project)) == {"idna"}
    assert versions(project)["idna"] == "3.6"


def test_upgrade_moves_many(project: Path, fresh: dict[str, str]) -> None:
    old = versions(project)
    lock(project, "--upgrade")
    new = versions(project)
    assert new == fresh
    assert len({n for n in old if new.get(n) != old[n]}) >= 5


def test_as_of_stays_the_ceiling_for_the_old_pins(project: Path) -> None:
    old = versions(project)
    lock(project, "--upgrade")
    assert versions(project) != old
    write_spec(project, REQUIREMENTS)  # as-of 2023-01-01 again: the newer pins are past it
    lock(project)
    assert versions(project) == old


def test_an_unknown_upgrade_package_is_one_warning_and_moves_nothing(project: Path) -> None:
    before = blocks(project)
    stderr = lock(project, "-P", "reqests")
    assert stderr.count("warning") == 1 and "reqests is not a Python package of the lock" in stderr
    assert blocks(project) == before


@pytest.mark.parametrize(
    "damage",
    [b"lock-version = 1\n[[python.packages]]\nname = 3\n", b"\xff\xfe not utf-8", b"lock-version = 99\n"],
    ids=["schema", "bytes", "version"],
)
def test_a_damaged_old_lock_is_one_warning_and_a_fresh_resolve(
    project: Path, fresh: dict[str, str], damage: bytes
) -> None:
    (project / "mlenv.lock").write_bytes(damage)
    stderr = lock(project)
    assert stderr.count("warning") == 1 and "resolving from scratch" in stderr, stderr
    assert versions(project) == fresh


def test_as_of_exceptions_let_one_package_past(tmp_path: Path) -> None:
    write_spec(
        tmp_path, ["requests"], python_table='as-of-exceptions = { requests = "2024-01-01T00:00:00Z" }'
    )
    lock(tmp_path)
    pinned = versions(tmp_path)
    assert pinned["requests"] == "2.31.0"  # the last release before 2024 (2.31.0 is of 2023-05-22)
    assert pinned["urllib3"] == "1.26.13"  # the others stay at as-of: the newest before 2023
    write_spec(tmp_path, ["requests"], python_table='as-of-exceptions = ["requests"]')
    lock(tmp_path, "-P", "requests")
    unbounded = versions(tmp_path)
    assert unbounded["requests"] not in ("2.28.1", "2.31.0") and unbounded["urllib3"] == "1.26.13"


host_python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


def test_pip_tools_keeps_the_old_pins_too(tmp_path: Path) -> None:
    table = 'resolver = "pip-tools"'
    write_spec(tmp_path, ["requests", "urllib3==1.26.13"], as_of="", python=host_python, python_table=table)
    result = run_cli("lock", str(tmp_path))
    if "resolves for the running interpreter only" in result.stderr:
        pytest.skip(f"pip-tools cannot stand in for the target here: {result.stderr.strip()}")
    assert result.code == 0, result.stderr
    write_spec(tmp_path, ["requests", "urllib3"], as_of="", python=host_python, python_table=table)
    lock(tmp_path)
    assert versions(tmp_path)["urllib3"] == "1.26.13"
    lock(tmp_path, "-P", "urllib3")
    assert versions(tmp_path)["urllib3"] != "1.26.13"
