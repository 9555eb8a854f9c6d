"""The Python environment a user runs in, on this machine: which one, its interpreter's version, its site
directories in import order, and the distributions installed there (read by the same probes that read
an image's, observe.probes.python, over the host's filesystem).

Which environment (`choose_environment`), in this order:
- `--venv DIR`: that virtual environment;
- `--python PATH`: that interpreter; when it is a venv's (`PATH/../../pyvenv.cfg` exists) the venv;
- `$VIRTUAL_ENV`, set by `activate`, `uv run` and `poetry shell`: the venv the user has active;
- else `python3` on $PATH, the interpreter the user's `python3` starts (resolved as above).
mlenv's own interpreter (sys.executable) is never the default: mlenv is often installed with pipx or
`uv tool` in a venv of its own, which is not the environment the user's code runs in.

A venv is read from its files alone: pyvenv.cfg, the interpreter binary it links to (the version CPython
embeds in it or in its libpython) and `lib/pythonX.Y/site-packages`. A venv made with
include-system-site-packages, and an interpreter outside any venv (a system or conda Python), also import
from directories no file names, so that interpreter is asked for its sys.path (`-I`, sources.interpreter).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from mlenv.errors import MlenvError
from mlenv.model.facts import DistFact
from mlenv.observe.fs.rootfs import DirectoryFS, ImageFS, NotKeptError
from mlenv.observe.probes.python import interpreter_version, parse_pyvenv_cfg, read_dists
from mlenv.observe.stream.decompress import StreamError
from mlenv.sources.interpreter import InterpreterAnswer, ask_interpreter

_BINARY = re.compile(r"python(\d+\.\d+t?)$")
MAX_PYVENV_CFG = 64 << 10  # bytes: venv, virtualenv and uv write a few lines; a larger file is not one


@dataclass(frozen=True, kw_only=True)
class LocalEnv:
    """One environment on this machine, located (nothing of its packages read yet)."""

    kind: str  # "venv" or "interpreter"
    location: str  # the venv's directory, or the interpreter's path
    chosen_by: str  # how it was chosen: "--venv", "--python", "$VIRTUAL_ENV", "python3 on PATH"
    interpreter: str  # what the user runs: <venv>/bin/python, or the interpreter as named
    version: str  # X.Y.Z, or X.Y when no file says the patch level
    sites: tuple[str, ...]  # where it imports distributions from, first wins
    notes: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return f"{self.kind} {self.location} (python {self.version}, chosen by {self.chosen_by})"


@dataclass(frozen=True, kw_only=True)
class LocalDists:
    """The distributions an environment imports: the first of each name on its sites (DistFact.site is
    where it lives), and those a site earlier on the path hides."""

    dists: tuple[DistFact, ...]
    shadowed: tuple[DistFact, ...] = ()


def host_fs() -> ImageFS:
    """This machine's filesystem, so a venv's absolute links (bin/python -> /usr/bin/python3.11) resolve."""
    return DirectoryFS("/")


def choose_environment(
    *, python: str | None, venv: str | None, environ: Mapping[str, str], fs: ImageFS | None = None
) -> LocalEnv:
    """The environment to check (see the module docstring for the order)."""
    fs = fs or host_fs()
    if venv is not None:
        return read_venv(fs, venv, chosen_by="--venv")
    if python is not None:
        return read_interpreter(fs, python, chosen_by="--python", environ=environ)
    active = environ.get("VIRTUAL_ENV")
    if active:
        return read_venv(fs, active, chosen_by="$VIRTUAL_ENV")
    found = shutil.which("python3", path=environ.get("PATH", os.defpath))
    if found is None:
        raise MlenvError(
            "no environment to check: $VIRTUAL_ENV is not set and there is no python3 on PATH",
            hint="activate the environment, or name it with --venv DIR or --python PATH",
        )
    return read_interpreter(fs, found, chosen_by="python3 on PATH", environ=environ)


def _absolute(path: str) -> str:
    # Lexically, not resolved: a venv's bin/python is a link out of the venv, and it is the venv's.
    return posixpath.normpath(os.path.abspath(path))


def read_venv(fs: ImageFS, directory: str, *, chosen_by: str) -> LocalEnv:
    where = _absolute(directory)
    if not os.path.lexists(where):
        raise MlenvError(f"{chosen_by} {directory}: no such directory")
    if not fs.is_dir(where):
        raise MlenvError(f"{chosen_by} {directory}: not a directory; a virtual environment is one")
    cfg_path = posixpath.join(where, "pyvenv.cfg")
    if not fs.is_file(cfg_path):
        raise MlenvError(f"{chosen_by} {directory}: not a virtual environment (no pyvenv.cfg)")
    try:
        if fs.size(cfg_path) > MAX_PYVENV_CFG:
            raise MlenvError(
                f"{chosen_by} {directory}: {cfg_path} is {fs.size(cfg_path)} bytes, not a pyvenv.cfg"
            )
        config = parse_pyvenv_cfg(fs.read_text(cfg_path), cfg_path)
    except (OSError, NotKeptError, UnicodeDecodeError, StreamError) as error:
        raise MlenvError(f"{chosen_by} {directory}: cannot read {cfg_path} ({error})") from None
    interpreter = next(
        (p for p in (posixpath.join(where, "bin", n) for n in ("python", "python3")) if fs.exists(p)), None
    )
    if interpreter is None:
        raise MlenvError(f"{chosen_by} {directory}: has no bin/python (the venv's interpreter is gone)")
    if config.get("include-system-site-packages", "").lower() == "true":
        # The base's site directories are importable too; only the interpreter knows which they are.
        answer = ask_interpreter(interpreter, what=f"{chosen_by} {directory}: bin/python")
        return LocalEnv(
            kind="venv",
            location=where,
            chosen_by=chosen_by,
            interpreter=interpreter,
            version=answer.version,
            sites=_answer_sites(fs, answer),
            notes=(
                "include-system-site-packages = true: the base interpreter's packages were read too "
                "(sys.path asked of bin/python)",
            ),
        )
    version = _venv_version(fs, where, interpreter, config)
    major_minor = ".".join(version.split(".")[:2])
    sites = [
        site
        for lib in ("lib", "lib64")
        for site in fs.glob(f"{where}/{lib}/python{major_minor}*/site-packages")
        if fs.is_dir(site)
    ]
    if not sites:
        raise MlenvError(f"{chosen_by} {directory}: no lib/python{major_minor}/site-packages")
    return LocalEnv(
        kind="venv",
        location=where,
        chosen_by=chosen_by,
        interpreter=interpreter,
        version=version,
        sites=tuple(dict.fromkeys(fs.realpath(s) for s in sites)),
    )


def _venv_version(fs: ImageFS, where: str, interpreter: str, config: Mapping[str, str]) -> str:
    """The exact version of the binary the venv runs (pyvenv.cfg may predate an upgrade of the base
    Python), else pyvenv.cfg's (`version` from venv, `version_info` from uv and virtualenv)."""
    real = fs.realpath(interpreter)
    match = _BINARY.search(real)
    if match is not None and fs.is_file(real):
        major_minor = match.group(1)
        prefixes = [posixpath.dirname(posixpath.dirname(real))]
        if config.get("home"):  # a venv made with --copies: its libpython stays with the base
            prefixes.append(posixpath.dirname(config["home"].rstrip("/")))
        for prefix in prefixes:
            version = interpreter_version(fs, real, prefix, major_minor, {})
            if version != major_minor:
                return version
    raw = config.get("version") or config.get("version_info")
    if raw:
        return ".".join(raw.split(".")[:3])
    if match is not None:
        return match.group(1)
    raise MlenvError(f"{where}: cannot tell the venv's Python version (pyvenv.cfg names none)")


