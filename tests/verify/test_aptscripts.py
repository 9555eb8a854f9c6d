"""verify.aptscripts: what locked packages' maintainer scripts and triggers write, on recorded data.

Each rule is checked twice: the layer the real step writes (shapes recorded from bookworm's
shared-mime-info 2.2, fontconfig 2.14.1, x11-common 7.7+23, libgdk-pixbuf 2.42.10 and debconf, as the
torch service's apt layer holds them) is drift-free, and a tampered one is a drift. The layers are real
tars read by the observer, judged by verify's own comparison (files.compare_files), with the rules'
expectations and checkers as debfiles.apt_layer returns them and accounting.settle applies them.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass

from mlenv.observe.fs.rootfs import LayerIndex, index_layer
from mlenv.verify import aptscripts
from mlenv.verify.debfiles import AptContext, ControlMember, DataMember, DebPackage, apt_layer
from mlenv.verify.files import ContentCheck, FileView, compare_files, file_view
from mlenv.verify.manifest import ExpectedFile, FoundFile

MIME_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<mime-info xmlns="http://www.freedesktop.org/standards/shared-mime-info">
  <mime-type type="application/pdf"><comment>PDF document</comment></mime-type>
  <mime-type type="text/plain"><comment>plain text document</comment></mime-type>
  <mime-type type="audio/AMR"><comment>AMR audio</comment></mime-type>
</mime-info>
"""
INIT = b"#!/bin/sh\n### BEGIN INIT INFO\n# Provides: x11-common\n# Default-Start:     S\n# Default-Stop:\n"
TEMPLATES = (
    b"Template: fontconfig/hinting_style\nType: select\nChoices: hintslight, hintfull\n"
    b"Default: hintslight\nDescription: Font tuning method for screen (system default):\n"
    b" Please select the preferred method.\n"
)
PIXBUF_LOADERS = "/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders"
LOADERS_CACHE = "/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders.cache"


def member(path: str, kind: str = "file", mode: int = 0o644, link: str | None = None) -> DataMember:
    digest = hashlib.sha256(path.encode()).hexdigest() if kind == "file" else None
    return DataMember(path=path, kind=kind, mode=mode, uid=0, gid=0, sha256=digest, link=link)  # type: ignore[arg-type]


def package(
    name: str,
    *,
    arch: str = "amd64",
    members: tuple[DataMember, ...] = (),
    data: tuple[tuple[str, bytes], ...] = (),
    multiarch: bool = False,
    **control: bytes,
) -> DebPackage:
    fields = [("Package", name), ("Version", "1"), ("Architecture", arch)]
    if multiarch:
        fields.append(("Multi-Arch", "same"))
    return DebPackage(
        source=f"deb:{name}_1_{arch}.deb",
        control=tuple(fields),
        control_members=tuple(
            ControlMember(name=key, data=value, mode=0o755) for key, value in sorted(control.items())
        ),
        members=members,
        data=data,
    )


