"""Image transports on synthetic images: OCI layouts and docker save archives, and their errors."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator

import pytest

from mlenv.errors import ImageError
from mlenv.observe import inspect_image, observe_image
from mlenv.observe.image import ImageLocation, load_image, parse_location
from mlenv.sources.registry import ImageReference, RegistryClient, ResolvedImage
from mlenv.sources.registry import Layer as RegistryLayer

from .layers import chunked, docker_archive, gz, image_config, layer_tar, oci_layout, sha

BOTTOM = layer_tar(
    [
        ("dir", "etc"),
        ("file", "etc/os-release", b"ID=debian\nVERSION_ID=12\n"),
        (
            "file",
            "var/lib/dpkg/status",
            b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n",
        ),
    ]
)
TOP = layer_tar([("whiteout", "var/lib/dpkg/status"), ("file", "etc/motd", b"hi")])
EMPTY = layer_tar([])


def test_parse_location(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert parse_location("docker://127.0.0.1:5000/x:1") == ImageLocation(
        transport="docker", target="127.0.0.1:5000/x:1"
    )
    assert parse_location("python:3.11-slim") == ImageLocation(
        transport="docker-daemon", target="python:3.11-slim"
    )
    assert parse_location("docker-daemon:x:1").target == "x:1"
    assert parse_location(f"oci:{tmp_path}:v1") == ImageLocation(
        transport="oci", target=str(tmp_path), selector="v1"
    )
    assert parse_location(f"oci:{tmp_path}") == ImageLocation(transport="oci", target=str(tmp_path))
    weird = tmp_path / "a:b"
    weird.mkdir()
    assert parse_location(f"oci:{weird}").target == str(weird)  # an existing path wins over a tag
    archived = f"docker-archive:{tmp_path}/i.tar:x:1"
    assert str(parse_location(archived)) == archived
    with pytest.raises(ImageError):
        parse_location("oci:")


def test_oci_layout_by_tag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    layers = [BOTTOM, TOP]
    layout = oci_layout(
        tmp_path / "layout",
        {"v1": (layers, image_config(layers, labels={"l": "1"})), "v2": ([BOTTOM], image_config([BOTTOM]))},
    )
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
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
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


def test_a_layer_that_starts_like_json_is_still_a_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The reader keeps small members that look like JSON; one the manifest lists as a layer is read as one.
    odd = layer_tar([("file", "{odd}", b"x"), *[("dir", "etc"), ("file", "etc/os-release", b"ID=debian\n")]])
    assert odd.startswith(b"{")
    archive = docker_archive(tmp_path / "image.tar", [odd], image_config([odd]))
    facts = observe_image(f"docker-archive:{archive}")
    assert facts.layer_diff_ids == (sha(odd),) and facts.os_id == "debian"


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


def oci_save(layers: list[bytes], config: dict) -> bytes:
    """An OCI-flavoured `docker save` stream (dockerd 25+ without manifest.json): index.json, blobs."""
    config_bytes = json.dumps(config).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": sha(config_bytes)},
            "layers": [{"digest": sha(layer)} for layer in layers],
        }
    ).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": sha(manifest)}]}).encode()
    members = [(f"blobs/sha256/{sha(blob)[7:]}", blob) for blob in (*layers, config_bytes, manifest)]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in [*members, ("index.json", index)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class SavingEngine:
    """An engine that serves `docker save` from memory, as load_image's `engine` may be."""

    def __init__(self, images: dict[str, bytes]) -> None:
        self.images = images
        self.saved: list[str] = []

    def save_image(self, name: str) -> Iterator[bytes]:
        self.saved.append(name)
        return iter(chunked(self.images[name]))


