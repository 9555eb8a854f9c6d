"""The content-addressed artifact cache never serves a file whose sha256 does not match."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlenv.errors import BuildError
from mlenv.sources.cas import ContentStore

DATA = b"a wheel's bytes\n"
SHA = hashlib.sha256(DATA).hexdigest()


def test_a_download_with_the_wrong_hash_never_enters_the_cache(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    wrong = hashlib.sha256(b"what the lock says").hexdigest()
    expected = rf"pkg-1.0-py3-none-any.whl: sha256 is {SHA}, the lock says {wrong}"
    with pytest.raises(BuildError, match=expected):
        store.put_stream(wrong, [DATA[:5], DATA[5:]], what="pkg-1.0-py3-none-any.whl")
    assert store.get(wrong) is None
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial file left behind


def test_a_tampered_entry_is_dropped_and_fetched_again(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = store.put_stream(SHA, [DATA], what="pkg")
    assert store.get(SHA) == path and path.read_bytes() == DATA
    path.write_bytes(b"tampered\n")
    assert store.get(SHA) is None and not path.exists()
    downloads: list[int] = []

    def download() -> list[bytes]:
        downloads.append(1)
        return [DATA]

    assert store.fetch(SHA, download, what="pkg").read_bytes() == DATA
    assert downloads == [1]
    assert store.fetch(SHA, download, what="pkg").read_bytes() == DATA
    assert downloads == [1]  # a verified hit does not download again
