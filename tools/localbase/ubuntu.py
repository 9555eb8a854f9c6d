"""Ubuntu-style test archives and bases: real .debs (taken from the Debian mirror) laid out as Ubuntu's
archive (dists/jammy, jammy-updates, jammy-security; pool/<component>/...) and as NVIDIA's flat CUDA
repository (Packages and the .debs in one directory), signed with a key made for the test; and the files
that make a Debian test base look like Ubuntu 22.04 to mlenv (os-release, apt sources, keyrings).

Ubuntu's archive and NVIDIA's repository cannot be reached from here; the layouts and the Release fields
are theirs, the package contents are Debian's (what mlenv reads of a .deb is its control data and hash).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from mlenv.model.debian import parse_packages
from tools.localbase.cache import cache_dir, cache_lock
from tools.localbase.images import MIRROR, SUITE
from tools.localbase.signing import Key, Sign, make_key, signer, stop_agents

DATE = "Tue, 01 Oct 2024 00:00:00 UTC"
# Where NVIDIA's repository for Ubuntu 22.04 on x86_64 lives, below the host.
CUDA_REPO = "compute/cuda/repos/ubuntu2204/x86_64"
CUDA_KEYRING = "/usr/share/keyrings/cuda-archive-keyring.gpg"
# Ubuntu 22.04 trusts its archive key through trusted.gpg.d (its sources.list names no Signed-By);
# 24.04 names this keyring in ubuntu.sources.
UBUNTU_TRUSTED = "/etc/apt/trusted.gpg.d/ubuntu-keyring-2018-archive.gpg"
UBUNTU_KEYRING = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"

JAMMY_OS_RELEASE = """\
PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=jammy
"""
# Ubuntu 22.04's own sources.list (one-line form; the security pocket on its own host).
JAMMY_SOURCES_LIST = """\
deb http://archive.ubuntu.com/ubuntu/ jammy main restricted
deb http://archive.ubuntu.com/ubuntu/ jammy-updates main restricted
deb http://archive.ubuntu.com/ubuntu/ jammy universe
deb http://archive.ubuntu.com/ubuntu/ jammy-updates universe
deb http://archive.ubuntu.com/ubuntu/ jammy multiverse
deb http://archive.ubuntu.com/ubuntu/ jammy-updates multiverse
deb http://security.ubuntu.com/ubuntu/ jammy-security main restricted
deb http://security.ubuntu.com/ubuntu/ jammy-security universe
deb http://security.ubuntu.com/ubuntu/ jammy-security multiverse
"""
# Ubuntu 24.04's deb822 form, as it writes /etc/apt/sources.list.d/ubuntu.sources.
NOBLE_SOURCES = f"""\
Types: deb
URIs: http://archive.ubuntu.com/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: {UBUNTU_KEYRING}

Types: deb
URIs: http://security.ubuntu.com/ubuntu/
Suites: noble-security
Components: main restricted universe multiverse
Signed-By: {UBUNTU_KEYRING}
"""
COMPONENTS = ("main", "restricted", "universe", "multiverse")


@dataclass(frozen=True, kw_only=True)
class Deb:
    """A real .deb and its control stanza, as a Packages index lists it (without Filename)."""

    name: str
    path: Path
    control: str  # the stanza's fields from the .deb's control file, plus Size and SHA256


def cuda_list(uri: str) -> str:
    """The sources.list.d/cuda-ubuntu2204-x86_64.list NVIDIA's cuda-keyring package installs."""
    return f"deb [signed-by={CUDA_KEYRING}] {uri.rstrip('/')}/ /\n"


def real_debs(names: Sequence[str]) -> dict[str, Deb]:
    """The bookworm .debs of `names` from the Debian mirror (cached, checked against the index's sha256)."""
    directory = cache_dir("ubuntu-debs")
    with cache_lock("ubuntu-debs"):
        index = directory / "Packages"
        if not index.exists():
            response = requests.get(f"{MIRROR}/dists/{SUITE}/main/binary-amd64/Packages.xz", timeout=120)
            response.raise_for_status()
            (directory / "Packages.partial").write_bytes(lzma.decompress(response.content))
            (directory / "Packages.partial").rename(index)
        records = {r["Package"]: r for r in parse_packages(index.read_bytes())}
        found = {}
        for name in names:
            record = records[name]
            path = directory / record["Filename"].rsplit("/", 1)[-1]
            if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != record["SHA256"]:
                response = requests.get(f"{MIRROR}/{record['Filename']}", timeout=120)
                response.raise_for_status()
                if hashlib.sha256(response.content).hexdigest() != record["SHA256"]:
                    raise RuntimeError(f"{record['Filename']}: not the sha256 the mirror's index lists")
                path.write_bytes(response.content)
            found[name] = Deb(name=name, path=path, control=_control(path))
    return found


