"""The data mlenv works on: the spec, the lock, the facts of an environment and drift reports.

Frozen, keyword-only dataclasses and nothing else: no IO, no parsing. Collections are tuples so
values hash and compare structurally; writers sort them, so order here carries no meaning unless
a field says it does (base layers do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

DEFAULT_PLATFORM = "linux/amd64"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
DEFAULT_VENV = "/opt/venv"
LOCK_VERSION = 1

ResolverName = Literal["uv", "pip-tools"]
ModelStrategy = Literal["bake", "download", "mount"]
HashSource = Literal["index", "computed"]
TargetSource = Literal["spec", "base-image"]


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True, kw_only=True)
class BaseSpec:
    image: str
    platforms: tuple[str, ...] = (DEFAULT_PLATFORM,)


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """The interpreter and libc to resolve for, when they are not read from the base image."""

    python: str | None = None
    glibc: str | None = None
    platforms: tuple[str, ...] = (DEFAULT_PLATFORM,)


@dataclass(frozen=True, kw_only=True)
class PythonSpec:
    requirements: tuple[str, ...] = ()
    requirements_files: tuple[str, ...] = ()
    index_url: str = DEFAULT_INDEX_URL
    extra_index_urls: tuple[str, ...] = ()
    resolver: ResolverName = "uv"
    venv: str = DEFAULT_VENV


@dataclass(frozen=True, kw_only=True)
class AptSpec:
    packages: tuple[str, ...] = ()
    mirror: str | None = None


@dataclass(frozen=True, kw_only=True)
class CudaSpec:
    version: str | None = None  # "12.1", "none" for CPU-only, None when unspecified
    cudnn: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    source: str  # a path relative to the project, or a URL for strategy "download"
    target: str  # absolute path inside the image
    strategy: ModelStrategy = "bake"
    sha256: str | None = None  # required for URLs; computed for local files


@dataclass(frozen=True, kw_only=True)
class AppSpec:
    copy: tuple[str, ...] = ()
    workdir: str = "/app"
    cmd: tuple[str, ...] = ()
    port: int | None = None
    healthcheck: str | None = None
    user: str = "app"
    env: tuple[tuple[str, str], ...] = ()
    models: tuple[ModelSpec, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Spec:
    path: str  # the file it was read from, for error messages
    project_dir: str  # relative files (requirements, app code, models) are resolved against this
    name: str
    base: BaseSpec | None = None
    target: TargetSpec = field(default_factory=TargetSpec)
    python: PythonSpec = field(default_factory=PythonSpec)
    apt: AptSpec = field(default_factory=AptSpec)
    cuda: CudaSpec = field(default_factory=CudaSpec)
    app: AppSpec = field(default_factory=AppSpec)
    as_of: datetime | None = None


# --------------------------------------------------------------------------- lock


@dataclass(frozen=True, kw_only=True)
class Target:
    """What the Python resolver resolved for."""

    platforms: tuple[str, ...]
    python: str  # full version, e.g. "3.11.2"
    glibc: str
    implementation: str = "cpython"
    source: TargetSource = "spec"


@dataclass(frozen=True, kw_only=True)
class BasePlatform:
    platform: str
    manifest_digest: str
    config_digest: str
    diff_ids: tuple[str, ...]  # in layer order, bottom first
    os_id: str
    os_version: str
    glibc: str | None
    python: str | None
    # The base's own dpkg set: what verify expects beneath the locked apt closure, and what an
    # SBOM of the lock lists for the base without pulling it.
    packages: tuple[AptFact, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LockedBase:
    reference: str  # as written in the spec
    registry: str
    repository: str
    digest: str  # what the reference resolved to: an index digest or a single manifest digest
    platforms: tuple[BasePlatform, ...]


@dataclass(frozen=True, kw_only=True)
class AptSource:
    mirror: str  # the mirror actually used for the indexes and .debs
    suite: str
    components: tuple[str, ...]
    snapshot: str | None = None  # snapshot URL for the as-of time, where the distro has one
    snapshot_timestamp: str | None = None
    signed_by: str | None = None  # the keyring the Release was verified with, None when not verified


@dataclass(frozen=True, kw_only=True)
class AptPin:
    name: str
    version: str
    architecture: str
    filename: str
    size: int
    sha256: str
    requested: bool


@dataclass(frozen=True, kw_only=True)
class LockedApt:
    sources: tuple[AptSource, ...] = ()
    packages: tuple[AptPin, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PythonFile:
    """A wheel or sdist of a pin (PEP 751 names), with where its hash came from."""

    name: str
    url: str
    size: int | None
    sha256: str
    hash_source: HashSource = "index"


@dataclass(frozen=True, kw_only=True)
class PythonPin:
    name: str  # normalised (PEP 503)
    version: str
    index: str
    requested: bool
    marker: str | None = None
    wheels: tuple[PythonFile, ...] = ()
    sdist: PythonFile | None = None


@dataclass(frozen=True, kw_only=True)
class LockedPython:
    resolver: ResolverName
    requires_python: str
    venv: str
    index_url: str
    extra_index_urls: tuple[str, ...] = ()
    packages: tuple[PythonPin, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CudaComponent:
    name: str  # "runtime", "cudnn", "cublas", "nccl", "nvjitlink"
    version: str
    source: str  # e.g. "wheel:nvidia-cudnn-cu12", "image:env:NV_CUDNN_VERSION"


@dataclass(frozen=True, kw_only=True)
class LockedCuda:
    requested: str  # "none" for CPU-only, else e.g. "12.1"
    components: tuple[CudaComponent, ...] = ()
    min_driver: str | None = None
    torch_label: str | None = None
    torch_index: str | None = None


@dataclass(frozen=True, kw_only=True)
class LockedModel:
    source: str
    target: str
    strategy: ModelStrategy
    sha256: str
    size: int | None = None


@dataclass(frozen=True, kw_only=True)
class LockedApp:
    copy: tuple[str, ...] = ()
    workdir: str = "/app"
    cmd: tuple[str, ...] = ()
    port: int | None = None
    healthcheck: str | None = None
    user: str = "app"
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Lock:
    name: str
    spec_hash: str
    target: Target
    python: LockedPython
    base: LockedBase | None = None
    apt: LockedApt = field(default_factory=LockedApt)
    cuda: LockedCuda = field(default_factory=lambda: LockedCuda(requested="none"))
    app: LockedApp = field(default_factory=LockedApp)
    models: tuple[LockedModel, ...] = ()
    as_of: datetime | None = None
    lock_version: int = LOCK_VERSION


# --------------------------------------------------------------------------- environment facts


@dataclass(frozen=True, kw_only=True)
class AptFact:
    name: str
    version: str
    architecture: str


@dataclass(frozen=True, kw_only=True)
class RecordEntry:
    """One line of a dist-info RECORD: path relative to the site dir, and its declared hash."""

    path: str
    sha256: str | None  # urlsafe-base64 digest as RECORD writes it, None when RECORD has none
    size: int | None


@dataclass(frozen=True, kw_only=True)
class DistFact:
    name: str  # normalised (PEP 503)
    version: str
    site: str  # the site-packages directory it was found in
    record: tuple[RecordEntry, ...] = ()
    # Files whose content no longer matches the hash RECORD lists, and files RECORD lists that are
    # gone: filled in by the observer, which has the filesystem to check them against.
    modified_files: tuple[str, ...] = ()
    missing_files: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class InterpreterFact:
    path: str
    version: str


@dataclass(frozen=True, kw_only=True)
class ArtifactFact:
    path: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class EnvFacts:
    """What an environment contains: produced by the lock (should be) and the observer (is)."""

    layer_diff_ids: tuple[str, ...] = ()
    os_id: str | None = None
    os_version: str | None = None
    architecture: str | None = None
    glibc: str | None = None
    interpreters: tuple[InterpreterFact, ...] = ()
    apt: tuple[AptFact, ...] = ()
    python_dists: tuple[DistFact, ...] = ()
    cuda: tuple[CudaComponent, ...] = ()
    artifacts: tuple[ArtifactFact, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------- drift


@dataclass(frozen=True, kw_only=True)
class Drift:
    layer: str  # "base", "os", "apt", "python", "python-files", "cuda", "models", "labels"
    kind: str  # "missing", "extra", "version", "arch", "modified", ...
    subject: str
    expected: str | None
    actual: str | None


@dataclass(frozen=True, kw_only=True)
class Report:
    subject: str  # what was checked, e.g. the image reference
    layers: tuple[str, ...]  # every layer that was compared, drift or not
    drifts: tuple[Drift, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.drifts
