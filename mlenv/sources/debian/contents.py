"""Which Debian package ships a shared library, as the mirror's Contents-<arch> index says.

The suite's Release names each Contents-<arch>.gz with its sha256; the index is fetched by that hash (by-hash
URL first, as for Packages), stored in the apt index cache (content-addressed, checked on read), and the
part mlenv asks about (library file names in the loader's directories -> packages) is derived once and kept
beside it under the same sha256: a second refusal reads a few KiB, not 150 MB.

The Release is read without its signature check (that needs the base's keyrings, which the lock records by
path only): the answer names a package in a refusal's hint and nothing is installed from it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from debian.deb822 import Release

from mlenv.errors import SourceError
from mlenv.files import write_atomic
from mlenv.model.lock import AptSource
from mlenv.model.urls import redact
from mlenv.sources.debian.archive import IndexCache

CONTENTS_FORMAT = 1  # of the derived file; bumped when its shape changes
MAX_RELEASE = 16 << 20  # an InRelease is ~150 KiB
MAX_LINE = 64 << 10  # a Contents line is a path and a package list


@dataclass(frozen=True, kw_only=True)
class Shipped:
    """What the Contents of `sources` say about `library`: the packages (none when no index lists it), or
    `problem` when no index could be read."""

    library: str
    packages: tuple[str, ...] = ()
    where: str = ""  # the index that was read, e.g. "bookworm main Contents-amd64"
    problem: str | None = None


def who_ships(
    libraries: Iterable[str],
    sources: Sequence[AptSource],
    *,
    architecture: str,
    directories: Sequence[str],
    cache: IndexCache | None = None,
) -> dict[str, Shipped]:
    """For each library file name, the packages shipping it in one of `directories` (absolute), from the
    Contents of every source's components; the first source that lists it wins."""
    wanted = sorted(set(libraries))
    cache = cache or IndexCache()
    if not sources:
        return {name: Shipped(library=name, problem="the lock names no Debian mirror") for name in wanted}
    found: dict[str, Shipped] = {}
    problems: list[str] = []
    read: list[str] = []
    for source in sources:
        for component in source.components:
            where = f"{source.suite} {component} Contents-{architecture}"
            try:
                index = _library_index(source, component, architecture, directories, cache)
            except SourceError as error:
                problems.append(f"{where}: {error.message}")
                continue
            if index is None:
                problems.append(f"{redact(source.mirror)} has no {where}")
                continue
            read.append(where)
            for name in wanted:
                if name not in found and index.get(name):
                    found[name] = Shipped(library=name, packages=tuple(index[name]), where=where)
    for name in wanted:
        if name not in found:
            problem = None if read else "; ".join(problems) or "no Contents index"
            found[name] = Shipped(library=name, where=", ".join(read), problem=problem)
    return found


def _library_index(
    source: AptSource, component: str, architecture: str, directories: Sequence[str], cache: IndexCache
) -> dict[str, list[str]] | None:
    dists = f"{source.mirror.rstrip('/')}/dists/{source.suite}"
    release = _release(dists)
    listed = {item["name"]: item for item in release.get("SHA256", [])}
    item = listed.get(f"{component}/Contents-{architecture}.gz")
    if item is None:
        return None
    sha256 = item["sha256"]
    dirs = sorted({d.strip("/") for d in directories})
    key = hashlib.sha256(json.dumps([CONTENTS_FORMAT, sha256, dirs]).encode()).hexdigest()
    derived = cache.root / "contents" / f"{key}.json"
    try:
        index: dict[str, list[str]] = json.loads(derived.read_text(encoding="utf-8"))
        return index
    except (OSError, ValueError):
        pass
    url = f"{dists}/{component}/Contents-{architecture}.gz"
    data = cache.get(sha256)
    if data is None:
        data = _download(f"{dists}/{component}/by-hash/SHA256/{sha256}", url, sha256)
        cache.put(sha256, data, what=redact(url))
    index = _parse(data, set(dirs), what=redact(url))
    write_atomic(derived, json.dumps(index, sort_keys=True).encode(), durable=False)
    return index


def _parse(data: bytes, dirs: set[str], *, what: str) -> dict[str, list[str]]:
    """Contents lines are `path  section/package[,section/package...]`; the header some suites carry has
    no such shape and falls out. Only shared-object names in `dirs` are kept."""
    index: dict[str, list[str]] = {}
    try:
        # Streamed: the index inflates to ~150 MB, of which a few thousand lines are kept.
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as lines:
            for raw in lines:
                if b".so" in raw and len(raw) <= MAX_LINE:
                    _add(index, raw, dirs)
    except (OSError, EOFError) as error:
        raise SourceError(f"cannot read {what}: {error}") from None
    return index


def _add(index: dict[str, list[str]], raw: bytes, dirs: set[str]) -> None:
    path, _, owners = raw.decode("utf-8", "replace").rstrip().rpartition(" ")
    directory, _, name = path.strip().rpartition("/")
    if directory not in dirs or ".so" not in name:
        return
    packages = [owner.rsplit("/", 1)[-1] for owner in owners.split(",") if owner]
    index.setdefault(name, [])
    index[name] += [p for p in packages if p not in index[name]]


def _release(dists: str) -> Release:
    from mlenv.sources.http import download_chunks  # requests is loaded only when something is fetched

    for name in ("InRelease", "Release"):
        try:
            data = _bounded(download_chunks(f"{dists}/{name}"), MAX_RELEASE, f"{dists}/{name}")
        except SourceError:
            continue
        # deb822 skips an OpenPGP clearsign armour around the fields.
        return Release(data.decode("utf-8", "replace").splitlines(keepends=True))
    raise SourceError(f"cannot download {redact(dists)}/InRelease or Release")


def _download(by_hash: str, url: str, sha256: str) -> bytes:
    from mlenv.sources.http import download_chunks

    last: SourceError | None = None
    for candidate in (by_hash, url):
        try:
            data = _bounded(download_chunks(candidate), 1 << 30, candidate)
        except SourceError as error:
            last = error
            continue
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SourceError(f"{redact(candidate)} does not match the sha256 its Release lists")
        return data
    assert last is not None
    raise last


def _bounded(chunks: Iterable[bytes], limit: int, what: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise SourceError(f"{redact(what)} is over {limit >> 20} MiB; refused")
        parts.append(chunk)
    return b"".join(parts)
