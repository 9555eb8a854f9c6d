"""Every shared library a locked wheel's ELF objects need is in the image: the ELF reader on real wheels'
.so files and on malformed ones, the loader's search (RPATH inherited, RUNPATH not), `mlenv build` refusing
the fraud detector locked without libgomp1 before the engine builds anything, and verify reporting an image
whose libgomp.so.1 was removed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlenv.errors import SourceError
from mlenv.lockfile import loads
from mlenv.model.labels import LABEL_LOCK
from mlenv.observe.elf import (
    MAX_DYNAMIC_BYTES,
    MAX_NEEDED,
    Dynamic,
    ElfError,
    dynamic_of_bytes,
    dynamic_of_stream,
)
from mlenv.observe.fs.rootfs import LayeredFS
from mlenv.observe.loader import expand, unmet_needs
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import RegistryClient
from mlenv.verify.native import _Overlay, base_view, installed_path, lock_unmet, wheel_objects
from tests.helpers import Built, derive_image, lock_tag, run_cli
from tests.infra import required
from tools.localbase.cache import cache_dir
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage
from tools.localbase.project import copy_example, train_fraud_model

SITE = "/opt/venv/lib/python3.11/site-packages"
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
# What a Debian base has of glibc, gcc's runtime and zlib: the libraries manylinux wheels may assume.
SYSTEM = (
    "libc.so.6 libm.so.6 libdl.so.2 librt.so.1 libpthread.so.0 ld-linux-x86-64.so.2 libutil.so.1 "
    "libstdc++.so.6 libgcc_s.so.1 libz.so.1"
).split()


# ---------------------------------------------------------------------------- real wheels


def real_wheel(name: str, version: str, tag: str) -> tuple[Path, str]:
    """A wheel from PyPI (its PEP 691 simple index names the file and its sha256), cached by the tests."""
    import requests

    answer = requests.get(
        f"https://pypi.org/simple/{name}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        timeout=60,
    )
    answer.raise_for_status()
    prefix = f"{name}-{version}-"
    chosen = next(
        f for f in answer.json()["files"] if f["filename"].startswith(prefix) and tag in f["filename"]
    )
    sha256 = chosen["hashes"]["sha256"]
    path = cache_dir("wheels") / chosen["filename"]
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        data = requests.get(chosen["url"], timeout=300).content
        assert hashlib.sha256(data).hexdigest() == sha256
        path.write_bytes(data)
    return path, sha256


@pytest.fixture(scope="module")
def lightgbm_wheel() -> tuple[Path, str]:
    return real_wheel("lightgbm", "4.3.0", "manylinux_2_28_x86_64")


@pytest.fixture(scope="module")
def numpy_wheel() -> tuple[Path, str]:
    return real_wheel("numpy", "1.26.4", "cp311-cp311-manylinux_2_17_x86_64")


def objects_of(wheel: tuple[Path, str]) -> dict[str, Dynamic]:
    path, sha256 = wheel
    found = {}
    for item in wheel_objects(sha256, lambda: path):
        where = installed_path(item.member, SITE)
        assert where is not None
        found[where] = item.dynamic
    return found


def system_tree(*extra: str) -> _Overlay:
    tree = _Overlay(LayeredFS())
    for name in (*SYSTEM, *extra):
        tree.add(f"{MULTIARCH}/{name}")
    return tree


@pytest.mark.network
def test_the_lightgbm_wheel_needs_libgomp_and_bundles_nothing(
    lightgbm_wheel: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLENV_CACHE", str(tmp_path / "cache"))
    objects = objects_of(lightgbm_wheel)
    library = objects[f"{SITE}/lightgbm/lib/lib_lightgbm.so"]
    assert "libgomp.so.1" in library.needed and "libc.so.6" in library.needed
    assert library.soname == "lib_lightgbm.so"
    assert library.runpath is None and library.rpath is None
    assert library.bits == 64 and library.machine == 62  # EM_X86_64
    # Read again from the cache (keyed by the wheel's sha256): the wheel is not opened.
    again = wheel_objects(lightgbm_wheel[1], lambda: pytest.fail("the cache was not used"))
    assert {o.member: o.dynamic for o in again}["lightgbm/lib/lib_lightgbm.so"] == library
    [gap] = unmet_needs(objects, system_tree(), architecture="amd64")
    assert (gap.path, gap.library) == (f"{SITE}/lightgbm/lib/lib_lightgbm.so", "libgomp.so.1")
    assert unmet_needs(objects, system_tree("libgomp.so.1"), architecture="amd64") == []


@pytest.mark.network
def test_the_reader_gives_the_same_answer_from_bytes_and_from_a_stream(numpy_wheel: tuple[Path, str]) -> None:
    import zipfile

    with zipfile.ZipFile(numpy_wheel[0]) as archive:
        member = "numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"
        data = archive.read(member)
        with archive.open(member) as handle:
            streamed = dynamic_of_stream(handle, len(data), what=member)
    whole = dynamic_of_bytes(data, what=member)
    assert whole == streamed and whole is not None
    assert whole.rpath == ("$ORIGIN/../../numpy.libs",) and whole.runpath is None
    assert any(n.startswith("libopenblas64_p-r0-") for n in whole.needed)
    # Cut anywhere, a real object is an ElfError or still readable (its dynamic segment lies before the
    # cut), never another exception.
    for cut in (10, 40, 63, 64, 200, 4096, len(data) // 3, len(data) // 2, len(data) - 1):
        try:
            dynamic_of_bytes(data[:cut], what=member)
        except ElfError as error:
            assert member in str(error) and "\n" not in str(error)


@pytest.mark.network
def test_numpy_finds_its_bundled_gfortran_through_the_rpath_its_loader_passes_on(
    numpy_wheel: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy.libs/libopenblas has no RPATH of its own: it needs libgfortran-*.so, found through the DT_RPATH
    of the extension module that loads it ($ORIGIN/../../numpy.libs). A DT_RUNPATH is not passed on."""
    monkeypatch.setenv("MLENV_CACHE", str(tmp_path / "cache"))
    objects = objects_of(numpy_wheel)
    tree = system_tree()
    for path in objects:
        tree.add(path)
    assert unmet_needs(objects, tree, architecture="amd64") == []

    as_runpath = {
        path: dataclasses.replace(d, runpath=d.rpath, rpath=None) if d.rpath else d
        for path, d in objects.items()
    }
    unmet = unmet_needs(as_runpath, tree, architecture="amd64")
    assert unmet, "a RUNPATH must not reach the libraries its object's dependencies need"
    bundled = {p.rsplit("/", 1)[-1] for p in objects if "/numpy.libs/" in p}
    gfortran = next(n for n in _openblas(objects).needed if n.startswith("libgfortran"))
    # openblas (loaded by an extension module) misses libgfortran, and libgfortran, then loaded by nothing
    # that passes a path on, misses libquadmath: each a library bundled in numpy.libs.
    assert {(u.path.rsplit("/", 1)[-1], u.library) for u in unmet} >= {(_openblas_name(objects), gfortran)}
    assert {u.library for u in unmet} <= bundled
    assert all(u.path.startswith(f"{SITE}/numpy.libs/") for u in unmet)


