"""An sdist-only pin is built on the host at lock into a pure wheel, hashed and recorded; C code is refused.

docopt 0.6.2 is on PyPI as an sdist only (pure Python). The build's backend (setuptools) comes from
PyPI through build isolation, so every case here needs the network.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from mlenv.lockfile import dumps, read_lock
from mlenv.sources.cas import ContentStore
from mlenv.sources.python.hostbuild import HostBuilder
from mlenv.sources.python.index import release_files
from tests.helpers import run_cli

pytestmark = pytest.mark.network

INDEX = "https://pypi.org/simple"
TARGET = '[target]\npython = "3.11.2"\nglibc = "2.36"\n'


def write_project(root: Path, requirements: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    listed = ", ".join(f'"{r}"' for r in requirements)
    (root / "mlenv.toml").write_text(f'name = "sdist"\n{TARGET}[python]\nrequirements = [{listed}]\n')
    return root


def cache_env(cache: Path) -> dict[str, str]:
    return os.environ | {"MLENV_CACHE": str(cache)}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(project, cache) after one `mlenv lock` of docopt==0.6.2 with an empty cache."""
    root = tmp_path_factory.mktemp("sdist")
    project = write_project(root / "project", ["docopt==0.6.2"])
    result = run_cli("lock", str(project), env=cache_env(root / "cache"))
    assert result.code == 0, result.stderr
    return project, root / "cache"


def test_the_sdist_is_locked_by_the_index_hash_and_the_built_wheel_is_recorded(
    locked: tuple[Path, Path],
) -> None:
    project, cache = locked
    lock = read_lock(project / "mlenv.lock")  # validated against the schema and the grammar
    (pin,) = [p for p in lock.python.packages if p.name == "docopt"]
    served = {f.filename: f.sha256 for f in release_files(INDEX, "docopt", "0.6.2")}
    assert not any(name.endswith(".whl") for name in served)  # still sdist-only upstream
    assert pin.sdist is not None and served[pin.sdist.name] == pin.sdist.sha256
    assert pin.sdist.hash_source == "index"
    (wheel,) = pin.wheels
    assert wheel.hash_source == "built" and wheel.built_from == "sdist" and wheel.url == ""
    assert wheel.name == "docopt-0.6.2-py2.py3-none-any.whl"
    stored = ContentStore(cache / "cas").cached(wheel.sha256)
    assert stored is not None and stored.stat().st_size == wheel.size
    with zipfile.ZipFile(stored) as archive:
        assert "docopt.py" in archive.namelist()
    text = (project / "mlenv.lock").read_text()
    assert dumps(read_lock(project / "mlenv.lock")) == text  # round-trips byte for byte
    assert 'hash-source = "built", built-from = "sdist"' in text


def test_a_second_lock_reuses_the_built_wheel_and_writes_the_same_bytes(locked: tuple[Path, Path]) -> None:
    project, cache = locked
    before = (project / "mlenv.lock").read_bytes()
    result = run_cli("lock", str(project), env=cache_env(cache))
    assert result.code == 0, result.stderr
    assert (project / "mlenv.lock").read_bytes() == before
    assert run_cli("lock", "--check", str(project), env=cache_env(cache)).code == 0


def test_the_same_sdist_builds_the_same_wheel_bytes_in_two_empty_stores(
    locked: tuple[Path, Path], tmp_path: Path
) -> None:
    project, _ = locked
    (pin,) = [p for p in read_lock(project / "mlenv.lock").python.packages if p.name == "docopt"]
    assert pin.sdist is not None
    built = []
    for store in ("one", "two"):
        builder = HostBuilder(
            ContentStore(tmp_path / store), project_dir=project, python_version="3.11.2", index_url=INDEX
        )
        built.append(builder.from_sdist("docopt", "0.6.2", pin.sdist).file)
    assert built[0] == built[1] == pin.wheels[0]


