"""What the apt layer of an mlenv-built image must hold, derived from the locked .deb files alone.

The system stage of mlenv's Dockerfile runs `apt-get install --no-install-recommends` of the locked .debs
on the locked base, removes apt's and dpkg's volatile files (render.dockerfile.VOLATILE), and stages every
path whose ctime the install changed; the final image gets that stage with one COPY (so the layer has
no whiteouts). Every path of that layer is then one of:

- a data.tar member of a locked .deb (`deb_files`): bytes, mode and owner exactly as the .deb's tar
  states them (the .deb is trusted: the lock pins its sha256);
- a dpkg database file for a package: /var/lib/dpkg/info/<pkg>[:<arch>].<name>, byte for byte a
  control.tar member, or the <pkg>.list dpkg writes, whose bytes are derived here (`dpkg_list`);
- one of the few files apt, dpkg, debconf or a trigger generate (`generated_files`), each listed
  below with the step that writes it and why, and judged by a checker where its content can be;
- a directory that holds one of the above, or whose entries the install changed, staged with the
  metadata it has at `/` (for a directory the base already had: the base's).

Reading is bounded: the ar container is walked by its headers, each tar is streamed member by member and
file members are hashed in chunks; nothing is extracted to disk and only control members (small, capped)
are held in memory. A .deb that does not parse is a `DebError` naming it.
"""

from __future__ import annotations

import base64
import bz2
import dataclasses
import gzip
import hashlib
import io
import lzma
import posixpath
import struct
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

import zstandard

from mlenv.errors import SourceError
from mlenv.verify.manifest import ExpectedFile, FileKind

DPKG_INFO = "/var/lib/dpkg/info"
DPKG_STATUS = "/var/lib/dpkg/status"
LD_SO_CACHE = "/etc/ld.so.cache"

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
# Control members are held in memory (they are installed byte for byte); the biggest real ones are
# symbols files of a few MB. A control.tar larger than this is refused rather than read.
MAX_CONTROL_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
_DECOMPRESSORS = ("", ".gz", ".xz", ".zst", ".bz2", ".lzma")


class DebError(SourceError):
    """A .deb that is not a well-formed Debian binary package (truncated, corrupt, unknown format)."""


@dataclass(frozen=True, kw_only=True)
class DataMember:
    """One data.tar member, as dpkg unpacks it."""

    path: str  # absolute, normalised; "/" for the archive's "./"
    kind: FileKind
    mode: int  # permission bits (with setuid/setgid/sticky)
    uid: int
    gid: int
    size: int = 0  # files and hard links (the target's size)
    sha256: str | None = None  # files and hard links (the target's bytes)
    md5: str | None = None  # the same bytes' md5: dpkg's md5sums and Conffiles use it
    link: str | None = None  # symlink target as stored; hard link target as an absolute path
    # The owner's names as the tar states them: dpkg uses the image's ids for these names where the
    # image has them, else the numeric ids (Debian's static ids 0-99 agree between the two).
    user: str = ""
    group: str = ""


@dataclass(frozen=True, kw_only=True)
class ControlMember:
    name: str  # "postinst", "md5sums", ...
    data: bytes = field(repr=False)
    mode: int


@dataclass(frozen=True, kw_only=True)
class DebPackage:
    """The parts of a .deb that decide what installing it writes."""

    source: str  # ExpectedFile.source for its files: "deb:<package>_<version>_<arch>.deb"
    control: tuple[tuple[str, str], ...]  # the control stanza's fields in file order, values as written
    control_members: tuple[ControlMember, ...]  # every control.tar member but ./control, by name
    members: tuple[DataMember, ...]  # data.tar members in archive order
    # The bytes of the few data members a maintainer script or trigger reads to decide what it writes
    # (`keeps_data`: mime package files, init scripts), by path; small, trusted as the .deb is.
    data: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    def data_of(self, path: str) -> bytes | None:
        return next((d for p, d in self.data if p == path), None)

    def field(self, name: str) -> str | None:
        for key, value in self.control:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def package(self) -> str:
        return self.field("Package") or ""

    @property
    def version(self) -> str:
        return self.field("Version") or ""

    @property
    def architecture(self) -> str:
        return self.field("Architecture") or ""

    @property
    def info_name(self) -> str:
        """The name dpkg files its database entries under: `<pkg>:<arch>` for Multi-Arch: same."""
        if (self.field("Multi-Arch") or "").strip() == "same":
            return f"{self.package}:{self.architecture}"
        return self.package

    def member(self, name: str) -> ControlMember | None:
        return next((m for m in self.control_members if m.name == name), None)

    @property
    def conffiles(self) -> tuple[str, ...]:
        member = self.member("conffiles")
        if member is None:
            return ()
        lines = member.data.decode("utf-8", "replace").splitlines()
        # dpkg >= 1.20 allows a "remove-on-upgrade" flag before the path; nothing else.
        return tuple(line.split()[-1] for line in lines if line.strip())

    @property
    def scripts(self) -> tuple[str, ...]:
        """The maintainer scripts it ships (their effects are not predictable from the .deb)."""
        names = ("preinst", "postinst", "prerm", "postrm", "config")
        return tuple(name for name in names if self.member(name) is not None)


