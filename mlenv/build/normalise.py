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
from pathlib import Path
from typing import IO, Any

from mlenv.errors import BuildError
from mlenv.model.time import rfc3339_at

# Fields that describe the build run, not the image: dropped.
RUN_FIELDS = ("container", "container_config", "docker_version")


def normalise_config(config: dict[str, Any], *, epoch: int) -> bytes:
    """The config with build-run times and ids replaced, as canonical JSON bytes."""
    created = rfc3339_at(epoch)
    normal = {k: v for k, v in config.items() if k not in RUN_FIELDS}
    normal["created"] = created
    normal["history"] = [{**entry, "created": created} for entry in config.get("history", [])]
    if isinstance(config.get("config"), dict) and config["config"].get("Image"):
        normal["config"] = {**config["config"], "Image": ""}  # BuildKit leaves it empty too
    return json.dumps(normal, sort_keys=True, separators=(",", ":")).encode()


def rewrite_archive(source: IO[bytes], destination: Path, *, epoch: int, tag: str) -> str:
    """Write a `docker load` archive of the saved image with a normalised config; returns the new image ID.

    The archive holds the config and manifest.json only, not the layers: `docker load` reads a layer
    from the archive only when the engine lacks it, and the engine that just built the image has every
    one. That makes normalising cost a read of the save stream, not a copy of the whole image (a
    missing layer makes the load fail, never succeed with another image). The config's place in the
    stream depends on the engine, so the small JSON members are collected wherever they are.
    """
    held: dict[str, bytes] = {}
    with tarfile.open(fileobj=source, mode="r|") as archive:
        for member in archive:  # layer contents are skipped unread
            if member.isfile() and member.name.endswith(".json") and "/" not in member.name:
                data = archive.extractfile(member)
                assert data is not None
                held[member.name] = data.read()
    if "manifest.json" not in held:
        raise BuildError("docker save gave an archive without manifest.json")
    manifest = json.loads(held["manifest.json"])
    if len(manifest) != 1:
        raise BuildError(f"expected one image in the saved archive, found {len(manifest)}")
    config_bytes = normalise_config(json.loads(held[manifest[0]["Config"]]), epoch=epoch)
    image_id = hashlib.sha256(config_bytes).hexdigest()
    manifest[0]["Config"] = f"{image_id}.json"
    manifest[0]["RepoTags"] = [tag]
    with tarfile.open(destination, "w") as out:
        for name, data in ((f"{image_id}.json", config_bytes),
                           ("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, epoch
            out.addfile(info, io.BytesIO(data))
    return f"sha256:{image_id}"
