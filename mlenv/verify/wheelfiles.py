"""Exactly which files the venv of an mlenv-built image holds, derived from the locked wheels (pure).

A wheel is trusted because the lock pins its sha256; everything here is derived from its bytes and from
the rules of mlenv's venv step (render/dockerfile.py):

    python3 -m venv /opt/venv
    /opt/venv/bin/python -m pip install --no-index --require-hashes --no-deps --no-compile -r requirements.txt
    /opt/venv/bin/python -m pip uninstall --yes pip setuptools
    py_compile CHECKED_HASH of every .py under /opt/venv/lib that has no pyc yet

`wheel_expectation` says what pip puts in the venv for one wheel and
what the compile step adds for it;
`venv_expectation` says what `python -m venv` leaves once ensurepip's pip and setuptools are uninstalled.
pip's behaviour is taken from pip's installer (pip/_internal/operations/install/wheel.py and its
vendored distlib ScriptMaker; launcher templates read in pip 23.2.1, 24.0, 25.1, 25.2, 25.3, 26.0 and
26.3; tests/verify/test_wheelfiles.py installs with pip 23.2.1, 24.0, 25.3 and 26.3 and compares the
whole tree), and from PyPA's "Recording installed projects" spec. The rules, with the reason each
file exists:

- Every zip member that is not a directory is installed, byte for byte (pip installs the members, not
  the RECORD rows): root members into `site` (purelib and platlib are one directory in a venv),
  `<name>.data/<key>/...` into the scheme directory of `key` (purelib, platlib, scripts, data, headers).
  The wheel's RECORD must list every member with the sha256 and size of its real bytes (RECORD.jws and
  RECORD.p7s, the signatures, and RECORD itself are exempt, as the spec says); anything else is a
  `SourceError`: such a wheel vouches for nothing.
- Mode: 0o666 & ~umask, or (0o777 & ~umask) | 0o111 when the zip member has an executable bit.
- `.data/scripts` files whose first line starts with `#!python` get that line replaced by
  `#!<interpreter>` + "\\n" (pip's fix_script); their mode stays the member's (pip sets no +x there).
  A script named like an entry point (setuptools' wrapper) is not installed.
- console_scripts and gui_scripts of entry_points.txt become launchers in `scripts_dir`: distlib's
  template after `#!<interpreter>\\n`, mode (0o666 & ~umask) | 0o555. The template changed between pip
  releases (`LAUNCHER_TEMPLATES`) and the image's pip is the base's ensurepip bundle, so a launcher is
  check="generated": its sha256 must be that of one of the known renderings for its entry point
  (`Expectation.check_generated`). With a single template given, it is checked as bytes.
- `<dist-info>/INSTALLER` = b"pip\\n"; `<dist-info>/REQUESTED` = b"" (the requirement is named in
  requirements.txt, so pip records it as requested); no direct_url.json (pip writes it only for a
  requirement given as a URL or path, never for `name==version --hash` from --find-links).
- `<dist-info>/RECORD` is rewritten by pip (`installed_record`): the wheel's rows in their order mapped
  to installed paths relative to `site` (`../../../bin/x` for scripts), a changed script rehashed, then
  the launchers, INSTALLER and REQUESTED with their hashes, members missing from the wheel's RECORD with
  empty hash, and `RECORD,,` itself; all rows sorted, written by csv with "\\r\\n" line ends. It is
  derived exactly: as bytes for a wheel without entry points, else check="generated", one rendering
  per launcher template (the same template for all launchers of one pip run).
- The compile step: for every installed .py under `compile_root`, `__pycache__/<stem>.<cache tag>.pyc`
  (check="pyc", pyc_source = the .py) unless the wheel ships that exact pyc; none when the source does
  not compile (py_compile with doraise=False writes nothing then). A `__pycache__` directory is
  0o755 & ~umask, the pyc is the source's mode & 0o666 & ~umask.
- Directories: every parent directory of an installed file below the venv's own directories
  (0o777 & ~umask); the venv's own directories come from `venv_expectation`. One directory may be
  expected by several wheels (namespace packages, bin/): callers dedupe by path.
- A check="generated" file is judged by `Expectation.check_generated`: its sha256 must be one of the
  renderings its rule allows, all derived from the trusted inputs.

Owner: everything is written by the builder stage's root (uid 0, gid 0), and COPY --from keeps it.
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import io
import posixpath
import re
import shlex
import stat
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path

from mlenv.errors import SourceError
from mlenv.verify.manifest import ExpectedFile
from mlenv.verify.pyc import cache_tag

# The launcher template (ScriptMaker.script_template) as pip fills it for a console or gui entry point.
# Which one the image's pip uses depends on the pip that ensurepip put into the base's Python, so a
# launcher may be any of these renderings; each is nothing but the entry point's call. Read from the
# pip wheels named (distlib's own template until pip 25.1; pip's PipScriptMaker override since 25.2).
LAUNCHER_TEMPLATES: dict[str, str] = {
    "pip 23.2.1, 24.0, 25.1 (distlib's)": r"""# -*- coding: utf-8 -*-