def _openblas(objects: dict[str, Dynamic]) -> Dynamic:
    return objects[f"{SITE}/numpy.libs/{_openblas_name(objects)}"]


def _openblas_name(objects: dict[str, Dynamic]) -> str:
    return next(p for p in objects if "/numpy.libs/libopenblas" in p).rsplit("/", 1)[-1]


def test_origin_lib_and_platform_are_expanded_and_relative_entries_dropped() -> None:
    got = expand(["$ORIGIN/../lib", "${ORIGIN}/x", "/opt/$LIB", "$PLATFORM/rel", "rel"], "/a/b", "amd64")
    assert got == ("/a/lib", "/a/b/x", f"/opt/lib/{MULTIARCH.rsplit('/', 1)[-1]}")


def test_an_ld_so_conf_directory_and_ld_library_path_are_searched() -> None:
    objects = {f"{SITE}/x/_ext.cpython-311-x86_64-linux-gnu.so": Dynamic(needed=("libfoo.so.1",))}
    tree = system_tree()
    tree.add("/opt/vendor/lib/libfoo.so.1")
    assert [u.library for u in unmet_needs(objects, tree, architecture="amd64")] == ["libfoo.so.1"]
    assert unmet_needs(objects, tree, architecture="amd64", library_path=["/opt/vendor/lib"]) == []


# ---------------------------------------------------------------------------- malformed ELFs


def elf(
    *,
    needed: tuple[str, ...] = ("libfoo.so.1",),
    phnum: int | None = None,
    dynamic_offset: int | None = None,
    dynamic_size: int | None = None,
    strtab: int | None = None,
    terminate: bool = True,
    e_type: int = 3,
    extra_entries: int = 0,
) -> bytes:
    """A small 64-bit little-endian shared object: one PT_LOAD over the whole file, one PT_DYNAMIC."""
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in needed)
    if not terminate:
        strings = strings.rstrip(b"\0") + b"x" * 5000
    offsets = [1]
    for name in needed[:-1]:
        offsets.append(offsets[-1] + len(name) + 1)
    string_at = 64 + 2 * 56
    entries = [(1, o) for o in offsets] + [(1, 1)] * extra_entries
    entries += [(5, strtab if strtab is not None else string_at), (10, len(strings)), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in entries)
    dynamic_at = string_at + len(strings)
    total = dynamic_at + len(dynamic)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack(
        "<HHIQQQIHHHHHH", e_type, 62, 1, 0, 64, 0, 0, 64, 56, 2 if phnum is None else phnum, 0, 0, 0
    )
    load = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, total, total, 0x1000)
    dyn = struct.pack(
        "<IIQQQQQQ",
        2,
        6,
        dynamic_at if dynamic_offset is None else dynamic_offset,
        dynamic_at,
        dynamic_at,
        len(dynamic) if dynamic_size is None else dynamic_size,
        len(dynamic),
        8,
    )
    return header + load + dyn + strings + dynamic


