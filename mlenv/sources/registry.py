"""An OCI distribution client on requests: references, auth, manifests, platform selection, blobs.

Credentials come from the user's docker config (sources.engine reads it with the docker SDK's auth
helpers, credential helpers and stores included); they are sent only to the registry they belong to
and never appear in a message. Content fetched by digest cannot change, so one client keeps the
manifests and configs it has read: a base resolved for the lock and then read for its facts is
fetched once. requests and the docker SDK are imported when a client is made, not with this module
(the observer takes its platform selection from here).

Whatever a registry answers is untrusted: a status, a body that is not JSON or not the shape a manifest
has, a body too large, a redirect elsewhere, a stall. Each ends as one SourceError or ImageError that
names the image and what the registry did; nothing it sent is printed beyond a status code.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin, urlsplit

from mlenv.errors import ImageError, SourceError
from mlenv.sources.http import describe_failure, read_bounded, timeouts

if TYPE_CHECKING:
    import requests

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
# distribution refuses to store a manifest over 4 MiB; a larger answer is not a manifest.
MAX_MANIFEST = 4 << 20
# An image config is a few KiB (history grows it); 8 MiB leaves room and keeps a hostile answer small.
MAX_CONFIG = 8 << 20
# A bearer token is a few KiB; the token service's answer is bounded like a config.
MAX_TOKEN_ANSWER = 1 << 20

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
# What a token may hold to be sent back in a header: printable ASCII, no whitespace (no header splitting).
_TOKEN = re.compile(r"^[\x21-\x7e]{1,16384}$")


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
        at = text.find("@")
        if at != -1 and "/" in text[at:]:
            # `user:password@host/repo`: a digest holds no "/", so this "@" ends userinfo. The reference
            # is echoed in every message about it; credentials belong in the docker config.
            shown = "docker://" * original.startswith("docker://") + text[at + 1 :]
            raise ImageError(
                f"{shown}: an image reference carries no credentials",
                hint="remove user:password@ and run `docker login` for the registry",
            )
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
    data: dict[str, Any]
    raw: bytes = b""  # the bytes the digest is of: what a copy of the image (the vault) must store


class Layer(NamedTuple):
    digest: str
    media_type: str
    size: int


class Pushed(NamedTuple):
    digest: str
    subject_indexed: bool  # the registry lists the manifest as a referrer of its subject itself


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


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """`raw` parsed when it is a JSON object; None for anything else (not JSON, another type, too deep)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _descriptors(ref: ImageReference, found: object, key: str) -> list[dict[str, Any]]:
    """A manifest's descriptors (`key` names them), each with a sha256 digest, a media type and a size.

    The digest goes into a URL path, so it must be exactly sha256:<64 hex>: anything else could ask
    the registry for another path."""
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        raise SourceError(f"the manifest of {ref} has no list of descriptors in {key!r}")
    for item in found:
        digest, media_type, size = item.get("digest"), item.get("mediaType", ""), item.get("size", 0)
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise SourceError(f"the manifest of {ref} has a descriptor in {key!r} without a sha256 digest")
        platform = item.get("platform", {})
        if (
            not isinstance(media_type, str)
            or type(size) is not int
            or size < 0
            or not isinstance(platform, dict)
        ):
            raise SourceError(f"the manifest of {ref} has a malformed descriptor {digest} in {key!r}")
        item.setdefault("mediaType", media_type)
        item.setdefault("size", size)
    return found