import re
import sys
from %(module)s import %(import_name)s
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\.pyw|\.exe)?$', '', sys.argv[0])
    sys.exit(%(func)s())
""",
    "pip 25.2, 25.3": """import sys
from %(module)s import %(import_name)s
if __name__ == '__main__':
    if sys.argv[0].endswith('.exe'):
        sys.argv[0] = sys.argv[0][:-4]
    sys.exit(%(func)s())
""",
    "pip 26.0, 26.3": """import sys
from %(module)s import %(import_name)s
if __name__ == '__main__':
    sys.argv[0] = sys.argv[0].removesuffix('.exe')
    sys.exit(%(func)s())
""",
}

# The files pip writes into <dist-info> itself, and why.
PIP_GENERATED = {
    "INSTALLER": "pip records itself as the installer: b'pip\\n'",
    "REQUESTED": "the project is named in requirements.txt, so pip marks it as requested: empty",
    "RECORD": "pip rewrites the wheel's RECORD for the installed paths (installed_record)",
    "direct_url.json": "never: pip writes it only for a requirement given as a URL or a path",
}

# distlib's export-entry grammar (name = module:attr [extras]).
_ENTRY_RE = re.compile(
    r"(?P<name>(\w|[-.+])+)\s*=\s*(?P<callable>(\w+)([:.]\w+)*)"
    r"\s*(\[\s*(?P<flags>[\w-]+(=\w+)?(,\s*\w+(=\w+)?)*)\s*\])?"
)
_SCHEME_KEYS = ("purelib", "platlib", "scripts", "data", "headers")
_UNHASHED = ("RECORD", "RECORD.jws", "RECORD.p7s")


@dataclass(frozen=True, kw_only=True)
class EntryPoint:
    name: str  # the launcher's file name in bin/
    module: str
    attr: str  # "main" or "cli.main"
    gui: bool


@dataclass(frozen=True, kw_only=True)
class _Member:
    name: str  # zip member name, as RECORD lists it
    sha256: str  # hex, of its real bytes
    size: int
    executable: bool
    data: bytes | None  # kept only where a rule reads the content (.py, .data/scripts, dist-info)


def record_hash(data: bytes) -> str:
    """A RECORD hash field: sha256=<urlsafe base64 without padding>."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _keep(name: str) -> bool:
    """Whose bytes a rule reads: sources (compiled or not), scripts (#!python), the dist-info."""
    parts = name.split("/")
    return (
        name.endswith(".py")
        or parts[0].endswith(".dist-info")
        or (len(parts) > 2 and parts[0].endswith(".data") and parts[1] == "scripts")
    )


@dataclass(frozen=True, kw_only=True)
class _Wheel:
    members: list[_Member]
    info: str  # the .dist-info directory
    rows: list[list[str]]  # the wheel's RECORD


