"""verify.debfiles: what installing the locked .debs writes, read from the .debs alone.

Offline tests build tiny .debs here (ar + control.tar + data.tar made with tarfile); the engine tests
compare with what an apt layer really holds: the fraud image's, and one built here from a .deb with a
conffile, maintainer scripts and an alternative.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import struct
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import docker
import pytest
import zstandard

from mlenv.errors import MlenvError
from mlenv.lockfile import read_lock
from mlenv.model.lock import Lock
from mlenv.render.dockerfile import DEBS_DIR, DEBS_TAR, STAGE, _system_stage
from mlenv.sources.cas import ContentStore
from mlenv.verify import debfiles
from mlenv.verify.debfiles import (
    AptContext,
    DebError,
    deb_files,
    package_data,
    package_from_data,
    read_deb,
)
from tests.helpers import Built
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage

# --- building a .deb ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Entry:
    name: str  # as in the tar: "./usr/bin/tool"
    kind: str = "file"  # file, dir, symlink, hardlink
    data: bytes = b""
    mode: int = 0o644
    link: str = ""
    uid: int = 0
    gid: int = 0


def _tar(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 1700000000
            info.uname = info.gname = "root"
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.link
            elif entry.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, entry.link
            else:
                info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return buffer.getvalue()


def _compress(data: bytes, compression: str) -> bytes:
    if compression == "xz":
        return lzma.compress(data)
    if compression == "gz":
        return gzip.compress(data, mtime=0)
    if compression == "zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def md5sums(entries: list[Entry]) -> bytes:
    lines = [
        f"{hashlib.md5(e.data).hexdigest()}  {e.name.removeprefix('./')}\n"
        for e in entries
        if e.kind == "file"
    ]
    return "".join(lines).encode()


def make_deb(
    *,
    package: str = "tool",
    version: str = "1.0-1",
    architecture: str = "amd64",
    multi_arch: str | None = None,
    data: list[Entry],
    control: Mapping[str, bytes] | None = None,
    extra_fields: str = "",
    compression: str = "xz",
    with_md5sums: bool = True,
) -> bytes:
    stanza = f"Package: {package}\nVersion: {version}\nArchitecture: {architecture}\n"
    stanza += "Maintainer: Test <test@example.org>\nInstalled-Size: 1\n"
    if multi_arch:
        stanza += f"Multi-Arch: {multi_arch}\n"
    stanza += extra_fields + "Description: a test package\n built here\n"
    members = [Entry(name="./", kind="dir", mode=0o755), Entry(name="./control", data=stanza.encode())]
    if with_md5sums:
        members.append(Entry(name="./md5sums", data=md5sums(data)))
    for name, content in (control or {}).items():
        script = name in ("preinst", "postinst", "prerm", "postrm", "config")
        members.append(Entry(name=f"./{name}", data=content, mode=0o755 if script else 0o644))
    suffix = "" if compression == "none" else f".{compression}"
    return _ar(
        [
            ("debian-binary", b"2.0\n"),
            (f"control.tar{suffix}", _compress(_tar(members), compression)),
            (f"data.tar{suffix}", _compress(_tar(data), compression)),
        ]
    )


TOOL = b"#!/bin/sh\necho tool\n"
CONF = b"setting = 1\n"
DATA = [
    Entry(name="./", kind="dir", mode=0o755),
    Entry(name="./etc/", kind="dir", mode=0o755),
    Entry(name="./etc/tool.conf", data=CONF),
    Entry(name="./usr/", kind="dir", mode=0o755),
    Entry(name="./usr/bin/", kind="dir", mode=0o755),
    Entry(name="./usr/bin/tool", data=TOOL, mode=0o4755),
    Entry(name="./usr/bin/tool-again", kind="hardlink", link="./usr/bin/tool", mode=0o4755),
    Entry(name="./usr/bin/t", kind="symlink", link="tool", mode=0o777),
    Entry(name="./usr/share/", kind="dir", mode=0o755),
    Entry(name="./usr/share/tool/", kind="dir", mode=0o2775, gid=50),
]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- offline ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["xz", "gz", "zst", "none"])
def test_every_data_member_with_its_mode_owner_link_and_bytes(tmp_path: Path, compression: str) -> None:
    deb = tmp_path / "tool.deb"
    deb.write_bytes(make_deb(data=DATA, compression=compression, control={"conffiles": b"/etc/tool.conf\n"}))
    files = {f.path: f for f in deb_files(deb, architecture="amd64")}
    source = "deb:tool_1.0-1_amd64.deb"
    tool = files["/usr/bin/tool"]
    assert (tool.kind, tool.sha256, tool.size, tool.mode, tool.uid, tool.gid, tool.source, tool.check) == (
        "file",
        _sha(TOOL),
        len(TOOL),
        0o4755,
        0,
        0,
        source,
        "bytes",
    )
    assert (files["/usr/bin/tool-again"].kind, files["/usr/bin/tool-again"].link) == (
        "hardlink",
        "/usr/bin/tool",
    )
    assert (files["/usr/bin/t"].kind, files["/usr/bin/t"].link) == ("symlink", "tool")
    share = files["/usr/share/tool"]
    assert (share.kind, share.mode, share.gid, share.sha256) == ("dir", 0o2775, 50, None)
    assert files["/etc/tool.conf"].sha256 == _sha(CONF)
    assert "/" not in files  # the root is never staged
    # dpkg's database entries: md5sums and conffiles byte for byte, the list derived.
    info = {
        p.removeprefix("/var/lib/dpkg/info/"): f for p, f in files.items() if p.startswith("/var/lib/dpkg/")
    }
    assert sorted(info) == ["tool.conffiles", "tool.list", "tool.md5sums"]
    assert info["tool.md5sums"].sha256 == _sha(md5sums(DATA))
    assert info["tool.conffiles"].sha256 == _sha(b"/etc/tool.conf\n")
    listed = (
        b"/.\n/etc\n/etc/tool.conf\n/usr\n/usr/bin\n/usr/bin/tool\n/usr/bin/tool-again\n/usr/bin/t\n"
        b"/usr/share\n/usr/share/tool\n"
    )
    assert (info["tool.list"].sha256, info["tool.list"].size) == (_sha(listed), len(listed))
    assert len(files) == len(DATA) - 1 + 3


def test_the_same_from_bytes_and_from_a_read_package(tmp_path: Path) -> None:
    raw = make_deb(data=DATA)
    deb = tmp_path / "tool.deb"
    deb.write_bytes(raw)
    assert deb_files(raw, architecture="amd64") == deb_files(deb, architecture="amd64")
    assert deb_files(read_deb(raw), architecture="amd64") == deb_files(deb, architecture="amd64")


def test_a_read_package_survives_its_cache_form_exactly() -> None:
    """verify caches what read_deb found by the .deb's sha256 (as JSON): read back, it must be the same
    package, control members, kept data and all; a damaged entry is an error, never a partial package."""
    package = read_deb(
        make_deb(data=DATA, control={"conffiles": b"/etc/tool.conf\n", "postinst": b"#!/bin/sh\n"})
    )
    assert package.control_members and package.members
    data = json.loads(json.dumps(package_data(package)))
    assert package_from_data(data) == package
    broken = {**data, "control_members": [{**data["control_members"][0], "data": "not base64!"}]}
    with pytest.raises(ValueError):
        package_from_data(broken)
    with pytest.raises(KeyError):
        package_from_data({k: v for k, v in data.items() if k != "members"})


def test_multi_arch_same_names_info_files_with_the_architecture() -> None:
    raw = make_deb(package="libx1", multi_arch="same", data=DATA, control={"shlibs": b"libx 1 libx1\n"})
    paths = {f.path for f in deb_files(raw, architecture="amd64") if f.path.startswith("/var/lib/dpkg")}
    assert paths == {f"/var/lib/dpkg/info/libx1:amd64.{n}" for n in ("list", "md5sums", "shlibs")}
    foreign = make_deb(package="tool", multi_arch="foreign", data=DATA)
    paths = {f.path for f in deb_files(foreign, architecture="amd64") if f.path.startswith("/var/lib/dpkg")}
    assert paths == {"/var/lib/dpkg/info/tool.list", "/var/lib/dpkg/info/tool.md5sums"}


def test_info_files_as_dpkg_filters_them() -> None:
    """Every control member but `control`, `list` and names with a dot; scripts keep their mode."""
    control = {"postinst": b"#!/bin/sh\n", "templates": b"Template: x\n", "notes.txt": b"x", "list": b"/x\n"}
    files = {f.path: f for f in deb_files(make_deb(data=DATA, control=control), architecture="amd64")}
    info = {p for p in files if p.startswith("/var/lib/dpkg/info/")}
    assert info == {f"/var/lib/dpkg/info/tool.{n}" for n in ("list", "md5sums", "postinst", "templates")}
    assert files["/var/lib/dpkg/info/tool.postinst"].mode == 0o755
    assert files["/var/lib/dpkg/info/tool.postinst"].sha256 == _sha(b"#!/bin/sh\n")


def test_an_architecture_all_package_fits_every_image_another_does_not() -> None:
    assert deb_files(make_deb(architecture="all", data=DATA), architecture="arm64")
    with pytest.raises(DebError) as refused:
        deb_files(make_deb(architecture="amd64", data=DATA), architecture="arm64")
    assert str(refused.value) == "deb:tool_1.0-1_amd64.deb: built for amd64, the image is arm64"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "tool.deb: truncated"),
        (lambda raw: raw[:7] + b"X" + raw[8:], "tool.deb: not a Debian package (no ar archive header)"),
        (lambda raw: raw[:200] + bytes(64) + raw[264:], "tool.deb: corrupt or truncated Debian package"),
        (lambda raw: raw[:68], "tool.deb: truncated"),
        (lambda raw: b"", "tool.deb: not a Debian package (no ar archive header)"),
    ],
    ids=["half", "magic", "zeroed", "header-only", "empty"],
)
def test_a_corrupt_or_truncated_deb_is_refused(
    tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    deb = tmp_path / "tool.deb"
    deb.write_bytes(damage(make_deb(data=DATA)))
    with pytest.raises(MlenvError) as refused:
        deb_files(deb, architecture="amd64")
    assert isinstance(refused.value, DebError)
    assert str(refused.value).startswith(message), str(refused.value)


def test_a_member_that_leaves_the_root_or_a_device_is_refused() -> None:
    with pytest.raises(DebError, match="leaves the root"):
        read_deb(make_deb(data=[Entry(name="./../etc/passwd", data=b"x")]))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("./dev/null")
        info.type = tarfile.CHRTYPE
        tar.addfile(info)
    control = lzma.compress(
        _tar([Entry(name="./control", data=b"Package: d\nVersion: 1\nArchitecture: all\n")])
    )
    raw = _ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control), ("data.tar", buffer.getvalue())])
    with pytest.raises(DebError, match="device or fifo"):
        read_deb(raw)


def test_a_control_tar_with_a_directory_is_refused() -> None:
    control = _tar(
        [
            Entry(name="./control", data=b"Package: d\nVersion: 1\nArchitecture: all\n"),
            Entry(name="./sub/", kind="dir"),
        ]
    )
    raw = _ar([("debian-binary", b"2.0\n"), ("control.tar", control), ("data.tar", _tar(DATA))])
    with pytest.raises(DebError, match="not a plain file"):
        read_deb(raw)


def test_status_stanza_in_dpkg_field_order_with_conffiles() -> None:
    package = read_deb(
        make_deb(
            data=DATA,
            control={"conffiles": b"/etc/tool.conf\n"},
            extra_fields="Homepage: https://example.org/\nPre-Depends: a\nDepends: b (>= 1)\nSection: misc\n",
        )
    )
    assert debfiles.status_stanza(package) == (
        "Package: tool\nStatus: install ok installed\nSection: misc\nInstalled-Size: 1\n"
        "Maintainer: Test <test@example.org>\nArchitecture: amd64\nVersion: 1.0-1\nDepends: b (>= 1)\n"
        "Pre-Depends: a\nConffiles:\n /etc/tool.conf " + hashlib.md5(CONF).hexdigest() + "\n"
        "Description: a test package\n built here\nHomepage: https://example.org/\n"
    )


BASE_STATUS = (
    b"Package: aaa\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n"
    b"Package: zzz\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n"
)


def _context(packages: list[debfiles.DebPackage], base: Mapping[str, bytes], **kw: object) -> AptContext:
    return AptContext(packages=tuple(packages), base_file=base.get, **kw)  # type: ignore[arg-type]


def test_the_status_checker_wants_the_base_stanzas_and_the_locked_ones_sorted() -> None:
    package = read_deb(make_deb(data=DATA))
    context = _context([package], {"/var/lib/dpkg/status": BASE_STATUS})
    stanzas = BASE_STATUS.split(b"\n\n")
    good = stanzas[0] + b"\n\n" + debfiles.status_stanza(package).encode() + b"\n" + stanzas[1] + b"\n\n"
    assert debfiles.expected_status(BASE_STATUS, [package]) == good
    assert debfiles.check_status(good, context) is None
    dropped = good.replace(stanzas[0] + b"\n\n", b"")
    assert debfiles.check_status(dropped, context) == (
        "status stanzas differ from the base's and the locked packages' (missing: aaa:all)"
    )
    forged = good.replace(b"Version: 1.0-1", b"Version: 1.0-2")
    assert debfiles.check_status(forged, context) == (
        "status stanzas differ from the base's and the locked packages' (changed: tool:amd64)"
    )
    extra = good + b"Package: evil\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n"
    assert "extra: evil:all" in (debfiles.check_status(extra, context) or "")


def _ld_cache(entries: list[tuple[str, str]]) -> bytes:
    header_size, entry_size = 48, 24
    strings = bytearray()
    offsets = []
    base = header_size + entry_size * len(entries)
    for key, value in entries:
        offsets.append((base + len(strings), base + len(strings) + len(key) + 1))
        strings += key.encode() + b"\0" + value.encode() + b"\0"
    out = bytearray(b"glibc-ld.so.cache1.1" + struct.pack("<IIB3xI12x", len(entries), len(strings), 2, 0))
    for key_offset, value_offset in offsets:
        out += struct.pack("<iIIIQ", 0x303, key_offset, value_offset, 0, 0)
    return bytes(out + strings)


def test_the_ld_so_cache_checker_follows_merged_usr_and_refuses_a_redirect() -> None:
    paths = frozenset({"/usr/lib/x86_64-linux-gnu/libx.so.1", "/usr/lib/x86_64-linux-gnu/liby.so.2"})
    links = {"/lib": "usr/lib"}
    base = _ld_cache([("libx.so.1", "/lib/x86_64-linux-gnu/libx.so.1")])
    context = _context([], {"/etc/ld.so.cache": base}, image_paths=paths, symlinks=links)
    good = _ld_cache(
        [
            ("liby.so.2", "/usr/lib/x86_64-linux-gnu/liby.so.2"),
            ("libx.so.1", "/lib/x86_64-linux-gnu/libx.so.1"),
        ]
    )
    assert debfiles.check_ld_so_cache(good, context) is None
    redirected = _ld_cache([("libx.so.1", "/tmp/libx.so.1")])
    assert debfiles.check_ld_so_cache(redirected, context) == (
        "entry libx.so.1 points to /tmp/libx.so.1, which no locked source installs"
    )
    renamed = _ld_cache([("libx.so.1", "/usr/lib/x86_64-linux-gnu/liby.so.2")])
    assert debfiles.check_ld_so_cache(renamed, context) == (
        "entry libx.so.1 points to /usr/lib/x86_64-linux-gnu/liby.so.2, another name"
    )
    dropped = _ld_cache([("liby.so.2", "/usr/lib/x86_64-linux-gnu/liby.so.2")])
    assert debfiles.check_ld_so_cache(dropped, context) == (
        "the base's entry libx.so.1 -> /lib/x86_64-linux-gnu/libx.so.1 is missing"
    )
    assert (
        debfiles.check_ld_so_cache(b"garbage", context)
        == "not an ld.so.cache (not a glibc-ld.so.cache1.1 file)"
    )


def test_generated_files_are_listed_only_where_a_step_writes_them() -> None:
    plain = read_deb(make_deb(data=DATA))
    library = read_deb(
        make_deb(package="libx1", data=DATA, control={"triggers": b"activate-noawait ldconfig\n"})
    )
    assert "/etc/ld.so.cache" not in {g.path for g in debfiles.generated_files([plain])}
    generated = {g.path: g for g in debfiles.generated_files([plain, library])}
    assert generated["/etc/ld.so.cache"].checker is debfiles.check_ld_so_cache
    for entry in generated.values():
        assert entry.why and entry.step
        expected = entry.expected()
        assert expected.check == ("presence" if entry.kind == "dir" else "generated")
        assert (entry.checker is None) == (entry.kind == "dir")
    context = _context([plain], {"/var/cache/debconf/config.dat": b"Name: x\n"})
    assert generated["/var/cache/debconf/config.dat"].checker(b"Name: x\n", context) is None  # type: ignore[misc]
    assert generated["/var/cache/debconf/config.dat"].checker(b"", context) == "differs from the base's copy"  # type: ignore[misc]
    assert generated["/var/lib/dpkg/lock"].checker(b"x", context) == "holds 1 bytes; a lock file is empty"  # type: ignore[misc]


def test_maintainer_scripts_and_trigger_interests_are_named_as_unpredictable() -> None:
    plain = read_deb(make_deb(data=DATA, control={"triggers": b"activate-noawait ldconfig\n"}))
    scripted = read_deb(make_deb(package="s", data=DATA, control={"postinst": b"#!/bin/sh\n"}))
    interested = read_deb(
        make_deb(package="i", data=DATA, control={"triggers": b"interest-noawait /usr/x\n"})
    )
    assert debfiles.unpredictable([plain]) == []
    templated = read_deb(make_deb(package="t", data=DATA, control={"templates": b"Template: t/x\n"}))
    assert debfiles.unpredictable([templated]) == ["t loads debconf templates (debconf's databases change)"]
    assert debfiles.unpredictable([scripted, interested]) == [
        "s runs maintainer scripts: postinst",
        "i is interested in triggers: /usr/x",
    ]


def test_with_parents() -> None:
    assert debfiles.with_parents(["/a/b/c", "/a/d"]) == {"/a", "/a/b"}


# --- against a real apt layer -------------------------------------------------------------------

KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
}


@dataclass(frozen=True, kw_only=True)
class Layer:
    entries: dict[str, tarfile.TarInfo]
    data: dict[str, bytes]


def _layers(archive: Path) -> list[Layer]:
    """Each layer of a `docker save` archive, bottom first: entries by absolute path, file bytes."""
    layers = []
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))  # type: ignore[arg-type]
        for name in manifest[0]["Layers"]:
            entries: dict[str, tarfile.TarInfo] = {}
            data: dict[str, bytes] = {}
            with tarfile.open(fileobj=saved.extractfile(name), mode="r|") as layer:
                for info in layer:
                    path = "/" + info.name.removeprefix("./").rstrip("/")
                    entries[path] = info
                    if info.isreg():
                        data[path] = layer.extractfile(info).read()  # type: ignore[union-attr]
            layers.append(Layer(entries=entries, data=data))
    return layers


def assert_layer_is_explained(
    apt: Layer, base: Layer, packages: list[debfiles.DebPackage], *, architecture: str
) -> None:
    """The apt layer's entries are exactly the packages' files, the generated ones and their
    parents; each file's bytes, mode and owner as the .debs state, each generated file accepted by
    its checker, each directory that the base has staged with the base's metadata."""
    base_links = {p: i.linkname for p, i in base.entries.items() if i.issym()}
    expected, checkers = debfiles.apt_layer(packages, architecture=architecture, base_symlinks=base_links)
    by_path = {f.path: f for f in expected}
    assert len(by_path) == len(expected), "two sources claim one path"
    parents = debfiles.with_parents(by_path) - set(by_path)
    assert sorted(set(apt.entries) - set(by_path) - parents) == []  # nothing unexplained
    # Nothing missing, but a directory of a .deb that the base has and whose entries did not change.
    missing = set(by_path) - set(apt.entries)
    assert sorted(p for p in missing if not (by_path[p].kind == "dir" and p in base.entries)) == []
    assert sorted(parents - set(apt.entries)) == []
    symlinks = {p: i.linkname for layer in (base, apt) for p, i in layer.entries.items() if i.issym()}
    context = AptContext(
        packages=tuple(packages),
        base_file=base.data.get,
        image_paths=frozenset(base.entries) | frozenset(apt.entries),
        symlinks=symlinks,
    )
    for path, info in apt.entries.items():
        where = base.entries.get(path)
        if path in parents or (info.isdir() and where is not None):
            assert info.isdir(), path
            assert where is not None and where.isdir(), f"{path}: a new directory no .deb ships"
            assert (info.mode & 0o7777, info.uid, info.gid) == (where.mode & 0o7777, where.uid, where.gid), (
                path
            )
            continue
        file = by_path[path]
        found = KINDS[info.type]
        if file.check == "generated":
            assert found == file.kind, path
            assert checkers[path](apt.data[path], context) is None, path
            continue
        if file.check == "presence":
            assert found == file.kind, path
            continue
        assert (info.uid, info.gid) == (file.uid, file.gid), path
        assert file.mode is None or info.mode & 0o7777 == file.mode, path
        if file.kind in ("file", "hardlink"):
            # Hard-linked paths are one file: which of them the layer's tar holds as the file and
            # which as links to it is the tar's choice (its order), not the .deb's.
            assert found in ("file", "hardlink"), path
            held = "/" + info.linkname.removeprefix("./") if found == "hardlink" else path
            assert (_sha(apt.data[held]), len(apt.data[held])) == (file.sha256, file.size), path
        else:
            assert found == file.kind, path
            if file.kind == "symlink":
                assert info.linkname == file.link, path