SHARED_MIME = package(
    "shared-mime-info",
    members=(
        member("/usr/share/mime/packages", "dir", 0o755),
        member("/usr/share/mime/packages/freedesktop.org.xml"),
    ),
    data=(("/usr/share/mime/packages/freedesktop.org.xml", MIME_XML),),
    postinst=b'#!/bin/sh\nset -e\nif [ "$1" = "triggered" ]; then\n'
    b"  update-mime-database /usr/share/mime\nfi\n",
    triggers=b"interest-noawait /usr/share/mime/packages\n",
)
FONTCONFIG = package(
    "fontconfig",
    postinst=b'#!/bin/sh\nif [ "$1" = configure ]; then\n  mkdir -p /var/cache/fontconfig\n'
    b"  fc-cache -s -f -v 1>/var/log/fontconfig.log 2>&1\nfi\n",
    triggers=b"interest-noawait /usr/share/fonts\n",
)
FONTCONFIG_CONFIG = package(
    "fontconfig-config",
    arch="all",
    members=(
        member("/usr/share/fontconfig/conf.avail", "dir", 0o755),
        member("/usr/share/fontconfig/conf.avail/10-hinting-slight.conf"),
        member("/usr/share/fontconfig/conf.avail/70-no-bitmaps.conf"),
        member("/etc/fonts/conf.d", "dir", 0o755),
    ),
    postinst=b"#!/bin/sh\nCONFAVAIL=/usr/share/fontconfig/conf.avail\nCONFDIR=/etc/fonts/conf.d\n"
    b'hintslight="10-hinting-slight.conf"\nno_bitmaps="70-no-bitmaps.conf"\n'
    b'yes_bitmaps="70-yes-bitmaps.conf"\nln -s $CONFAVAIL/$hintslight $CONFDIR/$hintslight\n'
    b'dpkg-maintscript-helper rm_conffile /etc/fonts/conf.avail/10-autohint.conf 2.10 -- "$@"\n'
    b"LOCALDIR=/usr/local/share/fonts\nif [ ! -d $LOCALDIR ]; then\n  if mkdir $LOCALDIR; then\n"
    b"    chmod 2775 $LOCALDIR\n    chown root:staff $LOCALDIR\n  fi\nfi\n",
    templates=TEMPLATES,
)
X11_COMMON = package(
    "x11-common",
    arch="all",
    members=(member("/etc/init.d", "dir", 0o755), member("/etc/init.d/x11-common", mode=0o755)),
    data=(("/etc/init.d/x11-common", INIT),),
    postinst=b'#!/bin/sh\nif [ -x "/etc/init.d/x11-common" ]; then\n'
    b"\tupdate-rc.d x11-common defaults >/dev/null\nfi\n",
)
PIXBUF = package(
    "libgdk-pixbuf-2.0-0",
    multiarch=True,
    members=(member(PIXBUF_LOADERS, "dir", 0o755), member(f"{PIXBUF_LOADERS}/libpixbufloader-png.so")),
    postinst=(
        f"#!/bin/sh\nLOADERS_DIR={PIXBUF_LOADERS}\n/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/gdk-pixbuf-query-loaders"
        f" $(find $LOADERS_DIR -name *.so) \\\n    > {LOADERS_CACHE} || true\n"
    ).encode(),
    triggers=f"interest-noawait {PIXBUF_LOADERS}\nactivate-noawait ldconfig\n".encode(),
)
GLIB = package(
    "libglib2.0-0",
    multiarch=True,
    triggers=b"interest-await /usr/share/glib-2.0/schemas\n",
)
ALL = (SHARED_MIME, FONTCONFIG, FONTCONFIG_CONFIG, X11_COMMON, PIXBUF, GLIB)

CACHE = (
    b"# GdkPixbuf Image Loader Modules file\n# Automatically generated file, do not edit\n#\n"
    b'"/usr/lib/x86_64-linux-gnu/gdk-pixbuf-2.0/2.10.0/loaders/libpixbufloader-png.so"\n'
    b'"png" 5 "gdk-pixbuf" "PNG" "LGPL"\n"image/png" ""\n"png" ""\n"\\211PNG\\r\\n\\032\\n" "" 100\n\n'
)
BASE_TRIGGERS = b"/usr/share/debianutils/shells.d debianutils/noawait\n"
TRIGGERS = BASE_TRIGGERS + (
    b"/usr/share/mime/packages shared-mime-info/noawait\n"
    b"/usr/share/fonts fontconfig/noawait\n"
    + f"{PIXBUF_LOADERS} libgdk-pixbuf-2.0-0:amd64/noawait\n".encode()
    + b"/usr/share/glib-2.0/schemas libglib2.0-0:amd64\n"
)
CONFIG_DAT = (
    b"Name: fontconfig/hinting_style\nTemplate: fontconfig/hinting_style\nValue: hintslight\n"
    b"Owners: fontconfig-config\n\n"
)
TEMPLATES_DAT = (
    b"Name: fontconfig/hinting_style\nChoices: hintslight, hintfull\nDefault: hintslight\n"
    b"Description: Font tuning method for screen (system default):\n"
    b"Extended_description: Please select the preferred method.\nType: select\n\n"
)


@dataclass(frozen=True)
class M:
    """One tar member: path, kind ("file", "dir", "symlink"), content or link, mode, gid."""

    path: str
    kind: str = "file"
    data: bytes | str = b""
    mode: int | None = None
    gid: int = 0


def layer(*members: M) -> LayerIndex:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for m in members:
            info = tarfile.TarInfo(m.path.lstrip("/"))
            info.uid, info.gid = 0, m.gid
            if m.kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, m.mode or 0o755
                archive.addfile(info)
            elif m.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(m.data), 0o777
                archive.addfile(info)
            else:
                content = m.data if isinstance(m.data, bytes) else m.data.encode()
                info.size, info.mode = len(content), m.mode or 0o644
                archive.addfile(info, io.BytesIO(content))
    return index_layer(iter([buffer.getvalue()]), interest=lambda _path: True, threaded=False)


