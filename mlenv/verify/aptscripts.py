"""What the locked packages' maintainer scripts and dpkg triggers write during `apt-get install`.

debfiles accounts for what dpkg itself writes; a package's postinst or a trigger it is interested in
runs a tool that writes files no .deb ships (update-mime-database, fc-cache, gdk-pixbuf-query-loaders,
update-rc.d, debconf). Each rule below is one such output, listed in code with the step that writes it
and why, and applies only when the package that runs the step is in the locked set and its script
says so with literal words (read from the locked .deb's control members). Content is judged from
locked bytes where it can be (a symlink by its exact target, a directory by the mode the script
gives it, dpkg's trigger interests and debconf's databases by what the locked control members
declare); where it cannot be reproduced without running the tool (the mime database, the pixbuf
loaders cache) the rule names exactly the paths and kinds the tool writes, regular files of mode 0644
owned by root, and its `why` says the content is not judged beyond a shape check. Nothing here
accepts "anything under a directory": every path is named.

Outputs that a build may or may not hold (`optional`) are expected only when present: a log the
system stage now removes (images built before keep it), links a postinst makes from a debconf answer,
a directory a postinst makes only where the base has none (`settle`).
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from mlenv.verify.debfiles import AptContext, Checker, DebPackage, parse_control
from mlenv.verify.manifest import ExpectedFile, FileKind

MIME_DIR = "/usr/share/mime"
MIME_PACKAGES = f"{MIME_DIR}/packages"
# The database files update-mime-database (shared-mime-info 2.x) writes beside the per-type files.
MIME_DATABASE = (
    "XMLnamespaces",
    "aliases",
    "generic-icons",
    "globs",
    "globs2",
    "icons",
    "magic",
    "mime.cache",
    "subclasses",
    "treemagic",
    "types",
    "version",
)
FONT_CACHE = "/var/cache/fontconfig"
FONT_LOG = "/var/log/fontconfig.log"
CONF_AVAIL = "/usr/share/fontconfig/conf.avail"
CONF_DIR = "/etc/fonts/conf.d"
TRIGGERS_FILE = "/var/lib/dpkg/triggers/File"
DEBCONF_CONFIG = "/var/cache/debconf/config.dat"
DEBCONF_TEMPLATES = "/var/cache/debconf/templates.dat"
STAFF_GID = 50  # Debian's static id of group staff (base-passwd)
# fc-cache's cache directory tag (fontconfig's FcDirCacheCreateTagFile), byte for byte.
CACHEDIR_TAG = (
    b"Signature: 8a477f597d28d172789f06886806bc55\n"
    b"# This file is a cache directory tag created by fontconfig.\n"
    b"# For information about cache directory tags, see:\n"
    b"#       http://www.brynosaurus.com/cachedir/\n"
)


@dataclass(frozen=True, kw_only=True)
class Output:
    """One path a maintainer script or trigger writes, with the step (`trigger:NAME`,
    `postinst:PACKAGE`, `debconf:PACKAGE`) and why."""

    path: str
    kind: FileKind
    step: str
    why: str
    mode: int | None = None
    uid: int | None = 0
    gid: int | None = 0
    link: str | None = None
    checker: Checker | None = None  # content rule; None: a link, a directory, or content not judged
    optional: bool = False

    def expected(self) -> ExpectedFile:
        check: Literal["bytes", "generated", "presence"] = (
            "generated" if self.checker is not None else "presence" if self.kind == "file" else "bytes"
        )
        return ExpectedFile(
            path=self.path,
            kind=self.kind,
            source=f"step:{self.step}",
            mode=self.mode,
            uid=self.uid,
            gid=self.gid,
            link=self.link,
            check=check,
        )


def _text(package: DebPackage, member: str) -> str:
    found = package.member(member)
    return found.data.decode("utf-8", "replace") if found is not None else ""


_INTERESTS = ("interest", "interest-await", "interest-noawait")


def file_interests(package: DebPackage) -> list[tuple[str, bool]]:
    """(path, noawait) of each file trigger the package is interested in (its triggers member)."""
    found = []
    for line in _text(package, "triggers").splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in _INTERESTS and words[1].startswith("/"):
            found.append((words[1], words[0] == "interest-noawait"))
    return found


def _ships(packages: Sequence[DebPackage], path: str) -> bool:
    return any(m.path == path for p in packages for m in p.members)


# --- update-mime-database (shared-mime-info's trigger) ----------------------------------------


def mime_types(packages: Iterable[DebPackage]) -> list[str]:
    """The types declared by the locked packages' /usr/share/mime/packages/*.xml (their mime-type
    elements' type attributes), sorted; a file that does not parse declares none."""
    types: set[str] = set()
    for package in packages:
        for path, data in package.data:
            if posixpath.dirname(path) != MIME_PACKAGES:
                continue
            try:
                root = ElementTree.fromstring(data)
            except ElementTree.ParseError:
                continue
            for element in root:
                if element.tag.rpartition("}")[2] == "mime-type":
                    name = element.get("type", "")
                    if re.fullmatch(r"[A-Za-z0-9.+_-]+/[A-Za-z0-9.+_-]+", name):
                        types.add(name)
    return sorted(types)