def _save(client: docker.DockerClient, tag: str, path: Path) -> Path:
    with path.open("wb") as out:
        for chunk in client.images.get(tag).save(named=True):
            out.write(chunk)
    return path


def _merged(layers: list[Layer]) -> Layer:
    """The base's filesystem from its layers (the test bases have no whiteouts; one is refused)."""
    entries: dict[str, tarfile.TarInfo] = {}
    data: dict[str, bytes] = {}
    for layer in layers:
        assert not any(".wh." in path for path in layer.entries), "a base layer with whiteouts"
        entries.update(layer.entries)
        data.update(layer.data)
    return Layer(entries=entries, data=data)


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_the_fraud_images_apt_layer_is_exactly_what_its_locked_debs_install(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    """Every entry of the apt layer of the good fraud image (libgomp1, curl and its libraries, with
    ldconfig triggers) is explained, and nothing the .debs install is missing."""
    lock = read_lock(fraud_image.lock)
    assert lock.base is not None
    (platform,) = lock.base.platforms
    store = ContentStore()
    packages = []
    for pin in lock.apt.packages:
        deb = store.get(pin.sha256)
        assert deb is not None, f"{pin.name}: the build left its .deb in the cache"
        packages.append(read_deb(deb))
    assert debfiles.unpredictable(packages) == []
    layers = _layers(_save(docker_daemon.client, fraud_image.tag, tmp_path / "fraud.tar"))
    count = len(platform.diff_ids)
    base, apt = _merged(layers[:count]), layers[count]
    assert_layer_is_explained(apt, base, packages, architecture=pin.architecture)
    # The stage's apt layer holds the ldconfig cache: proven generated, not assumed.
    assert "/etc/ld.so.cache" in apt.entries


def _system_layer_image(
    daemon: Daemon, base_tag: str, debs: list[tuple[debfiles.DebPackage, bytes]], context: Path, name: str
) -> str:
    """An image of the base and the layer of mlenv's system stage, exactly as mlenv renders it, for
    a lock whose apt closure is `debs`; built with no network. Returns its tag."""
    (context / "mlenv").mkdir(parents=True)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        folder = tarfile.TarInfo(DEBS_DIR.lstrip("/"))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for package, raw in debs:
            info = tarfile.TarInfo(f"{DEBS_DIR.lstrip('/')}/{package.source.removeprefix('deb:')}")
            info.size, info.mode = len(raw), 0o644
            tar.addfile(info, io.BytesIO(raw))
    (context / "mlenv" / DEBS_TAR).write_bytes(archive.getvalue())
    pins = [SimpleNamespace(name=p.package, version=p.version, architecture=p.architecture) for p, _ in debs]
    # _system_stage reads only lock.apt.packages' names, versions and architectures.
    lock = cast(Lock, SimpleNamespace(apt=SimpleNamespace(packages=pins)))
    lines = list(_system_stage(lock, base=base_tag, epoch=1719792000, fetch="host", context_dir="mlenv"))
    lines += [f"FROM {base_tag}", f"COPY --from=system {STAGE}/ /"]
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    digest = hashlib.sha256(b"".join(hashlib.sha256(raw).digest() for _, raw in debs)).hexdigest()
    tag = f"mlenv-test/debfiles-{name}:{digest[:20]}"
    daemon.client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none")
    return tag


PROBE_DATA = [
    Entry(name="./", kind="dir", mode=0o755),
    Entry(name="./etc/", kind="dir", mode=0o755),
    Entry(name="./etc/probe.conf", data=b"setting = 1\n"),
    Entry(name="./usr/", kind="dir", mode=0o755),
    Entry(name="./usr/bin/", kind="dir", mode=0o755),
    Entry(name="./usr/bin/probe-real", data=b"#!/bin/sh\necho probe\n", mode=0o755),
    Entry(name="./usr/bin/probe-again", kind="hardlink", link="./usr/bin/probe-real", mode=0o755),
    Entry(name="./usr/share/", kind="dir", mode=0o755),
    Entry(name="./usr/share/probe/", kind="dir", mode=0o2775),
    Entry(name="./usr/share/doc/", kind="dir", mode=0o755),  # in the base already, and empty here
]
PROBE_POSTINST = (
    b'#!/bin/sh\nset -e\nif [ "$1" = configure ]; then\n'
    b"    update-alternatives --install /usr/bin/probe probe /usr/bin/probe-real 10\nfi\n"
)
PROBE_PRERM = (
    b'#!/bin/sh\nset -e\n[ "$1" != remove ] || update-alternatives --remove probe /usr/bin/probe-real\n'
)


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.parametrize("shipped_md5sums", [True, False], ids=["md5sums", "no-md5sums"])
def test_a_deb_with_a_conffile_scripts_and_an_alternative_on_the_real_engine(
    docker_daemon: Daemon, base_image_python: BaseImage, tmp_path: Path, shipped_md5sums: bool
) -> None:
    """The system stage mlenv renders, run on the test base with one .deb that has a conffile, a
    postinst installing an alternative, a prerm, a hard link and a setgid directory: its layer is
    exactly what debfiles predicts, the alternative's links and state file included (and the
    md5sums dpkg writes for a .deb that ships none)."""
    raw = make_deb(
        package="mlenv-probe",
        multi_arch="foreign",
        data=PROBE_DATA,
        with_md5sums=shipped_md5sums,
        control={"conffiles": b"/etc/probe.conf\n", "postinst": PROBE_POSTINST, "prerm": PROBE_PRERM},
    )
    package = read_deb(raw)
    assert debfiles.alternatives(package) == [
        debfiles.Alternative(
            package="mlenv-probe",
            link="/usr/bin/probe",
            name="probe",
            path="/usr/bin/probe-real",
            priority=10,
        )
    ]
    assert debfiles.unpredictable([package]) == ["mlenv-probe runs maintainer scripts: postinst, prerm"]
    tag = _system_layer_image(
        docker_daemon, base_image_python.local, [(package, raw)], tmp_path / "context", "probe"
    )
    layers = _layers(_save(docker_daemon.client, tag, tmp_path / "probe.tar"))
    base, apt = _merged(layers[:-1]), layers[-1]
    assert_layer_is_explained(apt, base, [package], architecture="amd64")
    assert apt.entries["/usr/bin/probe"].linkname == "/etc/alternatives/probe"
    assert apt.entries["/etc/alternatives/probe"].linkname == "/usr/bin/probe-real"
    assert "/usr/share/doc" not in apt.entries  # an empty .deb directory the base has: not staged


def test_dpkg_writes_md5sums_for_a_deb_without_them_hard_links_included() -> None:
    files = {f.path: f for f in deb_files(make_deb(data=DATA, with_md5sums=False), architecture="amd64")}
    written = (
        f"{hashlib.md5(CONF).hexdigest()}  etc/tool.conf\n"
        f"{hashlib.md5(TOOL).hexdigest()}  usr/bin/tool\n"
        f"{hashlib.md5(TOOL).hexdigest()}  usr/bin/tool-again\n"
    ).encode()
    md5sums_file = files["/var/lib/dpkg/info/tool.md5sums"]
    assert (md5sums_file.sha256, md5sums_file.size, md5sums_file.mode) == (_sha(written), len(written), 0o644)
    again = files["/usr/bin/tool-again"]
    assert (again.sha256, again.size) == (_sha(TOOL), len(TOOL))  # a hard link carries its file's bytes


def test_alternatives_from_literal_postinst_lines_only() -> None:
    postinst = (
        b"#!/bin/sh\nset -e\nupdate-alternatives --install /usr/bin/ed ed /usr/bin/ed.real 20 "
        b"--slave /usr/share/man/man1/ed.1.gz ed.1.gz /usr/share/man/man1/ed.real.1.gz\n"
        b'update-alternatives --install /usr/bin/x x "$path" 10\n'
    )
    package = read_deb(make_deb(package="ed", data=DATA, control={"postinst": postinst}))
    (alternative,) = debfiles.alternatives(package)
    assert alternative.slaves == (
        ("/usr/share/man/man1/ed.1.gz", "ed.1.gz", "/usr/share/man/man1/ed.real.1.gz"),
    )
    files = {f.path: f for f in debfiles.alternatives_files([package])}
    assert files["/usr/bin/ed"].link == "/etc/alternatives/ed"
    assert files["/etc/alternatives/ed"].link == "/usr/bin/ed.real"
    assert files["/etc/alternatives/ed.1.gz"].link == "/usr/share/man/man1/ed.real.1.gz"
    state = b"auto\n/usr/bin/ed\ned.1.gz\n/usr/share/man/man1/ed.1.gz\n\n/usr/bin/ed.real\n20\n"
    state += b"/usr/share/man/man1/ed.real.1.gz\n\n"
    assert files["/var/lib/dpkg/alternatives/ed"].sha256 == _sha(state)


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_nano_from_the_mirror_alternatives_with_slaves_and_merged_usr(
    docker_daemon: Daemon, base_image_python: BaseImage, tmp_path: Path
) -> None:
    """A real Debian package with maintainer scripts: nano's postinst installs two alternatives with
    slaves, and its /bin/nano lands at /usr/bin/nano through the base's merged-/usr symlink. Its
    apt layer is exactly what debfiles predicts (the .deb comes from the base's own apt sources)."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    docker_daemon.client.containers.run(
        base_image_python.local,
        ["sh", "-c", "apt-get update -qq && cd /out && apt-get download -qq nano"],
        volumes={str(downloads): {"bind": "/out", "mode": "rw"}},
        remove=True,
    )
    (deb,) = downloads.glob("nano_*.deb")
    raw = deb.read_bytes()
    package = read_deb(raw)
    assert [(a.name, a.link, a.path) for a in debfiles.alternatives(package)] == [
        ("editor", "/usr/bin/editor", "/bin/nano"),
        ("pico", "/usr/bin/pico", "/bin/nano"),
    ]
    tag = _system_layer_image(
        docker_daemon, base_image_python.local, [(package, raw)], tmp_path / "ctx", "nano"
    )
    layers = _layers(_save(docker_daemon.client, tag, tmp_path / "nano.tar"))
    base, apt = _merged(layers[:-1]), layers[-1]
    assert_layer_is_explained(apt, base, [package], architecture=package.architecture)
    assert "/usr/bin/nano" in apt.entries and "/bin/nano" not in apt.entries
    assert apt.entries["/etc/alternatives/editor.1.gz"].linkname == "/usr/share/man/man1/nano.1.gz"