BASE = layer(
    M("/etc", "dir"),
    M("/etc/rcS.d", "dir"),
    M("/usr", "dir"),
    M("/usr/lib", "dir"),
    M("/lib", "symlink", "usr/lib"),
    M("/usr/local", "dir"),
    M("/usr/local/share", "dir"),
    M("/var", "dir"),
    M("/var/lib/dpkg/triggers", "dir"),
    M("/var/lib/dpkg/triggers/File", data=BASE_TRIGGERS),
)


def script_layer(*, drop: frozenset[str] = frozenset(), extra: tuple[M, ...] = ()) -> list[M]:
    """What the scripts and triggers of ALL write (the torch service's shapes), but `drop`."""
    members = [
        M(
            "/usr/share/mime/application/pdf.xml",
            data=b'<?xml version="1.0"?>\n<mime-type type="application/pdf">',
        ),
        M("/usr/share/mime/text/plain.xml", data=b'<?xml version="1.0"?>\n<mime-type type="text/plain">'),
        # Named by the type in lower case; the type attribute keeps its case.
        M("/usr/share/mime/audio/amr.xml", data=b'<?xml version="1.0"?>\n<mime-type type="audio/AMR">'),
        *[M(f"/usr/share/mime/{name}", data=b"db") for name in aptscripts.MIME_DATABASE],
        M("/var/cache/fontconfig", "dir"),
        M("/var/cache/fontconfig/CACHEDIR.TAG", data=aptscripts.CACHEDIR_TAG),
        M("/var/log/fontconfig.log", data=b"fc-cache: succeeded\n"),
        M(
            "/etc/fonts/conf.d/10-hinting-slight.conf",
            "symlink",
            "/usr/share/fontconfig/conf.avail/10-hinting-slight.conf",
        ),
        M(
            "/etc/fonts/conf.d/70-no-bitmaps.conf",
            "symlink",
            "/usr/share/fontconfig/conf.avail/70-no-bitmaps.conf",
        ),
        M("/usr/local/share/fonts", "dir", mode=0o2775, gid=50),
        M("/etc/rcS.d/S01x11-common", "symlink", "../init.d/x11-common"),
        M(LOADERS_CACHE, data=CACHE),
        M("/var/lib/dpkg/triggers/File", data=TRIGGERS),
        M("/var/cache/debconf/config.dat", data=CONFIG_DAT),
        M("/var/cache/debconf/templates.dat", data=TEMPLATES_DAT),
    ]
    return [m for m in members if m.path not in drop] + list(extra)


def drifts(members: list[M], packages: tuple[DebPackage, ...] = ALL) -> list[str]:
    """The drift lines verify's comparison finds for the rules' paths in an apt layer holding
    `members` (the packages' own files are not in it: only what the scripts write is judged)."""
    files, checkers = apt_layer(packages, architecture="amd64")
    rules = {o.path for o in aptscripts.outputs(packages)}
    ours = [f for f in files if f.path in rules]
    fview = file_view(
        [BASE, layer(*members)], base_layers=1, steps=["base", "COPY apt"], keep=lambda _p: True
    )
    ours = aptscripts.settle(ours, packages, found=fview.files, base=fview.base)
    shipped = {f.path for f in files if f.source.startswith("deb:")}
    context = AptContext(
        packages=packages,
        base_file=fview.base_content,
        image_paths=frozenset(fview.base) | frozenset(fview.files) | shipped,
    )
    checks: dict[str, ContentCheck] = {
        path: (lambda c: lambda found, base, upper: c(found, context))(checker)
        for path, checker in checkers.items()
    }
    found = compare_files(ours, fview, content_checks=checks, pyc_check=_no_pyc)
    return [f"{d.subject}: {d.kind} {d.expected} / {d.actual}" for d in found]


def _no_pyc(found: FoundFile, item: ExpectedFile, fview: FileView) -> str | None:
    raise AssertionError("no byte code here")


def test_what_the_scripts_write_is_explained() -> None:
    assert drifts(script_layer()) == []