def _mime_type_file(name: str) -> Checker:
    marker = f'type="{name}"'.encode()

    def check(data: bytes, context: AptContext) -> str | None:
        head = data[:1024]
        if not head.startswith(b"<?xml") or b"<mime-type" not in head or marker not in head:
            return f"not update-mime-database's <mime-type {marker.decode()}> file"
        return None

    return check


def mime_outputs(packages: Sequence[DebPackage]) -> list[Output]:
    runner = next(
        (
            p
            for p in packages
            if (MIME_PACKAGES, True) in file_interests(p) or (MIME_PACKAGES, False) in file_interests(p)
        ),
        None,
    )
    if runner is None or "update-mime-database" not in _text(runner, "postinst"):
        return []
    step = f"trigger:{runner.package}"
    outputs = [
        Output(
            # update-mime-database names the file by the type in lower case (audio/AMR: audio/amr.xml).
            path=f"{MIME_DIR}/{name.lower()}.xml",
            kind="file",
            step=step,
            mode=0o644,
            checker=_mime_type_file(name),
            why=f"update-mime-database writes one file per type a locked {MIME_PACKAGES}/*.xml declares "
            "(its translations are not judged: only that it is that type's XML)",
        )
        for name in mime_types(packages)
    ]
    outputs += [
        Output(
            path=f"{MIME_DIR}/{name}",
            kind="file",
            step=step,
            mode=0o644,
            checker=None,
            why="update-mime-database's compiled database file, by name (content not judged)",
        )
        for name in MIME_DATABASE
    ]
    return outputs


# --- gdk-pixbuf-query-loaders (libgdk-pixbuf's postinst and trigger) ----------------------------

_LOADERS_CACHE = re.compile(r">\s*(/\S+/loaders\.cache)\b")


def _loaders_cache(loaders: tuple[str, ...]) -> Checker:
    def check(data: bytes, context: AptContext) -> str | None:
        text = data.decode("utf-8", "replace")
        if not text.startswith("# GdkPixbuf Image Loader Modules file"):
            return "not a gdk-pixbuf loaders cache"
        for block in text.split("\n\n"):
            lines = [line for line in block.splitlines() if line and not line.startswith("#")]
            if not lines:
                continue
            module = lines[0].strip().strip('"')
            if posixpath.dirname(module) not in loaders:
                return f"names a loader {module} outside the locked loader directories"
            if context.image_paths and context.resolve(module) not in context.image_paths:
                return f"names a loader {module} that no locked source installs"
        return None

    check.__doc__ = "Every module a loaders.cache block names is a locked loader (the rest is not judged)."
    return check


