"""torch builds that pin NVIDIA's cuda-toolkit metapackage (PyPI's torch 2.15.0 for Linux x86_64, its
Requires-Dist as read from the wheel) instead of nvidia-cuda-runtime-cuXY: the variant is the toolkit's
CUDA release, never "cpu"."""

from __future__ import annotations

from mlenv.model.lock import PythonPin
from mlenv.model.target import Target
from mlenv.resolve.cuda import lock_cuda
from tests.lockdata import wheel_pin

TARGET = Target(platforms=("linux/amd64",), python="3.11.2", glibc="2.36")
X86 = "cp311-cp311-manylinux_2_28_x86_64"

# The CUDA lines of torch-2.15.0-cp311-cp311-manylinux_2_28_x86_64.whl's METADATA.
TORCH_215_REQUIRES = (
    "filelock",
    "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.2.2; "
    'platform_system == "Linux"',
    'cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"',
    'nvidia-cudnn-cu13==9.26.0.51; platform_system == "Linux"',
    'nvidia-nccl-cu13==2.30.7; platform_system == "Linux"',
)


def pin(name: str, version: str) -> PythonPin:
    return wheel_pin(name, version, tag=X86, requested=name == "torch")


PINS = (
    pin("torch", "2.15.0"),
    pin("filelock", "3.20.0"),
    pin("cuda-toolkit", "13.2.2"),
    pin("cuda-bindings", "13.2.0"),
    pin("nvidia-cudnn-cu13", "9.26.0.51"),
    pin("nvidia-nccl-cu13", "2.30.7"),
)


def locked(requires: tuple[str, ...]):  # type: ignore[no-untyped-def]
    return lock_cuda(
        requested=None,
        cudnn=None,
        pins=PINS,
        requested_names=frozenset({"torch"}),
        requires={"linux/amd64": {"torch": requires}},
        target=TARGET,
        base=None,
    ).locked


def test_a_cuda_toolkit_pin_is_the_torch_variant() -> None:
    assert locked(TORCH_215_REQUIRES).torch_label == "+cu132"


def test_cuda_wheels_without_a_runtime_pin_are_an_unknown_variant_not_cpu() -> None:
    unpinned = tuple(line for line in TORCH_215_REQUIRES if not line.startswith("cuda-toolkit"))
    assert locked(unpinned).torch_label is None
    assert locked(("filelock",)).torch_label == "+cpu"
