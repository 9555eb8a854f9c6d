"""apt as-of against a local snapshot archive laid out as Debian's (ROOT/debian/<YYYYMMDDTHHMMSSZ>/dists/..),
served on 127.0.0.1 and signed with a key made for the test run, beside a mirror that holds only today's
state. Locks at as-of T1 and T2 pin what each import held; without a snapshot service the lock says it
used the mirror, and `apt_as_of_gap` names the pins that may be newer than as-of.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlenv.errors import SourceError
from mlenv.lockfile import dump_bytes, loads
from mlenv.model.debian import Keyring, SourceEntry
from mlenv.model.spec import AptSpec
from mlenv.resolve.apt import lock_apt
from mlenv.resolve.freshness import apt_as_of_gap
from mlenv.sources.debian.archive import DebianArchive, IndexCache
from tests.conftest import missing
from tests.lockdata import full_lock as sample_lock
from tools.localbase.signing import Key, agents_gone, gpg, make_key

from .apt_universe import base

# What each import of the archive held: hello was updated twice after bookworm's release.
IMPORTS = {
    "20240601T000000Z": ("Sat, 01 Jun 2024 00:00:00 UTC", "2.10-3"),
    "20240801T000000Z": ("Thu, 01 Aug 2024 00:00:00 UTC", "2.10-3+deb12u1"),
}
MIRROR = ("Tue, 01 Oct 2024 00:00:00 UTC", "2.10-3+deb12u2")  # the mirror holds only the newest
STAMP = re.compile(r"^/archive/debian/([0-9]{8}T[0-9]{6}Z)(/.*)$")


def _packages(version: str) -> bytes:
    deb = f"pool/main/h/hello/hello_{version}_amd64.deb"
    return (
        f"Package: hello\nVersion: {version}\nArchitecture: amd64\nPriority: optional\n"
        f"Filename: {deb}\nSize: 1000\nSHA256: {hashlib.sha256(deb.encode()).hexdigest()}\n"
    ).encode()


def _write(dists: Path, home: Path, date: str, version: str, *, origin: str = "Debian") -> None:
    index = lzma.compress(_packages(version))
    path = dists / "main" / "binary-amd64" / "Packages.xz"
    path.parent.mkdir(parents=True)
    path.write_bytes(index)
    release = (
        f"Origin: {origin}\nSuite: stable\nCodename: {dists.name}\n"
        f"Date: {date}\nArchitectures: amd64\nComponents: main\nSHA256:\n"
        f" {hashlib.sha256(index).hexdigest()} {len(index)} main/binary-amd64/Packages.xz\n"
    )
    (dists / "InRelease").write_bytes(gpg(home, "--clearsign", data=release.encode()))


@dataclass(frozen=True)
class Served:
    url: str
    key: Key
    stranger: Key
    requests: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        missing("gpg", "gpg and gpgv are needed to sign and verify the test archive")
    top = tmp_path_factory.mktemp("snapshot")
    homes = (top / "gnupg", top / "gnupg-stranger")
    www = top / "www"
    try:
        key, stranger = make_key(homes[0], "archive"), make_key(homes[1], "stranger")
        for stamp, (date, version) in IMPORTS.items():
            _write(www / "archive" / "debian" / stamp / "dists" / "bookworm", homes[0], date, version)
        _write(www / "mirror" / "debian" / "dists" / "bookworm", homes[0], *MIRROR)
        # Ubuntu's service has the same layout; its Releases say Origin: Ubuntu.
        ubuntu = www / "ubuntu-snapshot" / "ubuntu" / "20240601T000000Z" / "dists" / "noble"
        _write(ubuntu, homes[0], "Sat, 01 Jun 2024 00:00:00 UTC", "2.10-3ubuntu1", origin="Ubuntu")
        # A snapshot archive whose imports are signed by a key the image does not trust.
        _write(www / "forged" / "debian" / "20240701T000000Z" / "dists" / "bookworm", homes[1], *MIRROR)
    finally:
        for home in homes:
            if home.exists():
                subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
    assert agents_gone(homes), "a gpg-agent outlived gpgconf --kill"
    requests: list[str] = []
    stamps = sorted(IMPORTS)

    class Handler(SimpleHTTPRequestHandler):
        """Static files, plus the snapshot service's rule: a time that is not an import is answered with a
        redirect to the newest import at or before it."""

        def do_GET(self) -> None:
            requests.append(self.path)
            found = STAMP.match(self.path)
            if found and found.group(1) not in IMPORTS:
                earlier = [s for s in stamps if s <= found.group(1)]
                if not earlier:
                    self.send_error(404)
                    return
                self.send_response(302)
                self.send_header("Location", f"/archive/debian/{earlier[-1]}{found.group(2)}")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_port}", key, stranger, requests)
    finally:
        server.shutdown()
        server.server_close()


ENTRY = SourceEntry(
    uri="http://deb.debian.org/debian", suite="bookworm", components=("main",), origin="sources.list:1"
)


def _lock(served: Served, tmp_path: Path, as_of: datetime | None, *, snapshot: str = "/archive"):
    archive = DebianArchive(
        mirror=f"{served.url}/mirror",
        cache=IndexCache(tmp_path / "cache"),
        snapshot_root=f"{served.url}{snapshot}" if snapshot else "",
    )
    state = replace(
        base(),
        sources=(ENTRY,),
        keyrings=(Keyring(path="/etc/apt/trusted.gpg.d/t.asc", data=served.key.armored),),
    )
    return lock_apt(AptSpec(packages=("hello",)), state, archive=archive, as_of=as_of)


@pytest.mark.parametrize(
    ("as_of", "stamp", "version"),
    [
        (datetime(2024, 6, 1, tzinfo=UTC), "20240601T000000Z", "2.10-3"),  # exactly an import
        (datetime(2024, 7, 1, tzinfo=UTC), "20240601T000000Z", "2.10-3"),  # T1: between imports
        (datetime(2024, 9, 1, tzinfo=UTC), "20240801T000000Z", "2.10-3+deb12u1"),  # T2
    ],
)
def test_a_lock_at_as_of_pins_what_the_snapshot_held_then(
    served: Served, tmp_path: Path, as_of: datetime, stamp: str, version: str
) -> None:
    resolution = _lock(served, tmp_path, as_of)
    assert [(p.name, p.version) for p in resolution.pins] == [("hello", version)]
    (source,) = resolution.sources
    root = f"{served.url}/archive/debian/{stamp}"
    assert source.resolved_from == "snapshot"
    assert (source.mirror, source.snapshot, source.snapshot_timestamp) == (root, f"{root}/", stamp)
    assert source.signed_by == "/etc/apt/trusted.gpg.d/t.asc"
    assert not any(path.startswith("/mirror/") for path in served.requests[-4:])


def test_an_as_of_before_the_first_import_falls_back_to_the_mirror_and_is_named(
    served: Served, tmp_path: Path
) -> None:
    resolution = _lock(served, tmp_path, datetime(2024, 1, 1, tzinfo=UTC))
    (source,) = resolution.sources
    assert source.resolved_from == "mirror" and source.snapshot_timestamp == "20241001T000000Z"
    assert [p.version for p in resolution.pins] == ["2.10-3+deb12u2"]
    assert any("the snapshot archive has no" in note for note in resolution.notes)


def test_without_as_of_the_mirror_is_used_and_no_snapshot_is_asked(served: Served, tmp_path: Path) -> None:
    before = len(served.requests)
    resolution = _lock(served, tmp_path, None)
    assert [p.version for p in resolution.pins] == ["2.10-3+deb12u2"]
    assert resolution.sources[0].resolved_from == "mirror"
    assert not any(path.startswith("/archive/") for path in served.requests[before:])


def test_an_unreachable_snapshot_service_resolves_from_the_mirror_and_the_gap_names_every_pin(
    served: Served, tmp_path: Path
) -> None:
    as_of = datetime(2024, 7, 1, tzinfo=UTC)
    archive = DebianArchive(
        mirror=f"{served.url}/mirror", cache=IndexCache(tmp_path), snapshot_root="http://127.0.0.1:1/archive"
    )
    state = replace(
        base(),
        sources=(ENTRY,),
        keyrings=(Keyring(path="/etc/apt/trusted.gpg.d/t.asc", data=served.key.armored),),
    )
    resolution = lock_apt(AptSpec(packages=("hello",)), state, archive=archive, as_of=as_of)
    assert resolution.sources[0].resolved_from == "mirror"
    lock = replace(sample_lock(), as_of=as_of, apt=resolution.locked())
    gap = apt_as_of_gap(lock)
    assert gap == (
        "apt: no snapshot archive answered for as-of 2024-07-01T00:00:00Z; the 1 apt pins come from the "
        "mirror as of 2024-10-01T00:00:00Z and may be newer than as-of: hello 2.10-3+deb12u2"
    )
    # The same lock at an as-of after the mirror's date has no gap: the mirror was the as-of state.
    assert apt_as_of_gap(replace(lock, as_of=datetime(2024, 11, 1, tzinfo=UTC))) is None
    assert apt_as_of_gap(replace(lock, as_of=None)) is None


def test_a_snapshot_lock_has_no_gap(served: Served, tmp_path: Path) -> None:
    as_of = datetime(2024, 7, 1, tzinfo=UTC)
    resolution = _lock(served, tmp_path, as_of)
    lock = replace(sample_lock(), as_of=as_of, apt=resolution.locked())
    assert apt_as_of_gap(lock) is None
    # The lock records the snapshot as its mirror: it is written and read back as it was.
    assert loads(dump_bytes(lock)).apt == lock.apt


def test_a_snapshot_signed_by_an_untrusted_key_is_an_error_not_a_fallback(
    served: Served, tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match="is not signed by a key in"):
        _lock(served, tmp_path, datetime(2024, 7, 1, tzinfo=UTC), snapshot="/forged")


def test_an_ubuntu_archive_is_read_from_its_snapshot_service(served: Served, tmp_path: Path) -> None:
    entry = replace(ENTRY, uri="http://archive.ubuntu.com/ubuntu", suite="noble")
    archive = DebianArchive(
        mirror=f"{served.url}/mirror",
        cache=IndexCache(tmp_path),
        snapshot_root=f"{served.url}/ubuntu-snapshot",
    )
    suite = archive.fetch_suite(
        entry,
        architectures=["amd64"],
        keyrings=[Keyring(path="/etc/apt/trusted.gpg.d/t.asc", data=served.key.armored)],
        as_of=datetime(2024, 6, 1, tzinfo=UTC),
    )
    assert suite.source.resolved_from == "snapshot"
    assert suite.source.mirror == f"{served.url}/ubuntu-snapshot/ubuntu/20240601T000000Z"
    assert [r["Version"] for i in suite.indexes for r in i.records] == ["2.10-3ubuntu1"]