def _control(path: Path) -> str:
    # The .deb's own control fields (dpkg-deb), without the description, plus what the index adds.
    text = subprocess.run(
        ["dpkg-deb", "--field", str(path)], capture_output=True, check=True, text=True
    ).stdout
    kept = []
    skipping = False
    for line in text.splitlines():
        if line.startswith((" ", "\t")):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.startswith("Description:")
        if not skipping:
            kept.append(line)
    data = path.read_bytes()
    kept += [f"Size: {len(data)}", f"SHA256: {hashlib.sha256(data).hexdigest()}"]
    return "\n".join(kept) + "\n"


def _stanza(deb: Deb, filename: str) -> str:
    return f"{deb.control}Filename: {filename}\n"


def _release(fields: Mapping[str, str], files: Mapping[str, bytes]) -> bytes:
    lines = [f"{k}: {v}" for k, v in fields.items()] + ["SHA256:"]
    lines += [f" {hashlib.sha256(d).hexdigest()} {len(d)} {name}" for name, d in sorted(files.items())]
    return ("\n".join(lines) + "\n").encode()


def _signed(directory: Path, release: bytes, sign: Sign, *, inline: bool, detached: bool) -> None:
    (directory / "Release").write_bytes(release)
    if inline:
        (directory / "InRelease").write_bytes(sign(release, False))
    if detached:
        (directory / "Release.gpg").write_bytes(sign(release, True))


def write_ubuntu_archive(
    root: Path, pockets: Mapping[str, Mapping[str, Sequence[Deb]]], sign: Sign, *, codename: str = "jammy"
) -> None:
    """`root`/ubuntu laid out as Ubuntu's archive: for each pocket (jammy, jammy-updates, ...) and component,
    a Packages.xz/.gz listing the .debs, which sit in pool/<component>/<initial>/<package>/. Every
    component has an index (empty where no .deb is given), as Ubuntu's do; arch:all packages are in
    binary-amd64 (Ubuntu has no binary-all)."""
    archive = root / "ubuntu"
    for pocket, components in pockets.items():
        files: dict[str, bytes] = {}
        for component in COMPONENTS:
            stanzas = []
            for deb in components.get(component, ()):
                pool = f"pool/{component}/{deb.name[0]}/{deb.name}/{deb.path.name}"
                target = archive / pool
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(deb.path.read_bytes())
                stanzas.append(_stanza(deb, pool))
            plain = "\n".join(stanzas).encode()
            stem = f"{component}/binary-amd64/Packages"
            files[f"{stem}.xz"] = lzma.compress(plain)
            files[f"{stem}.gz"] = gzip.compress(plain, mtime=0)
        dists = archive / "dists" / pocket
        for name, data in files.items():
            (dists / name).parent.mkdir(parents=True, exist_ok=True)
            (dists / name).write_bytes(data)
        fields = {
            "Origin": "Ubuntu",
            "Label": "Ubuntu",
            "Suite": pocket,
            "Version": "22.04" if codename == "jammy" else "24.04",
            "Codename": codename,
            "Date": DATE,
            "Architectures": "amd64 arm64 armhf i386 ppc64el riscv64 s390x",
            "Components": " ".join(COMPONENTS),
            "Description": "Ubuntu Jammy 22.04",
        }
        _signed(dists, _release(fields, files), sign, inline=True, detached=True)


