"""Crafted docker-archive and OCI inputs for the corpus, written into a case's project when it runs.

Binary images are awkward to review in a diff, so each is made here from a name: a case.toml says
`generate = "archive_bad_octal"` and argv names `docker-archive:image.tar` or `oci:oci`.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tests.observe.layers import docker_archive, gz, image_config, layer_tar, oci_layout, sha, write_blob

OS_RELEASE = ("file", "etc/os-release", b'ID=debian\nVERSION_ID="12"\n')
GOOD_LAYER = layer_tar([("dir", "etc"), OS_RELEASE])
Generator = Callable[[Path], None]
GENERATORS: dict[str, Generator] = {}


def generator(function: Generator) -> Generator:
    GENERATORS[function.__name__] = function
    return function


def _archive(project: Path, layers: list[bytes], config: dict | None = None) -> None:
    docker_archive(project / "image.tar", layers, config if config is not None else image_config(layers))


def _tar(members: dict[str, bytes | str]) -> bytes:
    """A tar of regular files (bytes) and symlinks (str targets), in this order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _raw_header(name: bytes, *, size: bytes, typeflag: bytes = b"0", fix_checksum: bool = True) -> bytes:
    """A ustar header with a size field given as raw bytes (a bad octal, base-256 negative, ...)."""
    header = bytearray(512)
    header[0 : len(name)] = name
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = size.ljust(12, b"\0")[:12]
    header[136:148] = b"00000000000\0"
    header[156:157] = typeflag
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    if fix_checksum:
        header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header)


def _saved_with_layer(project: Path, layer: bytes) -> None:
    """A docker-archive whose one layer is `layer` exactly (its diff_id matching, so it is read)."""
    _archive(project, [layer])


# ----------------------------------------------------------------------------- docker-archive


@generator
def archive_not_tar(project: Path) -> None:
    (project / "image.tar").write_bytes(b"this is not a tar archive\n" * 40)


@generator
def archive_empty(project: Path) -> None:
    (project / "image.tar").write_bytes(b"")


@generator
def archive_zero_blocks(project: Path) -> None:
    (project / "image.tar").write_bytes(bytes(10240))


