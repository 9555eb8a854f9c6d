"""Base images made here: Debian bookworm by debootstrap (Docker Hub may be out of reach), imported into
the engine, pushed to a loopback registry, and saved as a docker archive and an OCI layout.

The debootstrap trees and their reproducible tars are cached between runs (built aside and renamed
into place, so an interrupted build never leaves half a cache); the engine keeps imported images in
its cached data root, so a warm run only pushes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker

from tools.localbase import Unavailable
from tools.localbase.cache import cache_dir, cache_lock
from tools.localbase.dockerd import Daemon
from tools.localbase.registry import Registry

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
VARIANTS = {
    "minbase": (),
    "python": ("python3", "python3-venv", "python3-pip", "ca-certificates"),
}
# Names must change when what goes into the image changes, so a stale cache is never reused.
RECIPE = "r1"
EPOCH = 1_700_000_000
HOST_ARCH = "amd64"  # Debian's name for the machines this runs on (the tests' engine is x86-64)
QEMU_NAMES = {"arm64": "aarch64"}  # Debian architecture -> the binfmt handler qemu-user-static registers
IMAGE_CONFIG = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["/bin/bash"]']
# Written by debootstrap with run-specific content, or host files it copies in.
VOLATILE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "var/log",
    "var/cache/apt",
    "var/cache/ldconfig",
    "var/cache/debconf",
    "tmp",
    "run",
)


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    name: str
    local: str  # the engine's tag
    ref: str  # the loopback registry reference, with tag
    digest: str  # what `docker push` printed
    archive: Path  # a `docker save` tar
    oci: Path  # an OCI image layout directory (tag "1")
    rootfs: Path  # the debootstrap tree


def repository(variant: str) -> str:
    """The repository a base image of `variant` has in the engine and in a registry."""
    return f"mlenv-test/{SUITE}-{variant}"


def debootstrap_rootfs(variant: str, arch: str = HOST_ARCH) -> Path:
    """The cached debootstrap tree of `variant` for the Debian architecture `arch`, built on first use.

    A foreign architecture is unpacked on the host (`--foreign`) and configured by debootstrap's second
    stage inside the tree, run through qemu-user-static's binfmt handler: its maintainer scripts are
    the target's binaries."""
    with cache_lock(f"rootfs-{variant}-{arch}"):
        return _debootstrap_rootfs(variant, arch)


def _debootstrap_rootfs(variant: str, arch: str) -> Path:
    root = cache_dir("rootfs")
    # The host architecture keeps its old name, so caches made before foreign trees stay valid.
    final = root / (
        f"{SUITE}-{variant}-{RECIPE}" if arch == HOST_ARCH else f"{SUITE}-{variant}-{arch}-{RECIPE}"
    )
    if (final / "etc" / "os-release").exists():
        return final
    if shutil.which("debootstrap") is None:
        raise Unavailable("debootstrap", "not installed (scripts/setup-machine installs it)")
    if os.geteuid() != 0:
        raise Unavailable("debootstrap", "needs root")
    if arch != HOST_ARCH and not Path(f"/proc/sys/fs/binfmt_misc/qemu-{QEMU_NAMES[arch]}").exists():
        raise Unavailable(
            f"qemu-{QEMU_NAMES[arch]}",
            "no binfmt handler registered (scripts/setup-machine installs qemu-user-static, binfmt-support)",
        )
    work = root / f".{final.name}.partial"
    _unmount_under(work)
    shutil.rmtree(work, ignore_errors=True)
    command = ["debootstrap", "--variant=minbase", f"--arch={arch}"]
    if arch != HOST_ARCH:
        command.append("--foreign")
    if VARIANTS[variant]:
        command.append("--include=" + ",".join(VARIANTS[variant]))
    stages = [[*command, SUITE, str(work), MIRROR]]
    if arch != HOST_ARCH:
        stages.append(["chroot", str(work), "/debootstrap/debootstrap", "--second-stage"])
    for stage in stages:
        result = subprocess.run(stage, capture_output=True, text=True)
        if result.returncode != 0:
            _unmount_under(work)
            raise RuntimeError(
                f"debootstrap {variant} {arch} failed: {(result.stdout + result.stderr)[-600:]}"
            )
    for relative in VOLATILE:
        target = work / relative
        if target.is_dir():
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    for relative in ("etc/machine-id", "etc/hostname", "etc/resolv.conf"):
        path = work / relative
        if path.exists() or path.is_symlink():
            path.unlink()
    (work / "etc" / "machine-id").write_text("")
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    return final


