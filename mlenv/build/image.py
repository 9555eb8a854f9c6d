"""Build the image on the engine with the network off, then normalise and tag it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlenv.build.artifacts import Progress
from mlenv.build.context import prepare_context
from mlenv.build.normalise import normalised_archive
from mlenv.errors import BuildError
from mlenv.model.lock import Lock
from mlenv.render import render
from mlenv.render.dockerfile import source_date_epoch
from mlenv.sources.cas import ContentStore


class BuildEngine(Protocol):
    """What building (and comparing builds) needs of the engine; `mlenv.sources.engine.Engine` is the
    real one, connected by the command and passed in, so this layer never imports the docker SDK."""

    def build(self, **options: Any) -> Iterator[dict[str, Any]]: ...
    def image_id(self, name: str) -> str | None: ...
    def diff_ids(self, name: str) -> list[str]: ...
    def save_image(self, name: str) -> Iterator[bytes]: ...
    def load_archive(self, data: bytes) -> None: ...
    def remove_image(self, name: str) -> None: ...


def run_build(engine: BuildEngine, context: Path, *, tag: str, no_cache: bool, progress: Progress) -> str:
    """Build `context` with the network off and return the image ID.

    Intermediate containers are removed on failure too (rm + forcerm), and the error is reported
    with the build's last lines, which name the failing step.
    """
    tail: list[str] = []
    image_id = None
    stream = engine.build(
        path=str(context),
        tag=tag,
        rm=True,
        forcerm=True,
        network_mode="none",
        nocache=no_cache,
        pull=False,
        decode=True,
    )
    for chunk in stream:
        if "error" in chunk:
            detail = " | ".join(line for line in tail[-3:] if line)
            after = f" (after: {detail})" if detail else ""
            raise BuildError(f"docker build failed: {chunk['error'].strip()}{after}")
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
        raise BuildError(
            "docker build finished without an image ID", hint="re-run with -v to see the build output"
        )
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
    engine: BuildEngine,
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
    with tempfile.TemporaryDirectory(prefix="mlenv-build-") as work:
        context = Path(work, "context")
        prepare_context(
            lock,
            rendered,
            project_dir,
            context,
            fetch_mode="host",
            platform=platform,
            store=store or ContentStore(),
            progress=progress,
        )
        built = run_build(engine, context, tag=tag, no_cache=no_cache, progress=progress)
    if not normalise:
        return BuiltImage(tag=tag, image_id=built)
    progress("normalise the image config (times, build container ids)")
    normal = normalised_archive(
        engine.save_image(tag), where=f"docker-daemon:{tag}", epoch=source_date_epoch(lock), tag=tag
    )
    engine.load_archive(normal.archive)
    if normal.image_id != built:
        engine.remove_image(built)
    return BuiltImage(tag=tag, image_id=normal.image_id)
