"""Debian archive access against a real local HTTP server holding a small archive signed with a key
made for the test run: signatures (gpgv), index hashes, .xz/.gz fallback, the cache, mirrors.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlenv.errors import SourceError
from mlenv.model.debian import Keyring, SourceEntry
from mlenv.sources.debian.archive import DebianArchive, IndexCache
from mlenv.sources.debian.release import (
    apply_mirror,
    dearmor,
    is_distribution_archive,
    snapshot_root,
    snapshot_timestamp,
    snapshot_url,
)
from tests.conftest import missing
from tools.localbase.signing import Key, agents_gone, gpg, make_key

PACKAGES = """\
Package: hello
Version: 2.10-3
Architecture: amd64
Priority: optional
Depends: libc6 (>= 2.34)
Description: the classic greeting
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 53128
SHA256: 0b3a1cdeb3ba3c3b3e1a3a6e1b8b7ca1d3f0a7c2b1a1c1e0f3d2c1b0a9f8e7d6

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Multi-Arch: foreign
Filename: pool/main/t/tzdata/tzdata_2024a-0+deb12u1_all.deb
Size: 255000
SHA256: 1c3a1cdeb3ba3c3b3e1a3a6e1b8b7ca1d3f0a7c2b1a1c1e0f3d2c1b0a9f8e7d6
"""
DATE = "Sat, 01 Jun 2024 10:00:00 UTC"


# --------------------------------------------------------------------------- a signed archive, served


@dataclass
class Archive:
    url: str
    root: Path
    good: Key
    other: Key
    requests: list[str]


def _release(suite: str, files: dict[str, bytes], *, codename: str | None = None) -> str:
    names = (
        f"Suite: {suite}\nCodename: {suite}" if codename is None else f"Suite: testing\nCodename: {codename}"
    )
    lines = [
        "Origin: Debian",
        names,
        f"Date: {DATE}",
        "Architectures: amd64",
        "Components: main",
        "Acquire-By-Hash: yes",
        "SHA256:",
    ]
    lines += [f" {hashlib.sha256(d).hexdigest()} {len(d)} {name}" for name, d in sorted(files.items())]
    return "\n".join(lines) + "\n"


def _write_suite(
    root: Path,
    home: Path,
    suite: str,
    files: dict[str, bytes],
    *,
    detached: bool = False,
    release_files: dict[str, bytes] | None = None,
    codename: str | None = None,
) -> None:
    dists = root / "debian" / "dists" / suite
    for name, data in files.items():
        path = dists / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        by_hash = path.parent / "by-hash" / "SHA256" / hashlib.sha256(data).hexdigest()
        by_hash.parent.mkdir(parents=True, exist_ok=True)
        by_hash.write_bytes(data)
    release = _release(suite, release_files or files, codename=codename).encode()
    if detached:
        (dists / "Release").write_bytes(release)
        (dists / "Release.gpg").write_bytes(gpg(home, "--detach-sign", "--armor", data=release))
    else:
        (dists / "InRelease").write_bytes(gpg(home, "--clearsign", data=release))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        missing("gpg", "gpg and gpgv are needed to sign and verify the test archive")
    base = tmp_path_factory.mktemp("debian-archive")
    homes = (base / "gnupg-good", base / "gnupg-other")
    root = base / "www"
    try:
        good, other = make_key(homes[0], "good"), make_key(homes[1], "other")
        plain = PACKAGES.encode()
        xz, gz = lzma.compress(plain), gzip.compress(plain, mtime=0)
        stem = "main/binary-amd64/Packages"
        _write_suite(root, homes[0], "bookworm", {f"{stem}.xz": xz, f"{stem}.gz": gz, stem: plain})
        _write_suite(root, homes[0], "gzonly", {f"{stem}.gz": gz})
        _write_suite(root, homes[0], "detached", {f"{stem}.xz": xz}, detached=True)
        _write_suite(
            root,
            homes[0],
            "tampered",
            {f"{stem}.xz": lzma.compress(plain + b"\n")},
            release_files={f"{stem}.xz": xz},
        )
        _write_suite(root, homes[1], "stranger", {f"{stem}.xz": xz})
        _write_suite(root, homes[0], "renamed", {f"{stem}.xz": xz}, codename="trixie")
        # A vendor's repository whose URL ends in /debian, as Docker's does: component `stable`.
        _write_suite(root / "vendor" / "linux", homes[0], "bookworm", {"stable/binary-amd64/Packages.xz": xz})
    finally:
        # gpg starts an agent for each home directory and leaves it running: everything is signed now.
        for home in homes:
            if home.exists():
                subprocess.run(
                    ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=True
                )
    assert agents_gone(homes), "a gpg-agent outlived gpgconf --kill"

    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Archive(
            url=f"http://127.0.0.1:{server.server_port}", root=root, good=good, other=other, requests=requests
        )
    finally:
        server.shutdown()
        server.server_close()


def entry(suite: str = "bookworm", *, signed_by: tuple[str, ...] = ()) -> SourceEntry:
    # The image's own URI: the mirror setting points every fetch at the local server.
    return SourceEntry(
        uri="http://deb.debian.org/debian",
        suite=suite,
        components=("main",),
        signed_by=signed_by,
        origin="sources.list:1",
    )


def trusted(key: Key, name: str = "debian-archive-bookworm-stable.asc") -> Keyring:
    return Keyring(path=f"/etc/apt/trusted.gpg.d/{name}", data=key.armored)


def fetcher(archive: Archive, cache: Path, **kwargs: object) -> DebianArchive:
    return DebianArchive(mirror=archive.url, cache=IndexCache(cache), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fetching


def test_a_signed_suite_is_verified_and_its_index_read(archive: Archive, tmp_path: Path) -> None:
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry(), architectures=["amd64"], keyrings=[trusted(archive.good)]
    )
    assert suite.source.signed_by == "/etc/apt/trusted.gpg.d/debian-archive-bookworm-stable.asc"
    assert suite.source.mirror == f"{archive.url}/debian"
    assert (suite.source.suite, suite.source.components) == ("bookworm", ("main",))
    assert suite.source.snapshot_timestamp == "20240601T100000Z"
    assert suite.source.snapshot == "https://snapshot.debian.org/archive/debian/20240601T100000Z/"
    assert suite.date == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert suite.notes == ()
    (index,) = suite.indexes
    assert index.url.endswith("/dists/bookworm/main/binary-amd64/Packages.xz")
    assert [(r["Package"], r["Version"], r["Architecture"]) for r in index.records] == [
        ("hello", "2.10-3", "amd64"),
        ("tzdata", "2024a-0+deb12u1", "all"),
    ]
    assert "Description" not in index.records[0]  # only the fields the lock needs are kept


def test_indexes_are_fetched_by_hash_and_cached(archive: Archive, tmp_path: Path) -> None:
    archive.requests.clear()
    fetcher(archive, tmp_path).fetch_suite(entry(), architectures=["amd64"], keyrings=[trusted(archive.good)])
    assert [p for p in archive.requests if "/by-hash/SHA256/" in p]
    archive.requests.clear()
    again = fetcher(archive, tmp_path).fetch_suite(
        entry(), architectures=["amd64"], keyrings=[trusted(archive.good)]
    )
    assert archive.requests == ["/debian/dists/bookworm/InRelease"]
    assert len(again.indexes[0].records) == 2


def test_a_corrupt_cache_entry_is_fetched_again(archive: Archive, tmp_path: Path) -> None:
    fetcher(archive, tmp_path).fetch_suite(entry(), architectures=["amd64"], keyrings=[trusted(archive.good)])
    for parsed in (tmp_path / "parsed").iterdir():
        parsed.unlink()
    for blob in (tmp_path / "sha256").rglob("*"):
        if blob.is_file():
            blob.write_bytes(b"garbage")
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry(), architectures=["amd64"], keyrings=[trusted(archive.good)]
    )
    assert len(suite.indexes[0].records) == 2


def test_gz_is_used_when_the_release_lists_no_xz(archive: Archive, tmp_path: Path) -> None:
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry("gzonly"), architectures=["amd64"], keyrings=[trusted(archive.good)]
    )
    assert suite.indexes[0].url.endswith("Packages.gz") and len(suite.indexes[0].records) == 2


def test_release_with_a_detached_signature_is_verified(archive: Archive, tmp_path: Path) -> None:
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry("detached"), architectures=["amd64"], keyrings=[trusted(archive.good)]
    )
    assert suite.source.signed_by is not None and suite.notes == ()


def test_an_index_that_does_not_match_its_release_is_refused(archive: Archive, tmp_path: Path) -> None:
    with pytest.raises(
        SourceError, match=r"Packages\.xz: sha256 [0-9a-f]{64} \(\d+ bytes\), its Release says"
    ):
        fetcher(archive, tmp_path).fetch_suite(
            entry("tampered"), architectures=["amd64"], keyrings=[trusted(archive.good)]
        )


def test_a_release_signed_by_an_unknown_key_is_refused(archive: Archive, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"is not signed by a key in /etc/apt/trusted\.gpg\.d/"):
        fetcher(archive, tmp_path).fetch_suite(
            entry("stranger"), architectures=["amd64"], keyrings=[trusted(archive.good)]
        )


def test_signed_by_restricts_the_keyrings(archive: Archive, tmp_path: Path) -> None:
    keyrings = [
        trusted(archive.other),
        Keyring(path="/usr/share/keyrings/test.gpg", data=archive.good.binary),
    ]
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry(signed_by=("/usr/share/keyrings/test.gpg",)), architectures=["amd64"], keyrings=keyrings
    )
    assert suite.source.signed_by == "/usr/share/keyrings/test.gpg"
    with pytest.raises(SourceError, match="not signed by a key in /usr/share/keyrings/other.gpg"):
        fetcher(archive, tmp_path).fetch_suite(
            entry(signed_by=("/usr/share/keyrings/other.gpg",)),
            architectures=["amd64"],
            keyrings=[
                trusted(archive.good),
                Keyring(path="/usr/share/keyrings/other.gpg", data=archive.other.binary),
            ],
        )


def test_signed_by_a_fingerprint_picks_the_key_among_the_trusted_ones(
    archive: Archive, tmp_path: Path
) -> None:
    keyrings = [trusted(archive.good, "a.asc"), trusted(archive.other, "b.asc")]
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry(signed_by=(archive.good.fingerprint,)), architectures=["amd64"], keyrings=keyrings
    )
    assert suite.source.signed_by == "/etc/apt/trusted.gpg.d/a.asc"
    with pytest.raises(SourceError):
        fetcher(archive, tmp_path).fetch_suite(
            entry(signed_by=(archive.other.fingerprint,)), architectures=["amd64"], keyrings=keyrings
        )


def test_an_inline_signed_by_key_verifies(archive: Archive, tmp_path: Path) -> None:
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry(signed_by=(archive.good.armored.decode(),)), architectures=["amd64"], keyrings=[]
    )
    assert suite.source.signed_by == "sources.list:1 (inline Signed-By key)"


def test_without_gpgv_the_release_is_not_verified_and_says_so(archive: Archive, tmp_path: Path) -> None:
    suite = fetcher(archive, tmp_path, gpgv=None).fetch_suite(
        entry(), architectures=["amd64"], keyrings=[trusted(archive.good)]
    )
    assert suite.source.signed_by is None
    assert suite.notes == (
        f"gpgv not found: the Release of {entry().uri} bookworm is NOT verified (install gpgv)",
    )
    assert len(suite.indexes[0].records) == 2


def test_without_a_keyring_in_the_image_the_release_is_not_verified(archive: Archive, tmp_path: Path) -> None:
    suite = fetcher(archive, tmp_path).fetch_suite(
        entry(signed_by=("/usr/share/keyrings/gone.gpg",)), architectures=["amd64"], keyrings=[]
    )
    assert suite.source.signed_by is None
    assert "no apt keyring in the base image" in suite.notes[0] and "gone.gpg" in suite.notes[0]


def test_a_release_for_another_suite_is_refused(archive: Archive, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"the Release is for 'trixie', not 'renamed'"):
        fetcher(archive, tmp_path).fetch_suite(
            entry("renamed"), architectures=["amd64"], keyrings=[trusted(archive.good)]
        )


def test_a_missing_suite_and_an_unreachable_mirror_are_source_errors(
    archive: Archive, tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match=r"cannot download .*/dists/sid/Release: not found"):
        fetcher(archive, tmp_path).fetch_suite(entry("sid"), architectures=["amd64"], keyrings=[])
    with pytest.raises(
        SourceError, match=r"cannot reach http://127\.0\.0\.1:9/debian/dists/bookworm/InRelease"
    ):
        DebianArchive(mirror="http://127.0.0.1:9", cache=IndexCache(tmp_path)).fetch_suite(
            entry(), architectures=["amd64"], keyrings=[]
        )


def test_without_a_snapshot_service_an_older_as_of_resolves_from_the_mirror_and_says_so(
    archive: Archive, tmp_path: Path
) -> None:
    # Nothing listens on port 1: the snapshot archive cannot be reached, as on a machine without internet.
    as_of = datetime(2024, 5, 1, tzinfo=UTC)
    suite = fetcher(archive, tmp_path, snapshot_root="http://127.0.0.1:1/archive").fetch_suite(
        entry(), architectures=["amd64"], keyrings=[trusted(archive.good)], as_of=as_of
    )
    # The pins come from the mirror as it is (dated 2024-06-01): the lock says so, and names the
    # snapshot that holds that state (where the .debs can be fetched later), not the as-of one.
    assert suite.source.resolved_from == "mirror"
    # A plain-http snapshot root is not recorded for a mirror resolution (a lock fetches over https
    # from anywhere but its mirrors): Debian's, which keeps every published state, is named instead.
    assert suite.source.snapshot == "https://snapshot.debian.org/archive/debian/20240601T100000Z/"
    assert suite.source.snapshot_timestamp == "20240601T100000Z"
    assert (
        "no snapshot archive for as-of: cannot reach http://127.0.0.1:1/archive/debian/20240501T000000Z/"
        in (suite.notes[0])
    )
    assert "after as-of" in suite.notes[1]


def test_a_file_mirror_is_read_from_disk(archive: Archive, tmp_path: Path) -> None:
    suite = DebianArchive(mirror=f"file:{archive.root}", cache=IndexCache(tmp_path)).fetch_suite(
        entry(), architectures=["amd64"], keyrings=[trusted(archive.good)]
    )
    assert suite.source.mirror == f"file:{archive.root}/debian" and suite.source.signed_by is not None


# --------------------------------------------------------------------------- mirrors, snapshots, keys


def test_the_spec_mirror_never_moves_a_vendor_repository(archive: Archive, tmp_path: Path) -> None:
    """`.../linux/debian bookworm stable` is not Debian's archive: the mirror (nothing listens on port 9)
    is not tried for it, and it has no snapshots."""
    vendor = SourceEntry(
        uri=f"{archive.url}/vendor/linux/debian",
        suite="bookworm",
        components=("stable",),
        origin="docker.list:1",
    )
    suite = DebianArchive(
        mirror="http://127.0.0.1:9", cache=IndexCache(tmp_path), snapshot_root="http://127.0.0.1:9/archive"
    ).fetch_suite(
        vendor,
        architectures=["amd64"],
        keyrings=[trusted(archive.good)],
        as_of=datetime(2024, 5, 1, tzinfo=UTC),
    )
    assert suite.source.mirror == vendor.uri
    assert suite.source.no_snapshot and suite.source.snapshot is None


@pytest.mark.parametrize(
    ("uri", "suite", "components", "expected"),
    [
        ("http://deb.debian.org/debian", "bookworm", ("main", "non-free-firmware"), True),
        ("http://security.debian.org/debian-security", "bookworm-security", ("main",), True),
        ("http://archive.ubuntu.com/ubuntu/", "jammy-updates", ("main", "restricted", "universe"), True),
        ("https://download.docker.com/linux/debian", "bookworm", ("stable",), False),
        ("https://download.docker.com/linux/ubuntu", "jammy", ("stable", "main"), False),
        ("https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64", "/", (), False),
        ("http://archive.ubuntu.com/ubuntu", "jammy", ("contrib",), False),  # not an Ubuntu component
        ("https://apt.postgresql.org/pub/repos/apt", "bookworm-pgdg", ("main",), False),
    ],
)
def test_only_the_distributions_own_archives_are_theirs(
    uri: str, suite: str, components: tuple[str, ...], expected: bool
) -> None:
    assert is_distribution_archive(SourceEntry(uri=uri, suite=suite, components=components)) is expected


@pytest.mark.parametrize(
    ("mirror", "uri", "expected"),
    [
        (None, "http://deb.debian.org/debian", "http://deb.debian.org/debian"),
        ("http://m.local/debian", "http://deb.debian.org/debian", "http://m.local/debian"),
        ("http://m.local/debian/", "http://deb.debian.org/debian-security", "http://m.local/debian-security"),
        (
            "http://m.local/mirrors",
            "http://deb.debian.org/debian-security",
            "http://m.local/mirrors/debian-security",
        ),
        ("http://m.local", "http://security.debian.org/debian-security", "http://m.local/debian-security"),
        ("file:/srv/apt", "http://deb.debian.org/debian", "file:/srv/apt/debian"),
    ],
)
def test_a_mirror_keeps_each_archive_name(mirror: str | None, uri: str, expected: str) -> None:
    assert apply_mirror(uri, mirror, {"debian", "debian-security"}) == expected


def test_each_distribution_has_its_snapshot_service(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = "20240601T000000Z"
    assert snapshot_url("http://archive.ubuntu.com/ubuntu", stamp) == (
        "https://snapshot.ubuntu.com/ubuntu/20240601T000000Z/"
    )
    assert snapshot_url("http://ports.ubuntu.com/ubuntu-ports", stamp).startswith(
        "https://snapshot.ubuntu.com/"
    )
    assert snapshot_root("http://deb.example/other") is None  # no known service: the mirror is used
    monkeypatch.setenv("MLENV_SNAPSHOT_URL", "http://127.0.0.1:8000/archive/")
    assert DebianArchive().snapshot_root == "http://127.0.0.1:8000/archive"
    monkeypatch.setenv("MLENV_SNAPSHOT_URL", "off")
    assert snapshot_root("http://deb.debian.org/debian", DebianArchive().snapshot_root) is None


def test_snapshot_urls() -> None:
    stamp = snapshot_timestamp(datetime(2024, 6, 1, 12, 30, 5, tzinfo=UTC))
    assert stamp == "20240601T123005Z"
    assert snapshot_url("http://deb.debian.org/debian-security/", stamp) == (
        "https://snapshot.debian.org/archive/debian-security/20240601T123005Z/"
    )


def test_dearmor_gives_the_binary_key(archive: Archive) -> None:
    assert dearmor(archive.good.armored) == archive.good.binary
    assert dearmor(archive.good.binary) == archive.good.binary
