"""Image transports on synthetic images: OCI layouts and docker save archives, and their errors."""

from __future__ import annotations

import gzip
import json

import pytest

from mlenv.errors import ImageError
from mlenv.observe import inspect_image, observe_image
from mlenv.observe.image.transports import ImageLocation, parse_location

from .layers import docker_archive, image_config, layer_tar, oci_layout, sha

BOTTOM = layer_tar([("dir", "etc"), ("file", "etc/os-release", b"ID=debian\nVERSION_ID=12\n"),
                    ("file", "var/lib/dpkg/status",
                     b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n")])
TOP = layer_tar([("whiteout", "var/lib/dpkg/status"), ("file", "etc/motd", b"hi")])
EMPTY = layer_tar([])


def test_parse_location(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert parse_location("docker://127.0.0.1:5000/x:1") == ImageLocation(transport="docker", target="127.0.0.1:5000/x:1")
    assert parse_location("python:3.11-slim") == ImageLocation(transport="docker-daemon", target="python:3.11-slim")
    assert parse_location("docker-daemon:x:1").target == "x:1"
    assert parse_location(f"oci:{tmp_path}:v1") == ImageLocation(transport="oci", target=str(tmp_path), selector="v1")
    assert parse_location(f"oci:{tmp_path}") == ImageLocation(transport="oci", target=str(tmp_path))
    weird = tmp_path / "a:b"
    weird.mkdir()
    assert parse_location(f"oci:{weird}").target == str(weird)  # an existing path wins over a tag
    assert str(parse_location(f"docker-archive:{tmp_path}/i.tar:x:1")) == f"docker-archive:{tmp_path}/i.tar:x:1"
    with pytest.raises(ImageError):
        parse_location("oci:")


def test_oci_layout_by_tag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    layers = [BOTTOM, TOP]
    layout = oci_layout(tmp_path / "layout", {"v1": (layers, image_config(layers, labels={"l": "1"})),
                                              "v2": ([BOTTOM], image_config([BOTTOM]))})
    observation = inspect_image(f"oci:{layout}:v1")
    assert observation.facts.os_id == "debian" and observation.facts.apt == ()
    assert observation.facts.labels == (("l", "1"),)
    assert observation.fs.read_bytes("/etc/os-release").startswith(b"ID=debian")
    assert [layer.compression for layer in observation.image.layers] == ["gzip", "gzip"]  # type: ignore[union-attr]
    assert [p.name for p in observe_image(f"oci:{layout}:v2").apt] == ["a"]
    with pytest.raises(ImageError, match="no image tagged 'v3'.*v1, v2"):
        observe_image(f"oci:{layout}:v3")
    with pytest.raises(ImageError, match="2 images"):
        observe_image(f"oci:{layout}")


def test_oci_layout_single_untagged_uncompressed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    layout = oci_layout(tmp_path / "l", {None: ([BOTTOM], image_config([BOTTOM]))}, compress=False)
    assert observe_image(f"oci:{layout}").layer_diff_ids == (sha(BOTTOM),)


def test_diff_id_mismatch_is_detected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = image_config([BOTTOM, TOP])
    config["rootfs"]["diff_ids"][1] = sha(b"something else")
    layout = oci_layout(tmp_path / "l", {"t": ([BOTTOM, TOP], config)})
    with pytest.raises(ImageError, match="layer 2 content is sha256:"):
        observe_image(f"oci:{layout}:t")


def test_oci_missing_pieces(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageError, match="no such directory"):
        observe_image(f"oci:{tmp_path}/nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="not an OCI image layout"):
        observe_image(f"oci:{tmp_path}/empty")
    layout = oci_layout(tmp_path / "l", {"t": ([BOTTOM], image_config([BOTTOM]))})
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    (layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]).unlink()
    with pytest.raises(ImageError, match="layer blob sha256:.* is missing"):
        observe_image(f"oci:{layout}:t")


def test_docker_archive_legacy_with_linked_duplicate_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    layers = [BOTTOM, EMPTY, TOP, EMPTY]
    archive = docker_archive(tmp_path / "image.tar", layers, image_config(layers), tags=["demo:1"])
    facts = observe_image(f"docker-archive:{archive}")
    assert facts.layer_diff_ids == tuple(sha(layer) for layer in layers)
    assert facts.os_id == "debian" and facts.apt == ()
    assert observe_image(f"docker-archive:{archive}:demo:1") == facts
    with pytest.raises(ImageError, match="no image 'other:2'"):
        observe_image(f"docker-archive:{archive}:other:2")


def test_docker_archive_gzipped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    archive = docker_archive(tmp_path / "image.tar", [BOTTOM], image_config([BOTTOM]))
    compressed = tmp_path / "image.tar.gz"
    compressed.write_bytes(gzip.compress(archive.read_bytes()))
    assert observe_image(f"docker-archive:{compressed}").os_id == "debian"


def test_docker_archive_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImageError, match="no such file"):
        observe_image(f"docker-archive:{tmp_path}/absent.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ImageError, match="junk.tar: not a tar stream"):
        observe_image(f"docker-archive:{tmp_path}/junk.tar")
    config = image_config([BOTTOM])
    config["rootfs"]["diff_ids"] = [sha(TOP)]
    archive = docker_archive(tmp_path / "bad.tar", [BOTTOM], config)
    with pytest.raises(ImageError, match="layer 1 content"):
        observe_image(f"docker-archive:{archive}")