def _read_wheel(wheel: bytes | str | Path, label: str) -> _Wheel:
    """Every member, hashed while streamed (a wheel may be gigabytes), each checked against the wheel's
    RECORD: it must list every member with the hash and size of its real bytes, and nothing else."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(wheel) if isinstance(wheel, bytes) else Path(wheel))
    except zipfile.BadZipFile as e:
        raise SourceError(f"{label}: not a zip archive ({e})") from None
    with archive:
        infos = archive.infolist()
        seen: set[str] = set()
        for zinfo in infos:
            if zinfo.filename in seen:
                raise SourceError(f"{label}: member {zinfo.filename} appears twice")
            seen.add(zinfo.filename)
        files = [z for z in infos if not z.filename.endswith("/")]  # pip makes only the dirs files need
        tops = {z.filename.split("/", 1)[0] for z in files if "/" in z.filename}
        dist_infos = sorted(d for d in tops if d.endswith(".dist-info"))
        if len(dist_infos) != 1:
            raise SourceError(
                f"{label}: {len(dist_infos)} .dist-info directories at the top (a wheel has one)"
            )
        info = dist_infos[0]
        if f"{info}/RECORD" not in seen:
            raise SourceError(f"{label}: no {info}/RECORD")
        rows = [row for row in csv.reader(archive.read(f"{info}/RECORD").decode("utf-8").splitlines()) if row]
        listed: dict[str, list[str]] = {}
        for row in rows:
            if len(row) != 3:
                raise SourceError(f"{label}: RECORD row {row!r} has {len(row)} fields, not 3")
            if row[0] in listed:
                raise SourceError(f"{label}: RECORD lists {row[0]} twice")
            listed[row[0]] = row
        exempt = {f"{info}/{n}" for n in _UNHASHED}
        members = []
        for zinfo in files:
            name = zinfo.filename
            entry = None if name in exempt else listed.get(name)
            if entry is None and name not in exempt:
                raise SourceError(f"{label}: member {name} is not in the wheel's RECORD")
            algorithm, _, digest = entry[1].partition("=") if entry is not None else ("sha256", "", "")
            if entry is not None and algorithm not in ("sha256", "sha384", "sha512"):
                raise SourceError(f"{label}: RECORD hash of {name} is {entry[1]!r}, not sha256/384/512")
            sha256, other = hashlib.sha256(), hashlib.new(algorithm)
            chunks: list[bytes] | None = [] if _keep(name) else None
            size = 0
            try:
                with archive.open(zinfo) as stream:
                    while chunk := stream.read(1 << 20):
                        sha256.update(chunk)
                        other.update(chunk)
                        size += len(chunk)
                        if chunks is not None:
                            chunks.append(chunk)
            except (zipfile.BadZipFile, OSError) as e:  # a CRC mismatch is a BadZipFile
                raise SourceError(f"{label}: member {name} is unreadable ({e})") from None
            if entry is not None:
                if digest != _b64(other.digest()):
                    raise SourceError(
                        f"{label}: RECORD says {name} has {entry[1]}, its bytes have "
                        f"{algorithm}={_b64(other.digest())}"
                    )
                if entry[2] != str(size):
                    raise SourceError(f"{label}: RECORD says {name} has {entry[2]} bytes, it has {size}")
            mode = zinfo.external_attr >> 16
            members.append(
                _Member(
                    name=name,
                    sha256=sha256.hexdigest(),
                    size=size,
                    executable=bool(mode and stat.S_ISREG(mode) and mode & 0o111),
                    data=b"".join(chunks) if chunks is not None else None,
                )
            )
    names = {m.name for m in members}
    for path in listed:
        if path not in names:
            raise SourceError(f"{label}: RECORD lists {path}, which the wheel does not contain")
    return _Wheel(members=members, info=info, rows=rows)


def _entry_points(text: str) -> list[EntryPoint]:
    """console_scripts and gui_scripts, as importlib.metadata reads entry_points.txt (last name wins)."""
    found: dict[tuple[bool, str], str] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section in ("console_scripts", "gui_scripts"):
            name, sep, value = line.partition("=")
            if not sep:
                raise SourceError(f"entry_points.txt: line {line!r} is not name = value")
            found[(section == "gui_scripts", name.strip())] = value.strip()
    points = []
    for (gui, name), value in found.items():
        match = _ENTRY_RE.search(f"{name} = {value}")
        spec = match.group("callable") if match else ""
        if match is None or match.group("name") != name or spec.count(":") != 1:
            # pip refuses an entry point without a callable suffix (MissingCallableSuffix)
            raise SourceError(f"entry point {name} = {value} is not module:callable")
        module, attr = spec.split(":")
        points.append(EntryPoint(name=name, module=module, attr=attr, gui=gui))
    return points


def _console_names(points: list[EntryPoint], python: str) -> list[EntryPoint]:
    """pip's special case: pip and easy_install get versioned launchers (ENSUREPIP_OPTIONS unset)."""
    console = {p.name: p for p in points if not p.gui}
    out = []
    if "pip" in console:
        p = console.pop("pip")
        for name in ("pip", f"pip{python.split('.')[0]}", f"pip{python}"):
            out.append(EntryPoint(name=name, module=p.module, attr=p.attr, gui=False))
        for k in [k for k in console if re.match(r"pip(\d+(\.\d+)?)?$", k)]:
            del console[k]
    if "easy_install" in console:
        p = console.pop("easy_install")
        for name in ("easy_install", f"easy_install-{python}"):
            out.append(EntryPoint(name=name, module=p.module, attr=p.attr, gui=False))
        for k in [k for k in console if re.match(r"easy_install(-\d+\.\d+)?$", k)]:
            del console[k]
    return out + list(console.values()) + [p for p in points if p.gui]


