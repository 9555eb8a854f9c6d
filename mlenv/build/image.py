"""Build the image: the dependency layers by `docker build` with the network off, once per set of
inputs, and the final layers and config written by mlenv (build.assemble) and loaded."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlenv.build.artifacts import Progress, apt_artifacts, fetch, python_artifacts
from mlenv.build.assemble import final_config, local_image, write_load_archive
from mlenv.build.context import dependency_context, final_tars, refuse_outside
from mlenv.build.normalise import normalised_archive, saved_config
from mlenv.build.wheels import rebuild_missing
from mlenv.errors import BuildError
from mlenv.files import file_sha256
from mlenv.model.lock import Lock, for_platform
from mlenv.observe.image.loaded import parse_json
from mlenv.observe.image.local import LocalImage
from mlenv.render import CONTEXT_DIR, RenderedContext, render, render_dependencies
from mlenv.render.config import image_settings
from mlenv.render.dockerfile import final_steps, source_date_epoch
from mlenv.sources.cas import ContentStore

DEPENDENCY_REPOSITORY = "mlenv-deps"  # tagged by a digest of the inputs: see dependency_tag
KEPT_STAGE = "system"  # the apt stage (render.dockerfile): its images stay as the engine's build cache


class BuildEngine(Protocol):
    """What building (and comparing builds) needs of the engine; `mlenv.sources.engine.Engine` is the
    real one, connected by the command and passed in, so this layer never imports the docker SDK."""

    def build(self, **options: Any) -> Iterator[dict[str, Any]]: ...
    def image_id(self, name: str) -> str | None: ...
    def diff_ids(self, name: str) -> list[str]: ...
    def save_image(self, name: str) -> Iterator[bytes]: ...
    def load_archive(self, data: bytes) -> None: ...
    def load_file(self, path: Path) -> None: ...
    def remove_image(self, name: str) -> None: ...
    def remove_untagged(self, image_id: str) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class BuildRun:
    image_id: str
    stages: tuple[tuple[str, str], ...]  # (name, last image) of each stage before the final one


def run_build(
    engine: BuildEngine, context: Path, *, tag: str, platform: str, no_cache: bool, progress: Progress
) -> BuildRun:
    """Build `context` for `platform` with the network off and return the image ID and its side
    stages' images. A platform not the engine's own runs its RUN steps under the engine's emulation
    (qemu-user-static's binfmt handlers on Linux).

    Intermediate containers are removed on failure too (rm + forcerm), and the error is reported
    with the build's last lines, which name the failing step.
    """
    tail: list[str] = []
    image_id = None
    stages: list[tuple[str, str]] = []
    stage, current = "", None  # the stage being built (its AS name) and the image it is at
    stream = engine.build(
        path=str(context),
        tag=tag,
        rm=True,
        forcerm=True,
        network_mode="none",
        nocache=no_cache,
        pull=False,
        platform=platform,
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
                if " : FROM " in line:
                    if current is not None:
                        stages.append((stage, current))
                    stage, current = line.rpartition(" AS ")[2].strip() if " AS " in line else "", None
            elif line.startswith(" ---> ") and " " not in line.removeprefix(" ---> "):
                current = line.removeprefix(" ---> ")  # the image a step left (not "Running in ...")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = aux["ID"]
    if image_id is None:
        raise BuildError(
            "docker build finished without an image ID", hint="re-run with -v to see the build output"
        )
    return BuildRun(image_id=image_id, stages=tuple(stages))


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    tag: str
    image_id: str
    # The final image as files (its config and top layers), while the caller's work directory lives:
    # what the build's own verify reads instead of exporting the image from the engine.
    local: LocalImage | None = None


def default_tag(lock: Lock, lock_digest: str) -> str:
    """`name:<first 12 hex of the lock's sha256>`: the same lock always builds the same tag."""
    return f"{lock.name}:{lock_digest.removeprefix('sha256:')[:12]}"


def dependency_tag(
    lock: Lock, dockerfile: bytes, rendered: RenderedContext, *, platform: str, normalise: bool
) -> str:
    """The dependency image's tag: a digest of everything its build reads (its Dockerfile, the
    requirements, the sha256 of every wheel and .deb), so equal inputs find the image built before."""
    material = {
        "dockerfile": dockerfile.decode(),
        "dockerignore": rendered.get(".dockerignore").decode(),
        "requirements": rendered.get(f"{CONTEXT_DIR}/requirements.txt").decode(),
        "wheels": sorted((a.filename, a.sha256) for a in python_artifacts(lock, platform)),
        "debs": sorted((a.filename, a.sha256) for a in apt_artifacts(lock)),
        "normalised": normalise,
        "platform": platform,
    }
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return f"{DEPENDENCY_REPOSITORY}:{key[:40]}"


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
    work: Path | None = None,
    platform: str | None = None,
) -> BuiltImage:
    """Build the image of `lock` for `platform` (default: its first): the dependency image (apt, venv,
    user) by `docker build` when no image of the same inputs is there, then the final steps written and
    loaded by mlenv (build.assemble).

    `work` (a directory the caller removes) keeps the final image's files for the caller's verify;
    without it they are removed here. `no_cache` builds the dependency image again, every step.
    """
    store = store or ContentStore()
    platform = platform or lock.target.platforms[0]
    if platform not in lock.target.platforms:
        raise BuildError(
            f"{platform} is not a platform of the lock (it has {', '.join(lock.target.platforms)})",
            hint="add it to [base] platforms in mlenv.toml and run `mlenv lock`",
        )
    refuse_outside(lock, project_dir)  # before anything is built: a hand-edited lock naming /etc
    lock = for_platform(lock, platform)  # what this image holds: one architecture's .debs and wheels
    for rebuilt in rebuild_missing(lock, project_dir, store):  # wheels lock built on the host
        progress(f"rebuilt {rebuilt} on the host: the content store did not have it")
    rendered = render(lock, lock_digest=lock_digest, mlenv_version=mlenv_version, fetch="host")
    dockerfile = render_dependencies(lock, mlenv_version=mlenv_version)
    name = dependency_tag(lock, dockerfile, rendered, platform=platform, normalise=normalise)
    found = None if no_cache else engine.image_id(name)
    if found is not None:
        progress(f"dependency layers: reusing {name} ({found[:19]})")
        dependency = _stored_config(engine, name, found, store)
    else:
        dependency = _build_dependencies(
            lock,
            engine,
            rendered,
            dockerfile,
            name=name,
            store=store,
            platform=platform,
            no_cache=no_cache,
            normalise=normalise,
            progress=progress,
        )
    with contextlib.ExitStack() as stack:
        folder = work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlenv-final-")))
        image = _assemble(
            lock,
            rendered,
            project_dir,
            folder,
            dependency,
            tag=tag,
            lock_digest=lock_digest,
            mlenv_version=mlenv_version,
        )
        progress(f"load the final layers and config ({_size(image)})")
        archive = folder / "load.tar"
        write_load_archive(image, archive, epoch=source_date_epoch(lock))
        engine.load_file(archive)
        archive.unlink()
    loaded = engine.image_id(tag)
    if loaded != image.image_id:
        raise BuildError(f"docker load gave {tag} the ID {loaded}, not {image.image_id}")
    return BuiltImage(
        tag=tag,
        image_id=image.image_id,
        local=image if work is not None else None,
    )


def _size(image: LocalImage) -> str:
    sent = sum(layer.tar.stat().st_size for layer in image.layers if layer.tar is not None)
    return f"{sent / 1e6:.1f} MB sent to the engine"


def _build_dependencies(
    lock: Lock,
    engine: BuildEngine,
    rendered: RenderedContext,
    dockerfile: bytes,
    *,
    name: str,
    store: ContentStore,
    platform: str,
    no_cache: bool,
    normalise: bool,
    progress: Progress,
) -> dict[str, Any]:
    """`docker build` the dependency stages, normalise the image's config, tag it `name`, and remove the
    venv stage's images: they hold the wheels and a second copy of the venv (for a torch service, twice
    the venv's gigabytes). The apt stage's are kept, small, as the engine's cache for the next build of
    other Python pins on the same apt closure. The tagged image shares its layers with every final image
    built on it, so keeping it costs no disk."""
    before = engine.image_id(name)
    files = [(p, d) for p, d in rendered.files if p in (".dockerignore", f"{CONTEXT_DIR}/requirements.txt")]
    with tempfile.TemporaryDirectory(prefix="mlenv-build-") as work:
        context = Path(work, "context")
        wheels = fetch(python_artifacts(lock, platform), store, progress)
        debs = fetch(apt_artifacts(lock), store, progress)
        dependency_context(lock, [("Dockerfile", dockerfile), *files], context, wheels=wheels, debs=debs)
        run = run_build(engine, context, tag=name, platform=platform, no_cache=no_cache, progress=progress)
    if normalise:
        progress("normalise the dependency image's config (times, build container ids)")
        normal = normalised_archive(
            engine.save_image(name), where=f"docker-daemon:{name}", epoch=source_date_epoch(lock), tag=name
        )
        engine.load_archive(normal.archive)
        if normal.image_id != run.image_id:
            # Untagged now; kept only while another image is built on it (a `docker build` by hand that
            # took these steps from the engine's cache).
            engine.remove_untagged(run.image_id)
        image_id, config = normal.image_id, normal.config
    else:
        image_id, config = run.image_id, saved_config(engine.save_image(name), where=f"docker-daemon:{name}")
    for stage, last in run.stages:
        if stage != KEPT_STAGE:
            engine.remove_untagged(last)
    if before is not None and before != image_id:
        engine.remove_untagged(before)  # the one this build replaced under the same tag
    store.put_stream(image_id.removeprefix("sha256:"), [config], what=f"config of {name}")
    return _parse_config(name, config)


def _stored_config(engine: BuildEngine, name: str, image_id: str, store: ContentStore) -> dict[str, Any]:
    """The dependency image's config: kept in the content store by its ID (its own sha256), or read from
    the engine's export of it (its layers skipped) when the store lost it."""
    sha256 = image_id.removeprefix("sha256:")
    config = store.get_bytes(sha256)
    if config is None:
        config = saved_config(engine.save_image(name), where=f"docker-daemon:{name}")
        store.put_stream(sha256, [config], what=f"config of {name}")
    return _parse_config(name, config)


def _parse_config(name: str, config: bytes) -> dict[str, Any]:
    parsed = parse_json(f"docker-daemon:{name}", "config", config)
    if not isinstance(parsed, dict):
        raise BuildError(f"docker-daemon:{name}: the image config is not a JSON object")
    return parsed


def _assemble(
    lock: Lock,
    rendered: RenderedContext,
    project_dir: Path,
    folder: Path,
    dependency: dict[str, Any],
    *,
    tag: str,
    lock_digest: str,
    mlenv_version: str,
) -> LocalImage:
    tars = final_tars(lock, rendered, project_dir, folder)
    layers = {tar: "sha256:" + file_sha256(path) for tar, path in tars.items()}
    steps = final_steps(lock, lock_digest=lock_digest, mlenv_version=mlenv_version, context_dir=CONTEXT_DIR)
    settings = image_settings(lock, lock_digest=lock_digest, mlenv_version=mlenv_version)
    config = final_config(dependency, steps, settings, layers, epoch=source_date_epoch(lock))
    return local_image(tag, dependency, config, tars, layers)
