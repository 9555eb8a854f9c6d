"""oci:PATH[:TAG]: an OCI image layout directory (index.json, blobs/<algorithm>/<hex>)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from mlenv.errors import ImageError
from mlenv.observe.fs.rootfs import Interest
from mlenv.observe.image.loaded import LoadedImage, digest_of, finish, parse_json
from mlenv.observe.image.memory import LayerMemory, read_layer
from mlenv.observe.limits import MAX_JSON_SIZE
from mlenv.observe.stream.decompress import read_chunks
from mlenv.sources.location import ImageLocation
from mlenv.sources.registry import INDEX_TYPES, platform_of, select_platform

OCI_REF_NAME = "org.opencontainers.image.ref.name"
# The layer media types the reader can unpack (OCI image-spec, and Docker's as skopeo copies them); any
# other is refused rather than guessed at.
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)


def _object(location: ImageLocation, value: object, what: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ImageError(f"{location}: {what} is not a JSON object")
    return value


def _list(location: ImageLocation, value: object, what: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ImageError(f"{location}: {what} is not a JSON array")
    return value


def _descriptor(location: ImageLocation, value: object, what: str) -> dict[str, object]:
    """A descriptor as the image-spec defines it: an object with a string digest and an integer size."""
    descriptor = _object(location, value, what)
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str):
        raise ImageError(f"{location}: {what} has no digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{location}: {what} {digest} has no valid size")
    annotations = descriptor.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise ImageError(f"{location}: {what} {digest}: annotations is not a JSON object")
    return descriptor


def _blob_path(root: str, digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    if not algorithm or not hex_digest or "/" in digest:
        raise ValueError(digest)
    path = os.path.join(root, "blobs", algorithm, hex_digest)
    if not os.path.realpath(path).startswith(os.path.join(os.path.realpath(root), "blobs", "")):
        raise ValueError(digest)  # a blob that is a link could name any host file: refused, never read
    return path


def file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as file:
        yield from read_chunks(file)


def load_oci(
    location: ImageLocation, interest: Interest | None, platform: str, *, memory: LayerMemory | None = None
) -> LoadedImage:
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
                data = file.read(MAX_JSON_SIZE + 1)  # bounded: a bigger blob fails its digest check
        except (OSError, ValueError):
            raise ImageError(
                f"{location}: {what} blob {digest} is missing or a link out of the layout"
            ) from None
        if digest_of(data) != digest:
            raise ImageError(f"{location}: {what} blob {digest} does not match its digest")
        return data

    with open(index_path, "rb") as file:
        index = _object(location, parse_json(location, "index.json", file.read()), "index.json")
    descriptors = [
        _descriptor(location, d, "index.json manifest")
        for d in _list(location, index.get("manifests"), "index.json manifests")
    ]

    def tag(d: dict[str, object], default: str) -> str:
        annotations = d.get("annotations") or {}
        assert isinstance(annotations, dict)  # _descriptor checked it
        name = annotations.get(OCI_REF_NAME, default)
        return name if isinstance(name, str) else default

    if location.selector is not None:
        chosen = [d for d in descriptors if tag(d, "") == location.selector]
        if not chosen:
            names = sorted({tag(d, "") for d in descriptors} - {""})
            raise ImageError(
                f"{location}: no image tagged '{location.selector}' in the layout "
                f"(tags: {', '.join(names) or 'none'})"
            )
    else:
        chosen = descriptors
    if len(chosen) != 1:
        if not chosen:
            raise ImageError(f"{location}: the layout holds no image")
        names = sorted({tag(d, "?") for d in chosen})
        raise ImageError(
            f"{location}: the layout holds {len(chosen)} images; name one as oci:PATH:TAG "
            f"(tags: {', '.join(names)})"
        )
    manifest_digest = str(chosen[0]["digest"])
    manifest = _object(
        location, parse_json(location, "manifest", blob(manifest_digest, "manifest")), "the manifest"
    )
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        offered = [
            _descriptor(location, d, "index manifest")
            for d in _list(location, manifest.get("manifests"), "the index's manifests")
        ]
        picked = select_platform(offered, platform)
        if picked is None:
            names = sorted({platform_of(d) for d in offered})
            raise ImageError(
                f"{location}: no image for platform {platform} (has: {', '.join(names) or 'none'})"
            )
        manifest_digest = str(picked["digest"])
        manifest = _object(
            location, parse_json(location, "manifest", blob(manifest_digest, "manifest")), "the manifest"
        )
    config_digest = str(_descriptor(location, manifest.get("config"), "the manifest's config")["digest"])
    config = parse_json(location, "config", blob(config_digest, "config"))
    layer_descriptors = [
        _descriptor(location, d, "layer") for d in _list(location, manifest.get("layers"), "layers")
    ]
    layers = []
    for layer in layer_descriptors:
        digest = str(layer["digest"])
        if layer.get("mediaType") not in LAYER_TYPES:
            raise ImageError(
                f"{location}: layer {digest} has media type {layer.get('mediaType')!r}, not a layer"
            )
        try:
            path = _blob_path(root, digest)
        except ValueError:
            raise ImageError(
                f"{location}: layer digest {digest!r} is malformed or names a link out of the layout"
            ) from None
        if not os.path.isfile(path):
            raise ImageError(f"{location}: layer blob {digest} is missing")
        if os.path.getsize(path) != layer["size"]:
            # The descriptor's size bounds what is read (image-spec); a blob of another size is not it.
            raise ImageError(
                f"{location}: layer blob {digest} holds {os.path.getsize(path)} bytes, "
                f"its descriptor says {layer['size']}"
            )
        layers.append(read_layer(location, digest, file_chunks(path), interest, memory))
    names = [str(layer["digest"]) for layer in layer_descriptors]
    return finish(
        location, config, layers, config_digest=config_digest, manifest_digest=manifest_digest, names=names
    )
