"""apt locking against Ubuntu's archive layout and NVIDIA's flat CUDA repository (served locally, real
.debs, test keys), from a base whose dpkg status is the python test base's and whose sources and keyrings
are Ubuntu 22.04's (one-line sources.list, trusted.gpg.d) or 24.04's (deb822 ubuntu.sources, Signed-By)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from mlenv.errors import SourceError
from mlenv.lockfile import dump_bytes, loads
from mlenv.model.debian import deb_urls
from mlenv.model.lock import LockedApt
from mlenv.model.spec import AptSpec
from mlenv.resolve.apt import AptResolution, lock_apt, read_base_state
from mlenv.resolve.apt.state import AptBaseState
from mlenv.sources.debian.archive import DebianArchive, IndexCache
from tests.lockdata import full_lock
from tools.localbase.ubuntu import (
    CUDA_KEYRING,
    CUDA_REPO,
    JAMMY_SOURCES_LIST,
    NOBLE_SOURCES,
    UBUNTU_KEYRING,
    UBUNTU_TRUSTED,
    cuda_list,
)

from .ubuntu_archive import UbuntuServed, ubuntu_served_fixture  # noqa: F401  (the fixture)

pytestmark = pytest.mark.network


def ubuntu_state(
    rootfs: Path, served: UbuntuServed, *, files: dict[str, bytes], cuda_repo: str = CUDA_REPO
) -> AptBaseState:
    """The apt state of the python base's tree with its sources and keyrings replaced by `files`."""
    cuda = {
        "/etc/apt/sources.list.d/cuda-ubuntu2204-x86_64.list": cuda_list(served.cuda_uri(cuda_repo)).encode(),
        CUDA_KEYRING: served.cuda_key.binary,
    }
    replaced = {**files, **cuda}

    def read(path: str) -> bytes | None:
        if path in replaced:
            return replaced[path]
        if path.startswith(("/etc/apt/", "/usr/share/keyrings/")):
            return None  # Debian's sources and keyrings are gone
        target = rootfs / path.lstrip("/")
        return target.read_bytes() if target.is_file() else None

    def listdir(path: str) -> list[str]:
        return sorted({p.rsplit("/", 1)[1] for p in replaced if p.rsplit("/", 1)[0] == path})

    return read_base_state(read, listdir)


JAMMY = {"/etc/apt/sources.list": JAMMY_SOURCES_LIST.encode()}


def resolve(state: AptBaseState, served: UbuntuServed, tmp_path: Path, *packages: str) -> AptResolution:
    archive = DebianArchive(mirror=served.mirror, cache=IndexCache(tmp_path / "cache"), snapshot_root="")
    return lock_apt(AptSpec(packages=packages, mirror=served.mirror), state, archive=archive)


@pytest.fixture
def jammy_state(base_rootfs_python: Path, ubuntu_served: UbuntuServed) -> AptBaseState:
    files = {**JAMMY, UBUNTU_TRUSTED: ubuntu_served.archive_key.binary}
    return ubuntu_state(base_rootfs_python, ubuntu_served, files=files)


def test_jammy_pockets_and_nvidia_repository_are_locked(
    jammy_state: AptBaseState,
    ubuntu_served: UbuntuServed,
    tmp_path: Path,
) -> None:
    resolution = resolve(jammy_state, ubuntu_served, tmp_path, "hello", "libgomp1", "tree", "figlet")
    sources = {(s.suite, s.mirror): s for s in resolution.sources}
    mirror, cuda_uri = ubuntu_served.mirror, ubuntu_served.cuda_uri()
    # archive.ubuntu.com and security.ubuntu.com both move to the mirror, keeping the archive name.
    assert sorted(sources) == [
        ("/", cuda_uri),
        ("jammy", mirror),
        ("jammy-security", mirror),
        ("jammy-updates", mirror),
    ]
    for pocket in ("jammy", "jammy-updates", "jammy-security"):
        source = sources[(pocket, mirror)]
        assert source.components == ("main", "restricted", "universe", "multiverse")
        # Verified with the key in trusted.gpg.d (22.04's sources.list names no Signed-By).
        assert source.signed_by == UBUNTU_TRUSTED
        assert not source.no_snapshot and source.resolved_from == "mirror"
        assert source.snapshot == f"https://snapshot.ubuntu.com/ubuntu/{source.snapshot_timestamp}/"
    cuda = sources[("/", cuda_uri)]
    assert cuda.components == () and cuda.signed_by == CUDA_KEYRING
    assert cuda.no_snapshot and cuda.snapshot is None and cuda.resolved_from is None

    pins = {p.name: p for p in resolution.pins}
    assert set(pins) == {"hello", "libgomp1", "tree", "figlet"}
    assert pins["hello"].filename.startswith("pool/main/h/hello/")
    assert pins["tree"].filename.startswith("pool/universe/t/tree/")
    figlet = pins["figlet"]
    deb = ubuntu_served.debs["figlet"]
    assert figlet.filename == deb.path.name  # NVIDIA's `./name.deb`, below the repository URI
    assert figlet.url == f"{cuda_uri}/{deb.path.name}"
    assert all(p.url is None for p in resolution.pins if p.name != "figlet")
    # Each pin is fetched by hash from where deb_urls says: the bytes are the real .deb's.
    for pin in resolution.pins:
        urls = deb_urls(resolution.sources, pin)
        data = requests.get(urls[0], timeout=30).content
        assert (
            hashlib.sha256(data).hexdigest()
            == pin.sha256
            == hashlib.sha256(ubuntu_served.debs[pin.name].path.read_bytes()).hexdigest()
        )
    assert deb_urls(resolution.sources, figlet) == (figlet.url,)


