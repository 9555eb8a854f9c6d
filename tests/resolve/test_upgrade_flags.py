"""The upgrade flags and the spec's as-of exceptions, read without any network: what each turns into."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlenv.errors import MlenvError, SpecError
from mlenv.model.lock import AptPin, Lock, LockedApt, LockedPython, PythonPin
from mlenv.resolve.upgrade import (
    Upgrade,
    apt_preferences,
    lock_changes,
    parse_upgrade,
    python_preferences,
    unknown_upgrades,
)
from mlenv.spec import load_spec, spec_hash
from tests.helpers import run_cli
from tests.lockdata import full_lock

SPEC = """
name = "demo"
{as_of}
[target]
python = "3.11.2"
glibc = "2.36"
[python]
requirements = ["requests"]
{exceptions}
"""


def spec_file(tmp_path: Path, *, as_of: bool = True, exceptions: str = "") -> Path:
    text = SPEC.format(as_of="as-of = 2023-01-01T00:00:00Z" if as_of else "", exceptions=exceptions)
    (tmp_path / "mlenv.toml").write_text(text)
    return tmp_path / "mlenv.toml"


def python_pin(name: str, version: str) -> PythonPin:
    return PythonPin(name=name, version=version, index="https://pypi.org/simple", requested=False)


def apt_pin(name: str, version: str, arch: str = "amd64") -> AptPin:
    return AptPin(
        name=name,
        version=version,
        architecture=arch,
        filename=f"pool/{name}.deb",
        size=1,
        sha256="0" * 64,
        requested=True,
    )


def old_lock() -> Lock:
    lock = full_lock()
    return replace(
        lock,
        python=replace(
            lock.python or LockedPython(resolver="uv", requires_python="==3.11.*"),
            packages=(python_pin("idna", "3.4"), python_pin("requests", "2.28.1")),
        ),
        apt=LockedApt(
            packages=(apt_pin("curl", "1"), apt_pin("libcurl4", "1"), apt_pin("tzdata", "2", "all"))
        ),
    )


def test_python_flags_are_canonical_names_or_exact_pins() -> None:
    upgrade = parse_upgrade(everything=False, python=["Requests", "IDNA==3.6", "requests"], apt=["curl"])
    assert upgrade == Upgrade(python=("requests", "idna==3.6"), apt=("curl",))
    assert upgrade.python_names() == {"requests", "idna"}


@pytest.mark.parametrize(
    "text", ["requests>2", "requests[socks]", "a==1,<2", "not a name", "x @ https://e/x"]
)
def test_a_python_flag_that_is_not_a_package_is_refused(text: str) -> None:
    with pytest.raises(MlenvError, match="--upgrade-package"):
        parse_upgrade(everything=False, python=[text], apt=[])


@pytest.mark.parametrize("text", ["curl=7.88", "Curl", "curl/bookworm"])
def test_an_apt_flag_that_is_not_a_package_is_refused(text: str) -> None:
    with pytest.raises(MlenvError, match="--upgrade-apt"):
        parse_upgrade(everything=False, python=[], apt=[text])


def test_the_old_lock_becomes_the_preferences_less_what_may_move() -> None:
    lock = old_lock()
    assert python_preferences(lock, Upgrade()) == (("idna", "3.4"), ("requests", "2.28.1"))
    assert python_preferences(lock, Upgrade(python=("requests==2.31.0",))) == (("idna", "3.4"),)
    assert python_preferences(lock, Upgrade(everything=True)) == ()
    assert python_preferences(None, Upgrade()) == ()
    everything = {("curl", "amd64"): "1", ("libcurl4", "amd64"): "1", ("tzdata", "all"): "2"}
    assert apt_preferences(lock, Upgrade()) == everything
    assert apt_preferences(lock, Upgrade(apt=("curl",))) == {
        k: v for k, v in everything.items() if k[0] != "curl"
    }
    assert apt_preferences(lock, Upgrade(apt=("tzdata:amd64",))) == {
        k: v for k, v in everything.items() if k[0] != "tzdata"
    }
    assert apt_preferences(lock, Upgrade(apt=("curl:arm64",))) == everything
    assert apt_preferences(lock, Upgrade(everything=True)) == {}


def test_a_flag_naming_a_package_neither_lock_has_is_one_warning() -> None:
    lock = old_lock()
    upgrade = Upgrade(python=("requests", "reqests"), apt=("curl", "curll"))
    assert unknown_upgrades(lock, lock, upgrade) == [
        "--upgrade-package reqests: reqests is not a Python package of the lock",
        "--upgrade-apt curll: curll is not an apt package of the lock",
    ]


def test_what_moved_is_one_line_per_package() -> None:
    lock = old_lock()
    assert lock.python is not None
    new = replace(
        lock,
        python=replace(lock.python, packages=(python_pin("requests", "2.31.0"), python_pin("six", "1.17.0"))),
        apt=LockedApt(
            packages=(apt_pin("curl", "2"), apt_pin("libcurl4", "1"), apt_pin("curl", "1", "arm64"))
        ),
    )
    assert lock_changes(lock, lock) == []
    assert lock_changes(lock, new) == [
        "apt: curl:amd64 1 -> 2",
        "apt: + curl:arm64 1",
        "apt: - tzdata 2",
        "python: - idna 3.4",
        "python: requests 2.28.1 -> 2.31.0",
        "python: + six 1.17.0",
    ]


def test_as_of_exceptions_as_a_table_or_a_list(tmp_path: Path) -> None:
    table = load_spec(
        spec_file(
            tmp_path,
            exceptions='as-of-exceptions = { Torch = "2025-01-01T00:00:00Z", numpy = 2024-06-01T00:00:00Z }',
        )
    )
    assert table.python.as_of_exceptions == (
        ("numpy", datetime(2024, 6, 1, tzinfo=UTC)),
        ("torch", datetime(2025, 1, 1, tzinfo=UTC)),
    )
    listed = load_spec(spec_file(tmp_path, exceptions='as-of-exceptions = ["Torch"]'))
    assert listed.python.as_of_exceptions == (("torch", None),)
    assert spec_hash(listed) != spec_hash(table)


def test_a_spec_without_exceptions_hashes_as_before_they_existed(tmp_path: Path) -> None:
    # The hash of this spec as the mlenv before as-of-exceptions computed it (its lock stays fresh).
    assert spec_hash(load_spec(spec_file(tmp_path))) == (
        "sha256:42850853ab2d48caa7b9e248670ea5ad69a579455f92546c14290482b5a65057"
    )


@pytest.mark.parametrize(
    ("as_of", "exceptions", "message"),
    [
        (False, 'as-of-exceptions = ["torch"]', "python.as-of-exceptions: needs as-of"),
        (True, 'as-of-exceptions = { torch = "soon" }', "python.as-of-exceptions"),
        (True, 'as-of-exceptions = { torch = "2025-01-01T00:00:00" }', "python.as-of-exceptions"),
        (True, 'as-of-exceptions = ["torch cpu"]', "is not a package name"),
        (True, "as-of-exceptions = 3", "python.as-of-exceptions"),
    ],
)
def test_bad_exceptions_name_the_key(tmp_path: Path, as_of: bool, exceptions: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(spec_file(tmp_path, as_of=as_of, exceptions=exceptions))


def test_check_takes_no_upgrade_flag(tmp_path: Path) -> None:
    spec_file(tmp_path)
    result = run_cli("lock", str(tmp_path), "--check", "-P", "requests")
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--check resolves nothing" in result.stderr
    bad = run_cli("lock", str(tmp_path), "-P", "requests>2")
    assert bad.code == 2 and "--upgrade-package 'requests>2'" in bad.stderr
    assert not (tmp_path / "mlenv.lock").exists()
