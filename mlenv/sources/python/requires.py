"""Requires-Dist of locked wheels, read once per machine: what the CUDA checks of a lock need of torch & co.

A wheel's Requires-Dist is a fact of its bytes, so it is kept in the user cache by the wheel's sha256
(<cache>/derived/requires-dist/<sha256>.json) and a second lock of the same set reads nothing from the
network. A wheel not in the cache is read from its index's PEP 658 `.metadata` file; where the index
serves none (a 404), from the wheel itself with HTTP range requests: the zip's central directory at its
end and the one `*.dist-info/METADATA` member, a few KB of a wheel that may be gigabytes. An index that
answers a range request with the whole body is read no further: the wheel counts as one without metadata
(None), as before.

Wheels are named as `URL#sha256=HEX` (the PEP 503 fragment); a URL without one is read but not cached.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from mlenv.errors import MlenvError, SourceError
from mlenv.files import write_atomic
from mlenv.model.urls import redact
from mlenv.sources.cas import cache_root

# The HTTP client (~60 ms to import) is loaded on the first wheel the cache lacks: a second lock of the
# same set never loads it here.
if TYPE_CHECKING:
    import requests

    from mlenv.sources.python.wheelmeta import WheelMetadata

DERIVED_VERSION = 1  # bump when what is kept changes: older entries are then read again
BLOCK = 64 * 1024  # bytes fetched per range request: the tail holds a small wheel's whole directory
MAX_METADATA = 4 << 20  # a METADATA member larger than this is no metadata mlenv reads
_SHA256 = re.compile(r"#sha256=([0-9a-f]{64})$")


class _RangeFile(io.RawIOBase):
    """A remote file read by HTTP range requests, in blocks, each block fetched once (zipfile seeks)."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self._session = session
        self._url = url
        self._blocks: dict[int, bytes] = {}
        self._position = 0
        tail = self._get(f"bytes=-{BLOCK}")
        if tail is None:
            raise _NoRanges
        data, total = tail
        self.size = total
        start = total - len(data)
        for offset in range(0, len(data), BLOCK):  # the tail, cut on the block grid it came from
            self._store(start + offset, data[offset : offset + BLOCK])

    def _store(self, start: int, data: bytes) -> None:
        # Kept by absolute offset; reads below look up the block holding each byte.
        self._blocks[start] = data

    def _get(self, byte_range: str) -> tuple[bytes, int] | None:
        import requests

        from mlenv.sources.python.wheelmeta import TIMEOUT

        try:
            response = self._session.get(self._url, headers={"Range": byte_range}, timeout=TIMEOUT)
        except requests.RequestException as error:
            raise SourceError(f"cannot read wheel {redact(self._url)}: {error.__class__.__name__}") from None
        if response.status_code == 200:
            return None  # no range support: the body is the whole wheel, and it is not read
        if response.status_code != 206:
            raise SourceError(f"cannot read wheel {redact(self._url)}: HTTP {response.status_code}")
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if not total.isdigit():
            raise SourceError(f"cannot read wheel {redact(self._url)}: no size in its Content-Range")
        return response.content, int(total)

    def _byte_block(self, offset: int) -> tuple[int, bytes]:
        for start, data in self._blocks.items():
            if start <= offset < start + len(data):
                return start, data
        end = min(offset + BLOCK, self.size) - 1
        fetched = self._get(f"bytes={offset}-{end}")
        if fetched is None:
            raise _NoRanges
        self._store(offset, fetched[0])
        return offset, fetched[0]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self.size - self._position)
        done = 0
        while done < wanted:
            start, data = self._byte_block(self._position)
            piece = data[self._position - start : self._position - start + wanted - done]
            if not piece:
                break
            buffer[done : done + len(piece)] = piece
            done += len(piece)
            self._position += len(piece)
        return done


class _NoRanges(Exception):
    """The server ignored a range request."""


def metadata_from_wheel(session: requests.Session, url: str) -> bytes | None:
    """The wheel's `*.dist-info/METADATA` read by range requests; None when the server does not do ranges
    or the wheel has no such member (then it is no wheel mlenv can read)."""
    try:
        with zipfile.ZipFile(io.BufferedReader(_RangeFile(session, url.split("#", 1)[0]), BLOCK)) as wheel:
            names = [n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1 or wheel.getinfo(names[0]).file_size > MAX_METADATA:
                return None
            return wheel.read(names[0])
    except _NoRanges:
        return None
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        raise SourceError(f"cannot read wheel {redact(url)}: not a zip archive ({error})") from None


class CachedRequires:
    """Requires-Dist by wheel: the cache, else PEP 658 metadata, else the wheel's own METADATA."""

    def __init__(self, session: requests.Session | None = None) -> None:
        self._session = session
        self._metadata: WheelMetadata | None = None
        self.fetched: list[str] = []  # the wheels this instance read from the network, for tests

    def _client(self) -> tuple[requests.Session, WheelMetadata]:
        if self._metadata is None or self._session is None:
            import requests

            from mlenv.sources.python.wheelmeta import WheelMetadata

            self._session = self._session or requests.Session()
            self._metadata = WheelMetadata(self._session)
        return self._session, self._metadata

    def many(self, wheels: Iterable[str]) -> dict[str, tuple[str, ...] | None]:
        names = sorted(set(wheels))
        found = {name: _recall(name) for name in names}
        missing = [name for name, lines in found.items() if lines is None]
        if not missing:
            return found
        from mlenv.sources.python.wheelmeta import WORKERS

        self._client()  # made once, before the threads share it
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for name, lines in zip(missing, pool.map(self._read, missing), strict=True):
                found[name] = lines
                if lines is not None:
                    _remember(name, lines)
        self.fetched += missing
        return found

    def _read(self, name: str) -> tuple[str, ...] | None:
        from mlenv.sources.python.wheelmeta import parse_requires_dist

        session, wheel_metadata = self._client()
        lines = wheel_metadata.requires_dist(name)
        if lines is not None:
            return lines
        metadata = metadata_from_wheel(session, name)
        return parse_requires_dist(metadata) if metadata is not None else None


def _cache_file(name: str) -> Path | None:
    match = _SHA256.search(name)
    return cache_root() / "derived" / "requires-dist" / f"{match[1]}.json" if match else None


def _recall(name: str) -> tuple[str, ...] | None:
    path = _cache_file(name)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != DERIVED_VERSION:
        return None
    lines = data.get("requires-dist")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        return None
    return tuple(lines)


def _remember(name: str, lines: tuple[str, ...]) -> None:
    path = _cache_file(name)
    if path is None:
        return
    data = {"version": DERIVED_VERSION, "requires-dist": list(lines)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, sort_keys=True).encode(), durable=False)
    except (OSError, MlenvError):  # a cache that cannot be written is a cache miss next time
        pass