def shebang(interpreter: str) -> bytes:
    """distlib's simple shebang line; mlenv's interpreter paths never need its /bin/sh trampoline."""
    line = b"#!" + interpreter.encode() + b"\n"
    if " " in interpreter or len(line) > 127:
        raise SourceError(
            f"interpreter path {interpreter!r} needs distlib's /bin/sh shebang, not derived here"
        )
    return line


def launcher_bytes(point: EntryPoint, *, interpreter: str, template: str) -> bytes:
    """The exact bytes pip (distlib's ScriptMaker with `template`) writes for entry point `point`."""
    script = template % {
        "module": point.module,
        "import_name": point.attr.split(".")[0],
        "func": point.attr,
    }
    return shebang(interpreter) + script.encode()


def fix_script(data: bytes, *, interpreter: str) -> bytes:
    """pip's fix_script: a first line starting with #!python becomes #!<interpreter>."""
    if not data.startswith(b"#!python"):
        return data
    newline = data.find(b"\n")
    rest = b"" if newline < 0 else data[newline + 1 :]
    return b"#!" + interpreter.encode() + b"\n" + rest


def source_compiles(source: bytes, *, path: str, python: str) -> bool:
    """Does py_compile of `source` succeed on CPython `python`? (decides whether its pyc exists)

    Exact when the host runs `python`'s minor (compile() is what py_compile calls). Otherwise the
    host's parser with feature_version for an older target: new syntax is refused as the target
    would refuse it, but a few errors only the compiler raises are not seen; for a newer target the
    host's parser is the best available judge. Either way a wrong guess is a false drift (a missing
    or an extra pyc), never a false match.
    """
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        if ".".join(python.split(".")[:2]) == host:
            compile(source, path, "exec", dont_inherit=True, optimize=0)
        else:
            minor = int(python.split(".")[1])
            feature = (3, minor) if minor < sys.version_info.minor else None
            ast.parse(source, path, feature_version=feature)
    except (SyntaxError, ValueError):
        return False
    return True


def _norm(path: str) -> str:
    return posixpath.normpath(path)


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True, kw_only=True)
class _Installed:
    dest: str
    sha256: str
    size: int
    data: bytes | None  # where the member's bytes were kept
    mode: int
    changed: bool


def installed_record(
    wheel_rows: list[list[str]],
    installed: Mapping[str, tuple[str, bytes | None]],
    generated: list[tuple[str, bytes]],
    *,
    site: str,
) -> bytes:
    """The RECORD pip writes: `installed` maps a member to (dest, its new bytes if pip changed it);
    `generated` is (dest, bytes) of launchers, INSTALLER and REQUESTED in pip's order. Paths relative
    to `site`."""

    def rel(dest: str) -> str:
        return posixpath.relpath(dest, site)

    rows: list[tuple[str, str, str]] = []
    pending = dict(installed)
    for row in wheel_rows:
        old = row[0]
        if old in pending:
            dest, data = pending.pop(old)
            path = rel(dest)
            if data is not None:
                rows.append((path, record_hash(data), str(len(data))))
                continue
        else:
            path = old  # listed but not installed (an entry-point wrapper script): pip keeps the row
        rows.append((path, row[1] if len(row) > 1 else "", row[2] if len(row) > 2 else ""))
    for dest, data in generated:
        rows.append((rel(dest), record_hash(data), str(len(data))))
    for dest, _ in pending.values():
        rows.append((rel(dest), "", ""))
    out = io.StringIO(newline="")
    csv.writer(out).writerows(sorted(rows))
    return out.getvalue().encode()