# --- reading a .deb -----------------------------------------------------------------------------


class _Bounded(io.RawIOBase):
    """A read-only window of `size` bytes of `raw` from its current position (one ar member)."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self._raw = raw
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        want = min(len(buffer), self._left)
        data = self._raw.read(want)
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _ar_members(stream: BinaryIO, what: str) -> Iterator[tuple[str, IO[bytes]]]:
    """(name, reader) for each member of an ar archive (a seekable stream, checked against each
    member's stated size before it is read, so a truncated .deb is named so before any decompressor
    trips on it)."""
    length = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    if stream.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise DebError(f"{what}: not a Debian package (no ar archive header)")
    while True:
        header = stream.read(_AR_HEADER)
        if not header:
            return
        if len(header) < _AR_HEADER or header[58:60] != b"`\n":
            raise DebError(f"{what}: truncated or corrupt ar member header")
        name = header[:16].decode("ascii", "replace").rstrip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError(f"{what}: corrupt ar member size for {name!r}") from None
        if size > length - stream.tell():
            left = length - stream.tell()
            raise DebError(f"{what}: truncated (ar member {name!r} states {size} bytes, {left} follow)")
        start = stream.tell()
        reader = _Bounded(stream, size)
        buffered = io.BufferedReader(reader, _CHUNK)
        yield name, buffered
        stream.seek(start + size + size % 2)  # past what the caller left unread, and the padding


def _decompressed(name: str, stream: IO[bytes], what: str) -> IO[bytes]:
    suffix = name[name.index(".tar") + 4 :]
    if suffix == "":
        return stream
    if suffix == ".gz":
        return cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
    if suffix in (".xz", ".lzma"):
        return lzma.LZMAFile(stream)
    if suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=_CHUNK)
    if suffix == ".bz2":
        return bz2.BZ2File(stream)
    raise DebError(f"{what}: {name} is compressed in a way dpkg does not read")


def _member_path(name: str, what: str) -> str:
    path = posixpath.normpath("/" + name)
    if path.startswith("//"):
        path = path[1:]
    if ".." in name.split("/"):
        raise DebError(f"{what}: data member {name!r} leaves the root")
    return path


def _hash(reader: IO[bytes] | None) -> tuple[str, str]:
    """(sha256, md5) of what `reader` holds, read in chunks."""
    digest, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    if reader is not None:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            md5.update(chunk)
    return digest.hexdigest(), md5.hexdigest()


# What a script or trigger rule of aptscripts reads from a package's own files; capped per member.
MAX_KEPT_BYTES = 16 * 1024 * 1024


def keeps_data(path: str) -> bool:
    """Whether `path`'s bytes are kept: update-mime-database's sources and init scripts (update-rc.d
    reads their LSB header)."""
    directory, name = posixpath.split(path)
    return (directory == "/usr/share/mime/packages" and name.endswith(".xml")) or directory == "/etc/init.d"


def _data_members(
    stream: IO[bytes], what: str, kept: list[tuple[str, bytes]] | None = None
) -> tuple[DataMember, ...]:
    members: list[DataMember] = []
    hashes: dict[str, tuple[str, str, int]] = {}  # file path -> (sha256, md5, size), for links to it
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            path = _member_path(info.name, what)
            kind: FileKind
            size, digest, md5, link = 0, None, None, None
            if info.isreg() and kept is not None and keeps_data(path) and info.size <= MAX_KEPT_BYTES:
                kind, size = "file", info.size
                reader = tar.extractfile(info)
                content = reader.read() if reader is not None else b""
                kept.append((path, content))
                digest, md5 = _hash(io.BytesIO(content))
                hashes[path] = (digest, md5, size)
            elif info.isreg():
                kind, size = "file", info.size
                digest, md5 = _hash(tar.extractfile(info))
                hashes[path] = (digest, md5, size)
            elif info.isdir():
                kind = "dir"
            elif info.issym():
                kind, link = "symlink", info.linkname
            elif info.islnk():
                kind, link = "hardlink", _member_path(info.linkname, what)
                if link not in hashes:
                    raise DebError(
                        f"{what}: hard link {info.name!r} to {info.linkname!r}, not an earlier file"
                    )
                digest, md5, size = hashes[link]
            else:
                raise DebError(f"{what}: data member {info.name!r} is a device or fifo")
            members.append(
                DataMember(
                    path=path,
                    kind=kind,
                    mode=info.mode & 0o7777,
                    uid=info.uid,
                    gid=info.gid,
                    size=size,
                    sha256=digest,
                    md5=md5,
                    link=link,
                    user=info.uname,
                    group=info.gname,
                )
            )
    return tuple(members)


def _control_members(stream: IO[bytes], what: str) -> list[ControlMember]:
    members: list[ControlMember] = []
    total = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            name = posixpath.normpath(info.name)
            if info.isdir() and name == ".":
                continue
            if not info.isreg() or "/" in name:
                # dpkg: "package control info contained directory"; links are not installed either.
                raise DebError(f"{what}: control member {info.name!r} is not a plain file")
            total += info.size
            if total > MAX_CONTROL_BYTES:
                raise DebError(f"{what}: control.tar holds more than {MAX_CONTROL_BYTES} bytes")
            reader = tar.extractfile(info)
            data = reader.read() if reader is not None else b""
            members.append(ControlMember(name=name, data=data, mode=info.mode & 0o7777))
    return members


def parse_control(text: str) -> tuple[tuple[str, str], ...]:
    """The fields of one deb822 stanza in order; a value keeps its continuation lines verbatim."""
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t":
            if not fields:
                raise ValueError(f"continuation line before any field: {line!r}")
            key, value = fields[-1]
            fields[-1] = (key, value + "\n" + line)
            continue
        key, sep, value = line.partition(":")
        if not sep or not key or " " in key:
            raise ValueError(f"not a field: {line!r}")
        fields.append((key, value.strip()))
    return tuple(fields)


def read_deb(deb: Path | bytes, *, what: str | None = None) -> DebPackage:
    """Parse a .deb (a path, or its bytes): its control stanza, control members and data members."""
    label = what or (deb.name if isinstance(deb, Path) else "a .deb")
    handle: BinaryIO = deb.open("rb") if isinstance(deb, Path) else io.BytesIO(deb)
    try:
        with handle:
            return _read(handle, label)
    except DebError:
        raise
    except (tarfile.TarError, lzma.LZMAError, zstandard.ZstdError, OSError, EOFError, ValueError) as e:
        raise DebError(f"{label}: corrupt or truncated Debian package ({e})") from None


def _read(handle: BinaryIO, what: str) -> DebPackage:
    seen: list[str] = []
    control_members: list[ControlMember] | None = None
    data: tuple[DataMember, ...] | None = None
    kept: list[tuple[str, bytes]] = []
    for name, reader in _ar_members(handle, what):
        seen.append(name)
        if len(seen) == 1:
            if name != "debian-binary" or not reader.read(64).startswith(b"2."):
                raise DebError(f"{what}: not a format 2.x Debian package")
        elif name.startswith("_"):
            continue  # dpkg-deb ignores members named with a leading underscore
        elif control_members is None and name in {f"control.tar{s}" for s in _DECOMPRESSORS}:
            control_members = _control_members(_decompressed(name, reader, what), what)
        elif control_members is not None and data is None and name.startswith("data.tar"):
            if name not in {f"data.tar{s}" for s in _DECOMPRESSORS}:
                raise DebError(f"{what}: {name} is compressed in a way dpkg does not read")
            data = _data_members(_decompressed(name, reader, what), what, kept)
        else:
            raise DebError(f"{what}: unexpected ar member {name!r} (members: {', '.join(seen)})")
    if control_members is None or data is None:
        raise DebError(f"{what}: truncated (no {'control' if control_members is None else 'data'}.tar)")
    control = next((m for m in control_members if m.name == "control"), None)
    if control is None:
        raise DebError(f"{what}: control.tar has no control file")
    try:
        fields = parse_control(control.data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DebError(f"{what}: unreadable control file ({e})") from None
    names = {key.lower(): value for key, value in fields}
    for required in ("package", "version", "architecture"):
        if not names.get(required):
            raise DebError(f"{what}: control file has no {required.capitalize()}")
    version = names["version"].split(":", 1)[-1]
    return DebPackage(
        source=f"deb:{names['package']}_{version}_{names['architecture']}.deb",
        control=fields,
        control_members=tuple(m for m in control_members if m.name != "control"),
        members=data,
        data=tuple(kept),
    )


def package_data(package: DebPackage) -> dict[str, object]:
    """`package` as JSON-able data (bytes as base64), for a cache of what read_deb found."""
    return {
        "source": package.source,
        "control": [list(pair) for pair in package.control],
        "control_members": [
            {"name": m.name, "mode": m.mode, "data": base64.b64encode(m.data).decode()}
            for m in package.control_members
        ],
        "members": [dataclasses.asdict(m) for m in package.members],
        "data": [[path, base64.b64encode(data).decode()] for path, data in package.data],
    }


def package_from_data(data: dict[str, Any]) -> DebPackage:
    """package_data's inverse; KeyError, TypeError or ValueError (binascii.Error) when it is not one."""
    return DebPackage(
        source=str(data["source"]),
        control=tuple((str(k), str(v)) for k, v in data["control"]),
        control_members=tuple(
            ControlMember(name=str(m["name"]), mode=int(m["mode"]), data=_unbase64(m["data"]))
            for m in data["control_members"]
        ),
        members=tuple(DataMember(**m) for m in data["members"]),
        data=tuple((str(p), _unbase64(d)) for p, d in data["data"]),
    )


