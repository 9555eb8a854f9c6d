"""An OCI distribution client on requests: references, auth, manifests, platform selection, blobs.

Credentials come from the user's docker config through the docker SDK's own auth helpers
(credential helpers and stores included); they are sent only to the registry they belong to and
never appear in a message.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import requests
from docker import auth as docker_auth

from mlenv.errors import ImageError, SourceError

DOCKER_HUB = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
# Docker types must be accepted too: with OCI types alone distribution 2.8 converts a docker image
# to a schema1 manifest, whose digest is not the one `docker push` printed.
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
TIMEOUT = (10, 120)
CHUNK = 1 << 20

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


@dataclass(frozen=True, kw_only=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """Docker's naming: `python:3.11-slim` is registry-1.docker.io/library/python:3.11-slim."""
        original = text
        text = text.removeprefix("docker://")
        digest = None
        if "@" in text:
            text, digest = text.split("@", 1)
            if not _DIGEST.match(digest):
                raise ImageError(f"{original}: digest must be sha256:<64 hex>")
        name, tag = text, None
        last = text.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = text.rsplit(":", 1)
            if not _TAG.match(tag):
                raise ImageError(f"{original}: invalid tag {tag!r}")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = DOCKER_HUB, name
        if registry in DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
            if "/" not in repository:
                repository = f"library/{repository}"
        if not repository or not all(_COMPONENT.match(part) for part in repository.split("/")):
            raise ImageError(f"{original}: invalid repository name {repository!r}")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True, kw_only=True)
class Manifest:
    media_type: str
    digest: str
    raw: bytes
    data: dict[str, Any]