@dataclass(frozen=True, kw_only=True)
class Expectation:
    """What a step leaves in the venv: `files`, and for each check="generated" file the sha256 of every
    rendering its rule allows (`generated`: path -> digests). Plain data: cacheable by the wheel's sha256."""

    files: tuple[ExpectedFile, ...]
    generated: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def check_generated(self, path: str, content: bytes) -> str | None:
        """None if `content` is one of the renderings the rule for `path` allows, else why not."""
        allowed = dict(self.generated).get(path)
        if allowed is None:
            return f"{path} is not a generated file of this expectation"
        digest = hashlib.sha256(content).hexdigest()
        if digest in allowed:
            return None
        return (
            f"sha256 {digest} is none of the {len(allowed)} renderings its rule allows ({', '.join(allowed)})"
        )


def wheel_expectation(
    wheel: bytes | str | Path,
    *,
    site: str,
    scripts_dir: str,
    interpreter: str,
    python: str,
    data_dir: str,
    headers_dir: str,
    compile_root: str,
    source: str,
    umask: int = 0o022,
    compiles: Callable[[bytes, str], bool] | None = None,
    launcher_templates: Mapping[str, str] = LAUNCHER_TEMPLATES,
) -> Expectation:
    """Every file and directory pip's install of `wheel` and the compile step leave in the venv.

    wheel: the wheel's bytes or path (the caller has checked its sha256 against the lock).
    site: purelib == platlib ("/opt/venv/lib/python3.11/site-packages"); scripts_dir: "/opt/venv/bin";
    interpreter: sys.executable of the pip run ("/opt/venv/bin/python"), for shebangs; python: the
    image's minor ("3.11"), for the pyc cache tag and pip's versioned launchers; data_dir: the venv
    root; headers_dir: "<venv>/include/site/python3.11/<requirement name as in requirements.txt>";
    compile_root: the directory the compile step walks ("/opt/venv/lib"); source: ExpectedFile.source
    of every entry ("wheel:<filename>"); compiles(source, path): does the .py compile on the target
    (default `source_compiles`); launcher_templates: the distlib templates the image's pip may use.

    Files are check="bytes" with sha256/size/mode (members, fixed scripts, INSTALLER, REQUESTED, and
    RECORD when there are no launchers), check="generated" (launchers, and then RECORD: their allowed
    digests in `generated`), or check="pyc" with pyc_source; see the module docstring for each rule.
    Raises SourceError when the wheel's RECORD disagrees with its members or pip
    would refuse the wheel. Sorted by path.
    """
    label = source
    read = _read_wheel(wheel, label)
    members, info, wheel_rows = read.members, read.info, read.rows
    by_name = {m.name: m.data for m in members}
    meta = by_name.get(f"{info}/WHEEL")
    if meta is None:
        raise SourceError(f"{label}: no {info}/WHEEL")
    wheel_version = BytesParser().parsebytes(meta).get("Wheel-Version", "")
    if wheel_version.split(".")[0] != "1":
        raise SourceError(f"{label}: Wheel-Version {wheel_version!r} (pip installs only 1.x)")
    # purelib and platlib are the same directory in a venv, so Root-Is-Purelib changes nothing here
    roots = {
        "purelib": site,
        "platlib": site,
        "scripts": scripts_dir,
        "data": data_dir,
        "headers": headers_dir,
    }
    entry_points = by_name.get(f"{info}/entry_points.txt")
    points = _entry_points(entry_points.decode("utf-8")) if entry_points is not None else []
    entry_names = {p.name for p in points}

    def is_wrapper(dest: str) -> bool:
        name = posixpath.basename(dest)
        lower = name.lower()
        for suffix in (".exe", "-script.py", ".pya"):
            if lower.endswith(suffix):
                name = name[: -len(suffix)]
                break
        return name in entry_names

    root_files: list[_Member] = []
    data_files: list[_Member] = []
    script_files: list[_Member] = []
    for m in members:
        top = m.name.split("/", 1)[0]
        if not top.endswith(".data"):
            root_files.append(m)
            continue
        parts = _norm(m.name).split("/", 2)
        if len(parts) < 3 or parts[1] not in _SCHEME_KEYS:
            raise SourceError(f"{label}: {m.name} is not under <name>.data/<scheme key>/ (pip refuses it)")
        (script_files if parts[1] == "scripts" else data_files).append(m)

    installed: dict[str, _Installed] = {}
    file_mode = 0o666 & ~umask
    exec_mode = (0o777 & ~umask) | 0o111

    def place(m: _Member, root: str, sub: str, *, script: bool) -> None:
        dest = _norm(posixpath.join(root, sub))
        if not _within(root, dest):
            raise SourceError(f"{label}: {m.name} would install outside {root} (pip refuses it)")
        data = m.data
        if script:
            assert data is not None  # scripts are kept (_keep)
            data = fix_script(data, interpreter=interpreter)
        changed = data != m.data
        installed[m.name] = _Installed(
            dest=dest,
            sha256=hashlib.sha256(data).hexdigest() if changed and data is not None else m.sha256,
            size=len(data) if changed and data is not None else m.size,
            data=data,
            mode=exec_mode if m.executable else file_mode,
            changed=changed,
        )

    for m in root_files:
        place(m, site, _norm(m.name), script=False)
    for m in data_files:
        _, key, sub = _norm(m.name).split("/", 2)
        place(m, roots[key], sub, script=False)
    for m in script_files:
        _, _, sub = _norm(m.name).split("/", 2)
        if is_wrapper(posixpath.join(scripts_dir, sub)):
            continue
        place(m, scripts_dir, sub, script=True)

    # Last writer wins where two members land on one path (pip's order: root, data, scripts).
    final: dict[str, _Installed] = {}
    for item in installed.values():
        final[item.dest] = item

    dist_info = posixpath.join(site, info)
    record_path = posixpath.join(dist_info, "RECORD")
    scripts = _console_names(points, python)
    renderings: dict[str, set[str]] = {}  # path -> sha256 of each allowed rendering
    sizes: dict[str, int] = {}
    for template in launcher_templates.values():
        launchers = [
            (
                posixpath.join(scripts_dir, p.name),
                launcher_bytes(p, interpreter=interpreter, template=template),
            )
            for p in scripts
        ]
        record = installed_record(
            wheel_rows,
            {name: (i.dest, i.data if i.changed else None) for name, i in installed.items()},
            [
                *launchers,
                (posixpath.join(dist_info, "INSTALLER"), b"pip\n"),
                (posixpath.join(dist_info, "REQUESTED"), b""),
            ],
            site=site,
        )
        for path, data in [*launchers, (record_path, record)]:
            renderings.setdefault(path, set()).add(hashlib.sha256(data).hexdigest())
            sizes[path] = len(data)

    files: dict[str, ExpectedFile] = {}

    def add(path: str, sha256: str, size: int, mode: int) -> None:
        files[path] = ExpectedFile(
            path=path, kind="file", source=source, sha256=sha256, size=size, mode=mode, uid=0, gid=0
        )

    for dest, item in final.items():
        add(dest, item.sha256, item.size, item.mode)
    add(posixpath.join(dist_info, "INSTALLER"), hashlib.sha256(b"pip\n").hexdigest(), 4, file_mode)
    add(posixpath.join(dist_info, "REQUESTED"), hashlib.sha256(b"").hexdigest(), 0, file_mode)
    generated: dict[str, tuple[str, ...]] = {}
    for path, digests in renderings.items():
        mode = file_mode if path == record_path else file_mode | 0o555
        if len(digests) == 1:
            (digest,) = digests
            files[path] = ExpectedFile(
                path=path,
                kind="file",
                source=source,
                sha256=digest,
                size=sizes[path],
                mode=mode,
                uid=0,
                gid=0,
            )
        else:
            files[path] = ExpectedFile(
                path=path, kind="file", source=source, mode=mode, uid=0, gid=0, check="generated"
            )
            generated[path] = tuple(sorted(digests))

    judge = compiles or (lambda src, path: source_compiles(src, path=path, python=python))
    tag = cache_tag(python)
    for dest, item in sorted(final.items()):
        if not dest.endswith(".py") or not _within(compile_root, dest) or dest == compile_root:
            continue
        head, name = posixpath.split(dest)
        pyc = posixpath.join(head, "__pycache__", f"{name[:-3]}.{tag}.pyc")
        assert item.data is not None  # a .py is kept (_keep)
        if pyc in files or not judge(item.data, dest):
            continue
        files[pyc] = ExpectedFile(
            path=pyc,
            kind="file",
            source=source,
            mode=item.mode & 0o666 & ~umask,
            uid=0,
            gid=0,
            check="pyc",
            pyc_source=dest,
        )

    venv_dirs = _ancestors(site, stop=data_dir) | _ancestors(scripts_dir, stop=data_dir)
    venv_dirs |= {_norm(data_dir), _norm(posixpath.join(data_dir, "include"))}
    dirs: set[str] = set()
    for path in files:
        dirs |= _ancestors(posixpath.dirname(path), stop=data_dir)
    dir_mode = 0o777 & ~umask
    for d in dirs - venv_dirs:
        files[d] = ExpectedFile(path=d, kind="dir", source=source, mode=dir_mode, uid=0, gid=0)
    return Expectation(
        files=tuple(files[p] for p in sorted(files)), generated=tuple(sorted(generated.items()))
    )