def _unbase64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# --- what installing one package writes ---------------------------------------------------------


def dpkg_list(package: DebPackage) -> bytes:
    """The bytes of /var/lib/dpkg/info/<pkg>.list: every data member path in archive order, one a
    line, "/." for the archive root, no trailing slashes (what dpkg writes on a fresh install with no
    diversions and no path-exclude filters)."""
    lines = ["/." if m.path == "/" else m.path for m in package.members]
    return "".join(line + "\n" for line in lines).encode()


def dpkg_md5sums(package: DebPackage) -> bytes:
    """The md5sums dpkg writes for a package that ships none: "<md5>  <path without the leading
    slash>" for each file and hard link, in archive order (seen with bookworm's dpkg 1.21)."""
    lines = [f"{m.md5}  {m.path[1:]}\n" for m in package.members if m.md5 is not None]
    return "".join(lines).encode()


def info_members(package: DebPackage) -> list[ControlMember]:
    """The control members dpkg installs into its info directory, as dpkg filters them: every member
    but `control` (parsed into the status file), a member named `list` (dpkg warns and skips it) and
    names holding a dot (dpkg skips them); plus the md5sums dpkg generates when the .deb has none."""
    members = [m for m in package.control_members if m.name != "list" and "." not in m.name]
    if package.member("md5sums") is None:
        members.append(ControlMember(name="md5sums", data=dpkg_md5sums(package), mode=0o644))
    return members


