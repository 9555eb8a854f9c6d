"""The exports people install, installed: the requirements export by the pip inside the test base image
(in a container on the engine, `--require-hashes --no-deps`) and by pip-sync, the pylock export by
`uv pip install`; each installed set (names and versions from the dist-infos) is the lock's. And the exit
codes: a stale lock or a drifted image exits 1 after the file is written.

The container has no network (`network_mode="none"`): the engine's containers here reach the internet
only through a TLS-intercepting proxy whose CA the base image does not trust, so the locked wheels are
mounted in and installed with `--no-index --find-links`; pip still checks every hash in the file.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.pylock import Pylock
from packaging.utils import canonicalize_name

from mlenv.build.artifacts import fetch, python_artifacts
from mlenv.export import export
from mlenv.lockfile import read_lock, write_lock
from mlenv.model.lock import Lock, PinSource, PythonFile, PythonPin
from mlenv.sources.cas import ContentStore
from tests.export.data import lock_context
from tests.helpers import Built, run_cli
from tests.lockdata import full_lock
from tests.test_local_packages import make_package, make_repository, write_spec
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage

# pip and setuptools come with a venv made by `python -m venv` (ensurepip); the lock may not name them.
VENV_TOOLING = {"pip", "setuptools"}


def run_in_base(daemon: Daemon, base: BaseImage, script: str, mounts: dict[Path, str]) -> str:
    """`sh -c script` as root in the test base with no network, each host folder mounted read-only at
    its path; stdout and stderr together."""
    volumes = {str(host): {"bind": inside, "mode": "ro"} for host, inside in mounts.items()}
    output: bytes = daemon.client.containers.run(
        base.local,
        ["sh", "-c", script],
        entrypoint="",
        user="root",
        network_mode="none",
        volumes=volumes,
        remove=True,
        stderr=True,
    )
    return output.decode()


def locked_set(lock: Lock) -> set[tuple[str, str]]:
    return {(pin.name, pin.version) for pin in lock.python.packages}


def dist_infos(names: list[str]) -> set[tuple[str, str]]:
    """(name, version) of each `NAME-VERSION.dist-info` directory name."""
    found = set()
    for entry in names:
        if entry.endswith(".dist-info"):
            name, version = entry[: -len(".dist-info")].rsplit("-", 1)
            found.add((canonicalize_name(name), version))
    return found


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def wheel_dir(lock: Lock, platform: str, destination: Path) -> Path:
    """The lock's wheels for `platform`, from the artifact cache (fetched and hash-checked if absent)."""
    destination.mkdir()
    for filename, path in fetch(python_artifacts(lock, platform), ContentStore(), lambda _: None).items():
        shutil.copyfile(path, destination / filename)
    return destination