def _ancestors(path: str, *, stop: str) -> set[str]:
    """`path` and its parents, down to and including `stop` (when `path` is below it)."""
    out: set[str] = set()
    path, stop = _norm(path), _norm(stop)
    while _within(stop, path):
        out.add(path)
        if path == stop:
            break
        path = posixpath.dirname(path)
    return out


def venv_wheel_expectation(
    wheel: bytes | str | Path,
    *,
    venv: str,
    python: str,
    requirement_name: str,
    source: str,
    umask: int = 0o022,
) -> Expectation:
    """`wheel_expectation` for mlenv's venv step: pip run as `<venv>/bin/python` on posix, the compile
    step walking `<venv>/lib`. requirement_name: the name requirements.txt gives (pip's headers dir)."""
    return wheel_expectation(
        wheel,
        site=f"{venv}/lib/python{python}/site-packages",
        scripts_dir=f"{venv}/bin",
        interpreter=f"{venv}/bin/python",
        python=python,
        data_dir=venv,
        headers_dir=f"{venv}/include/site/python{python}/{requirement_name}",
        compile_root=f"{venv}/lib",
        source=source,
        umask=umask,
    )


# ---- the venv itself ----------------------------------------------------------------------------------


def venv_expectation(
    *,
    venv: str,
    version: str,
    base_executable: str,
    base_realpath: str,
    templates: Mapping[str, tuple[bytes, int]],
    wheels: bool = True,
    umask: int = 0o022,
) -> Expectation:
    """What `<base_executable> -m venv <venv>` leaves in the image, once pip and setuptools are uninstalled.

    version: the base interpreter's full version ("3.11.9"); base_executable: its sys.executable when
    the Dockerfile runs `python3 -m venv` ("/usr/local/bin/python3"); base_realpath: os.path.realpath of
    it ("/usr/local/bin/python3.11"); templates: the base's venv/scripts/{common,posix}/* files by
    relative name ("common/activate") with their mode (read from the locked base: they are trusted);
    wheels: whether the lock installs any wheel. The base is 64-bit posix (every mlenv platform), with
    symlinks (venv's default there). Source of every entry: "step:venv".

    - directories <venv>, bin, include, lib, lib/pythonX.Y, lib/pythonX.Y/site-packages, and from 3.11
      include/pythonX.Y: 0o777 & ~umask (os.makedirs). ensurepip's pip and setuptools are uninstalled
      with everything their RECORD lists: nothing of theirs remains, not even a directory. When no
      wheel was installed on 3.11 and older, that takes site-packages itself: pip removes a directory
      all of whose files it uninstalls, and ensurepip's setuptools (not bundled from 3.12) has files
      directly in site-packages.
    - lib64 -> lib: venv links it on 64-bit non-macOS posix.
    - pyvenv.cfg (exact bytes, `pyvenv_cfg`), 0o666 & ~umask.
    - bin/<basename of base_executable> -> base_executable (absolute); python, python3 and (3.9+)
      python3.Y that are not that name -> it (relative), as venv's setup_python links them.
    - bin/<template name> for each UTF-8 template (venv skips others): check="generated", allowed
      renderings from `activate_renderings`; the template's mode (venv copies it with shutil.copymode).
    - 3.13+: .gitignore ("*", venv's scm_ignore_files default), 0o666 & ~umask.
    """
    major, minor, _ = (int(x) for x in version.split("."))
    short = f"{major}.{minor}"
    dir_mode = 0o777 & ~umask
    file_mode = 0o666 & ~umask
    out: list[ExpectedFile] = []
    generated: list[tuple[str, tuple[str, ...]]] = []

    def entry(path: str, **kw: object) -> None:
        full = f"{venv}/{path}".rstrip("/")
        out.append(ExpectedFile(path=full, source="step:venv", uid=0, gid=0, **kw))  # type: ignore[arg-type]

    def fixed(path: str, data: bytes) -> None:
        entry(path, kind="file", sha256=hashlib.sha256(data).hexdigest(), size=len(data), mode=file_mode)

    dirs = ["", "bin", "include", "lib", f"lib/python{short}"]
    if wheels or (major, minor) >= (3, 12):
        dirs.append(f"lib/python{short}/site-packages")
    if (major, minor) >= (3, 11):
        dirs.append(f"include/python{short}")  # 3.11+ takes the include dir from sysconfig's venv scheme
    for d in dirs:
        entry(d, kind="dir", mode=dir_mode)
    entry("lib64", kind="symlink", link="lib")
    fixed(
        "pyvenv.cfg",
        pyvenv_cfg(venv=venv, version=version, base_executable=base_executable, base_realpath=base_realpath),
    )
    exe = posixpath.basename(base_executable)
    entry(f"bin/{exe}", kind="symlink", link=base_executable)
    names = ["python", "python3"] + ([f"python3.{minor}"] if (major, minor) >= (3, 9) else [])
    for name in names:
        if name != exe:
            entry(f"bin/{name}", kind="symlink", link=exe)
    for rel, (template, mode) in sorted(templates.items()):
        kind, _, name = rel.partition("/")
        if kind not in ("common", "posix") or not name or "/" in name:
            raise ValueError(f"venv template {rel} is not common/NAME or posix/NAME")
        renderings = activate_renderings(
            template, name=name, venv=venv, base_executable=base_executable, python=short
        )
        if not renderings:
            continue
        entry(f"bin/{name}", kind="file", mode=stat.S_IMODE(mode), check="generated")
        digests = sorted({hashlib.sha256(r).hexdigest() for r in renderings})
        generated.append((f"{venv}/bin/{name}", tuple(digests)))
    if (major, minor) >= (3, 13):
        fixed(".gitignore", b"# Created by venv; see https://docs.python.org/3/library/venv.html\n*\n")
    return Expectation(files=tuple(sorted(out, key=lambda e: e.path)), generated=tuple(sorted(generated)))


