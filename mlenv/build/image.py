"""Build the image on the engine with the network off, then normalise and tag it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlenv.build.artifacts import Progress
from mlenv.build.context import prepare_context
from mlenv.build.normalise import rewrite_archive
from mlenv.errors import BuildError
from mlenv.model.lock import Lock
from mlenv.observe.stream.decompress import ChunkReader
from mlenv.render import render
from mlenv.render.dockerfile import source_date_epoch
from mlenv.sources import engine
from mlenv.sources.cas import ContentStore


class BuildApi(Protocol):
    """The part of the docker SDK's low-level APIClient a build needs (passed in from sources.daemon)."""

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]: ...


def run_build(api: BuildApi, context: Path, *, tag: str, no_cache: bool, progress: Progress) -> str:
    """Build `context` with the network off and return the image ID.

    Intermediate containers are removed on failure too (rm + forcerm), and the error is reported
    with the build's last lines, which name the failing step.
    """
    tail: list[str] = []
    image_id = None
    stream = api.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none", nocache=no_cache,
                       pull=False, decode=True)
    for chunk in stream:
        if "error" in chunk:
            detail = " | ".join(line for line in tail[-3:] if line)
            raise BuildError(f"docker build failed: {chunk['error'].strip()}" + (f" (after: {detail})" if detail else ""))
        line = chunk.get("stream", "").rstrip()
        if line:
            tail.append(line)
            del tail[:-20]
            if line.startswith("Step "):
                progress(line)
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = aux["ID"]
    if image_id is None:
        raise BuildError("docker build finished without an image ID", hint="re-run with -v to see the build output")
    return image_id


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    tag: str
    image_id: str


def default_tag(lock: Lock, lock_digest: str) -> str:
    """`name:<first 12 hex of the lock's sha256>`: the same lock always builds the same tag."""
    return f"{lock.name}:{lock_digest.removeprefix('sha256:')[:12]}"


def build_image(
    lock: Lock,
    *,
    lock_digest: str,
    project_dir: Path,
    tag: str,
    no_cache: bool = False,
    normalise: bool = True,
    store: ContentStore | None = None,
    progress: Progress,
    mlenv_version: str,
) -> BuiltImage:
    """Render, fetch, build with the network off, and (by default) normalise the image's config."""
    platform = lock.target.platforms[0]
    rendered = render(lock, lock_digest=lock_digest, mlenv_version=mlenv_version, fetch="host")
    client = engine.connect()
    try:
        with tempfile.TemporaryDirectory(prefix="mlenv-build-") as work:
            context = Path(work, "context")
            prepare_context(lock, rendered, project_dir, context, fetch_mode="host", platform=platform,
                            store=store or ContentStore(), progress=progress)
            built = run_build(client.api, context, tag=tag, no_cache=no_cache, progress=progress)
            if not normalise:
                return BuiltImage(tag=tag, image_id=built)
            progress("normalise the image config (times, build container ids)")
            archive = Path(work, "image.tar")
            image_id = rewrite_archive(ChunkReader(engine.save_image(tag)), archive,  # type: ignore[arg-type]
                                       epoch=source_date_epoch(lock), tag=tag)
            engine.load_archive(archive)
            if image_id != built:
                engine.remove_image(built)
            return BuiltImage(tag=tag, image_id=image_id)
    finally:
        client.close()