@generator
def archive_truncated(project: Path) -> None:
    _archive(project, [GOOD_LAYER])
    data = (project / "image.tar").read_bytes()
    (project / "image.tar").write_bytes(data[: len(data) // 2])


def _with_manifest(project: Path, manifest: bytes, extra: dict[str, bytes | str] | None = None) -> None:
    (project / "image.tar").write_bytes(_tar({**(extra or {}), "manifest.json": manifest}))


# Archives whose manifest.json alone is wrong: one generator per manifest text.
MANIFESTS: dict[str, bytes] = {
    "archive_manifest_not_json": b"{not json",
    "archive_manifest_dict": b'{"Config": "c.json"}',
    "archive_manifest_strings": b'["c.json"]',
    "archive_manifest_empty_list": b"[]",
    "archive_manifest_no_config": b'[{"Layers": []}]',
    "archive_manifest_config_missing": b'[{"Config": "absent.json", "Layers": []}]',
    "archive_manifest_config_int": b'[{"Config": 5, "Layers": []}]',
    "archive_manifest_deep": b"[" * 100_000 + b"]" * 100_000,
}
for _name, _manifest in MANIFESTS.items():
    GENERATORS[_name] = partial(_with_manifest, manifest=_manifest)


@generator
def archive_manifest_layers_string(project: Path) -> None:
    config = json.dumps(image_config([])).encode()
    _with_manifest(project, b'[{"Config": "c.json", "Layers": "l.tar"}]', {"c.json": config})


@generator
def archive_layer_missing(project: Path) -> None:
    config = json.dumps(image_config([GOOD_LAYER])).encode()
    _with_manifest(project, b'[{"Config": "c.json", "Layers": ["absent/layer.tar"]}]', {"c.json": config})


@generator
def archive_layer_link_to_host(project: Path) -> None:
    config = json.dumps(image_config([GOOD_LAYER])).encode()
    _with_manifest(
        project,
        b'[{"Config": "c.json", "Layers": ["l/layer.tar"]}]',
        {"c.json": config, "l/layer.tar": "/etc/passwd"},
    )


@generator
def archive_layer_link_loop(project: Path) -> None:
    config = json.dumps(image_config([GOOD_LAYER])).encode()
    _with_manifest(
        project,
        b'[{"Config": "c.json", "Layers": ["a/layer.tar"]}]',
        {"c.json": config, "a/layer.tar": "../b/layer.tar", "b/layer.tar": "../a/layer.tar"},
    )


@generator
def archive_config_not_json(project: Path) -> None:
    _with_manifest(project, b'[{"Config": "c.json", "Layers": []}]', {"c.json": b"\xff\xfe garbage"})


@generator
def archive_config_list(project: Path) -> None:
    _with_manifest(project, b'[{"Config": "c.json", "Layers": []}]', {"c.json": b"[1, 2, 3]"})


def _config_variant(project: Path, **changes: object) -> None:
    config = image_config([GOOD_LAYER])
    config.update(changes)
    _archive(project, [GOOD_LAYER], config)


@generator
def archive_config_rootfs_string(project: Path) -> None:
    _config_variant(project, rootfs="layers")


@generator
def archive_config_diff_ids_dict(project: Path) -> None:
    _config_variant(project, rootfs={"type": "layers", "diff_ids": {"a": 1}})


@generator
def archive_config_labels_list(project: Path) -> None:
    _config_variant(project, config={"Labels": ["a=b"], "Env": []})


@generator
def archive_config_env_string(project: Path) -> None:
    _config_variant(project, config={"Env": "PATH=/usr/bin"})


@generator
def archive_config_config_string(project: Path) -> None:
    _config_variant(project, config="none")


@generator
def archive_config_architecture_int(project: Path) -> None:
    _config_variant(project, architecture=64)


@generator
def archive_diff_id_mismatch(project: Path) -> None:
    config = image_config([GOOD_LAYER])
    config["rootfs"]["diff_ids"] = [sha(b"another layer")]
    _archive(project, [GOOD_LAYER], config)


@generator
def archive_diff_id_count(project: Path) -> None:
    config = image_config([GOOD_LAYER, GOOD_LAYER])
    _archive(project, [GOOD_LAYER], config)


@generator
def archive_layer_bad_octal(project: Path) -> None:
    layer = _raw_header(b"etc/os-release", size=b"12x4567\0") + bytes(512) + bytes(1024)
    _saved_with_layer(project, layer)


@generator
def archive_layer_negative_size(project: Path) -> None:
    negative = b"\xff" + b"\xff" * 10 + b"\x00"  # base-256: -256
    layer = _raw_header(b"etc/os-release", size=negative) + bytes(1024)
    _saved_with_layer(project, layer)


@generator
def archive_layer_huge_size(project: Path) -> None:
    huge = b"\x80" + b"\x00" * 3 + b"\x7f" + b"\xff" * 7  # base-256: about 2**63
    layer = _raw_header(b"etc/os-release", size=huge) + bytes(1024)
    _saved_with_layer(project, layer)


@generator
def archive_layer_bad_checksum(project: Path) -> None:
    layer = _raw_header(b"etc/os-release", size=b"00000000004\0", fix_checksum=False) + b"ID=x" + bytes(508)
    _saved_with_layer(project, layer + bytes(1024))


def _pax_layer(record: bytes) -> bytes:
    header = _raw_header(b"PaxHeader/x", size=f"{len(record):011o}".encode() + b"\0", typeflag=b"x")
    body = record + bytes(-len(record) % 512)
    content = b'ID=debian\nVERSION_ID="12"\n'
    member = _raw_header(b"etc/os-release", size=f"{len(content):011o}".encode() + b"\0")
    return header + body + member + content + bytes(-len(content) % 512) + bytes(1024)


@generator
def archive_pax_bad_length(project: Path) -> None:
    _saved_with_layer(project, _pax_layer(b"99999 path=etc/os-release\n"))


@generator
def archive_pax_not_number(project: Path) -> None:
    _saved_with_layer(project, _pax_layer(b"xx path=etc/os-release\n"))


@generator
def archive_pax_no_equals(project: Path) -> None:
    _saved_with_layer(project, _pax_layer(b"12 pathname\n"))


@generator
def archive_pax_bad_size(project: Path) -> None:
    _saved_with_layer(project, _pax_layer(b"15 size=-12345\n"))


@generator
def archive_pax_not_utf8(project: Path) -> None:
    _saved_with_layer(project, _pax_layer(b"13 path=\xff\xfe\n"))


@generator
def archive_os_release_loop(project: Path) -> None:
    _saved_with_layer(
        project,
        layer_tar(
            [
                ("dir", "etc"),
                ("symlink", "etc/os-release", "os-release2"),
                ("symlink", "etc/os-release2", "os-release"),
            ]
        ),
    )


@generator
def archive_os_release_outside(project: Path) -> None:
    _saved_with_layer(
        project, layer_tar([("dir", "etc"), ("symlink", "etc/os-release", "../../../../etc/hostname")])
    )


@generator
def archive_os_release_absolute_host(project: Path) -> None:
    _saved_with_layer(
        project, layer_tar([("dir", "etc"), ("symlink", "etc/os-release", "/proc/self/environ")])
    )


@generator
def archive_os_release_long_line(project: Path) -> None:
    _saved_with_layer(
        project, layer_tar([("dir", "etc"), ("file", "etc/os-release", b"ID=" + b"x" * (4 << 20))])
    )


@generator
def archive_os_release_binary(project: Path) -> None:
    _saved_with_layer(project, layer_tar([("dir", "etc"), ("file", "etc/os-release", os.urandom(4096))]))


@generator
def archive_dpkg_status_garbage(project: Path) -> None:
    status = ("file", "var/lib/dpkg/status", b"\xff\x00garbage\n\n:::\nPackage\n")
    _saved_with_layer(project, layer_tar([("dir", "etc"), OS_RELEASE, status]))


@generator
def archive_dpkg_status_empty(project: Path) -> None:
    status = ("file", "var/lib/dpkg/status", b"")
    _saved_with_layer(project, layer_tar([("dir", "etc"), OS_RELEASE, status]))


@generator
def archive_dpkg_status_long(project: Path) -> None:
    status = ("file", "var/lib/dpkg/status", b"Package: a\nDescription: " + b"y" * (8 << 20) + b"\n")
    _saved_with_layer(project, layer_tar([("dir", "etc"), OS_RELEASE, status]))


@generator
def archive_dpkg_status_dir(project: Path) -> None:
    _saved_with_layer(project, layer_tar([("dir", "etc"), OS_RELEASE, ("dir", "var/lib/dpkg/status")]))


@generator
def archive_traversal_member(project: Path) -> None:
    _saved_with_layer(project, layer_tar([OS_RELEASE, ("file", "../../../../tmp/mlenv-corpus-escape", b"x")]))


@generator
def archive_hardlink_missing(project: Path) -> None:
    _saved_with_layer(project, layer_tar([("dir", "etc"), ("hardlink", "etc/os-release", "etc/absent")]))


@generator
def archive_deep_path(project: Path) -> None:
    deep = "/".join(["d"] * 1500) + "/f"
    _saved_with_layer(project, layer_tar([("dir", "etc"), OS_RELEASE, ("file", deep, b"x")]))


@generator
def archive_python_venv_missing(project: Path) -> None:
    cfg = ("file", "opt/venv/pyvenv.cfg", b"home = /nonexistent/bin\nversion = 3.11.2\n")
    _saved_with_layer(
        project, layer_tar([("dir", "etc"), OS_RELEASE, cfg, ("symlink", "opt/venv/bin/python", "/nope")])
    )


@generator
def archive_metadata_huge_header(project: Path) -> None:
    site = "usr/local/lib/python3.11/site-packages/x-1.dist-info"
    metadata = b"Metadata-Version: 2.1\nName: x\nVersion: 1\nSummary: " + b"s" * (16 << 20) + b"\n"
    _saved_with_layer(
        project, layer_tar([("dir", "etc"), OS_RELEASE, ("file", f"{site}/METADATA", metadata)])
    )


@generator
def archive_metadata_binary(project: Path) -> None:
    site = "usr/local/lib/python3.11/site-packages/x-1.dist-info"
    _saved_with_layer(
        project, layer_tar([("dir", "etc"), OS_RELEASE, ("file", f"{site}/METADATA", os.urandom(2048))])
    )


@generator
def archive_record_huge_field(project: Path) -> None:
    site = "usr/local/lib/python3.11/site-packages/x-1.dist-info"
    metadata = b"Metadata-Version: 2.1\nName: x\nVersion: 1\n"
    record = b"x/__init__.py,sha256=" + b"A" * (8 << 20) + b",12\n"
    entries = [("file", f"{site}/METADATA", metadata), ("file", f"{site}/RECORD", record)]
    _saved_with_layer(project, layer_tar([("dir", "etc"), OS_RELEASE, *entries]))


@generator
def archive_gzip_bomb(project: Path) -> None:
    """A gzip layer of one member of 2 GiB zeros: a few MiB on disk."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    header = _raw_header(b"zeros", size=f"{2 << 30:011o}".encode() + b"\0")
    parts = [
        compressor.compress(layer_tar([("dir", "etc"), OS_RELEASE])[:-1024]),
        compressor.compress(header),
    ]
    block = bytes(1 << 20)
    for _ in range(2048):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(1024)))
    parts.append(compressor.flush())
    # The diff_id is not the bomb's (hashing 2 GiB here would take the time the case measures): the
    # reader must stop at a limit before it gets to compare.
    config = image_config([GOOD_LAYER])
    config["rootfs"]["diff_ids"] = [sha(b"bomb")]
    docker_archive(project / "image.tar", [b"".join(parts)], config)


@generator
def archive_many_entries(project: Path) -> None:
    entries = [("dir", "etc"), OS_RELEASE, ("dir", "m")] + [("file", f"m/{n}", b"") for n in range(60_000)]
    _saved_with_layer(project, layer_tar(entries, fmt=tarfile.USTAR_FORMAT))


@generator
def archive_layer_garbage_gzip(project: Path) -> None:
    _saved_with_layer(project, b"\x1f\x8b\x08\x00" + os.urandom(4000))


# ----------------------------------------------------------------------------- OCI layouts


def _oci(project: Path, layers: list[bytes] | None = None, config: dict | None = None) -> Path:
    layers = [GOOD_LAYER] if layers is None else layers
    return oci_layout(
        project / "oci", {"1": (layers, config if config is not None else image_config(layers))}
    )


def _index(root: Path) -> dict:
    return json.loads((root / "index.json").read_text())


def _manifest_of(root: Path) -> tuple[Path, dict]:
    digest = _index(root)["manifests"][0]["digest"]
    path = root / "blobs" / "sha256" / digest.split(":")[1]
    return path, json.loads(path.read_bytes())


def _rewrite_manifest(root: Path, manifest: dict | bytes) -> None:
    """Point the index at a new manifest blob (written by its digest)."""
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    index = _index(root)
    index["manifests"][0]["digest"] = write_blob(root, raw)
    index["manifests"][0]["size"] = len(raw)
    (root / "index.json").write_text(json.dumps(index))


@generator
def oci_no_index(project: Path) -> None:
    (_oci(project) / "index.json").unlink()


@generator
def oci_index_not_json(project: Path) -> None:
    (_oci(project) / "index.json").write_bytes(b"{\xff")


@generator
def oci_index_list(project: Path) -> None:
    (_oci(project) / "index.json").write_text("[]")


@generator
def oci_index_deep(project: Path) -> None:
    (_oci(project) / "index.json").write_text("[" * 100_000)


@generator
def oci_index_manifests_dict(project: Path) -> None:
    (_oci(project) / "index.json").write_text('{"schemaVersion": 2, "manifests": {"a": 1}}')


@generator
def oci_index_empty(project: Path) -> None:
    (_oci(project) / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')


@generator
def oci_descriptor_no_digest(project: Path) -> None:
    (_oci(project) / "index.json").write_text('{"schemaVersion": 2, "manifests": [{"size": 3}]}')


@generator
def oci_descriptor_traversal(project: Path) -> None:
    root = _oci(project)
    index = _index(root)
    index["manifests"][0]["digest"] = "sha256:../../../../../etc/passwd"
    (root / "index.json").write_text(json.dumps(index))


@generator
def oci_descriptor_sha512(project: Path) -> None:
    root = _oci(project)
    index = _index(root)
    index["manifests"][0]["digest"] = "sha512:" + "a" * 128
    (root / "index.json").write_text(json.dumps(index))


@generator
def oci_manifest_blob_missing(project: Path) -> None:
    path, _ = _manifest_of(_oci(project))
    path.unlink()


@generator
def oci_manifest_not_json(project: Path) -> None:
    _rewrite_manifest(_oci(project), b"\x00 not json")


@generator
def oci_manifest_list(project: Path) -> None:
    _rewrite_manifest(_oci(project), b"[]")


@generator
def oci_manifest_no_config(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    del manifest["config"]
    _rewrite_manifest(root, manifest)


@generator
def oci_manifest_layers_string(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    manifest["layers"] = "all"
    _rewrite_manifest(root, manifest)


@generator
def oci_manifest_layer_traversal(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    manifest["layers"][0]["digest"] = "sha256:../../../../etc/hostname"
    _rewrite_manifest(root, manifest)


@generator
def oci_config_missing(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    (root / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).unlink()


@generator
def oci_config_list(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    manifest["config"]["digest"] = write_blob(root, b"[]")
    _rewrite_manifest(root, manifest)


@generator
def oci_config_rootfs_int(project: Path) -> None:
    config = image_config([GOOD_LAYER])
    config["rootfs"] = 5
    _oci(project, config=config)


@generator
def oci_blob_link_to_host(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    layer = root / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    layer.unlink()
    layer.symlink_to("/etc/hostname")


@generator
def oci_manifest_link_to_host(project: Path) -> None:
    path, _ = _manifest_of(_oci(project))
    path.unlink()
    path.symlink_to("/etc/passwd")


@generator
def oci_blobs_dir_link(project: Path) -> None:
    root = _oci(project)
    sha_dir = root / "blobs" / "sha256"
    os.rename(sha_dir, root / "real-blobs")
    sha_dir.symlink_to("/etc")


@generator
def oci_layer_digest_mismatch(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    layer = root / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    layer.write_bytes(gz(layer_tar([("dir", "etc"), ("file", "etc/os-release", b"ID=other\n")])))


@generator
def oci_layer_garbage_gzip(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    junk = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 8
    manifest["layers"][0]["digest"] = write_blob(root, junk)
    manifest["layers"][0]["size"] = len(junk)
    _rewrite_manifest(root, manifest)


@generator
def oci_layer_unknown_media_type(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    manifest["layers"][0]["mediaType"] = "application/x-rar"
    _rewrite_manifest(root, manifest)


@generator
def oci_layer_zstd_garbage(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    junk = b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 8
    manifest["layers"][0]["digest"] = write_blob(root, junk)
    manifest["layers"][0]["size"] = len(junk)
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    _rewrite_manifest(root, manifest)


@generator
def oci_layer_size_lie(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    manifest["layers"][0]["size"] = 10
    _rewrite_manifest(root, manifest)


@generator
def oci_index_loop(project: Path) -> None:
    """An index whose one entry is an index naming itself (by a digest it cannot have): no recursion."""
    root = _oci(project)
    inner = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    inner_digest = write_blob(root, json.dumps(inner).encode())
    inner["manifests"] = [{"mediaType": inner["mediaType"], "digest": inner_digest, "size": 10}]
    outer = json.dumps(inner).encode()
    index = _index(root)
    index["manifests"][0] = {
        "mediaType": inner["mediaType"],
        "digest": write_blob(root, outer),
        "size": len(outer),
    }
    (root / "index.json").write_text(json.dumps(index))


@generator
def oci_gzip_bomb(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    header = _raw_header(b"zeros", size=f"{2 << 30:011o}".encode() + b"\0")
    parts = [compressor.compress(header)]
    block = bytes(1 << 20)
    for _ in range(2048):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(bytes(1024)))
    parts.append(compressor.flush())
    bomb = b"".join(parts)
    manifest["layers"][0]["digest"] = write_blob(root, bomb)
    manifest["layers"][0]["size"] = len(bomb)
    _rewrite_manifest(root, manifest)


@generator
def oci_not_a_gzip_member(project: Path) -> None:
    root = _oci(project)
    _, manifest = _manifest_of(root)
    data = gzip.compress(b"plain text, not a tar", mtime=0)
    manifest["layers"][0]["digest"] = write_blob(root, data)
    manifest["layers"][0]["size"] = len(data)
    _rewrite_manifest(root, manifest)