def package_files(package: DebPackage, *, architecture: str) -> list[ExpectedFile]:
    """Every path installing `package` writes itself: its data members and its dpkg info files.

    Directories carry the tar's mode and owner; for a directory the base already has, dpkg leaves the
    base's metadata and the stage copies it, so a caller compares such a directory with the base;
    and such a directory is staged only when the install changed its entries (an empty directory
    of the .deb that the base has is absent from the layer, the base's copy stands).
    Hard-linked paths are one file: which the layer's tar holds as the file and which as links is the
    tar's order, so a caller compares a hard-link group, not each member's kind (each carries the
    file's sha256 and size)."""
    arch = package.architecture
    if arch not in (architecture, "all"):
        raise DebError(f"{package.source}: built for {arch}, the image is {architecture}")
    files: list[ExpectedFile] = []
    for m in package.members:
        if m.path == "/":
            continue  # the root is never staged
        files.append(
            ExpectedFile(
                path=m.path,
                kind=m.kind,
                source=package.source,
                sha256=m.sha256,
                size=m.size if m.sha256 is not None else None,
                mode=m.mode,
                uid=m.uid,
                gid=m.gid,
                link=m.link,
            )
        )
    for member in info_members(package):
        files.append(_info_file(package, member.name, member.data, member.mode))
    files.append(_info_file(package, "list", dpkg_list(package), 0o644))
    return files


def _info_file(package: DebPackage, name: str, data: bytes, mode: int) -> ExpectedFile:
    return ExpectedFile(
        path=f"{DPKG_INFO}/{package.info_name}.{name}",
        kind="file",
        source=package.source,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        mode=mode,
        uid=0,
        gid=0,
    )


def deb_files(deb: Path | bytes | DebPackage, *, architecture: str) -> list[ExpectedFile]:
    """Every path installing this .deb writes itself (see `package_files`); `deb` is a path, the
    .deb's bytes, or a DebPackage from `read_deb`. Raises DebError for a .deb that does not parse or
    is built for another architecture than the image's (`architecture`, a dpkg name: "amd64")."""
    package = deb if isinstance(deb, DebPackage) else read_deb(deb)
    return package_files(package, architecture=architecture)


# --- the status file ----------------------------------------------------------------------------

# dpkg writes a stanza's known fields in this order (lib/dpkg/parse.c), then the others as the control
# file had them. Seen on bookworm: Depends before Pre-Depends, Homepage and Important at the end.
_STATUS_ORDER = (
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
)
_KNOWN = {name.lower(): index for index, name in enumerate(_STATUS_ORDER)}


def status_stanza(package: DebPackage) -> str:
    """The stanza dpkg writes to its status file for `package` once installed and configured: the
    control fields in dpkg's order, "Status: install ok installed", and Conffiles (each conffile's
    path and the md5 of the bytes the .deb ships)."""
    fields = [(key, value) for key, value in package.control if key.lower() not in {"status", "conffiles"}]
    fields.append(("Status", "install ok installed"))
    conffiles = package.conffiles
    if conffiles:
        by_path = {m.path: m for m in package.members}
        lines = []
        for path in conffiles:
            member = by_path.get(path)
            if member is None or member.md5 is None:
                raise DebError(f"{package.source}: conffile {path} is not a file of the package")
            lines.append(f" {path} {member.md5}")
        fields.append(("Conffiles", "\n" + "\n".join(lines)))
    known = sorted((f for f in fields if f[0].lower() in _KNOWN), key=lambda f: _KNOWN[f[0].lower()])
    other = [f for f in fields if f[0].lower() not in _KNOWN]
    return "".join(
        f"{key}:{'' if value.startswith(chr(10)) else ' '}{value}\n" for key, value in known + other
    )


