"""oci:PATH[:TAG]: an OCI image layout directory (index.json, blobs/<algorithm>/<hex>)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from mlenv.errors import ImageError
from mlenv.observe.fs.rootfs import Interest
from mlenv.observe.image.loaded import LoadedImage, digest_of, finish, parse_json
from mlenv.observe.image.location import ImageLocation
from mlenv.observe.image.memory import LayerMemory, read_layer
from mlenv.observe.limits import MAX_JSON_SIZE
from mlenv.observe.stream.decompress import read_chunks
from mlenv.sources.registry import INDEX_TYPES, platform_of, select_platform

OCI_REF_NAME = "org.opencontainers.image.ref.name"


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
        index = parse_json(location, "index.json", file.read())
    descriptors = index.get("manifests") or []
    if location.selector is not None:
        chosen = [
            d for d in descriptors if (d.get("annotations") or {}).get(OCI_REF_NAME) == location.selector
        ]
        if not chosen:
            names = sorted({(d.get("annotations") or {}).get(OCI_REF_NAME, "") for d in descriptors} - {""})
            raise ImageError(
                f"{location}: no image tagged '{location.selector}' in the layout "
                f"(tags: {', '.join(names) or 'none'})"
            )
    else:
        chosen = descriptors
    if len(chosen) != 1:
        if not chosen:
            raise ImageError(f"{location}: the layout holds no image")
        names = sorted({(d.get("annotations") or {}).get(OCI_REF_NAME, "?") for d in chosen})
        raise ImageError(
            f"{location}: the layout holds {len(chosen)} images; name one as oci:PATH:TAG "
            f"(tags: {', '.join(names)})"
        )
    descriptor = chosen[0]
    manifest_digest = descriptor["digest"]
    manifest = parse_json(location, "manifest", blob(manifest_digest, "manifest"))
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        offered = manifest.get("manifests") or []
        picked = select_platform(offered, platform)
        if picked is None:
            names = sorted({platform_of(d) for d in offered})
            raise ImageError(
                f"{location}: no image for platform {platform} (has: {', '.join(names) or 'none'})"
            )
        descriptor = picked
        manifest_digest = descriptor["digest"]
        manifest = parse_json(location, "manifest", blob(manifest_digest, "manifest"))
    config_digest = manifest["config"]["digest"]
    config = parse_json(location, "config", blob(config_digest, "config"))
    layers = []
    for layer in manifest.get("layers") or []:
        try:
            path = _blob_path(root, layer["digest"])
        except ValueError:
            raise ImageError(
                f"{location}: layer digest {layer['digest']!r} is malformed or names a link out of the layout"
            ) from None
        if not os.path.isfile(path):
            raise ImageError(f"{location}: layer blob {layer['digest']} is missing")
        layers.append(read_layer(location, layer["digest"], file_chunks(path), interest, memory))
    names = [layer["digest"] for layer in manifest.get("layers") or []]
    return finish(
        location, config, layers, config_digest=config_digest, manifest_digest=manifest_digest, names=names
    )
