"""`mlenv lock` pins Python packages for the TARGET (container) platform, against real PyPI."""

from __future__ import annotations

import pickle
import platform
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.utils import parse_wheel_filename

from mlenv.lockfile import read_lock
from mlenv.model.schema import first_error
from tests.helpers import run_cli
from tools.localbase.project import copy_example

pytestmark = pytest.mark.network

TARGET = {"python": "3.11.2", "glibc": "2.36"}


def installs_on_cp311_x86_64_glibc236(filename: str) -> bool:
    """An independent reading of wheel tags (not mlenv's): CPython 3.11, x86_64, glibc <= 2.36."""
    _, _, _, tags = parse_wheel_filename(filename)
    for tag in tags:
        python_ok = tag.interpreter in {"cp311", "py3", "py311", "cp3"} or (
            tag.interpreter.startswith("cp3") and tag.abi == "abi3"
        )
        abi_ok = tag.abi in {"cp311", "abi3", "none"}
        plat = tag.platform
        if plat == "any":
            plat_ok = True
        elif plat.endswith("_x86_64") and plat.startswith("manylinux_2_"):
            plat_ok = int(plat.split("_")[2]) <= 36
        else:
            plat_ok = plat in {"manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"}
        if python_ok and abi_ok and plat_ok:
            return True
    return False


@pytest.fixture(scope="module")
def fraud_lock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_example(
        "fraud-detector", tmp_path_factory.mktemp("lock"), base=None, apt=None, target=TARGET
    )
    (project / "models").mkdir(exist_ok=True)
    (project / "models" / "model.joblib").write_bytes(pickle.dumps("a stand-in model for locking"))
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    return project


def test_every_pin_has_a_target_file_with_sha256(fraud_lock: Path) -> None:
    lock = read_lock(fraud_lock / "mlenv.lock")
    assert len(lock.python.packages) >= 15
    for pin in lock.python.packages:
        installable = [w for w in pin.wheels if installs_on_cp311_x86_64_glibc236(w.name)]
        assert installable, f"{pin.name}=={pin.version} has no wheel for cp311 x86_64"
        assert all(len(w.sha256) == 64 and w.size and w.size > 0 for w in installable)
        # Only target files are kept: nothing for macOS, Windows or other Pythons.
        assert all(installs_on_cp311_x86_64_glibc236(w.name) for w in pin.wheels)


def test_requested_versions_and_flags(fraud_lock: Path) -> None:
    pins = {p.name: p for p in read_lock(fraud_lock / "mlenv.lock").python.packages}
    assert pins["scikit-learn"].version == "1.4.2" and pins["scikit-learn"].requested
    assert pins["pandas"].version == "2.0.3" and pins["pandas"].requested
    # The example pins numpy itself (scikit-learn 1.4.2 and pandas 2.0.3 need numpy 1.x without saying so).
    assert pins["numpy"].version == "1.26.4" and pins["numpy"].requested
    assert not pins["starlette"].requested  # pulled in by fastapi


def own_copy(project: Path, tmp_path: Path) -> Path:
    """The module's locked project copied for a test that changes it: the others read the original."""
    return Path(shutil.copytree(project, tmp_path / project.name))


def test_relock_is_byte_identical(fraud_lock: Path, tmp_path: Path) -> None:
    first = (fraud_lock / "mlenv.lock").read_bytes()
    project = own_copy(fraud_lock, tmp_path)
    result = run_cli("lock", str(project))
    assert result.code == 0 and "unchanged" in result.stdout
    (project / "mlenv.lock").unlink()
    assert run_cli("lock", str(project)).code == 0
    assert (project / "mlenv.lock").read_bytes() == first
    assert (fraud_lock / "mlenv.lock").read_bytes() == first


def test_lock_validates_against_schema(fraud_lock: Path) -> None:
    data = tomllib.loads((fraud_lock / "mlenv.lock").read_text())
    assert first_error(data, "mlenv.lock") is None


def test_check_fresh_then_stale_without_rewriting(fraud_lock: Path, tmp_path: Path) -> None:
    project = own_copy(fraud_lock, tmp_path)
    lock_path = project / "mlenv.lock"
    assert run_cli("lock", "--check", str(project)).code == 0
    before = lock_path.read_bytes()
    spec = project / "mlenv.toml"
    original = spec.read_text()
    spec.write_text(original.replace("port = 8000", "port = 8001"))
    result = run_cli(
        "lock",
        "--check",
        str(project),
        env={"HTTPS_PROXY": "http://0.0.0.0:9", "HTTP_PROXY": "http://0.0.0.0:9", "PATH": "/usr/bin:/bin"},
    )
    assert result.code == 1
    assert "mlenv.toml changed since the lock was made" in result.stderr
    assert lock_path.read_bytes() == before
    spec.write_text(original)
    (project / "models" / "model.joblib").write_bytes(b"retrained\n")
    result = run_cli("lock", "--check", str(project))
    assert result.code == 1 and "model file models/model.joblib changed" in result.stderr
    assert lock_path.read_bytes() == before


def test_pip_tools_refuses_a_foreign_target(tmp_path: Path) -> None:
    project = copy_example(
        "fraud-detector",
        tmp_path,
        base=None,
        apt=None,
        as_of=None,
        target={"python": "3.12.4", "glibc": "2.36"},
    )
    spec = project / "mlenv.toml"
    spec.write_text(spec.read_text().replace("[python]", '[python]\nresolver = "pip-tools"'))
    result = run_cli("lock", str(project))
    assert result.code == 2
    assert "resolves for the running interpreter only: the target is Python 3.12" in result.stderr
    assert "resolver = 'uv'" in result.stderr and not (project / "mlenv.lock").exists()


@pytest.mark.skipif(
    platform.libc_ver() != ("glibc", "2.36") or sys.version_info[:2] != (3, 11),
    reason="pip-tools resolves for the running interpreter; this host is not cp311/glibc 2.36",
)
def test_pip_tools_backend_when_the_host_matches(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "mlenv.toml").write_text(
        'name = "p"\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
        '[python]\nresolver = "pip-tools"\nrequirements = ["scikit-learn==1.4.2", "numpy==1.26.4"]\n'
    )
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    lock = read_lock(project / "mlenv.lock")
    assert lock.python.resolver == "pip-tools"
    pins = {p.name: p for p in lock.python.packages}
    assert pins["scikit-learn"].version == "1.4.2" and {"numpy", "scipy", "joblib", "threadpoolctl"} <= set(
        pins
    )
    for pin in pins.values():
        assert pin.wheels and all(installs_on_cp311_x86_64_glibc236(w.name) for w in pin.wheels)
