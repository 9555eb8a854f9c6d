"""The apt resolver against apt itself: the closure we lock for a request is exactly what
`apt-get install -s --no-install-recommends` reports in a container of the same base image, after
`apt-get update` against the same mirror; the base state is read from that container's own files.

Two source setups per image: the sources as the image has them, and the Debian image layout
(deb822 debian.sources with bookworm, bookworm-updates and bookworm-security), which brings
security updates newer than the installed packages, so upgrades are part of the closures.
Also: locked .deb hashes match the files at their URLs, and re-resolving gives the same pins.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from mlenv.model.spec import AptSpec
from mlenv.resolve.apt import (
    AptBaseState,
    AptResolution,
    fetch_suites,
    lock_apt,
    read_base_state,
    resolve_apt,
)
from mlenv.sources.debian.archive import DebianArchive, Suite

CORPUS = ["libgomp1", "curl", "libglib2.0-0", "build-essential", "git", "libopenblas-dev", "ffmpeg"]

DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
LAYOUTS = ["image", "debian-sources"]
INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[(\S+)\]\)$", re.MULTILINE)


@dataclass
class Oracle:
    """One running container of a base image, updated once, answering apt-get -s for many requests."""

    container: Any
    base: AptBaseState = field(init=False)
    suites: tuple[Suite, ...] = ()
    answers: dict[tuple[str, ...], set[tuple[str, str, str]]] = field(default_factory=dict)

    def sh(self, script: str) -> tuple[int, bytes]:
        code, output = self.container.exec_run(["sh", "-c", script], environment={"LC_ALL": "C"})
        return code, output

    def read(self, path: str) -> bytes | None:
        code, output = self.container.exec_run(["cat", path])
        return output if code == 0 else None

    def listdir(self, path: str) -> list[str]:
        code, output = self.container.exec_run(["ls", "-1A", path])
        return output.decode().split() if code == 0 else []

    def update(self) -> None:
        code, output = self.sh("apt-get update -qq")
        assert code == 0 and b"\nE:" not in b"\n" + output, output.decode(errors="replace")

    def list_dates(self) -> set[str]:
        code, output = self.sh("grep -h '^Date:' /var/lib/apt/lists/*Release")
        return {line.split(":", 1)[1].strip() for line in output.decode().splitlines()}

    def simulate(self, packages: tuple[str, ...]) -> set[tuple[str, str, str]]:
        if packages not in self.answers:
            code, output = self.sh("apt-get install -s --no-install-recommends " + " ".join(packages))
            assert code == 0, output.decode(errors="replace")
            self.answers[packages] = {(n.split(":")[0], v, a) for n, v, a in INST.findall(output.decode())}
        return self.answers[packages]


def _start(client: Any, image: str, layout: str) -> Oracle:
    container = client.containers.run(image, ["sleep", "infinity"], detach=True, entrypoint=[])
    oracle = Oracle(container=container)
    if layout == "debian-sources":
        code, _ = oracle.sh(
            "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*.list && cat > "
            f"/etc/apt/sources.list.d/debian.sources <<'EOF'\n{DEBIAN_SOURCES}EOF"
        )
        assert code == 0
    oracle.update()
    oracle.base = read_base_state(oracle.read, oracle.listdir)
    oracle.suites = fetch_suites(oracle.base, DebianArchive())
    # The mirror may publish between apt-get update and our fetch: then both look again, once.
    ours = {s.date.strftime("%a, %d %b %Y %H:%M:%S UTC") for s in oracle.suites}
    if ours != oracle.list_dates():
        oracle.update()
        oracle.suites = fetch_suites(oracle.base, DebianArchive())
    return oracle


@pytest.fixture(
    scope="module",
    params=[(image, layout) for image in ("minbase", "python") for layout in LAYOUTS],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def oracle(request: pytest.FixtureRequest, docker_daemon: Any) -> Iterator[Oracle]:
    image_name, layout = request.param
    image = request.getfixturevalue(f"base_image_{image_name}")
    started = _start(docker_daemon.client, image.local, layout)
    try:
        yield started
    finally:
        started.container.remove(force=True)


def _ours(oracle: Oracle, packages: tuple[str, ...]) -> AptResolution:
    return resolve_apt(packages, oracle.base, oracle.suites)


@pytest.mark.network
@pytest.mark.docker
@pytest.mark.parametrize("package", CORPUS)
def test_closure_is_what_apt_get_installs(oracle: Oracle, package: str) -> None:
    result = _ours(oracle, (package,))
    assert {(p.name, p.version, p.architecture) for p in result.pins} == oracle.simulate((package,))
    assert {p.name for p in result.pins if p.requested} == ({package} if result.pins else set())


@pytest.mark.network
@pytest.mark.docker
def test_a_versioned_request_is_what_apt_get_installs(oracle: Oracle) -> None:
    (pin,) = [p for p in _ours(oracle, ("libgomp1",)).pins if p.name == "libgomp1"]
    request = (f"libgomp1={pin.version}",)
    assert {(p.name, p.version, p.architecture) for p in _ours(oracle, request).pins} == oracle.simulate(
        request
    )


@pytest.mark.network
@pytest.mark.docker
def test_the_whole_corpus_at_once_is_what_apt_get_installs(oracle: Oracle) -> None:
    packages = tuple(CORPUS)
    assert {(p.name, p.version, p.architecture) for p in _ours(oracle, packages).pins} == oracle.simulate(
        packages
    )


@pytest.mark.network
@pytest.mark.docker
def test_sources_are_verified_and_snapshotted(oracle: Oracle) -> None:
    for suite in oracle.suites:
        assert suite.source.signed_by is not None, suite.notes
        assert suite.source.snapshot is not None and suite.source.snapshot_timestamp is not None
        assert suite.source.snapshot.endswith(f"/{suite.source.snapshot_timestamp}/")


# --------------------------------------------------------------------------- the rootfs fixture, no daemon


def _rootfs_reader(root: Path) -> tuple[Any, Any]:
    def inside(path: str) -> Path:
        target = root / path.lstrip("/")
        for _ in range(40):  # symlinks resolve inside the tree, never on the host
            if not target.is_symlink():
                break
            link = target.readlink()
            target = root / str(link).lstrip("/") if link.is_absolute() else target.parent / link
        return target

    def read(path: str) -> bytes | None:
        target = inside(path)
        return target.read_bytes() if target.is_file() else None

    def listdir(path: str) -> list[str]:
        target = inside(path)
        return sorted(p.name for p in target.iterdir()) if target.is_dir() else []

    return read, listdir


@pytest.fixture(scope="module")
def rootfs_base(base_rootfs_minbase: Any) -> AptBaseState:
    root = Path(
        base_rootfs_minbase if isinstance(base_rootfs_minbase, (str, Path)) else base_rootfs_minbase.path
    )
    return read_base_state(*_rootfs_reader(root))


@pytest.mark.network
def test_locked_debs_match_the_files_at_their_urls(rootfs_base: AptBaseState) -> None:
    result = lock_apt(AptSpec(packages=("curl",)), rootfs_base, archive=DebianArchive())
    mirrors = {s.mirror for s in result.sources}
    sample = sorted(result.pins, key=lambda p: p.size)[:3]
    assert len(sample) == 3
    for pin in sample:
        for mirror in sorted(mirrors):
            response = requests.get(f"{mirror}/{pin.filename}", timeout=60)
            if response.status_code == 200:
                break
        assert response.status_code == 200, pin.filename
        assert (len(response.content), hashlib.sha256(response.content).hexdigest()) == (pin.size, pin.sha256)


@pytest.mark.network
def test_re_resolving_against_the_same_mirror_state_gives_the_same_pins(rootfs_base: AptBaseState) -> None:
    spec = AptSpec(packages=("ffmpeg", "git"))
    session = RecordingSession()
    archive = DebianArchive(session=session)
    first = lock_apt(spec, rootfs_base, archive=archive)
    fetched = len(session.urls)
    second = lock_apt(spec, rootfs_base, archive=archive)
    assert first.locked() == second.locked()
    assert first.sources and all(s.signed_by for s in first.sources)
    assert len(first.pins) > 100 and len({p.name for p in first.pins if p.requested}) == 2
    # Re-locking is cheap because indexes come from the cache: only each suite's InRelease is fetched.
    again = session.urls[fetched:]
    assert len(again) == len(first.sources) and all(url.endswith("/InRelease") for url in again)


class RecordingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.urls.append(str(url))
        return super().get(url, **kwargs)
