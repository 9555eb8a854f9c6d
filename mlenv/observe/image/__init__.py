"""Image transports (docker-daemon:, docker-archive:, oci:, docker://) read into one layered view.

The sources an image is read from are passed in: a RegistryClient for docker:// (the resolver passes
the one it pinned the base with, so nothing is fetched twice) and an engine for docker-daemon:.
Without them, a client is made from `docker_config` and the engine is connected for the one read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from mlenv.errors import ImageError
from mlenv.model.target import DEFAULT_PLATFORM
from mlenv.observe.fs.rootfs import Interest, LayerIndex, index_layer
from mlenv.observe.image.dockersave import SavedImage, read_saved
from mlenv.observe.image.loaded import LayerSummary, LoadedImage, finish, parse_json
from mlenv.observe.image.location import ImageLocation, Transport, parse_location
from mlenv.observe.image.oci import file_chunks, load_oci
from mlenv.observe.stream.decompress import Chunk, StreamError, decompressed

if TYPE_CHECKING:
    from mlenv.sources.registry import RegistryClient


class SaveSource(Protocol):
    """What reading a docker-daemon: image needs of the engine (mlenv.sources.engine.Engine)."""

    def save_image(self, name: str) -> Iterator[bytes]: ...


def load_image(
    reference: str | ImageLocation,
    *,
    interest: Interest | None = None,
    docker_config: str | None = None,
    platform: str | None = None,
    registry: RegistryClient | None = None,
    engine: SaveSource | None = None,
) -> LoadedImage:
    """Read an image from any transport. `registry` serves docker:// (default: a client of its own,
    with the credentials of `docker_config`); `engine` serves docker-daemon: (default: connected for
    this read)."""
    location = reference if isinstance(reference, ImageLocation) else parse_location(reference)
    platform = platform or DEFAULT_PLATFORM
    try:
        if location.transport == "oci":
            return load_oci(location, interest, platform)
        if location.transport == "docker-archive":
            return _load_archive_file(location, interest)
        if location.transport == "docker":
            return _load_registry(location, interest, platform, registry, docker_config)
        return _load_daemon(location, interest, engine)
    except StreamError as error:
        raise ImageError(f"{location}: {error}") from None


def check_present(
    reference: str | ImageLocation,
    *,
    docker_config: str | None = None,
    platform: str | None = None,
    registry: RegistryClient | None = None,
) -> None:
    """Fail now, with the loader's own error line, when `reference` names no image; read no layer.

    For callers that do slow work before the one pass over the layers (verify derives what every
    file must be first): a missing archive or image must be reported as that, not as whatever the
    slow work ran into. docker:// resolves the manifest and config through `registry`, which keeps
    them, so pass the same client to the load that follows."""
    location = reference if isinstance(reference, ImageLocation) else parse_location(reference)
    if location.transport == "docker-archive" and not os.path.isfile(location.target):
        raise ImageError(f"{location}: no such file")
    if location.transport == "oci" and not os.path.isfile(os.path.join(location.target, "index.json")):
        raise ImageError(
            f"{location}: no such directory"
            if not os.path.isdir(location.target)
            else f"{location}: not an OCI image layout (no index.json)"
        )
    if location.transport == "docker-daemon":
        from mlenv.sources.engine import connect  # the docker SDK is imported only for a daemon image

        with connect() as connected:
            if connected.image_id(location.target) is None:
                raise ImageError(f"docker-daemon:{location.target}: no such image in the Docker engine")
    if location.transport == "docker":
        from mlenv.sources.registry import ImageReference, RegistryClient

        client = registry or RegistryClient(docker_config=docker_config)
        client.resolve(ImageReference.parse(location.target), platform or DEFAULT_PLATFORM)


def _from_save(
    location: ImageLocation, chunks: Iterator[Chunk], interest: Interest | None, wanted: str | None
) -> LoadedImage:
    saved: SavedImage[LayerIndex] = read_saved(
        chunks, lambda _name, data: index_layer(data, interest=interest), where=location, wanted=wanted
    )
    return finish(
        location,
        parse_json(location, "config", saved.config),
        saved.layers,
        config_digest=saved.config_digest,
        manifest_digest=saved.manifest_digest,
    )


def _load_archive_file(location: ImageLocation, interest: Interest | None) -> LoadedImage:
    if not os.path.isfile(location.target):
        raise ImageError(f"{location}: no such file")
    # A `docker save | gzip` archive reads the same way: decompressed() passes plain tar through.
    return _from_save(location, decompressed(file_chunks(location.target)), interest, location.selector)


def _load_daemon(
    location: ImageLocation, interest: Interest | None, engine: SaveSource | None
) -> LoadedImage:
    # `docker save NAME` holds just that image; its RepoTags may be empty when NAME is an id.
    if engine is not None:
        return _from_save(location, engine.save_image(location.target), interest, None)
    from mlenv.sources.engine import connect  # the docker SDK is imported only when a daemon image is read

    with connect() as connected:
        return _from_save(location, connected.save_image(location.target), interest, None)


def _load_registry(
    location: ImageLocation,
    interest: Interest | None,
    platform: str,
    registry: RegistryClient | None,
    docker_config: str | None,
) -> LoadedImage:
    from mlenv.sources.registry import ImageReference, RegistryClient

    reference = ImageReference.parse(location.target)
    client = registry or RegistryClient(docker_config=docker_config)
    resolved = client.resolve(reference, platform)
    # The client checks each blob's digest when its last chunk is read; the layer pass reads every
    # blob to the end, so a corrupt download fails here too.
    layers = [
        index_layer(client.blob_chunks(reference, layer.digest), interest=interest)
        for layer in resolved.layers
    ]
    return finish(
        location,
        resolved.config,
        layers,
        config_digest=resolved.config_digest,
        manifest_digest=resolved.manifest_digest,
    )


__all__ = [
    "ImageLocation",
    "LayerSummary",
    "LoadedImage",
    "check_present",
    "SaveSource",
    "Transport",
    "load_image",
    "parse_location",
]
