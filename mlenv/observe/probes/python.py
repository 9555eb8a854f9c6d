"""Python in an image: interpreters and their exact versions, site directories, virtual
environments, and the installed distributions with their RECORD checked against the files.

The exact version comes from the interpreter itself: CPython embeds PY_VERSION ("3.11.2") as a
NUL-terminated string in the binary, or in libpythonX.Y.so when the binary links it (the
python:3.x-slim layout). The X.Y to look for is known from the file name, so the scan is a plain
search for "X.Y." that cannot confuse another Python's version. patchlevel.h, the Debian package
version and pyvenv.cfg are fallbacks, in that order.
"""

from __future__ import annotations

import base64
import csv
import io
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from mlenv.model.facts import AptFact, DistFact, InterpreterFact, PthFact, RecordEntry
from mlenv.observe.fs.rootfs import FileInfo, ImageFS, NotKeptError
from mlenv.observe.limits import text_lines
from mlenv.observe.probes.dpkg import upstream_version
from mlenv.observe.stream.decompress import StreamError

INTEREST = (
    r"(/[^/]+)*/bin/python[0-9]+\.[0-9]+t?",
    r"(/[^/]+)*/lib(64)?/([^/]+/)?libpython[0-9]+\.[0-9]+t?\.so[0-9.]*",
    r"(/[^/]+)*/include/python[0-9]+\.[0-9]+t?/patchlevel\.h",
    r"(/[^/]+)*/pyvenv\.cfg",
    # Any directory: `pip install --target DIR` and PYTHONPATH folders hold dist-info outside a site.
    r"(/[^/]+)*/[^/]+\.dist-info/(METADATA|RECORD|INSTALLER)",
    r"(/[^/]+)*/(site|dist)-packages/[^/]+\.pth",
    r"(/[^/]+)*/(site|dist)-packages/[^/]+\.egg-info(/PKG-INFO)?",
)

_BINARY = re.compile(r"^python(\d+)\.(\d+)(t?)$")
_ALIASES = re.compile(r"^python(\d+(\.\d+t?)?)?$")
# Where interpreters live when no PATH says otherwise: distro, /usr/local builds, conda/pyenv/uv.
_BIN_DIRS = (
    "/usr/bin",
    "/usr/local/bin",
    "/bin",
    "/opt/*/bin",
    "/opt/*/*/bin",
    "/root/.pyenv/versions/*/bin",
    "/root/.local/share/uv/python/*/bin",
    "/usr/local/python*/bin",
)
# Mounted by the engine at run time, never part of an image's environment.
_RUNTIME = ("/proc/", "/sys/", "/dev/")
# PY_VERSION: digits after "X.Y.", an optional pre-release and "+", then NUL; the linker may merge it
# into the tail of a longer string ("/usr/src/Python-3.11.7"), so only the left edge is a non-digit.
_TAIL_PATTERN = re.compile(rb"(\d+(?:(?:a|b|rc)\d+)?\+?)\x00")
_DIGITS_AND_DOT = frozenset(b"0123456789.")


@dataclass(frozen=True, kw_only=True)
class PythonInstall:
    """One real interpreter binary and what it implies."""

    path: str  # canonical path of the binary
    version: str
    prefix: str  # the directory above bin/
    major_minor: str  # "3.11", "3.13t" for free-threaded builds


@dataclass(frozen=True, kw_only=True)
class VirtualEnv:
    path: str
    version: str | None
    base: PythonInstall | None
    system_site_packages: bool


# --------------------------------------------------------------------------- versions


def version_in_binary(data: bytes, major_minor: str) -> str | None:
    """The X.Y.Z CPython embedded in an interpreter or libpython, for a known X.Y."""
    # The literal "X.Y." is found by bytes.find (a memchr scan) and only its hits are matched: a regex
    # tried at every byte of a 7 MB interpreter took 0.28 s of each verify (measured).
    needle = major_minor.rstrip("t").encode() + b"."
    tail = _TAIL_PATTERN
    found: Counter[bytes] = Counter()
    at = data.find(needle)
    while at >= 0:
        if at == 0 or data[at - 1] not in _DIGITS_AND_DOT:
            match = tail.match(data, at + len(needle))
            if match:
                found[match.group(1)] += 1
        at = data.find(needle, at + 1)
    if not found:
        return None
    # Normally one candidate; if build paths add others, the most frequent, then the highest wins.
    best = max(found.items(), key=lambda item: (item[1], item[0]))[0]
    return f"{major_minor.rstrip('t')}.{best.decode()}"


