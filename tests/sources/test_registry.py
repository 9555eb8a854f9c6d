"""The OCI distribution client against the real registry: digests, auth, blobs, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlenv.errors import ImageError, SourceError
from mlenv.sources.registry import ImageReference, RegistryClient
from tools.localbase.images import BaseImage
from tools.localbase.registry import Registry


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("python:3.11-slim", "registry-1.docker.io", "library/python", "3.11-slim", None),
        ("python", "registry-1.docker.io", "library/python", "latest", None),
        (
            "docker.io/nvidia/cuda:12.1.1-runtime-ubuntu22.04",
            "registry-1.docker.io",
            "nvidia/cuda",
            "12.1.1-runtime-ubuntu22.04",
            None,
        ),
        ("127.0.0.1:5000/x/y:t", "127.0.0.1:5000", "x/y", "t", None),
        ("localhost/x", "localhost", "x", "latest", None),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io", "o/r", None, "sha256:" + "a" * 64),
        (
            "docker://h.example:443/o/r:1@sha256:" + "b" * 64,
            "h.example:443",
            "o/r",
            "1",
            "sha256:" + "b" * 64,
        ),
    ],
)
def test_reference_parsing(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Python:3", "Python:3: invalid repository name 'library/Python'"),
        ("x@sha256:zz", "x@sha256:zz: digest must be sha256:<64 hex>"),
        ("x:bad tag", "x:bad tag: invalid tag 'bad tag'"),
        ("a//b", "a//b: invalid repository name 'a//b'"),
    ],
)
def test_malformed_references_are_refused(text: str, message: str) -> None:
    with pytest.raises(ImageError) as caught:
        ImageReference.parse(text)
    assert str(caught.value) == message


@pytest.mark.docker
@pytest.mark.registry
def test_resolve_matches_docker_push_and_inspect(base_image_minbase: BaseImage, docker_daemon) -> None:
    resolved = RegistryClient().resolve(ImageReference.parse(base_image_minbase.ref))
    assert resolved.digest == base_image_minbase.digest
    layers = docker_daemon.client.images.get(base_image_minbase.local).attrs["RootFS"]["Layers"]
    assert list(resolved.diff_ids) == layers
    layer = resolved.layers[0]
    data = RegistryClient().read_blob(ImageReference.parse(base_image_minbase.ref), layer.digest)
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest


@pytest.mark.docker
@pytest.mark.registry
def test_auth_registry_with_docker_config(auth_base_image: BaseImage, auth_registry: Registry) -> None:
    ref = ImageReference.parse(auth_base_image.ref)
    resolved = RegistryClient(docker_config=auth_registry.docker_config).resolve(ref)
    assert resolved.digest == auth_base_image.digest
    with pytest.raises(SourceError) as caught:
        RegistryClient(docker_config=Path("/nonexistent")).resolve(ref)
    # The registry asks for basic auth and no credentials are configured: that, not a refusal, is the error.
    assert str(caught.value) == (
        f"registry {auth_registry.host} needs credentials for {ref.repository} "
        "and none are configured (hint: run `docker login` or pass a docker config)"
    )
    assert auth_registry.password not in str(caught.value)


@pytest.mark.docker
@pytest.mark.registry
def test_wrong_password_is_a_clear_error(
    auth_base_image: BaseImage, auth_registry: Registry, tmp_path: Path
) -> None:
    import base64
    import json

    token = base64.b64encode(b"mlenv:wrong-password").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    with pytest.raises(SourceError) as caught:
        RegistryClient(docker_config=tmp_path).resolve(ImageReference.parse(auth_base_image.ref))
    assert "refused the credentials" in str(caught.value) and "wrong-password" not in str(caught.value)


@pytest.mark.registry
def test_unknown_tag_names_the_image(registry: Registry) -> None:
    with pytest.raises(ImageError, match=f"image {registry.host}/nothing/here:1 not found"):
        RegistryClient().resolve(ImageReference.parse(f"{registry.host}/nothing/here:1"))
