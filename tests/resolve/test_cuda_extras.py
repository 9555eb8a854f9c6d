"""CUDA locking without holes: NVIDIA wheels that come in through an extra (jax[cuda12] ->
jax-cuda12-plugin[with-cuda]) are checked for pins like the rest, the refusal of a mismatch says what to
ask for, and every toolkit-versioned wheel (nvJitLink 12.5 in a 12.1 stack) counts in the driver floor.

Pure cases run on Requires-Dist lines as jax 0.4.38's wheels declare them; the network case reads the
real lines from PyPI's wheels (their METADATA member, through HTTP range requests: the index here serves
no PEP 658 file for them) and locks jax[cuda12] with the real resolver."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from email.parser import BytesParser
from pathlib import Path

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name

from mlenv.errors import ResolutionError
from mlenv.lockfile import read_lock
from mlenv.model.lock import PythonPin
from mlenv.model.target import Target
from mlenv.resolve.cuda import edges, lock_cuda, toolkit_floor
from tests.helpers import run_cli
from tests.lockdata import wheel_pin

TARGET = Target(platforms=("linux/amd64",), python="3.11.2", glibc="2.36")
X86 = "py3-none-manylinux2014_x86_64"


def pin(name: str, version: str) -> PythonPin:
    return wheel_pin(name, version, tag=X86, requested=name == "jax")


# As jax 0.4.38 and jax-cuda12-plugin 0.4.38 declare them (abridged to the parts that matter here).
JAX = (
    'jax-cuda12-plugin[with-cuda]<=0.4.38,>=0.4.38; extra == "cuda12"',
    'jaxlib==0.4.38; extra == "cuda12"',
    'libtpu==0.0.7; extra == "tpu"',
    "numpy>=1.24",
)
PLUGIN = (
    "jax-cuda12-pjrt==0.4.38",
    'nvidia-cuda-runtime-cu12>=12.1.105; extra == "with-cuda"',
    'nvidia-cudnn-cu12<10.0,>=9.1; extra == "with-cuda"',
    'nvidia-nvjitlink-cu12>=12.1.105; extra == "with-cuda"',
)
PINS = (
    pin("jax", "0.4.38"),
    pin("jax-cuda12-pjrt", "0.4.38"),
    pin("jax-cuda12-plugin", "0.4.38"),
    pin("jaxlib", "0.4.38"),
    pin("numpy", "2.2.1"),
    pin("nvidia-cuda-runtime-cu12", "12.6.77"),
    pin("nvidia-cudnn-cu12", "9.6.0.74"),
    pin("nvidia-nvjitlink-cu12", "12.6.85"),
)
# Only what is read for the stack: jaxlib and numpy declare nothing of NVIDIA's.
REQUIRES = {
    "linux/amd64": {"jax": JAX, "jax-cuda12-plugin": PLUGIN, "jax-cuda12-pjrt": (), "jaxlib": (), "numpy": ()}
}


def locked(requested: str | None, pins: tuple[PythonPin, ...] = PINS, requires: Mapping = REQUIRES):  # type: ignore[no-untyped-def, type-arg]
    return lock_cuda(
        requested=requested,
        cudnn=None,
        pins=pins,
        requested_names=frozenset({"jax"}),
        requires=requires,
        target=TARGET,
        base=None,
    )


def test_an_extra_whose_requirements_were_locked_is_taken() -> None:
    found = edges(REQUIRES, TARGET, frozenset(p.name for p in PINS))
    by = {(e.by, e.requirement.name) for e in found}
    assert ("jax[cuda12]", "jax-cuda12-plugin") in by and ("jax[cuda12]", "jaxlib") in by
    assert ("jax-cuda12-plugin[with-cuda]", "nvidia-cuda-runtime-cu12") in by
    assert not any(name == "libtpu" for _, name in by)  # the tpu extra was not taken: libtpu is not locked
    # Without the locked names (the old behaviour) extras are skipped entirely.
    assert {e.requirement.name for e in edges(REQUIRES, TARGET)} == {"numpy", "jax-cuda12-pjrt"}


NAMES = ("nvidia-cuda-runtime-cu12", "nvidia-cudnn-cu12", "numpy", "jaxlib", "Jax_Cuda12.Plugin", "libtpu")
MARKERS = (
    "",
    '; extra == "with-cuda"',
    "; extra == 'With_Cuda'",
    '; extra == "tpu"',
    '; extra == "tpu" or extra == "with-cuda"',
    '; extra == "with-cuda" and sys_platform == "win32"',
    '; platform_machine == "aarch64"',
    '; python_version >= "3.8"',
)
LINE = st.builds(
    lambda n, v, m: f"{n}{v}{m}",
    st.sampled_from(NAMES),
    st.sampled_from(("", ">=1", "==9.1")),
    st.sampled_from(MARKERS),
)


def nvidia_or_torch(requirer: str, name: str) -> bool:
    return requirer == "torch" or name.startswith("nvidia-")


@settings(max_examples=300, deadline=None)
@given(
    by_requirer=st.dictionaries(
        st.sampled_from(("torch", "jax", "jax-cuda12-plugin")), st.lists(LINE, max_size=8).map(tuple)
    ),
    locked_names=st.sets(st.sampled_from([canonicalize_name(n) for n in NAMES])),
)
def test_wanted_edges_are_the_same_as_filtering_all_edges(
    by_requirer: dict[str, tuple[str, ...]], locked_names: set[str]
) -> None:
    """`wanted` skips parsing the lines that cannot give a wanted edge (the lock's speed); the edges it
    gives must be exactly those a full parse gives and the filter keeps, extras taken or not alike."""
    requires = {"linux/amd64": by_requirer}
    locked = frozenset(locked_names)
    every = edges(requires, TARGET, locked)
    kept = [e for e in every if nvidia_or_torch(e.requirer, canonicalize_name(e.requirement.name))]
    assert edges(requires, TARGET, locked, nvidia_or_torch) == kept


def test_unpinned_stack_through_an_extra_is_warned() -> None:
    resolution = locked(None)
    assert resolution.locked.release == "12.6" and resolution.locked.requested == "none"
    assert resolution.warnings == (
        "[cuda] version is not set, but the environment carries CUDA 12.6, pinned by nothing: "
        "nvidia-cuda-runtime-cu12 is required as jax-cuda12-plugin[with-cuda] (>=12.1.105); "
        'set [cuda] version = "12.6" to have it checked',
        "nvidia-cuda-runtime-cu12 is required without a version pin by jax-cuda12-plugin[with-cuda] "
        "(>=12.1.105); locked at 12.6.77 anyway",
        "nvidia-cudnn-cu12 is required without a version pin by jax-cuda12-plugin[with-cuda] "
        "(<10.0,>=9.1); locked at 9.6.0.74 anyway",
        "nvidia-nvjitlink-cu12 is required without a version pin by jax-cuda12-plugin[with-cuda] "
        "(>=12.1.105); locked at 12.6.85 anyway",
    )
    # An extra not taken (a requirement of it is not locked) brings no edges and no warnings.
    without = tuple(p for p in PINS if p.name != "nvidia-cudnn-cu12")
    assert not any("jax-cuda12-plugin[with-cuda]" in w for w in locked(None, pins=without).warnings)


def test_mismatch_names_what_was_found_and_what_to_ask_for() -> None:
    with pytest.raises(ResolutionError) as caught:
        locked("12.1")
    assert str(caught.value) == (
        "nvidia-cuda-runtime-cu12 12.6.77, required as jax-cuda12-plugin[with-cuda] (>=12.1.105), is CUDA "
        '12.6, but [cuda] version = "12.1" (hint: ask for version = "12.6", or hold the runtime at CUDA '
        "12.1: require nvidia-cuda-runtime-cu12==12.1.* in [python] requirements)"
    )
    assert locked("12.6").locked.min_driver == "560.28.03"


def test_missing_metadata_is_said_not_taken_for_pinned() -> None:
    resolution = locked(None, requires={"linux/amd64": {}})
    assert resolution.warnings[0] == (
        "the index serves no wheel metadata for jax, jax-cuda12-pjrt, jax-cuda12-plugin, jaxlib, numpy: "
        "whether they pin the NVIDIA wheels they bring is not checked"
    )
    assert "pinned by nothing" not in resolution.warnings[1]
    one = {
        "linux/amd64": {name: lines for name, lines in REQUIRES["linux/amd64"].items() if name != "jaxlib"}
    }
    assert locked(None, requires=one).warnings[0] == (
        "the index serves no wheel metadata for jaxlib: whether it pins the NVIDIA wheels it brings is not "
        "checked"
    )


@pytest.mark.parametrize(
    ("nvjitlink", "floor"),
    [("12.1.105", "530.30.02"), ("12.5.82", "555.42.02"), ("12.9.86", "575.51.03")],
)
def test_a_newer_nvjitlink_counts_in_the_floor(nvjitlink: str, floor: str) -> None:
    pins = (
        pin("nvidia-cuda-runtime-cu12", "12.1.105"),
        pin("nvidia-nvjitlink-cu12", nvjitlink),
        pin("nvidia-cudnn-cu12", "9.6.0.74"),  # cuDNN's own version says nothing of the toolkit
        pin("nvidia-nccl-cu12", "2.24.3"),
    )
    resolution = lock_cuda(
        requested="12.1",
        cudnn=None,
        pins=pins,
        requested_names=frozenset(p.name for p in pins),
        requires={},
        target=TARGET,
        base=None,
    )
    assert resolution.locked.min_driver == floor == toolkit_floor(nvjitlink)
    raised = [w for w in resolution.warnings if "newer than the stack's" in w]
    if nvjitlink.startswith("12.1."):
        assert raised == []
    else:
        assert raised == [
            f"nvidia-nvjitlink-cu12 {nvjitlink} is CUDA {nvjitlink[:4]}, newer than the stack's CUDA 12.1: "
            f"min-driver is {floor} (CUDA {nvjitlink[:4]}'s), not 530.30.02"
        ]


# --------------------------------------------------------------------------- real PyPI


class _RangeFile(io.RawIOBase):
    """A remote file read by HTTP range requests, enough for zipfile to read one member."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self._session, self._url, self._pos = session, url, 0
        head = session.head(url, timeout=60, allow_redirects=True)
        head.raise_for_status()
        self._size = int(head.headers["Content-Length"])

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self._size, self._pos + len(buffer))
        if end <= self._pos:
            return 0
        response = self._session.get(self._url, headers={"Range": f"bytes={self._pos}-{end - 1}"}, timeout=60)
        assert response.status_code == 206, response.status_code
        data = response.content
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _requires_dist(session: requests.Session, url: str) -> tuple[str, ...]:
    with zipfile.ZipFile(io.BufferedReader(_RangeFile(session, url), buffer_size=1 << 16)) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        message = BytesParser().parsebytes(wheel.read(name), headersonly=True)
    return tuple(str(value) for value in message.get_all("Requires-Dist") or ())