def pyvenv_cfg(*, venv: str, version: str, base_executable: str, base_realpath: str) -> bytes:
    """pyvenv.cfg as `python3 -m venv <venv>` writes it (no options; 3.11+ adds executable and command)."""
    major, minor, _ = (int(x) for x in version.split("."))
    lines = [
        f"home = {posixpath.dirname(base_executable)}",
        "include-system-site-packages = false",
        f"version = {version}",
    ]
    if (major, minor) >= (3, 11):
        lines += [f"executable = {base_realpath}", f"command = {base_executable} -m venv {venv}"]
    return "".join(f"{line}\n" for line in lines).encode()


def activate_renderings(
    template: bytes, *, name: str, venv: str, base_executable: str, python: str
) -> tuple[bytes, ...]:
    """venv's renderings of activate template `template` (file `name`) for `venv`, by CPython `python`
    ("3.11") run as `base_executable`; () when venv would not copy it (not UTF-8).

    venv replaces five placeholders: env_dir, env_name, prompt ("(name) " before 3.13, the bare name
    since), bin_name, env_exe. Releases before the gh-124651 fix insert them raw; later micro
    releases shell-quote them (PowerShell quoting for .ps1, none for .bat). Both renderings of the
    trusted template are allowed, nothing else.
    """
    env_name = posixpath.basename(venv)
    values = {
        "__VENV_DIR__": venv,
        "__VENV_NAME__": env_name,
        "__VENV_PROMPT__": env_name if int(python.split(".")[1]) >= 13 else f"({env_name}) ",
        "__VENV_BIN_NAME__": "bin",
        "__VENV_PYTHON__": f"{venv}/bin/{posixpath.basename(base_executable)}",
    }
    try:
        text = template.decode("utf-8")
    except UnicodeDecodeError:
        return ()

    def render(quote: Callable[[str], str]) -> bytes:
        out = text
        for key, value in values.items():
            out = out.replace(key, quote(value))
        return out.encode()

    def ps1(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    def raw(s: str) -> str:
        return s

    quoted = ps1 if name.endswith(".ps1") else raw if name.endswith(".bat") else shlex.quote
    return tuple(dict.fromkeys((render(raw), render(quoted))))