def _read(fs: ImageFS, path: str) -> bytes | None:
    try:
        return fs.read_bytes(path)
    except (OSError, NotKeptError):
        return None


def _libpython_candidates(fs: ImageFS, prefix: str, major_minor: str) -> list[str]:
    found: list[str] = []
    for lib in ("lib", "lib64", "lib/*"):
        found.extend(fs.glob(f"{prefix.rstrip('/')}/{lib}/libpython{major_minor}.so*"))
    return found


def interpreter_version(
    fs: ImageFS, binary: str, prefix: str, major_minor: str, apt: Mapping[str, str]
) -> str:
    data = _read(fs, binary)
    if data is not None and (version := version_in_binary(data, major_minor)):
        return version
    for library in _libpython_candidates(fs, prefix, major_minor):
        data = _read(fs, library)
        if data is not None and (version := version_in_binary(data, major_minor)):
            return version
    header = _read(fs, f"{prefix.rstrip('/')}/include/python{major_minor}/patchlevel.h")
    if header is not None:
        match = re.search(rb'#define\s+PY_VERSION\s+"([0-9A-Za-z.+]{1,40})"', header)
        if match:
            return match.group(1).decode("ascii")
    if prefix == "/usr":
        for package in (
            f"python{major_minor}-minimal",
            f"python{major_minor}",
            f"libpython{major_minor}-minimal",
        ):
            if package in apt:
                return upstream_version(apt[package]).split("~")[0].split("+")[0]
    return major_minor  # the series is certain from the file name; the patch level is unknown


def find_interpreters(
    fs: ImageFS, *, path_dirs: Iterable[str] = (), apt: tuple[AptFact, ...] = ()
) -> list[PythonInstall]:
    """Real interpreter binaries (pythonX.Y files, not links) in PATH and the usual bin dirs,
    outside virtual environments."""
    packages = {fact.name: fact.version for fact in apt}
    directories: list[str] = []
    for pattern in (*path_dirs, *_BIN_DIRS):
        directories.extend(fs.glob(pattern) if any(c in pattern for c in "*?[") else [pattern])
    installs: dict[str, PythonInstall] = {}
    for directory in directories:
        if not fs.is_dir(directory):
            continue
        real_dir = fs.realpath(directory)
        if fs.lexists(posixpath.join(posixpath.dirname(real_dir), "pyvenv.cfg")):
            continue  # a venv's bin: reported with its venv
        for name in fs.listdir(real_dir):
            match = _BINARY.match(name)
            path = f"{real_dir.rstrip('/')}/{name}"
            if not match or fs.is_symlink(path) or not fs.is_file(path) or path in installs:
                continue
            major_minor = f"{match.group(1)}.{match.group(2)}{match.group(3)}"
            prefix = posixpath.dirname(real_dir) or "/"
            installs[path] = PythonInstall(
                path=path,
                prefix=prefix,
                major_minor=major_minor,
                version=interpreter_version(fs, path, prefix, major_minor, packages),
            )
    return sorted(installs.values(), key=lambda install: install.path)


# --------------------------------------------------------------------------- virtual environments


def parse_pyvenv_cfg(text: str, what: str = "pyvenv.cfg") -> dict[str, str]:
    values = {}
    for line in text_lines(text, what):
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip()
    return values


def _venv_dirs(fs: ImageFS) -> list[str]:
    """Every directory with a pyvenv.cfg, at any depth (one walk of the tree's files)."""
    return sorted(
        posixpath.dirname(path)
        for path in fs.file_paths("/")
        if path.endswith("/pyvenv.cfg") and not path.startswith(_RUNTIME)
    )


