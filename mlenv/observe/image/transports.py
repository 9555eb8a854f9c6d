"""Where an image comes from, in skopeo's words: docker-daemon:NAME, docker-archive:PATH[:REF],
oci:PATH[:TAG], docker://REF; a bare name means the daemon.

Every transport ends the same way: the image config, and each layer read once into a LayerIndex
whose computed diff_id must equal the one the config lists (the check costs nothing: the hash is
taken in the same pass that parses the layer).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from mlenv.errors import ImageError
from mlenv.model.target import DEFAULT_PLATFORM
from mlenv.observe.fs.rootfs import Interest, LayeredFS, LayerIndex, index_layer, normalize
from mlenv.observe.stream.decompress import Chunk, ChunkReader, StreamError, decompressed, read_chunks
from mlenv.observe.stream.tar import HARDLINK, REGULAR, SYMLINK, members

Transport = Literal["docker-daemon", "docker-archive", "oci", "docker"]
TRANSPORTS: tuple[Transport, ...] = ("docker-daemon", "docker-archive", "oci", "docker")

OCI_REF_NAME = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_JSON_LIMIT = 64 << 20  # configs and manifests are small; a blob this big is a layer


@dataclass(frozen=True, kw_only=True)
class ImageLocation:
    transport: Transport
    target: str  # daemon image name, archive or layout path, or registry reference
    selector: str | None = None  # oci: tag; docker-archive: image reference inside the archive

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.target}"
        tail = f":{self.selector}" if self.selector else ""
        return f"{self.transport}:{self.target}{tail}"


@dataclass(frozen=True, kw_only=True)
class LayerSummary:
    diff_id: str
    size: int  # uncompressed bytes
    compression: str
    files: int


@dataclass(frozen=True, kw_only=True)
class LoadedImage:
    """An image read without running it: its config and the merged filesystem of its layers."""

    location: ImageLocation
    config: Mapping[str, Any]
    config_digest: str | None
    manifest_digest: str | None
    layers: tuple[LayerSummary, ...]
    fs: LayeredFS


def parse_location(text: str) -> ImageLocation:
    """Split a reference into transport and target. For paths with a ':' suffix, the suffix is a
    selector only when the whole text is not itself an existing path."""
    if not text.strip():
        raise ImageError("empty image reference")
    if text.startswith("docker://"):
        return ImageLocation(transport="docker", target=text[len("docker://"):])
    for transport in ("docker-daemon", "docker-archive", "oci"):
        prefix = transport + ":"
        if not text.startswith(prefix):
            continue
        rest = text[len(prefix):]
        if not rest:
            raise ImageError(f"{text}: nothing after '{prefix}'")
        if transport == "docker-daemon":
            return ImageLocation(transport="docker-daemon", target=rest)
        path, selector = rest, None
        if not os.path.exists(rest) and ":" in rest:
            # The path is the shortest prefix before a ':' that exists; if none exists (an error
            # to report later), the selector starts at the first ':' of the last path component.
            cuts = [i for i, char in enumerate(rest) if char == ":"]
            existing = [i for i in cuts if os.path.exists(rest[:i])]
            slash = rest.rfind("/")
            cut = existing[0] if existing else next((i for i in cuts if i > slash), None)
            if cut is not None:
                path, selector = rest[:cut], rest[cut + 1:] or None
        return ImageLocation(transport=transport, target=path, selector=selector)  # type: ignore[arg-type]
    return ImageLocation(transport="docker-daemon", target=text)


def load_image(reference: str | ImageLocation, *, interest: Interest | None = None,
               docker_config: str | None = None, platform: str | None = None) -> LoadedImage:
    location = reference if isinstance(reference, ImageLocation) else parse_location(reference)
    platform = platform or DEFAULT_PLATFORM
    try:
        if location.transport == "oci":
            return _load_oci(location, interest, platform)
        if location.transport == "docker-archive":
            return _load_archive_file(location, interest)
        if location.transport == "docker":
            return _load_registry(location, interest, platform, docker_config)
        return _load_daemon(location, interest)
    except StreamError as error:
        raise ImageError(f"{location}: {error}") from None


# --------------------------------------------------------------------------- shared


def _check_layers(location: ImageLocation, config: Mapping[str, Any], layers: list[LayerIndex]) -> None:
    expected = list(((config.get("rootfs") or {}).get("diff_ids")) or [])
    if len(expected) != len(layers):
        raise ImageError(f"{location}: the config lists {len(expected)} layers, the image has {len(layers)}")
    for number, (want, layer) in enumerate(zip(expected, layers, strict=True), start=1):
        if want != layer.diff_id:
            raise ImageError(f"{location}: layer {number} content is {layer.diff_id}, "
                             f"but the image config says {want}")


def _finish(location: ImageLocation, config: Mapping[str, Any], layers: list[LayerIndex], *,
            config_digest: str | None, manifest_digest: str | None) -> LoadedImage:
    _check_layers(location, config, layers)
    summaries = tuple(LayerSummary(diff_id=layer.diff_id, size=layer.size, compression=layer.compression,
                                   files=layer.file_count) for layer in layers)
    return LoadedImage(location=location, config=config, config_digest=config_digest,
                       manifest_digest=manifest_digest, layers=summaries, fs=LayeredFS(layers))


def _json(location: ImageLocation, what: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ImageError(f"{location}: {what} is not valid JSON") from None


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _platform_matches(descriptor: Mapping[str, Any], platform: str) -> bool:
    wanted = platform.split("/")
    found = descriptor.get("platform") or {}
    have = [found.get("os", ""), found.get("architecture", "")]
    if len(wanted) > 2:
        have.append(found.get("variant", ""))
    return have == wanted[: len(have)]


def _pick_platform(location: ImageLocation, index: Mapping[str, Any], platform: str) -> Mapping[str, Any]:
    manifests = index.get("manifests") or []
    for descriptor in manifests:
        if _platform_matches(descriptor, platform):
            return descriptor  # type: ignore[no-any-return]
    offered = sorted({"/".join(filter(None, (d.get("platform", {}).get(k) for k in ("os", "architecture", "variant"))))
                      for d in manifests})
    raise ImageError(f"{location}: no image for platform {platform} (has: {', '.join(offered) or 'none'})")


# --------------------------------------------------------------------------- oci: layout directory


def _blob_path(root: str, digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    if not algorithm or not hex_digest or "/" in digest:
        raise ValueError(digest)
    return os.path.join(root, "blobs", algorithm, hex_digest)


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as file:
        yield from read_chunks(file)


def _load_oci(location: ImageLocation, interest: Interest | None, platform: str) -> LoadedImage:
    root = location.target
    index_path = os.path.join(root, "index.json")
    if not os.path.isdir(root):
        raise ImageError(f"{location}: no such directory")
    if not os.path.isfile(index_path):
        raise ImageError(f"{location}: not an OCI image layout (no index.json)")

    def blob(digest: str, what: str) -> bytes:
        try:
            path = _blob_path(root, digest)
            with open(path, "rb") as file:
                data = file.read()
        except (OSError, ValueError):
            raise ImageError(f"{location}: {what} blob {digest} is missing") from None
        if _digest(data) != digest:
            raise ImageError(f"{location}: {what} blob {digest} does not match its digest")
        return data

    with open(index_path, "rb") as file:
        index = _json(location, "index.json", file.read())
    descriptors = index.get("manifests") or []
    if location.selector is not None:
        chosen = [d for d in descriptors if (d.get("annotations") or {}).get(OCI_REF_NAME) == location.selector]
        if not chosen:
            names = sorted({(d.get("annotations") or {}).get(OCI_REF_NAME, "") for d in descriptors} - {""})
            raise ImageError(f"{location}: no image tagged '{location.selector}' in the layout "
                             f"(tags: {', '.join(names) or 'none'})")
    else:
        chosen = descriptors
    if len(chosen) != 1:
        if not chosen:
            raise ImageError(f"{location}: the layout holds no image")
        names = sorted({(d.get("annotations") or {}).get(OCI_REF_NAME, "?") for d in chosen})
        raise ImageError(f"{location}: the layout holds {len(chosen)} images; name one as oci:PATH:TAG "
                         f"(tags: {', '.join(names)})")
    descriptor = chosen[0]
    manifest_digest = descriptor["digest"]
    manifest = _json(location, "manifest", blob(manifest_digest, "manifest"))
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        descriptor = _pick_platform(location, manifest, platform)
        manifest_digest = descriptor["digest"]
        manifest = _json(location, "manifest", blob(manifest_digest, "manifest"))
    config_digest = manifest["config"]["digest"]
    config = _json(location, "config", blob(config_digest, "config"))
    layers = []
    for layer in manifest.get("layers") or []:
        try:
            path = _blob_path(root, layer["digest"])
        except ValueError:
            raise ImageError(f"{location}: malformed layer digest {layer['digest']!r}") from None
        if not os.path.isfile(path):
            raise ImageError(f"{location}: layer blob {layer['digest']} is missing")
        layers.append(index_layer(_file_chunks(path), interest=interest))
    return _finish(location, config, layers, config_digest=config_digest, manifest_digest=manifest_digest)


# --------------------------------------------------------------------------- docker save streams


@dataclass(kw_only=True)
class _Archive:
    """What one pass over a `docker save` stream (legacy or OCI flavoured) found."""

    json_files: dict[str, bytes]
    layers: dict[str, LayerIndex]
    links: dict[str, str]

    def resolve(self, name: str) -> str:
        seen = 0
        while name in self.links and seen < 40:
            name, seen = self.links[name], seen + 1
        return name


def _read_archive(chunks: Iterable[Chunk], interest: Interest | None) -> _Archive:
    archive = _Archive(json_files={}, layers={}, links={})
    reader = ChunkReader(chunks)
    for member in members(reader):
        name = normalize(member.name)
        if member.kind in (SYMLINK, HARDLINK):
            target = member.link if member.kind == HARDLINK else posixpath.join(posixpath.dirname(name), member.link)
            archive.links[name] = normalize(target)
            continue
        if member.kind != REGULAR:
            reader.skip(member.size)
            continue
        looks_like_json = member.size <= _JSON_LIMIT and (name.endswith(".json") or reader.peek(1) in (b"{", b"["))
        if looks_like_json:
            archive.json_files[name] = reader.read(member.size)
        elif name.endswith("layer.tar") or name.startswith("blobs/"):
            archive.layers[name] = index_layer(reader.views(member.size), interest=interest)
        else:
            reader.skip(member.size)
    reader.drain()
    return archive


def _image_from_archive(location: ImageLocation, archive: _Archive, wanted: str | None) -> LoadedImage:
    if "manifest.json" in archive.json_files:
        entries = _json(location, "manifest.json", archive.json_files["manifest.json"])
        if wanted is not None:
            candidates = [e for e in entries if wanted in (e.get("RepoTags") or [])
                          or any(wanted == tag.split("/")[-1] or tag.endswith("/" + wanted)
                                 for tag in e.get("RepoTags") or [])]
            if not candidates:
                tags = sorted(t for e in entries for t in e.get("RepoTags") or [])
                raise ImageError(f"{location}: no image '{wanted}' in the archive (has: {', '.join(tags) or 'none'})")
        else:
            candidates = entries
        if len(candidates) != 1:
            raise ImageError(f"{location}: the archive holds {len(candidates)} images; name one as "
                             "docker-archive:PATH:REF")
        entry = candidates[0]
        config_name = archive.resolve(normalize(entry["Config"]))
        config_bytes = archive.json_files.get(config_name)
        if config_bytes is None:
            raise ImageError(f"{location}: the archive lacks the image config {entry['Config']}")
        layer_names = [archive.resolve(normalize(name)) for name in entry.get("Layers") or []]
        manifest_digest = None
    elif "index.json" in archive.json_files:
        index = _json(location, "index.json", archive.json_files["index.json"])
        descriptors = index.get("manifests") or []
        if len(descriptors) != 1:
            raise ImageError(f"{location}: the archive's index lists {len(descriptors)} images")
        manifest_digest = descriptors[0]["digest"]
        manifest = _json(location, "manifest", archive.json_files.get(_blob_name(manifest_digest), b"null"))
        if not isinstance(manifest, dict):
            raise ImageError(f"{location}: the archive lacks manifest {manifest_digest}")
        config_bytes = archive.json_files.get(_blob_name(manifest["config"]["digest"]))
        if config_bytes is None:
            raise ImageError(f"{location}: the archive lacks the image config")
        layer_names = [_blob_name(layer["digest"]) for layer in manifest.get("layers") or []]
    else:
        raise ImageError(f"{location}: not a docker save archive (no manifest.json or index.json)")
    layers = []
    for name in layer_names:
        if name not in archive.layers:
            raise ImageError(f"{location}: the archive lacks layer {name}")
        layers.append(archive.layers[name])
    config = _json(location, "config", config_bytes)
    return _finish(location, config, layers, config_digest=_digest(config_bytes), manifest_digest=manifest_digest)


def _blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _load_archive_file(location: ImageLocation, interest: Interest | None) -> LoadedImage:
    if not os.path.isfile(location.target):
        raise ImageError(f"{location}: no such file")
    # A `docker save | gzip` archive reads the same way: decompressed() passes plain tar through.
    archive = _read_archive(decompressed(_file_chunks(location.target)), interest)
    return _image_from_archive(location, archive, location.selector)


def _load_daemon(location: ImageLocation, interest: Interest | None) -> LoadedImage:
    from mlenv.sources import engine  # the docker SDK is imported only when a daemon image is read

    chunks = engine.save_image(location.target)
    archive = _read_archive(chunks, interest)
    # `docker save NAME` holds just that image; its RepoTags may be empty when NAME is an id.
    return _image_from_archive(location, archive, None)


# --------------------------------------------------------------------------- docker:// registry


def _load_registry(location: ImageLocation, interest: Interest | None, platform: str,
                   docker_config: str | None) -> LoadedImage:
    from mlenv.sources.registry import ImageReference, RegistryClient

    reference = ImageReference.parse(location.target)
    client = RegistryClient(docker_config=docker_config)
    resolved = client.resolve(reference, platform)
    layers = []
    for layer in resolved.layers:
        # The client checks each blob's digest when its last chunk is read; the layer pass reads
        # every blob to the end, so a corrupt download fails here too.
        layers.append(index_layer(client.blob_chunks(reference, layer.digest), interest=interest))
    return _finish(location, resolved.config, layers, config_digest=resolved.config_digest,
                   manifest_digest=resolved.manifest_digest)


__all__ = ["TRANSPORTS", "ImageLocation", "LayerSummary", "LoadedImage", "load_image", "parse_location"]
