"""The observer: what an image (or a directory tree) contains, read without running it.

`observe_image` reads an image from any transport into EnvFacts; `inspect_image` also hands back
the filesystem and config, for callers that check more (file hashes, models, apt sources).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

from mlenv.model.facts import EnvFacts
from mlenv.observe.facts import combine, probe_interest
from mlenv.observe.facts import observe_tree as _observe_tree
from mlenv.observe.fs.rootfs import DirectoryFS, ImageFS, Interest, LayeredFS
from mlenv.observe.image import (
    ImageLocation,
    LayerMemory,
    LoadedImage,
    SaveSource,
    load_image,
    parse_location,
)

if TYPE_CHECKING:
    from mlenv.sources.registry import RegistryClient


@dataclass(frozen=True, kw_only=True)
class Observation:
    """EnvFacts together with what they were read from."""

    facts: EnvFacts
    fs: ImageFS
    image: LoadedImage | None = None  # None for a directory tree


def inspect_image(
    reference: str,
    *,
    docker_config: str | None = None,
    platform: str | None = None,
    artifacts: Iterable[str] = (),
    keep: Interest | None = None,
    check_files: bool = True,
    registry: RegistryClient | None = None,
    engine: SaveSource | None = None,
    memory: LayerMemory | None = None,
) -> Observation:
    """Read `reference` (docker-daemon:, docker-archive:, oci:, docker://, or a bare daemon name).

    `keep` adds paths whose content should stay readable through `fs.read_bytes` (every file's
    sha256 is always available); `artifacts` are paths to report with their sha256. `registry` and
    `engine` are the sources to read through, `memory` the layers read before (see `load_image`)."""
    image = load_image(
        reference,
        interest=combine(probe_interest, keep),
        docker_config=docker_config,
        platform=platform,
        registry=registry,
        engine=engine,
        memory=memory,
    )
    return inspect_loaded(image, artifacts=artifacts, check_files=check_files)


def inspect_loaded(
    image: LoadedImage, *, artifacts: Iterable[str] = (), check_files: bool = True
) -> Observation:
    """The observation of an image already read (its interest must have included `probe_interest`)."""
    facts = _observe_tree(
        image.fs, image.config, artifacts=artifacts, check_files=check_files, where=image.location
    )
    return Observation(facts=facts, fs=image.fs, image=image)


def observe_image(
    reference: str,
    *,
    docker_config: str | None = None,
    platform: str | None = None,
    artifacts: Iterable[str] = (),
    registry: RegistryClient | None = None,
    engine: SaveSource | None = None,
) -> EnvFacts:
    return inspect_image(
        reference,
        docker_config=docker_config,
        platform=platform,
        artifacts=artifacts,
        registry=registry,
        engine=engine,
    ).facts


def observe_tree(
    fs: ImageFS | str | PathLike[str],
    config: Mapping[str, Any] | None = None,
    *,
    artifacts: Iterable[str] = (),
    check_files: bool = True,
) -> EnvFacts:
    """EnvFacts of a filesystem: an ImageFS, or a directory path (a rootfs, or "/" for this system)."""
    tree = fs if isinstance(fs, ImageFS) else DirectoryFS(fs)
    return _observe_tree(tree, config, artifacts=artifacts, check_files=check_files)


__all__ = [
    "DirectoryFS",
    "ImageFS",
    "ImageLocation",
    "LayeredFS",
    "LoadedImage",
    "Observation",
    "inspect_image",
    "inspect_loaded",
    "observe_image",
    "observe_tree",
    "parse_location",
]
