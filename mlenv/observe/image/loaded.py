"""What every transport ends with: the image config, and each layer read once into a LayerIndex
whose computed diff_id must equal the one the config lists (the check costs nothing: the hash is
taken in the same pass that parses the layer)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlenv.errors import ImageError
from mlenv.observe.facts import config_problem
from mlenv.observe.fs.rootfs import LayeredFS, LayerIndex
from mlenv.observe.limits import LimitError, load_json
from mlenv.sources.location import ImageLocation


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
    # Each layer's own entries, whiteouts and opaque markers, as read (before merging): verify accounts
    # for every path of every layer above the base from these, without reading a layer twice.
    indexes: tuple[LayerIndex, ...] = ()
    # What each layer's blob is called where it was read (a save member, a blob digest): a memory of
    # layers read (verify.layermemo) knows a blob again by its name and its bytes' sha256.
    layer_names: tuple[str, ...] = ()


def check_layers(where: object, config: Mapping[str, Any], diff_ids: Sequence[str]) -> None:
    """The layers read must be the ones the config lists, in order (their content, not their names)."""
    expected = list(((config.get("rootfs") or {}).get("diff_ids")) or [])
    if len(expected) != len(diff_ids):
        raise ImageError(f"{where}: the config lists {len(expected)} layers, the image has {len(diff_ids)}")
    for number, (want, found) in enumerate(zip(expected, diff_ids, strict=True), start=1):
        if want != found:
            raise ImageError(f"{where}: layer {number} content is {found}, but the image config says {want}")


def finish(
    location: ImageLocation,
    config: Mapping[str, Any],
    layers: Sequence[LayerIndex],
    *,
    config_digest: str | None,
    manifest_digest: str | None,
    names: Sequence[str] = (),
) -> LoadedImage:
    if (problem := config_problem(config)) is not None:  # one check of the shape for every reader
        raise ImageError(f"{location}: {problem}")
    check_layers(location, config, [layer.diff_id for layer in layers])
    summaries = tuple(
        LayerSummary(
            diff_id=layer.diff_id, size=layer.size, compression=layer.compression, files=layer.file_count
        )
        for layer in layers
    )
    return LoadedImage(
        location=location,
        config=config,
        config_digest=config_digest,
        manifest_digest=manifest_digest,
        layers=summaries,
        fs=LayeredFS(layers),
        indexes=tuple(layers),
        layer_names=tuple(names),
    )


def parse_json(where: object, what: str, data: bytes) -> Any:
    try:
        return load_json(data, what)  # bounded in size and depth
    except LimitError as error:
        raise ImageError(f"{where}: {error}") from None
    except ValueError:
        raise ImageError(f"{where}: {what} is not valid JSON") from None


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
