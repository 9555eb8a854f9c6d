"""Layers remembered by diff_id and lock sha256 (verify.layermemo): recalled layers give the loader the
index a fresh read gives, are proven by their bytes, and are never served for another lock or diff_id.
On the real engine: a drifted image verified from memory gives the report of a fresh read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlenv.errors import ImageError
from mlenv.lockfile import loads, lock_digest
from mlenv.observe.fs.rootfs import LayerIndex, dump_index, load_index
from mlenv.observe.image import LoadedImage, load_image
from mlenv.observe.image.memory import read_layer
from mlenv.verify.image import verify_image
from mlenv.verify.layermemo import LayerMemo
from tests.helpers import Built, derive_image, lock_tag
from tests.observe.layers import docker_archive, gz, image_config, layer_tar, oci_layout, sha
from tools.localbase.dockerd import Daemon

LOCK_A = "sha256:" + "a" * 64
LOCK_B = "sha256:" + "b" * 64
BOTTOM = layer_tar(
    [
        ("dir", "etc"),
        ("file", "etc/os-release", b"ID=debian\n"),
        ("file", "usr/lib/python3/dist-packages/x.pyc", b"\x00" * 40),
        ("file", "usr/bin/tool", b"#!/bin/sh\n", 0o755),
    ]
)
TOP = layer_tar(
    [("whiteout", "etc/os-release"), ("hardlink", "usr/bin/tool2", "usr/bin/tool"), ("file", "app/a", b"1")]
)
OTHER_TOP = layer_tar([("opaque", "etc"), ("file", "app/a", b"2")])


def facts(index: LayerIndex) -> tuple[object, ...]:
    """Everything a layer's index hands the merge and the accounting."""
    entries = tuple(
        (path, n.kind, n.mode, n.size, n.link, n.uid, n.gid, n.digest, n.content)
        for path, n in index.entries.items()
    )
    return index.diff_id, index.size, index.compression, entries, tuple(index.whiteouts), tuple(index.opaque)


def keep_all(path: str) -> bool:
    return True


def read(reference: str, memo: LayerMemo, lock: str) -> LoadedImage:
    return load_image(reference, interest=keep_all, memory=memo.for_lock(lock))


def test_a_remembered_layer_is_the_index_a_fresh_read_gives(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "a.tar", [BOTTOM, TOP], image_config([BOTTOM, TOP]))
    fresh = load_image(f"docker-archive:{archive}", interest=keep_all)
    memo = LayerMemo(tmp_path / "memo")
    first = read(f"docker-archive:{archive}", memo, LOCK_A)
    assert memo.recalled == []
    memo.remember(LOCK_A, first, lambda path, sha256: True)
    assert memo.remembered == [index.diff_id for index in first.indexes]
    again = read(f"docker-archive:{archive}", memo, LOCK_A)
    assert memo.recalled == [index.diff_id for index in fresh.indexes]
    assert [facts(index) for index in again.indexes] == [facts(index) for index in fresh.indexes]
    assert sorted(f.path for f in again.fs.iter_files()) == sorted(f.path for f in fresh.fs.iter_files())
    assert again.fs.sha256("/usr/bin/tool2") == fresh.fs.sha256("/usr/bin/tool")
    assert not again.fs.exists("/etc/os-release")


def test_another_lock_or_another_diff_id_is_not_served_from_memory(tmp_path: Path) -> None:
    memo = LayerMemo(tmp_path / "memo")
    archive = docker_archive(tmp_path / "a.tar", [BOTTOM, TOP], image_config([BOTTOM, TOP]))
    memo.remember(LOCK_A, read(f"docker-archive:{archive}", memo, LOCK_A), lambda path, sha256: True)
    read(f"docker-archive:{archive}", memo, LOCK_B)
    assert memo.recalled == []
    changed = docker_archive(tmp_path / "b.tar", [BOTTOM, OTHER_TOP], image_config([BOTTOM, OTHER_TOP]))
    image = read(f"docker-archive:{changed}", memo, LOCK_A)
    assert memo.recalled == [image.indexes[0].diff_id]  # the shared bottom layer only
    assert image.indexes[1].opaque == ["etc"] and not image.fs.exists("/etc/os-release")