def _bearer_params(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def platform_of(descriptor: Mapping[str, Any]) -> str:
    """An index entry's platform as os/architecture[/variant]."""
    found = descriptor.get("platform") or {}
    parts = (found.get("os"), found.get("architecture"), found.get("variant"))
    return "/".join(part for part in parts if part)


def select_platform(descriptors: Sequence[Mapping[str, Any]], platform: str) -> Mapping[str, Any] | None:
    """The first index entry for `platform` (os/architecture, or os/architecture/variant to require one)."""
    os_name, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    for descriptor in descriptors:
        found = descriptor.get("platform") or {}
        if (
            found.get("os") == os_name
            and found.get("architecture") == arch
            and (not variant or found.get("variant") == variant)
        ):
            return descriptor
    return None


class RegistryClient:
    def __init__(
        self, docker_config: str | Path | None = None, session: requests.Session | None = None
    ) -> None:
        import requests

        from mlenv.sources.engine import DockerCredentials

        self._requests = requests
        self.session = session or requests.Session()
        self._credentials_store = DockerCredentials(docker_config)
        self._tokens: dict[tuple[str, str], str] = {}
        # Keyed by (registry, repository, digest): what a digest names never changes.
        self._manifests: dict[tuple[str, str, str], Manifest] = {}
        self._configs: dict[tuple[str, str, str], bytes] = {}

    # ----------------------------------------------------------------- HTTP with auth

    def _base(self, registry: str) -> str:
        return f"{'http' if is_loopback(registry) else 'https'}://{registry}/v2"

    def _credentials(self, registry: str) -> tuple[str, str] | None:
        return self._credentials_store.for_registry(registry, docker_hub=registry == DOCKER_HUB)

    def _get(
        self, ref: ImageReference, path: str, *, accept: str | None = None, stream: bool = False
    ) -> requests.Response:
        return self._send(
            "GET", ref, f"{self._base(ref.registry)}/{ref.repository}/{path}", accept=accept, stream=stream
        )

    def _send(
        self,
        method: str,
        ref: ImageReference,
        url: str,
        *,
        accept: str | None = None,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One request with the registry's auth; `body` makes the payload again when a 401 is retried."""
        sent = {"Accept": accept} if accept else {}
        sent.update(headers or {})
        key = (ref.registry, ref.repository)

        def once() -> requests.Response:
            return self.session.request(
                method,
                url,
                headers=sent,
                params=params,
                data=body() if body is not None else None,
                timeout=timeouts(TIMEOUT),
                stream=stream,
                allow_redirects=method in ("GET", "HEAD"),
            )

        try:
            if key in self._tokens:
                sent["Authorization"] = self._tokens[key]
            # requests drops Authorization when a redirect leads to another host (a blob store), so a
            # token or password reaches only the registry it was issued for.
            response = once()
            if response.status_code == 401:
                response.close()
                self._tokens[key] = self._authorize(ref, response.headers.get("WWW-Authenticate", ""))
                sent["Authorization"] = self._tokens[key]
                response = once()
        except self._requests.RequestException as error:
            raise SourceError(
                f"cannot reach registry {ref.registry} for {ref}: {describe_failure(error)}"
            ) from None
        if response.status_code == 401:
            response.close()
            raise SourceError(
                f"registry {ref.registry} refused the credentials for {ref.repository}",
                hint="check `docker login` or the docker config's credentials",
            )
        return response

    def _authorize(self, ref: ImageReference, challenge: str) -> str:
        credentials = self._credentials(ref.registry)
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if credentials is None:
                raise SourceError(
                    f"registry {ref.registry} needs credentials for {ref.repository} and none are configured",
                    hint="run `docker login` or pass a docker config",
                )
            user, password = credentials
            return str(self._requests.auth._basic_auth_str(user, password))
        if scheme != "bearer":
            raise SourceError(f"registry {ref.registry} asks for unsupported auth {scheme!r}")
        params = _bearer_params(challenge)
        realm = params.get("realm")
        if not realm:
            raise SourceError(f"registry {ref.registry} sent a bearer challenge without a realm")
        realm_url = urlsplit(realm)
        # The realm receives the user's password: only over TLS, or plain HTTP to this machine (a test or
        # a local mirror). The realm's URL is never printed.
        if realm_url.scheme != "https" and not (
            realm_url.scheme == "http" and is_loopback(realm_url.hostname or "")
        ):
            raise SourceError(
                f"registry {ref.registry} names a token service that is not https for {ref.repository}"
            )
        # The challenge names the scope the request needs (pull, or pull,push for an upload).
        query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        try:
            answer = self.session.get(
                realm, params=query, auth=credentials, timeout=timeouts(TIMEOUT), stream=True
            )
            with answer:
                raw = read_bounded(answer, MAX_TOKEN_ANSWER)
        except self._requests.RequestException as error:
            raise SourceError(
                f"cannot reach the token service of {ref.registry}: {describe_failure(error)}"
            ) from None
        if answer.status_code != 200:
            raise SourceError(
                f"the token service of {ref.registry} answered {answer.status_code} for {ref.repository}",
                hint="check `docker login` or the docker config's credentials",
            )
        body = _json_object(raw) if raw is not None else None
        token = (body.get("token") or body.get("access_token")) if body is not None else None
        if not isinstance(token, str) or not token or not _TOKEN.match(token):
            raise SourceError(
                f"the token service of {ref.registry} gave no usable token for {ref.repository}"
            )
        return f"Bearer {token}"

    # ----------------------------------------------------------------- API

    def get_manifest(self, ref: ImageReference, reference: str | None = None) -> Manifest:
        wanted = reference or ref.reference
        if not (_DIGEST.match(wanted) or _TAG.match(wanted)):  # a name from a registry's answer, unchecked
            raise SourceError(f"cannot read a manifest of {ref} named {wanted[:80]!r}: not a tag or digest")
        cached = self._manifests.get((ref.registry, ref.repository, wanted))
        if cached is not None:
            return cached
        response = self._get(ref, f"manifests/{wanted}", accept=ACCEPT, stream=True)
        with response:
            if response.status_code == 404:
                raise ImageError(f"image {ref} not found in registry {ref.registry}")
            if response.status_code != 200:
                raise SourceError(f"registry {ref.registry} answered {response.status_code} for {ref}")
            raw = self._read_bounded(ref, response, MAX_MANIFEST, "manifest")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        declared = response.headers.get("Docker-Content-Digest")
        if (declared and declared != digest) or (wanted.startswith("sha256:") and wanted != digest):
            raise SourceError(
                f"registry {ref.registry} sent a manifest for {ref} whose digest does not match"
            )
        data = _json_object(raw)
        if data is None:
            raise SourceError(f"registry {ref.registry} sent a manifest for {ref} that is not a JSON object")
        media_type = data.get("mediaType") or response.headers.get("Content-Type", "").split(";")[0]
        if not isinstance(media_type, str):
            raise SourceError(
                f"registry {ref.registry} sent a manifest for {ref} whose mediaType is not text"
            )
        if data.get("schemaVersion") == 1:
            raise SourceError(
                f"registry {ref.registry} answered a schema1 manifest for {ref}; mlenv needs v2/OCI"
            )
        manifest = Manifest(media_type=media_type, digest=digest, data=data, raw=raw)
        self._manifests[(ref.registry, ref.repository, digest)] = manifest
        return manifest

    def resolve(self, ref: ImageReference, platform: str = "linux/amd64") -> ResolvedImage:
        top = self.get_manifest(ref)
        manifest = top
        if top.media_type in INDEX_TYPES or "manifests" in top.data:
            descriptors = _descriptors(ref, top.data.get("manifests"), "manifests")
            chosen = select_platform(descriptors, platform)
            if chosen is None:
                available = sorted({platform_of(m) for m in descriptors})
                raise ImageError(f"image {ref} has no {platform} manifest (it has {', '.join(available)})")
            manifest = self.get_manifest(ref, chosen["digest"])
            if manifest.media_type in INDEX_TYPES or "manifests" in manifest.data:
                raise SourceError(f"registry {ref.registry} sent an index inside the index of {ref}")
        config_digest = _descriptors(ref, [manifest.data.get("config")], "config")[0]["digest"]
        key = (ref.registry, ref.repository, config_digest)
        if key not in self._configs:
            self._configs[key] = self._read_config(ref, config_digest)
        config = _json_object(self._configs[key])
        if config is None:
            raise SourceError(f"the config {config_digest} of {ref} is not a JSON object")
        image_platform = f"{config.get('os')}/{config.get('architecture')}"
        if manifest is top and image_platform != platform:
            raise ImageError(f"image {ref} is {image_platform}, not {platform}")
        layers = tuple(
            Layer(digest=layer["digest"], media_type=layer["mediaType"], size=layer["size"])
            for layer in _descriptors(ref, manifest.data.get("layers", []), "layers")
        )
        rootfs = config.get("rootfs", {})
        diff_ids = rootfs.get("diff_ids", []) if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(
            isinstance(d, str) and _DIGEST.match(d) for d in diff_ids
        ):
            raise SourceError(f"the config {config_digest} of {ref} has no list of sha256 rootfs.diff_ids")
        return ResolvedImage(
            digest=top.digest,
            manifest_digest=manifest.digest,
            config_digest=config_digest,
            config=config,
            layers=layers,
            diff_ids=tuple(diff_ids),
            platform=platform,
        )

    def _read_bounded(self, ref: ImageReference, response: requests.Response, limit: int, what: str) -> bytes:
        try:
            raw = read_bounded(response, limit)
        except self._requests.RequestException as error:
            raise SourceError(
                f"registry {ref.registry} broke off the {what} of {ref}: {describe_failure(error)}"
            ) from None
        if raw is None:
            raise SourceError(
                f"registry {ref.registry} sent a {what} for {ref} over {limit >> 20} MiB; refused"
            )
        return raw

    def _read_config(self, ref: ImageReference, digest: str) -> bytes:
        """The config blob, bounded (it is held whole and parsed), its digest checked."""
        return self.read_small_blob(ref, digest, MAX_CONFIG, "config")

    def read_small_blob(self, ref: ImageReference, digest: str, limit: int, what: str) -> bytes:
        """A blob that is held whole and parsed (a config, an attestation), bounded by `limit`, its
        digest checked."""
        if not _DIGEST.match(digest):
            raise SourceError(f"registry {ref.registry} named a {what} of {ref} by a malformed digest")
        response = self._get(ref, f"blobs/{digest}", stream=True)
        with response:
            if response.status_code != 200:
                raise SourceError(
                    f"registry {ref.registry} answered {response.status_code} for {what} {digest} of {ref}"
                )
            raw = self._read_bounded(ref, response, limit, what)
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise SourceError(f"{what} {digest} of {ref} does not match its digest")
        return raw

    def find_manifest(self, ref: ImageReference, reference: str) -> Manifest | None:
        """The manifest `reference` names, or None when the registry has none (404): a tag that may not
        exist yet, such as the referrers fallback tag. Never answered from the cache for a tag."""
        try:
            return self.get_manifest(ref, reference)
        except ImageError:
            return None

    def referrers(self, ref: ImageReference, digest: str) -> list[dict[str, Any]] | None:
        """The descriptors the referrers API lists for `digest`, or None when the registry has no such API
        (the OCI 1.1 rule: a 404 means the client falls back to the `sha256-<hex>` tag)."""
        if not _DIGEST.match(digest):
            raise SourceError(f"cannot list the referrers of {ref}: {digest!r} is not a sha256 digest")
        response = self._get(ref, f"referrers/{digest}", accept=OCI_INDEX, stream=True)
        with response:
            if response.status_code in (404, 405):
                return None
            if response.status_code != 200:
                raise SourceError(
                    f"registry {ref.registry} answered {response.status_code} for the referrers of {ref}"
                )
            raw = self._read_bounded(ref, response, MAX_MANIFEST, "referrers index")
        data = _json_object(raw)
        if data is None or not isinstance(data.get("manifests"), list):
            raise SourceError(
                f"registry {ref.registry} sent a referrers answer for {ref} that is not an index"
            )
        return [entry for entry in data["manifests"] if isinstance(entry, dict)]

    def blob_chunks(self, ref: ImageReference, digest: str) -> Iterator[bytes]:
        """The blob's bytes in chunks, its sha256 checked at the end (a mismatch raises)."""
        response = self._get(ref, f"blobs/{digest}", stream=True)
        if response.status_code != 200:
            raise SourceError(
                f"registry {ref.registry} answered {response.status_code} for blob {digest} of {ref}"
            )
        hasher = hashlib.sha256()
        with response:
            try:
                for chunk in response.iter_content(CHUNK):
                    hasher.update(chunk)
                    yield chunk
            except self._requests.RequestException as error:
                raise SourceError(
                    f"registry {ref.registry} broke off blob {digest} of {ref}: {describe_failure(error)}"
                ) from None
        if "sha256:" + hasher.hexdigest() != digest:
            raise SourceError(f"blob {digest} of {ref} does not match its digest")

    def read_blob(self, ref: ImageReference, digest: str) -> bytes:
        return b"".join(self.blob_chunks(ref, digest))

    # ----------------------------------------------------------------- push (the vault)

    def has_blob(self, ref: ImageReference, digest: str) -> bool:
        response = self._send("HEAD", ref, f"{self._base(ref.registry)}/{ref.repository}/blobs/{digest}")
        response.close()
        if response.status_code not in (200, 404):
            raise SourceError(
                f"registry {ref.registry} answered {response.status_code} for blob {digest} of {ref}"
            )
        return response.status_code == 200

    def push_blob(self, ref: ImageReference, digest: str, content: Path | bytes) -> None:
        """Upload one blob (monolithic: POST, then PUT with the digest) unless the repository has it.
        A file is streamed with its length (distribution refuses a chunked PUT)."""
        if self.has_blob(ref, digest):
            return
        start = self._send("POST", ref, f"{self._base(ref.registry)}/{ref.repository}/blobs/uploads/")
        start.close()
        location = start.headers.get("Location", "")
        if start.status_code != 202 or not location:
            raise SourceError(f"registry {ref.registry} answered {start.status_code} to an upload to {ref}")
        upload = urljoin(f"{self._base(ref.registry)}/", location)
        # The upload URL comes from the registry: it must stay on that registry (it gets the token).
        if urlsplit(upload).netloc != urlsplit(self._base(ref.registry)).netloc:
            raise SourceError(f"registry {ref.registry} sent an upload location on another host for {ref}")
        with contextlib.ExitStack() as stack:

            def body() -> Any:
                return content if isinstance(content, bytes) else stack.enter_context(content.open("rb"))

            size = len(content) if isinstance(content, bytes) else content.stat().st_size
            done = self._send(
                "PUT",
                ref,
                upload,
                params={"digest": digest},
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                body=body,
            )
            done.close()
        if done.status_code != 201:
            raise SourceError(
                f"registry {ref.registry} answered {done.status_code} to blob {digest} of {ref}"
            )

    def push_manifest(self, ref: ImageReference, reference: str, raw: bytes, media_type: str) -> str:
        """Store a manifest under `reference` (a tag, or its own digest); returns its digest."""
        return self.put_manifest(ref, reference, raw, media_type).digest

    def put_manifest(self, ref: ImageReference, reference: str, raw: bytes, media_type: str) -> Pushed:
        """push_manifest, telling also whether the registry took the manifest's `subject` into its
        referrers API (the OCI-Subject answer header): if not, the client keeps the fallback tag."""
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise SourceError(f"manifest for {ref} is not {reference}")
        response = self._send(
            "PUT",
            ref,
            f"{self._base(ref.registry)}/{ref.repository}/manifests/{reference}",
            headers={"Content-Type": media_type},
            body=lambda: raw,
        )
        response.close()
        if response.status_code != 201:
            raise SourceError(
                f"registry {ref.registry} answered {response.status_code} to the manifest of {ref}"
            )
        return Pushed(digest=digest, subject_indexed="OCI-Subject" in response.headers)