class Layer(NamedTuple):
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, kw_only=True)
class ResolvedImage:
    digest: str  # what the reference resolved to: an index digest, or the single manifest's
    manifest_digest: str
    config_digest: str
    config: dict[str, Any]
    layers: tuple[Layer, ...]
    diff_ids: tuple[str, ...]
    platform: str


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _bearer_params(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


class RegistryClient:
    def __init__(self, docker_config: str | Path | None = None, session: requests.Session | None = None) -> None:
        self.session = session or requests.Session()
        config_dir = Path(docker_config) if docker_config else (Path(os.environ["DOCKER_CONFIG"]) if "DOCKER_CONFIG" in os.environ else None)
        config_file = str(config_dir / "config.json") if config_dir is not None else None
        self._auth_config = docker_auth.load_config(config_path=config_file)
        self._tokens: dict[tuple[str, str], str] = {}

    # ----------------------------------------------------------------- HTTP with auth

    def _base(self, registry: str) -> str:
        return f"{'http' if is_loopback(registry) else 'https'}://{registry}/v2"

    def _credentials(self, registry: str) -> tuple[str, str] | None:
        lookup = "https://index.docker.io/v1/" if registry == DOCKER_HUB else registry
        found = docker_auth.resolve_authconfig(self._auth_config, lookup)
        if not found:
            return None
        user, password = found.get("username") or found.get("Username"), found.get("password") or found.get("Password")
        if user and password:
            return user, password
        return None

    def _get(self, ref: ImageReference, path: str, *, accept: str | None = None, stream: bool = False) -> requests.Response:
        url = f"{self._base(ref.registry)}/{ref.repository}/{path}"
        headers = {"Accept": accept} if accept else {}
        key = (ref.registry, ref.repository)
        try:
            if key in self._tokens:
                headers["Authorization"] = self._tokens[key]
            response = self.session.get(url, headers=headers, timeout=TIMEOUT, stream=stream)
            if response.status_code == 401:
                self._tokens[key] = self._authorize(ref, response.headers.get("WWW-Authenticate", ""))
                headers["Authorization"] = self._tokens[key]
                response = self.session.get(url, headers=headers, timeout=TIMEOUT, stream=stream)
        except requests.RequestException as error:
            raise SourceError(f"cannot reach registry {ref.registry}: {error.__class__.__name__}") from None
        if response.status_code == 401:
            raise SourceError(f"registry {ref.registry} refused the credentials for {ref.repository}",
                              hint="check `docker login` or the docker config's credentials")
        return response

    def _authorize(self, ref: ImageReference, challenge: str) -> str:
        credentials = self._credentials(ref.registry)
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if credentials is None:
                raise SourceError(f"registry {ref.registry} needs credentials for {ref.repository} and none are "
                                  "configured", hint="run `docker login` or pass a docker config")
            user, password = credentials
            return requests.auth._basic_auth_str(user, password)
        if scheme != "bearer":
            raise SourceError(f"registry {ref.registry} asks for unsupported auth {scheme!r}")
        params = _bearer_params(challenge)
        realm = params.get("realm")
        if not realm:
            raise SourceError(f"registry {ref.registry} sent a bearer challenge without a realm")
        query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        try:
            answer = self.session.get(realm, params=query, auth=credentials, timeout=TIMEOUT)
        except requests.RequestException as error:
            raise SourceError(f"cannot reach the token service of {ref.registry}: {error.__class__.__name__}") from None
        if answer.status_code != 200:
            raise SourceError(f"the token service of {ref.registry} answered {answer.status_code} for {ref.repository}",
                              hint="check `docker login` or the docker config's credentials")
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise SourceError(f"the token service of {ref.registry} gave no token")
        return f"Bearer {token}"

    # ----------------------------------------------------------------- API

    def ping(self, registry: str) -> None:
        try:
            answer = self.session.get(f"{self._base(registry)}/", timeout=TIMEOUT)
        except requests.RequestException as error:
            raise SourceError(f"cannot reach registry {registry}: {error.__class__.__name__}") from None
        if answer.status_code not in (200, 401):
            raise SourceError(f"registry {registry} answered {answer.status_code} to /v2/")

    def get_manifest(self, ref: ImageReference, reference: str | None = None) -> Manifest:
        wanted = reference or ref.reference
        response = self._get(ref, f"manifests/{wanted}", accept=ACCEPT)
        if response.status_code == 404:
            raise ImageError(f"image {ref} not found in registry {ref.registry}")
        if response.status_code != 200:
            raise SourceError(f"registry {ref.registry} answered {response.status_code} for {ref}")
        raw = response.content
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        declared = response.headers.get("Docker-Content-Digest")
        if (declared and declared != digest) or (wanted.startswith("sha256:") and wanted != digest):
            raise SourceError(f"registry {ref.registry} sent a manifest for {ref} whose digest does not match")
        data = json.loads(raw)
        media_type = data.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
        if data.get("schemaVersion") == 1:
            raise SourceError(f"registry {ref.registry} answered a schema1 manifest for {ref}; mlenv needs v2/OCI")
        return Manifest(media_type=media_type, digest=digest, raw=raw, data=data)

    def resolve(self, ref: ImageReference, platform: str = "linux/amd64") -> ResolvedImage:
        top = self.get_manifest(ref)
        manifest = top
        if top.media_type in INDEX_TYPES or "manifests" in top.data:
            os_name, _, arch = platform.partition("/")
            arch, _, variant = arch.partition("/")
            matches = [m for m in top.data.get("manifests", [])
                       if m.get("platform", {}).get("os") == os_name and m.get("platform", {}).get("architecture") == arch
                       and (not variant or m.get("platform", {}).get("variant") == variant)]
            if not matches:
                available = sorted({f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
                                    for m in top.data.get("manifests", [])})
                raise ImageError(f"image {ref} has no {platform} manifest (it has {', '.join(available)})")
            manifest = self.get_manifest(ref, matches[0]["digest"])
        config_digest = manifest.data["config"]["digest"]
        config = json.loads(self.read_blob(ref, config_digest))
        image_platform = f"{config.get('os')}/{config.get('architecture')}"
        if manifest is top and image_platform != platform:
            raise ImageError(f"image {ref} is {image_platform}, not {platform}")
        layers = tuple(Layer(digest=layer["digest"], media_type=layer.get("mediaType", ""), size=layer.get("size", 0))
                       for layer in manifest.data.get("layers", []))
        return ResolvedImage(
            digest=top.digest,
            manifest_digest=manifest.digest,
            config_digest=config_digest,
            config=config,
            layers=layers,
            diff_ids=tuple(config.get("rootfs", {}).get("diff_ids", [])),
            platform=platform,
        )

    def blob_chunks(self, ref: ImageReference, digest: str) -> Iterator[bytes]:
        """The blob's bytes in chunks, its sha256 checked at the end (a mismatch raises)."""
        response = self._get(ref, f"blobs/{digest}", stream=True)
        if response.status_code != 200:
            raise SourceError(f"registry {ref.registry} answered {response.status_code} for blob {digest} of {ref}")
        hasher = hashlib.sha256()
        with response:
            for chunk in response.iter_content(CHUNK):
                hasher.update(chunk)
                yield chunk
        if "sha256:" + hasher.hexdigest() != digest:
            raise SourceError(f"blob {digest} of {ref} does not match its digest")

    def read_blob(self, ref: ImageReference, digest: str) -> bytes:
        return b"".join(self.blob_chunks(ref, digest))

    def open_blob(self, ref: ImageReference, digest: str) -> Iterator[bytes]:
        """The blob as chunks, verified while read (the observer streams layers through it)."""
        return self.blob_chunks(ref, digest)
