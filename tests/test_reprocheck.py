"""The reproducibility comparison without an engine: synthetic layers and `docker save` archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from mlenv.build.normalise import normalise_config
from mlenv.build.reproducible import compare_images, format_text, layer_steps, layers_to_read, second_tag
from mlenv.errors import ImageError
from mlenv.observe.image.layerfiles import ImageRecord, Layer, read_layer, read_saved_image

BASE = {"name": "etc/app.conf", "data": b"port = 1\n", "mtime": 1_719_792_000, "mode": 0o644}


def layer_tar(*files: dict[str, object]) -> bytes:
    """A layer tar of regular files, symlinks (`link`) and directories (`dir`), as given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for spec in files:
            info = tarfile.TarInfo(str(spec["name"]))
            info.mtime = int(spec.get("mtime", 0))  # type: ignore[call-overload]
            info.mode = int(spec.get("mode", 0o644))  # type: ignore[call-overload]
            info.uid = info.gid = int(spec.get("owner", 0))  # type: ignore[call-overload]
            xattrs = dict(spec.get("xattrs", {}))  # type: ignore[call-overload]
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
            if "link" in spec:
                info.type, info.linkname = tarfile.SYMTYPE, str(spec["link"])
                archive.addfile(info)
            elif spec.get("dir"):
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                data = bytes(spec.get("data", b""))  # type: ignore[call-overload]
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def record(name: str, *layers: bytes, steps: tuple[str, ...] = ()) -> ImageRecord:
    history = [{"created_by": s} for s in steps] + [{"created_by": "ENV X=1", "empty_layer": True}]
    config = {"history": history}
    read = [read_layer([blob]) for blob in layers]
    return ImageRecord(
        name=name,
        image_id="sha256:" + name * 8,
        config=config,
        layers=tuple(Layer(diff_id=d, entries=e) for d, e in read),
    )


def test_read_layer_records_metadata_and_the_diff_id() -> None:
    blob = layer_tar(
        {"name": "etc", "dir": True, "mode": 0o755},
        {**BASE, "owner": 7, "xattrs": {"user.k": "v"}},
        {"name": "etc/link", "link": "app.conf"},
    )
    diff_id, entries = read_layer([blob[:1000], blob[1000:]])
    assert diff_id == "sha256:" + hashlib.sha256(blob).hexdigest()
    conf = entries["etc/app.conf"]
    assert (conf.kind, conf.mode, conf.uid, conf.gid, conf.mtime, conf.size) == (
        "file",
        0o644,
        7,
        7,
        1_719_792_000,
        9,
    )
    assert conf.sha256 == hashlib.sha256(b"port = 1\n").hexdigest() and conf.xattrs == (("user.k", "v"),)
    assert entries["etc/link"].kind == "symlink" and entries["etc/link"].link == "app.conf"
    assert entries["etc"].kind == "dir" and entries["etc"].sha256 is None
    # A compressed blob has the diff_id of its uncompressed tar.
    assert read_layer([gzip.compress(blob)])[0] == diff_id


@pytest.mark.parametrize(
    ("change", "field", "a", "b"),
    [
        (
            {"data": b"port = 2\n"},
            "content",
            "sha256:" + hashlib.sha256(b"port = 1\n").hexdigest(),
            "sha256:" + hashlib.sha256(b"port = 2\n").hexdigest(),
        ),
        ({"mtime": 1_795_561_939}, "mtime", "1719792000", "1795561939"),
        ({"mode": 0o600}, "mode", "0644", "0600"),
        ({"owner": 1000}, "owner", "0:0", "1000:1000"),
        ({"xattrs": {"security.capability": "x"}}, "xattrs", "-", "security.capability='x'"),
        ({"link": "elsewhere"}, "link", "-", "elsewhere"),
    ],
)
def test_each_difference_is_named_with_its_file_and_layer(
    change: dict[str, object], field: str, a: str, b: str
) -> None:
    same = layer_tar({"name": "bin", "dir": True})
    steps = ("ADD rootfs", "/bin/sh -c set -eux; write-config")
    left = record("a", same, layer_tar(BASE), steps=steps)
    right = record("b", same, layer_tar({**BASE, **change}), steps=steps)
    report = compare_images(left, right)
    assert not report.identical
    assert [(layer.index, layer.step) for layer in report.layers] == [(2, "RUN set -eux; write-config")]
    (file,) = report.layers[0].files
    assert file.path == "/etc/app.conf"
    assert (field, a, b) in [(f.field, f.a, f.b) for f in file.fields]
    assert "layer 2 of 2 (RUN set -eux; write-config): sha256:" in format_text(report)
    assert "  /etc/app.conf: " in format_text(report) and f"{field} {a} vs {b}" in format_text(report)


def test_files_on_one_side_only_and_extra_layers() -> None:
    left = record("a", layer_tar(BASE), steps=("/bin/sh -c #(nop) COPY dir:abc in / ",))
    right = record(
        "b",
        layer_tar(BASE, {"name": "build-date", "data": b"now"}),
        layer_tar(BASE),
        steps=("/bin/sh -c #(nop) COPY dir:abc in / ", "/bin/sh -c date > /x"),
    )
    report = compare_images(left, right)
    assert report.layers[0].step == "COPY dir:abc in /"
    assert [(f.path, f.fields[0].field, f.fields[0].a, f.fields[0].b) for f in report.layers[0].files] == [
        ("/build-date", "present", "false", "true")
    ]
    assert report.layers[1].index == 2 and report.layers[1].diff_id_a is None and report.layers[1].files == ()
    assert "layer 2 of 2 (RUN date > /x): missing vs sha256:" in format_text(report)