def test_compressed_blobs_are_known_by_their_bytes(tmp_path: Path) -> None:
    layout = oci_layout(tmp_path / "layout", {"v1": ([BOTTOM, TOP], image_config([BOTTOM, TOP]))})
    memo = LayerMemo(tmp_path / "memo")
    fresh = read(f"oci:{layout}", memo, LOCK_A)
    # The gzip bytes' sha256, which is what the layout names the blob by.
    assert [index.raw_digest for index in fresh.indexes] == [sha(gz(BOTTOM)), sha(gz(TOP))]
    memo.remember(LOCK_A, fresh, lambda path, sha256: True)
    again = read(f"oci:{layout}", memo, LOCK_A)
    assert memo.recalled == [index.diff_id for index in fresh.indexes]
    assert [facts(i) for i in again.indexes] == [facts(i) for i in fresh.indexes]


def test_bytes_that_are_not_the_remembered_ones_are_an_error_never_a_match() -> None:
    class Lying:
        def recall(self, name: str) -> tuple[str, LayerIndex] | None:
            return "sha256:" + "0" * 64, LayerIndex(diff_id="sha256:" + "0" * 64, size=0, compression="none")

    def chunks() -> Iterator[bytes]:
        yield TOP

    with pytest.raises(ImageError, match="not the layer remembered under that name"):
        read_layer("docker-archive:x", "n/layer.tar", chunks(), None, Lying())


def test_content_left_out_only_where_asked(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "a.tar", [BOTTOM], image_config([BOTTOM]))
    index = load_image(f"docker-archive:{archive}", interest=keep_all).indexes[0]
    pyc = "/usr/lib/python3/dist-packages/x.pyc"
    recalled = load_index(dump_index(index, lambda path, sha256: path != pyc))
    assert recalled.entries[pyc[1:]].content is None
    assert recalled.entries[pyc[1:]].digest == index.entries[pyc[1:]].digest
    assert recalled.entries["etc/os-release"].content == b"ID=debian\n"
    with pytest.raises(ValueError):
        load_index(b"\x00" * 7 + b'\x0d{"format": 0}')


# ---------------------------------------------------------------------------- the real engine


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_a_drifted_image_from_memory_gives_the_fresh_report(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    context = tmp_path / "drift"
    context.mkdir()
    (context / "evil.py").write_text("print('hi')\n")
    site = "/opt/venv/lib/python3.11/site-packages"
    tag = derive_image(
        docker_daemon,
        context,
        fraud_image.tag,
        lock_tag("fraud", fraud_image.lock, "memo-drift"),
        [f"COPY evil.py {site}/sklearn/evil.py", "RUN rm /app/app/main.py"],
    )
    data = fraud_image.lock.read_bytes()
    lock = loads(data.decode("utf-8"), path=str(fraud_image.lock))
    digest = lock_digest(data)
    memo = LayerMemo(tmp_path / "memo")

    def verify(memo: LayerMemo, digest: str = digest) -> list[str]:
        report, _ = verify_image(
            lock, f"docker-daemon:{tag}", lock_digest=digest, project_dir=fraud_image.project, memo=memo
        )
        return [repr(drift) for drift in report.drifts]

    fresh = verify(memo)
    assert memo.recalled == [] and memo.remembered, "the first read remembers the layers it parsed"
    assert any("sklearn/evil.py" in line for line in fresh) and any(
        "/app/app/main.py" in line for line in fresh
    )
    remembered = verify(memo)
    diff_ids = docker_daemon.client.images.get(tag).attrs["RootFS"]["Layers"]
    assert sorted(memo.recalled) == sorted(diff_ids)  # every layer served from memory, none parsed
    assert remembered == fresh
    verify(memo, digest="sha256:" + "c" * 64)  # another lock: nothing is served from memory
    assert memo.recalled == []


def test_beyond_its_limit_the_least_recently_used_layers_are_forgotten(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "a.tar", [BOTTOM, TOP], image_config([BOTTOM, TOP]))
    memo = LayerMemo(tmp_path / "memo", limit=0)
    memo.remember(LOCK_A, read(f"docker-archive:{archive}", memo, LOCK_A), lambda path, sha256: True)
    assert memo.remembered and not list((tmp_path / "memo" / "layers").iterdir())
    read(f"docker-archive:{archive}", memo, LOCK_A)
    assert memo.recalled == []
