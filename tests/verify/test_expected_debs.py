"""Where the expected facts say a locked .deb comes from (pure: written locks, no network)."""

from __future__ import annotations

from dataclasses import replace

from mlenv.model.lock import AptPin, AptSource, Lock, LockedApt
from mlenv.verify.expected import image_contents
from tests.lockdata import digest, full_lock

CUDA_URI = "http://127.0.0.1:8080/compute/cuda/repos/ubuntu2204/x86_64"


def _with_a_third_party_pin() -> Lock:
    lock = full_lock()
    nvidia = AptSource(mirror=CUDA_URI, suite="/", components=(), no_snapshot=True)
    pin = AptPin(
        name="cuda-compat-12-1",
        version="530.30.02-1",
        architecture="amd64",
        filename="cuda-compat-12-1_530.30.02-1_amd64.deb",
        size=1000,
        sha256="c" * 64,
        requested=True,
        url=f"{CUDA_URI}/cuda-compat-12-1_530.30.02-1_amd64.deb",
    )
    # The third-party source sorts first by mirror URL: the download must still follow deb_urls, not it.
    apt = LockedApt(sources=(nvidia, *lock.apt.sources), packages=(*lock.apt.packages, pin))
    return replace(lock, apt=apt)


def test_a_distro_pin_downloads_from_the_distro_mirror_and_names_its_distro() -> None:
    debs = {
        d.fact.name: d
        for d in image_contents(_with_a_third_party_pin(), "linux/amd64", lock_digest=digest(7)).apt
    }
    gomp = debs["libgomp1"]
    assert gomp.download == "http://deb.debian.org/debian/pool/main/g/gcc-12/libgomp1_12.2.0-14_amd64.deb"
    assert gomp.purl == "pkg:deb/debian/libgomp1@12.2.0-14?arch=amd64&distro=debian-12"


def test_a_third_party_pin_downloads_from_its_url_and_names_its_repository_not_the_distro() -> None:
    debs = {
        d.fact.name: d
        for d in image_contents(_with_a_third_party_pin(), "linux/amd64", lock_digest=digest(7)).apt
    }
    compat = debs["cuda-compat-12-1"]
    assert compat.download == f"{CUDA_URI}/cuda-compat-12-1_530.30.02-1_amd64.deb"
    assert "distro=" not in compat.purl
    assert compat.purl.startswith("pkg:deb/debian/cuda-compat-12-1@530.30.02-1?arch=amd64&repository_url=")
    assert "127.0.0.1:8080/compute/cuda/repos/ubuntu2204/x86_64" in compat.purl.replace("%3A", ":")
