"""A base image that carries CUDA the way nvidia/cuda images do (their env, the /usr/local/cuda ->
cuda-12.1 layout, versioned library files, dpkg entries of NVIDIA's packages), made on the cached
debootstrap tree: the observer reads its stack, and locks that disagree with it are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlenv.lockfile import read_lock
from mlenv.model.facts import EnvFacts
from mlenv.observe import observe_image
from mlenv.resolve.cuda import toolkit_floor
from mlenv.verify.compare import compare, drift_line
from tests.helpers import run_cli, session_tag
from tests.observe.images import build
from tools.localbase.dockerd import Daemon
from tools.localbase.images import BaseImage, push_image
from tools.localbase.registry import Registry

pytestmark = [pytest.mark.docker, pytest.mark.registry]

CUDA_ENV = {
    "NVARCH": "x86_64",
    "NVIDIA_REQUIRE_CUDA": "cuda>=12.1 brand=tesla,driver>=470,driver<471",
    "NV_CUDA_CUDART_VERSION": "12.1.105-1",
    "CUDA_VERSION": "12.1.1",
    "NV_CUDNN_VERSION": "8.9.0.131",
    "NV_CUDNN_PACKAGE_NAME": "libcudnn8",
    "NV_CUDNN_PACKAGE": "libcudnn8=8.9.0.131-1+cuda12.1",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
    "PATH": (
        "/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ),
}
DPKG = {
    "cuda-cudart-12-1": "12.1.105-1",
    "libcudnn8": "8.9.0.131-1+cuda12.1",
    "libcublas-12-1": "12.1.3.1-1",
    "libnccl2": "2.17.1-1+cuda12.1",
}
LIB = "usr/lib/x86_64-linux-gnu"
CUDA_LIB = "usr/local/cuda-12.1/targets/x86_64-linux/lib"
# Stub libraries: the observer reads names and sizes, never the code. cuDNN 8 is several files.
STUBS = {
    f"{CUDA_LIB}/libcudart.so.12.1.105": 1000,
    f"{LIB}/libcudnn.so.8.9.0": 1_000_000,
    f"{LIB}/libcudnn_ops_infer.so.8.9.0": 2_000_000,
    f"{CUDA_LIB}/libcublas.so.12.1.3.1": 1000,
    f"{LIB}/libnccl.so.2.17.1": 1000,
}
LINKS = (
    ("cuda-12.1", "/usr/local/cuda"),
    ("targets/x86_64-linux/lib", "/usr/local/cuda-12.1/lib64"),
    ("libcudart.so.12.1.105", f"/{CUDA_LIB}/libcudart.so.12"),
    ("libcudnn.so.8.9.0", f"/{LIB}/libcudnn.so.8"),
    ("libcudnn_ops_infer.so.8.9.0", f"/{LIB}/libcudnn_ops_infer.so.8"),
)


def dpkg_paragraphs(packages: dict[str, str]) -> str:
    return "".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\n"
        f"Installed-Size: 100\nMaintainer: cudatools <cudatools@nvidia.com>\nArchitecture: amd64\n"
        f"Version: {version}\nDescription: stand-in for NVIDIA's {name}\n\n"
        for name, version in sorted(packages.items())
    )


def cuda_dockerfile(base: str, links: tuple[tuple[str, str], ...]) -> str:
    env = " ".join(f'{key}="{value}"' for key, value in CUDA_ENV.items())
    commands = [
        "cat /tmp/nvidia-status >> /var/lib/dpkg/status",
        "rm /tmp/nvidia-status",
        *(f"ln -s {target} {link}" for target, link in links),
    ]
    return f"FROM {base}\nENV {env}\nCOPY rootfs/ /\nRUN {' && '.join(commands)}\n"


def make_cuda_image(
    daemon: Daemon,
    context: Path,
    base: str,
    tag: str,
    stubs: dict[str, int],
    dpkg: dict[str, str],
    links: tuple[tuple[str, str], ...] = (),
) -> str:
    shutil.rmtree(context, ignore_errors=True)
    for relative, size in stubs.items():
        path = context / "rootfs" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x7fELF" + bytes(size - 4))
    (context / "rootfs" / "tmp").mkdir(parents=True, exist_ok=True)
    (context / "rootfs" / "tmp" / "nvidia-status").write_text(dpkg_paragraphs(dpkg))
    build(daemon.client, base, tag, context, cuda_dockerfile(base, links))
    return tag


def marked_tag(base: BaseImage) -> str:
    """The engine's tag of the CUDA-marked image made on `base` in this session."""
    return session_tag("cuda-marked", base.ref, "12.1")


