"""Small image layers and images made in memory, for the observer's unit tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

Entry = tuple  # ("file", path, content[, mode]) | ("dir", path) | ("symlink", path, target)
# | ("hardlink", path, target) | ("whiteout", path) | ("opaque", dir)


def layer_tar(entries: Iterable[Entry], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for entry in entries:
            kind, path = entry[0], entry[1]
            if kind == "whiteout":
                head, _, name = path.rpartition("/")
                path, kind, entry = f"{head}/.wh.{name}" if head else f".wh.{name}", "file", ("file", "", b"")
            elif kind == "opaque":
                path, kind, entry = f"{path.rstrip('/')}/.wh..wh..opq", "file", ("file", "", b"")
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if kind == "file":
                content = entry[2]
                info.size = len(content)
                info.mode = entry[3] if len(entry) > 3 else 0o644
                tar.addfile(info, io.BytesIO(content))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry[2]
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, entry[2]
            else:
                raise ValueError(kind)
            tar.addfile(info)
    return buffer.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunked(data: bytes, size: int = 1000) -> list[bytes]:
    """Small chunks, so that headers and files straddle chunk boundaries."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def image_config(
    layers: list[bytes],
    *,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    architecture: str = "amd64",
) -> dict:
    return {
        "architecture": architecture,
        "os": "linux",
        "config": {"Env": [f"{k}={v}" for k, v in (env or {}).items()], "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
    }


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha(self.data)


def write_blob(root: Path, data: bytes) -> str:
    digest = sha(data)
    path = root / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def oci_layout(
    root: Path, images: dict[str | None, tuple[list[bytes], dict]], *, compress: bool = True
) -> Path:
    """An OCI image layout with one manifest per (tag → (uncompressed layers, config))."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    manifests = []
    for tag, (layers, config) in images.items():
        config_bytes = json.dumps(config).encode()
        layer_descriptors = []
        for layer in layers:
            blob = gz(layer) if compress else layer
            media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
            layer_descriptors.append(
                {"mediaType": media, "digest": write_blob(root, blob), "size": len(blob)}
            )
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": write_blob(root, config_bytes),
                "size": len(config_bytes),
            },
            "layers": layer_descriptors,
        }
        manifest_bytes = json.dumps(manifest).encode()
        descriptor = {
            "mediaType": manifest["mediaType"],
            "digest": write_blob(root, manifest_bytes),
            "size": len(manifest_bytes),
        }
        if tag is not None:
            descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
        manifests.append(descriptor)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    return root


def docker_archive(
    path: Path,
    layers: list[bytes],
    config: dict,
    *,
    tags: list[str] | None = None,
    link_duplicates: bool = True,
) -> Path:
    """A legacy `docker save` tar: <id>/layer.tar per layer, <config id>.json, manifest.json."""
    config_bytes = json.dumps(config).encode()
    config_name = sha(config_bytes).split(":")[1] + ".json"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        names: list[str] = []
        first_of: dict[str, str] = {}
        for number, layer in enumerate(layers):
            directory = hashlib.sha256(f"{number}{sha(layer)}".encode()).hexdigest()
            name = f"{directory}/layer.tar"
            names.append(name)
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
            if link_duplicates and sha(layer) in first_of:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, f"../{first_of[sha(layer)]}"
                tar.addfile(info)
                continue
            first_of[sha(layer)] = name
            info = tarfile.TarInfo(name)
            info.size = len(layer)
            tar.addfile(info, io.BytesIO(layer))
        for name, data in (
            (config_name, config_bytes),
            (
                "manifest.json",
                json.dumps([{"Config": config_name, "RepoTags": tags or [], "Layers": names}]).encode(),
            ),
            ("repositories", b"{}"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return path


def dist_info(site: str, name: str, version: str, files: dict[str, bytes]) -> list[Entry]:
    """A wheel-installed distribution: its files, METADATA and a RECORD with sha256 and sizes."""
    import base64

    directory = f"{site}/{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nlong description\n".encode()
    entries: list[Entry] = []
    lines = []
    all_files = {**files, f"{os.path.basename(directory)}/METADATA": metadata}
    for relative, content in all_files.items():
        entries.append(("file", f"{site}/{relative}", content))
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        lines.append(f"{relative},sha256={digest},{len(content)}")
    lines.append(f"{os.path.basename(directory)}/RECORD,,")
    entries.append(("file", f"{directory}/RECORD", ("\n".join(lines) + "\n").encode()))
    return entries
