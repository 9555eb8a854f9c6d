"""Requires-Dist of wheels (mlenv.sources.python.requires): read by range requests where the index serves
no PEP 658 file, kept by the wheel's sha256, so a second lock of the same wheels asks the index nothing.

A real HTTP server on 127.0.0.1 serves real wheels (zip archives made here) with or without range
support; every request it answers is recorded."""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlenv.sources.python.requires import CachedRequires

REQUIRES = ("numpy>=1.26", 'nvidia-cudnn-cu12==9.1.0.70; platform_system == "Linux"', "filelock")


def make_wheel(name: str, padding: int) -> bytes:
    """A wheel whose METADATA sits before `padding` bytes of other members (so it is not in the tail)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(
            f"Requires-Dist: {line}\n" for line in REQUIRES
        )
        wheel.writestr(f"{name}-1.0.dist-info/METADATA", metadata)
        for index in range(padding // 100_000):
            # random-looking bytes that deflate cannot shrink: the archive really is `padding` long
            blob = hashlib.sha256(str(index).encode()).digest() * 3125
            wheel.writestr(f"{name}/data{index}.bin", blob, compress_type=zipfile.ZIP_STORED)
        wheel.writestr(f"{name}-1.0.dist-info/RECORD", "")
    return out.getvalue()


class Index:
    def __init__(self, files: dict[str, bytes], ranges: bool) -> None:
        self.files = files
        self.ranges = ranges
        self.requests: list[tuple[str, str | None]] = []
        self.sent = 0  # body bytes answered


@pytest.fixture
def index() -> Iterator[tuple[Index, str]]:
    state = Index({}, ranges=True)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("Range")))
            body = state.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            wanted = self.headers.get("Range")
            if state.ranges and wanted:
                first, last = _byte_range(wanted, len(body))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
                body = body[first : last + 1]
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            state.sent += len(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _byte_range(header: str, size: int) -> tuple[int, int]:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header)
    assert match, header
    if not match[1]:
        return max(0, size - int(match[2])), size - 1
    return int(match[1]), min(int(match[2]) if match[2] else size - 1, size - 1)


def named(base: str, path: str, body: bytes) -> str:
    return f"{base}{path}#sha256={hashlib.sha256(body).hexdigest()}"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLENV_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_wheel_without_pep658_metadata_is_read_by_ranges_then_from_the_cache(
    index: tuple[Index, str], cache: Path
) -> None:
    state, base = index
    big = make_wheel("bigpkg", padding=1_000_000)  # ~1 MB: METADATA is far from the tail
    small = make_wheel("smallpkg", padding=0)
    state.files = {"/bigpkg-1.0-py3-none-any.whl": big, "/smallpkg-1.0-py3-none-any.whl": small}
    wheels = [named(base, path, body) for path, body in sorted(state.files.items())]

    first = CachedRequires().many(wheels)
    assert first == dict.fromkeys(wheels, REQUIRES)
    fetched = [r for r in state.requests if r[1] is not None]
    assert all(r[1].startswith("bytes=") for r in fetched)  # never the whole wheel
    assert len(fetched) <= 3 * len(wheels)  # the tail, maybe the directory, the member
    assert len(big) > 1_000_000 and state.sent < 4 * 64 * 1024  # a few blocks, not the wheels
    assert sorted(p.name for p in (cache / "derived" / "requires-dist").iterdir()) == sorted(
        f"{hashlib.sha256(body).hexdigest()}.json" for body in state.files.values()
    )

    state.requests.clear()
    again = CachedRequires()
    assert again.many(wheels) == first
    assert state.requests == [] and again.fetched == []


def test_pep658_metadata_is_read_when_served(index: tuple[Index, str]) -> None:
    state, base = index
    body = make_wheel("served", padding=0)
    state.files = {
        "/served-1.0-py3-none-any.whl": body,
        "/served-1.0-py3-none-any.whl.metadata": b"Name: served\nRequires-Dist: torch==2.3.1\n",
    }
    wheel = named(base, "/served-1.0-py3-none-any.whl", body)
    assert CachedRequires().many([wheel]) == {wheel: ("torch==2.3.1",)}
    assert [path for path, _ in state.requests] == ["/served-1.0-py3-none-any.whl.metadata"]


def test_a_server_without_ranges_is_no_metadata_and_nothing_is_kept(
    index: tuple[Index, str], cache: Path
) -> None:
    state, base = index
    state.ranges = False
    body = make_wheel("plain", padding=0)
    state.files = {"/plain-1.0-py3-none-any.whl": body}
    wheel = named(base, "/plain-1.0-py3-none-any.whl", body)
    assert CachedRequires().many([wheel]) == {wheel: None}
    assert not (cache / "derived" / "requires-dist").exists()
    # a URL without the hash fragment is read, never kept
    state.ranges = True
    unnamed = f"{base}/plain-1.0-py3-none-any.whl"
    assert CachedRequires().many([unnamed]) == {unnamed: REQUIRES}
    assert not (cache / "derived" / "requires-dist").exists()
