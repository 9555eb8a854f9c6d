"""`mlenv lock` on an Ubuntu 22.04-style base (the python test base with Ubuntu's os-release, sources.list
and keyrings, and NVIDIA's CUDA repository in sources.list.d with its own keyring), its apt packages from a
local archive laid out as Ubuntu's and a local repository laid out as NVIDIA's (tests/resolve/ubuntu_archive).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from mlenv.model.labels import LABEL_DRIVER_FLOOR
from tests.helpers import WRITE_HOME_AND_CACHES, derive_image, lock_tag, run_cli, session_tag
from tests.resolve.ubuntu_archive import UbuntuServed, ubuntu_served_fixture  # noqa: F401  (the fixture)
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, push_image
from tools.localbase.registry import Registry
from tools.localbase.ubuntu import CUDA_KEYRING, UBUNTU_TRUSTED, ubuntu_base_context

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.network]

SPEC = """\
name = "ubuntu-cuda-apt"
# A day after the test archive's Releases. With no as-of, verify expects useradd's shadow line for day 0,
# which useradd writes with an empty last-change field (see the report of this work).
as-of = 2024-10-02T00:00:00Z

[base]
image = "{base}"
platforms = ["linux/amd64"]

# No Python pin: the build then has no wheels directory to copy and nothing for pip to install.
[python]
requirements = []

[apt]
packages = ["hello", "libgomp1", "tree", "figlet"]
mirror = "{mirror}"

[cuda]
version = "none"
"""


@pytest.fixture(scope="module")
def ubuntu_base(
    docker_daemon: Daemon,
    registry: Registry,
    base_image_python: BaseImage,
    ubuntu_served: UbuntuServed,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    """The Ubuntu-style base, pushed to the session's registry (its cuda source names this run's port)."""
    context = tmp_path_factory.mktemp("ubuntu-base")
    lines = ubuntu_base_context(
        context,
        archive_key=ubuntu_served.archive_key.binary,
        cuda_key=ubuntu_served.cuda_key.binary,
        cuda_uri=ubuntu_served.cuda_uri(),
    )
    local = session_tag("jammy-style", base_image_python.ref, ubuntu_served.url.rsplit(":", 1)[1])
    derive_image(docker_daemon, context, base_image_python.local, local, lines)
    push_image(docker_daemon.client, local, registry.host, "mlenv-test/jammy-style", "1")
    return f"{registry.host}/mlenv-test/jammy-style:1"


@pytest.fixture(scope="module")
def project(ubuntu_base: str, ubuntu_served: UbuntuServed, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spec, locked."""
    project = tmp_path_factory.mktemp("ubuntu-project")
    (project / "mlenv.toml").write_text(SPEC.format(base=ubuntu_base, mirror=ubuntu_served.mirror))
    # Ubuntu's snapshot service cannot be reached from here: nothing listens on port 1, so the lock says
    # at once that its pockets were resolved from the mirror (the flat repository has no snapshots).
    env = dict(os.environ, MLENV_SNAPSHOT_URL="http://127.0.0.1:1/archive")
    result = run_cli("lock", str(project), env=env)
    assert result.code == 0, result.stderr[-3000:]
    return project


