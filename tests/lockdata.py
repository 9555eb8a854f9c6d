"""A Lock exercising every section of the format, for writer, reader and schema tests."""

from __future__ import annotations

from datetime import UTC, datetime

from mlenv.model.facts import AptFact, CudaComponent
from mlenv.model.lock import (
    AptPin,
    AptSource,
    BasePlatform,
    Lock,
    LockedApp,
    LockedApt,
    LockedBase,
    LockedCuda,
    LockedModel,
    LockedPython,
    PythonFile,
    PythonPin,
)
from mlenv.model.target import Target

H = "0123456789abcdef" * 4


def digest(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64 if n < 16 else "sha256:" + H


def full_lock() -> Lock:
    wheel = PythonFile(
        name="pandas-2.0.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        url="https://files.example.org/pandas-2.0.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        size=12219370,
        sha256="d9cd88488cceb7635aebb84809d087468eb33551097d600c6dad13602029c2df",
    )
    arm_wheel = PythonFile(
        name="pandas-2.0.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        url="https://files.example.org/pandas-2.0.3-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        size=11000000,
        sha256="a" * 64,
        hash_source="computed",
    )
    return Lock(
        name="golden",
        spec_hash=digest(1),
        as_of=datetime(2024, 7, 1, tzinfo=UTC),
        target=Target(
            platforms=("linux/arm64", "linux/amd64"), python="3.11.2", glibc="2.36", source="base-image"
        ),
        base=LockedBase(
            reference="127.0.0.1:5000/mlenv-test/bookworm-python:1",
            registry="127.0.0.1:5000",
            repository="mlenv-test/bookworm-python",
            digest=digest(2),
            platforms=(
                BasePlatform(
                    platform="linux/amd64",
                    manifest_digest=digest(3),
                    config_digest=digest(4),
                    diff_ids=(digest(9), digest(5)),
                    os_id="debian",
                    os_version="12",
                    glibc="2.36",
                    python="3.11.2",
                    packages=(
                        AptFact(name="libc6", version="2.36-9+deb12u4", architecture="amd64"),
                        AptFact(name="base-files", version="12.4+deb12u5", architecture="amd64"),
                    ),
                ),
            ),
        ),
        apt=LockedApt(
            sources=(
                AptSource(
                    mirror="http://deb.debian.org/debian",
                    suite="bookworm",
                    components=("main",),
                    snapshot="https://snapshot.debian.org/archive/debian/20240701T000000Z/",
                    snapshot_timestamp="2024-07-01T00:00:00Z",
                    signed_by="/usr/share/keyrings/debian-archive-keyring.gpg",
                ),
            ),
            packages=(
                AptPin(
                    name="libgomp1",
                    version="12.2.0-14",
                    architecture="amd64",
                    filename="pool/main/g/gcc-12/libgomp1_12.2.0-14_amd64.deb",
                    size=116440,
                    sha256="b" * 64,
                    requested=True,
                ),
                AptPin(
                    name="curl",
                    version="7.88.1-10+deb12u6",
                    architecture="amd64",
                    filename="pool/main/c/curl/curl_7.88.1-10+deb12u6_amd64.deb",
                    size=315000,
                    sha256="c" * 64,
                    requested=True,
                ),
            ),
        ),
        python=LockedPython(
            resolver="uv",
            requires_python="==3.11.*",
            venv="/opt/venv",
            index_url="https://pypi.org/simple",
            packages=(
                PythonPin(
                    name="pandas",
                    version="2.0.3",
                    index="https://pypi.org/simple",
                    requested=True,
                    wheels=(wheel, arm_wheel),
                ),
                PythonPin(
                    name="nvidia-cudnn-cu12",
                    version="8.9.2.26",
                    index="https://pypi.org/simple",
                    requested=False,
                    marker="platform_machine == 'x86_64' and sys_platform == 'linux'",
                    wheels=(
                        PythonFile(
                            name="nvidia_cudnn_cu12-8.9.2.26-py3-none-manylinux1_x86_64.whl",
                            url="https://files.example.org/nvidia_cudnn_cu12-8.9.2.26-py3-none-manylinux1_x86_64.whl",
                            size=731700000,
                            sha256="d" * 64,
                        ),
                    ),
                    sdist=PythonFile(
                        name="nvidia_cudnn_cu12-8.9.2.26.tar.gz",
                        url="https://files.example.org/nvidia_cudnn_cu12-8.9.2.26.tar.gz",
                        size=None,
                        sha256="e" * 64,
                    ),
                ),
            ),
        ),
        cuda=LockedCuda(
            requested="12.1",
            min_driver="530.30.02",
            torch_label="+cu121",
            torch_index="https://download.pytorch.org/whl/cu121",
            components=(
                CudaComponent(name="cudnn", version="8.9.2.26", source="wheel:nvidia-cudnn-cu12"),
                CudaComponent(name="runtime", version="12.1.105", source="wheel:nvidia-cuda-runtime-cu12"),
            ),
        ),
        app=LockedApp(
            copy=("app",),
            cmd=("uvicorn", "app.main:app"),
            port=8000,
            healthcheck="/health",
            env=(("B", "2"), ("A", '1 "quoted"')),
        ),
        models=(
            LockedModel(
                source="models/model.joblib",
                target="/app/models/model.joblib",
                strategy="bake",
                sha256="f" * 64,
                size=1234,
            ),
        ),
    )


def wheel_pin(name: str, version: str, *, tag: str, requested: bool) -> PythonPin:
    """A pin with one wheel of `tag` (`py3-none-manylinux2014_x86_64`), for the CUDA resolver's tests."""
    wheel = f"{name.replace('-', '_')}-{version}-{tag}.whl"
    return PythonPin(
        name=name,
        version=version,
        index="https://pypi.org/simple",
        requested=requested,
        wheels=(PythonFile(name=wheel, url=f"https://files.example/{wheel}", size=1000, sha256="0" * 64),),
    )