def pixbuf_outputs(packages: Sequence[DebPackage]) -> list[Output]:
    outputs = []
    for package in packages:
        loaders = tuple(p for p, _ in file_interests(package) if p.endswith("/loaders"))
        match = _LOADERS_CACHE.search(_text(package, "postinst"))
        if not loaders or match is None or "gdk-pixbuf-query-loaders" not in _text(package, "postinst"):
            continue
        outputs.append(
            Output(
                path=match.group(1),
                kind="file",
                step=f"postinst:{package.package}",
                mode=0o644,
                checker=_loaders_cache(loaders),
                why="gdk-pixbuf-query-loaders, run by the postinst (and its trigger on the loader "
                "directories), lists the loaders; each named module must be a locked file, the "
                "rest of the content is not judged",
            )
        )
    return outputs


# --- fontconfig: fc-cache (postinst and trigger), conf.d links, /usr/local/share/fonts ----------


def _exact(expected: bytes, what: str) -> Checker:
    def check(data: bytes, context: AptContext) -> str | None:
        return None if data == expected else f"not {what}"

    return check


def fontconfig_outputs(packages: Sequence[DebPackage]) -> list[Output]:
    outputs: list[Output] = []
    for package in packages:
        script = _text(package, "postinst")
        step = f"postinst:{package.package}"
        if "fc-cache" in script and f"mkdir -p {FONT_CACHE}" in script:
            outputs += [
                Output(
                    path=FONT_CACHE,
                    kind="dir",
                    step=step,
                    mode=0o755,
                    why="the postinst makes fc-cache's cache directory (mkdir -p)",
                ),
                Output(
                    path=f"{FONT_CACHE}/CACHEDIR.TAG",
                    kind="file",
                    step=step,
                    mode=0o644,
                    checker=_exact(CACHEDIR_TAG, "fc-cache's cache directory tag"),
                    why="fc-cache tags its cache directory (fixed bytes)",
                ),
            ]
            if f">{FONT_LOG}" in script.replace(" ", "").replace("1>", ">"):
                # Removed by the system stage now (render.dockerfile.VOLATILE); an image built
                # before that keeps it: explained, by path and kind, its content not judged.
                outputs.append(
                    Output(
                        path=FONT_LOG,
                        kind="file",
                        step=step,
                        mode=0o644,
                        optional=True,
                        why="the postinst sends fc-cache -v's output there (content not judged)",
                    )
                )
        if f"CONFAVAIL={CONF_AVAIL}" in script and f"CONFDIR={CONF_DIR}" in script:
            names = sorted(set(re.findall(r"(?<![/\w.-])(\d\d-[\w.-]+\.conf)\b", script)))
            outputs += [
                Output(
                    path=f"{CONF_DIR}/{name}",
                    kind="symlink",
                    step=step,
                    link=f"{CONF_AVAIL}/{name}",
                    optional=True,
                    why="the postinst links the conf.avail file debconf's answer chose (ln -s)",
                )
                for name in names
                if _ships(packages, f"{CONF_AVAIL}/{name}")
            ]
        local = re.search(r"^LOCALDIR=(/\S+)$", script, re.MULTILINE)
        mode = re.search(r"chmod ([0-7]{3,4}) \$LOCALDIR", script)
        if local and mode and "chown root:staff $LOCALDIR" in script:
            outputs.append(
                Output(
                    path=local.group(1),
                    kind="dir",
                    step=step,
                    mode=int(mode.group(1), 8),
                    gid=STAFF_GID,
                    optional=True,
                    why="the postinst makes it where the base has none (mkdir, chmod, chown root:staff)",
                )
            )
    return outputs


# --- update-rc.d NAME defaults (a postinst with an init script) ---------------------------------


def _runlevels(script: str, field: str) -> list[str]:
    match = re.search(rf"^#\s*{field}:[ \t]*(.*)$", script, re.MULTILINE)
    return match.group(1).split() if match else []