def test_oci_flavoured_save_through_a_passed_engine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    layers = [BOTTOM, TOP]
    data = oci_save(layers, image_config(layers, labels={"l": "2"}))
    engine = SavingEngine({"demo:2": data})
    image = load_image("docker-daemon:demo:2", engine=engine)
    assert engine.saved == ["demo:2"]
    assert [layer.diff_id for layer in image.layers] == [sha(layer) for layer in layers]
    index = json.loads(tarfile.open(fileobj=io.BytesIO(data)).extractfile("index.json").read())  # type: ignore[union-attr]
    assert image.manifest_digest == index["manifests"][0]["digest"]
    assert observe_image("docker-daemon:demo:2", engine=engine).labels == (("l", "2"),)
    (tmp_path / "oci-save.tar").write_bytes(data)
    assert observe_image(f"docker-archive:{tmp_path}/oci-save.tar").labels == (("l", "2"),)


def test_a_malformed_save_manifest_is_an_image_error() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = json.dumps([{"Layers": []}]).encode()  # no Config
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ImageError, match="docker-daemon:x: not a docker save archive .*malformed"):
        load_image("docker-daemon:x", engine=SavingEngine({"x": out.getvalue()}))


def test_the_layer_list_must_be_complete(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = oci_save([BOTTOM], image_config([BOTTOM]))
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as source, tarfile.open(fileobj=out, mode="w") as target:
        for member in source:
            if member.name != f"blobs/sha256/{sha(BOTTOM)[7:]}":
                target.addfile(member, source.extractfile(member))
    with pytest.raises(ImageError, match="docker-daemon:x: the archive lacks layer blobs/sha256/"):
        load_image("docker-daemon:x", engine=SavingEngine({"x": out.getvalue()}))


class RecordingRegistry:
    """A registry client double: what load_image asks of the client it is given."""

    def __init__(self, layers: list[bytes], config: dict) -> None:
        self.blobs = {sha(gz(layer)): gz(layer) for layer in layers}
        self.config = config
        self.calls: list[str] = []

    def resolve(self, ref: object, platform: str) -> ResolvedImage:
        self.calls.append(f"resolve {ref} {platform}")
        return ResolvedImage(
            digest="sha256:" + "1" * 64,
            manifest_digest="sha256:" + "2" * 64,
            config_digest="sha256:" + "3" * 64,
            config=self.config,
            layers=tuple(RegistryLayer(digest=d, media_type="", size=len(b)) for d, b in self.blobs.items()),
            diff_ids=tuple(self.config["rootfs"]["diff_ids"]),
            platform=platform,
        )

    def blob_chunks(self, ref: object, digest: str) -> Iterator[bytes]:
        self.calls.append(f"blob {digest}")
        return iter(chunked(self.blobs[digest]))


def test_docker_references_read_through_the_client_passed_in() -> None:
    layers = [BOTTOM, TOP]
    client = RecordingRegistry(layers, image_config(layers))
    facts = observe_image("docker://127.0.0.1:9/x/y:1", platform="linux/arm64", registry=client)  # type: ignore[arg-type]
    assert facts.layer_diff_ids == tuple(sha(layer) for layer in layers)
    assert client.calls == ["resolve 127.0.0.1:9/x/y:1 linux/arm64"] + [f"blob {d}" for d in client.blobs]


@pytest.mark.docker
@pytest.mark.registry
def test_a_shared_client_fetches_a_resolved_base_once(base_image_minbase) -> None:  # type: ignore[no-untyped-def]
    # What `mlenv lock` does: resolve the base, then read its facts by manifest digest, with one client.
    client = RegistryClient()
    paths: list[str] = []
    client.session.hooks["response"].append(lambda response, **_: paths.append(response.request.path_url))
    reference = ImageReference.parse(base_image_minbase.ref)
    resolved = client.resolve(reference, "linux/amd64")
    fetched = list(paths)
    pinned = f"docker://{reference.registry}/{reference.repository}@{resolved.manifest_digest}"
    image = load_image(pinned, platform="linux/amd64", registry=client)
    assert image.config_digest == resolved.config_digest
    again = paths[len(fetched) :]
    # The layers only: the manifest and the config came from the first resolve.
    layers = sorted(f"/v2/{reference.repository}/blobs/{layer.digest}" for layer in resolved.layers)
    assert sorted(again) == layers
    assert any("/manifests/" in path for path in fetched)
    assert any(resolved.config_digest in path for path in fetched)
