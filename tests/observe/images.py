"""A derived test image in every transport the observer reads: daemon tag, docker save archive,
OCI layout and registry reference. Built on a base image fixture from tests/infra."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageForms:
    local: str  # daemon tag
    archive: Path  # docker save tar
    oci: Path  # OCI image layout directory
    ref: str | None  # registry reference, None without a registry

    def references(self) -> dict[str, str]:
        forms = {
            "docker-daemon": f"docker-daemon:{self.local}",
            "docker-archive": f"docker-archive:{self.archive}",
            "oci": f"oci:{self.oci}",
        }
        if self.ref is not None:
            forms["docker"] = f"docker://{self.ref}"
        return forms


def demo_wheel(directory: Path, name: str = "demo_pkg", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, so that pip can install it with --no-index."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n".encode()
        ),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: mlenv-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def build(client: Any, base: str, tag: str, context: Path, dockerfile: str) -> None:
    (context / "Dockerfile").write_text(dockerfile)
    client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none")


def save(client: Any, tag: str, path: Path) -> Path:
    with path.open("wb") as file:
        for chunk in client.images.get(tag).save(named=True):
            file.write(chunk)
    return path


def oci_from_archive(archive: Path, layout: Path, tag: str) -> Path:
    """Rewrite a docker save archive as an OCI image layout, gzip-compressing the layers."""
    import gzip

    if layout.exists():
        shutil.rmtree(layout)
    (layout / "blobs" / "sha256").mkdir(parents=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}"

    with tarfile.open(archive) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layers = []
        for name in entry["Layers"]:
            member = tar.getmember(name)
            while member.issym():  # docker save links a repeated layer to its first copy
                name = _resolve(name, member.linkname)
                member = tar.getmember(name)
            data = gzip.compress(tar.extractfile(member).read(), compresslevel=1, mtime=0)  # type: ignore[union-attr]
            layers.append(
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": blob(data),
                    "size": len(data),
                }
            )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(config),
                "size": len(config),
            },
            "layers": layers,
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blob(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


def _resolve(name: str, link: str) -> str:
    parts = name.split("/")[:-1]
    for piece in link.split("/"):
        if piece == "..":
            parts.pop()
        elif piece and piece != ".":
            parts.append(piece)
    return "/".join(parts)


def run(client: Any, image: str, *command: str) -> str:
    output = client.containers.run(image, list(command), remove=True, network_mode="none", entrypoint=[])
    return output.decode() if isinstance(output, bytes) else str(output)