def test_build_installs_the_built_wheel_from_the_store_and_names_it_when_absent(
    locked: tuple[Path, Path], tmp_path: Path
) -> None:
    from mlenv.build.artifacts import fetch, python_artifacts
    from mlenv.errors import BuildError

    project, cache = locked
    lock = read_lock(project / "mlenv.lock")
    artifacts = python_artifacts(lock, "linux/amd64")
    (docopt,) = [a for a in artifacts if a.package == "docopt"]
    assert docopt.urls == ()  # at no URL: the store holds it
    found = fetch([docopt], ContentStore(cache / "cas"), lambda _: None)
    assert found[docopt.filename].name == docopt.sha256
    with pytest.raises(BuildError) as caught:
        fetch([docopt], ContentStore(tmp_path / "empty"), lambda _: None)
    assert "docopt 0.6.2 (docopt-0.6.2-py2.py3-none-any.whl)" in str(caught.value)


def test_a_package_with_c_code_is_refused_at_lock_with_what_to_do(tmp_path: Path) -> None:
    if not any(Path(d, "cc").exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("no C compiler on this host: the build fails before it could give a platform wheel")
    package = tmp_path / "project" / "libs" / "speedups"
    (package / "speedups").mkdir(parents=True)
    (package / "speedups" / "__init__.py").write_text("")
    (package / "fast.c").write_text(
        '#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "fast"};\n'
        "PyMODINIT_FUNC PyInit_fast(void) { return PyModule_Create(&m); }\n"
    )
    (package / "setup.py").write_text(
        "from setuptools import Extension, setup\n"
        "setup(name='speedups', version='1.0', packages=['speedups'],"
        " ext_modules=[Extension('speedups.fast', ['fast.c'])])\n"
    )
    project = write_project(tmp_path / "project", ["./libs/speedups"])
    result = run_cli("lock", str(project), env=cache_env(tmp_path / "cache"))
    assert result.code == 2
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(
        "mlenv: error: ./libs/speedups has C code: built on this host it is speedups-1.0-cp311"
    )
    assert "serve it from an index listed in [python] extra-index-urls" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "mlenv.lock").exists()


def test_a_built_wheel_in_the_lock_without_built_from_is_refused(
    locked: tuple[Path, Path], tmp_path: Path
) -> None:
    from mlenv.errors import LockfileError
    from mlenv.lockfile import loads

    project, _ = locked
    text = (project / "mlenv.lock").read_text().replace(', built-from = "sdist"', "")
    with pytest.raises(LockfileError) as caught:
        loads(text)
    assert "wheels[0]" in str(caught.value)


def test_a_wheel_missing_from_the_store_is_rebuilt_and_held_to_the_lock_hash(
    locked: tuple[Path, Path], tmp_path: Path
) -> None:
    from dataclasses import replace

    from mlenv.build.wheels import missing_built_wheels, rebuild_missing
    from mlenv.errors import BuildError

    project, _ = locked
    lock = read_lock(project / "mlenv.lock")
    store = ContentStore(tmp_path / "empty")
    assert [pin.name for pin, _ in missing_built_wheels(lock, store)] == ["docopt"]
    assert rebuild_missing(lock, project, store) == ["docopt-0.6.2-py2.py3-none-any.whl"]
    assert missing_built_wheels(lock, store) == []
    # A lock naming other bytes than this host builds: refused, and nothing is left in the store.
    (docopt,) = [p for p in lock.python.packages if p.name == "docopt"]
    other = replace(docopt, wheels=(replace(docopt.wheels[0], sha256="0" * 64),))
    tampered = replace(lock, python=replace(lock.python, packages=(other,)))
    with pytest.raises(BuildError) as caught:
        rebuild_missing(tampered, project, ContentStore(tmp_path / "other"))
    assert f"rebuilt on this host it has sha256 {docopt.wheels[0].sha256}, the lock says {'0' * 64}" in str(
        caught.value
    )
    assert ContentStore(tmp_path / "other").cached(docopt.wheels[0].sha256) is None
