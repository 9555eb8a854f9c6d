"""The layered filesystem: one pass per layer, whiteouts, opaque dirs, links, hashes, compression."""

from __future__ import annotations

import bz2
import hashlib
import lzma
import tarfile

import pytest

from mlenv.observe.fs.rootfs import DirectoryFS, LayeredFS, NotKeptError, SymlinkLoopError, index_layer
from mlenv.observe.stream.decompress import StreamError

from .layers import chunked, gz, layer_tar, sha

BASE = layer_tar(
    [
        ("dir", "usr"),
        ("dir", "usr/lib"),
        ("dir", "usr/bin"),
        ("dir", "etc"),
        ("symlink", "lib", "usr/lib"),
        ("symlink", "bin", "/usr/bin"),
        ("file", "usr/lib/os-release", b'ID=debian\nVERSION_ID="12"\n'),
        ("symlink", "etc/os-release", "../usr/lib/os-release"),
        ("file", "usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
        ("hardlink", "usr/bin/tool-again", "usr/bin/tool"),
        ("dir", "opt"),
        ("dir", "opt/app"),
        ("file", "opt/app/a", b"a"),
        ("file", "opt/app/b", b"b"),
        ("dir", "var"),
        ("dir", "var/cache"),
        ("file", "var/cache/big", b"x" * 100_000),
    ]
)


def interest(path: str) -> bool:
    return path.endswith("os-release") or path.startswith("/opt/")


def fs_of(*layers: bytes, **kwargs: object) -> LayeredFS:
    return LayeredFS([index_layer(chunked(layer), interest=interest, **kwargs) for layer in layers])


def test_entries_hashes_and_kept_content() -> None:
    fs = fs_of(BASE)
    assert fs.read_text("/usr/lib/os-release").startswith("ID=debian")
    assert fs.sha256("/var/cache/big") == hashlib.sha256(b"x" * 100_000).hexdigest()
    assert fs.size("/var/cache/big") == 100_000
    with pytest.raises(NotKeptError):
        fs.read_bytes("/var/cache/big")  # hashed, not kept
    assert fs.stat("/usr/bin/tool").mode == 0o755
    assert fs.stat("/usr/bin/tool-again").kind == "hardlink"
    assert fs.sha256("/usr/bin/tool-again") == fs.sha256("/usr/bin/tool")
    assert fs.listdir("/") == ["bin", "etc", "lib", "opt", "usr", "var"]
    assert not fs.exists("/nope") and not fs.is_dir("/usr/lib/os-release")


def test_symlinks_resolve_inside_the_image_root() -> None:
    fs = fs_of(BASE)
    assert fs.read_text("/etc/os-release").startswith("ID=debian")  # relative link
    assert fs.realpath("/lib/os-release") == "/usr/lib/os-release"  # merged-usr style dir link
    assert fs.realpath("/bin/tool") == "/usr/bin/tool"  # absolute link: relative to the image root
    assert fs.is_symlink("/lib") and fs.readlink("/bin") == "/usr/bin"
    assert fs.realpath("/usr/../../../etc") == "/etc"  # '..' stops at the root
    assert [f.path for f in fs.iter_files("/lib")] == ["/usr/lib/os-release"]


def test_symlink_loops_are_errors_not_hangs() -> None:
    fs = fs_of(layer_tar([("symlink", "a", "b"), ("symlink", "b", "a")]))
    assert not fs.exists("/a")
    with pytest.raises(SymlinkLoopError):
        fs.realpath("/a")


def test_whiteouts_delete_and_opaque_dirs_hide_lower_content() -> None:
    upper = layer_tar(
        [
            ("whiteout", "var/cache"),
            ("whiteout", "usr/bin/tool"),
            ("opaque", "opt/app"),
            ("dir", "opt/app"),
            ("file", "opt/app/c", b"c"),
        ]
    )
    fs = fs_of(BASE, upper)
    assert not fs.lexists("/var/cache/big") and not fs.lexists("/var/cache") and fs.is_dir("/var")
    assert not fs.exists("/usr/bin/tool")
    assert fs.sha256("/usr/bin/tool-again") == hashlib.sha256(b"#!/bin/sh\necho tool\n").hexdigest()
    assert fs.listdir("/opt/app") == ["c"]


def test_whiteout_applies_only_to_lower_layers() -> None:
    # A layer may delete a lower file and write a new one of the same name.
    upper = layer_tar([("file", "usr/lib/os-release", b"ID=alpine\n"), ("whiteout", "usr/lib/os-release")])
    assert fs_of(BASE, upper).read_text("/usr/lib/os-release") == "ID=alpine\n"


def test_upper_layer_replaces_file_with_directory_and_back() -> None:
    upper = layer_tar([("whiteout", "opt/app"), ("file", "opt/app", b"now a file")])
    fs = fs_of(BASE, upper)
    assert fs.is_file("/opt/app") and fs.read_bytes("/opt/app") == b"now a file"
    top = layer_tar([("dir", "opt/app"), ("file", "opt/app/z", b"z")])
    assert fs_of(BASE, upper, top).listdir("/opt/app") == ["z"]


def test_hardlink_to_a_lower_layer_and_missing_parents() -> None:
    upper = layer_tar([("hardlink", "srv/deep/tool-link", "usr/bin/tool")])
    fs = fs_of(BASE, upper)
    assert fs.is_dir("/srv/deep")
    assert fs.sha256("/srv/deep/tool-link") == fs.sha256("/usr/bin/tool")


def test_gzip_xz_bzip2_and_plain_give_the_same_diff_id() -> None:
    expected = sha(BASE)
    for data in (BASE, gz(BASE), lzma.compress(BASE), bz2.compress(BASE)):
        layer = index_layer(chunked(data, 777))
        assert layer.diff_id == expected
        assert layer.size == len(BASE)
    assert index_layer([gz(BASE)]).compression == "gzip"


def test_zstd_layers_when_the_library_is_there() -> None:
    zstandard = pytest.importorskip("zstandard")
    data = zstandard.ZstdCompressor().compress(BASE)
    layer = index_layer(chunked(data))
    assert layer.diff_id == sha(BASE) and layer.compression == "zstd"


def test_concatenated_gzip_members_are_read_to_the_end() -> None:
    half = len(BASE) // 2
    assert index_layer([gz(BASE[:half]) + gz(BASE[half:])]).diff_id == sha(BASE)


def test_threaded_and_unthreaded_agree() -> None:
    a = index_layer(chunked(gz(BASE)), threaded=True)
    b = index_layer(chunked(gz(BASE)), threaded=False)
    assert a.diff_id == b.diff_id
    assert {p: n.digest for p, n in a.entries.items()} == {p: n.digest for p, n in b.entries.items()}


def test_gnu_and_ustar_formats_and_long_names() -> None:
    long_name = "usr/share/" + "d" * 120 + "/file-with-a-very-long-name-" + "x" * 80
    prefixed = "usr/share/" + "d" * 90 + "/" + "f" * 20  # over 100 bytes: ustar's prefix field
    for fmt, name in (
        (tarfile.GNU_FORMAT, long_name),
        (tarfile.PAX_FORMAT, long_name),
        (tarfile.USTAR_FORMAT, prefixed),
    ):
        fs = fs_of(layer_tar([("file", name, b"long"), ("symlink", "s", "/usr/share")], fmt=fmt))
        assert fs.sha256("/s/" + name[len("usr/share/") :]) == hashlib.sha256(b"long").hexdigest()


def test_corrupt_and_truncated_layers_are_stream_errors() -> None:
    with pytest.raises(StreamError):
        index_layer([gz(BASE)[:-100]])
    with pytest.raises(StreamError):
        index_layer([b"this is not a tar archive at all" * 40])
    with pytest.raises(StreamError):
        index_layer([BASE[:-3000]])  # ends inside a file


def test_directory_fs_matches_the_layered_view(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with tarfile.open(fileobj=__import__("io").BytesIO(BASE)) as tar:
        tar.extractall(tmp_path, filter="tar")
    directory = DirectoryFS(tmp_path)
    layered = fs_of(BASE)
    for path in ("/etc/os-release", "/bin/tool", "/lib/os-release", "/opt/app/a"):
        assert directory.realpath(path) == layered.realpath(path)
        assert directory.sha256(path) == layered.sha256(path)
    assert directory.read_text("/etc/os-release") == layered.read_text("/etc/os-release")
    assert [f.path for f in directory.iter_files("/opt")] == [f.path for f in layered.iter_files("/opt")]
    for tree in (directory, layered):
        assert list(tree.file_paths("/")) == [f.path for f in tree.iter_files("/")]
        assert "/usr/bin/tool" in tree.file_paths("/") and list(tree.file_paths("/nope")) == []
    assert directory.glob("/usr/*/os-release") == layered.glob("/usr/*/os-release") == ["/usr/lib/os-release"]
    # An absolute link never escapes to the host: /bin -> /usr/bin means <root>/usr/bin.
    assert directory.realpath("/bin") == "/usr/bin"


def test_normalize_member_names() -> None:
    from mlenv.observe.fs.rootfs import normalize

    cases = {
        "./usr/lib/": "usr/lib",
        "root/.pyenv/x": "root/.pyenv/x",
        "a//b": "a/b",
        "a/./b": "a/b",
        "a/../b": "b",
        "../x": "x",
        "./": "",
        "/usr/.": "usr",
        ".wh.x": ".wh.x",
        "/": "",
    }
    assert {name: normalize(name) for name in cases} == cases


def test_a_hostile_layer_is_read_inside_the_image_root(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Names that climb out of the root, absolute names, links pointing at host files, and a whiteout
    # of the root itself. The observer never extracts, so the host must be untouched and the view sane.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host file\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    hostile = layer_tar(
        [
            ("file", "../../escaped", b"climbed\n"),
            ("file", "/abs/file", b"absolute\n"),
            ("symlink", "etc/passwd-link", "/etc/passwd"),
            ("symlink", "up", "../../../../" + str(outside).lstrip("/")),
            ("symlink", "host-secret", str(outside / "secret")),
            ("file", ".wh.", b""),  # a whiteout with no name: never a whiteout of the root
        ]
    )
    fs = fs_of(BASE, hostile)
    assert fs.sha256("/escaped") == hashlib.sha256(b"climbed\n").hexdigest()
    assert fs.sha256("/abs/file") == hashlib.sha256(b"absolute\n").hexdigest()
    assert fs.read_text("/etc/os-release").startswith("ID=debian")
    # Links resolve inside the image: the host's /etc/passwd and tmp files are never read.
    assert fs.readlink("/etc/passwd-link") == "/etc/passwd" and not fs.exists("/etc/passwd-link")
    assert not fs.exists("/up/secret") and not fs.exists("/host-secret")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (outside / "secret").read_bytes() == b"host file\n"


def test_an_opaque_root_hides_every_lower_layer_and_nothing_else() -> None:
    # OCI: an opaque marker in a directory hides the lower layers' content of that directory; at the
    # top it is a whiteout of '/', and the correct view is this layer's files alone.
    fs = fs_of(BASE, layer_tar([("file", ".wh..wh..opq", b""), ("file", "etc/os-release", b"ID=other\n")]))
    assert fs.listdir("/") == ["etc"] and fs.read_text("/etc/os-release") == "ID=other\n"
    assert not fs.exists("/usr/bin/tool")


def test_a_hostile_link_in_a_directory_tree_stays_inside(tmp_path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"host file\n")
    (root / "etc" / "os-release").symlink_to("../../secret")  # climbs out of the root on the host
    directory = DirectoryFS(root)
    assert not directory.exists("/etc/os-release")  # '..' stops at the root: /secret is not in it
    (root / "secret").write_bytes(b"image file\n")
    directory = DirectoryFS(root)
    assert directory.realpath("/etc/os-release") == "/secret"
    assert directory.read_bytes("/etc/os-release") == b"image file\n"
