"""`mlenv diff A B`: two locks, projects or images side by side, by layer (exit 0 same, 1 different)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mlenv.cli.common import read_lock_input
from mlenv.errors import MlenvError
from mlenv.lockfile import LOCK_FILE, lock_digest
from mlenv.model.facts import CudaComponent
from mlenv.model.lock import Lock
from mlenv.observe import inspect_image
from mlenv.observe.image import parse_location
from mlenv.observe.limits import MAX_KEPT_FILE
from mlenv.resolve.cuda import driver_floors, major_minor, toolkit_floor, version_key, wheel_release
from mlenv.sources.registry import RegistryClient
from mlenv.verify.envdiff import Side, diff_data, diff_markdown, diff_text, image_side, lock_side
from mlenv.verify.envdiff import diff as compare_sides
from mlenv.verify.expected import venv_site
from mlenv.verify.formats import parse_format

DEFAULT_PLATFORM = "linux/amd64"
# A name that does not exist but reads as a file the user meant (not a daemon image name, which may hold
# "/" and ":" too): said as a missing file, not as an image the engine does not have.
_FILE_SUFFIXES = (".lock", ".toml", ".tar", ".json")
_PATH_PREFIXES = ("/", "./", "../", "~")


class DiffFormat(StrEnum):
    """What `mlenv diff --format` prints."""

    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


@dataclass(frozen=True, kw_only=True)
class LockInput:
    subject: str
    lock: Lock
    digest: str


@dataclass(frozen=True, kw_only=True)
class ImageInput:
    subject: str


def read_input(text: str, name: str) -> LockInput | ImageInput:
    """A lock file, a project directory (its mlenv.lock), else an image reference of any transport."""
    path = Path(text).expanduser()
    if path.is_dir():
        lock_path = path / LOCK_FILE
        if not lock_path.exists():
            raise MlenvError(f"{name} {text}: a directory without {LOCK_FILE}", hint="run `mlenv lock` there")
        path = lock_path
    elif not path.exists():
        location = parse_location(text)  # an unknown transport or an empty name: one line, before any work
        bare = location.transport == "docker-daemon" and not text.startswith("docker-daemon:")
        if bare and (text.endswith(_FILE_SUFFIXES) or text.startswith(_PATH_PREFIXES)):
            raise MlenvError(f"{name} {text}: no such file or directory")
        return ImageInput(subject=text)
    data, lock = read_lock_input(path, name)
    return LockInput(subject=text, lock=lock, digest=lock_digest(data))


def driver_floor(components: Iterable[CudaComponent]) -> str | None:
    """The NVIDIA driver a CUDA stack needs: the highest floor of its toolkit and runtime releases in
    resolve's driver table (a release the table lacks: its major's minor-version-compatibility floor)."""
    versions = {c.name: c.version for c in components}
    # The toolkit's release as it is (12.4.1 has a floor of its own); the runtime library's by major.minor.
    releases = [versions["cuda"]] if "cuda" in versions else []
    if "runtime" in versions:
        releases.append(major_minor(versions["runtime"]))
    floors = driver_floors()
    # Every NVIDIA wheel versioned as the toolkit is (nvJitLink 12.5 in a 12.1 stack needs 12.5's driver),
    # as the lock's min-driver counts them.
    releases += [
        release
        for c in components
        if c.source.startswith("wheel:")
        and (release := wheel_release(c.source.removeprefix("wheel:"), c.version, floors)) is not None
    ]
    found = [
        floor
        for release in releases
        if (
            floor := toolkit_floor(release, floors)
            or floors.minor_compatibility.get(str(version_key(release)[0]))
        )
    ]
    return max(found, key=version_key) if found else None


def _side(given: LockInput | ImageInput, other: LockInput | ImageInput, platform: str) -> Side:
    if isinstance(given, LockInput):
        # The floor is derived from the components as on an image side (not the lock's min-driver), so a
        # lock and its image imply the same driver.
        return lock_side(
            given.lock,
            subject=given.subject,
            platform=platform,
            lock_digest=given.digest,
            driver_floor=driver_floor(given.lock.cuda.components),
        )
    # An image is read for what the other side names: its venv's site and the paths of its baked models.
    lock = other.lock if isinstance(other, LockInput) else None
    models = [m.target for m in lock.models if m.strategy == "bake"] if lock is not None else None
    # The models' bytes are kept for the model reader (which library wrote the image's copy); one larger
    # than a kept file may be is compared by its sha256 alone.
    readable = frozenset(
        m.target
        for m in (lock.models if lock else ())
        if m.strategy == "bake" and (m.size or 0) <= MAX_KEPT_FILE
    )
    observed = inspect_image(
        given.subject,
        platform=platform,
        artifacts=models or (),
        keep=readable.__contains__,
        check_files=False,  # RECORD hashes are verify's; a diff compares versions
        registry=RegistryClient(),
    )
    return image_side(
        observed.facts,
        subject=given.subject,
        driver_floor=driver_floor(observed.facts.cuda),
        site=venv_site(lock) if lock is not None else None,
        model_paths=models,
        accepted={m.target: dict(m.accept_producer) for m in lock.models} if lock is not None else None,
    )


def _platform(chosen: str | None, inputs: Iterable[tuple[str, LockInput | ImageInput]]) -> str:
    """`--platform`, else the first lock's first platform; a lock that does not target it is refused
    (its projection for another platform would name packages its build never installs)."""
    locks = [(name, given) for name, given in inputs if isinstance(given, LockInput)]
    where = chosen or next((g.lock.target.platforms[0] for _, g in locks if g.lock.target.platforms), None)
    for name, given in locks:
        if where is not None and where not in given.lock.target.platforms:
            raise MlenvError(
                f"{name} {given.subject}: the lock does not target {where}; "
                f"it targets {', '.join(given.lock.target.platforms)}",
                hint="pass --platform a platform both sides target",
            )
    return where or DEFAULT_PLATFORM


def diff(
    a: Annotated[
        str,
        typer.Argument(
            help="A: a lock file, a project directory (its mlenv.lock), or an image: docker-daemon:NAME, "
            "docker-archive:PATH, oci:PATH[:TAG], docker://REF or a bare daemon name."
        ),
    ],
    b: Annotated[str, typer.Argument(help="B: the same kinds as A.")],
    output_format: Annotated[str, typer.Option("--format", "-f", help="text, json or markdown.")] = "text",
    platform: Annotated[
        str | None, typer.Option(help="The platform to compare (default: the first lock's first).")
    ] = None,
) -> None:
    """What changed from A to B, layer by layer: base, apt, the interpreter, Python packages (with the
    major/minor/patch step), CUDA (cuDNN, the driver floor) and models. Exit 0 = the same in every layer
    both state, 1 = different."""
    chosen = parse_format(DiffFormat, output_format)
    first, second = read_input(a, "A"), read_input(b, "B")
    where = _platform(platform, (("A", first), ("B", second)))
    result = compare_sides(_side(first, second, where), _side(second, first, where), platform=where)
    if chosen is DiffFormat.JSON:
        sys.stdout.write(json.dumps(diff_data(result), indent=2, sort_keys=True) + "\n")
    elif chosen is DiffFormat.MARKDOWN:
        sys.stdout.write(diff_markdown(result))
    else:
        sys.stdout.write(diff_text(result))
    if not result.equal:
        raise typer.Exit(1)
