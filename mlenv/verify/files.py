"""Every path of every layer above the locked base, accounted for: FoundFile x ExpectedFile -> drifts.

`file_view` turns the layers' own entries (read once by the observer, hashes only) into the final view
of what the layers above the base hold: later layers override earlier ones, whiteouts and opaque
markers remove, and each path remembers the layer (and build step) that wrote it. The base's own
view is kept beside it, so an upper layer that shadows or removes a base file is seen.

`compare_files` then explains each found path by exactly one ExpectedFile, whose values come from what
the lock pins (never from metadata inside the image). Anything unexplained is a drift that names the
absolute path and the layer: an extra file, a missing or modified one, a wrong kind or link target, a
.pyc that is not the checked-hash byte code of its source, a base file shadowed or whited out. A
package that pip reinstalled over the same version in a later layer is one drift, not one per file.
Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlenv.model.report import Drift, Kind
from mlenv.observe.fs.rootfs import LayerIndex
from mlenv.observe.image.layerfiles import LayerEntry, layer_entries
from mlenv.verify.manifest import ExpectedFile, FoundFile

# Content of a path (None: absent, or its content was not kept), in the base's or the upper layers' view.
Lookup = Callable[[str], bytes | None]
# A content rule for a file that a build step generates: (found content, the base's contents, the upper
# layers' contents) -> what is wrong, or None when the content is what the step makes.
ContentCheck = Callable[[bytes, Lookup, Lookup], str | None]
# A .pyc rule: (the .pyc found, its expectation, the view) -> what is wrong, or None.
PycCheck = Callable[[FoundFile, ExpectedFile, "FileView"], str | None]

_REGULAR = ("file", "hardlink")
# Files pip writes into a dist-info directory on every install: a reinstall rewrites them.
_INSTALL_RECORDS = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


@dataclass(kw_only=True)
class FileView:
    """What the layers above the base hold, after every layer was applied (see the module docstring)."""

    layer_count: int  # all layers of the image, base included
    base_layers: int  # how many of them are the locked base's
    steps: Sequence[str]  # the build step of each layer ('' where unknown)
    files: dict[str, FoundFile] = field(default_factory=dict)  # path -> the upper layer's entry that won
    base: dict[str, LayerEntry] = field(default_factory=dict)  # the base's own final view
    removed: dict[str, int] = field(default_factory=dict)  # base path -> upper layer that whited it out
    content: dict[str, bytes] = field(default_factory=dict)  # kept content of upper files, by path
    written: dict[int, set[str]] = field(default_factory=dict)  # layer -> every path it wrote
    _directories: dict[str, str] = field(default_factory=dict, repr=False)  # canonical's, by directory

    def where(self, layer: int) -> str:
        """`layer 5 of 6 (ADD file:… in /)`: how a drift names a layer (1-based, as base_layer_name)."""
        step = self.steps[layer] if layer < len(self.steps) else ""
        return f"layer {layer + 1} of {self.layer_count}" + (f" ({step})" if step else "")

    def base_content(self, path: str) -> bytes | None:
        entry = self.base.get(path)
        return entry.content if entry is not None else None

    def canonical(self, path: str) -> str:
        """`path` with each symlinked parent directory resolved through the base and upper views (on a
        merged-/usr base, /lib/x is /usr/lib/x): expectations name paths as packages do. Call it once
        the view is complete: each parent directory is resolved once (13,000 venv paths of ten parts
        each took 0.3 s when every one was walked from the root)."""
        parent, _, name = path.rpartition("/")
        if not parent or name in ("", ".", ".."):
            return self._resolve(path)
        directory = self._directories.get(parent)
        if directory is None:
            directory = self._directories[parent] = self._resolve(parent + "/.")
        return directory.rstrip("/") + "/" + name

    def _resolve(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        resolved: list[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            candidate = "/" + "/".join([*resolved, name])
            entry = self.files.get(candidate) or self.base.get(candidate)
            if parts and entry is not None and entry.kind == "symlink" and entry.link and hops < 40:
                hops += 1
                target = [p for p in entry.link.split("/") if p]
                resolved = [] if entry.link.startswith("/") else resolved
                parts = target + parts
                continue
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            if name != ".":
                resolved.append(name)
        return "/" + "/".join(resolved)


def file_view(
    indexes: Sequence[LayerIndex], *, base_layers: int, steps: Sequence[str], keep: Callable[[str], bool]
) -> FileView:
    """The view of `indexes` (every layer of the image, bottom first) above the first `base_layers`.
    `keep` names the upper paths whose content (kept by the reader) the checks need."""
    view = FileView(layer_count=len(indexes), base_layers=base_layers, steps=steps)
    for index in indexes[:base_layers]:
        _apply(view.base, index, _entries(index))
    for number in range(base_layers, len(indexes)):
        index = indexes[number]
        for directory in index.opaque:
            _hide(view, "/" + directory if directory else "/", number, inclusive=False)
        for path in index.whiteouts:
            _hide(view, "/" + path, number, inclusive=True)
        written = view.written.setdefault(number, set())
        for entry in layer_entries(index):
            if entry.path == "/":
                continue
            view.files[entry.path] = FoundFile(
                path=entry.path,
                kind=entry.kind,
                layer=number,
                size=entry.size,
                sha256=entry.sha256,
                mode=entry.mode,
                uid=entry.uid,
                gid=entry.gid,
                link=entry.link,
            )
            written.add(entry.path)
            if entry.content is not None and keep(entry.path):
                view.content[entry.path] = entry.content
            else:
                view.content.pop(entry.path, None)
    return view


def _entries(index: LayerIndex) -> Iterable[LayerEntry]:
    return (e for e in layer_entries(index) if e.path != "/")


def _under(path: str, directory: str) -> bool:
    return directory == "/" or path == directory or path.startswith(directory.rstrip("/") + "/")


def _apply(tree: dict[str, LayerEntry], index: LayerIndex, entries: Iterable[LayerEntry]) -> None:
    """One base layer over the base view: opaque markers and whiteouts, then its entries."""
    for directory in index.opaque:
        prefix = "/" + directory + "/" if directory else "/"
        for path in [p for p in tree if p.startswith(prefix)]:
            del tree[path]
    for removed in index.whiteouts:
        path = "/" + removed
        for found in [p for p in tree if _under(p, path)]:
            del tree[found]
    for entry in entries:
        tree[entry.path] = entry


def _hide(view: FileView, path: str, layer: int, *, inclusive: bool) -> None:
    """A whiteout (`inclusive`: the path itself and what is under it) or an opaque directory (only what
    is under it) in upper layer `layer`: lower upper entries go; base entries are remembered as removed."""

    def hidden(candidate: str) -> bool:
        if inclusive:
            return _under(candidate, path)
        return candidate != path and _under(candidate, path)

    for found in [p for p in view.files if hidden(p)]:
        del view.files[found]
        view.content.pop(found, None)
    for base_path in view.base:
        if hidden(base_path) and base_path not in view.removed:
            view.removed[base_path] = layer


# ---------------------------------------------------------------------------- the comparison


def compare_files(
    expected: Iterable[ExpectedFile],
    view: FileView,
    *,
    content_checks: Mapping[str, ContentCheck],
    pyc_check: PycCheck,
    renderings: Mapping[str, Collection[str]] | None = None,
) -> list[Drift]:
    """Drifts (layer "files") between what the lock explains and what the upper layers hold. A generated
    file is judged by its content rule (`content_checks`), or by the sha256 of every rendering its rule
    allows (`renderings`, by path)."""
    allowed = renderings or {}
    wanted: dict[str, ExpectedFile] = {}
    for item in expected:
        wanted.setdefault(view.canonical(item.path), item)
    drifts: list[_Finding] = []
    explained: set[str] = set()
    for path in sorted(wanted):
        item = wanted[path]
        found = view.files.get(path)
        explained.add(path)
        if found is None:
            drifts += _absent(path, item, view)
            continue
        drifts += _judge(path, item, found, view, content_checks, pyc_check, allowed)
    parents = _ancestors(wanted)
    for path in sorted(set(view.files) - explained):
        found = view.files[path]
        base = view.base.get(path)
        if base is not None and _same_as_base(found, base):
            continue  # the base's own entry, written again unchanged (a copied-up directory, a touched file)
        if found.kind == "dir" and path in parents and base is None:
            continue  # a directory that holds expected files: made by whatever put them there
        if found.kind == "dir" and base is not None and base.kind == "dir" and path in parents:
            drifts.append(_finding("shadowed", path, _base_text(base), _found_text(found, view), found))
            continue
        if base is not None:
            drifts.append(_finding("shadowed", path, _base_text(base), _found_text(found, view), found))
            continue
        drifts.append(_finding("extra", path, None, _found_text(found, view), found))
    for path, layer in sorted(view.removed.items()):
        if path in view.files or path in wanted:
            continue  # re-added above, or expected gone and judged as expected
        drifts.append(
            _Finding(
                drift=Drift(
                    layer="files",
                    kind="whiteout",
                    subject=path,
                    expected=_base_text(view.base[path]),
                    actual=f"removed in {view.where(layer)}",
                ),
                source=None,
                layer=layer,
            )
        )
    return _fold_reinstalls(drifts, wanted, view)


@dataclass(frozen=True, kw_only=True)
class _Finding:
    drift: Drift
    source: str | None  # the ExpectedFile.source it is about, when there is one
    layer: int | None  # the layer of the found entry, when there is one


def _finding(
    kind: Kind,
    path: str,
    expected: str | None,
    actual: str | None,
    found: FoundFile | None,
    source: str | None = None,
) -> _Finding:
    return _Finding(
        drift=Drift(layer="files", kind=kind, subject=path, expected=expected, actual=actual),
        source=source,
        layer=found.layer if found is not None else None,
    )


def _ancestors(paths: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        parent = path.rpartition("/")[0]
        while parent and parent not in found:
            found.add(parent)
            parent = parent.rpartition("/")[0]
    return found


def _same_as_base(found: FoundFile, base: LayerEntry) -> bool:
    return (
        found.kind == base.kind
        and found.sha256 == base.sha256
        and found.size == base.size
        and found.mode == base.mode
        and found.uid == base.uid
        and found.gid == base.gid
        and (found.link or None) == (base.link or None)
    )


def _absent(path: str, item: ExpectedFile, view: FileView) -> list[_Finding]:
    """An expected path no upper layer holds: fine when the base holds it as expected (a locked .deb of
    the version the base already has is not unpacked again), else missing."""
    base = view.base.get(path)
    if (
        base is not None
        and path not in view.removed
        and not _problems(item, _as_found(base), view, {}, None, {})
    ):
        return []
    return [_finding("missing", path, _expected_text(item), None, None, item.source)]


def _as_found(entry: LayerEntry) -> FoundFile:
    return FoundFile(
        path=entry.path,
        kind=entry.kind,
        layer=-1,
        size=entry.size,
        sha256=entry.sha256,
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        link=entry.link,
    )


def _kind_of(found: FoundFile) -> str:
    return "file" if found.kind in _REGULAR else found.kind


def _problems(
    item: ExpectedFile,
    found: FoundFile,
    view: FileView,
    content_checks: Mapping[str, ContentCheck],
    pyc_check: PycCheck | None,
    renderings: Mapping[str, Collection[str]],
) -> list[tuple[Kind, str | None, str | None]]:
    """(kind, expected, found) of each way `found` is not `item`."""
    want_kind = "file" if item.kind in _REGULAR else item.kind
    if _kind_of(found) != want_kind:
        return [("kind", want_kind, _kind_of(found))]
    problems: list[tuple[Kind, str | None, str | None]] = []
    if item.kind == "symlink" and item.link is not None and found.link != item.link:
        problems.append(("link", item.link, found.link))
    if want_kind == "file":
        if item.check == "bytes" and (
            item.sha256 is None
            and item.size is None  # nothing to compare with: never a silent match
            or (item.sha256 is not None and found.sha256 != item.sha256)
            or (item.size is not None and found.size != item.size)
        ):
            problems.append(("modified", _expected_text(item), None))
        elif item.check == "pyc":
            problem = pyc_check(found, item, view) if pyc_check is not None else "not checked"
            if problem is not None:
                problems.append(("pyc", f"checked-hash byte code of {item.pyc_source}", problem))
        elif item.check == "generated" and item.path in renderings:
            digests = renderings[item.path]
            if found.sha256 not in digests:
                problems.append(
                    ("modified", f"one of the {len(digests)} renderings from {item.source}", None)
                )
        elif item.check == "generated":
            rule = content_checks.get(item.path)
            content = view.content.get(found.path)
            if rule is None or content is None:
                problems.append(("modified", _expected_text(item), "content not kept to check"))
            else:
                problem = rule(content, view.base_content, view.content.get)
                if problem is not None:
                    problems.append(("modified", _expected_text(item), problem))
            base = view.base.get(found.path)
            if (
                base is not None
                and item.mode is None
                and (base.mode, base.uid, base.gid)
                != (
                    found.mode,
                    found.uid,
                    found.gid,
                )
            ):
                # A generated file over a base file keeps the base file's mode and owner.
                problems.append(
                    (
                        "modified",
                        f"mode {base.mode:04o} owner {base.uid}:{base.gid} (the base's)",
                        f"mode {found.mode:04o} owner {found.uid}:{found.gid}",
                    )
                )
    for name, want, have in (
        ("mode", item.mode, found.mode),
        ("uid", item.uid, found.uid),
        ("gid", item.gid, found.gid),
    ):
        if want is not None and want != have:
            text = (lambda v: f"{v:04o}") if name == "mode" else str
            problems.append(("modified", f"{name} {text(want)}", f"{name} {text(have)}"))
    return problems


def _judge(
    path: str,
    item: ExpectedFile,
    found: FoundFile,
    view: FileView,
    content_checks: Mapping[str, ContentCheck],
    pyc_check: PycCheck,
    renderings: Mapping[str, Collection[str]],
) -> list[_Finding]:
    findings = []
    for kind, want, have in _problems(item, found, view, content_checks, pyc_check, renderings):
        actual = _found_text(found, view) if have is None else f"{have} in {view.where(found.layer)}"
        findings.append(_finding(kind, path, want, actual, found, item.source))
    return findings


def _expected_text(item: ExpectedFile) -> str:
    parts = []
    if item.sha256 is not None:
        parts.append(f"sha256:{item.sha256}")
    if item.size is not None:
        parts.append(f"{item.size} bytes")
    if item.link is not None:
        parts.append(f"-> {item.link}")
    if item.check == "generated":
        parts.append("generated content")
    parts.append(f"from {item.source}")
    return " ".join(parts) if parts else item.kind


def _what(entry: FoundFile | LayerEntry) -> str:
    """A path's content as a drift line shows it: hash and size, a link's target, or its kind."""
    if entry.kind in _REGULAR:
        return f"sha256:{entry.sha256} {entry.size} bytes" if entry.sha256 else f"{entry.size} bytes"
    if entry.kind == "symlink":
        return f"symlink -> {entry.link}"
    return entry.kind


def _found_text(found: FoundFile, view: FileView) -> str:
    return f"{_what(found)} mode {found.mode:04o} in {view.where(found.layer)}"


def _base_text(entry: LayerEntry) -> str:
    return f"the base's {_what(entry)} mode {entry.mode:04o}"


def _fold_reinstalls(
    findings: list[_Finding], wanted: Mapping[str, ExpectedFile], view: FileView
) -> list[Drift]:
    """A wheel whose files were all written again by one later layer, differing only in the files an
    install writes (.pyc, RECORD, INSTALLER, direct_url.json, ...), is one drift: the package
    reinstalled there, naming its site directory and what the reinstall changed. A changed module in
    the same layer is still its own drift (code, not install records)."""
    by_source: dict[str, list[str]] = {}
    for path, item in wanted.items():
        if item.source.startswith("wheel:"):
            by_source.setdefault(item.source, []).append(path)
    # An extra file in a wheel's dist-info directory (pip's direct_url.json of a reinstall from a
    # file) belongs to that wheel: the expectation has no source for it.
    dist_infos = {
        source: path.rpartition("/")[0]
        for source, paths in sorted(by_source.items())
        for path in sorted(paths)
        if path.rpartition("/")[0].endswith(".dist-info")
    }
    records = {directory: source for source, directory in dist_infos.items()}
    folded: dict[tuple[str, int], list[_Finding]] = {}
    kept: list[_Finding] = []
    for finding in findings:
        source = finding.source
        if source is None and finding.drift.kind == "extra":
            source = records.get(finding.drift.subject.rpartition("/")[0])
        layer = finding.layer
        if source is not None and layer is not None and _reinstalled(finding, by_source.get(source), view):
            folded.setdefault((source, layer), []).append(finding)
        else:
            kept.append(finding)
    drifts = [f.drift for f in kept]
    for (source, layer), group in sorted(folded.items()):
        site = f" into {dist_infos[source].rpartition('/')[0]}" if source in dist_infos else ""
        drifts.append(
            Drift(
                layer="files",
                kind="reinstalled",
                subject=source.removeprefix("wheel:"),
                expected=f"installed once, in the venv step, from {source}",
                actual=f"installed again in {view.where(layer)}{site}: {_changes(group)}",
            )
        )
    return sorted(drifts, key=lambda d: (d.subject, d.kind))


def _changes(group: Sequence[_Finding]) -> str:
    """What a reinstall rewrote, counted: `3 .pyc not the checked-hash byte code, RECORD modified`."""
    pycs = sum(1 for f in group if f.drift.kind == "pyc" or f.drift.subject.endswith(".pyc"))
    parts = [f"{pycs} .pyc not the checked-hash byte code"] if pycs else []
    for finding in sorted(group, key=lambda f: f.drift.subject):
        name = finding.drift.subject.rsplit("/", 1)[-1]
        if not (finding.drift.kind == "pyc" or name.endswith(".pyc")):
            parts.append(f"{name} {'added' if finding.drift.kind == 'extra' else finding.drift.kind}")
    return ", ".join(parts)


def _reinstalled(finding: _Finding, paths: list[str] | None, view: FileView) -> bool:
    """Whether `finding` is part of its wheel's reinstall by the layer that holds it: that layer wrote
    every file of the wheel again (a lower layer had written them first), and the finding is about a
    file an install rewrites (byte code or the install records), not about the package's own code."""
    layer = finding.layer
    if paths is None or layer is None:
        return False
    name = finding.drift.subject.rsplit("/", 1)[-1]
    if not (finding.drift.kind == "pyc" or name.endswith(".pyc") or name in _INSTALL_RECORDS):
        return False
    code = [p for p in paths if not p.endswith(".pyc")]
    if not code or not all(p in view.written.get(layer, ()) for p in code):
        return False
    return any(code[0] in view.written.get(lower, ()) for lower in range(view.base_layers, layer))