def _unmount_under(directory: Path) -> None:
    """A debootstrap that died may leave /proc or /sys mounted inside its tree: never rm through them."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(directory))), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def rootfs_tar(tree: Path) -> Path:
    """A reproducible tar of a tree: sorted entries, one mtime, numeric owners."""
    with cache_lock(f"tar-{tree.name}"):
        return _rootfs_tar(tree)


def _rootfs_tar(tree: Path) -> Path:
    target = tree.with_suffix(".tar")
    if target.exists():
        return target
    partial = target.with_suffix(".tar.partial")

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = EPOCH
        info.uname = info.gname = ""
        return info

    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(tree.rglob("*"), key=lambda p: p.relative_to(tree).as_posix()):
            archive.add(path, arcname=path.relative_to(tree).as_posix(), recursive=False, filter=normalise)
    partial.rename(target)
    return target


def push_image(
    client: docker.DockerClient,
    local: str,
    registry_host: str,
    repository: str,
    tag: str,
    auth: dict[str, str] | None = None,
) -> str:
    """Tag `local` into the registry, push it, and return the digest the push reported."""
    image = client.images.get(local)
    image.tag(f"{registry_host}/{repository}", tag)
    digest = None
    for event in client.api.push(
        f"{registry_host}/{repository}", tag=tag, stream=True, decode=True, auth_config=auth
    ):
        if "error" in event:
            raise RuntimeError(f"push failed: {event['error']}")
        aux = event.get("aux") or {}
        digest = aux.get("Digest", digest)
    if digest is None:
        raise RuntimeError(f"push of {registry_host}/{repository}:{tag} reported no digest")
    return str(digest)


def import_image(client: docker.DockerClient, tar: Path, name: str) -> str:
    """`docker import` the tar as `name` unless the engine already has it (cached data root)."""
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    repository, tag = name.rsplit(":", 1)
    client.api.import_image_from_file(str(tar), repository=repository, tag=tag, changes=IMAGE_CONFIG)
    return name


def save_forms(client: docker.DockerClient, local: str) -> tuple[Path, Path]:
    """A docker-archive tar and an OCI layout of `local`, cached by image ID."""
    image_id = client.images.get(local).id.removeprefix("sha256:")[:16]
    directory = cache_dir("images", image_id)
    archive, oci = directory / "image.tar", directory / "oci"
    if not archive.exists():
        partial = directory / "image.tar.partial"
        with partial.open("wb") as out:
            for chunk in client.images.get(local).save(named=True):
                out.write(chunk)
        partial.rename(archive)
    if not (oci / "index.json").exists():
        if shutil.which("skopeo") is None:
            raise Unavailable(
                "skopeo", "not installed (scripts/setup-machine installs it); needed for OCI layouts"
            )
        shutil.rmtree(oci, ignore_errors=True)
        subprocess.run(
            ["skopeo", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{oci}:1"],
            check=True,
            capture_output=True,
        )
    return archive, oci


def make_base_image(daemon: Daemon, registry: Registry, variant: str) -> BaseImage:
    """The base image of `variant` in the engine (cached), its saved forms, and pushed to `registry`."""
    tree = debootstrap_rootfs(variant)
    with cache_lock(f"image-{variant}"):
        local = import_image(daemon.client, rootfs_tar(tree), f"{repository(variant)}:{RECIPE}")
        archive, oci = save_forms(daemon.client, local)
    digest = push_image(daemon.client, local, registry.host, repository(variant), "1")
    return BaseImage(
        name=variant,
        local=local,
        ref=f"{registry.host}/{repository(variant)}:1",
        digest=digest,
        archive=archive,
        oci=oci,
        rootfs=tree,
    )