def _stanzas(text: str) -> list[str]:
    return [block.strip("\n") + "\n" for block in text.split("\n\n") if block.strip()]


def _stanza_key(stanza: str) -> tuple[str, str]:
    fields = dict(parse_control(stanza))
    return fields.get("Package", ""), fields.get("Architecture", "")


def expected_status(base_status: bytes, packages: Sequence[DebPackage]) -> bytes:
    """The status file after installing `packages` on a base whose status file is `base_status`:
    the base's stanzas unchanged, a locked package's stanza replacing any the base had for it, sorted
    by package name and architecture as dpkg writes them, a blank line after each."""
    stanzas = {_stanza_key(s): s for s in _stanzas(base_status.decode("utf-8"))}
    for package in packages:
        arch = package.architecture
        for key in [k for k in stanzas if k[0] == package.package and k[1] in (arch, "all")]:
            del stanzas[key]
        stanzas[(package.package, arch)] = status_stanza(package)
    return "".join(stanzas[key] + "\n" for key in sorted(stanzas)).encode()


# --- files apt, dpkg, debconf and triggers generate ----------------------------------------------


def resolve(path: str, symlinks: Mapping[str, str], *, last: bool = True) -> str:
    """`path` with the symlinks along it followed as `symlinks` (path -> target) say, the last
    component too unless `last` is false; a loop or more than 40 links stops resolving."""
    parts = [p for p in path.split("/") if p]
    done = ""
    hops = 0
    while parts:
        candidate = f"{done}/{parts.pop(0)}"
        target = symlinks.get(candidate) if parts or last else None
        if target is None or hops >= 40:
            done = candidate
            continue
        hops += 1
        base = "" if target.startswith("/") else done
        parts = [p for p in posixpath.normpath(f"{base}/{target}").split("/") if p] + parts
        done = ""
    return done or "/"


@dataclass(frozen=True, kw_only=True)
class AptContext:
    """What a checker of a generated file may consult: the locked packages, the base's own bytes at a
    path (from the locked base layers, None where the base has no such file), and every path the
    final image is expected to hold (base, apt layer and the layers above)."""

    packages: tuple[DebPackage, ...]
    base_file: Callable[[str], bytes | None]
    image_paths: frozenset[str] = frozenset()
    symlinks: Mapping[str, str] = field(default_factory=dict)  # image path -> target, for resolving

    def resolve(self, path: str) -> str:
        """`path` with every symlink along it followed (see `resolve`)."""
        return resolve(path, self.symlinks)


# A checker returns None when the bytes are what the step would write, else one line saying why not.
Checker = Callable[[bytes, AptContext], str | None]


@dataclass(frozen=True, kw_only=True)
class Generated:
    """One path the install writes that no .deb ships, with the step that writes it and why."""

    path: str
    kind: FileKind
    step: str
    why: str
    checker: Checker | None  # None: a directory, or content that cannot be judged ("presence")

    def expected(self) -> ExpectedFile:
        check: Literal["generated", "presence"] = "generated" if self.checker is not None else "presence"
        return ExpectedFile(path=self.path, kind=self.kind, source=f"step:{self.step}", check=check)


def check_status(data: bytes, context: AptContext) -> str | None:
    """/var/lib/dpkg/status must be exactly `expected_status` of the base's status and the locked set."""
    expected = expected_status(context.base_file(DPKG_STATUS) or b"", context.packages)
    if data == expected:
        return None
    found = {_stanza_key(s): s for s in _stanzas(data.decode("utf-8", "replace"))}
    wanted = {_stanza_key(s): s for s in _stanzas(expected.decode("utf-8"))}
    extra = sorted(set(found) - set(wanted))
    missing = sorted(set(wanted) - set(found))
    changed = sorted(k for k in set(found) & set(wanted) if found[k] != wanted[k])
    parts = [
        f"{label}: {', '.join(f'{n}:{a}' for n, a in keys)}"
        for label, keys in (("extra", extra), ("missing", missing), ("changed", changed))
        if keys
    ]
    return (
        "status stanzas differ from the base's and the locked packages' ("
        + "; ".join(parts or ["order or spacing"])
        + ")"
    )


def check_empty(data: bytes, context: AptContext) -> str | None:
    """A lock file dpkg or apt creates (or truncates) and never writes into."""
    return None if data == b"" else f"holds {len(data)} bytes; a lock file is empty"


def check_unchanged(data: bytes, context: AptContext, path: str) -> str | None:
    base = context.base_file(path)
    if data == (base if base is not None else b""):
        return None
    return "differs from the base's copy" if base is not None else "not empty (the base has none)"


