"""The hashed requirements file of a lock, written the way pip-compile --generate-hashes writes it.

One writer for both places such a file goes: the build context (what the image's pip installs) and
`mlenv export --format requirements` (what a user installs with `pip install --require-hashes --no-deps`
or `pip-sync`). Pure: the same pins give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from packaging.markers import Marker

from mlenv.errors import BuildError
from mlenv.model.lock import Lock, PythonFile, PythonPin
from mlenv.model.target import marker_environment, target_tags, wheel_installs


def requirement_lines(
    pins: Iterable[PythonPin],
    *,
    wheels_only: bool,
    extras: Mapping[str, tuple[str, ...]] | None = None,
    files: Mapping[str, tuple[PythonFile, ...]] | None = None,
) -> list[str]:
    """One entry per pin, sorted by name: `name[extras]==version ; marker \\` and an indented
    `--hash=sha256:...` line per file, the layout pip-compile writes and pip and pip-sync read.

    `extras` (by pin name) keeps what the project asked for: pip before 24 refuses `--require-hashes`
    when a requirement with extras matches a line without them. `files` (by pin name) narrows the
    hashes to one platform's files; without it every locked file of the pin is listed."""
    entries = []
    for pin in sorted(pins, key=lambda p: p.name):
        chosen = files[pin.name] if files is not None else pin_files(pin, wheels_only=wheels_only)
        if not chosen:
            raise BuildError(
                f"{pin.name}=={pin.version} has no wheel for the target; a hermetic build "
                "installs wheels only",
                hint="pin a version with wheels, or use --fetch build",
            )
        wanted = sorted(set((extras or {}).get(pin.name, ())))
        head = f"{pin.name}[{','.join(wanted)}]" if wanted else pin.name
        marker = f" ; {pin.marker}" if pin.marker else ""
        hashes = [f"--hash=sha256:{h}" for h in sorted({f.sha256 for f in chosen})]
        entries.append(" \\\n    ".join([f"{head}=={pin.version}{marker}", *hashes]))
    return entries


def pin_files(pin: PythonPin, *, wheels_only: bool) -> tuple[PythonFile, ...]:
    """Every locked file of `pin`: its wheels, and its sdist unless only wheels are installed."""
    return pin.wheels + (() if wheels_only or pin.sdist is None else (pin.sdist,))


def platform_files(lock: Lock, platform: str) -> dict[str, tuple[PythonFile, ...]]:
    """The files of each pin that install on `platform`: its wheels for the platform's tags, else its
    sdist. A pin whose marker excludes the platform keeps all its files, since pip skips its line
    there by the marker and never checks them."""
    tags = target_tags(lock.target, platform)
    environment = marker_environment(lock.target, platform)
    chosen = {}
    for pin in lock.python.packages:
        if pin.marker is not None and not Marker(pin.marker).evaluate(environment):
            chosen[pin.name] = pin_files(pin, wheels_only=False)
            continue
        wheels = tuple(w for w in pin.wheels if wheel_installs(w.name, tags))
        chosen[pin.name] = wheels or (() if pin.sdist is None else (pin.sdist,))
    return chosen


def requirements_file(lines: Iterable[str], *, header: Iterable[str] = ()) -> str:
    """The file: `# header` lines, then the entries, each ending in a newline."""
    return "".join(f"# {line}\n" if line else "#\n" for line in header) + "".join(
        f"{entry}\n" for entry in lines
    )
