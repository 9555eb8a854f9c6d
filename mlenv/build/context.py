"""The build context: the rendered files plus the fetched artifacts, assembled aside and renamed into
place."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mlenv.build.artifacts import Progress, apt_artifacts, fetch, python_artifacts
from mlenv.build.tarball import Entry, tree_entries, write_tar
from mlenv.errors import BuildError
from mlenv.files import file_sha256, inside
from mlenv.model.ignore import ignore_match
from mlenv.model.lock import Lock
from mlenv.observe.fs.apptree import app_entries, model_entries
from mlenv.render import CONTEXT_DIR, WHEELS_DIR, FetchMode, RenderedContext
from mlenv.render.dockerfile import APP_TAR, DEBS_DIR, DEBS_TAR, ENTRYPOINT_TAR, MODELS_TAR, source_date_epoch
from mlenv.render.entrypoint import ENTRYPOINT_PATH
from mlenv.sources.cas import ContentStore


def assemble_context(
    lock: Lock,
    rendered: RenderedContext,
    project_dir: Path,
    destination: Path,
    *,
    wheels: dict[str, Path],
    debs: dict[str, Path],
) -> None:
    """Write the whole build context (`mlenv dockerfile -o`): generated files, wheels, and reproducible
    tars of debs, app, models."""
    refuse_outside(lock, project_dir)
    dependency_context(lock, rendered.files, destination, wheels=wheels, debs=debs)
    final_tars(lock, rendered, project_dir, destination)


def dependency_context(
    lock: Lock,
    files: Iterable[tuple[str, bytes]],
    destination: Path,
    *,
    wheels: dict[str, Path],
    debs: dict[str, Path],
) -> None:
    """The context of the dependency stages: `files` (a Dockerfile, .dockerignore, requirements), the
    wheels and the .debs' tar."""
    for relative, data in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if wheels:
        (destination / WHEELS_DIR).mkdir(parents=True, exist_ok=True)
        for filename, path in sorted(wheels.items()):
            _link_or_copy(path, destination / WHEELS_DIR / filename)
    if debs:
        folder = DEBS_DIR.strip("/")
        write_tar(
            destination / CONTEXT_DIR / DEBS_TAR,
            [Entry(folder, None)] + [Entry(f"{folder}/{name}", path) for name, path in sorted(debs.items())],
            mtime=source_date_epoch(lock),
        )


def final_tars(
    lock: Lock, rendered: RenderedContext, project_dir: Path, destination: Path
) -> dict[str, Path]:
    """The reproducible tars of the final steps (entrypoint, app, models) under the context's mlenv/
    directory, by name: the Dockerfile ADDs them, `mlenv build` loads them as layers."""
    refuse_outside(lock, project_dir)
    epoch = source_date_epoch(lock)
    context_dir = destination / CONTEXT_DIR
    context_dir.mkdir(parents=True, exist_ok=True)
    tars: dict[str, Path] = {}
    script = dict(rendered.files).get(f"{CONTEXT_DIR}/entrypoint.py")
    if script is not None:
        entrypoint = context_dir / "entrypoint.py"
        entrypoint.write_bytes(script)
        tars[ENTRYPOINT_TAR] = context_dir / ENTRYPOINT_TAR
        write_tar(tars[ENTRYPOINT_TAR], tree_entries(entrypoint, ENTRYPOINT_PATH.strip("/")), mtime=epoch)
    if lock.app.copy:
        tars[APP_TAR] = context_dir / APP_TAR
        write_tar(tars[APP_TAR], app_entries(lock, project_dir), mtime=epoch)
    if any(m.strategy == "bake" for m in lock.models):
        _check_models(lock, project_dir)
        tars[MODELS_TAR] = context_dir / MODELS_TAR
        write_tar(tars[MODELS_TAR], model_entries(lock, project_dir), mtime=epoch)
    return tars


def _check_models(lock: Lock, project_dir: Path) -> None:
    """The baked models are the ones the lock hashed (the Dockerfile's sha256sum step, on the host)."""
    for model in lock.models:
        source = project_dir / model.source
        if model.strategy != "bake" or not source.is_file():
            continue  # a missing one is named by model_entries
        found = file_sha256(source)
        if found != model.sha256:
            raise BuildError(
                f"model {model.source}: sha256 is {found}, the lock pins {model.sha256}",
                hint="the model changed after `mlenv lock`: run `mlenv lock` again",
            )


def refuse_outside(lock: Lock, project_dir: Path) -> None:
    """A lock edited by hand may name `/etc` or `../../.ssh` as app code or a model: the spec reader refuses
    those, and so does the build, before a file of the host is packed into the context."""
    named = [(f"app.copy[{i}]", relative) for i, relative in enumerate(lock.app.copy)]
    named += [(f"models[{i}].source", m.source) for i, m in enumerate(lock.models) if m.strategy == "bake"]
    for key, relative in named:
        if inside(project_dir, relative) is None:
            raise BuildError(
                f"the lock's {key} {relative[:200]!r} is outside the project directory {project_dir}"
            )


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


def refuse_secret_files(copy: tuple[str, ...], project_dir: Path, *, allow: tuple[str, ...] = ()) -> None:
    """Refuse (one line naming the file) an app copy that holds a secret-like file or training data,
    by the same rules the generated .dockerignore holds, unless the spec's [app] allow names the path
    or a directory above it."""
    allowed = {path.strip("/") for path in allow}
    for relative in copy:
        source = project_dir / relative
        paths = [source, *sorted(source.rglob("*"))] if source.is_dir() else [source]
        for path in paths:
            name = path.relative_to(project_dir).as_posix()
            match = ignore_match(name)
            # A secret inside a directory the packer skips (__pycache__, .venv) is refused too: the
            # rule is about the tree the spec names, and refusing is the safe side.
            if match is None or match.kind == "noise":
                continue
            if any(name == a or name.startswith(a + "/") for a in allowed):
                continue
            what = "a secret-like file" if match.kind == "secret" else "training data"
            raise BuildError(
                f"app.copy would put {name} into the image: {what} (matches {match.pattern})",
                hint=f'remove it from the app tree, or allow it: [app] allow = ["{name}"] in mlenv.toml',
            )
