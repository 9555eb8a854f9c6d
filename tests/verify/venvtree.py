"""Build a venv the way mlenv's Dockerfile does, on this host, and walk it (for the wheelfiles tests)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlenv.render.dockerfile import _COMPILE  # the compile step exactly as the Dockerfile runs it
from mlenv.verify.manifest import ExpectedFile
from mlenv.verify.pyc import check_pyc
from mlenv.verify.wheelfiles import Expectation, venv_expectation, venv_wheel_expectation


def _umask() -> None:
    os.umask(0o022)


def run(*args: str | Path) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([str(a) for a in args], check=True, env=env, preexec_fn=_umask, capture_output=True)


def build_venv(
    root: Path, wheels: list[Path], *, python: str = sys.executable, pip: Path | None = None
) -> Path:
    """python -m venv; pip install --no-index --require-hashes --no-deps --no-compile; uninstall pip
    and setuptools; compile CHECKED_HASH: the builder stage's RUN, with `root` for /opt/venv. `pip`: a
    pip wheel to put in place of ensurepip's first (as a base whose Python bundles that pip would)."""
    run(python, "-m", "venv", root)
    if pip is not None:
        run(root / "bin/python", "-m", "pip", "install", "--no-index", "--no-deps", pip)
    lines = []
    for w in wheels:
        name, version = w.name.split("-")[:2]
        lines.append(f"{name}=={version} --hash=sha256:{hashlib.sha256(w.read_bytes()).hexdigest()}\n")
    req = root.parent / f"{root.name}-requirements.txt"
    req.write_text("".join(lines))
    if wheels:
        find = str(wheels[0].parent)
        run(
            root / "bin/python",
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            find,
            "--only-binary",
            ":all:",
            "--require-hashes",
            "--no-deps",
            "--no-compile",
            "-r",
            req,
        )
    run(root / "bin/python", "-m", "pip", "uninstall", "--yes", "pip", "setuptools")
    run(root / "bin/python", "-c", _COMPILE.format(venv=str(root)))
    return root


@dataclass(frozen=True, kw_only=True)
class Walked:
    path: str
    kind: str
    mode: int
    data: bytes | None
    link: str | None


def walk(root: Path) -> dict[str, Walked]:
    """Every path below `root` (and `root`), by absolute path."""
    out = {}
    for base, dirs, files in os.walk(root):
        for name in [base, *(os.path.join(base, n) for n in dirs + files)]:
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode):
                out[name] = Walked(path=name, kind="symlink", mode=0, data=None, link=os.readlink(name))
            elif stat.S_ISDIR(st.st_mode):
                out[name] = Walked(path=name, kind="dir", mode=stat.S_IMODE(st.st_mode), data=None, link=None)
            else:
                data = Path(name).read_bytes()
                out[name] = Walked(
                    path=name, kind="file", mode=stat.S_IMODE(st.st_mode), data=data, link=None
                )
    return out