def _unchanged(path: str) -> Checker:
    def check(data: bytes, context: AptContext) -> str | None:
        return check_unchanged(data, context, path)

    check.__doc__ = f"{path} must hold exactly the base's bytes (empty when the base has none)."
    return check


_CACHE_MAGIC = b"glibc-ld.so.cache1.1"
_CACHE_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, extension
_CACHE_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap


def ld_cache_entries(data: bytes) -> list[tuple[str, str]]:
    """(soname, path) of each entry of a glibc new-format ld.so.cache; ValueError if it is not one."""
    if len(data) < _CACHE_HEADER.size or not data.startswith(_CACHE_MAGIC):
        raise ValueError("not a glibc-ld.so.cache1.1 file")
    _, count, strings, _, _ = _CACHE_HEADER.unpack_from(data)
    end = _CACHE_HEADER.size + count * _CACHE_ENTRY.size
    if end + strings > len(data):
        raise ValueError("entries or string table run past the end")

    def string(offset: int) -> str:
        stop = data.find(b"\0", offset)
        if offset < end or stop < 0:
            raise ValueError("string offset outside the string table")
        return data[offset:stop].decode("utf-8", "replace")

    entries = []
    for index in range(count):
        _, key, value, _, _ = _CACHE_ENTRY.unpack_from(data, _CACHE_HEADER.size + index * _CACHE_ENTRY.size)
        entries.append((string(key), string(value)))
    return entries


def check_ld_so_cache(data: bytes, context: AptContext) -> str | None:
    """/etc/ld.so.cache (ldconfig, run by libc-bin's ldconfig trigger): every entry maps a soname to
    <dir>/<that soname>, a path the image is expected to hold, and every entry of the base's cache
    whose path the image still holds is kept. It cannot redirect a library to an unlocked file.
    (Byte equality with ldconfig's output would need the ELF sonames of every library: not judged.)"""
    try:
        entries = ld_cache_entries(data)
    except ValueError as e:
        return f"not an ld.so.cache ({e})"
    for soname, path in entries:
        if posixpath.basename(path) != soname:
            return f"entry {soname} points to {path}, another name"
        if context.image_paths and context.resolve(path) not in context.image_paths:
            return f"entry {soname} points to {path}, which no locked source installs"
    base = context.base_file(LD_SO_CACHE)
    if base is not None:
        try:
            kept = set(entries)
            for entry in ld_cache_entries(base):
                held = not context.image_paths or context.resolve(entry[1]) in context.image_paths
                if entry not in kept and held:
                    return f"the base's entry {entry[0]} -> {entry[1]} is missing"
        except ValueError:
            pass  # the base's own cache is the base's business
    return None


def generated_files(packages: Sequence[DebPackage]) -> list[Generated]:
    """Every path the system stage writes that no locked .deb ships, for this locked set.

    Each entry is a hole in verify's byte-for-byte accounting, so it is listed only when the step
    writes it; directories holding expected paths are not listed (see `with_parents`). Seen in the
    apt layer of the fraud example (bookworm, 11 packages, libraries with ldconfig triggers) and of a
    test .deb with a conffile and an alternative. Not listed, because no step of a predictable set
    writes them: /var/lib/dpkg/diversions (dpkg-divert, from a maintainer script),
    /var/lib/dpkg/triggers/File, Unincorp and interest files (a package with trigger interests), any
    conffile's .dpkg-new/.dpkg-old/.dpkg-dist (dpkg leaves one only when the base already has a
    differing file at a conffile's path, or a configure failed: then the layer's extra file is a
    drift), /var/lib/dpkg/*-old and the logs (removed by the stage's cleanup). A package with
    maintainer scripts writes what its scripts write, which is not predicted (`unpredictable`)."""
    apt = "apt-get install"
    entries = [
        Generated(
            path=DPKG_STATUS,
            kind="file",
            step=apt,
            checker=check_status,
            why="dpkg records each installed package's control fields and state",
        ),
        Generated(
            path="/var/lib/dpkg/lock",
            kind="file",
            step=apt,
            checker=check_empty,
            why="dpkg takes its database lock (created or reopened: its ctime changes)",
        ),
        Generated(
            path="/var/lib/dpkg/lock-frontend",
            kind="file",
            step=apt,
            checker=check_empty,
            why="apt takes dpkg's frontend lock",
        ),
        Generated(
            path="/var/lib/dpkg/triggers/Lock",
            kind="file",
            step=apt,
            checker=check_empty,
            why="dpkg takes its triggers lock",
        ),
        Generated(
            path="/var/lib/apt/extended_states",
            kind="file",
            step=apt,
            checker=_unchanged("/var/lib/apt/extended_states"),
            why="apt rewrites its auto-installed marks; .debs named on the command line are "
            "manual, so it keeps the base's marks only",
        ),
        Generated(
            path="/var/cache/debconf/config.dat",
            kind="file",
            step=apt,
            checker=_unchanged("/var/cache/debconf/config.dat"),
            why="debconf's apt hook (dpkg-preconfigure) rewrites its database",
        ),
        Generated(
            path="/var/cache/debconf/passwords.dat",
            kind="file",
            step=apt,
            checker=_unchanged("/var/cache/debconf/passwords.dat"),
            why="debconf's apt hook (dpkg-preconfigure) rewrites its database",
        ),
        Generated(
            path="/var/cache/debconf/templates.dat",
            kind="file",
            step=apt,
            checker=_unchanged("/var/cache/debconf/templates.dat"),
            why="debconf's apt hook (dpkg-preconfigure) rewrites its database",
        ),
    ]
    if any(_activates(p, "ldconfig") for p in packages):
        entries.append(
            Generated(
                path=LD_SO_CACHE,
                kind="file",
                step="trigger:ldconfig",
                checker=check_ld_so_cache,
                why="libc-bin's ldconfig trigger, activated by a library package",
            )
        )
        entries.append(
            Generated(
                path="/var/cache/ldconfig",
                kind="dir",
                step="trigger:ldconfig",
                checker=None,
                why="ldconfig writes its aux-cache there; the cleanup removes it",
            )
        )
    # Directories the stage holds because the install or the cleanup changed their entries (their
    # metadata is the base's: the stage copies it with chmod/chown/touch --reference).
    for path, why in (
        ("/tmp", "the stage's check writes and removes /tmp/mlenv-apt.txt"),
        ("/var/cache/apt", "apt's package caches, removed by the cleanup"),
        ("/var/lib/apt/lists", "apt's lists and their lock, removed by the cleanup"),
        ("/var/log", "apt's and dpkg's logs, removed by the cleanup"),
        ("/var/lib/dpkg/updates", "dpkg's journal, written and emptied"),
        ("/var/lib/dpkg/triggers", "the triggers lock"),
    ):
        entries.append(Generated(path=path, kind="dir", step=apt, checker=None, why=why))
    return entries


