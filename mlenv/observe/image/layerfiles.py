"""What each layer of an image records about its files: the reading half of comparing two builds, and
each layer's own entries (`layer_entries`, from the observer's one pass) for verify's file accounting.

The observer's tar reader keeps only what probes need (no owners, times or xattrs), so a layer's
headers are read here with the standard library, over the observer's stream plumbing, and the
archive around the layers by the one `docker save` reader.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from mlenv.errors import ImageError
from mlenv.observe.fs.rootfs import LayerIndex, normalize
from mlenv.observe.image.dockersave import read_saved
from mlenv.observe.image.loaded import check_layers, parse_json
from mlenv.observe.stream.decompress import Chunk, ChunkReader, StreamError, decompressed

_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.DIRTYPE: "dir",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
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


def _hashed(chunks: Iterable[Chunk], hasher: Any) -> Iterator[Chunk]:
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk


def read_layer(chunks: Iterable[Chunk]) -> tuple[str, dict[str, FileMeta]]:
    """(diff_id, entries by root-relative path) of one layer blob, plain or compressed."""
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
                xattrs = tuple(
                    sorted(
                        (k.removeprefix(_XATTR), v)
                        for k, v in info.pax_headers.items()
                        if k.startswith(_XATTR)
                    )
                )
                entries[normalize(info.name)] = FileMeta(
                    kind=_KINDS.get(info.type, "other"),
                    mode=info.mode & 0o7777,
                    uid=info.uid,
                    gid=info.gid,
                    mtime=int(info.mtime),
                    size=info.size if info.isreg() else 0,
                    sha256=digest,
                    link=link,
                    xattrs=xattrs,
                )
    except tarfile.TarError as error:
        raise StreamError(f"unreadable layer tar: {error}") from None
    reader.drain()  # the end-of-archive blocks count in the diff_id
    return "sha256:" + hasher.hexdigest(), entries


def read_saved_image(name: str, chunks: Iterable[Chunk], wanted: set[str]) -> ImageRecord:
    """An ImageRecord from a `docker save` stream of one image, with the files of the layers in
    `wanted` (by diff_id). Every layer is hashed to learn its diff_id, and the diff_ids must be the
    config's; the image ID is the sha256 of the config as saved."""

    def layer(_path: str, data: Iterator[memoryview]) -> Layer:
        diff_id, entries = read_layer(data)
        return Layer(diff_id=diff_id, entries=entries if diff_id in wanted else None)

    saved = read_saved(chunks, layer, where=name)
    config = parse_json(name, "config", saved.config)
    if not isinstance(config, dict):
        raise ImageError(f"{name}: the image config is not a JSON object")
    check_layers(name, config, [found.diff_id for found in saved.layers])
    return ImageRecord(name=name, image_id=saved.config_digest, config=config, layers=saved.layers)


# --------------------------------------------------------------------------- one layer's own entries


class LayerEntry(NamedTuple):
    """One path as a layer's tar writes it (from the observer's single pass; no content kept). A named
    tuple: verify makes one for every entry of every layer (24,608 in the fraud image), and a frozen
    dataclass's __init__ took 4 µs of it each."""

    path: str  # absolute
    kind: str  # "file", "hardlink", "dir", "symlink", "other"
    size: int
    sha256: str | None  # regular files, and hard links whose target was found
    mode: int
    uid: int
    gid: int
    link: str | None
    content: bytes | None = None  # only for the paths the reader's interest predicate kept


def layer_entries(index: LayerIndex) -> Iterator[LayerEntry]:
    """The entries of one layer, in archive order (whiteouts and opaque markers are on the index)."""
    for path, node in index.entries.items():
        yield LayerEntry(
            path="/" + path,
            kind=node.kind,
            size=node.size,
            sha256=None if node.digest is None else node.digest.hex(),
            mode=node.mode,
            uid=node.uid,
            gid=node.gid,
            link=node.link,
            content=node.content,
        )


def layer_steps(config: Mapping[str, Any]) -> list[str]:
    """The build step that made each layer (bottom first), from the config's history: its entries that
    are not empty layers line up with rootfs.diff_ids. '' where the history does not say."""
    count = len((config.get("rootfs") or {}).get("diff_ids") or ())
    steps = [
        str(entry.get("created_by") or "")
        for entry in config.get("history") or ()
        if isinstance(entry, Mapping) and not entry.get("empty_layer")
    ]
    if len(steps) != count:
        return [""] * count  # a history that does not match the layers names no step rather than a wrong one
    return [_step_text(step) for step in steps]


def _step_text(created_by: str) -> str:
    """`ADD file:… in /` for the classic builder's `/bin/sh -c #(nop) ADD file:… in / `; a RUN as its
    command, cut to one short line."""
    text = created_by.strip()
    text = text.removeprefix("/bin/sh -c ")
    if text.startswith("#(nop)"):
        text = text.removeprefix("#(nop)").strip()
    else:
        text = "RUN " + text
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."