def test_lock_on_an_ubuntu_base_records_the_ubuntu_pockets_and_the_nvidia_repository(
    project: Path, ubuntu_served: UbuntuServed
) -> None:
    lock = read_lock(project / "mlenv.lock")

    assert [(p.os_id, p.os_version) for p in lock.base.platforms] == [("ubuntu", "22.04")]
    by_suite = {s.suite: s for s in lock.apt.sources}
    assert sorted(by_suite) == ["/", "jammy", "jammy-security", "jammy-updates"]
    for pocket in ("jammy", "jammy-updates", "jammy-security"):
        source = by_suite[pocket]
        assert source.mirror == ubuntu_served.mirror and source.signed_by == UBUNTU_TRUSTED
        assert source.components == ("main", "restricted", "universe", "multiverse")
        assert source.resolved_from == "mirror"
        assert source.snapshot is not None and source.snapshot.startswith(
            "https://snapshot.ubuntu.com/ubuntu/"
        )
    cuda = by_suite["/"]
    assert cuda.mirror == ubuntu_served.cuda_uri() and cuda.signed_by == CUDA_KEYRING
    assert cuda.no_snapshot and cuda.snapshot is None and cuda.components == ()

    pins = {p.name: p for p in lock.apt.packages}
    assert {"hello", "libgomp1", "tree", "figlet"} <= set(pins)
    assert all(pins[n].requested for n in ("hello", "libgomp1", "tree", "figlet"))
    figlet = ubuntu_served.debs["figlet"]
    assert pins["figlet"].url == f"{ubuntu_served.cuda_uri()}/{figlet.path.name}"
    assert pins["figlet"].sha256 == figlet.control.split("SHA256: ")[1].split()[0]
    assert pins["hello"].filename.startswith("pool/main/h/hello/") and pins["hello"].url is None
    # A second lock reads the same: `lock --check` finds it current.
    check = run_cli("lock", str(project), "--check")
    assert check.code == 0, check.stderr[-2000:]


def test_the_lock_builds_and_the_image_verifies(project: Path, docker_daemon: Daemon) -> None:
    """One build: every .deb fetched by hash (the NVIDIA one from its recorded URL), installed on the
    Ubuntu-style base, and `mlenv verify` finds the image reproduces the lock."""
    tag = lock_tag("ubuntu-cuda-apt", project / "mlenv.lock")
    built = run_cli("build", str(project), "--tag", tag)
    assert built.code == 0, built.stderr[-3000:]
    verified = run_cli("verify", f"docker-daemon:{tag}", "--lock", str(project / "mlenv.lock"))
    assert verified.code == 0, verified.stdout[-2000:] + verified.stderr[-2000:]
    ran = docker_daemon.client.containers.run(tag, ["figlet", "-v"], remove=True, entrypoint=[])
    assert b"FIGlet" in ran


def test_the_vault_keeps_the_nvidia_deb_by_its_sha256(
    project: Path, ubuntu_served: UbuntuServed, tmp_path: Path
) -> None:
    """NVIDIA's repository has no snapshots: once it drops a version, the vault is where the .deb is."""
    env = dict(os.environ, MLENV_CACHE=str(tmp_path / "cache"))  # nothing cached: fetched from its URL
    pushed = run_cli("vault", "push", f"dir:{tmp_path / 'vault'}", str(project), env=env)
    assert pushed.code == 0, pushed.stderr[-2000:]
    lock = read_lock(project / "mlenv.lock")
    figlet = next(p for p in lock.apt.packages if p.name == "figlet")
    blob = tmp_path / "vault" / "blobs" / "sha256" / figlet.sha256
    assert blob.read_bytes() == ubuntu_served.debs["figlet"].path.read_bytes()
    assert any(r.endswith(f"/x86_64/{figlet.filename}") for r in ubuntu_served.requests)


TORCH_SPEC = """\
name = "ubuntu-torch"
as-of = 2024-10-02T00:00:00Z

[base]
image = "{base}"
platforms = ["linux/amd64"]

[python]
requirements = ["torch==2.3.1", "fastapi==0.111.0"]

[apt]
packages = ["hello", "figlet"]
mirror = "{mirror}"

[cuda]
version = "12.1"
"""


