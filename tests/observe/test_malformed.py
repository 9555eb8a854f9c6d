"""Crafted images through the CLI: every malformed layer or probed file is one error line (exit 2) that
names the image, the layer and the member (or file), never a traceback or an internal error; a bomb is
refused early, within the memory bound."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.observe.layers import docker_archive, image_config, layer_tar, oci_layout, sha

ROOT = Path(__file__).resolve().parents[2]
MEMORY_BOUND = 256 << 20


def header(
    name: bytes,
    *,
    size: bytes | None = None,
    typeflag: bytes = b"0",
    mode: bytes = b"0000644\x00",
    magic: bytes = b"ustar\x0000",
) -> bytes:
    """One ustar header block with the given raw fields and a correct checksum."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = mode
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = size if size is not None else b"00000000000\x00"
    block[136:148] = b"00000000000\x00"
    block[156:157] = typeflag
    block[257:265] = magic
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def pax_layer(records: bytes, then: bytes = b"") -> bytes:
    data = header(b"././@PaxHeader", size=b"%011o\x00" % len(records), typeflag=b"x")
    data += records + bytes(-len(records) % 512)
    data += then or header(b"etc/hostname")
    return data + bytes(1024)


def run_cli(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """The CLI in a subprocess, and its peak resident memory in bytes (ru_maxrss of the child)."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "mlenv", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )
    *lines, rss = proc.stderr.rstrip("\n").split("\n")
    proc.stderr = "\n".join(lines)
    return proc, int(rss) * 1024


def archive_of(tmp_path: Path, layer: bytes) -> Path:
    return docker_archive(tmp_path / "image.tar", [layer], image_config([layer]))


def assert_one_line(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    text = proc.stderr.strip()
    assert "\n" not in text, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert text.startswith("mlenv: error:"), text
    for name in names:
        assert name in text, (name, text)
    return text


BAD_TARS = {
    "bad-octal": header(b"etc/passwd", size=b"0000000009z\x00") + bytes(1024),
    "negative-size": header(b"etc/passwd", size=b"\xff" * 12) + bytes(1024),
    "bad-mode": header(b"etc/passwd", mode=b"99999999") + bytes(1024),
    "pax-no-length": pax_layer(b"abc path=x\n"),
    "pax-long-length": pax_layer(b"999 path=x\n"),
    "pax-no-equals": pax_layer(b"9 pathx\n\n"),
    "pax-bad-size": pax_layer(b"11 size=-5\n"),
    "pax-huge-header": header(b"././@PaxHeader", size=b"77777777777\x00", typeflag=b"x") + bytes(1024),
    "truncated-data": header(b"etc/passwd", size=b"00000010000\x00") + b"x" * 700,
    "truncated-header": header(b"etc/passwd")[:300],
    "zstd-garbage": b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 2,
    "gzip-truncated": gzip.compress(header(b"etc/passwd", size=b"00000010000\x00") + b"x" * 4096)[:-20],
}


@pytest.mark.parametrize("case", sorted(BAD_TARS))
def test_a_malformed_layer_tar_is_one_line_naming_image_layer_and_member(tmp_path: Path, case: str) -> None:
    archive = archive_of(tmp_path, BAD_TARS[case])
    proc, _ = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    text = assert_one_line(proc, str(archive), "layer.tar")
    # The member is the one whose header is broken: the pax header itself, or the file it describes.
    member = "PaxHeader" if case.startswith("pax-") and case != "pax-bad-size" else "etc/passwd"
    if case in ("zstd-garbage", "gzip-truncated"):  # the stream itself is broken, before or after a member
        assert "corrupt zstd data" in text or "truncated gzip data" in text, text
    elif case != "truncated-header":  # a header cut short has no name yet; its byte offset is told
        assert member in text or (case == "pax-bad-size" and "etc/hostname" in text), text


def _bomb(size: int, name: bytes = b"etc/os-release") -> bytes:
    """A gzip layer whose one file (by default a name the probes keep) inflates to `size` zero bytes
    (a multiple of 64 MiB): concatenated gzip members, as pigz writes, one member made once and repeated."""
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    return gzip.compress(header(name, size=b"%011o\x00" % size), mtime=0) + zeros * (size >> 26)


def test_a_gzip_bomb_is_refused_early_within_the_memory_bound(tmp_path: Path) -> None:
    bomb = _bomb(4 << 30)  # ~4 MiB compressed, 4 GiB of zeros in a file the probes would keep
    archive = docker_archive(tmp_path / "bomb.tar", [bomb], image_config([bomb]))
    proc, rss = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    assert_one_line(proc, str(archive), "layer.tar", "etc/os-release")
    assert rss < MEMORY_BOUND, rss


def test_a_gzip_bomb_in_a_file_not_kept_is_refused_by_its_ratio_not_read_to_the_end(tmp_path: Path) -> None:
    bomb = _bomb(8 << 30, b"usr/share/zeros")  # 8 GiB of zeros, ~8 MiB compressed
    archive = docker_archive(tmp_path / "bomb.tar", [bomb], image_config([bomb]))
    started = time.monotonic()
    proc, rss = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    text = assert_one_line(proc, str(archive), "layer.tar", "usr/share/zeros", "decompression bomb")
    assert time.monotonic() - started < 30, text  # refused after ~1 GiB of output, not 8
    assert rss < MEMORY_BOUND, rss


def test_a_kept_file_over_the_limit_is_refused_not_held(tmp_path: Path) -> None:
    # An uncompressed layer: the ratio check does not apply, the kept-file bound does.
    layer = layer_tar([("file", "usr/lib/python3.11/site-packages/a-1.dist-info/METADATA", bytes(100 << 20))])
    archive = archive_of(tmp_path, layer)
    proc, rss = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    assert_one_line(proc, str(archive), "layer.tar", "a-1.dist-info/METADATA")
    assert rss < MEMORY_BOUND, rss


PROBED = {
    "os-release-long-line": ("etc/os-release", b"ID=" + b"a" * (4 << 20)),
    "record-huge-field": (
        "usr/lib/python3.11/site-packages/a-1.dist-info/RECORD",
        b'"' + b"x" * 300_000 + b'",sha256=zz,1\n',
    ),
    "record-nul": ("usr/lib/python3.11/site-packages/a-1.dist-info/RECORD", b"a\x00b,sha256=,\n"),
    "metadata-huge-header": (
        "usr/lib/python3.11/site-packages/a-1.dist-info/METADATA",
        b"Name: " + b"a" * (3 << 20) + b"\nVersion: 1\n",
    ),
    "cuda-deep-json": ("usr/local/cuda/version.json", b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("case", sorted(PROBED))
def test_a_probed_file_that_cannot_be_parsed_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    path, content = PROBED[case]
    entries = [("file", path, content)]
    if "dist-info/RECORD" in path:
        entries.append(("file", path.replace("RECORD", "METADATA"), b"Name: a\nVersion: 1\n"))
    archive = archive_of(tmp_path, layer_tar(entries))
    proc, _ = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    assert_one_line(proc, str(archive), "/" + path)


GARBAGE = {
    "dpkg-empty": [("file", "var/lib/dpkg/status", b"")],
    "dpkg-garbage": [("file", "var/lib/dpkg/status", bytes(range(256)) * 20)],
    "os-release-non-utf8": [("file", "etc/os-release", b"ID=\xff\xfe\nVERSION_ID=\x80\n")],
    "venv-missing-interpreter": [
        ("file", "opt/venv/pyvenv.cfg", b"home = /nowhere/bin\nversion = 3.11.2\n"),
        ("symlink", "opt/venv/bin/python", "/nowhere/bin/python3.11"),
    ],
    "venv-loop": [
        ("file", "opt/venv/pyvenv.cfg", b"home = /opt/venv/bin\n"),
        ("symlink", "opt/venv/bin/python", "python3"),
        ("symlink", "opt/venv/bin/python3", "python"),
    ],
    "patchlevel-garbage": [
        ("file", "usr/bin/python3.11", b"\x7fELF" + bytes(100)),
        ("file", "usr/include/python3.11/patchlevel.h", b'#define PY_VERSION "\xff\xfe"\n'),
    ],
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_a_probe_reads_is_an_unknown_fact_not_a_crash(tmp_path: Path, case: str) -> None:
    archive = archive_of(tmp_path, layer_tar(GARBAGE[case]))
    proc, _ = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_the_standard_tar_writers_still_read(tmp_path: Path) -> None:
    # The stricter header checks must not refuse GNU long names or pax records that real writers make.
    long = "usr/share/" + "d" * 150 + "/file"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        name = long if fmt != tarfile.USTAR_FORMAT else "usr/share/x/file"
        layer = layer_tar([("file", name, b"x"), ("file", "etc/os-release", b"ID=debian\n")], fmt=fmt)
        archive = archive_of(tmp_path, layer)
        proc, _ = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_an_oci_blob_that_is_a_link_out_of_the_layout_is_refused_unread(tmp_path: Path) -> None:
    layer = layer_tar([("file", "etc/os-release", b"ID=debian\n")])
    layout = oci_layout(tmp_path / "layout", {"v1": ([layer], image_config([layer]))}, compress=False)
    blob = layout / "blobs" / "sha256" / sha(layer).split(":")[1]
    host = tmp_path / "host-secret"
    host.write_bytes(blob.read_bytes())  # the same bytes: only the link, not the content, is wrong
    blob.unlink()
    blob.symlink_to(host)
    proc, _ = run_cli("inspect", f"oci:{layout}", cwd=tmp_path)
    assert_one_line(proc, str(layout), sha(layer), "link out of the layout")


def test_a_config_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    layer = layer_tar([("file", "etc/os-release", b"ID=debian\n")])
    config = image_config([layer])
    deep: list[object] = []
    for _ in range(500):
        deep = [deep]
    config["config"]["Labels"] = {"x": deep}
    archive = docker_archive(tmp_path / "image.tar", [layer], config)
    proc, _ = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    assert_one_line(proc, str(archive), "nests", "levels deep")


def test_json_members_kept_are_bounded_in_total(tmp_path: Path) -> None:
    layer = layer_tar([("file", "etc/os-release", b"ID=debian\n")])
    archive = docker_archive(tmp_path / "image.tar", [layer], image_config([layer]))
    padded = tmp_path / "padded.tar"
    with tarfile.open(archive) as source, tarfile.open(padded, "w") as out:
        for number in range(6):  # 6 x 15 MiB of JSON-looking members before the real ones
            data = b"[" + b" " * (15 << 20) + b"]"
            info = tarfile.TarInfo(f"junk{number}.json")
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        for member in source:
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
    proc, rss = run_cli("inspect", f"docker-archive:{padded}", cwd=tmp_path)
    assert_one_line(proc, str(padded), "junk4.json", "JSON members kept")
    assert rss < MEMORY_BOUND, rss


CONFIGS = {
    "labels-list": ("config", "Labels", [1, 2]),
    "env-string": ("config", "Env", "A=1"),
    "volumes-number": ("config", "Volumes", 3),
    "healthcheck-list": ("config", "Healthcheck", [1]),
    "rootfs-list": ("top", "rootfs", [1]),
    "config-list": ("top", "config", [1]),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_a_config_field_of_the_wrong_type_is_one_line_naming_it(tmp_path: Path, case: str) -> None:
    where, key, value = CONFIGS[case]
    layer = layer_tar([("file", "etc/os-release", b"ID=debian\n")])
    config = image_config([layer])
    (config["config"] if where == "config" else config)[key] = value
    archive = docker_archive(tmp_path / "image.tar", [layer], config)
    proc, _ = run_cli("inspect", f"docker-archive:{archive}", cwd=tmp_path)
    assert_one_line(proc, str(archive), key)