@pytest.fixture(scope="module")
def cuda_base(
    docker_daemon: Daemon,
    registry: Registry,
    base_image_python: BaseImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    local = make_cuda_image(
        docker_daemon,
        tmp_path_factory.mktemp("cuda-image"),
        base_image_python.local,
        marked_tag(base_image_python),
        STUBS,
        DPKG,
        LINKS,
    )
    push_image(docker_daemon.client, local, registry.host, "mlenv-test/cuda-marked", "12.1")
    return f"{registry.host}/mlenv-test/cuda-marked:12.1"


def test_observer_reads_the_cuda_stack(cuda_base: str, base_image_python: BaseImage) -> None:
    facts = observe_image(f"docker://{cuda_base}")
    stack = {c.name: (c.version, c.source) for c in facts.cuda}
    assert stack["cuda"] == ("12.1.1", "image:env:CUDA_VERSION")
    # the file name says 8.9.0, dpkg says 8.9.0.131: the precise one is kept
    assert stack["cudnn"] == ("8.9.0.131", "dpkg:libcudnn8")
    assert stack["runtime"][0] == "12.1.105" and stack["runtime"][1].endswith("/libcudart.so.12.1.105")
    assert stack["cublas"][0] == "12.1.3.1" and stack["nccl"][0] == "2.17.1"
    assert set(stack) == {"cuda", "cudnn", "runtime", "cublas", "nccl"}
    daemon_facts = observe_image(f"docker-daemon:{marked_tag(base_image_python)}")
    assert {c.name: c.version for c in daemon_facts.cuda} == {k: v[0] for k, v in stack.items()}


def project(directory: Path, image: str, requirements: list[str], cuda: str | None) -> Path:
    directory.mkdir(parents=True)
    cuda_table = f'[cuda]\nversion = "{cuda}"\n' if cuda else ""
    listed = ", ".join(f'"{r}"' for r in requirements)
    (directory / "mlenv.toml").write_text(
        f'name = "gpu"\nas-of = 2025-01-15T00:00:00Z\n[base]\nimage = "{image}"\n'
        f"[python]\nrequirements = [{listed}]\n{cuda_table}"
    )
    return directory


def test_cu118_torch_on_the_cuda_12_base_is_refused(cuda_base: str, tmp_path: Path) -> None:
    spec = project(tmp_path / "p", cuda_base, ["torch==2.3.1+cu118"], None)
    result = run_cli("lock", str(spec))
    assert result.code == 2 and not (spec / "mlenv.lock").exists()
    assert result.stderr.strip().splitlines() == [
        f"mlenv: error: torch==2.3.1+cu118 is the CUDA 11.8 build but base image {cuda_base} "
        "carries CUDA 12.1.1 "
        "(image:env:CUDA_VERSION); CUDA major versions must match"
    ]


def test_cuda_118_request_on_the_cuda_12_base_is_refused(cuda_base: str, tmp_path: Path) -> None:
    spec = project(tmp_path / "p", cuda_base, ["six==1.16.0"], "11.8")
    result = run_cli("lock", str(spec))
    assert result.code == 2 and not (spec / "mlenv.lock").exists()
    assert f'[cuda] version = "11.8" but base image {cuda_base} carries CUDA 12.1.1' in result.stderr


@pytest.mark.network
def test_cu11_wheels_on_the_cuda_12_base_are_refused(cuda_base: str, tmp_path: Path) -> None:
    spec = project(tmp_path / "p", cuda_base, ["nvidia-cuda-runtime-cu11==11.8.89"], None)
    result = run_cli("lock", str(spec))
    assert result.code == 2 and not (spec / "mlenv.lock").exists()
    assert (
        f"mlenv: error: base image {cuda_base} carries CUDA 12.1.1 (image:env:CUDA_VERSION) but "
        "nvidia-cuda-runtime-cu11 11.8.89 is built for CUDA 11.8; CUDA major versions must match"
    ) in result.stderr


@pytest.mark.network
def test_torch_on_the_cuda_base_flags_two_cudnn_stacks(cuda_base: str, tmp_path: Path) -> None:
    spec = project(tmp_path / "p", cuda_base, ["torch==2.3.1"], "12.1")
    result = run_cli("lock", str(spec))
    assert result.code == 0, result.stderr
    assert (
        "mlenv: warning: two cuDNN stacks in one image: "
        "the base's cuDNN 8.9.0.131 (dpkg:libcudnn8, 3 MB) and "
        "nvidia-cudnn-cu12 8.9.2.26 (732 MB wheel)"
    ) in result.stderr
    lock = read_lock(spec / "mlenv.lock")
    stack = {c.name: (c.version, c.source) for c in lock.cuda.components}
    assert stack["cuda"] == ("12.1.1", "image:env:CUDA_VERSION")
    assert stack["cudnn"] == ("8.9.2.26", "wheel:nvidia-cudnn-cu12")  # what torch loads
    assert stack["nccl"] == ("2.20.5", "wheel:nvidia-nccl-cu12")
    assert lock.cuda.torch_label == "+cu121" and lock.cuda.release == "12.1"
    # torch 2.3.1 leaves nvJitLink unpinned: the newest is of a later CUDA minor, and its floor counts.
    nvjitlink = ".".join(stack["nvjitlink"][0].split(".")[:2])
    assert nvjitlink != "12.1" and lock.cuda.min_driver == toolkit_floor(nvjitlink)


@pytest.mark.network
def test_verify_compares_the_cuda_stack(
    cuda_base: str, base_image_python: BaseImage, docker_daemon: Daemon, tmp_path: Path
) -> None:
    spec = project(tmp_path / "p", cuda_base, ["six==1.16.0"], "12.1")
    result = run_cli("lock", str(spec))
    assert result.code == 0, result.stderr
    lock = read_lock(spec / "mlenv.lock")
    assert lock.cuda.min_driver == "530.30.02"
    expected = EnvFacts(cuda=lock.cuda.components)
    same = observe_image(f"docker://{cuda_base}")
    assert [d for d in compare(expected, same, subject="x").drifts if d.layer == "cuda"] == []
    # The same image with cuDNN upgraded underneath the lock: verify names the drift.
    drifted = make_cuda_image(
        docker_daemon,
        tmp_path / "drifted",
        marked_tag(base_image_python),
        session_tag("cuda-drifted", base_image_python.ref, "1"),
        {f"{LIB}/libcudnn.so.8.9.7": 1000},
        {"libcudnn8": "8.9.7.29-1+cuda12.2"},
    )
    facts = observe_image(f"docker-daemon:{drifted}")
    lines = [drift_line(d) for d in compare(expected, facts, subject="x").drifts if d.layer == "cuda"]
    assert lines == ["cuda: cudnn: version: expected 8.9.0.131, found 8.9.7.29"]
