"""Fetch every locked artifact on the host, assemble the build context, build with the network off.

The build is hermetic: wheels and .debs come from the content-addressed cache, each checked
against the lock's sha256; the Dockerfile installs them with no index and no network.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlenv.cas import ContentStore
from mlenv.errors import BuildError, ImageError
from mlenv.models import Lock
from mlenv.normalise import rewrite_archive
from mlenv.observe.streams import ChunkReader
from mlenv.render import CONTEXT_DIR, WHEELS_DIR, FetchMode, RenderedContext, render
from mlenv.render.dockerfile import APP_TAR, DEBS_DIR, DEBS_TAR, ENTRYPOINT_TAR, MODELS_TAR, source_date_epoch
from mlenv.render.entrypoint import ENTRYPOINT_PATH
from mlenv.reprocheck import ImageRecord, Layer, ReproReport, compare_images, layers_to_read, read_saved_image
from mlenv.sources import daemon
from mlenv.sources.http import download_chunks
from mlenv.tarball import Entry, tree_entries, write_tar
from mlenv.wheeltags import target_tags, wheel_installs

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class Artifact:
    filename: str
    sha256: str
    urls: tuple[str, ...]  # tried in order; the hash decides, not the URL


def python_artifacts(lock: Lock, platform: str) -> list[Artifact]:
    """The wheels of every pin that install on `platform` (one platform is built at a time)."""
    tags = target_tags(lock.target, platform)
    artifacts = []
    for pin in sorted(lock.python.packages, key=lambda p: p.name):
        wheels = [w for w in pin.wheels if wheel_installs(w.name, tags)]
        if not wheels:
            raise BuildError(f"{pin.name}=={pin.version} has no wheel for {platform} in the lock",
                             hint="a hermetic build installs wheels only; see `mlenv dockerfile --fetch build`")
        artifacts += [Artifact(filename=w.name, sha256=w.sha256, urls=(w.url,)) for w in wheels]
    return artifacts


def apt_artifacts(lock: Lock) -> list[Artifact]:
    mirrors = tuple(dict.fromkeys(s.mirror.rstrip("/") for s in lock.apt.sources))
    if lock.apt.packages and not mirrors:
        raise BuildError("the lock pins apt packages but names no apt source; run `mlenv lock` again")
    return [
        Artifact(filename=pin.filename.rsplit("/", 1)[-1], sha256=pin.sha256,
                 urls=tuple(f"{m}/{pin.filename}" for m in mirrors))
        for pin in sorted(lock.apt.packages, key=lambda p: p.name)
    ]


def fetch(artifacts: list[Artifact], store: ContentStore, progress: Progress) -> dict[str, Path]:
    """Every artifact in the cache, verified; filename -> cached path."""
    found: dict[str, Path] = {}
    for index, artifact in enumerate(artifacts, start=1):
        cached = store.get(artifact.sha256)
        if cached is None:
            progress(f"fetch {index}/{len(artifacts)} {artifact.filename}")
            cached = _download_any(artifact, store)
        found[artifact.filename] = cached
    return found


def _download_any(artifact: Artifact, store: ContentStore) -> Path:
    last_error: Exception | None = None
    for url in artifact.urls:
        try:
            return store.put_stream(artifact.sha256, download_chunks(url), what=artifact.filename)
        except BuildError:
            raise  # a hash mismatch is never retried from another mirror silently
        except Exception as error:  # noqa: BLE001 - try the next mirror, report the last failure
            last_error = error
    raise BuildError(f"cannot fetch {artifact.filename}: {last_error}")


def assemble_context(
    lock: Lock,
    rendered: RenderedContext,
    project_dir: Path,
    destination: Path,
    *,
    wheels: dict[str, Path],
    debs: dict[str, Path],
) -> None:
    """Write the build context: generated files, wheels, and reproducible tars of debs, app, models."""
    epoch = source_date_epoch(lock)
    for relative, data in rendered.files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    context_dir = destination / CONTEXT_DIR
    if wheels:
        (destination / WHEELS_DIR).mkdir(parents=True, exist_ok=True)
        for filename, path in sorted(wheels.items()):
            _link_or_copy(path, destination / WHEELS_DIR / filename)
    if debs:
        folder = DEBS_DIR.strip("/")
        write_tar(context_dir / DEBS_TAR, [Entry(folder, None)] +
                  [Entry(f"{folder}/{name}", path) for name, path in sorted(debs.items())], mtime=epoch)
    entrypoint = context_dir / "entrypoint.py"
    if entrypoint.exists():
        write_tar(context_dir / ENTRYPOINT_TAR, tree_entries(entrypoint, ENTRYPOINT_PATH.strip("/")), mtime=epoch)
    workdir = lock.app.workdir.strip("/")
    if lock.app.copy:
        entries: list[Entry] = []
        for relative in lock.app.copy:
            source = project_dir / relative
            if not source.exists():
                raise BuildError(f"app.copy names {relative}, which does not exist in {project_dir}")
            entries += tree_entries(source, f"{workdir}/{relative.strip('/')}")
        write_tar(context_dir / APP_TAR, entries, mtime=epoch)
    baked = [m for m in lock.models if m.strategy == "bake"]
    if baked:
        entries = []
        for model in baked:
            source = project_dir / model.source
            if not source.is_file():
                raise BuildError(f"model {model.source} is missing", hint="train or fetch it, then `mlenv lock`")
            entries += tree_entries(source, model.target.strip("/"))
        write_tar(context_dir / MODELS_TAR, entries, mtime=epoch)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        target.hardlink_to(source)
    except OSError:  # the cache is on another filesystem
        target.write_bytes(source.read_bytes())


def prepare_context(
    lock: Lock,
    rendered: RenderedContext,
    project_dir: Path,
    destination: Path,
    *,
    fetch_mode: FetchMode,
    platform: str,
    store: ContentStore,
    progress: Progress,
) -> None:
    """Fetch (for the hermetic flavour) and assemble the whole build context in `destination`."""
    wheels = fetch(python_artifacts(lock, platform), store, progress) if fetch_mode == "host" else {}
    debs = fetch(apt_artifacts(lock), store, progress) if fetch_mode == "host" else {}
    assemble_context(lock, rendered, project_dir, destination, wheels=wheels, debs=debs)


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
    client = daemon.connect()
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
            image_id = rewrite_archive(ChunkReader(daemon.save_image(tag)), archive,  # type: ignore[arg-type]
                                       epoch=source_date_epoch(lock), tag=tag)
            daemon.load_archive(archive)
            if image_id != built:
                daemon.remove_image(built)
            return BuiltImage(tag=tag, image_id=image_id)
    finally:
        client.close()


def compare_daemon_images(a: str, b: str) -> ReproReport:
    """Compare two images in the engine; the layers are read only where their diff_ids differ."""
    ids = []
    for name in (a, b):
        found = daemon.image_id(name)
        if found is None:
            raise ImageError(f"docker-daemon:{name}: no such image in the Docker engine")
        ids.append(found)
    layers_a, layers_b = daemon.diff_ids(a), daemon.diff_ids(b)
    if ids[0] == ids[1]:
        # One config, so one list of layers: nothing to read.
        unread = tuple(Layer(diff_id=d, entries=None) for d in layers_a)
        return compare_images(ImageRecord(name=a, image_id=ids[0], config={}, layers=unread),
                              ImageRecord(name=b, image_id=ids[1], config={}, layers=unread))
    record_a = read_saved_image(a, ids[0], daemon.save_image(a), layers_to_read(layers_a, layers_b))
    record_b = read_saved_image(b, ids[1], daemon.save_image(b), layers_to_read(layers_b, layers_a))
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
        daemon.remove_image(builds[1].tag)
    return builds[0], report
