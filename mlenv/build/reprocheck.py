"""Two builds of one lock, compared layer by layer and file by file, the way diffoci does.

Equal image IDs mean equal configs, hence equal diff_ids, hence byte-identical layers: nothing more
to read. Otherwise every layer whose diff_id differs from the other image's at the same index is
read entry by entry, and each path present in either is compared on what a layer records about
it: type, content sha256, size, mode, owner, mtime, link target and xattrs. The comparison is pure;
`read_saved_image` turns a `docker save` stream (chunks from the observer's daemon transport) into
the records it compares, and does no IO of its own.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlenv.errors import ImageError
from mlenv.observe.fs.rootfs import normalize
from mlenv.observe.stream.decompress import Chunk, ChunkReader, StreamError, decompressed
from mlenv.observe.stream.tar import HARDLINK, REGULAR, SYMLINK, members

SHOW_FILES = 20  # per layer in the text report; the count of the rest is given
SHOW_VALUE = 80  # characters of a config value in the text report
_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
          tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink", tarfile.DIRTYPE: "dir",
          tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
          tarfile.FIFOTYPE: "fifo"}
_XATTR = "SCHILY.xattr."


@dataclass(frozen=True, kw_only=True)
class FileMeta:
    """What a layer tar records about one path (docker writes no atime/ctime and whole-second mtimes)."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    sha256: str | None  # regular files only
    link: str  # symlink or hard link target; "major,minor" for devices
    xattrs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Layer:
    diff_id: str
    entries: Mapping[str, FileMeta] | None  # None: not read, because the other image has the same layer


@dataclass(frozen=True, kw_only=True)
class ImageRecord:
    name: str
    image_id: str
    config: Mapping[str, Any]
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class FieldDiff:
    field: str
    a: str
    b: str


@dataclass(frozen=True)
class FileDiff:
    path: str  # absolute, inside the image
    fields: tuple[FieldDiff, ...]


@dataclass(frozen=True, kw_only=True)
class LayerDiff:
    index: int  # 1-based, bottom first
    step: str  # the Dockerfile step that made the layer, from the image history
    diff_id_a: str | None  # None: the image has no layer at this index
    diff_id_b: str | None
    files: tuple[FileDiff, ...]


@dataclass(frozen=True, kw_only=True)
class ReproReport:
    a: str
    b: str
    image_id_a: str
    image_id_b: str
    layer_count: int
    config: tuple[FieldDiff, ...]
    layers: tuple[LayerDiff, ...]

    @property
    def identical(self) -> bool:
        return self.image_id_a == self.image_id_b and not self.config and not self.layers


# --------------------------------------------------------------------------- comparison (pure)


def layers_to_read(diff_ids: list[str], other: list[str]) -> set[str]:
    """The diff_ids of `diff_ids` not matched by `other` at the same index: the layers worth reading."""
    return {d for i, d in enumerate(diff_ids) if i >= len(other) or other[i] != d}


def layer_steps(config: Mapping[str, Any]) -> list[str]:
    """The history step of each layer, bottom first (history entries marked empty_layer make none)."""
    steps = []
    for entry in config.get("history") or []:
        if entry.get("empty_layer"):
            continue
        text = str(entry.get("created_by", "")).strip()
        nop = "/bin/sh -c #(nop) "
        if nop in text:
            text = text.split(nop, 1)[1].strip()
        elif text.startswith("/bin/sh -c "):
            text = "RUN " + text.removeprefix("/bin/sh -c ")
        steps.append(text or "(no history)")
    return steps


def _fields(a: FileMeta, b: FileMeta) -> tuple[FieldDiff, ...]:
    pairs = [
        ("type", a.kind, b.kind),
        ("content", f"sha256:{a.sha256}" if a.sha256 else "-", f"sha256:{b.sha256}" if b.sha256 else "-"),
        ("size", str(a.size), str(b.size)),
        ("mode", f"{a.mode:04o}", f"{b.mode:04o}"),
        ("owner", f"{a.uid}:{a.gid}", f"{b.uid}:{b.gid}"),
        ("mtime", str(a.mtime), str(b.mtime)),
        ("link", a.link or "-", b.link or "-"),
        ("xattrs", _xattrs(a.xattrs), _xattrs(b.xattrs)),
    ]
    return tuple(FieldDiff(name, x, y) for name, x, y in pairs if x != y)


