"""Config normalisation: build-run times and ids go, everything that describes the image stays."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from mlenv.build.normalise import normalise_config, normalised_archive
from mlenv.errors import ImageError

CONFIG = {
    "architecture": "amd64",
    "config": {"Env": ["PATH=/usr/bin"], "Labels": {"a": "b"}},
    "container": "0123abcd",
    "container_config": {"Hostname": "0123abcd"},
    "created": "2026-11-24T13:00:00.123456789Z",
    "docker_version": "20.10.24",
    "history": [{"created": "2026-11-24T12:59:00Z", "created_by": "RUN x"}],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": ["sha256:aa"]},
}


def test_times_and_run_ids_are_replaced() -> None:
    data = json.loads(normalise_config(CONFIG, epoch=1719792000))
    assert data["created"] == "2024-07-01T00:00:00Z"
    assert data["history"] == [{"created": "2024-07-01T00:00:00Z", "created_by": "RUN x"}]
    assert "container" not in data and "container_config" not in data and "docker_version" not in data
    assert data["config"] == CONFIG["config"] and data["rootfs"] == CONFIG["rootfs"]


def test_two_builds_at_different_times_normalise_to_the_same_bytes() -> None:
    later = {
        **CONFIG,
        "created": "2030-01-01T00:00:00Z",
        "container": "ffff",
        "history": [{"created": "2030-01-01T00:00:00Z", "created_by": "RUN x"}],
    }
    assert normalise_config(CONFIG, epoch=0) == normalise_config(later, epoch=0)


def saved(members: dict[str, bytes]) -> bytes:
    source = io.BytesIO()
    with tarfile.open(fileobj=source, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return source.getvalue()


def test_archive_rewrite_points_manifest_at_new_config_and_leaves_layers_to_the_engine() -> None:
    layer = saved({"etc/motd": b"hi"})  # a layer tar; its bytes never reach the new archive
    members = {
        "abc.json": json.dumps(CONFIG).encode(),
        "layer1/layer.tar": layer,
        "manifest.json": json.dumps(
            [{"Config": "abc.json", "RepoTags": ["x:1"], "Layers": ["layer1/layer.tar"]}]
        ).encode(),
    }
    data = saved(members)
    chunks = [data[i : i + 300] for i in range(0, len(data), 300)]
    normal = normalised_archive(chunks, where="docker-daemon:x:1", epoch=0, tag="x:normal")
    with tarfile.open(fileobj=io.BytesIO(normal.archive)) as out:
        manifest = json.loads(out.extractfile("manifest.json").read())
        assert manifest[0]["Config"] == normal.image_id.removeprefix("sha256:") + ".json"
        assert manifest[0]["RepoTags"] == ["x:normal"]
        assert manifest[0]["Layers"] == ["layer1/layer.tar"]  # the engine has them; they are not copied
        assert sorted(out.getnames()) == sorted([manifest[0]["Config"], "manifest.json"])
        config = out.extractfile(manifest[0]["Config"]).read()
        assert json.loads(config)["created"] == "1970-01-01T00:00:00Z"
        assert normal.image_id == "sha256:" + hashlib.sha256(config).hexdigest()
    assert layer not in normal.archive


def test_the_config_is_found_wherever_the_engine_puts_it() -> None:
    # OCI-flavoured saves (dockerd 25+) keep the config as blobs/sha256/<hex>, without .json.
    config = json.dumps(CONFIG).encode()
    name = "blobs/sha256/" + hashlib.sha256(config).hexdigest()
    manifest = [{"Config": name, "RepoTags": None, "Layers": ["blobs/sha256/" + "1" * 64]}]
    data = saved(
        {
            "blobs/sha256/" + "1" * 64: saved({"a": b"a"}),
            name: config,
            "manifest.json": json.dumps(manifest).encode(),
        }
    )
    normal = normalised_archive([data], where="docker-daemon:x", epoch=0, tag="x:normal")
    assert normal.image_id == "sha256:" + hashlib.sha256(normalise_config(CONFIG, epoch=0)).hexdigest()


def test_a_save_of_two_images_is_refused() -> None:
    entry = {"Config": "abc.json", "RepoTags": [], "Layers": []}
    data = saved(
        {"abc.json": json.dumps(CONFIG).encode(), "manifest.json": json.dumps([entry, entry]).encode()}
    )
    with pytest.raises(ImageError, match="docker-daemon:x: the archive holds 2 images"):
        normalised_archive([data], where="docker-daemon:x", epoch=0, tag="x:normal")