def test_each_output_names_its_step() -> None:
    by_path = {o.path: o for o in aptscripts.outputs(ALL)}
    assert by_path["/usr/share/mime/application/pdf.xml"].step == "trigger:shared-mime-info"
    assert by_path["/etc/rcS.d/S01x11-common"].step == "postinst:x11-common"
    assert by_path["/etc/fonts/conf.d/70-no-bitmaps.conf"].step == "postinst:fontconfig-config"
    assert by_path[LOADERS_CACHE].step == "postinst:libgdk-pixbuf-2.0-0"
    assert all(o.why for o in by_path.values())
    # A name the postinst knows whose conf.avail file no locked .deb ships is not a link it may make.
    assert "/etc/fonts/conf.d/70-yes-bitmaps.conf" not in by_path
    # A path the postinst only removes (rm_conffile of /etc/fonts/conf.avail/...) is not an output.
    assert "/etc/fonts/conf.d/10-autohint.conf" not in by_path


def test_no_rule_without_the_package_that_runs_the_step() -> None:
    # The mime package file alone (another package shipping one) does not bring the database.
    others = (package("foo", members=SHARED_MIME.members, data=SHARED_MIME.data),)
    assert aptscripts.outputs(others) == []
    lines = drifts(script_layer(drop=frozenset({"/var/lib/dpkg/triggers/File"})), packages=others)
    assert any(line.startswith("/usr/share/mime/application/pdf.xml: extra") for line in lines)
    assert any(line.startswith("/etc/rcS.d/S01x11-common: extra") for line in lines)


def test_a_mime_file_for_an_undeclared_type_is_a_drift() -> None:
    lines = drifts(
        script_layer(extra=(M("/usr/share/mime/application/x-evil.xml", data=b"<?xml?><mime-type>"),))
    )
    assert [line.split(":")[0] for line in lines] == ["/usr/share/mime/application/x-evil.xml"]
    assert "extra" in lines[0]


def test_a_mime_file_that_is_not_its_type_or_is_executable_is_a_drift() -> None:
    path = "/usr/share/mime/text/plain.xml"
    lines = drifts(script_layer(drop=frozenset({path}), extra=(M(path, data=b"#!/bin/sh\nid\n"),)))
    assert len(lines) == 1 and lines[0].startswith(f"{path}: modified") and "mime-type" in lines[0]
    lines = drifts(
        script_layer(
            drop=frozenset({path}), extra=(M(path, data=b'<?xml?><mime-type type="text/plain">', mode=0o755),)
        )
    )
    assert len(lines) == 1 and "mode 0644" in lines[0] and "mode 0755" in lines[0]


def test_an_executable_in_the_fontconfig_cache_is_a_drift() -> None:
    lines = drifts(script_layer(extra=(M("/var/cache/fontconfig/run.sh", data=b"#!/bin/sh\n", mode=0o755),)))
    assert [line.split(":")[0] for line in lines] == ["/var/cache/fontconfig/run.sh"]
    tag = "/var/cache/fontconfig/CACHEDIR.TAG"
    lines = drifts(script_layer(drop=frozenset({tag}), extra=(M(tag, data=aptscripts.CACHEDIR_TAG + b"x"),)))
    assert len(lines) == 1 and lines[0].startswith(f"{tag}: modified")


def test_a_symlink_pointing_elsewhere_is_a_drift() -> None:
    link = "/etc/fonts/conf.d/10-hinting-slight.conf"
    lines = drifts(script_layer(drop=frozenset({link}), extra=(M(link, "symlink", "/tmp/evil.conf"),)))
    assert len(lines) == 1 and lines[0].startswith(f"{link}: link") and "/tmp/evil.conf" in lines[0]
    rc = "/etc/rcS.d/S01x11-common"
    lines = drifts(script_layer(drop=frozenset({rc}), extra=(M(rc, "symlink", "../init.d/evil"),)))
    assert len(lines) == 1 and lines[0].startswith(f"{rc}: link")
    # A start link for another level than the init script's header names is not explained.
    lines = drifts(script_layer(extra=(M("/etc/rc2.d/S01x11-common", "symlink", "../init.d/x11-common"),)))
    assert [line.split(":")[0] for line in lines] == ["/etc/rc2.d/S01x11-common"]


def test_the_rc_link_is_required_and_the_choice_links_are_not() -> None:
    lines = drifts(script_layer(drop=frozenset({"/etc/rcS.d/S01x11-common"})))
    assert len(lines) == 1 and lines[0].startswith("/etc/rcS.d/S01x11-common: missing")
    # Links a debconf answer chooses, a log the stage now removes, a directory made only where missing.
    optional = {"/etc/fonts/conf.d/70-no-bitmaps.conf", "/var/log/fontconfig.log", "/usr/local/share/fonts"}
    assert drifts(script_layer(drop=frozenset(optional))) == []


