"""Fetch by hash with fallbacks (cache, mirror pool, snapshot pool, vault) and the directory vault, against
a real local HTTP server: every file checked against the lock's sha256 wherever it came from, and one line
naming the pin and every place tried when none has it."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlenv.build.artifacts import apt_artifacts, fetch
from mlenv.build.vault import (
    ARTIFACT_TYPE,
    TITLE,
    DirectoryStore,
    RegistryStore,
    Vault,
    open_vault,
    push_vault,
    vault_store,
)
from mlenv.errors import BuildError, SourceError
from mlenv.model.lock import AptPin, AptSource, Lock, LockedApt, LockedModel
from mlenv.sources.cas import ContentStore
from mlenv.sources.registry import ImageReference, RegistryClient
from tests.lockdata import full_lock
from tools.localbase.registry import Registry

POOL = "pool/main/h/hello/hello_2.10-3_amd64.deb"
STAMP = "20240601T000000Z"


@dataclass(frozen=True)
class Server:
    url: str
    root: Path
    requests: list[str]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_port}", root, requests)
    finally:
        httpd.shutdown()
        httpd.server_close()


DEB = b"!<arch>\nnot really a deb, but the hash is what decides\n"


def _lock(server: Server, content: bytes = DEB) -> Lock:
    """A lock pinning one .deb, from a mirror and a snapshot on the local server; no Python, no base."""
    pin = AptPin(
        name="hello",
        version="2.10-3",
        architecture="amd64",
        filename=POOL,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        requested=True,
    )
    source = AptSource(
        mirror=f"{server.url}/mirror/debian",
        suite="bookworm",
        components=("main",),
        snapshot=f"{server.url}/snapshot/debian/{STAMP}/",
        snapshot_timestamp=STAMP,
        resolved_from="mirror",
    )
    return replace(
        full_lock(),
        base=None,
        apt=LockedApt(sources=(source,), packages=(pin,)),
        python=replace(full_lock().python, packages=()),
        models=(),
    )


def _serve(server: Server, where: str, content: bytes = DEB) -> None:
    path = server.root / where / POOL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def test_a_deb_the_mirror_dropped_is_fetched_from_the_snapshot_archive(
    server: Server, tmp_path: Path
) -> None:
    _serve(server, f"snapshot/debian/{STAMP}")
    store = ContentStore(tmp_path / "cas")
    found = fetch(apt_artifacts(_lock(server)), store, lambda _: None)
    assert found["hello_2.10-3_amd64.deb"].read_bytes() == DEB
    assert server.requests == [f"/mirror/debian/{POOL}", f"/snapshot/debian/{STAMP}/{POOL}"]
    # Now cached: nothing is asked again.
    fetch(apt_artifacts(_lock(server)), store, lambda _: None)
    assert len(server.requests) == 2


def test_when_every_place_fails_one_line_names_the_pin_and_each_place(server: Server, tmp_path: Path) -> None:
    vault_dir = tmp_path / "vault"
    DirectoryStore(vault_dir).put_manifest(
        json.dumps({"artifactType": ARTIFACT_TYPE, "layers": []}).encode(), "t"
    )
    store = ContentStore(tmp_path / "cas", fallback=open_vault(f"dir:{vault_dir}"))
    with pytest.raises(BuildError) as caught:
        fetch(apt_artifacts(_lock(server)), store, lambda _: None)
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"cannot fetch hello 2.10-3 (hello_2.10-3_amd64.deb): not in the cache ({tmp_path / 'cas'}); "
        f"{server.url}/mirror/debian/{POOL}: HTTP 404; "
        f"{server.url}/snapshot/debian/{STAMP}/{POOL}: HTTP 404; "
        f"vault dir:{vault_dir}: absent"
    )


def test_a_file_served_with_other_bytes_is_refused_whatever_its_source(
    server: Server, tmp_path: Path
) -> None:
    _serve(server, "mirror/debian", b"tampered")
    with pytest.raises(BuildError, match=r"hello_2\.10-3_amd64\.deb: sha256 is [0-9a-f]{64}, the lock says"):
        fetch(apt_artifacts(_lock(server)), ContentStore(tmp_path / "cas"), lambda _: None)
    assert not list((tmp_path / "cas").rglob("*.deb"))


def _pushed(server: Server, tmp_path: Path) -> tuple[Lock, Path]:
    """A lock with a .deb and a baked model, pushed to a directory vault while the mirror serves the .deb."""
    _serve(server, "mirror/debian")
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    model = b"weights" * 100
    (project / "models" / "m.bin").write_bytes(model)
    lock = replace(
        _lock(server),
        models=(
            LockedModel(
                source="models/m.bin",
                target="/app/models/m.bin",
                strategy="bake",
                sha256=hashlib.sha256(model).hexdigest(),
                size=len(model),
            ),
        ),
    )
    vault = tmp_path / "vault"
    push_vault(
        lock,
        project,
        DirectoryStore(vault),
        client=None,
        store=ContentStore(tmp_path / "cas"),
        progress=lambda _: None,
    )
    return lock, vault


def test_a_directory_vault_is_an_oci_layout_with_one_annotated_artifact(
    server: Server, tmp_path: Path
) -> None:
    lock, vault = _pushed(server, tmp_path)
    index = json.loads((vault / "index.json").read_text())
    (descriptor,) = index["manifests"]
    assert descriptor["artifactType"] == ARTIFACT_TYPE
    manifest = json.loads(
        (vault / "blobs" / "sha256" / descriptor["digest"].removeprefix("sha256:")).read_bytes()
    )
    titles = {layer["annotations"][TITLE]: layer["digest"] for layer in manifest["layers"]}
    assert titles == {
        "debs/hello_2.10-3_amd64.deb": f"sha256:{lock.apt.packages[0].sha256}",
        "models/app/models/m.bin": f"sha256:{lock.models[0].sha256}",
    }
    for digest in titles.values():
        blob = vault / "blobs" / "sha256" / digest.removeprefix("sha256:")
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == digest
    assert json.loads((vault / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    # The same lock pushed again: the same manifest, byte for byte.
    before = (vault / "index.json").read_bytes()
    push_vault(
        lock,
        tmp_path / "project",
        DirectoryStore(vault),
        client=None,
        store=ContentStore(tmp_path / "cas"),
        progress=lambda _: None,
    )
    assert (vault / "index.json").read_bytes() == before


def test_a_build_store_takes_every_file_from_the_vault_and_asks_no_url(
    server: Server, tmp_path: Path
) -> None:
    lock, vault = _pushed(server, tmp_path)
    (server.root / "mirror" / "debian" / POOL).unlink()  # the mirror no longer serves it
    asked = len(server.requests)
    store = vault_store(open_vault(f"dir:{vault}"), tmp_path / "fresh-cas")
    found = fetch(apt_artifacts(lock), store, lambda _: None)
    assert found["hello_2.10-3_amd64.deb"].read_bytes() == DEB
    assert len(server.requests) == asked  # no URL was tried
    # Without the vault, the same lock cannot be fetched, and the line says where it looked.
    with pytest.raises(BuildError, match=r"^cannot fetch hello 2\.10-3 \(hello_2\.10-3_amd64\.deb\): not in"):
        fetch(apt_artifacts(lock), ContentStore(tmp_path / "empty-cas"), lambda _: None)


def test_a_corrupt_vault_blob_is_refused(server: Server, tmp_path: Path) -> None:
    lock, vault = _pushed(server, tmp_path)
    (vault / "blobs" / "sha256" / lock.apt.packages[0].sha256).write_bytes(b"rotted")
    store = vault_store(open_vault(f"dir:{vault}"), tmp_path / "fresh-cas")
    with pytest.raises(BuildError, match="sha256 is .*, the lock says"):
        fetch(apt_artifacts(lock), store, lambda _: None)


def test_a_directory_that_is_not_a_vault_is_named(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=f"vault dir:{tmp_path}: no vault here"):
        Vault(DirectoryStore(tmp_path))


@pytest.mark.registry
def test_a_registry_vault_with_credentials_round_trips(
    server: Server, tmp_path: Path, auth_registry: Registry
) -> None:
    """Push (HEAD, POST, PUT of blobs and the manifest) and read back through the registry's auth."""
    _serve(server, "mirror/debian")
    lock = _lock(server)
    client = RegistryClient(docker_config=auth_registry.docker_config)
    ref = ImageReference.parse(f"{auth_registry.host}/vault/auth-test:v1")
    pushed = push_vault(
        lock,
        tmp_path,
        RegistryStore(ref, client),
        client=client,
        store=ContentStore(tmp_path / "cas"),
        progress=lambda _: None,
    )
    assert pushed.files == 1
    anonymous = RegistryClient(docker_config=tmp_path / "no-config")
    with pytest.raises(SourceError, match="needs credentials"):
        open_vault(str(ref), lambda: anonymous)
    store = vault_store(open_vault(str(ref), lambda: client), tmp_path / "fresh")
    assert fetch(apt_artifacts(lock), store, lambda _: None)["hello_2.10-3_amd64.deb"].read_bytes() == DEB
