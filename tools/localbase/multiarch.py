"""A two-platform base image (an OCI image index of linux/amd64 and linux/arm64), pushed to a registry.

The arm64 tree is debootstrap's, configured under qemu (images.debootstrap_rootfs). dockerd 20.10's
`docker import --platform` records the host's architecture whatever it is told, so the images are written
here as an OCI layout (one gzip layer and a config naming the architecture each) and copied to the
registry with `skopeo copy --all`. The layout is cached: built aside and renamed into place.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.localbase import Unavailable
from tools.localbase.cache import cache_dir, cache_lock
from tools.localbase.images import RECIPE, SUITE, debootstrap_rootfs, rootfs_tar
from tools.localbase.registry import Registry

ARCHITECTURES = ("amd64", "arm64")  # Debian's names, which are also the OCI platform's
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class IndexImage:
    ref: str  # registry reference with tag
    digest: str  # the index's digest
    manifests: dict[str, str]  # "linux/arm64" -> that platform's manifest digest
    rootfs: dict[str, Path]  # Debian architecture -> its debootstrap tree


def make_index_image(registry: Registry, variant: str) -> IndexImage:
    """The `variant` base for every architecture in ARCHITECTURES as one index, pushed to `registry`."""
    trees = {arch: debootstrap_rootfs(variant, arch) for arch in ARCHITECTURES}
    with cache_lock(f"index-{variant}"):
        layout = _layout(variant, {arch: rootfs_tar(tree) for arch, tree in trees.items()})
    index = json.loads((layout / "index.json").read_text())["manifests"][0]
    nested = json.loads((layout / "blobs" / "sha256" / index["digest"].removeprefix("sha256:")).read_bytes())
    repository = f"mlenv-test/{SUITE}-{variant}-multiarch"
    ref = f"{registry.host}/{repository}:1"
    if shutil.which("skopeo") is None:
        raise Unavailable("skopeo", "not installed (scripts/setup-machine installs it)")
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{layout}:1",
            f"docker://{ref}",
        ],
        check=True,
        capture_output=True,
    )
    return IndexImage(
        ref=ref,
        digest=index["digest"],
        manifests={
            f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in nested["manifests"]
        },
        rootfs={arch: trees[arch] for arch in ARCHITECTURES},
    )


def _layout(variant: str, tars: dict[str, Path]) -> Path:
    final = cache_dir("images") / f"index-{variant}-{RECIPE}"
    if (final / "index.json").exists():
        return final
    work = final.with_name(f".{final.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "blobs" / "sha256").mkdir(parents=True)
    manifests = []
    for arch, tar in sorted(tars.items()):
        layer, diff_id = _gzip_blob(work, tar)
        config = {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": ["/bin/bash"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(work, config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
        }
        manifests.append(
            {
                "mediaType": MANIFEST_TYPE,
                **_blob(work, manifest),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}
    top = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": INDEX_TYPE,
                **_blob(work, index),
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }
        ],
    }
    (work / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (work / "index.json").write_text(json.dumps(top))
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    return final


def _blob(layout: Path, document: dict[str, object]) -> dict[str, object]:
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _gzip_blob(layout: Path, tar: Path) -> tuple[dict[str, object], str]:
    """`tar` gzipped (no name, time 0: the same bytes every run) as a blob; its descriptor and diff_id."""
    partial = layout / "blobs" / "layer.partial"
    raw = hashlib.sha256()
    with tar.open("rb") as source, partial.open("wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as packed:
            while chunk := source.read(CHUNK):
                raw.update(chunk)
                packed.write(chunk)
    packed_digest = hashlib.sha256()
    with partial.open("rb") as written:
        while chunk := written.read(CHUNK):
            packed_digest.update(chunk)
    size = partial.stat().st_size
    partial.rename(layout / "blobs" / "sha256" / packed_digest.hexdigest())
    return {"digest": f"sha256:{packed_digest.hexdigest()}", "size": size}, f"sha256:{raw.hexdigest()}"