def test_a_torch_cuda_service_locks_on_the_ubuntu_base(
    ubuntu_base: str, ubuntu_served: UbuntuServed, tmp_path: Path
) -> None:
    """The GPU service's lock (metadata only: no wheel is downloaded) on the Ubuntu-style base: the CUDA
    stack from the wheels, the apt pins from Ubuntu's pockets and NVIDIA's repository."""
    project = tmp_path / "torch"
    project.mkdir()
    (project / "mlenv.toml").write_text(TORCH_SPEC.format(base=ubuntu_base, mirror=ubuntu_served.mirror))
    env = dict(os.environ, MLENV_SNAPSHOT_URL="http://127.0.0.1:1/archive")
    result = run_cli("lock", str(project), env=env)
    assert result.code == 0, result.stderr[-3000:]
    lock = read_lock(project / "mlenv.lock")
    assert lock.cuda.release == "12.1" and lock.cuda.torch_label == "+cu121"
    assert {c.name for c in lock.cuda.components} >= {"runtime", "cudnn", "nccl"}
    assert next(p for p in lock.python.packages if p.name == "torch").version == "2.3.1"
    assert sorted(s.suite for s in lock.apt.sources) == ["/", "jammy", "jammy-security", "jammy-updates"]
    assert {p.name: p.url is not None for p in lock.apt.packages} == {"hello": False, "figlet": True}


CUDA_SPEC = """\
name = "ubuntu-cuda-service"
as-of = 2024-10-02T00:00:00Z

[base]
image = "{base}"
platforms = ["linux/amd64"]

# The CUDA runtime wheel alone (800 KB) stands for torch's stack: the lock's CUDA section, the image's
# NVIDIA variables and the floor label follow from it as they do from torch's 3 GB (bench/build.py --torch).
[python]
requirements = ["nvidia-cuda-runtime-cu12==12.1.105"]

[apt]
packages = ["figlet"]
mirror = "{mirror}"

[cuda]
version = "12.1"

[app]
copy = ["app"]
workdir = "/app"
cmd = ["python", "-m", "app.main"]
user = "app"
"""


def test_a_cuda_service_on_the_ubuntu_base_builds_verifies_and_is_ready_for_a_gpu_node(
    ubuntu_base: str, ubuntu_served: UbuntuServed, docker_daemon: Daemon, tmp_path: Path
) -> None:
    """A CUDA lock on the Ubuntu-style base with a package from NVIDIA's repository: built and verified;
    the image declares the GPUs, the capabilities and the driver floor, and the service user can write
    its HOME and every ML cache (the GPU itself is not reachable here: see the README)."""
    project = tmp_path / "cuda-service"
    (project / "app").mkdir(parents=True)
    (project / "app" / "__init__.py").write_text("")
    (project / "app" / "main.py").write_text("print('ready')\n")
    (project / "mlenv.toml").write_text(CUDA_SPEC.format(base=ubuntu_base, mirror=ubuntu_served.mirror))
    env = dict(os.environ, MLENV_SNAPSHOT_URL="http://127.0.0.1:1/archive")
    locked = run_cli("lock", str(project), env=env)
    assert locked.code == 0, locked.stderr[-3000:]
    lock = read_lock(project / "mlenv.lock")
    assert lock.cuda.release == "12.1" and lock.cuda.min_driver == "530.30.02"

    tag = lock_tag("ubuntu-cuda-service", project / "mlenv.lock")
    built = run_cli("build", str(project), "--tag", tag)
    assert built.code == 0, built.stderr[-3000:]
    verified = run_cli(
        "verify", f"docker-daemon:{tag}", "--lock", str(project / "mlenv.lock"), "--project", str(project)
    )
    assert verified.code == 0, verified.stdout[-2000:] + verified.stderr[-2000:]

    config = docker_daemon.client.images.get(tag).attrs["Config"]
    env_vars = dict(e.split("=", 1) for e in config["Env"])
    assert env_vars["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env_vars["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"  # no ffmpeg: no video
    assert env_vars["NVIDIA_REQUIRE_CUDA"] == "cuda>=12.1,driver>=530.30.02"
    assert config["Labels"][LABEL_DRIVER_FLOOR] == "530.30.02"
    script = f"{WRITE_HOME_AND_CACHES}; figlet -v | head -1"
    out = docker_daemon.client.containers.run(
        tag, ["-c", script], entrypoint="/bin/sh", remove=True, network_mode="none"
    ).decode()
    assert out.splitlines()[0] == "10001 /home/app" and "FIGlet" in out
