"""What each layer of a saved image records about its files: the reading half of comparing two builds.

The observer's tar reader keeps only what probes need (no owners, times or xattrs), so a layer's
headers are read here with the standard library, over the observer's stream plumbing, and the
archive around the layers by the one `docker save` reader.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlenv.errors import ImageError
from mlenv.observe.fs.rootfs import normalize
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
