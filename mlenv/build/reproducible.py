"""Build twice without cache and compare the two images layer by layer."""

from __future__ import annotations

from pathlib import Path

from mlenv.build.artifacts import Progress
from mlenv.build.image import BuiltImage, build_image
from mlenv.build.reprocheck import (
    ImageRecord,
    Layer,
    ReproReport,
    compare_images,
    layers_to_read,
    read_saved_image,
)
from mlenv.errors import ImageError
from mlenv.model.lock import Lock
from mlenv.sources import engine
from mlenv.sources.cas import ContentStore


def compare_daemon_images(a: str, b: str) -> ReproReport:
    """Compare two images in the engine; the layers are read only where their diff_ids differ."""
    ids = []
    for name in (a, b):
        found = engine.image_id(name)
        if found is None:
            raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine")
        ids.append(found)
    layers_a, layers_b = engine.diff_ids(a), engine.diff_ids(b)
    if ids[0] == ids[1]:
        # One config, so one list of layers: nothing to read.
        unread = tuple(Layer(diff_id=d, entries=None) for d in layers_a)
        return compare_images(ImageRecord(name=a, image_id=ids[0], config={}, layers=unread),
                              ImageRecord(name=b, image_id=ids[1], config={}, layers=unread))
    record_a = read_saved_image(a, ids[0], engine.save_image(a), layers_to_read(layers_a, layers_b))
    record_b = read_saved_image(b, ids[1], engine.save_image(b), layers_to_read(layers_b, layers_a))
    return compare_images(record_a, record_b)


def second_tag(tag: str) -> str:
    """The tag of the check build: the same repository, `-repro` after the tag."""
    repository, _, name = tag.rpartition(":")
    if not repository or "/" in name:  # no tag given: "host:port/repo" or "repo"
        return f"{tag}:latest-repro"
    return f"{repository}:{name}-repro"


def check_reproducible(lock: Lock, *, lock_digest: str, project_dir: Path, tag: str,
                       store: ContentStore | None = None, progress: Progress, mlenv_version: str) -> tuple[BuiltImage, ReproReport]:
    """Build twice without cache (the second as `second_tag(tag)`) and compare the two images.

    When they are identical the second tag is dropped (it names the same image); when not, it is
    kept so the two can be inspected."""
    store = store or ContentStore()
    builds = []
    for number, name in enumerate((tag, second_tag(tag)), start=1):
        progress(f"reproducibility check: build {number} of 2, without cache")
        builds.append(build_image(lock, lock_digest=lock_digest, project_dir=project_dir, tag=name,
                                  no_cache=True, store=store, progress=progress, mlenv_version=mlenv_version))
    progress("compare the two builds layer by layer")
    report = compare_daemon_images(builds[0].tag, builds[1].tag)
    if report.identical:
        engine.remove_image(builds[1].tag)
    return builds[0], report