def find_venvs(fs: ImageFS, installs: list[PythonInstall]) -> list[VirtualEnv]:
    by_path = {install.path: install for install in installs}
    venvs = []
    for directory in _venv_dirs(fs):
        cfg = posixpath.join(directory, "pyvenv.cfg")
        try:
            config = parse_pyvenv_cfg(fs.read_text(cfg), cfg)
        except (OSError, NotKeptError):
            config = {}  # unreadable (a link out of the image, a loop): the version is told by bin/python
        base = None
        version = None
        for name in ("python", "python3"):
            executable = posixpath.join(directory, "bin", name)
            if fs.exists(executable):
                real = fs.realpath(executable)
                base = by_path.get(real)
                if base is not None:
                    version = base.version
                elif fs.is_file(real) and (match := re.search(r"python(\d+\.\d+t?)$", real)):
                    # A venv made with --copies: the binary is its own.
                    data = _read(fs, real)
                    version = version_in_binary(data, match.group(1)) if data else None
                break
        if version is None:
            # uv writes version_info = 3.12.1.final.0, venv writes version = 3.11.2
            raw = config.get("version") or config.get("version_info")
            if raw:
                version = ".".join(raw.split(".")[:3])
        venvs.append(
            VirtualEnv(
                path=directory,
                version=version,
                base=base,
                system_site_packages=config.get("include-system-site-packages", "").lower() == "true",
            )
        )
    return venvs


def install_sites(fs: ImageFS, install: PythonInstall) -> tuple[str, ...]:
    """The site directories of a real interpreter that exist in the image, in its sys.path order.

    Debian's and Ubuntu's /usr/bin/python3 is patched to read dist-packages: /usr/local's for pip, then
    /usr/lib/python3's for apt's packages (its own site-packages is unused). Any other build, a
    python:3.X-slim's /usr/local one or Fedora's /usr, reads PREFIX/lib[64]/pythonX.Y/site-packages. The
    user site (~/.local) depends on the HOME of whoever runs it and is left out."""
    prefix = install.prefix.rstrip("/")
    version = install.major_minor
    if prefix == "/usr" and fs.is_dir("/usr/lib/python3/dist-packages"):
        candidates = [
            f"/usr/local/lib/python{version}/dist-packages",
            "/usr/lib/python3/dist-packages",
            f"/usr/lib/python{version}/dist-packages",
        ]
    else:
        candidates = [f"{prefix}/{lib}/python{version}/site-packages" for lib in ("lib64", "lib")]
    return _existing_dirs(fs, candidates)


def venv_sites(fs: ImageFS, venv: VirtualEnv) -> tuple[str, ...]:
    """A venv's site directory, then its base interpreter's when it includes the system site packages."""
    own = _existing_dirs(fs, sorted(fs.glob(f"{venv.path}/lib*/python*/site-packages")))
    if venv.system_site_packages and venv.base is not None:
        return _existing_dirs(fs, [*own, *install_sites(fs, venv.base)])
    return own


def _existing_dirs(fs: ImageFS, paths: Iterable[str]) -> tuple[str, ...]:
    """The directories among `paths`, canonical, each once, in order (lib64 is often a link to lib)."""
    return tuple(dict.fromkeys(fs.realpath(path) for path in paths if fs.is_dir(path)))


def interpreter_facts(
    fs: ImageFS, installs: list[PythonInstall], venvs: list[VirtualEnv]
) -> tuple[InterpreterFact, ...]:
    """Each real interpreter, every python/python3/pythonX.Y link to one in the same bin dirs,
    and each venv's bin/python*: a lock may name any of these paths. Each with its site directories."""
    by_path = {
        install.path: InterpreterFact(
            path=install.path, version=install.version, sites=install_sites(fs, install)
        )
        for install in installs
    }
    facts = dict(by_path)
    directories = {posixpath.dirname(install.path) for install in installs}
    for directory in sorted(directories):
        for name in fs.listdir(directory):
            path = posixpath.join(directory, name)
            if _ALIASES.match(name) and fs.is_symlink(path) and fs.exists(path):
                real = by_path.get(fs.realpath(path))
                if real is not None:
                    facts[path] = InterpreterFact(path=path, version=real.version, sites=real.sites)
    for venv in venvs:
        if venv.version is None:
            continue
        bin_dir = posixpath.join(venv.path, "bin")
        if fs.is_dir(bin_dir):
            sites = venv_sites(fs, venv)
            for name in fs.listdir(bin_dir):
                if _ALIASES.match(name) or _BINARY.match(name):
                    path = posixpath.join(bin_dir, name)
                    facts[path] = InterpreterFact(path=path, version=venv.version, sites=sites)
    return tuple(facts[path] for path in sorted(facts))