def read_interpreter(fs: ImageFS, python: str, *, chosen_by: str, environ: Mapping[str, str]) -> LocalEnv:
    path = _absolute(python) if "/" in python else shutil.which(python, path=environ.get("PATH")) or python
    venv = posixpath.dirname(posixpath.dirname(path))
    if (
        fs.is_file(posixpath.join(venv, "pyvenv.cfg"))
        and posixpath.basename(posixpath.dirname(path)) == "bin"
    ):
        return read_venv(fs, venv, chosen_by=chosen_by)
    if not os.path.lexists(path):
        raise MlenvError(f"{chosen_by} {python}: no such file")
    if os.path.isdir(path):
        raise MlenvError(
            f"{chosen_by} {python}: is a directory; --python takes an interpreter, --venv a venv"
        )
    answer = ask_interpreter(path, what=f"{chosen_by} {python}")
    python_path = environ.get("PYTHONPATH", "")
    notes = (
        ["$PYTHONPATH directories were read too: the interpreter imports from them"] if python_path else []
    )
    return LocalEnv(
        kind="interpreter",
        location=path,
        chosen_by=chosen_by,
        interpreter=path,
        version=answer.version,
        sites=_answer_sites(fs, answer, python_path=python_path),
        notes=tuple(notes),
    )


def _answer_sites(fs: ImageFS, answer: InterpreterAnswer, *, python_path: str = "") -> tuple[str, ...]:
    """The directories of sys.path as the user's own runs have it: $PYTHONPATH first, then the isolated
    sys.path with the user site before the first site directory (where site.py puts it, outside a venv)."""
    path = list(answer.path)
    if answer.user_site and answer.prefix == answer.base_prefix:
        first = next((i for i, p in enumerate(path) if p.endswith(("-packages", "-packages/"))), len(path))
        path.insert(first, answer.user_site)
    entries = [p for p in python_path.split(os.pathsep) if p] + path
    sites = []
    for entry in entries:
        if entry.startswith("/") and fs.is_dir(entry):
            sites.append(fs.realpath(entry))
    return tuple(dict.fromkeys(sites))


def read_environment(fs: ImageFS, env: LocalEnv, *, check_files: bool) -> LocalDists:
    """The distributions of `env`'s sites, first site first; `check_files` checks each against its own
    RECORD (read_dists)."""
    seen: dict[str, DistFact] = {}
    shadowed: list[DistFact] = []
    for site in env.sites:
        try:
            found = read_dists(fs, site, check_files=check_files)
        except (StreamError, OSError) as error:
            raise MlenvError(f"{env.location}: cannot read {site} ({error})") from None
        for dist in found:
            if dist.name in seen:
                shadowed.append(dist)  # import finds the earlier one; this one never runs
            else:
                seen[dist.name] = dist
    return LocalDists(
        dists=tuple(sorted(seen.values(), key=lambda d: d.name)),
        shadowed=tuple(sorted(shadowed, key=lambda d: (d.name, d.site))),
    )
