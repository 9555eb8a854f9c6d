"""`docker save` archives, legacy or OCI flavoured: the one reader, in a single forward pass.

A save stream is read once and never written anywhere. The small JSON members (manifest.json,
index.json, configs, OCI manifests) are kept wherever they come in the stream (dockerd writes the
manifest last); every layer blob is handed, as it streams past, to the caller's `read_layer`, which
makes of it what the caller needs: the observer indexes the layer's tree, the reproducibility
check records each file's metadata, normalise skips it unread. A layer saved twice is stored once
and linked, so links are followed.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mlenv.errors import ImageError
from mlenv.observe.fs.rootfs import normalize
from mlenv.observe.image.loaded import digest_of, parse_json
from mlenv.observe.limits import MAX_JSON_SIZE, MAX_JSON_TOTAL, Budget
from mlenv.observe.stream.decompress import Chunk, ChunkReader, StreamError
from mlenv.observe.stream.tar import HARDLINK, REGULAR, SYMLINK, members

T = TypeVar("T")
# (member name, the blob's bytes) -> what the caller keeps of the layer. Bytes it leaves unread are skipped.
LayerReader = Callable[[str, Iterator[memoryview]], T]

_JSON_LIMIT = MAX_JSON_SIZE  # configs and manifests are small; a blob this big is a layer
_LINK_DEPTH = 40
# The engine's save stream arrives in the HTTP chunks dockerd writes, 32 KiB each (19,415 for the 607 MiB
# fraud image); each would travel alone through every stage of the layer reader (a queue hand-over
# between its threads included). Joined into pieces of at least this many bytes first.
COALESCE = 1 << 20


@dataclass(frozen=True, kw_only=True)
class SavedImage(Generic[T]):
    """One image of a save archive: its config as stored and, bottom first, its layers."""

    config: bytes  # the config blob byte for byte: its sha256 is the image ID
    config_digest: str
    manifest_digest: str | None  # known only when the archive is OCI flavoured (an index.json alone)
    layer_paths: tuple[str, ...]  # as the manifest names them
    layers: tuple[T, ...]  # what read_layer made of each


def skip_layer(name: str, data: Iterator[memoryview]) -> None:
    """A LayerReader for callers that need the config and manifest only: the layer is not read."""


def read_saved(
    chunks: Iterable[Chunk], read_layer: LayerReader[T], *, where: object, wanted: str | None = None
) -> SavedImage[T]:
    """The image `wanted` (a tag, as docker-archive:PATH:REF names it; None: the only image) of a
    plain-tar save stream. Errors are ImageErrors that start with `where`."""
    try:
        found = _walk(chunks, read_layer)
    except StreamError as error:
        raise ImageError(f"{where}: {error}") from None
    try:
        return _select(where, found, read_layer, wanted)
    except StreamError as error:
        raise ImageError(f"{where}: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError):
        raise ImageError(f"{where}: not a docker save archive (its manifest is malformed)") from None


@dataclass(kw_only=True)
class _Members(Generic[T]):
    json_files: dict[str, bytes] = field(default_factory=dict)
    layers: dict[str, T] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        for _ in range(_LINK_DEPTH):
            if name not in self.links:
                break
            name = self.links[name]
        return name


def _walk(chunks: Iterable[Chunk], read_layer: LayerReader[T]) -> _Members[T]:
    found: _Members[T] = _Members()
    reader = ChunkReader(_coalesced(chunks))
    kept = Budget(MAX_JSON_TOTAL, "JSON members kept")
    for member in members(reader):
        name = normalize(member.name)
        if member.kind in (SYMLINK, HARDLINK):
            # A hard link names its target from the archive root, a symlink from its own directory.
            relative_to = "" if member.kind == HARDLINK else posixpath.dirname(name)
            target = posixpath.join(relative_to, member.link)
            found.links[name] = normalize(target)
            reader.skip(member.size)
            continue
        if member.kind != REGULAR:
            reader.skip(member.size)
            continue
        if member.size <= _JSON_LIMIT and (name.endswith(".json") or reader.peek(1) in (b"{", b"[")):
            kept.charge(member.size, name)
            found.json_files[name] = reader.read(member.size)
        elif name.endswith("layer.tar") or name.startswith("blobs/"):
            data = reader.views(member.size)
            found.layers[name] = read_layer(name, data)
            for _ in data:  # what the layer reader left unread
                pass
        else:
            reader.skip(member.size)
    reader.drain()
    return found


def _coalesced(chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """The same bytes in pieces of at least COALESCE bytes (but the last); large chunks pass as they are."""
    pending: list[Chunk] = []
    have = 0
    for chunk in chunks:
        if not pending and len(chunk) >= COALESCE:
            yield chunk
            continue
        pending.append(chunk)
        have += len(chunk)
        if have >= COALESCE:
            yield b"".join(pending)
            pending, have = [], 0
    if pending:
        yield b"".join(pending)


def _blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _select(
    where: object, found: _Members[T], read_layer: LayerReader[T], wanted: str | None
) -> SavedImage[T]:
    manifest_digest = None
    if "manifest.json" in found.json_files:
        entries = parse_json(where, "manifest.json", found.json_files["manifest.json"])
        entry = _legacy_entry(where, entries, wanted)
        config_name = found.resolve(normalize(entry["Config"]))
        config = found.json_files.get(config_name)
        if config is None:
            raise ImageError(f"{where}: the archive lacks the image config {entry['Config']}")
        paths = tuple(entry.get("Layers") or ())
    elif "index.json" in found.json_files:
        index = parse_json(where, "index.json", found.json_files["index.json"])
        descriptors = index.get("manifests") or []
        if len(descriptors) != 1:
            raise ImageError(f"{where}: the archive's index lists {len(descriptors)} images")
        manifest_digest = descriptors[0]["digest"]
        manifest = parse_json(where, "manifest", found.json_files.get(_blob_name(manifest_digest), b"null"))
        if not isinstance(manifest, dict):
            raise ImageError(f"{where}: the archive lacks manifest {manifest_digest}")
        config = found.json_files.get(_blob_name(manifest["config"]["digest"]))
        if config is None:
            raise ImageError(f"{where}: the archive lacks the image config")
        paths = tuple(_blob_name(layer["digest"]) for layer in manifest.get("layers") or [])
    else:
        raise ImageError(f"{where}: not a docker save archive (no manifest.json or index.json)")
    layers = []
    for path in paths:
        name = found.resolve(normalize(path))
        if name in found.layers:
            layers.append(found.layers[name])
        elif name in found.json_files:
            # A layer whose first bytes looked like JSON (a first entry named "{..."): read it from memory.
            layers.append(read_layer(name, iter((memoryview(found.json_files[name]),))))
        else:
            raise ImageError(f"{where}: the archive lacks layer {path}")
    return SavedImage(
        config=config,
        config_digest=digest_of(config),
        manifest_digest=manifest_digest,
        layer_paths=paths,
        layers=tuple(layers),
    )


def _legacy_entry(where: object, entries: Any, wanted: str | None) -> Mapping[str, Any]:
    if not isinstance(entries, list):
        raise ImageError(f"{where}: not a docker save archive (manifest.json is not a list)")
    if wanted is not None:
        candidates = [
            e
            for e in entries
            if wanted in (e.get("RepoTags") or [])
            or any(
                wanted == tag.split("/")[-1] or tag.endswith("/" + wanted) for tag in e.get("RepoTags") or []
            )
        ]
        if not candidates:
            tags = sorted(t for e in entries for t in e.get("RepoTags") or [])
            raise ImageError(
                f"{where}: no image '{wanted}' in the archive (has: {', '.join(tags) or 'none'})"
            )
    else:
        candidates = entries
    if len(candidates) != 1:
        raise ImageError(
            f"{where}: the archive holds {len(candidates)} images; name one as docker-archive:PATH:REF"
        )
    chosen: Mapping[str, Any] = candidates[0]
    return chosen