# --------------------------------------------------------------------------- site directories and dists


def site_directories(
    fs: ImageFS,
    installs: list[PythonInstall],
    venvs: list[VirtualEnv],
    *,
    python_path: Iterable[str] = (),
) -> list[str]:
    """Directories that hold installed distributions, canonical and sorted: the interpreters' and
    venvs' site directories, the directories on the image's PYTHONPATH (`python_path`), and any other
    directory holding a *.dist-info (a `pip install --target` folder)."""
    patterns = [
        "/usr/lib/python3*/site-packages",
        "/usr/lib/python3*/dist-packages",
        "/usr/local/lib/python3*/site-packages",
        "/usr/local/lib/python3*/dist-packages",
        "/usr/lib64/python3*/site-packages",
        "/root/.local/lib/python3*/site-packages",
        "/home/*/.local/lib/python3*/site-packages",
    ]
    for install in installs:
        for lib in ("lib", "lib64"):
            patterns.append(f"{install.prefix.rstrip('/')}/{lib}/python{install.major_minor}/site-packages")
            patterns.append(f"{install.prefix.rstrip('/')}/{lib}/python{install.major_minor}/dist-packages")
    for venv in venvs:
        patterns.append(f"{venv.path}/lib/python*/site-packages")
        patterns.append(f"{venv.path}/lib64/python*/site-packages")
    sites = set()
    for pattern in patterns:
        for path in fs.glob(pattern):
            if fs.is_dir(path):
                sites.add(fs.realpath(path))
    for directory in python_path:
        if directory.startswith("/") and fs.is_dir(directory):
            sites.add(fs.realpath(directory))
    sites.update(dist_info_parents(fs))
    return sorted(sites)


def dist_info_parents(fs: ImageFS) -> set[str]:
    """Every directory that holds a *.dist-info with METADATA, wherever it is (one walk of the tree)."""
    parents = set()
    for path in fs.file_paths("/"):
        if path.endswith(".dist-info/METADATA"):
            parents.add(posixpath.dirname(posixpath.dirname(path)))
    return parents


def pth_files(fs: ImageFS, sites: Iterable[str]) -> tuple[PthFact, ...]:
    """The .pth files of `sites`. site.py runs a line that starts with `import` at every interpreter
    start, so such a file is code, not a path list."""
    found = []
    for site in sites:
        for path in fs.glob(f"{site}/*.pth"):
            if not fs.is_file(path):
                continue
            try:
                text = fs.read_text(path)
            except NotKeptError:
                continue
            runs = any(line.startswith(("import ", "import\t")) for line in text.splitlines())
            found.append(PthFact(path=path, site=site, runs_code=runs, sha256=fs.sha256(path)))
    return tuple(sorted(found, key=lambda p: p.path))


def _headers(text: str, what: str = "METADATA") -> dict[str, str]:
    """Name and Version from core metadata (RFC 822 headers up to the first blank line)."""
    values: dict[str, str] = {}
    head = text.split("\n\n", 1)[0]  # the body (a long description) is not parsed
    for line in text_lines(head, what):
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in values:
            values[key] = value.strip()
    return values