def stray_wheel(folder: Path) -> Path:
    """The smallest wheel pip installs: a package no lock names."""
    path = folder / "mlenv_stray-1.0-py3-none-any.whl"
    members = {
        "mlenv_stray.py": b"",
        "mlenv_stray-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: mlenv-stray\nVersion: 1.0\n",
        "mlenv_stray-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in members) + "mlenv_stray-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("mlenv_stray-1.0.dist-info/RECORD", record)
    return path


def export_requirements(lock_path: Path, target: Path, *extra: str) -> str:
    result = run_cli(
        "export", "--lock", str(lock_path), "--format", "requirements", "-o", str(target), *extra
    )
    assert result.code == 0, result.stderr
    return target.read_text()


# ---------------------------------------------------------------------------- without the engine


def test_requirements_export_is_pip_compile_style_with_the_spec_extras_and_a_stale_lock_exits_1(
    tmp_path: Path,
) -> None:
    lock = full_lock()
    write_lock(lock, tmp_path / "mlenv.lock")
    # A spec beside the lock that asks for an extra: its hash is not the lock's, so the lock is stale.
    (tmp_path / "mlenv.toml").write_text(
        'name = "golden"\n[base]\nimage = "127.0.0.1:5000/mlenv-test/bookworm-python:1"\n'
        '[python]\nrequirements = ["pandas[performance,aws]==2.0.3"]\n'
    )
    target = tmp_path / "requirements.txt"
    chosen = ("--platform", "linux/arm64")
    result = run_cli("export", str(tmp_path), "--format", "requirements", *chosen, "-o", str(target))
    assert result.code == 1 and "mlenv.lock is stale" in result.stderr and "run `mlenv lock`" in result.stderr
    text = target.read_text()
    assert "# Lock: stale: mlenv.toml changed since the lock was made" in text
    assert "# Image: not-verified." in text and "--index-url https://pypi.org/simple\n" in text
    pandas = [p for p in lock.python.packages if p.name == "pandas"][0]
    wheel = [w for w in pandas.wheels if "manylinux" in w.name and "aarch64" in w.name][0]
    # For linux/arm64 pandas carries its aarch64 wheel's hash alone.
    assert f"pandas[aws,performance]==2.0.3 \\\n    --hash=sha256:{wheel.sha256}\n" in text
    # No wall-clock time: a second export is the same bytes.
    again = run_cli("export", str(tmp_path), "--format", "requirements", *chosen)
    assert again.code == 1 and again.stdout == text


def test_a_lock_without_a_spec_beside_it_is_exported_unjudged(tmp_path: Path) -> None:
    write_lock(full_lock(), tmp_path / "mlenv.lock")
    result = run_cli("export", str(tmp_path), "--format", "requirements", "--platform", "linux/amd64")
    assert result.code == 0, result.stderr
    assert "# Lock: not checked (no spec found)." in result.stdout
    # Every amd64 pin's line has its hashes on continuation lines, as pip-compile writes them.
    assert "nvidia-cudnn-cu12==8.9.2.26 ; platform_machine == 'x86_64' and sys_platform == 'linux' \\\n" in (
        result.stdout
    )


# ---------------------------------------------------------------------------- installed for real


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_requirements_export_installs_with_the_base_images_pip_and_require_hashes(
    fraud_image: Built, base_image_python: BaseImage, docker_daemon: Daemon, tmp_path: Path
) -> None:
    lock = read_lock(fraud_image.lock)
    platform = lock.target.platforms[0]
    wheels = wheel_dir(lock, platform, tmp_path / "wheels")
    export_requirements(fraud_image.lock, tmp_path / "requirements.txt")
    script = (
        "python3 -m venv /tmp/venv && ls /tmp/venv/lib/python3*/site-packages > /tmp/before && "
        "/tmp/venv/bin/python -m pip --version && "
        "/tmp/venv/bin/python -m pip install --disable-pip-version-check --no-index --find-links /wheels "
        "--require-hashes --no-deps -r /in/requirements.txt >&2 && "
        "ls /tmp/venv/lib/python3*/site-packages | grep -vxF -f /tmp/before"
    )
    mounts = {wheels: "/wheels", tmp_path: "/in"}
    output = run_in_base(docker_daemon, base_image_python, script, mounts)
    # The base image's own pip (Debian's python3-venv bundles it) did the install.
    assert "pip " in output.splitlines()[0], output
    installed = dist_infos(output.split())
    assert installed == locked_set(lock) - {(n, v) for n, v in locked_set(lock) if n in VENV_TOOLING}

    # A file with one hash changed is refused by the same pip: the hashes are checked.
    text = (tmp_path / "requirements.txt").read_text()
    pin = lock.python.packages[0]
    wheel = next(w for w in pin.wheels if (wheels / w.name).exists())
    (tmp_path / "requirements.txt").write_text(text.replace(wheel.sha256, "0" * 64))
    refused = run_in_base(docker_daemon, base_image_python, f"{script} || echo REFUSED", mounts)
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in refused and "REFUSED" in refused


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_pip_sync_accepts_the_requirements_export(fraud_image: Built, tmp_path: Path) -> None:
    lock = read_lock(fraud_image.lock)
    if lock.target.python.rsplit(".", 1)[0] != f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip(f"the lock targets python {lock.target.python}; pip-sync runs on this host's python")
    wheels = wheel_dir(lock, lock.target.platforms[0], tmp_path / "wheels")
    requirements = tmp_path / "requirements.txt"
    export_requirements(fraud_image.lock, requirements)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # pip-sync refuses a target whose pip is older than the one pip-tools requires (pip-tools 7.7 wants
    # pip >= 26.2.2; the venv gets ensurepip's): give it this host's pip, which pip-tools was installed with.
    host_pip = f"pip=={importlib.metadata.version('pip')}"
    subprocess.run([venv / "bin/python", "-m", "pip", "install", "-q", host_pip], check=True)
    # Something the lock does not hold: pip-sync must take it out.
    stray = stray_wheel(tmp_path)
    subprocess.run([venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", stray], check=True)
    assert ("mlenv-stray", "1.0") in dist_infos([p.name for p in site_packages(venv).iterdir()])
    sync = [sys.executable, "-m", "piptools", "sync", "--python-executable", str(venv / "bin/python")]
    sync += ["--no-index", "--find-links", str(wheels), str(requirements)]
    # Outside the checkout and without the test run's PYTHONPATH: `python -m pip` puts the working directory
    # on sys.path, and the venv's pip would list the checkout's mlenv as installed there.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    first = subprocess.run(sync, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    installed = dist_infos([p.name for p in site_packages(venv).iterdir()])
    tooling = {(n, v) for n, v in installed if n in VENV_TOOLING}
    assert installed - tooling == locked_set(lock) - {
        (n, v) for n, v in locked_set(lock) if n in VENV_TOOLING
    }
    second = subprocess.run(sync, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert second.returncode == 0 and "Everything up-to-date" in second.stdout, second.stdout + second.stderr


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_pylock_export_installs_with_uv(fraud_image: Built, tmp_path: Path) -> None:
    if shutil.which("uv") is None:
        pytest.skip("uv is not installed")
    lock = read_lock(fraud_image.lock)
    if lock.target.python.rsplit(".", 1)[0] != f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip(f"the lock targets python {lock.target.python}; uv installs for this host's python")
    pylock = tmp_path / "pylock.toml"
    result = run_cli("export", "--lock", str(fraud_image.lock), "--format", "pylock", "-o", str(pylock))
    assert result.code == 0, result.stderr
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    installed_by_uv = subprocess.run(
        ["uv", "pip", "install", "--python", str(venv / "bin/python"), "-r", str(pylock)],
        capture_output=True,
        text=True,
    )
    assert installed_by_uv.returncode == 0, installed_by_uv.stderr[-3000:]
    # uv's venv has no pip or setuptools of its own: what is there is what the pylock installed.
    assert dist_infos([p.name for p in site_packages(venv).iterdir()]) == locked_set(lock)


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_a_drifted_image_exports_then_exits_1(fraud_image: Built, drifted_image: str, tmp_path: Path) -> None:
    target = tmp_path / "requirements.txt"
    result = run_cli(
        "export",
        "--lock",
        str(fraud_image.lock),
        "--format",
        "requirements",
        "--image",
        f"docker-daemon:{drifted_image}",
        "-o",
        str(target),
    )
    assert result.code == 1 and "2 drift(s) from the lock, recorded in the export" in result.stderr
    assert f"# Image: drift (docker-daemon:{drifted_image})." in target.read_text()
    assert "# Lock: fresh." in target.read_text()


# ---------------------------------------------------------------------------- pins built on the host

FEATURELIB_WHEEL = PythonFile(
    name="featurelib-0.1.0-py3-none-any.whl",
    url="",
    size=1176,
    sha256="54" * 32,
    hash_source="built",
    built_from="directory",
)


def lock_with_a_directory_pin() -> Lock:
    lock = full_lock()
    featurelib = PythonPin(
        name="featurelib",
        version="0.1.0",
        index=lock.python.index_url,
        requested=True,
        wheels=(FEATURELIB_WHEEL,),
        source=PinSource(kind="directory", url="libs/featurelib", tree_sha256="12" * 32),
    )
    python = dataclasses.replace(lock.python, packages=(*lock.python.packages, featurelib))
    return dataclasses.replace(lock, python=python)


def test_a_built_pin_without_a_wheel_folder_is_a_comment_never_an_installable_looking_line() -> None:
    lock = lock_with_a_directory_pin()
    for name in ("requirements", "pylock"):
        text = export(name, lock, None, lock_context(lock)).decode()
        assert (
            "# featurelib==0.1.0 is left out: its wheel was built on the host from ./libs/featurelib" in text
        )
        assert FEATURELIB_WHEEL.sha256 not in text, name
    with_folder = dataclasses.replace(lock_context(lock), wheel_folder=Path("/srv/out/mlenv-wheels"))
    text = export("requirements", lock, None, with_folder).decode()
    assert (
        "featurelib @ file:///srv/out/mlenv-wheels/featurelib-0.1.0-py3-none-any.whl \\\n"
        f"    --hash=sha256:{FEATURELIB_WHEEL.sha256}\n"
    ) in text and "left out" not in text
    pylock = Pylock.from_dict(tomllib.loads(export("pylock", lock, None, with_folder).decode()))
    (featurelib,) = [p for p in pylock.packages if p.name == "featurelib"]
    assert featurelib.wheels is not None
    assert [(w.path, w.hashes) for w in featurelib.wheels] == [
        ("mlenv-wheels/featurelib-0.1.0-py3-none-any.whl", {"sha256": FEATURELIB_WHEEL.sha256})
    ]


@pytest.fixture(scope="module")
def local_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project locking ./libs/featurelib (a directory) and gitlib from a local git repo at tag v1."""
    root = tmp_path_factory.mktemp("built")
    project = root / "project"
    make_package(project / "libs" / "featurelib", "featurelib", "0.1.0", ["six==1.16.0"])
    repository = make_repository(root / "repository")
    write_spec(project, ["./libs/featurelib", f"gitlib @ git+file://{repository}@v1"])
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    built = {p.name for p in read_lock(project / "mlenv.lock").python.packages if p.source is not None}
    assert built == {"featurelib", "gitlib"}
    return project


@pytest.mark.network
def test_an_export_to_stdout_warns_of_each_built_pin_it_leaves_out(local_project: Path) -> None:
    result = run_cli("export", str(local_project), "--format", "requirements")
    assert result.code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "is left out" in line]
    assert [line.split(" is left out")[0] for line in warned] == [
        "mlenv: warning: featurelib==0.1.0",
        "mlenv: warning: gitlib==1.0",
    ]
    assert "\nfeaturelib" not in result.stdout and "\ngitlib" not in result.stdout


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_built_pins_install_from_the_requirements_export_with_the_base_images_pip(
    local_project: Path, base_image_python: BaseImage, docker_daemon: Daemon, tmp_path: Path
) -> None:
    lock = read_lock(local_project / "mlenv.lock")
    built = {p.name for p in lock.python.packages if p.source is not None}
    # Only the index's wheels go to --find-links: the built ones must come from the export's own folder.
    index_wheels = wheel_dir(lock, lock.target.platforms[0], tmp_path / "index-wheels")
    for wheel in list(index_wheels.iterdir()):
        if canonicalize_name(wheel.name.split("-")[0]) in built:
            wheel.unlink()
    out = tmp_path / "out"
    out.mkdir()
    text = export_requirements(local_project / "mlenv.lock", out / "requirements.txt")
    assert f"featurelib @ file://{out}/mlenv-wheels/featurelib-0.1.0-py3-none-any.whl \\\n" in text
    script = (
        "python3 -m venv /tmp/venv && ls /tmp/venv/lib/python3*/site-packages > /tmp/before && "
        "/tmp/venv/bin/python -m pip install --disable-pip-version-check --no-index --find-links /wheels "
        f"--require-hashes --no-deps -r {out}/requirements.txt >&2 && "
        "ls /tmp/venv/lib/python3*/site-packages | grep -vxF -f /tmp/before"
    )
    # The export names its wheels by absolute file URL: the folder is mounted where it is on the host.
    output = run_in_base(docker_daemon, base_image_python, script, {index_wheels: "/wheels", out: str(out)})
    assert dist_infos(output.split()) == locked_set(lock)


@pytest.mark.network
def test_built_pins_install_from_the_pylock_export_with_uv(local_project: Path, tmp_path: Path) -> None:
    if shutil.which("uv") is None:
        pytest.skip("uv is not installed")
    lock = read_lock(local_project / "mlenv.lock")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("export", str(local_project), "--format", "pylock", "-o", str(out / "pylock.toml"))
    assert result.code == 0, result.stderr
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    installed_by_uv = subprocess.run(
        ["uv", "pip", "install", "--python", str(venv / "bin/python"), "-r", str(out / "pylock.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the wheels' paths are relative to the pylock file, not to where uv runs
    )
    assert installed_by_uv.returncode == 0, installed_by_uv.stderr[-3000:]
    assert dist_infos([p.name for p in site_packages(venv).iterdir()]) == locked_set(lock)
    # What uv installed for the built pins is the locked wheel: its RECORD is the locked wheel's.
    featurelib = next(p for p in lock.python.packages if p.name == "featurelib")
    record = next(site_packages(venv).glob("featurelib-0.1.0.dist-info")) / "RECORD"
    with zipfile.ZipFile(out / "mlenv-wheels" / featurelib.wheels[0].name) as archive:
        locked_record = archive.read("featurelib-0.1.0.dist-info/RECORD").decode()
    assert {line.split(",")[0] for line in locked_record.splitlines()} <= {
        line.split(",")[0] for line in record.read_text().splitlines()
    }
