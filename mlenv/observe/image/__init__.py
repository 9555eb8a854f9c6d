"""Image transports (docker-daemon:, docker-archive:, oci:, docker://) read into one layered view.

The sources an image is read from are passed in: a RegistryClient for docker:// (the resolver passes
the one it pinned the base with, so nothing is fetched twice) and an engine for docker-daemon:.
Without them, a client is made from `docker_config` and the engine is connected for the one read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from mlenv.errors import ImageError
from mlenv.model.target import DEFAULT_PLATFORM
from mlenv.observe.fs.rootfs import Interest, LayerIndex
from mlenv.observe.image.dockersave import SavedImage, read_saved
from mlenv.observe.image.loaded import LayerSummary, LoadedImage, finish, parse_json
from mlenv.observe.image.memory import LayerMemory, read_layer
from mlenv.observe.image.oci import file_chunks, load_oci
from mlenv.observe.stream.decompress import Chunk, StreamError, decompressed
from mlenv.progress import current
from mlenv.sources.location import ImageLocation, Transport, parse_location

if TYPE_CHECKING:
    from mlenv.sources.engine import SaveRequest
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
    memory: LayerMemory | None = None,
) -> LoadedImage:
    """Read an image from any transport. `registry` serves docker:// (default: a client of its own,
    with the credentials of `docker_config`); `engine` serves docker-daemon: (default: connected for
    this read); `memory` recalls layers read before instead of parsing them again."""
    location = reference if isinstance(reference, ImageLocation) else parse_location(reference)
    platform = platform or DEFAULT_PLATFORM
    try:
        if location.transport == "oci":
            return load_oci(location, interest, platform, memory=memory)
        if location.transport == "docker-archive":
            return _load_archive_file(location, interest, memory)
        if location.transport == "docker":
            return _load_registry(location, interest, platform, registry, docker_config, memory)
        return _load_daemon(location, interest, engine, memory)
    except StreamError as error:
        raise ImageError(f"{location}: {error}") from None


class OpenedImage:
    """An image found (a missing one failed fast) and ready for the one pass over its layers.

    For callers that do slow work before that pass (verify derives what every file must be first): a
    missing archive or image is reported as that, not as whatever the slow work ran into. A daemon
    image is inspected and its save requested on one connection, at once: dockerd exports the whole
    image before its first byte, so the caller's work overlaps the engine's. docker:// resolves the
    manifest and config through `registry`, which keeps them, so the load that follows fetches them
    no more. Close it (or use `with`) when done."""

    def __init__(
        self,
        location: ImageLocation,
        engine: SaveSource | None,
        close: Callable[[], None],
        diff_ids: tuple[str, ...] = (),
    ) -> None:
        self.location = location
        self.engine = engine  # what serves a docker-daemon: load; None for other transports
        self._close = close
        self.diff_ids = diff_ids  # the engine's list, to prepare for (the layers read are checked)

    def __enter__(self) -> OpenedImage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._close()


def open_image(
    reference: str | ImageLocation,
    *,
    docker_config: str | None = None,
    platform: str | None = None,
    registry: RegistryClient | None = None,
    requested: SaveRequest | None = None,
) -> OpenedImage:
    """Fail now, with the loader's own error line, when `reference` names no image; read no layer.
    `requested`: a save of this daemon image requested earlier (the CLI sends it first thing), taken
    over instead of a second one; another image's is closed."""
    location = reference if isinstance(reference, ImageLocation) else parse_location(reference)
    if location.transport == "docker-archive" and not os.path.isfile(location.target):
        raise ImageError(f"{location}: no such file")
    if location.transport == "oci" and not os.path.isfile(os.path.join(location.target, "index.json")):
        raise ImageError(
            f"{location}: no such directory"
            if not os.path.isdir(location.target)
            else f"{location}: not an OCI image layout (no index.json)"
        )
    if location.transport == "docker":
        from mlenv.sources.registry import ImageReference, RegistryClient

        client = registry or RegistryClient(docker_config=docker_config)
        client.resolve(ImageReference.parse(location.target), platform or DEFAULT_PLATFORM)
    if location.transport != "docker-daemon":
        return OpenedImage(location, None, lambda: None)
    if requested is not None and requested.name != location.target:
        requested.close()
        requested = None
    if requested is None:
        from mlenv.sources.engine import request_save  # the docker SDK is imported only for a daemon image

        requested = request_save(location.target)
    started = _Started(location.target, requested.chunks)
    return OpenedImage(location, started, requested.close, tuple(requested.diff_ids))