def _xattrs(values: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v!r}" for k, v in values) or "-"


def compare_entries(a: Mapping[str, FileMeta], b: Mapping[str, FileMeta]) -> tuple[FileDiff, ...]:
    """Every path whose record differs, or that only one side has, sorted by path."""
    found = []
    for path in sorted(set(a) | set(b)):
        left, right = a.get(path), b.get(path)
        if left is None or right is None:
            found.append(FileDiff("/" + path, (FieldDiff("present", str(left is not None).lower(),
                                                         str(right is not None).lower()),)))
            continue
        fields = _fields(left, right)
        if fields:
            found.append(FileDiff("/" + path, fields))
    return tuple(found)


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict) and value:
        flat: dict[str, str] = {}
        for key in sorted(value):
            flat.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: json.dumps(value, sort_keys=True)}


def compare_configs(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[FieldDiff, ...]:
    """Differing config fields by dotted path; the layer list is left to the layer comparison."""
    left = _flatten({k: v for k, v in a.items() if k != "rootfs"})
    right = _flatten({k: v for k, v in b.items() if k != "rootfs"})
    return tuple(FieldDiff(key, left.get(key, "(absent)"), right.get(key, "(absent)"))
                 for key in sorted(set(left) | set(right)) if left.get(key) != right.get(key))


def compare_images(a: ImageRecord, b: ImageRecord) -> ReproReport:
    """What differs between two images: config fields, and per differing layer, the files."""
    steps_a, steps_b = layer_steps(a.config), layer_steps(b.config)
    layers = []
    for index in range(max(len(a.layers), len(b.layers))):
        left = a.layers[index] if index < len(a.layers) else None
        right = b.layers[index] if index < len(b.layers) else None
        if left is not None and right is not None and left.diff_id == right.diff_id:
            continue
        if left is not None and right is not None and left.entries is not None and right.entries is not None:
            files = compare_entries(left.entries, right.entries)
        else:
            files = ()
        steps = steps_a if index < len(steps_a) else steps_b  # from the image that has the layer
        layers.append(LayerDiff(index=index + 1, step=steps[index] if index < len(steps) else "(no history)",
                                diff_id_a=left.diff_id if left else None,
                                diff_id_b=right.diff_id if right else None,
                                files=files))
    return ReproReport(a=a.name, b=b.name, image_id_a=a.image_id, image_id_b=b.image_id,
                       layer_count=max(len(a.layers), len(b.layers)),
                       config=compare_configs(a.config, b.config),
                       layers=tuple(layers))


def _short(text: str, limit: int = SHOW_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_text(report: ReproReport) -> str:
    """The report for people: one line per differing layer and file, config fields last."""
    if report.identical:
        return f"reproducible: {report.a} and {report.b} are both {report.image_id_a}\n"
    lines = [f"not reproducible: {report.a} is {report.image_id_a}, {report.b} is {report.image_id_b}"]
    for layer in report.layers:
        lines.append(f"layer {layer.index} of {report.layer_count} ({_short(layer.step, 100)}): "
                     f"{layer.diff_id_a or 'missing'} vs {layer.diff_id_b or 'missing'}")
        for file in layer.files[:SHOW_FILES]:
            what = "; ".join(f"{f.field} {_short(f.a)} vs {_short(f.b)}" for f in file.fields)
            lines.append(f"  {file.path}: {what}")
        if len(layer.files) > SHOW_FILES:
            lines.append(f"  … and {len(layer.files) - SHOW_FILES} more files")
        if layer.diff_id_a and layer.diff_id_b and not layer.files:
            lines.append("  same files and metadata; the tar streams differ (entry order or header format)")
    for field in report.config:
        lines.append(f"config: {field.field}: {_short(field.a)} vs {_short(field.b)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- reading `docker save` streams


def _hashed(chunks: Iterable[Chunk], hasher: Any) -> Iterator[Chunk]:
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk


def read_layer(chunks: Iterable[Chunk]) -> tuple[str, dict[str, FileMeta]]:
    """(diff_id, entries by root-relative path) of one layer blob, plain or compressed.

    The observer's tar reader keeps only what probes need (no owners, times or xattrs), so the
    headers are read here with the standard library, over the observer's stream plumbing.
    """
    hasher = hashlib.sha256()
    reader = ChunkReader(_hashed(decompressed(chunks), hasher))
    entries: dict[str, FileMeta] = {}
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:  # type: ignore[call-overload]
            for info in archive:
                digest = None
                if info.isreg():
                    content = archive.extractfile(info)
                    assert content is not None
                    file_hash = hashlib.sha256()
                    while block := content.read(1 << 20):
                        file_hash.update(block)
                    digest = file_hash.hexdigest()
                link = info.linkname
                if info.ischr() or info.isblk():
                    link = f"{info.devmajor},{info.devminor}"
                xattrs = tuple(sorted((k.removeprefix(_XATTR), v) for k, v in info.pax_headers.items()
                                      if k.startswith(_XATTR)))
                entries[normalize(info.name)] = FileMeta(
                    kind=_KINDS.get(info.type, "other"), mode=info.mode & 0o7777, uid=info.uid, gid=info.gid,
                    mtime=int(info.mtime), size=info.size if info.isreg() else 0, sha256=digest, link=link,
                    xattrs=xattrs)
    except tarfile.TarError as error:
        raise StreamError(f"unreadable layer tar: {error}") from None
    reader.drain()  # the end-of-archive blocks count in the diff_id
    return "sha256:" + hasher.hexdigest(), entries


def read_saved_image(name: str, image_id: str, chunks: Iterable[Chunk], wanted: set[str]) -> ImageRecord:
    """An ImageRecord from a `docker save` stream of one image, reading the files of the layers in
    `wanted` (by diff_id). Every layer is hashed to learn its diff_id; the manifest comes last."""
    reader = ChunkReader(chunks)
    json_files: dict[str, bytes] = {}
    by_member: dict[str, tuple[str, dict[str, FileMeta]]] = {}
    links: dict[str, str] = {}  # a layer saved twice is stored once, and linked
    try:
        for member in members(reader):
            path = normalize(member.name)
            if member.kind in (SYMLINK, HARDLINK):
                links[path] = normalize(posixpath.join(posixpath.dirname(path), member.link)
                                        if member.kind == SYMLINK else member.link)
            if member.kind != REGULAR:
                reader.skip(member.size)
            elif path.endswith(".json") and "/" not in path:
                json_files[path] = reader.read(member.size)
            elif path.endswith("layer.tar") or path.startswith("blobs/"):
                diff_id, entries = read_layer(reader.views(member.size))
                by_member[path] = (diff_id, entries if diff_id in wanted else {})
            else:
                reader.skip(member.size)
    except StreamError as error:
        raise ImageError(f"{name}: {error}") from None
    try:
        manifest = json.loads(json_files["manifest.json"])[0]
        config = json.loads(json_files[normalize(manifest["Config"])])
        layers = tuple(by_member[_resolve(links, normalize(layer))] for layer in manifest["Layers"])
    except (KeyError, IndexError, ValueError):
        raise ImageError(f"{name}: not a docker save archive of one image") from None
    return ImageRecord(name=name, image_id=image_id, config=config,
                       layers=tuple(Layer(diff_id=d, entries=e if d in wanted else None) for d, e in layers))


def _resolve(links: Mapping[str, str], path: str) -> str:
    for _ in range(40):
        if path not in links:
            break
        path = links[path]
    return path
