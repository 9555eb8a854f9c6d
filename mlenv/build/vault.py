"""The vault: every artifact a lock pins, kept where a build can take it from years later.

`mlenv vault push REF` stores the wheels (of the lock's platforms), the .debs, the baked model files and
the base image (its index, manifests, configs and layers) as ONE OCI artifact: an image manifest of
artifactType `application/vnd.mlenv.vault.v1` whose layers are the files, each annotated with its name
(`org.opencontainers.image.title`), each a blob named by its sha256 - the sha256 the lock records, so a
build finds a file by the lock's hash alone. REF is an OCI registry (`registry/repository[:tag]`, also
written `docker://...`), the store users already run, replicate and back up, or `dir:PATH`, an OCI image
layout (oci-layout, index.json, blobs/sha256/...) that any OCI tool can copy to a registry.

In a registry, the base's per-platform manifests are also stored in the vault's repository by their
own digests, so `docker pull REGISTRY/REPOSITORY@<manifest digest>` gives the locked base back.

`mlenv build --vault REF` reads through `open_vault`: artifacts.fetch takes every file from it (with no
URL tried), and `base_archive` assembles the base as a docker-archive for the engine to load (the image
ID is the config's digest, so it is the image the lock pinned).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlenv.build.artifacts import Artifact, Progress, apt_artifacts, fetch, python_artifacts
from mlenv.errors import BuildError, MlenvError
from mlenv.files import atomic_writer, file_sha256, write_atomic
from mlenv.model.lock import Lock
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import OCI_MANIFEST, ImageReference, RegistryClient

ARTIFACT_TYPE = "application/vnd.mlenv.vault.v1"
TITLE = "org.opencontainers.image.title"
EMPTY_CONFIG = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
DEB_TYPE = "application/vnd.debian.binary-package"
WHEEL_TYPE = "application/vnd.python.wheel"
FILE_TYPE = "application/octet-stream"
BASE_MANIFEST_TYPE = "application/vnd.mlenv.base-manifest.v1+json"
MANIFEST_TYPE_ANNOTATION = "dev.mlenv.manifest.media-type"
LOCK_ANNOTATION = "dev.mlenv.lock.name"
CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class VaultFile:
    title: str  # the file's name in the vault: wheels/x.whl, debs/x.deb, models/..., base/...
    sha256: str
    size: int
    media_type: str
    # A manifest of the base is stored as a plain blob (a registry checks the references of a layer
    # that claims a manifest type); its own type is kept here and in an annotation, for the push by digest.
    manifest_type: str | None = None


def _sha(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _descriptor(item: VaultFile) -> dict[str, Any]:
    annotations = {TITLE: item.title}
    if item.manifest_type:
        annotations[MANIFEST_TYPE_ANNOTATION] = item.manifest_type
    return {
        "mediaType": item.media_type,
        "digest": f"sha256:{item.sha256}",
        "size": item.size,
        "annotations": annotations,
    }


def vault_manifest(lock: Lock, files: Iterable[VaultFile]) -> bytes:
    """The artifact manifest: deterministic (files sorted by name, no times), so one lock's vault has
    one digest wherever it is pushed."""
    unique = {(f.title, f.sha256): f for f in files}
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_TYPE,
            "digest": "sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [_descriptor(f) for _, f in sorted(unique.items())],
        "annotations": {LOCK_ANNOTATION: lock.name},
    }
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


# --------------------------------------------------------------------------- the two stores


class DirectoryStore:
    """An OCI image layout on disk; blobs written atomically and checked against their names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"vault dir:{root}"

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    def has(self, sha256: str) -> bool:
        path = self.blob(sha256)
        return path.is_file() and file_sha256(path) == sha256

    def put(self, sha256: str, content: Path | bytes) -> None:
        if self.has(sha256):
            return
        digest = hashlib.sha256()
        with atomic_writer(self.blob(sha256), durable=False) as out:
            for chunk in _chunks(content):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != sha256:
                raise BuildError(f"{self.name}: the content for sha256:{sha256} does not match it")

    def put_manifest(self, raw: bytes, tag: str | None) -> str:
        digest = hashlib.sha256(raw).hexdigest()
        self.put(digest, raw)
        descriptor: dict[str, Any] = {
            "mediaType": OCI_MANIFEST,
            "digest": f"sha256:{digest}",
            "size": len(raw),
        }
        descriptor["artifactType"] = ARTIFACT_TYPE
        if tag:
            descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
        write_atomic(self.root / "oci-layout", b'{"imageLayoutVersion": "1.0.0"}\n')
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
        index["manifests"] = [descriptor]
        write_atomic(self.root / "index.json", json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")
        return f"sha256:{digest}"

    def read_manifest(self) -> bytes:
        try:
            index = json.loads((self.root / "index.json").read_text())
            digest = _sha(index["manifests"][0]["digest"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            raise BuildError(f"{self.name}: no vault here (no readable index.json)") from None
        return self.read(digest)

    def read(self, sha256: str) -> bytes:
        path = self.blob(sha256)
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise BuildError(f"{self.name}: blob sha256:{sha256} is missing or corrupt")
        return data

    def chunks(self, sha256: str) -> Iterator[bytes]:
        with self.blob(sha256).open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk


class RegistryStore:
    """A repository of an OCI registry, through the project's registry client."""

    def __init__(self, ref: ImageReference, client: RegistryClient) -> None:
        self.ref = ref
        self.client = client
        self.name = f"vault {ref}"

    def has(self, sha256: str) -> bool:
        return self.client.has_blob(self.ref, f"sha256:{sha256}")

    def put(self, sha256: str, content: Path | bytes) -> None:
        self.client.push_blob(self.ref, f"sha256:{sha256}", content)

    def put_manifest(self, raw: bytes, tag: str | None) -> str:
        return self.client.push_manifest(self.ref, tag or self.ref.reference, raw, OCI_MANIFEST)

    def read_manifest(self) -> bytes:
        manifest = self.client.get_manifest(self.ref)
        return manifest.raw

    def read(self, sha256: str) -> bytes:
        return self.client.read_blob(self.ref, f"sha256:{sha256}")

    def chunks(self, sha256: str) -> Iterator[bytes]:
        return self.client.blob_chunks(self.ref, f"sha256:{sha256}")


Store = DirectoryStore | RegistryStore


def parse_vault_ref(text: str, client: Callable[[], RegistryClient]) -> Store:
    """`dir:PATH`, or an OCI registry reference (`docker://` allowed)."""
    if text.startswith("dir:"):
        path = text.removeprefix("dir:")
        if not path:
            raise MlenvError("--vault dir: needs a path (dir:PATH)")
        return DirectoryStore(Path(path).expanduser().absolute())
    reference = ImageReference.parse(text.removeprefix("docker://"))
    return RegistryStore(reference, client())


# --------------------------------------------------------------------------- push


def _chunks(content: Path | bytes) -> Iterator[bytes]:
    if isinstance(content, bytes):
        yield content
        return
    with content.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _cached(store: ContentStore, sha256: str, download: Callable[[], Iterable[bytes]], what: str) -> Path:
    return store.fetch(sha256, download, what=what)


def _blob_download(client: RegistryClient, ref: ImageReference, digest: str) -> Callable[[], Iterable[bytes]]:
    return lambda: client.blob_chunks(ref, digest)


def base_files(
    lock: Lock, client: RegistryClient | None, store: ContentStore, progress: Progress
) -> list[tuple[VaultFile, Path]]:
    """The base image as the lock pins it, from its registry into the cache: the index (when the
    reference is one), each locked platform's manifest, config and layers."""
    if lock.base is None:
        return []
    if client is None:
        raise BuildError("the base image is read from its registry: a registry client is needed")
    ref = ImageReference(
        registry=lock.base.registry, repository=lock.base.repository, digest=lock.base.digest
    )
    top = client.get_manifest(ref, lock.base.digest)
    found: list[tuple[VaultFile, Path]] = []

    def keep(title: str, raw: bytes, media_type: str) -> None:
        sha = hashlib.sha256(raw).hexdigest()
        path = _cached(store, sha, lambda: [raw], title)
        item = VaultFile(
            title=title, sha256=sha, size=len(raw), media_type=BASE_MANIFEST_TYPE, manifest_type=media_type
        )
        found.append((item, path))

    # A single-manifest base is named by its one locked platform, like each manifest of an index.
    manifests = [(top, lock.base.platforms[0].platform if lock.base.platforms else "image")]
    if "manifests" in top.data:
        keep("base/index.json", top.raw, top.media_type)
        manifests = [(client.get_manifest(ref, p.manifest_digest), p.platform) for p in lock.base.platforms]
    for manifest, platform in manifests:
        where = f"base/{platform.replace('/', '-') or 'image'}"
        keep(f"{where}/manifest.json", manifest.raw, manifest.media_type)
        config = manifest.data["config"]
        blobs = [(config, f"{where}/config.json")]
        blobs += [
            (layer, f"{where}/layers/{n:03d}-{_sha(layer['digest'])[:12]}")
            for n, layer in enumerate(manifest.data.get("layers", []))
        ]
        for descriptor, title in blobs:
            sha = _sha(descriptor["digest"])
            progress(f"vault: base {title}")
            path = _cached(store, sha, _blob_download(client, ref, descriptor["digest"]), title)
            found.append(
                (
                    VaultFile(
                        title=title, sha256=sha, size=path.stat().st_size, media_type=descriptor["mediaType"]
                    ),
                    path,
                )
            )
    return found


def model_files(lock: Lock, project_dir: Path) -> list[tuple[VaultFile, Path]]:
    found = []
    for model in sorted(lock.models, key=lambda m: m.target):
        if model.strategy != "bake":
            continue
        path = project_dir / model.source
        if not path.is_file() or file_sha256(path) != model.sha256:
            raise BuildError(
                f"model {model.source} is missing or differs from the lock's sha256",
                hint="the vault keeps what the lock pins: restore the file or run `mlenv lock`",
            )
        title = "models/" + model.target.strip("/")
        found.append(
            (
                VaultFile(title=title, sha256=model.sha256, size=path.stat().st_size, media_type=FILE_TYPE),
                path,
            )
        )
    return found


def locked_files(
    lock: Lock, project_dir: Path, client: RegistryClient | None, store: ContentStore, progress: Progress
) -> list[tuple[VaultFile, Path]]:
    """Every file the lock pins, fetched into the cache and checked (network: mirrors, indexes, the
    base's registry)."""
    wheels: dict[str, Artifact] = {}
    for platform in lock.target.platforms:
        wheels.update({a.sha256: a for a in python_artifacts(lock, platform)})
    groups = (("wheels", WHEEL_TYPE, list(wheels.values())), ("debs", DEB_TYPE, apt_artifacts(lock)))
    found: list[tuple[VaultFile, Path]] = []
    for folder, media_type, artifacts in groups:
        paths = fetch(artifacts, store, progress)
        for artifact in artifacts:
            path = paths[artifact.filename]
            item = VaultFile(
                title=f"{folder}/{artifact.filename}",
                sha256=artifact.sha256,
                size=path.stat().st_size,
                media_type=media_type,
            )
            found.append((item, path))
    found += model_files(lock, project_dir)
    found += base_files(lock, client, store, progress)
    return found


@dataclass(frozen=True, kw_only=True)
class Pushed:
    name: str
    digest: str  # the vault manifest's
    files: int
    size: int


def push_vault(
    lock: Lock,
    project_dir: Path,
    target: Store,
    *,
    client: RegistryClient | None,
    store: ContentStore,
    progress: Progress,
) -> Pushed:
    """Store every artifact the lock pins in `target`; the manifest is written last, so a vault that
    names a file always holds it."""
    files = locked_files(lock, project_dir, client, store, progress)
    for number, (item, path) in enumerate(files, start=1):
        progress(f"vault: push {number}/{len(files)} {item.title}")
        target.put(item.sha256, path)
    if isinstance(target, RegistryStore):
        # The base's manifests by digest beside their blobs: the base can be pulled from the vault.
        for item, path in files:
            if item.title.endswith("/manifest.json") and item.manifest_type:
                target.client.push_manifest(
                    target.ref, f"sha256:{item.sha256}", path.read_bytes(), item.manifest_type
                )
    target.put(hashlib.sha256(EMPTY_CONFIG).hexdigest(), EMPTY_CONFIG)
    raw = vault_manifest(lock, [item for item, _ in files])
    tag = target.ref.tag if isinstance(target, RegistryStore) else lock.name
    digest = target.put_manifest(raw, tag)
    return Pushed(name=target.name, digest=digest, files=len(files), size=sum(i.size for i, _ in files))


# --------------------------------------------------------------------------- read (the build)


class Vault:
    """An opened vault: its manifest read once; files looked up by the lock's sha256."""

    def __init__(self, target: Store) -> None:
        self.target = target
        self.name = target.name
        raw = target.read_manifest()
        try:
            document = json.loads(raw)
            layers = document["layers"]
            self.files = {
                _sha(layer["digest"]): VaultFile(
                    title=layer.get("annotations", {}).get(TITLE, ""),
                    sha256=_sha(layer["digest"]),
                    size=int(layer["size"]),
                    media_type=layer["mediaType"],
                    manifest_type=layer.get("annotations", {}).get(MANIFEST_TYPE_ANNOTATION),
                )
                for layer in layers
            }
        except (ValueError, KeyError, TypeError):
            raise BuildError(f"{self.name}: its manifest is not a vault manifest") from None
        if document.get("artifactType") != ARTIFACT_TYPE:
            raise BuildError(
                f"{self.name} is not an mlenv vault (artifactType {document.get('artifactType')!r})"
            )

    def chunks(self, sha256: str) -> Iterable[bytes] | None:
        return self.target.chunks(sha256) if sha256 in self.files else None

    def titled(self, title: str) -> VaultFile | None:
        return next((f for f in self.files.values() if f.title == title), None)

    def base_archive(self, lock: Lock, platform: str, tag: str) -> bytes:
        """The locked base for `platform` as a docker-archive (`docker load`), from the vault alone;
        every blob checked against its digest. The engine names the image by its config's digest: the
        same image ID as the base pulled from its registry."""
        if lock.base is None:
            raise BuildError("the lock has no base image")
        manifest_file = self.titled(f"base/{platform.replace('/', '-')}/manifest.json")
        if manifest_file is None:
            raise BuildError(f"{self.name} holds no base manifest for {platform}")
        manifest = json.loads(self.target.read(manifest_file.sha256))
        config_sha = _sha(manifest["config"]["digest"])
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))

            add(f"{config_sha}.json", self.target.read(config_sha))
            layers = []
            for layer in manifest.get("layers", []):
                sha = _sha(layer["digest"])
                # docker load decompresses a gzip'd layer itself: the blob goes in as stored.
                add(f"{sha}/layer.tar", self.target.read(sha))
                layers.append(f"{sha}/layer.tar")
            index = [{"Config": f"{config_sha}.json", "RepoTags": [tag], "Layers": layers}]
            add("manifest.json", json.dumps(index).encode())
        return buffer.getvalue()


class BaseLoader(Protocol):
    """What putting the base into the engine needs (mlenv.sources.engine.Engine has both)."""

    def image_id(self, name: str) -> str | None: ...
    def load_archive(self, data: bytes) -> None: ...


def base_name(lock: Lock, platform: str) -> str:
    """The local name a base loaded from the vault gets: `mlenv-vault/<repository>:<config sha256[:20]>`."""
    assert lock.base is not None
    chosen = next(p for p in lock.base.platforms if p.platform == platform)
    return f"mlenv-vault/{lock.base.repository}:{chosen.config_digest.removeprefix('sha256:')[:20]}"


def ensure_base(vault: Vault, engine: BaseLoader, lock: Lock, platform: str) -> str:
    """The locked base in the engine, loaded from the vault unless already there under `base_name`;
    returns that name, for the Dockerfile's FROM. Its image ID is the locked config digest: the image
    the lock pinned, whichever name it is built from."""
    if lock.base is None:
        raise BuildError("the lock has no base image")
    name = base_name(lock, platform)
    wanted = next(p.config_digest for p in lock.base.platforms if p.platform == platform)
    if engine.image_id(name) != wanted:
        engine.load_archive(vault.base_archive(lock, platform, name))
        found = engine.image_id(name)
        if found != wanted:
            raise BuildError(f"{vault.name}: the base loaded as {found}, the lock says {wanted}")
    return name


def open_vault(text: str, client: Callable[[], RegistryClient] | None = None) -> Vault:
    return Vault(parse_vault_ref(text, client or RegistryClient))


def vault_store(vault: Vault, root: Path | None = None) -> ContentStore:
    """The artifact cache backed by `vault`, with no URL tried: what `mlenv build --vault` builds with."""
    return ContentStore(root, fallback=vault, network=False)
