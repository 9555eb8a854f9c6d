"""The vault end to end, on the real engine, a loopback registry, PyPI and the Debian mirror.

A small project (a wheel from PyPI, a .deb from the Debian mirror, a baked model) is locked and built;
its lock is pointed at a local copy of the mirror's pool. `mlenv vault push` stores every artifact in the
loopback registry that also serves the base. Then the local mirror stops serving the .deb (as Debian
drops superseded versions): without the vault the build fails with one line naming the package, its
version and each place tried; with `--vault` and an empty cache, run in a network namespace that holds
only loopback (`unshare -n`: the registry is served there from the same storage, the engine's socket is
a file), the build gives the image ID of the first build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlenv.build.vault import ARTIFACT_TYPE, TITLE, base_name, ensure_base, open_vault
from mlenv.lockfile import read_lock
from mlenv.model.lock import Lock
from mlenv.sources import engine
from mlenv.sources.cas import ContentStore
from mlenv.sources.http import download_chunks
from mlenv.sources.registry import ImageReference, RegistryClient
from tests.conftest import missing
from tests.helpers import run_cli
from tests.infra import required
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, push_image, repository
from tools.localbase.registry import Registry, serve_registry

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

SPEC = """\
name = "vaulted"

[base]
image = "{base}"
platforms = ["linux/amd64"]

[python]
requirements = ["six==1.16.0"]

[apt]
packages = ["libgomp1"]

[cuda]
version = "none"

[app]
copy = ["app"]
workdir = "/app"
cmd = ["python", "-m", "app.main"]

[[app.models]]
source = "models/weights.bin"
target = "/app/models/weights.bin"
strategy = "bake"
"""


@pytest.fixture(scope="module")
def local_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("mirror")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/debian", root / "debian"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Path]]:
    """A registry of this module's (its storage known, to serve it again inside the namespace)."""
    directory = tmp_path_factory.mktemp("vault-registry")
    with required(), serve_registry(directory) as served:
        yield served, directory


# Run inside `unshare -n`: loopback up, the registry served again from its storage on the same address,
# then `mlenv build`; the namespace has no other interface, so nothing else can be reached.
IN_NAMESPACE = """
import subprocess, sys, time, requests
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
config, host, *build = sys.argv[1:]
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
registry = subprocess.Popen(["docker-registry", "serve", config], **quiet)
try:
    for _ in range(100):
        try:
            if requests.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    probe = "import socket; socket.create_connection(('pypi.org', 443), 3)"
    outside = subprocess.run([sys.executable, "-c", probe], capture_output=True)
    assert outside.returncode != 0, "the namespace reaches pypi.org"
    sys.exit(subprocess.run([sys.executable, "-m", "mlenv", *build]).returncode)
finally:
    registry.terminate()
    registry.wait(10)
"""