@pytest.mark.network
def test_jax_cuda12_from_pypi(tmp_path: Path) -> None:
    project = tmp_path / "jax"
    project.mkdir()
    (project / "mlenv.toml").write_text(
        'name = "jax"\nas-of = 2025-01-15T00:00:00Z\n[target]\npython = "3.11.2"\nglibc = "2.36"\n'
        '[python]\nrequirements = ["jax[cuda12]==0.4.38"]\n'
    )
    result = run_cli("lock", str(project))
    assert result.code == 0, result.stderr
    lock = read_lock(project / "mlenv.lock")
    assert lock.cuda.requested == "none" and lock.cuda.release is not None
    assert 'requested = "none"' not in (project / "mlenv.lock").read_text()
    session = requests.Session()
    requires = {
        "linux/amd64": {p.name: _requires_dist(session, p.wheels[0].url) for p in lock.python.packages}
    }
    runtime = next(p for p in lock.python.packages if p.name == "nvidia-cuda-runtime-cu12")
    resolution = lock_cuda(
        requested=None,
        cudnn=None,
        pins=lock.python.packages,
        requested_names=frozenset({"jax"}),
        requires=requires,
        target=lock.target,
        base=None,
    )
    assert resolution.locked.release == lock.cuda.release == runtime.version[:4]
    unpinned = [w for w in resolution.warnings if w.startswith("nvidia-cuda-runtime-cu12 is required")]
    assert unpinned == [
        "nvidia-cuda-runtime-cu12 is required without a version pin by jax-cuda12-plugin[with-cuda] "
        f"(>=12.1.105); locked at {runtime.version} anyway"
    ]
    assert (
        "pinned by nothing: nvidia-cuda-runtime-cu12 is required as jax-cuda12-plugin"
        in resolution.warnings[0]
    )
    hint = r'ask for version = "12\.6", or hold the runtime at CUDA 12\.1'
    with pytest.raises(ResolutionError, match=hint):
        lock_cuda(
            requested="12.1",
            cudnn=None,
            pins=lock.python.packages,
            requested_names=frozenset({"jax"}),
            requires=requires,
            target=lock.target,
            base=None,
        )