def parse_record(text: str, what: str = "RECORD") -> tuple[RecordEntry, ...]:
    """RECORD's rows (path, hash, size). A row csv cannot read, or a NUL, makes the file malformed."""
    if "\x00" in text:
        raise StreamError(f"{what}: malformed RECORD (a NUL byte)")
    text_lines(text, what)
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise StreamError(f"{what}: malformed RECORD ({error})") from None
    entries = []
    for row in rows:
        if not row or not row[0]:
            continue
        path = row[0]
        digest = row[1] if len(row) > 1 else ""
        size = row[2] if len(row) > 2 else ""
        algorithm, _, value = digest.partition("=")
        entries.append(
            RecordEntry(
                path=path,
                sha256=value if algorithm == "sha256" and value else None,
                size=int(size) if size.strip().isascii() and size.strip().isdigit() else None,
            )
        )
    return tuple(entries)


def urlsafe_digest(hex_digest: str) -> str:
    """A hex sha256 in RECORD's form: urlsafe base64 without padding."""
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode("ascii")


def check_record(
    fs: ImageFS, site: str, record: tuple[RecordEntry, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modified, missing) paths of a RECORD, as RECORD writes them.

    A missing .pyc is not reported: byte code is a cache that images routinely strip and Python
    rebuilds. A .pyc that is there and differs is reported, since Python would run it.
    """
    modified, missing = [], []
    for entry in record:
        path = posixpath.normpath(posixpath.join(site, entry.path))
        try:
            info = fs.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            if not entry.path.endswith(".pyc"):
                missing.append(entry.path)
            continue
        if entry.sha256 is None and entry.size is None:
            continue
        try:
            if info.kind == "symlink":
                info = fs.stat(path)
            if _differs(fs, info, entry):
                modified.append(entry.path)
        except (OSError, NotKeptError):
            modified.append(entry.path)
    return tuple(sorted(modified)), tuple(sorted(missing))


def _differs(fs: ImageFS, info: FileInfo, entry: RecordEntry) -> bool:
    if not info.is_regular:
        return True
    if entry.size is not None and info.size != entry.size:
        return True
    # The layered view knows every file's hash already; a directory tree hashes on demand.
    return entry.sha256 is not None and urlsafe_digest(info.sha256 or fs.sha256(info.path)) != entry.sha256


def _distro_packaged(fs: ImageFS, site: str, dist_dir: str) -> bool:
    """A distribution the OS package manager installed: in the distro's own site directory and
    with no INSTALLER (no PEP 376 installer wrote it). Debian ships the wheel's RECORD unchanged
    while moving files (../scripts/pip is /usr/bin/pip), so its RECORD does not describe the
    files; dpkg's own md5sums do."""
    distro_site = site.startswith("/usr/lib/python") and site.endswith("/dist-packages")
    return distro_site and not fs.exists(posixpath.join(dist_dir, "INSTALLER"))


_DIST_DIR = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+?)(-py[^-]*)?(-[^-]+)?\.(dist|egg)-info$")


def read_dists(fs: ImageFS, site: str, *, check_files: bool = True) -> list[DistFact]:
    dists = []
    for name in fs.listdir(site):
        path = posixpath.join(site, name)
        if name.endswith(".dist-info") and fs.is_dir(path):
            metadata = _read(fs, posixpath.join(path, "METADATA"))
            record_text = _read(fs, posixpath.join(path, "RECORD"))
        elif name.endswith(".egg-info"):
            metadata = _read(fs, posixpath.join(path, "PKG-INFO")) if fs.is_dir(path) else _read(fs, path)
            record_text = None
        else:
            continue
        headers = _headers(metadata.decode("utf-8", "replace"), f"{path}/METADATA") if metadata else {}
        fallback = _DIST_DIR.match(name)
        dist_name = headers.get("Name") or (fallback.group("name") if fallback else None)
        version = headers.get("Version") or (fallback.group("version") if fallback else None)
        if not dist_name or not version:
            continue
        record_path = f"{path}/RECORD"
        record = parse_record(record_text.decode("utf-8", "replace"), record_path) if record_text else ()
        checked = check_files and record and not _distro_packaged(fs, site, path)
        modified, missing = check_record(fs, site, record) if checked else ((), ())
        dists.append(
            DistFact(
                name=canonicalize_name(dist_name),
                version=version,
                site=site,
                record=record,
                modified_files=modified,
                missing_files=missing,
            )
        )
    return sorted(dists, key=lambda d: (d.name, d.version))