def rc_outputs(packages: Sequence[DebPackage]) -> list[Output]:
    """update-rc.d without insserv links /etc/rc<level>.d/S01NAME (Default-Start levels) and K01NAME
    (Default-Stop levels) to ../init.d/NAME, the levels read from the locked init script's LSB header."""
    outputs = []
    for package in packages:
        for name in sorted(set(re.findall(r"update-rc\.d ([\w.-]+) defaults", _text(package, "postinst")))):
            init = f"/etc/init.d/{name}"
            member = next((m for m in package.members if m.path == init and m.kind == "file"), None)
            data = package.data_of(init)
            if member is None or data is None or not member.mode & 0o111:
                continue
            text = data.decode("utf-8", "replace")
            links = [("S", level) for level in _runlevels(text, "Default-Start")]
            links += [("K", level) for level in _runlevels(text, "Default-Stop")]
            outputs += [
                Output(
                    path=f"/etc/rc{level}.d/{prefix}01{name}",
                    kind="symlink",
                    step=f"postinst:{package.package}",
                    link=f"../init.d/{name}",
                    why=f"update-rc.d {name} defaults links the init script it ships",
                )
                for prefix, level in links
            ]
    return outputs


# --- dpkg's file trigger interests --------------------------------------------------------------


def _interest_lines(packages: Sequence[DebPackage]) -> list[str]:
    return [
        f"{path} {p.info_name}{'/noawait' if noawait else ''}"
        for p in packages
        for path, noawait in file_interests(p)
    ]


def check_triggers_file(data: bytes, context: AptContext) -> str | None:
    """/var/lib/dpkg/triggers/File: the base's lines and one per file trigger interest of a locked
    package ("<path> <package>[/noawait]"), each once (their order is dpkg's hash order: not judged)."""
    lines = data.decode("utf-8", "replace").splitlines()
    base = (context.base_file(TRIGGERS_FILE) or b"").decode("utf-8", "replace").splitlines()
    wanted = set(base) | set(_interest_lines(context.packages))
    if len(lines) != len(set(lines)):
        return "a trigger interest is listed twice"
    extra, missing = sorted(set(lines) - wanted), sorted(wanted - set(lines))
    if extra or missing:
        return f"trigger interests differ (extra: {extra or 'none'}; missing: {missing or 'none'})"
    return None


def triggers_outputs(packages: Sequence[DebPackage]) -> list[Output]:
    if not _interest_lines(packages):
        return []
    return [
        Output(
            path=TRIGGERS_FILE,
            kind="file",
            step="trigger-interests",
            uid=None,
            gid=None,
            checker=check_triggers_file,
            why="dpkg records the file trigger interests of the packages it unpacks",
        )
    ]


# --- debconf's databases (the templates members, loaded by dpkg-preconfigure) ---------------------


def templates(package: DebPackage) -> dict[str, dict[str, str]]:
    """Template name -> its fields (lower-case names), from the package's templates member."""
    found = {}
    for block in re.split(r"\n\s*\n", _text(package, "templates")):
        if not block.strip():
            continue
        try:
            fields = {k.lower(): v for k, v in parse_control(block)}
        except ValueError:
            continue
        if "template" in fields:
            found[fields["template"]] = fields
    return found


def _stanzas(data: bytes) -> dict[str, dict[str, str]]:
    found = {}
    for block in re.split(r"\n\s*\n", data.decode("utf-8", "replace")):
        if block.strip():
            fields = {k.lower(): v for k, v in parse_control(block)}
            found[fields.get("name", "")] = fields
    return found


def _declared(packages: Sequence[DebPackage]) -> dict[str, tuple[str, dict[str, str]]]:
    return {name: (p.package, fields) for p in packages for name, fields in templates(p).items()}


def _debconf_names(
    data: bytes, context: AptContext, path: str
) -> tuple[dict[str, dict[str, str]], str | None]:
    try:
        found = _stanzas(data)
        base = _stanzas(context.base_file(path) or b"")
    except ValueError as e:
        return {}, f"not a debconf database ({e})"
    declared = _declared(context.packages)
    extra = sorted(set(found) - set(declared) - set(base))
    missing = sorted(set(declared) - set(found))
    changed = sorted(name for name in base if name not in declared and found.get(name) != base[name])
    if changed:
        return found, f"the base's entries changed: {changed}"
    if extra or missing:
        return (
            found,
            f"templates differ from the locked packages' "
            f"(extra: {extra or 'none'}; missing: {missing or 'none'})",
        )
    return found, None


