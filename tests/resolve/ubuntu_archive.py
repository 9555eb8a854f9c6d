"""A signed archive laid out as Ubuntu's and a flat repository laid out as NVIDIA's CUDA one, served on
127.0.0.1 (tools/localbase/ubuntu.py writes them; real bookworm .debs, signed with keys made here). Shared by
the resolver tests and the `mlenv lock` test on an Ubuntu-style base."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.sources.test_debian import Key, _agents_gone, _gpg, _make_key
from tools.localbase.ubuntu import (
    CUDA_REPO,
    Deb,
    Sign,
    real_debs,
    write_flat_repository,
    write_ubuntu_archive,
)

# Which real .deb each pocket and component holds: one in each, so a pin names the pocket it came from.
LAYOUT = {
    "jammy": {"main": ("hello",)},
    "jammy-updates": {"main": ("libgomp1",)},
    "jammy-security": {"universe": ("tree",)},
}
CUDA_PACKAGES = ("figlet",)


@dataclass(frozen=True)
class UbuntuServed:
    url: str  # http://127.0.0.1:PORT
    archive_key: Key
    cuda_key: Key
    debs: dict[str, Deb]
    requests: list[str]

    @property
    def mirror(self) -> str:
        return f"{self.url}/ubuntu"

    def cuda_uri(self, repo: str = CUDA_REPO) -> str:
        return f"{self.url}/{repo}"


@pytest.fixture(scope="module", name="ubuntu_served")
def ubuntu_served_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UbuntuServed]:
    if shutil.which("gpg") is None or shutil.which("gpgv") is None or shutil.which("dpkg-deb") is None:
        missing("gpg", "gpg, gpgv and dpkg-deb are needed to make and verify the test archives")
    top = tmp_path_factory.mktemp("ubuntu-archive")
    homes = (top / "gnupg-ubuntu", top / "gnupg-cuda")
    www = top / "www"
    debs = real_debs([n for c in LAYOUT.values() for names in c.values() for n in names] + [*CUDA_PACKAGES])
    try:
        archive_key, cuda_key = _make_key(homes[0], "ubuntu"), _make_key(homes[1], "cuda")

        def signer(home: Path) -> Sign:
            def sign(data: bytes, detached: bool) -> bytes:
                return (
                    _gpg(home, "--detach-sign", "--armor", data=data)
                    if detached
                    else _gpg(home, "--clearsign", data=data)
                )

            return sign

        pockets = {
            p: {c: [debs[n] for n in names] for c, names in comps.items()} for p, comps in LAYOUT.items()
        }
        write_ubuntu_archive(www, pockets, signer(homes[0]))
        write_flat_repository(www / CUDA_REPO, [debs[n] for n in CUDA_PACKAGES], signer(homes[1]))
        # The same repository signed by the Ubuntu archive's key: the cuda source's Signed-By refuses it.
        write_flat_repository(www / "forged" / CUDA_REPO, [debs[n] for n in CUDA_PACKAGES], signer(homes[0]))
    finally:
        for home in homes:
            if home.exists():
                subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True)
    assert _agents_gone(homes), "a gpg-agent outlived gpgconf --kill"

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
