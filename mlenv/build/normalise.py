"""Make an image ID a function of the lock: rewrite what the engine stamps with wall-clock times.

The legacy builder writes the build time into the config's `created` and every history entry, the
build container's ID and hostname into `container`/`container_config`, and the ID of the last
intermediate image (itself time-stamped) into `config.Image`. Layers built the reproducible way are
already identical; after this rewrite the config is too, so the ID (sha256 of the config) is.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlenv.errors import BuildError
from mlenv.model.time import rfc3339_at
from mlenv.observe.image.dockersave import read_saved, skip_layer
from mlenv.observe.image.loaded import parse_json
from mlenv.observe.stream.decompress import Chunk

# Fields that describe the build run, not the image: dropped.
RUN_FIELDS = ("container", "container_config", "docker_version")


@dataclass(frozen=True, kw_only=True)
class Normalised:
    image_id: str  # sha256 of the normalised config
    config: bytes  # the normalised config itself
    archive: bytes  # for `docker load`: the normalised config and a manifest.json naming the tag


def normalise_config(config: dict[str, Any], *, epoch: int) -> bytes:
    """The config with build-run times and ids replaced, as canonical JSON bytes."""
    created = rfc3339_at(epoch)
    normal = {k: v for k, v in config.items() if k not in RUN_FIELDS}
    normal["created"] = created
    normal["history"] = [{**entry, "created": created} for entry in config.get("history", [])]
    if isinstance(config.get("config"), dict) and config["config"].get("Image"):
        normal["config"] = {**config["config"], "Image": ""}  # BuildKit leaves it empty too
    return json.dumps(normal, sort_keys=True, separators=(",", ":")).encode()


def normalised_archive(saved: Iterable[Chunk], *, where: str, epoch: int, tag: str) -> Normalised:
    """A `docker load` archive of the saved image (a `docker save` stream) with a normalised config.

    The archive holds the config and manifest.json only, not the layers: `docker load` reads a layer
    from the archive only when the engine lacks it, and the engine that just built the image has every
    one. That makes normalising cost one read of the save stream (its layers skipped unread), not a
    copy of the image (a missing layer makes the load fail, never succeed with another image).
    """
    image = read_saved(saved, skip_layer, where=where)
    config = parse_json(where, "config", image.config)
    if not isinstance(config, dict):
        raise BuildError(f"{where}: the saved image config is not a JSON object")
    config_bytes = normalise_config(config, epoch=epoch)
    image_id = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": [tag], "Layers": list(image.layer_paths)}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in (
            (f"{image_id}.json", config_bytes),
            ("manifest.json", json.dumps(manifest, separators=(",", ":")).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, epoch
            archive.addfile(info, io.BytesIO(data))
    return Normalised(image_id=f"sha256:{image_id}", config=config_bytes, archive=out.getvalue())


def saved_config(saved: Iterable[Chunk], *, where: str) -> bytes:
    """The config bytes of a `docker save` stream, its layers skipped unread."""
    return read_saved(saved, skip_layer, where=where).config
