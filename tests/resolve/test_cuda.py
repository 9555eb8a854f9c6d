"""The lock's CUDA section: the driver table, torch variants and the cross-checks (pure), and locks of
real torch releases against real PyPI (metadata only: uv and the PEP 658 files, never the wheels)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from mlenv.errors import ResolutionError
from mlenv.lockfile import dumps, loads, read_lock
from mlenv.model.facts import CudaComponent
from mlenv.model.lock import LockedCuda, PythonFile, PythonPin
from mlenv.model.schema import first_error
from mlenv.model.target import Target
from mlenv.resolve.cuda import (
    BaseCuda,
    check_request,
    cuda_label,
    driver_floors,
    driver_satisfies,
    label_release,
    lock_cuda,
    requirement_label,
    toolkit_floor,
    torch_index,
)
from mlenv.sources.python.wheelmeta import parse_requires_dist
from tests.helpers import run_cli

TARGET = Target(platforms=("linux/amd64",), python="3.11.2", glibc="2.36")
X86 = "py3-none-manylinux1_x86_64"


# --------------------------------------------------------------------------- the driver table


@pytest.mark.parametrize(
    ("release", "floor"),
    [
        ("11.8", "520.61.05"),
        ("11.8.0", "520.61.05"),
        ("12.0", "525.60.13"),
        ("12.0.1", "525.85.12"),
        ("12.1", "530.30.02"),
        ("12.1.1", "530.30.02"),
        ("12.4", "550.54.14"),
        ("12.4.0", "550.54.14"),
        ("12.4.1", "550.54.15"),
        ("12.6", "560.28.03"),
        ("12.6.3", "560.35.05"),
    ],
)
def test_driver_floor_of_each_release(release: str, floor: str) -> None:
    assert toolkit_floor(release) == floor


def test_driver_table_is_data_with_its_sources() -> None:
    floors = driver_floors()
    assert "CUDA Toolkit and Corresponding Driver Versions" in floors.sources["toolkit"]
    assert floors.sources["toolkit-url"].startswith("https://docs.nvidia.com/cuda/")
    assert floors.minor_compatibility == {"11": "450.80.02", "12": "525.60.13", "13": "580"}
    assert toolkit_floor("12.7") is None and toolkit_floor("10.2") is None
    # Every later release needs at least the driver of every earlier one.
    rows = sorted(floors.toolkit.items(), key=lambda kv: tuple(int(p) for p in kv[0].split(".")))
    for (_, earlier), (release, later) in zip(rows, rows[1:], strict=False):
        assert driver_satisfies(later, earlier), release


@pytest.mark.parametrize(
    ("driver", "ok"),
    [
        ("530.30.01", False),
        ("530.30.02", True),
        ("530.41.03", True),
        ("535.104.05", True),
        ("525.147.05", False),
        ("1000.0", True),
    ],
)
def test_driver_boundary_for_cuda_12_1(driver: str, ok: bool) -> None:
    assert driver_satisfies(driver, toolkit_floor("12.1") or "") is ok


def test_boundaries_at_11_8_12_4_12_6() -> None:
    for release, below, at in (
        ("11.8", "520.61.04", "520.61.05"),
        ("12.4", "550.54.13", "550.54.14"),
        ("12.6", "560.28.02", "560.28.03"),
    ):
        floor = toolkit_floor(release)
        assert floor == at and not driver_satisfies(below, floor) and driver_satisfies(at, floor)
        # 560.28.03 is older than 560.35.03: component-wise, not text, comparison
    assert not driver_satisfies("560.28.03", "560.35.03") and driver_satisfies("560.100.1", "560.35.03")


# --------------------------------------------------------------------------- torch variants


def test_labels_and_indexes() -> None:
    assert [cuda_label(r) for r in ("11.8", "12.1", "12.4.1")] == ["cu118", "cu121", "cu124"]
    assert [label_release(label) for label in ("cu118", "cu121", "cu124", "cpu", "rocm6.0")] == [
        "11.8",
        "12.1",
        "12.4",
        None,
        None,
    ]
    assert torch_index("12.1") == "https://download.pytorch.org/whl/cu121"
    assert requirement_label("torch==2.3.1+cu118") == "cu118" and requirement_label("torch==2.3.1") is None


BASE_121 = BaseCuda(
    reference="reg/cuda:12.1",
    components=(
        CudaComponent(name="cuda", version="12.1.1", source="image:env:CUDA_VERSION"),
        CudaComponent(name="cudnn", version="8.9.0.131", source="dpkg:libcudnn8"),
        CudaComponent(
            name="runtime", version="12.1.105", source="file:/usr/local/cuda-12.1/lib64/libcudart.so.12.1.105"
        ),
    ),
    cudnn_bytes=3_000_000,
)


def test_request_checks_before_resolving() -> None:
    with pytest.raises(
        ResolutionError,
        match=r"torch==2.3.1\+cu118 is the CUDA 11.8 build but \[cuda\] version = \"12.1\" "
        r"\(hint: ask for version = \"11.8\", or require torch \+cu121 from "
        r"https://download.pytorch.org/whl/cu121\)",
    ):
        check_request("12.1", ["torch==2.3.1+cu118"], None)
    with pytest.raises(
        ResolutionError,
        match=r"torch==2.3.1\+cu118 is the CUDA 11.8 build but base image "
        r"reg/cuda:12.1 carries CUDA 12.1.1 \(image:env:CUDA_VERSION\); "
        "CUDA major versions must match",
    ):
        check_request(None, ["torch==2.3.1+cu118"], BASE_121)
    with pytest.raises(
        ResolutionError,
        match=r"\[cuda\] version = \"11.8\" but base image reg/cuda:12.1 carries "
        r"CUDA 12.1.1 \(image:env:CUDA_VERSION\) \(hint: ask for version = \"12.1\", ",
    ):
        check_request("11.8", ["numpy"], BASE_121)
    with pytest.raises(
        ResolutionError,
        match=r"is a CUDA 12.1 build but \[cuda\] version = \"none\" \(CPU-only\) \(hint: ask for "
        r"version = \"12.1\", or require torch \+cpu",
    ):
        check_request("none", ["torch==2.3.1+cu121"], None)
    check_request("12.1", ["torch==2.3.1+cu121", "numpy"], BASE_121)  # agreeing: no error
    check_request(None, ["torch==2.3.1+cpu"], BASE_121)


def pin(name: str, version: str, size: int = 1000) -> PythonPin:
    wheel = f"{name.replace('-', '_')}-{version}-{X86}.whl"
    return PythonPin(
        name=name,
        version=version,
        index="https://pypi.org/simple",
        requested=False,
        wheels=(PythonFile(name=wheel, url=f"https://files.example/{wheel}", size=size, sha256="0" * 64),),
    )


TORCH_231_REQUIRES = (
    'nvidia-cuda-runtime-cu12 (==12.1.105) ; platform_system == "Linux" and platform_machine == "x86_64"',
    'nvidia-cudnn-cu12 (==8.9.2.26) ; platform_system == "Linux" and platform_machine == "x86_64"',
    'nvidia-cusparse-cu12 (==12.1.0.106) ; platform_system == "Linux" and platform_machine == "x86_64"',
    'mkl (<=2021.4.0,>=2021.1.1) ; platform_system == "Windows"',
)
PINS_231 = (
    pin("torch", "2.3.1"),
    pin("nvidia-cuda-runtime-cu12", "12.1.105"),
    pin("nvidia-cudnn-cu12", "8.9.2.26", size=731_700_000),
    pin("nvidia-cusparse-cu12", "12.1.0.106"),
    pin("nvidia-nvjitlink-cu12", "12.9.86"),
)
REQUIRES_231 = {
    "linux/amd64": {"torch": TORCH_231_REQUIRES, "nvidia-cusparse-cu12": ("nvidia-nvjitlink-cu12",)}
}


def lock_231(requested: str | None, base: BaseCuda | None = None, cudnn: str | None = None):  # type: ignore[no-untyped-def]
    return lock_cuda(
        requested=requested,
        cudnn=cudnn,
        pins=PINS_231,
        requested_names=frozenset({"torch"}),
        requires=REQUIRES_231,
        target=TARGET,
        base=base,
    )


def test_pypi_default_torch_is_recorded_as_its_cuda_variant() -> None:
    resolution = lock_231("12.1")
    assert resolution.locked.torch_label == "+cu121"
    assert resolution.locked.torch_index == "https://pypi.org/simple"
    assert (resolution.locked.requested, resolution.locked.release) == ("12.1", "12.1")
    # nvJitLink 12.9 (unpinned, the newest) raises the floor from CUDA 12.1's 530.30.02 to 12.9's.
    assert resolution.locked.min_driver == "575.51.03"
    assert {c.name: c.version for c in resolution.locked.components} == {
        "runtime": "12.1.105",
        "cudnn": "8.9.2.26",
        "nvjitlink": "12.9.86",
    }
    assert resolution.warnings == (
        "nvidia-nvjitlink-cu12 is required without a version pin by nvidia-cusparse-cu12 "
        "(any version); locked at 12.9.86 anyway",
        "nvidia-nvjitlink-cu12 12.9.86 is CUDA 12.9, newer than the stack's CUDA 12.1: min-driver is "
        "575.51.03 (CUDA 12.9's), not 530.30.02",
    )


def test_request_mismatch_is_refused_with_the_variant_to_use() -> None:
    with pytest.raises(ResolutionError) as caught:
        lock_231("11.8")
    assert str(caught.value) == (
        "torch 2.3.1 from https://pypi.org/simple (the cu121 build) is CUDA 12.1, but [cuda] version = "
        '"11.8" (hint: ask for version = "12.1", or require torch +cu118 from '
        "https://download.pytorch.org/whl/cu118 (add it to [python] extra-index-urls))"
    )
    with pytest.raises(
        ResolutionError,
        match=r"\[cuda\] version = \"none\" \(CPU-only\) but torch 2.3.1 .* brings "
        r"CUDA 12.1 \(hint: ask for version = \"12.1\", or for torch, require torch \+cpu from "
        r"https://download.pytorch.org/whl/cpu\)",
    ):
        lock_231("none")
    with pytest.raises(
        ResolutionError,
        match=r"\[cuda\] cudnn asks 9 but the environment's cuDNN is 8.9.2.26 "
        r"\(wheel:nvidia-cudnn-cu12\)",
    ):
        lock_231("12.1", cudnn="9")
    assert lock_231("12.1", cudnn="8.9").locked.min_driver == "575.51.03"


def test_unset_request_records_the_stack_and_says_so() -> None:
    resolution = lock_231(None)
    # Recorded as found: the lock file writes release = "12.1" and no requested (tests/test_lockfile.py).
    assert resolution.locked.requested == "none" and resolution.locked.release == "12.1"
    assert resolution.locked.torch_label == "+cu121"
    assert resolution.warnings[0] == (
        "[cuda] version is not set, but the environment carries CUDA 12.1; "
        'set [cuda] version = "12.1" to have it checked'
    )


def test_two_cudnn_stacks_are_flagged_with_sizes_and_the_wheel_wins() -> None:
    resolution = lock_231("12.1", base=BASE_121)
    assert (
        "two cuDNN stacks in one image: the base's cuDNN 8.9.0.131 (dpkg:libcudnn8, 3 MB) and "
        "nvidia-cudnn-cu12 8.9.2.26 (732 MB wheel); Python code loads the wheel's, the base's is dead weight"
    ) in resolution.warnings
    assert {c.name: (c.version, c.source) for c in resolution.locked.components} == {
        "cuda": ("12.1.1", "image:env:CUDA_VERSION"),
        "cudnn": ("8.9.2.26", "wheel:nvidia-cudnn-cu12"),
        "runtime": ("12.1.105", "wheel:nvidia-cuda-runtime-cu12"),
        "nvjitlink": ("12.9.86", "wheel:nvidia-nvjitlink-cu12"),
    }


def test_wheel_major_against_base_major() -> None:
    pins = (pin("nvidia-cuda-runtime-cu11", "11.8.89"),)
    with pytest.raises(ResolutionError) as caught:
        lock_cuda(
            requested=None,
            cudnn=None,
            pins=pins,
            requested_names=frozenset({"nvidia-cuda-runtime-cu11"}),
            requires={},
            target=TARGET,
            base=BASE_121,
        )
    assert str(caught.value).startswith(
        "base image reg/cuda:12.1 carries CUDA 12.1.1 (image:env:CUDA_VERSION) but nvidia-cuda-runtime-cu11 "
        "11.8.89 is built for CUDA 11.8; CUDA major versions must match"
    )
    mixed = (pin("nvidia-cudnn-cu11", "8.7.0.84"), pin("nvidia-cuda-runtime-cu12", "12.1.105"))
    with pytest.raises(ResolutionError, match="the NVIDIA wheels mix CUDA majors 11 and 12"):
        lock_cuda(
            requested=None,
            cudnn=None,
            pins=mixed,
            requested_names=frozenset(),
            requires={},
            target=TARGET,
            base=None,
        )


def test_cpu_lock_has_no_cuda() -> None:
    resolution = lock_cuda(
        requested=None,
        cudnn=None,
        pins=(pin("numpy", "1.26.4"),),
        requested_names=frozenset(),
        requires={},
        target=TARGET,
        base=None,
    )
    assert resolution.locked == LockedCuda(requested="none") and resolution.warnings == ()
    with pytest.raises(ResolutionError, match=r"\[cuda\] version = \"12.1\" but nothing brings CUDA"):
        lock_cuda(
            requested="12.1",
            cudnn=None,
            pins=(pin("numpy", "1.26.4"),),
            requested_names=frozenset(),
            requires={},
            target=TARGET,
            base=None,
        )


def test_requires_dist_parser_on_a_recorded_metadata_file() -> None:
    recorded = (
        b"Metadata-Version: 2.1\nName: nvidia-cusparse-cu12\nVersion: 12.1.0.106\n"
        b"Requires-Dist: nvidia-nvjitlink-cu12\n\nlong description\nRequires-Dist: not-a-header\n"
    )
    assert parse_requires_dist(recorded) == ("nvidia-nvjitlink-cu12",)


# --------------------------------------------------------------------------- real PyPI


def torch_project(directory: Path, torch: str, cuda: str | None) -> Path:
    directory.mkdir(parents=True)
    cuda_table = f'[cuda]\nversion = "{cuda}"\n' if cuda else ""
    (directory / "mlenv.toml").write_text(
        f'name = "gpu"\nas-of = 2025-01-15T00:00:00Z\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
        f'[python]\nrequirements = ["{torch}"]\n{cuda_table}'
    )
    return directory


@pytest.fixture(scope="module")
def torch_231(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = torch_project(tmp_path_factory.mktemp("cuda") / "t231", "torch==2.3.1", "12.1")
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    return project, result.stderr


@pytest.mark.network
def test_torch_231_records_cudnn_and_runtime_from_metadata(torch_231: tuple[Path, str]) -> None:
    project, stderr = torch_231
    lock = read_lock(project / "mlenv.lock")
    components = {c.name: (c.version, c.source) for c in lock.cuda.components}
    assert components["cudnn"] == ("8.9.2.26", "wheel:nvidia-cudnn-cu12")
    assert components["runtime"] == ("12.1.105", "wheel:nvidia-cuda-runtime-cu12")
    assert components["cublas"] == ("12.1.3.1", "wheel:nvidia-cublas-cu12")
    assert components["nccl"] == ("2.20.5", "wheel:nvidia-nccl-cu12")
    assert (lock.cuda.requested, lock.cuda.release) == ("12.1", "12.1")
    assert (lock.cuda.torch_label, lock.cuda.torch_index) == ("+cu121", "https://pypi.org/simple")
    torch = next(p for p in lock.python.packages if p.name == "torch")
    assert torch.version == "2.3.1" and torch.requested
    # torch 2.3.1 does not pin nvJitLink; nvidia-cusparse-cu12 requires it without a version
    nvjitlink = components["nvjitlink"][0]
    assert (
        f"mlenv: warning: nvidia-nvjitlink-cu12 is required without a version pin by nvidia-cusolver-cu12 "
        f"(any version), nvidia-cusparse-cu12 (any version); locked at {nvjitlink} anyway"
    ) in stderr
    # The newest nvJitLink at as-of 2025-01-15 is of a later CUDA minor than 12.1: its release's floor
    # is the lock's, and the warning says which part raised it from 530.30.02.
    raised = toolkit_floor(".".join(nvjitlink.split(".")[:2]))
    assert nvjitlink.split(".")[:2] != ["12", "1"] and raised is not None
    assert driver_satisfies(raised, "530.30.02") and raised != "530.30.02"
    assert lock.cuda.min_driver == raised
    assert f"nvidia-nvjitlink-cu12 {nvjitlink} is CUDA" in stderr and "not 530.30.02" in stderr


@pytest.mark.network
def test_torch_231_cuda_section_is_deterministic_and_valid(
    torch_231: tuple[Path, str], tmp_path: Path
) -> None:
    shared, _ = torch_231
    first = (shared / "mlenv.lock").read_bytes()
    data = tomllib.loads(first.decode())
    assert first_error(data, "mlenv.lock") is None
    assert dumps(loads(first.decode())).encode() == first  # round trip is byte-identical
    # Relocked in a copy of its own: the module's project (and its lock) stays as the other tests read it.
    project = Path(shutil.copytree(shared, tmp_path / shared.name))
    (project / "mlenv.lock").unlink()
    again = run_cli("lock", str(project))
    assert again.code == 0, again.stderr
    assert (project / "mlenv.lock").read_bytes() == first


@pytest.mark.network
def test_torch_251_records_cudnn_9(tmp_path: Path) -> None:
    project = torch_project(tmp_path / "t251", "torch==2.5.1", "12.4")
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    lock = read_lock(project / "mlenv.lock")
    components = {c.name: c.version for c in lock.cuda.components}
    assert components["cudnn"] == "9.1.0.70" and components["runtime"] == "12.4.127"
    assert components["nvjitlink"] == "12.4.127"  # torch 2.5.1 pins it itself: no warning
    assert "nvjitlink" not in result.stderr
    assert (lock.cuda.torch_label, lock.cuda.min_driver) == ("+cu124", "550.54.14")


@pytest.mark.network
def test_pypi_torch_against_another_cuda_is_refused(tmp_path: Path) -> None:
    project = torch_project(tmp_path / "t118", "torch==2.3.1", "11.8")
    result = run_cli("lock", str(project))
    assert result.code == 2 and not (project / "mlenv.lock").exists()
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "mlenv: error: torch 2.3.1 from https://pypi.org/simple (the cu121 build) is CUDA 12.1, but [cuda] "
        'version = "11.8" (hint: ask for version = "12.1", or require torch +cu118 from '
        "https://download.pytorch.org/whl/cu118 (add it to [python] extra-index-urls))"
    ]


@pytest.mark.network
def test_cpu_only_spec_refuses_pypi_torch(tmp_path: Path) -> None:
    project = torch_project(tmp_path / "tnone", "torch==2.3.1", "none")
    result = run_cli("lock", str(project))
    assert result.code == 2 and not (project / "mlenv.lock").exists()
    assert (
        "CPU-only) but torch 2.3.1 from https://pypi.org/simple (the cu121 build) brings CUDA 12.1"
        in result.stderr
    )