def _activates(package: DebPackage, trigger: str) -> bool:
    member = package.member("triggers")
    if member is None:
        return False
    for line in member.data.decode("utf-8", "replace").splitlines():
        words = line.split()
        if len(words) == 2 and words[0].startswith("activate") and words[1] == trigger:
            return True
    return False


def unpredictable(packages: Iterable[DebPackage]) -> list[str]:
    """One line per locked package whose install does what is not predicted here: its maintainer
    scripts or its trigger interests run code that may write any file (diversions, /etc/ssl/certs,
    /var/lib/dpkg/triggers/File and the interest files...), its debconf templates change debconf's
    databases. Empty for a set that verify accounts for exactly; beyond that, `alternatives_files`
    covers the alternatives a postinst installs with literal words, and whatever else such a script
    writes shows up as an extra file (a drift, never a silent match)."""
    lines = []
    for package in packages:
        if package.scripts:
            lines.append(f"{package.package} runs maintainer scripts: {', '.join(package.scripts)}")
        if package.member("templates") is not None:
            lines.append(f"{package.package} loads debconf templates (debconf's databases change)")
        member = package.member("triggers")
        if member is not None:
            interests = [
                line.split()[1]
                for line in member.data.decode("utf-8", "replace").splitlines()
                if len(line.split()) == 2 and line.split()[0].startswith("interest")
            ]
            if interests:
                lines.append(f"{package.package} is interested in triggers: {', '.join(interests)}")
    return lines


@dataclass(frozen=True, kw_only=True)
class Alternative:
    """One `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]...` a
    maintainer script runs with literal words."""

    package: str
    link: str
    name: str
    path: str
    priority: int
    slaves: tuple[tuple[str, str, str], ...] = ()  # (link, name, path)


def alternatives(package: DebPackage) -> list[Alternative]:
    """The alternatives `package`'s postinst installs, read from its lines that run
    update-alternatives --install with literal words (how debhelper writes them); a line with shell
    expansions is not understood and yields nothing (the package stays `unpredictable`)."""
    member = package.member("postinst")
    if member is None:
        return []
    found = []
    for line in member.data.decode("utf-8", "replace").replace("\\\n", " ").splitlines():
        for command in line.split(";"):
            words = command.split()
            if "update-alternatives" not in words:
                continue
            words = words[words.index("update-alternatives") + 1 :]
            if any(ch in w for w in words for ch in "$`'\"*?") or words[:1] != ["--install"]:
                continue
            if len(words) < 5 or (len(words) - 5) % 4 or not words[4].isdigit():
                continue
            slaves = [tuple(words[i + 1 : i + 4]) for i in range(5, len(words), 4)]
            if any(words[i] != "--slave" for i in range(5, len(words), 4)):
                continue
            found.append(
                Alternative(
                    package=package.package,
                    link=words[1],
                    name=words[2],
                    path=words[3],
                    priority=int(words[4]),
                    slaves=tuple(sorted((s[0], s[1], s[2]) for s in slaves)),
                )
            )
    return found