def test_same_files_in_another_order_are_reported_as_a_stream_difference() -> None:
    one, two = {"name": "a", "data": b"1"}, {"name": "b", "data": b"2"}
    report = compare_images(
        record("a", layer_tar(one, two), steps=("s",)), record("b", layer_tar(two, one), steps=("s",))
    )
    assert report.layers[0].files == ()
    assert "same files and metadata; the tar streams differ" in format_text(report)


def test_config_fields_that_differ_are_listed() -> None:
    left = ImageRecord(
        name="a",
        image_id="sha256:1",
        config={"created": "2024", "config": {"Env": ["A=1"]}, "rootfs": {"diff_ids": ["x"]}},
        layers=(),
    )
    right = ImageRecord(
        name="b",
        image_id="sha256:2",
        config={"created": "2026", "config": {"Env": ["A=1"]}, "rootfs": {"diff_ids": ["y"]}},
        layers=(),
    )
    report = compare_images(left, right)
    assert [(f.field, f.a, f.b) for f in report.config] == [("created", '"2024"', '"2026"')]
    assert 'config: created: "2024" vs "2026"' in format_text(report)


def test_identical_images() -> None:
    blob = layer_tar(BASE)
    report = compare_images(record("a", blob), record("a", blob))
    assert report.identical and format_text(report) == f"reproducible: a and a are both {report.image_id_a}\n"


def test_only_layers_that_differ_at_their_index_are_read() -> None:
    assert layers_to_read(["x", "y", "z"], ["x", "q"]) == {"y", "z"}
    assert layers_to_read(["x"], ["x"]) == set()


def test_layer_steps_skip_empty_layers() -> None:
    config = {
        "history": [
            {"created_by": "/bin/sh -c #(nop) ADD file:1 in / "},
            {"empty_layer": True, "created_by": "x"},
            {"created_by": "/bin/sh -c apt-get install"},
            {},
        ]
    }
    assert layer_steps(config) == ["ADD file:1 in /", "RUN apt-get install", "(no history)"]


def saved_archive(layers: list[bytes], config: dict[str, object], *, duplicate_link: bool = False) -> bytes:
    """A legacy `docker save` archive: layer dirs first, config and manifest last, as dockerd writes it."""
    out = io.BytesIO()
    names = []
    with tarfile.open(fileobj=out, mode="w") as archive:
        for number, blob in enumerate(layers):
            name = f"l{number}/layer.tar"
            info = tarfile.TarInfo(name)
            if duplicate_link and number == len(layers) - 1:
                info.type, info.linkname = tarfile.SYMTYPE, "../l0/layer.tar"
                archive.addfile(info)
            else:
                info.size = len(blob)
                archive.addfile(info, io.BytesIO(blob))
            names.append(name)
        for name, data in (
            ("c.json", json.dumps(config).encode()),
            ("manifest.json", json.dumps([{"Config": "c.json", "Layers": names}]).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_saved_archive_reads_only_the_wanted_layers_and_follows_links() -> None:
    first, second = layer_tar(BASE), layer_tar({"name": "x", "data": b"x"})
    wanted = "sha256:" + hashlib.sha256(second).hexdigest()
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in (first, second, first)]
    config = {"history": [], "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    data = saved_archive([first, second, first], config, duplicate_link=True)
    image = read_saved_image("img", [data[i : i + 700] for i in range(0, len(data), 700)], {wanted})
    assert [layer.diff_id for layer in image.layers] == diff_ids
    assert image.layers[0].entries is None and image.layers[2].entries is None
    assert set(image.layers[1].entries or {}) == {"x"}
    # The image ID is the sha256 of the config as saved.
    assert image.image_id == "sha256:" + hashlib.sha256(json.dumps(config).encode()).hexdigest()


def test_saved_layers_must_be_the_configs() -> None:
    first = layer_tar(BASE)
    data = saved_archive([first], {"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    with pytest.raises(ImageError, match="img: layer 1 content is sha256:"):
        read_saved_image("img", [data], set())


def test_an_archive_without_manifest_is_an_image_error() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w"):
        pass
    with pytest.raises(ImageError, match="not a docker save archive"):
        read_saved_image("img", [out.getvalue()], set())


def test_second_tag_keeps_the_repository() -> None:
    assert second_tag("mlenv-test/repro:1") == "mlenv-test/repro:1-repro"
    assert second_tag("127.0.0.1:5000/repro") == "127.0.0.1:5000/repro:latest-repro"


def test_normalised_config_drops_the_intermediate_image_id() -> None:
    # The legacy builder records the last intermediate image (time-stamped itself) in config.Image.
    config = {"config": {"Image": "sha256:" + "7" * 64, "Env": ["A=1"]}, "created": "2026-01-01T00:00:00Z"}
    assert json.loads(normalise_config(config, epoch=0))["config"] == {"Image": "", "Env": ["A=1"]}
