"""An image whose config and top layers are files on this machine: the one `mlenv build` just loaded.

The build writes the final layers (app code, models, the entrypoint) and the config itself, so it can
read them back from its own files instead of asking the engine to export the whole image. The layers
below them (the dependency image's) are named by diff_id only; they are served by a memory of layers
already read for this lock (verify.layermemo), or the image is read through the engine after all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlenv.observe.fs.rootfs import Interest, LayerIndex, index_layer
from mlenv.observe.image.loaded import LoadedImage, finish, parse_json
from mlenv.observe.image.oci import file_chunks
from mlenv.sources.location import parse_location


@dataclass(frozen=True, kw_only=True)
class LocalLayer:
    diff_id: str  # sha256 of the uncompressed tar, as the config lists it
    tar: Path | None  # the tar itself, or None when only the engine holds it


@dataclass(frozen=True, kw_only=True)
class LocalImage:
    """What the engine holds under `name` (its ID is the sha256 of `config`, checked by the build)."""

    name: str
    config: bytes
    layers: tuple[LocalLayer, ...]  # bottom first

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def load_local(
    image: LocalImage, interest: Interest | None, known: Callable[[str], LayerIndex | None]
) -> LoadedImage | None:
    """The image read from its files, with `known(diff_id)` serving the layers that are not here; None
    when one of those is not known (the caller reads the image through the engine)."""
    location = parse_location(f"docker-daemon:{image.name}")
    indexes: list[LayerIndex] = []
    names: list[str] = []
    for layer in image.layers:
        if layer.tar is None:
            index = known(layer.diff_id)
            if index is None:
                return None
        else:
            index = index_layer(file_chunks(str(layer.tar)), interest=interest, raw_digest=True)
        indexes.append(index)
        names.append(layer.diff_id)
    return finish(
        location,
        parse_json(location, "config", image.config),
        indexes,
        config_digest=image.image_id,
        manifest_digest=None,
        names=names,
    )