@dataclass(frozen=True, kw_only=True)
class Interpreter:
    executable: str  # as invoked: what `python -m venv` sees as sys.executable
    realpath: str
    version: str  # "3.11.7"
    venv_dir: str  # its stdlib's venv package

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def interpreter(executable: str = sys.executable) -> Interpreter:
    """The interpreter's own view (a pyenv shim resolves to the interpreter it runs)."""
    probe = (
        "import os, sys, venv; print(sys.executable, os.path.dirname(venv.__file__), sys.version.split()[0])"
    )
    out = subprocess.run([executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
    return Interpreter(executable=out[0], realpath=os.path.realpath(out[0]), version=out[2], venv_dir=out[1])


def interpreters() -> list[Interpreter]:
    """One interpreter per CPython minor 3.8-3.13 installed on this host (this one's minor always)."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": interpreter()}
    # on PATH, or beside this interpreter's prefix (pyenv keeps each version in versions/X.Y.Z)
    siblings = Path(sys.base_prefix).parent
    for minor in range(8, 14):
        beside = [str(p) for p in sorted(siblings.glob(f"*/bin/python3.{minor}"))]
        for exe in [shutil.which(f"python3.{minor}"), *beside[-1:]]:
            if not exe or f"3.{minor}" in found:
                continue
            try:
                found[f"3.{minor}"] = interpreter(exe)
            except subprocess.CalledProcessError:
                continue  # a pyenv shim for a version it does not select
    return [found[k] for k in sorted(found, key=lambda v: int(v.split(".")[1]))]


def templates(python: Interpreter) -> dict[str, tuple[bytes, int]]:
    """The interpreter's venv activate templates (what the base image's stdlib holds in a build)."""
    scripts = Path(python.venv_dir) / "scripts"
    return {
        f"{d}/{f.name}": (f.read_bytes(), f.stat().st_mode)
        for d in ("common", "posix")
        if (scripts / d).is_dir()
        for f in (scripts / d).iterdir()
    }


def merge(entries: list[ExpectedFile]) -> dict[str, ExpectedFile]:
    """One entry per path: a directory several wheels create is one directory; a file twice is a bug."""
    out: dict[str, ExpectedFile] = {}
    for e in entries:
        if e.path in out:
            assert e.kind == "dir" and out[e.path].kind == "dir", f"{e.path} expected twice"
            continue
        out[e.path] = e
    return out


@dataclass(frozen=True, kw_only=True)
class Expected:
    files: dict[str, ExpectedFile]
    parts: tuple[Expectation, ...]  # the venv's and each wheel's, for their generated files

    def check_generated(self, path: str, content: bytes) -> str | None:
        owners = [part for part in self.parts if path in dict(part.generated)]
        assert len(owners) == 1, f"{path}: {len(owners)} rules"
        return owners[0].check_generated(path, content)


def differences(found: dict[str, Walked], expected: Expected, *, python: Interpreter) -> list[str]:
    """Every way the walked tree and the expectation disagree; generated files judged by their rules."""
    want = expected.files
    out = [f"extra {p}" for p in sorted(set(found) - set(want))]
    out += [f"missing {p}" for p in sorted(set(want) - set(found))]
    for p in sorted(set(want) & set(found)):
        e, f = want[p], found[p]
        if e.kind != f.kind:
            out.append(f"{p}: {f.kind}, expected {e.kind}")
        elif e.kind == "symlink":
            if e.link != f.link:
                out.append(f"{p}: -> {f.link}, expected -> {e.link}")
        elif e.mode != f.mode:
            out.append(f"{p}: mode {f.mode:o}, expected {e.mode:o}")
        elif e.kind == "file" and f.data is not None:
            reason: str | None = None
            if e.check == "bytes":
                if (e.sha256, e.size) != (hashlib.sha256(f.data).hexdigest(), len(f.data)):
                    reason = "bytes differ"
            elif e.check == "pyc":
                assert e.pyc_source is not None
                source = found[e.pyc_source].data or b""
                reason = check_pyc(f.data, source, python=python.minor, source_path=e.pyc_source)
            elif e.check == "generated":
                reason = expected.check_generated(p, f.data)
            else:
                reason = f"unexpected check {e.check}"
            if reason:
                out.append(f"{p}: {reason}")
    return out


def expected_venv(root: Path, wheels: list[Path], python: Interpreter) -> Expected:
    parts = [
        venv_expectation(
            venv=str(root),
            version=python.version,
            base_executable=python.executable,
            base_realpath=python.realpath,
            templates=templates(python),
            wheels=bool(wheels),
        )
    ]
    for w in wheels:
        parts.append(
            venv_wheel_expectation(
                w,
                venv=str(root),
                python=python.minor,
                requirement_name=w.name.split("-")[0],
                source=f"wheel:{w.name}",
            )
        )
    return Expected(files=merge([f for part in parts for f in part.files]), parts=tuple(parts))