def check_debconf_templates(data: bytes, context: AptContext) -> str | None:
    """templates.dat: one stanza per template of a locked package (and the base's), each with the
    Default and the first Description line the locked templates member states (translations and the
    extended descriptions are not judged)."""
    found, problem = _debconf_names(data, context, DEBCONF_TEMPLATES)
    if problem is not None:
        return problem
    for name, (_, fields) in sorted(_declared(context.packages).items()):
        stanza = found[name]
        for key in ("default", "description"):
            want = fields.get(key, "").split("\n")[0].strip()
            if want and stanza.get(key, "").split("\n")[0].strip() != want:
                return f"template {name}: {key} is not the locked package's {want!r}"
    return None


def check_debconf_config(data: bytes, context: AptContext) -> str | None:
    """config.dat: one question per template of a locked package (and the base's), its own template,
    owned by that package, holding the template's Default (the noninteractive frontend's answer)."""
    found, problem = _debconf_names(data, context, DEBCONF_CONFIG)
    if problem is not None:
        return problem
    for name, (owner, fields) in sorted(_declared(context.packages).items()):
        stanza = found[name]
        owners = [o.strip() for o in stanza.get("owners", "").split(",")]
        if stanza.get("template") != name or owner not in owners:
            return f"question {name}: not its own template owned by {owner}"
        if stanza.get("value", "") != fields.get("default", ""):
            value, default = stanza.get("value", ""), fields.get("default", "")
            return f"question {name}: value {value!r}, the template's default is {default!r}"
    return None


def debconf_outputs(packages: Sequence[DebPackage]) -> list[Output]:
    owners = sorted(p.package for p in packages if templates(p))
    if not owners:
        return []
    step = f"debconf:{','.join(owners)}"
    why = "dpkg-preconfigure (debconf's apt hook) loads the locked templates and their default answers"
    return [
        Output(
            path=DEBCONF_CONFIG, kind="file", step=step, mode=0o644, checker=check_debconf_config, why=why
        ),
        Output(
            path=DEBCONF_TEMPLATES,
            kind="file",
            step=step,
            mode=0o644,
            checker=check_debconf_templates,
            why=why,
        ),
    ]


# --- all of them ------------------------------------------------------------------------------


def outputs(packages: Sequence[DebPackage]) -> list[Output]:
    """Every path the locked packages' scripts and triggers write, one rule each (sorted by path)."""
    found = [
        *mime_outputs(packages),
        *pixbuf_outputs(packages),
        *fontconfig_outputs(packages),
        *rc_outputs(packages),
        *triggers_outputs(packages),
        *debconf_outputs(packages),
    ]
    by_path: dict[str, Output] = {}
    for output in found:
        by_path.setdefault(output.path, output)
    return [by_path[p] for p in sorted(by_path)]


class _Entry(Protocol):
    @property
    def kind(self) -> str: ...


def settle(
    files: Sequence[ExpectedFile],
    packages: Sequence[DebPackage],
    *,
    found: Mapping[str, object],
    base: Mapping[str, _Entry],
) -> list[ExpectedFile]:
    """The expectations that apply to this image: an optional output (see `Output.optional`) only
    where an upper layer holds it; and a directory a .deb ships where the base has a symlink (usrmerge:
    /lib -> usr/lib) is the base's symlink, which stands: the .deb's files land under its target."""
    optional = {o.path for o in outputs(packages) if o.optional}
    kept = []
    for item in files:
        if item.path in optional and item.path not in found:
            continue
        entry = base.get(item.path)
        if item.kind == "dir" and item.path not in found and entry is not None and entry.kind == "symlink":
            continue
        kept.append(item)
    return kept