def test_the_local_fonts_directory_is_judged_by_its_mode_and_owner() -> None:
    path = "/usr/local/share/fonts"
    lines = drifts(script_layer(drop=frozenset({path}), extra=(M(path, "dir", mode=0o777),)))
    assert {line.split(":")[0] for line in lines} == {path}
    assert any("mode 2775" in line for line in lines) and any("gid 50" in line for line in lines)


def test_the_fontconfig_log_is_explained_by_kind_and_mode() -> None:
    log = "/var/log/fontconfig.log"
    lines = drifts(script_layer(drop=frozenset({log}), extra=(M(log, data=b"x", mode=0o755),)))
    assert len(lines) == 1 and lines[0].startswith(f"{log}: modified")
    lines = drifts(script_layer(drop=frozenset({log}), extra=(M(log, "symlink", "/etc/shadow"),)))
    assert len(lines) == 1 and lines[0].startswith(f"{log}: kind")


def test_a_loaders_cache_naming_an_unlocked_module_is_a_drift() -> None:
    evil = CACHE + b'"/tmp/libevil.so"\n"evil" 5 "x" "X" "LGPL"\n\n'
    lines = drifts(script_layer(drop=frozenset({LOADERS_CACHE}), extra=(M(LOADERS_CACHE, data=evil),)))
    assert len(lines) == 1 and "/tmp/libevil.so" in lines[0]


def test_trigger_interests_are_the_base_and_the_locked_packages() -> None:
    path = "/var/lib/dpkg/triggers/File"
    evil = TRIGGERS + b"/usr/bin evil/noawait\n"
    lines = drifts(script_layer(drop=frozenset({path}), extra=(M(path, data=evil),)))
    assert len(lines) == 1 and "evil/noawait" in lines[0]
    lines = drifts(
        script_layer(drop=frozenset({path}), extra=(M(path, data=TRIGGERS.replace(BASE_TRIGGERS, b"")),))
    )
    assert len(lines) == 1 and "debianutils" in lines[0]


def test_debconf_databases_hold_the_locked_templates_and_defaults() -> None:
    config = "/var/cache/debconf/config.dat"
    changed = CONFIG_DAT.replace(b"Value: hintslight", b"Value: hintfull")
    lines = drifts(script_layer(drop=frozenset({config}), extra=(M(config, data=changed),)))
    assert len(lines) == 1 and "hintfull" in lines[0]
    more = CONFIG_DAT + b"Name: evil/question\nTemplate: evil/question\nValue: x\nOwners: evil\n\n"
    lines = drifts(script_layer(drop=frozenset({config}), extra=(M(config, data=more),)))
    assert len(lines) == 1 and "evil/question" in lines[0]
    templates = "/var/cache/debconf/templates.dat"
    changed = TEMPLATES_DAT.replace(b"Default: hintslight", b"Default: hintfull")
    lines = drifts(script_layer(drop=frozenset({templates}), extra=(M(templates, data=changed),)))
    assert len(lines) == 1 and lines[0].startswith(f"{templates}: modified")


def test_a_usrmerged_base_keeps_its_lib_symlink() -> None:
    dbus = package(
        "libdbus-1-3", members=(member("/lib", "dir", 0o755), member("/lib/x86_64-linux-gnu", "dir", 0o755))
    )
    files, _ = apt_layer((dbus,), architecture="amd64")
    fview = file_view(
        [BASE, layer(M("/usr/share", "dir"))], base_layers=1, steps=["base", "COPY apt"], keep=lambda _p: True
    )
    settled = {f.path for f in aptscripts.settle(files, (dbus,), found=fview.files, base=fview.base)}
    assert "/lib" not in settled and "/lib/x86_64-linux-gnu" in settled
    # Where the base has no symlink there, the directory is expected as the .deb ships it.
    plain = file_view(
        [layer(M("/usr", "dir")), layer(M("/usr/share", "dir"))],
        base_layers=1,
        steps=["base", "COPY apt"],
        keep=lambda _p: True,
    )
    assert "/lib" in {f.path for f in aptscripts.settle(files, (dbus,), found=plain.files, base=plain.base)}
