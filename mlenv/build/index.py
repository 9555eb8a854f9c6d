"""One multi-platform image: the index that names each platform's pushed manifest, stored under one tag.

The engine pushes each platform's image under a tag of its own (20.10's image store holds one platform
per tag); the index is then written here from the manifests the registry holds, so its bytes depend on
those digests alone: the same images give the same index digest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from mlenv.errors import BuildError
from mlenv.sources.registry import ImageReference, RegistryClient

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def platform_tag(tag: str, platform: str) -> str:
    """The tag one platform's image of a multi-platform build has: `repo:tag-arm64`."""
    repository, _, name = tag.rpartition(":")
    if not repository or "/" in name:  # no tag given: "host:port/repo" or "repo"
        repository, name = tag, "latest"
    return f"{repository}:{name}-{platform.partition('/')[2].replace('/', '-')}"


def index_document(manifests: Mapping[str, tuple[str, str, int]]) -> tuple[bytes, str]:
    """The index of `manifests` (platform -> media type, digest, size), sorted by platform; its bytes and
    media type. Docker's manifest list over Docker manifests, an OCI index over OCI ones."""
    types = {media_type for media_type, _, _ in manifests.values()}
    if types == {DOCKER_MANIFEST}:
        media_type = DOCKER_LIST
    elif types == {OCI_MANIFEST}:
        media_type = OCI_INDEX
    else:
        raise BuildError(f"the pushed images are of mixed manifest types ({', '.join(sorted(types))})")
    entries = []
    for platform in sorted(manifests):
        kind, digest, size = manifests[platform]
        os_name, _, architecture = platform.partition("/")
        entries.append(
            {
                "mediaType": kind,
                "digest": digest,
                "size": size,
                "platform": {"architecture": architecture, "os": os_name},
            }
        )
    document = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode(), media_type


def push_index(client: RegistryClient, tag: str, pushed: Mapping[str, str]) -> str:
    """Store the index of `pushed` (platform -> the manifest digest its push reported) under `tag`, after
    reading each manifest back (its size and type, and that it is there); the index's digest."""
    reference = ImageReference.parse(tag)
    manifests = {}
    for platform, digest in pushed.items():
        manifest = client.get_manifest(reference, digest)
        manifests[platform] = (manifest.media_type, manifest.digest, len(manifest.raw))
    raw, media_type = index_document(manifests)
    return client.push_manifest(reference, reference.reference, raw, media_type)