def write_flat_repository(directory: Path, debs: Sequence[Deb], sign: Sign) -> None:
    """`directory` laid out as NVIDIA's CUDA repository: the .debs beside Packages(.gz) whose Filename is
    `./name.deb`, a Release naming no suite or components, signed inline and detached."""
    directory.mkdir(parents=True, exist_ok=True)
    stanzas = []
    for deb in debs:
        (directory / deb.path.name).write_bytes(deb.path.read_bytes())
        stanzas.append(_stanza(deb, f"./{deb.path.name}"))
    plain = "\n".join(stanzas).encode()
    files = {"Packages": plain, "Packages.gz": gzip.compress(plain, mtime=0)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    fields = {"Origin": "NVIDIA", "Label": "NVIDIA CUDA", "Architecture": "x86_64", "Date": DATE}
    _signed(directory, _release(fields, files), sign, inline=True, detached=True)


def ubuntu_base_context(context: Path, *, archive_key: bytes, cuda_key: bytes, cuda_uri: str) -> list[str]:
    """Files in `context` and the Dockerfile lines that turn a Debian test base into an Ubuntu 22.04 one as
    mlenv reads it: os-release, Ubuntu's sources.list (Debian's sources removed), Ubuntu's keyrings in
    place of Debian's (holding the test archive key), and NVIDIA's repository with its own keyring."""
    (context / "os-release").write_text(JAMMY_OS_RELEASE)
    (context / "debian_version").write_text("bookworm/sid\n")  # what Ubuntu 22.04 ships
    (context / "sources.list").write_text(JAMMY_SOURCES_LIST)
    (context / "cuda.list").write_text(cuda_list(cuda_uri))
    (context / "ubuntu-archive.gpg").write_bytes(archive_key)
    (context / "cuda-archive.gpg").write_bytes(cuda_key)
    return [
        "RUN rm -f /etc/os-release /usr/lib/os-release /etc/debian_version /etc/apt/sources.list"
        " /etc/apt/sources.list.d/* /etc/apt/trusted.gpg.d/* /usr/share/keyrings/debian-*",
        "COPY os-release /usr/lib/os-release",
        "COPY debian_version /etc/debian_version",
        "RUN ln -s ../usr/lib/os-release /etc/os-release",
        "COPY sources.list /etc/apt/sources.list",
        "COPY cuda.list /etc/apt/sources.list.d/cuda-ubuntu2204-x86_64.list",
        f"COPY ubuntu-archive.gpg {UBUNTU_TRUSTED}",
        f"COPY ubuntu-archive.gpg {UBUNTU_KEYRING}",
        f"COPY cuda-archive.gpg {CUDA_KEYRING}",
    ]


# --------------------------------------------------------------------------- the archives, served


@dataclass(frozen=True)
class UbuntuServed:
    url: str  # http://127.0.0.1:PORT
    archive_key: Key
    cuda_key: Key
    debs: dict[str, Deb]
    requests: list[str]  # every path asked for, in order

    @property
    def mirror(self) -> str:
        return f"{self.url}/ubuntu"

    def cuda_uri(self, repo: str = CUDA_REPO) -> str:
        return f"{self.url}/{repo}"


@contextmanager
def served_ubuntu(
    top: Path, layout: Mapping[str, Mapping[str, Sequence[str]]], cuda_packages: Sequence[str]
) -> Iterator[UbuntuServed]:
    """Under `top` (a new directory): an Ubuntu-layout archive holding the real .debs `layout` names
    (pocket -> component -> package names), NVIDIA's repository holding `cuda_packages`, each signed
    with a key of its own made here, and the same NVIDIA repository signed by the Ubuntu key under
    forged/ (which the cuda source's Signed-By must refuse); served on 127.0.0.1 until the block ends."""
    top.mkdir(parents=True, exist_ok=True)
    names = [n for components in layout.values() for group in components.values() for n in group]
    debs = real_debs([*dict.fromkeys([*names, *cuda_packages])])
    homes = (top / "gnupg-ubuntu", top / "gnupg-cuda")
    www = top / "www"
    try:
        archive_key, cuda_key = make_key(homes[0], "ubuntu"), make_key(homes[1], "cuda")
        pockets = {
            p: {c: [debs[n] for n in group] for c, group in comps.items()} for p, comps in layout.items()
        }
        write_ubuntu_archive(www, pockets, signer(homes[0]))
        write_flat_repository(www / CUDA_REPO, [debs[n] for n in cuda_packages], signer(homes[1]))
        write_flat_repository(www / "forged" / CUDA_REPO, [debs[n] for n in cuda_packages], signer(homes[0]))
    finally:
        gone = stop_agents(homes)
    if not gone:
        raise RuntimeError("a gpg-agent outlived gpgconf --kill")

    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield UbuntuServed(
            url=f"http://127.0.0.1:{server.server_port}",
            archive_key=archive_key,
            cuda_key=cuda_key,
            debs=debs,
            requests=requests,
        )
    finally:
        server.shutdown()
        server.server_close()
