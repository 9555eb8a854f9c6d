"""The docker-save reader takes the engine's stream in any chunking: dockerd's HTTP chunks are 32 KiB,
and they reach the layer reader joined into pieces of at least a MiB, with the same bytes."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterator

from mlenv.observe.fs.rootfs import LayerIndex, index_layer
from mlenv.observe.image.dockersave import COALESCE, _coalesced, read_saved


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _save_archive() -> tuple[bytes, bytes]:
    """A legacy `docker save` archive of one image with one layer (the manifest last, as dockerd writes
    it), and that layer's tar."""
    rng = random.Random(25)
    layer = _tar(
        {
            "opt/big.bin": rng.randbytes(3 * COALESCE + 12345),  # spans many chunks of any size
            "opt/small.txt": b"small\n",
            "etc/os-release": b'ID=debian\nVERSION_ID="12"\n',
        }
    )
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": ["abc/layer.tar"]}]).encode()
    return _tar({"abc/layer.tar": layer, "cfg.json": config, "manifest.json": manifest}), layer


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_any_chunking_reads_the_same_layer_in_large_pieces() -> None:
    archive, layer = _save_archive()
    seen: list[list[int]] = []

    def read(name: str, data: Iterator[memoryview]) -> LayerIndex:
        sizes: list[int] = []

        def counted() -> Iterator[memoryview]:
            for view in data:
                sizes.append(len(view))
                yield view

        seen.append(sizes)
        return index_layer(counted())

    results = []
    for size in (1 << 15, 1000, len(archive)):
        saved = read_saved(_pieces(archive, size), read, where="test")
        (index,) = saved.layers
        results.append(
            (
                index.diff_id,
                index.size,
                {path: (node.size, node.digest) for path, node in index.entries.items()},
            )
        )
    assert results[0] == results[1] == results[2]
    assert results[0][0] == "sha256:" + hashlib.sha256(layer).hexdigest()
    assert results[0][2]["opt/small.txt"] == (6, hashlib.sha256(b"small\n").digest())
    # dockerd's 32 KiB chunks: the layer reader was handed views of joined pieces, not 32 KiB ones
    assert max(seen[0]) >= COALESCE and len(seen[0]) < len(layer) // (1 << 15)


def test_coalesced_keeps_the_bytes_and_passes_large_chunks_through() -> None:
    data = random.Random(13).randbytes(5 * COALESCE + 7)
    small = list(_pieces(data, 1 << 15))
    joined = list(_coalesced(small))
    assert b"".join(joined) == data
    assert all(len(piece) >= COALESCE for piece in joined[:-1])
    big = [data[: 2 * COALESCE], data[2 * COALESCE :]]
    passed = list(_coalesced(big))
    assert passed[0] is big[0] and b"".join(passed) == data
    assert list(_coalesced([])) == []