def test_a_well_formed_small_elf_is_read() -> None:
    found = dynamic_of_bytes(elf(needed=("libfoo.so.1", "libbar.so.2")), what="x.so")
    assert found == Dynamic(needed=("libfoo.so.1", "libbar.so.2"), machine=62, bits=64)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (elf(phnum=60000), "program headers"),
        (elf(dynamic_offset=1 << 40), "outside"),
        (elf(dynamic_size=MAX_DYNAMIC_BYTES + 16), "dynamic segment of"),
        (elf(strtab=1 << 33), "no loaded segment"),
        (elf(terminate=False), "not terminated"),
        (elf(extra_entries=MAX_NEEDED + 1), "DT_NEEDED"),
        (elf()[:150], "outside"),
        (b"\x7fELF" + bytes([2, 1]) + bytes(10), "cut short"),
        (b"\x7fELF" + bytes([7, 1]) + bytes(60), "unknown class"),
    ],
    ids=[
        "phnum",
        "dynamic-offset",
        "dynamic-size",
        "strtab",
        "unterminated",
        "needed-count",
        "truncated",
        "short-header",
        "class",
    ],
)
def test_a_malformed_elf_is_one_error_line_naming_it(data: bytes, message: str) -> None:
    with pytest.raises(ElfError) as caught:
        dynamic_of_bytes(data, what="pkg/evil.so")
    text = str(caught.value)
    assert text.startswith("pkg/evil.so: ") and message in text and "\n" not in text and len(text) < 300


def test_what_is_not_a_loadable_elf_is_not_read() -> None:
    assert dynamic_of_bytes(b"not an elf at all", what="x.so") is None
    assert dynamic_of_bytes(b"", what="x.so") is None
    assert dynamic_of_bytes(elf(e_type=1), what="x.o") is None  # ET_REL: an object file, never loaded


def test_a_hostile_elf_is_read_in_bounded_reads() -> None:
    """The reader asks for the header, the program headers, the dynamic segment and each string: never the
    whole of a file that says it is huge."""
    data = elf()
    asked: list[int] = []

    def read_at(offset: int, length: int) -> bytes:
        asked.append(length)
        return data[offset : offset + length]

    from mlenv.observe.elf import read_dynamic

    assert read_dynamic(read_at, 1 << 40, what="big.so") is not None
    assert max(asked) <= 4096 and len(asked) <= 5


# ---------------------------------------------------------------------------- the build and verify