def alternatives_files(packages: Sequence[DebPackage]) -> list[ExpectedFile]:
    """What update-alternatives writes for the alternatives the packages' postinsts install on a base
    that has none of them (auto mode, the highest priority chosen): /etc/alternatives/NAME -> PATH,
    LINK -> /etc/alternatives/NAME, for each slave the same, and /var/lib/dpkg/alternatives/NAME,
    whose bytes are derived here (format checked against bookworm's update-alternatives for one
    choice; several choices are written sorted by path)."""
    by_name: dict[str, list[Alternative]] = {}
    for package in packages:
        for alternative in alternatives(package):
            by_name.setdefault(alternative.name, []).append(alternative)
    files: list[ExpectedFile] = []
    for name, choices in sorted(by_name.items()):
        choices.sort(key=lambda a: a.path)
        best = max(choices, key=lambda a: a.priority)
        source = f"step:update-alternatives ({best.package} postinst)"
        slaves = sorted({(link, slave) for c in choices for link, slave, _ in c.slaves}, key=lambda s: s[1])

        files += [
            _symlink(source, f"/etc/alternatives/{name}", best.path),
            _symlink(source, best.link, f"/etc/alternatives/{name}"),
        ]
        text = f"auto\n{best.link}\n" + "".join(f"{s}\n{lk}\n" for lk, s in slaves) + "\n"
        for choice in choices:
            paths = {s: p for _, s, p in choice.slaves}
            text += f"{choice.path}\n{choice.priority}\n" + "".join(
                f"{paths.get(s, '')}\n" for _, s in slaves
            )
        text += "\n"
        for slave_link, slave in slaves:
            target = {s: p for _, s, p in best.slaves}.get(slave)
            if target is not None:
                files += [
                    _symlink(source, f"/etc/alternatives/{slave}", target),
                    _symlink(source, slave_link, f"/etc/alternatives/{slave}"),
                ]
        data = text.encode()
        files.append(
            ExpectedFile(
                path=f"/var/lib/dpkg/alternatives/{name}",
                kind="file",
                source=source,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                mode=0o644,
                uid=0,
                gid=0,
            )
        )
    return files


def _symlink(source: str, path: str, target: str) -> ExpectedFile:
    return ExpectedFile(path=path, kind="symlink", source=source, link=target, uid=0, gid=0)


def with_parents(paths: Iterable[str]) -> set[str]:
    """Every directory above `paths` (but "/"): the stage holds them, with the metadata they have at
    `/`, because tar creates a staged path's parents."""
    parents: set[str] = set()
    for path in paths:
        parent = posixpath.dirname(path)
        while parent not in ("/", "") and parent not in parents:
            parents.add(parent)
            parent = posixpath.dirname(parent)
    return parents


def checker_for(path: str, generated: Sequence[Generated]) -> Checker | None:
    """The checker of a generated path, or None when it has none (or is not generated)."""
    return next((g.checker for g in generated if g.path == path), None)


def apt_layer(
    packages: Sequence[DebPackage], *, architecture: str, base_symlinks: Mapping[str, str] | None = None
) -> tuple[list[ExpectedFile], Mapping[str, Checker]]:
    """Every path the apt layer must hold (packages' files, the alternatives their postinsts install,
    generated files) and the checker of each generated file by path. One entry per path, but for a
    file two packages ship (dpkg refuses that unless one Replaces the other: left to the caller).
    Parent directories are not included (see `with_parents`)."""
    files: list[ExpectedFile] = []
    directories: set[str] = set()
    for package in packages:
        for file in package_files(package, architecture=architecture):
            if base_symlinks:
                landed = resolve(file.path, base_symlinks, last=file.kind == "dir")
                file = dataclasses.replace(file, path=landed)
            # Packages share directories (/usr, /usr/lib/<triplet>...): one entry each, the first
            # package's (dpkg creates a directory once and leaves it to the next package).
            if file.kind == "dir":
                if file.path in directories:
                    continue
                directories.add(file.path)
            files.append(file)
    files += alternatives_files(packages)
    generated = generated_files(packages)
    checkers = {g.path: g.checker for g in generated if g.checker is not None}
    files += [g.expected() for g in generated if g.kind != "dir" or g.path not in directories]
    # What the packages' maintainer scripts and triggers write (a rule each, in aptscripts), in place
    # of a generic entry for the same path (debconf's databases once templates are loaded). Imported
    # here: aptscripts builds on this module's types.
    from mlenv.verify import aptscripts

    scripted = aptscripts.outputs(packages)
    paths = {o.path for o in scripted}
    files = [f for f in files if f.path not in paths or f.source.startswith("deb:")]
    files += [o.expected() for o in scripted if o.path not in {f.path for f in files}]
    checkers.update({o.path: o.checker for o in scripted if o.checker is not None})
    return files, checkers
