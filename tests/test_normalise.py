"""Config normalisation: build-run times and ids go, everything that describes the image stays."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from mlenv.build.normalise import normalise_config, rewrite_archive

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
    later = {**CONFIG, "created": "2030-01-01T00:00:00Z", "container": "ffff",
             "history": [{"created": "2030-01-01T00:00:00Z", "created_by": "RUN x"}]}
    assert normalise_config(CONFIG, epoch=0) == normalise_config(later, epoch=0)


def test_archive_rewrite_points_manifest_at_new_config_and_leaves_layers_to_the_engine(tmp_path: Path) -> None:
    source = io.BytesIO()
    members = {
        "abc.json": json.dumps(CONFIG).encode(),
        "layer1/layer.tar": b"layer bytes",
        "manifest.json": json.dumps([{"Config": "abc.json", "RepoTags": ["x:1"], "Layers": ["layer1/layer.tar"]}]).encode(),
    }
    with tarfile.open(fileobj=source, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    source.seek(0)
    image_id = rewrite_archive(source, tmp_path / "out.tar", epoch=0, tag="x:normal")
    with tarfile.open(tmp_path / "out.tar") as out:
        manifest = json.loads(out.extractfile("manifest.json").read())
        assert manifest[0]["Config"] == image_id.removeprefix("sha256:") + ".json"
        assert manifest[0]["RepoTags"] == ["x:normal"]
        assert manifest[0]["Layers"] == ["layer1/layer.tar"]  # the engine has them; they are not copied
        assert sorted(out.getnames()) == sorted([manifest[0]["Config"], "manifest.json"])
        assert json.loads(out.extractfile(manifest[0]["Config"]).read())["created"] == "1970-01-01T00:00:00Z"
