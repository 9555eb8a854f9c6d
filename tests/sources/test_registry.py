"""The OCI distribution client against the real registry: digests, auth, blobs, errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlenv.errors import ImageError, SourceError
from mlenv.sources.http import timeouts
from mlenv.sources.python.index import SIMPLE_JSON, release_files
from mlenv.sources.registry import ImageReference, RegistryClient
from tests.corpus.registry import LAYER, LAYER_GZ, PASSWORD, USER, CorpusRegistry, sha
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


# ---------------------------------------------------------------- hostile registries and indexes (issue 20)


@pytest.fixture(scope="module")
def hostile() -> Iterator[CorpusRegistry]:
    with CorpusRegistry() as server:
        yield server


def _resolve_error(server: CorpusRegistry, behaviour: str, docker_config: Path | None = None) -> str:
    ref = ImageReference.parse(f"{server.host}/corpus/{behaviour}/img:1")
    with pytest.raises((SourceError, ImageError)) as caught:
        client = RegistryClient(docker_config=docker_config or Path("/nonexistent"))
        resolved = client.resolve(ref)
        for layer in resolved.layers:
            client.read_blob(ref, layer.digest)
    message = str(caught.value)
    assert "\n" not in message and f"{server.host}" in message, message
    return message


def test_a_good_image_resolves_and_reads(hostile: CorpusRegistry) -> None:
    ref = ImageReference.parse(f"{hostile.host}/corpus/good/img:1")
    client = RegistryClient(docker_config=Path("/nonexistent"))
    resolved = client.resolve(ref)
    assert resolved.diff_ids == (sha(LAYER),)
    assert client.read_blob(ref, resolved.layers[0].digest) == LAYER_GZ


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("garbage", "sent a manifest for .* that is not a JSON object"),
        ("list", "not a JSON object"),
        ("deep", "not a JSON object"),
        ("huge", "over 4 MiB; refused"),
        ("noconfig", "no list of descriptors in 'config'"),
        ("config-baddigest", "descriptor in 'config' without a sha256 digest"),
        ("layer-badsize", "malformed descriptor"),
        ("index-platform-str", "malformed descriptor"),
        ("index-nested", "an index inside the index"),
        ("config-garbage", "is not a JSON object"),
        ("config-huge", "over 8 MiB; refused"),
        ("config-rootfs-str", "rootfs.diff_ids"),
        ("config-mismatch", "does not match its digest"),
        ("blob-truncated", "broke off blob"),
        ("s500", "answered 500"),
        ("bearer-badtoken", "no usable token"),
        ("bearer-insecure", "not https"),
        ("redirect-loop", "too many redirects"),
        ("redirect-file", "redirected to a URL it cannot fetch"),
    ],
)
def test_hostile_answers_are_one_line_naming_the_image(
    hostile: CorpusRegistry, behaviour: str, expected: str
) -> None:
    assert re.search(expected, _resolve_error(hostile, behaviour))


def test_a_stalled_registry_times_out(hostile: CorpusRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLENV_HTTP_TIMEOUT", "1")
    assert "timed out" in _resolve_error(hostile, "slow")


def test_a_redirect_to_another_host_carries_no_credentials(hostile: CorpusRegistry, tmp_path: Path) -> None:
    hostile.write_docker_config(tmp_path, f"{USER}:{PASSWORD}")
    message = _resolve_error(hostile, "redirect-other", docker_config=tmp_path)
    assert "not found" in message and PASSWORD not in message
    assert hostile.leaks == []


def test_userinfo_in_a_reference_is_refused_and_never_shown() -> None:
    with pytest.raises(ImageError) as caught:
        ImageReference.parse("docker://me:s3cret@registry.example/o/r:1")
    assert str(caught.value).startswith("docker://registry.example/o/r:1: an image reference carries no")
    assert "s3cret" not in str(caught.value)


def test_http_timeout_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLENV_HTTP_TIMEOUT", "2")
    assert timeouts((10, 120)) == (2, 2)
    monkeypatch.setenv("MLENV_HTTP_TIMEOUT", "soon")
    assert timeouts((10, 120)) == (10, 120)


class _Page:
    """Enough of a requests.Response for the index client."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body, self.status_code = body, status
        self.headers = {"Content-Type": SIMPLE_JSON}

    def __enter__(self) -> _Page:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def iter_content(self, size: int) -> Iterator[bytes]:
        yield from (self.body[i : i + size] for i in range(0, len(self.body), size))


class _Session:
    def __init__(self, page: _Page) -> None:
        self.page = page

    def get(self, url: str, **_: object) -> _Page:
        return self.page


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>", "not JSON"),
        (b"[]", "without a list of files"),
        (b'{"files": {"a": 1}}', "without a list of files"),
        (b'{"files": [{"filename": 5, "url": "x"}]}', "wrong shape"),
        (b'{"files": [{"filename": "x-1.tar.gz"}]}', "wrong shape"),
        (b'{"files": [{"filename": "x-1.tar.gz", "url": "x", "hashes": []}]}', "wrong shape"),
        (b'{"files": [{"filename": "x-1.tar.gz", "url": "x", "upload-time": "noon"}]}', "upload-time"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_index_answers_of_the_wrong_shape(body: bytes, expected: str) -> None:
    with pytest.raises(SourceError) as caught:
        release_files(f"https://u:{PASSWORD}@index.example/simple", "x", "1", session=_Session(_Page(body)))
    assert expected in str(caught.value) and "https://index.example/simple/x/" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_index_reads_a_good_page() -> None:
    body = b'{"files": [{"filename": "x-1-py3-none-any.whl", "url": "x.whl", "hashes": {"sha256": "ab"}}]}'
    found = release_files("https://index.example/simple", "x", "1", session=_Session(_Page(body)))
    assert [(f.filename, f.url, f.sha256) for f in found] == [
        ("x-1-py3-none-any.whl", "https://index.example/simple/x/x.whl", "ab")
    ]
