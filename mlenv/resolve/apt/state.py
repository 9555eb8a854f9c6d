"""The base image's apt state, read from its files: installed packages, architectures, apt sources,
and keyrings. What apt in the base starts from when `apt-get install` runs."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mlenv.errors import ResolutionError
from mlenv.model.debian import (
    RECORD_FIELDS,
    TRUSTED_KEYRING,
    TRUSTED_KEYRING_DIR,
    Keyring,
    Record,
    SourceEntry,
)
from mlenv.observe.probes.dpkg import STATUS as DPKG_STATUS
from mlenv.observe.probes.dpkg import installed_stanzas
from mlenv.observe.stream.decompress import StreamError
from mlenv.resolve.apt.sourceslist import parse_deb822_sources, parse_sources_list

ReadFile = Callable[[str], "bytes | None"]
ListDir = Callable[[str], Iterable[str]]

DPKG_ARCH_FILE = "/var/lib/dpkg/arch"
SOURCES_LIST = "/etc/apt/sources.list"
SOURCES_DIR = "/etc/apt/sources.list.d"
PREFERENCES = "/etc/apt/preferences"
PREFERENCES_DIR = "/etc/apt/preferences.d"
# apt reads only files with these names in sources.list.d (others are ignored with a notice).
_SOURCES_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(list|sources)$")


@dataclass(frozen=True, kw_only=True)
class AptBaseState:
    """What apt in the base image starts from: installed packages, sources, keyrings, architectures."""

    architecture: str
    foreign_architectures: tuple[str, ...] = ()
    installed: tuple[Record, ...] = ()  # dpkg status stanzas of installed (or half-installed) packages
    sources: tuple[SourceEntry, ...] = ()
    keyrings: tuple[Keyring, ...] = ()
    notes: tuple[str, ...] = ()


def read_base_state(read: ReadFile, listdir: ListDir) -> AptBaseState:
    """The base's apt state from its files: `read(path)` gives bytes or None, `listdir(path)` names.

    Paths are absolute inside the image; symlinks are the caller's to follow (within the image).
    """
    status = read(DPKG_STATUS)
    if status is None:
        raise ResolutionError(f"the base image has no {DPKG_STATUS}: apt packages need a Debian-based base")
    try:
        installed = installed_records(status)
    except StreamError as error:  # a line past the observer's bound: the file is not a dpkg database
        raise ResolutionError(f"the base image's {error}") from None
    architecture = native_architecture(installed)
    foreign = tuple(a for a in _lines(read(DPKG_ARCH_FILE)) if a != architecture)

    notes: list[str] = []
    sources: list[SourceEntry] = []
    text = read(SOURCES_LIST)
    if text is not None:
        sources += parse_sources_list(text.decode("utf-8", errors="replace"), origin=SOURCES_LIST)
    for name in sorted(_listdir(listdir, SOURCES_DIR)):
        path = f"{SOURCES_DIR}/{name}"
        if not _SOURCES_NAME.match(name):
            continue
        data = read(path)
        if data is None:
            continue
        decoded = data.decode("utf-8", errors="replace")
        if name.endswith(".list"):
            sources += parse_sources_list(decoded, origin=path)
        else:
            sources += parse_deb822_sources(decoded, origin=path)

    trusted = sorted(_listdir(listdir, TRUSTED_KEYRING_DIR))
    keyring_paths = [TRUSTED_KEYRING] + [f"{TRUSTED_KEYRING_DIR}/{n}" for n in trusted]
    for entry in sources:
        keyring_paths += [s for s in entry.signed_by if s.startswith("/")]
    keyrings = []
    for path in dict.fromkeys(keyring_paths):
        data = read(path)
        if data is not None:
            keyrings.append(Keyring(path=path, data=data))

    if read(PREFERENCES) is not None or any(True for _ in _listdir(listdir, PREFERENCES_DIR)):
        notes.append(
            "the base has apt preferences (pinning); mlenv ignores them: every source has priority 500"
        )

    return AptBaseState(
        architecture=architecture,
        foreign_architectures=foreign,
        installed=installed,
        sources=tuple(sources),
        keyrings=tuple(keyrings),
        notes=tuple(notes),
    )


def is_base_state_path(path: str) -> bool:
    """Whether read_base_state may read `path`: for readers that keep only the files asked for."""
    return path in (DPKG_STATUS, DPKG_ARCH_FILE) or path.startswith(("/etc/apt/", "/usr/share/keyrings/"))


def installed_records(status: bytes) -> tuple[Record, ...]:
    """The installed packages of a dpkg status file, with the fields the resolver reads (and Status)."""
    return tuple(installed_stanzas(status, fields=RECORD_FIELDS))


def native_architecture(installed: Sequence[Record]) -> str:
    """dpkg's native architecture: the one dpkg itself is built for."""
    for record in installed:
        if record.get("Package") == "dpkg":
            return record["Architecture"]
    archs = sorted({r.get("Architecture", "all") for r in installed} - {"all"})
    if len(archs) == 1:
        return archs[0]
    raise ResolutionError("cannot tell the base image's architecture: dpkg is not installed in it")


def _lines(data: bytes | None) -> list[str]:
    return [] if data is None else [line.strip() for line in data.decode().splitlines() if line.strip()]


def _listdir(listdir: ListDir, path: str) -> list[str]:
    try:
        return list(listdir(path) or ())
    except OSError:
        return []