class _Started:
    """A SaveSource whose one save was requested already (OpenedImage)."""

    def __init__(self, name: str, stream: Iterator[bytes]) -> None:
        self._name = name
        self._stream: Iterator[bytes] | None = stream

    def save_image(self, name: str) -> Iterator[bytes]:
        if name != self._name or self._stream is None:
            raise ValueError(f"this save is of {self._name}, once")
        stream, self._stream = self._stream, None
        return stream


def _from_save(
    location: ImageLocation,
    chunks: Iterator[Chunk],
    interest: Interest | None,
    wanted: str | None,
    memory: LayerMemory | None,
) -> LoadedImage:
    names: dict[int, str] = {}
    steps = current()

    def layer(name: str, data: Iterator[memoryview]) -> LayerIndex:
        steps.step(f"reading layer {len(names) + 1} of {location}")
        index = read_layer(location, name, data, interest, memory)
        names[id(index)] = name
        return index

    saved: SavedImage[LayerIndex] = read_saved(chunks, layer, where=location, wanted=wanted)
    return finish(
        location,
        parse_json(location, "config", saved.config),
        saved.layers,
        config_digest=saved.config_digest,
        manifest_digest=saved.manifest_digest,
        names=[names[id(index)] for index in saved.layers],
    )


def _load_archive_file(
    location: ImageLocation, interest: Interest | None, memory: LayerMemory | None
) -> LoadedImage:
    if not os.path.isfile(location.target):
        raise ImageError(f"{location}: no such file")
    # A `docker save | gzip` archive reads the same way: decompressed() passes plain tar through.
    chunks = decompressed(file_chunks(location.target))
    return _from_save(location, chunks, interest, location.selector, memory)


def _load_daemon(
    location: ImageLocation, interest: Interest | None, engine: SaveSource | None, memory: LayerMemory | None
) -> LoadedImage:
    # `docker save NAME` holds just that image; its RepoTags may be empty when NAME is an id.
    if engine is not None:
        return _from_save(location, engine.save_image(location.target), interest, None, memory)
    from mlenv.sources.engine import connect  # the docker SDK is imported only when a daemon image is read

    with connect() as connected:
        return _from_save(location, connected.save_image(location.target), interest, None, memory)


def _load_registry(
    location: ImageLocation,
    interest: Interest | None,
    platform: str,
    registry: RegistryClient | None,
    docker_config: str | None,
    memory: LayerMemory | None,
) -> LoadedImage:
    from mlenv.sources.registry import ImageReference, RegistryClient

    reference = ImageReference.parse(location.target)
    client = registry or RegistryClient(docker_config=docker_config)
    resolved = client.resolve(reference, platform)
    # The client checks each blob's digest when its last chunk is read; the layer pass reads every
    # blob to the end, so a corrupt download fails here too.
    layers = [
        read_layer(location, layer.digest, client.blob_chunks(reference, layer.digest), interest, memory)
        for layer in resolved.layers
    ]
    return finish(
        location,
        resolved.config,
        layers,
        config_digest=resolved.config_digest,
        manifest_digest=resolved.manifest_digest,
        names=[layer.digest for layer in resolved.layers],
    )


__all__ = [
    "ImageLocation",
    "LayerMemory",
    "LayerSummary",
    "LoadedImage",
    "OpenedImage",
    "open_image",
    "SaveSource",
    "Transport",
    "load_image",
    "parse_location",
]