def test_the_lock_records_the_flat_source_and_pin_urls_and_reads_them_back(
    jammy_state: AptBaseState,
    ubuntu_served: UbuntuServed,
    tmp_path: Path,
) -> None:
    resolution = resolve(jammy_state, ubuntu_served, tmp_path, "hello", "figlet")
    lock = replace(full_lock(), apt=LockedApt(sources=resolution.sources, packages=resolution.pins))
    text = dump_bytes(lock).decode()
    assert 'suite = "/"' in text and "no-snapshot = true" in text
    assert f'url = "{ubuntu_served.cuda_uri()}/{ubuntu_served.debs["figlet"].path.name}"' in text
    again = loads(text)
    assert again.apt == lock.apt


def test_noble_deb822_sources_with_signed_by(
    base_rootfs_python: Path,
    ubuntu_served: UbuntuServed,
    tmp_path: Path,
) -> None:
    # 24.04's ubuntu.sources form, pointed at the jammy pockets the test archive holds.
    text = NOBLE_SOURCES.replace("noble-backports", "").replace("noble", "jammy")
    files = {
        "/etc/apt/sources.list.d/ubuntu.sources": text.encode(),
        UBUNTU_KEYRING: ubuntu_served.archive_key.armored,
    }
    state = ubuntu_state(base_rootfs_python, ubuntu_served, files=files)
    resolution = resolve(state, ubuntu_served, tmp_path, "hello", "tree")
    ubuntu = [s for s in resolution.sources if not s.no_snapshot]
    assert sorted(s.suite for s in ubuntu) == ["jammy", "jammy-security", "jammy-updates"]
    assert {s.signed_by for s in ubuntu} == {UBUNTU_KEYRING}
    assert {p.name for p in resolution.pins} == {"hello", "tree"}


def test_a_flat_repository_signed_by_another_key_is_refused(
    base_rootfs_python: Path,
    ubuntu_served: UbuntuServed,
    tmp_path: Path,
) -> None:
    # Signed by the Ubuntu archive's key, which the image trusts, but the cuda source's Signed-By names
    # only NVIDIA's keyring: apt refuses it, and so does the lock.
    files = {**JAMMY, UBUNTU_TRUSTED: ubuntu_served.archive_key.binary}
    state = ubuntu_state(base_rootfs_python, ubuntu_served, files=files, cuda_repo=f"forged/{CUDA_REPO}")
    with pytest.raises(SourceError, match=rf"not signed by a key in {CUDA_KEYRING}"):
        resolve(state, ubuntu_served, tmp_path, "figlet")


def test_at_an_as_of_the_flat_repository_says_it_has_no_snapshots(
    jammy_state: AptBaseState, ubuntu_served: UbuntuServed, tmp_path: Path
) -> None:
    archive = DebianArchive(
        mirror=ubuntu_served.mirror, cache=IndexCache(tmp_path / "cache"), snapshot_root=""
    )
    as_of = datetime(2024, 10, 2, tzinfo=UTC)
    spec = AptSpec(packages=("hello", "figlet"), mirror=ubuntu_served.mirror)
    resolution = lock_apt(spec, jammy_state, archive=archive, as_of=as_of)
    flat = [n for n in resolution.notes if "has no snapshot service" in n]
    assert flat == [
        f"{ubuntu_served.cuda_uri()} has no snapshot service: its pins are as it is now (its Release is "
        f"dated 2024-10-01T00:00:00+00:00), not as of 2024-10-02T00:00:00+00:00"
    ]
    # Ubuntu's pockets have a snapshot service, though none is configured here: they say nothing of it.
    assert not [n for n in resolution.notes if "/ubuntu/dists/" in n and "snapshot service" in n]
    assert {p.name: p.url is not None for p in resolution.pins} == {"hello": False, "figlet": True}