def fraud_project(tmp: Path, base: BaseImage, *, apt: list[str]) -> Path:
    project = copy_example("fraud-detector", tmp, base={"image": base.ref}, apt={"packages": apt})
    with required():
        train_fraud_model(project)
    return project


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_build_refuses_the_fraud_detector_locked_without_libgomp1_before_docker_builds(
    base_image_python: BaseImage, docker_daemon: Daemon, tmp_path: Path
) -> None:
    project = fraud_project(tmp_path, base_image_python, apt=["curl"])
    locked = run_cli("lock", str(project))
    assert locked.code == 0, locked.stderr
    lock = loads((project / "mlenv.lock").read_text(encoding="utf-8"))
    assert "libgomp1" not in {p.name for p in lock.apt.packages}
    tag = lock_tag("fraud", project / "mlenv.lock", "no-libgomp")

    # With the engine's socket pointing nowhere, the refusal comes before any attempt to reach it (else the
    # error would be "cannot reach the Docker engine").
    away = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    refused = run_cli("build", str(project), "--tag", tag, env=away)
    built = run_cli("build", str(project), "--tag", tag)

    for result in (refused, built):
        assert result.code == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("mlenv: error:")]
        assert len(lines) == 1, result.stderr
        line = lines[0]
        assert "lightgbm 4.3.0" in line and "lightgbm/lib/lib_lightgbm.so" in line, line
        assert "needs libgomp.so.1" in line and "Debian's libgomp1 ships it" in line, line
        assert "Traceback" not in result.stderr and "Docker engine" not in result.stderr
    # And with the engine there, nothing was built: no image has the tag or the lock's label.
    digest = "sha256:" + hashlib.sha256((project / "mlenv.lock").read_bytes()).hexdigest()
    assert not docker_daemon.client.images.list(name=tag)
    assert not docker_daemon.client.images.list(all=True, filters={"label": f"{LABEL_LOCK}={digest}"})


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_the_fraud_lock_with_libgomp1_passes_and_a_second_check_reads_no_layer(
    fraud_image: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The good fraud image was built through the check; here it runs twice in-process, the second time with
    the registry unreachable: the base's layers come from what the first remembered by diff_id."""
    lock = loads(fraud_image.lock.read_text(encoding="utf-8"))
    store = ContentStore()  # the wheels and .debs the build fetched; what is derived from them starts empty
    monkeypatch.setenv("MLENV_CACHE", str(tmp_path / "cache"))
    first = base_view(lock, "linux/amd64", store=store, registry=RegistryClient())
    assert first.files.is_file("/etc/os-release") and first.files.is_file(f"{MULTIARCH}/libc.so.6")
    assert lock_unmet(lock, "linux/amd64", store=store, base=first) == []

    class NoRegistry(RegistryClient):
        def blob_chunks(self, *args: object, **kwargs: object) -> Iterator[bytes]:
            raise AssertionError("a base layer was read again")

    again = base_view(lock, "linux/amd64", store=store, registry=NoRegistry())
    assert lock_unmet(lock, "linux/amd64", store=store, base=again) == []


@pytest.mark.docker
@pytest.mark.registry
@pytest.mark.network
def test_verify_reports_an_image_whose_libgomp_was_removed(
    fraud_image: Built, docker_daemon: Daemon, tmp_path: Path
) -> None:
    good = run_cli("verify", f"docker-daemon:{fraud_image.tag}", "--lock", str(fraud_image.lock))
    assert good.code == 0, good.stdout + good.stderr
    assert "missing-library" not in good.stdout

    context = tmp_path / "context"
    context.mkdir()
    tag = lock_tag("fraud", fraud_image.lock, "no-libgomp")
    derive_image(docker_daemon, context, fraud_image.tag, tag, [f"RUN rm {MULTIARCH}/libgomp.so.1*"])
    result = run_cli("verify", f"docker-daemon:{tag}", "--lock", str(fraud_image.lock), "--format", "json")
    assert result.code == 1, result.stderr
    findings = [f for f in json.loads(result.stdout)["findings"] if f["rule"] == "missing-library"]
    detail = "needs libgomp.so.1, which the loader finds nowhere in the image"
    subject = f"{SITE}/lightgbm/lib/lib_lightgbm.so"
    assert findings == [
        {
            "rule": "missing-library",
            "subject": subject,
            "detail": detail,
            "message": f"missing-library: {subject}: {detail}",
        }
    ], findings
    text = run_cli("verify", f"docker-daemon:{tag}", "--lock", str(fraud_image.lock))
    assert f"missing-library: {SITE}/lightgbm/lib/lib_lightgbm.so: needs libgomp.so.1" in text.stdout


def test_the_contents_index_keeps_shared_objects_in_the_loaders_directories_only() -> None:
    import gzip

    from mlenv.sources.debian.contents import _parse

    text = (
        "usr/lib/x86_64-linux-gnu/libgomp.so.1                   libs/libgomp1\n"
        "usr/lib32/libgomp.so.1                                  libs/lib32gomp1\n"
        "usr/lib/x86_64-linux-gnu/libfoo.so.2   libs/libfoo2,oldlibs/libfoo2-compat\n"
        "usr/share/doc/libgomp1/changelog.Debian.gz              doc/libgomp1\n"
        "usr/lib/x86_64-linux-gnu/libbroken.so.1\n"
    )
    index = _parse(gzip.compress(text.encode()), {"usr/lib/x86_64-linux-gnu"}, what="Contents-amd64.gz")
    assert index == {"libgomp.so.1": ["libgomp1"], "libfoo.so.2": ["libfoo2", "libfoo2-compat"]}
    with pytest.raises(SourceError) as caught:
        _parse(b"not gzip", {"usr/lib"}, what="Contents-amd64.gz")
    assert "Contents-amd64.gz" in str(caught.value)


def test_wheel_members_land_in_site_packages_or_nowhere() -> None:
    assert installed_path("lightgbm/lib/lib_lightgbm.so", SITE) == f"{SITE}/lightgbm/lib/lib_lightgbm.so"
    assert installed_path("x-1.0.data/platlib/x/_y.so", SITE) == f"{SITE}/x/_y.so"
    assert installed_path("x-1.0.data/scripts/tool.so", SITE) is None
    assert installed_path("../../../usr/lib/evil.so", SITE) is None