def _build_loopback_only(project: Path, cache: Path, registry_dir: Path, *extra: str) -> tuple[int, str, str]:
    """`mlenv build` in a network namespace holding only loopback, the registry served there."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        missing("unshare", "util-linux's unshare and iproute2's ip make the loopback-only namespace")
    config = (registry_dir / "config.yml").read_text()
    host = re.search(r"addr: ([0-9.:]+)", config)
    assert host is not None
    inside = registry_dir / "config-namespace.yml"
    inside.write_text(
        config.replace(
            "delete: {enabled: true}",
            "maintenance: {readonly: {enabled: true}, uploadpurging: {enabled: false}}",
        )
    )
    args = ["build", str(project), "--format", "json", "--no-cache", "--no-verify", *extra]
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", IN_NAMESPACE, str(inside), host.group(1), *args],
        capture_output=True,
        text=True,
        env=_env(cache),
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


def _env(cache: Path) -> dict[str, str]:
    return dict(os.environ, MLENV_CACHE=str(cache))


def _build(project: Path, cache: Path, *extra: str) -> tuple[int, str, str]:
    # Verify is left out: what is asserted is the image ID, equal to the first build's.
    built = run_cli(
        "build", str(project), "--format", "json", "--no-cache", "--no-verify", *extra, env=_env(cache)
    )
    return built.code, built.stdout, built.stderr


@dataclass(frozen=True)
class Vaulted:
    project: Path
    lock: Lock
    mirror_url: str
    vault: str
    first: str  # the image ID of the first build, from the mirror and PyPI
    work: Path
    registry_dir: Path


@pytest.fixture(scope="module")
def vaulted(
    docker_daemon: Daemon,
    own_registry: tuple[Registry, Path],
    base_image_python: BaseImage,
    local_mirror: tuple[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Vaulted:
    """The project locked, built once, pushed to a vault in the loopback registry; then the local mirror
    stops serving its .debs (as Debian drops superseded versions)."""
    mirror_url, mirror_root = local_mirror
    registry, registry_dir = own_registry
    # The base is served by the same registry as the vault: in the namespace it is the one reachable.
    push_image(docker_daemon.client, base_image_python.local, registry.host, repository("python"), "1")
    base = f"{registry.host}/{repository('python')}:1"
    work = tmp_path_factory.mktemp("vaulted")
    project = work / "vaulted"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "main.py").write_text("import six\nprint(six.__version__)\n")
    (project / "models").mkdir()
    (project / "models" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (project / "mlenv.toml").write_text(SPEC.format(base=base))

    locked = run_cli("lock", str(project), env=_env(work / "cache-lock"))
    assert locked.code == 0, locked.stderr[-2000:]
    # The lock's .debs come from a mirror this test controls: a copy of the Debian mirror's pool files.
    lock_path = project / "mlenv.lock"
    lock = read_lock(lock_path)
    (source,) = lock.apt.sources
    lock_path.write_text(
        lock_path.read_text().replace(f'mirror = "{source.mirror}"', f'mirror = "{mirror_url}"')
    )
    lock = read_lock(lock_path)
    assert lock.apt.sources[0].mirror == mirror_url
    store = ContentStore(work / "cache-lock" / "cas")
    for pin in lock.apt.packages:
        target = mirror_root / pin.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        cached = store.get(pin.sha256)
        if cached is None:  # the lock does not download .debs: fetch it once from the real mirror
            cached = store.put_stream(
                pin.sha256, download_chunks(f"{source.mirror}/{pin.filename}"), what=pin.name
            )
        shutil.copyfile(cached, target)

    code, out, err = _build(project, work / "cache-first")
    assert code == 0, err[-3000:]
    first = json.loads(out)["image-id"]

    vault = f"{registry.host}/vault/vaulted:v1"
    pushed = run_cli("vault", "push", vault, str(project), env=_env(work / "cache-first"))
    assert pushed.code == 0, pushed.stderr[-2000:]
    for pin in lock.apt.packages:
        (mirror_root / pin.filename).unlink()
    return Vaulted(
        project=project,
        lock=lock,
        mirror_url=mirror_url,
        vault=vault,
        first=first,
        work=work,
        registry_dir=registry_dir,
    )


def test_the_vault_is_one_oci_artifact_holding_every_locked_file(vaulted: Vaulted) -> None:
    lock = vaulted.lock
    opened = open_vault(vaulted.vault, RegistryClient)
    titles = {f.title: f.sha256 for f in opened.files.values()}
    assert {f"debs/{p.filename.rsplit('/', 1)[-1]}" for p in lock.apt.packages} <= set(titles)
    assert {f"wheels/{w.name}" for p in lock.python.packages for w in p.wheels} <= set(titles)
    assert titles["models/app/models/weights.bin"] == lock.models[0].sha256
    assert lock.base is not None
    config = lock.base.platforms[0].config_digest.removeprefix("sha256:")
    assert titles["base/linux-amd64/config.json"] == config
    manifest = RegistryClient().get_manifest(ImageReference.parse(vaulted.vault))
    assert manifest.data["artifactType"] == ARTIFACT_TYPE
    assert all(TITLE in layer["annotations"] for layer in manifest.data["layers"])


def test_a_directory_vault_of_the_lock_holds_the_same_artifact(vaulted: Vaulted) -> None:
    """`dir:PATH` stores the same manifest, byte for byte (one lock, one vault digest), as an OCI layout."""
    directory = vaulted.work / "dir-vault"
    pushed = run_cli(
        "vault",
        "push",
        f"dir:{directory}",
        str(vaulted.project),
        "--format",
        "json",
        env=_env(vaulted.work / "cache-first"),
    )
    assert pushed.code == 0, pushed.stderr[-2000:]
    in_registry = RegistryClient().get_manifest(ImageReference.parse(vaulted.vault)).digest
    assert json.loads(pushed.stdout)["digest"] == in_registry
    index = json.loads((directory / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [in_registry]
    opened = open_vault(f"dir:{directory}")
    assert opened.files == open_vault(vaulted.vault, RegistryClient).files


def test_with_the_vault_in_a_loopback_only_namespace_the_build_gives_the_first_image_id(
    vaulted: Vaulted,
) -> None:
    code, out, err = _build_loopback_only(
        vaulted.project, vaulted.work / "cache-vault", vaulted.registry_dir, "--vault", vaulted.vault
    )
    assert code == 0, err[-3000:]
    assert json.loads(out)["image-id"] == vaulted.first


def test_without_the_vault_one_line_names_the_deb_its_version_and_each_place(vaulted: Vaulted) -> None:
    deb = vaulted.lock.apt.packages[0]
    (source,) = vaulted.lock.apt.sources
    code, _, err = _build(vaulted.project, vaulted.work / "cache-without-vault")
    assert code == 2
    lines = [line for line in err.splitlines() if "cannot fetch" in line]
    assert len(lines) == 1, err[-2000:]
    assert f"cannot fetch {deb.name} {deb.version} (" in lines[0]
    assert f"{vaulted.mirror_url}/{deb.filename}: HTTP 404" in lines[0] and "not in the cache" in lines[0]
    assert source.snapshot is not None and source.snapshot in lines[0]


def test_the_base_comes_back_from_the_vault_with_its_image_id(
    docker_daemon: Daemon, registry: Registry, base_image_python: BaseImage, tmp_path: Path
) -> None:
    """The vault's base blobs, assembled as a docker-archive and loaded, are the locked base: the engine
    names the image by its config's digest. And the registry vault holds the base's manifest by its own
    digest, so the engine can pull it from there. (The engine already holds the base's layers, so it
    does not read them again: their bytes are checked against their digests by the vault reader.)"""
    project = tmp_path / "base-only"
    project.mkdir()
    (project / "mlenv.toml").write_text(
        f'name = "base-only"\n[base]\nimage = "{base_image_python.ref}"\nplatforms = ["linux/amd64"]\n'
        '[cuda]\nversion = "none"\n'
    )
    locked = run_cli("lock", str(project), env=_env(tmp_path / "cache"))
    assert locked.code == 0, locked.stderr[-2000:]
    lock = read_lock(project / "mlenv.lock")
    assert lock.base is not None
    vault = f"{registry.host}/vault/base-only:v1"
    pushed = run_cli("vault", "push", vault, str(project), env=_env(tmp_path / "cache"))
    assert pushed.code == 0, pushed.stderr[-2000:]
    platform = lock.base.platforms[0]
    stale = base_name(lock, "linux/amd64")
    if docker_daemon.client.images.list(name=stale):
        docker_daemon.client.images.remove(stale)  # an earlier session's: the load is what is tested
    with engine.connect() as docker_engine:
        name = ensure_base(open_vault(vault, RegistryClient), docker_engine, lock, "linux/amd64")
    assert docker_daemon.client.images.get(name).id == platform.config_digest
    pulled = docker_daemon.client.images.pull(f"{registry.host}/vault/base-only@{platform.manifest_digest}")
    assert pulled.id == platform.config_digest
